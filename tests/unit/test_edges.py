"""The edges of a run, in process: user text is never rich markup (one console path,
report/echo.py), every exit inside a command is an error (errors.exits_are_errors, and the
import of a user's module is a phase), a console whose reader went away ends quietly
(echo.guard_console), a deleted working folder is one paragraph (cli/entry.py), a launcher or
sweeper without -m is refused."""

from __future__ import annotations

import errno
import io
import os
import re
import sys

import pytest
from conftest import REPO
from omegaconf import OmegaConf

from trainrun.errors import TrainrunError, exits_are_errors, phase
from trainrun.report import echo

SRC = REPO / "src"

# Text of the user's (layer, class, tag, path, override, error message) that rich would read as
# markup or an emoji code; none is named by any rule: the console has no markup at all.
USER_TEXT = ["[/bold]", "[/baseline]", "[red]red[/red]", "[/]", "[link=http://x]y[/link]", ":smile:",
             "data/[2024]/x.csv", "[bold", "Net[[x]]", "[#ff0000]hex", "\\[escaped]", "weird[/i]name"]


@pytest.mark.parametrize("text", USER_TEXT)
def test_user_text_prints_as_written_in_every_table(text, tmp_path, monkeypatch):
    from rich.table import Table

    from trainrun.report.sweep import print_table

    table = Table(title=f"title {text}")
    table.add_column(f"column {text}")
    table.add_row(f"cell {text}")
    shown = echo.rendered(table, width=200)
    for part in ("title", "column", "cell"):
        assert f"{part} {text}" in shown
    buffer = io.StringIO()
    monkeypatch.setenv("COLUMNS", "400")  # the sweep table is as wide as the terminal: no folding here
    row = {"job": 0, "overrides": [f"data.path={text}"], "tags": [text], "status": "failed",
           "objective": None, "best_epoch": None, "seconds": 1.0, "error": f"KeyError: '{text}'"}
    print_table([row], tmp_path / text.replace("/", "_"), "val_loss", file=buffer)
    assert text in buffer.getvalue() and "tags" in buffer.getvalue()


def test_the_layer_table_and_the_config_tree(compose, tmp_path, monkeypatch, capsys):
    """model_summary=true's table of a model whose layers carry bracketed names, and the config
    tree with such keys and values."""
    from trainrun.build.setup import build
    from trainrun.tools.model_summary import layer_table

    (tmp_path / "marked.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Sequential):\n"
        "    def __init__(self, in_features, out_features):\n"
        "        super().__init__()\n"
        f"        for name in {USER_TEXT[:5]!r}:\n"
        "            self.add_module(name, nn.Linear(in_features, in_features))\n"
        "        self.add_module('[/out]', nn.Linear(in_features, out_features))\n")
    monkeypatch.chdir(tmp_path)
    shown = echo.rendered(layer_table(build(compose("model._target_=marked.Net", "data=iris"))), width=200)
    assert all(name in shown for name in [*USER_TEXT[:5], "[/out]"]), shown
    echo.print_config_tree(OmegaConf.create({"tags": USER_TEXT, "[/bold]": {"[red]": ":smile:"}}))
    out = capsys.readouterr().out
    assert "[/bold]" in out and ":smile:" in out and "[/baseline]" in out


def test_one_console_path():
    """Every rich console comes from echo.console (markup off); no markup in trainrun's own
    strings, no rich.print."""
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if path.name != "echo.py":
            assert "Console(" not in text, f"{path}: make consoles with trainrun.report.echo.console"
        assert not re.search(r"from rich import print|rich\.print\(|Text\.from_markup|\[/\]", text), path
        assert not re.search(r"\[(bold|dim|red|green|cyan|yellow)\]", text), f"{path}: markup in a string"


# ---------------------------------------------------------------- exits


@pytest.mark.parametrize("leave", [
    lambda: sys.exit(0), lambda: sys.exit(), lambda: sys.exit(None), lambda: sys.exit("done"),
    lambda: exit(3), lambda: quit(), lambda: (_ for _ in ()).throw(SystemExit(0)),
])
def test_an_exit_inside_a_command_is_an_error(leave):
    @exits_are_errors("train")
    def command() -> int:
        leave()
        return 1

    with pytest.raises(TrainrunError) as caught:
        command()
    assert caught.value.exit_code == 1
    assert "train was stopped by an exit it did not make: SystemExit" in str(caught.value)


def test_an_exit_inside_a_phase_is_that_phases_error():
    with pytest.raises(TrainrunError, match="building the scheduler failed: SystemExit"), \
            phase("building the scheduler", "scheduler._target_"):
        sys.exit(0)


@pytest.mark.parametrize("body", [
    "import sys\nsys.exit(main())\ndef main(): return 0",  # main undefined: a NameError, still an import error
    "import sys\ndef main():\n    return 0\nsys.exit(main())",
    "raise SystemExit",
    "exit(0)",
    "import sys\nif True:\n    sys.exit(1)",
    "import helper_that_exits",
])
def test_importing_a_module_that_exits_is_an_error_of_the_import(tmp_path, monkeypatch, body):
    from trainrun.build.instantiate import imported

    (tmp_path / "exits_module.py").write_text(body + "\nclass Net: pass\n")
    (tmp_path / "helper_that_exits.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainrunError) as caught:
        imported("exits_module.Net", "model")
    assert caught.value.key == "model._target_", str(caught.value)
    assert "exits_module" in str(caught.value) and caught.value.exit_code == 2
    assert "exits_module" not in sys.modules


# ---------------------------------------------------------------- a console that goes away


def test_a_closed_pipe_ends_the_output_quietly(monkeypatch):
    monkeypatch.setattr(echo, "_closed", [])
    read, write = os.pipe()
    stream = io.TextIOWrapper(os.fdopen(write, "wb", buffering=0), write_through=True)
    console = echo._Console(stream)
    told: list[int] = []
    with echo.when_console_closes(lambda: told.append(1)):
        console.write("first\n")
        assert os.read(read, 100) == b"first\n"
        os.close(read)  # the reader goes away (head -1 has its line)
        for _ in range(3):
            assert console.write("more\n") == 5  # quietly, into /dev/null
        console.flush()
    assert told == [1]
    with echo.when_console_closes(lambda: told.append(2)):  # already closed: told at once
        pass
    assert told == [1, 2]
    stream.close()


def test_another_write_error_still_raises():
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        echo._Console(Full()).write("x")


def test_the_guard_is_installed_once(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    echo.guard_console()
    wrapped = sys.stdout
    echo.guard_console()
    assert sys.stdout is wrapped and isinstance(sys.stderr, echo._Console)
    print("through the guard")
    assert sys.stdout.getvalue() == "through the guard\n"  # other attributes are the stream's own


def test_a_closed_console_is_a_stop_request():
    import signal

    from trainrun.engine.signals import Signals

    signals = Signals()
    assert not signals.requested()
    signals.request(signal.SIGPIPE)
    signals.request(signal.SIGTERM)  # the first reason stays
    assert signals.requested() and signals.name == "SIGPIPE"


# ---------------------------------------------------------------- the working folder, plugins


def test_a_deleted_working_folder_is_one_paragraph(tmp_path, monkeypatch, capsys):
    from trainrun.cli.entry import start

    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    monkeypatch.setenv("PWD", str(gone))
    gone.rmdir()
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # the guard wraps them; put them back after
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    with pytest.raises(SystemExit) as leaving:
        start()
    assert leaving.value.code == 2
    err = capsys.readouterr().err
    assert f"the working folder ({gone}) is not there any more" in err and "Traceback" not in err
    assert "fix: cd into an existing folder" in err


@pytest.mark.parametrize("group, choice", [("hydra/launcher", "slurm"), ("hydra/launcher", "local"),
                                           ("hydra/launcher", "submitit_local"), ("hydra/sweeper", "trainrun_optuna"),
                                           ("hydra/sweeper", "optuna")])
def test_a_multirun_plugin_without_m_is_refused(group, choice):
    from trainrun.cli.entry import check_multirun_plugins

    choices = {"hydra/launcher": "basic", "hydra/sweeper": "basic", group: choice}
    with pytest.raises(TrainrunError) as caught:
        check_multirun_plugins(choices, multirun=False)
    assert caught.value.key == group and f"add -m: train -m {group}={choice}" in caught.value.fix
    check_multirun_plugins(choices, multirun=True)
    check_multirun_plugins({"hydra/launcher": "basic", "hydra/sweeper": "basic"}, multirun=False)


def test_the_logging_console_handler_ends_quietly(monkeypatch, capsys):
    """Hydra's job logging builds trainrun's ConsoleHandler in every process that configures it
    (joblib and submitit workers too): a record to a closed pipe prints no 'Logging error'."""
    import logging

    monkeypatch.setattr(echo, "_closed", [])
    read, write = os.pipe()
    stream = io.TextIOWrapper(os.fdopen(write, "wb", buffering=0), write_through=True)
    handler = echo.ConsoleHandler(stream)
    logger = logging.getLogger("trainrun.test_edges")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("first")
        assert os.read(read, 100) == b"first\n"
        os.close(read)
        for _ in range(3):
            logger.warning("more")
    finally:
        logger.removeHandler(handler)
        stream.close()
    assert "Logging error" not in capsys.readouterr().err
    assert len(echo._closed) == 1


def test_a_sweep_stopped_by_a_signal_counts_its_job_as_interrupted_not_failed(tmp_path, monkeypatch):
    """Adversarial pass: the header line of a sweep a signal stopped counted the job it
    interrupted (saved, resumable by running the sweep again) among the failed ones."""
    from trainrun.report.sweep import print_table

    monkeypatch.setenv("COLUMNS", "200")
    base = {"overrides": ["optim.lr=0.1"], "objective": 0.5, "best_epoch": 1, "seconds": 1.0, "error": None}
    rows = [{**base, "job": 0, "status": "completed"}, {**base, "job": 1, "status": "interrupted"},
            {**base, "job": 2, "status": "failed", "objective": None}]
    buffer = io.StringIO()
    print_table(rows, tmp_path, "val_loss", file=buffer)
    assert "sweep: 3 jobs, 1 done, 1 interrupted, 1 failed;" in buffer.getvalue()
