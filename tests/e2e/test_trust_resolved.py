"""Check what is used, end to end: evaluate, predict and export-model refuse a checkpoint whose
stored config smuggles a target past the trust check (through an interpolation into the unchecked
logger section, through ``oc.decode``, through an attribute path of a trusted module), and no
marker appears; a checkpoint written before trainrun's targets moved (``trainrun.models.MLP``,
``trainrun.report.loggers.CsvLogger``) still evaluates, predicts, exports and resumes."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_command, run_train

from trainrun.targets import MOVED

SMALL = ("data=iris", "model.hidden=[8]", "trainer.epochs=2", "print_config=false", "plot=false")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    run_train(*SMALL, cwd=folder, run_dir=folder / "run")
    return folder / "run"


def crafted(finished: Path, folder: Path, change) -> Path:
    """A copy of the finished run whose checkpoints' stored config ``change`` rewrote."""
    run = folder / "run"
    shutil.copytree(finished, run)
    for name in ("best.pt", "last.pt"):
        saved = torch.load(run / "checkpoints" / name, weights_only=True)
        saved = copy.deepcopy(saved)
        change(saved["config"])
        torch.save(saved, run / "checkpoints" / name)
    np.savez(folder / "new.npz", X=np.ones((3, 4), dtype="float32"))
    return run


COMMANDS = {
    "evaluate": ("evaluate",),
    "predict": ("predict", "data=npz", "data.path=new.npz"),
    "export-model": ("export-model", "format=exported"),
}


def opens(marker: Path) -> str:
    return f"{{_target_: builtins.open, file: '{marker}', mode: w}}"


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("attack", ["logger interpolation", "oc.decode", "trusted module's attribute"])
def test_a_smuggled_target_never_runs(finished, tmp_path, command, attack):
    marker = tmp_path / "marker"
    (tmp_path / "mymod.py").write_text("import builtins as b\n")
    trust = ()

    def smuggle(config):
        if attack == "logger interpolation":
            config["logger"] = {"x": {"_target_": "builtins.open", "file": str(marker), "mode": "w"}}
            config["loss"]["weight"] = "${logger.x}"
        elif attack == "oc.decode":
            config["loss"]["weight"] = f'${{oc.decode:"{opens(marker)}"}}'
        else:
            config["loss"]["weight"] = {"_target_": "mymod.b.open", "file": str(marker), "mode": "w"}

    if attack == "trusted module's attribute":
        trust = ("trust=[mymod]",)
    run = crafted(finished, tmp_path, smuggle)
    name, *args = COMMANDS[command]
    result = run_command(name, f"run={run}", *args, *trust, cwd=tmp_path, check=False)
    out = result.output
    assert result.returncode == 2, out
    assert "Traceback" not in out, out
    assert "key: run" in out
    assert "trust=[builtins" not in out and "trust=[mymod.b" not in out  # never offered
    assert not marker.exists()


@pytest.mark.parametrize("command", [*COMMANDS, "resume"])
def test_a_checkpoint_from_before_the_move_still_works(finished, tmp_path, command):
    """One command a test (each well under a minute on a loaded machine)."""
    old = {new: old for old, new in MOVED.items()}

    def before_the_move(config):
        config["model"]["_target_"] = old[config["model"]["_target_"]]
        for node in (config.get("logger") or {}).values():
            if node and node.get("_target_") in old:
                node["_target_"] = old[node["_target_"]]

    run = crafted(finished, tmp_path, before_the_move)
    stored = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["config"]
    assert stored["model"]["_target_"] == "trainrun.models.MLP"
    assert stored["logger"]["csv"]["_target_"] == "trainrun.report.loggers.CsvLogger"
    if command != "resume":
        name, *args = COMMANDS[command]
        run_command(name, f"run={run}", *args, cwd=tmp_path)  # exit 0, no trust= needed
        return
    resumed = run_train(*SMALL[:-2], "trainer.epochs=3", "print_config=false", "plot=false", "resume=auto",
                        cwd=tmp_path, run_dir=run)
    assert "resumed from" in resumed.output and resumed.summary["epochs_run"] == 3


def test_commands_ask_trust_only_for_the_code_they_build(tmp_path):
    """Adversarial pass: export-model asked trust=[mydata] for a run trained on a user's data
    source and optimizer, neither of which it builds (it rebuilds the model and its loss; the
    data's statistics are the checkpoint's). predict and export-model build neither; evaluate
    rebuilds the whole run and still asks, and a user model is asked for by all three."""
    (tmp_path / "mydata.py").write_text(
        "from sklearn.datasets import load_iris\n\ndef load():\n    d = load_iris()\n    return d.data, d.target\n")
    (tmp_path / "myopt.py").write_text("import torch\n\nclass Opt(torch.optim.SGD):\n    pass\n")
    run = run_train("data._target_=mydata.load", "optim._target_=myopt.Opt", "optim.lr=0.1", *SMALL[1:],
                    cwd=tmp_path, run_dir=tmp_path / "run").run_dir
    np.savez(tmp_path / "new.npz", X=np.ones((3, 4), dtype="float32"))
    run_command("export-model", f"run={run}", "format=safetensors", cwd=tmp_path)
    run_command("predict", f"run={run}", "data=npz", "data.path=new.npz", cwd=tmp_path, run_dir=tmp_path / "p")
    refused = run_command("evaluate", f"run={run}", cwd=tmp_path, run_dir=tmp_path / "e", check=False)
    assert refused.returncode == 2 and "trust=[mydata.load,myopt.Opt]" in refused.output, refused.output
    run_command("evaluate", f"run={run}", "trust=[mydata.load,myopt.Opt]", cwd=tmp_path, run_dir=tmp_path / "e2")
