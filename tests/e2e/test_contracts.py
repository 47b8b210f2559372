"""Issue 17, classes 5 to 7, through the real commands (subprocesses): compositions refused or
trained and predicted right, the stored data kept from the model, and the edges of a run
(exits, markup, a closed console, a deleted working folder, a launcher without -m)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, command_path, env_for_tests, run_command

QUICK = ("trainer.epochs=2", "plot=false")

USER = textwrap.dedent('''
    import sys
    import torch
    from torch import nn

    class LogProbs(nn.Module):
        """A model that ends in its own log-softmax."""
        def __init__(self, in_features, out_features):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(in_features, 32), nn.ReLU(), nn.Linear(32, out_features),
                                     nn.LogSoftmax(dim=1))
        def forward(self, x):
            return self.net(x)

    class Halves(nn.Module):
        """Image code's x.div_(255), as x.div_(2)."""
        def __init__(self, in_features, out_features):
            super().__init__()
            self.fc = nn.Linear(in_features, out_features)
        def forward(self, x):
            x.div_(2)
            return self.fc(x)

    class Marked(nn.Sequential):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.add_module("[/bold]", nn.Linear(in_features, 8))
            self.add_module("[red]out", nn.Linear(8, out_features))

    class QuitsOnClose:
        """A logger whose close() exits."""
        def log_params(self, params): pass
        def log_epoch(self, row, history): pass
        def log_summary(self, summary): pass
        def close(self): sys.exit(0)
''')


@pytest.fixture
def here(tmp_path: Path) -> Path:
    (tmp_path / "userparts.py").write_text(USER)
    (tmp_path / "exits_at_import.py").write_text(
        "import sys\nfrom torch import nn\n\ndef main():\n    return 0\n\n"
        "class Net(nn.Linear):\n    def __init__(self, in_features, out_features):\n"
        "        super().__init__(in_features, out_features)\n\nsys.exit(main())\n")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ids.npz", X=rng.normal(size=(120, 3)).astype(np.float32), y=np.arange(120))
    np.savez(tmp_path / "nothing.npz", X=np.zeros((50, 0), dtype=np.float32), y=np.arange(50) % 2)
    return tmp_path


def train(here: Path, *overrides: str, check: bool = False, name: str = "run"):
    return run_command("train", "trainer.progress=epoch", *overrides, cwd=here, run_dir=here / name, check=check)


def refused(result, key: str, *needles: str) -> None:
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output and f"key: {key}" in result.output, result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert not (result.run_dir / "metrics.jsonl").exists()


# ---------------------------------------------------------------- 5. compositions


@pytest.mark.parametrize("overrides, key, needle", [
    (["data=breast_cancer", "loss=bce_logits", "loss.head=sigmoid"], "loss.head", "applied twice"),
    (["data=breast_cancer", "loss=mse"], "data.task", "not probabilities of the classes"),
    (["data=npz", "data.path=ids.npz"], "data.task", "not a 120-class task"),
    (["data=npz", "data.path=nothing.npz"], "data.x_key", "X has shape [50, 0]"),
    (["model._target_=userparts.LogProbs", "model.output=log_probabilities", "loss=bce_logits",
      "data=breast_cancer"], "loss",
     "(LogProbs) gives log-probabilities"),
])
def test_a_composition_that_does_not_fit_is_refused(here, overrides, key, needle):
    refused(train(here, *QUICK, *overrides), key, needle)


@pytest.mark.parametrize("launcher", ["slurm", "local"])
def test_a_launcher_without_m_is_refused_before_anything_runs(here, launcher):
    result = train(here, f"hydra/launcher={launcher}")
    refused(result, "hydra/launcher", "acts only on a multirun", f"train -m hydra/launcher={launcher}")
    assert not result.run_dir.exists()


def predictions(folder: Path) -> list[dict[str, str]]:
    with open(folder / "predictions.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("overrides, kind", [
    (["data=iris", "model._target_=userparts.LogProbs", "loss=nll", "loss.head=none",
      "model.output=log_probabilities"], "classes"),
    (["data=breast_cancer", "loss=bce_logits"], "classes"),
    (["data=breast_cancer", "loss=mse", "data.task=regression"], "values"),
])
def test_valid_compositions_train_and_predict_what_they_mean(here, overrides, kind):
    result = train(here, *QUICK, "data.test_fraction=0.2", *overrides, check=True)
    out = here / "scored"
    evaluate = run_command("evaluate", f"run={result.run_dir}", "split=test", "predictions=true", f"out={out}",
                           "trust=[userparts]", cwd=here)
    assert evaluate.returncode == 0, evaluate.output
    rows = predictions(out)
    probability_columns = [c for c in rows[0] if c.startswith("p_")]
    if kind == "values":
        assert not probability_columns and "prediction" in rows[0]
        return
    assert probability_columns
    for row in rows:
        p = [float(row[c]) for c in probability_columns]
        assert all(0 <= v <= 1 for v in p) and abs(sum(p) - 1) < 1e-5, row


# ---------------------------------------------------------------- 6. the stored data


def test_a_model_that_changes_its_input_does_not_change_the_data(here):
    """x.div_(2) in forward, weights that barely move: validation is the same every epoch, and
    evaluate scores what the last epoch scored (it used to halve the validation split each epoch)."""
    result = train(here, "data=iris", "model._target_=userparts.Halves", "optim=sgd", "optim.lr=1e-30",
                   "optim.momentum=0", "trainer.epochs=3", "plot=false", check=True)
    losses = [row["val_loss"] for row in result.metrics]
    assert losses[0] == losses[1] == losses[2], losses
    evaluate = run_command("evaluate", f"run={result.run_dir}", "checkpoint=last", f"out={here / 'scored'}",
                           "trust=[userparts]", cwd=here)
    assert evaluate.returncode == 0, evaluate.output
    scored = json.loads((here / "scored" / "eval.json").read_text())
    assert scored["loss"] == pytest.approx(losses[-1], rel=1e-6)


# ---------------------------------------------------------------- 7. the edges


def test_an_exit_at_import_is_an_error(here):
    result = train(here, *QUICK, "model._target_=exits_at_import.Net")
    refused(result, "model._target_", "importing model._target_=exits_at_import.Net failed: SystemExit",
            "exits_at_import.py:11")


def test_an_exit_outside_every_phase_is_an_error(here):
    result = train(here, *QUICK, "data=iris", "+logger.mine._target_=userparts.QuitsOnClose")
    assert result.returncode == 1, result.output
    assert "train was stopped by an exit it did not make: SystemExit" in result.output
    assert "userparts.py" in result.output and "Traceback" not in result.output


def test_markup_in_user_text(here):
    result = train(here, *QUICK, "data=iris", "model._target_=userparts.Marked", "model_summary=true",
                   'tags=["[/baseline]"]', check=True)
    assert "[/bold]" in result.output and "[red]out" in result.output
    assert result.summary["tags"] == ["[/baseline]"]


def test_a_sweep_with_bracketed_tags_keeps_its_summary(here):
    sweep = here / "sweep"
    proc = subprocess.run([str(command_path("train")), "-m", "data=iris", "trainer.epochs=1", "plot=false",
                           'tags=["[/baseline]"]', "optim.lr=0.1,0.01", f"hydra.sweep.dir={sweep}"],
                          cwd=here, env=env_for_tests(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (sweep / "summary.csv").exists() and "[/baseline]" in proc.stdout
    assert "MarkupError" not in proc.stdout + proc.stderr


def _first_line_then_close(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """``<command> | head -1``: read one line, close the pipe, wait."""
    proc = subprocess.Popen(args, cwd=cwd, env=env_for_tests(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(timeout=300), first, err


def test_a_closed_pipe_stops_like_a_signal_and_resumes(here):
    run = here / "piped"
    code, first, err = _first_line_then_close(
        [str(BIN / "train"), "data=iris", "trainer.epochs=30", "plot=false", "trainer.progress=epoch",
         f"hydra.run.dir={run}"], here)
    assert first.startswith("overrides:")
    assert code == 141, err  # 128 + SIGPIPE, as a shell reports `yes | head -1`
    assert "Logging error" not in err and "Traceback" not in err and "BrokenPipe" not in err, err
    assert (run / "checkpoints" / "last.pt").exists()
    log = (run / "train.log").read_text()
    assert "stopped by SIGPIPE; last.pt is saved" in log
    again = run_command("train", "data=iris", "trainer.epochs=30", "plot=false", "resume=auto",
                        cwd=here, run_dir=run, check=True)
    assert again.summary["status"] == "completed" and again.summary["epochs_run"] == 30


@pytest.mark.parametrize("args", [["train", "--help"], ["evaluate", "--help"]])
def test_other_commands_end_quietly_on_a_closed_pipe(here, args):
    code, first, err = _first_line_then_close([str(BIN / args[0]), *args[1:]], here)
    assert first and code == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err and "Logging error" not in err, err


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "export-model", "python -m trainrun.cli"])
def test_a_deleted_working_folder_is_one_paragraph(tmp_path, command):
    gone = tmp_path / "gone"
    gone.mkdir()
    start = f'"{BIN / "python"}" -m trainrun.cli' if command.startswith("python") else f'"{BIN / command}" run=x'
    proc = subprocess.Popen(["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec {start}'],
                            env=env_for_tests(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    assert "the working folder" in err and "is not there any more" in err and "Traceback" not in out + err
    assert not os.path.exists(gone)
