"""Trust: a file the user did not name runs no code. A config stored inside a checkpoint is
data (only trainrun's own targets and torch.nn / torch.optim classes are built from it), a
checkpoint is recognized as one before anything is read from it, and a module lying in the
working folder never replaces an installed one. Each attack leaves a marker file if it ran."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_command, run_train

from trainrun.engine.checkpoint import load
from trainrun.engine.recognize import malformed, not_an_archive
from trainrun.errors import TrainrunError

SMALL = ("data=synthetic", "data.n_samples=200", "model.hidden=[8]", "trainer.epochs=1",
         "print_config=false", "plot=false")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict:
    """A real trainrun checkpoint (one short run), loaded."""
    folder = tmp_path_factory.mktemp("trained")
    run_train(*SMALL, cwd=folder, run_dir=folder / "run")
    return torch.load(folder / "run" / "checkpoints" / "last.pt", weights_only=True)


class Touch:
    """Unpickling it runs os.system: what a pickled .npy or .pt can do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_runs_none_of_the_code_its_config_names(checkpoint, tmp_path):
    """One crafted checkpoint, one attack per section (a file opened for writing, a pickled .npy,
    torch.load of a pickle, torch.hub, a module of the working folder that runs on import, and a
    nested _target_ inside a value): evaluate refuses it naming every one, and no marker appears."""
    marker = tmp_path / "marker"
    np.save(tmp_path / "evil.npy", np.array([Touch(Path(f"{marker}-npy"))], dtype=object), allow_pickle=True)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Touch(Path(f"{marker}-pkl"))))
    (tmp_path / "evilmod.py").write_text(f"open({str(marker) + '-import'!r}, 'w').close()\nNet = None\n")
    saved = copy.deepcopy(checkpoint)
    config = saved["config"]
    config["data"] = {"_target_": "builtins.open", "file": f"{marker}-open", "mode": "w"}
    config["model"] = {"_target_": "evilmod.Net"}
    config["loss"] = {"_target_": "numpy.load", "file": "evil.npy", "allow_pickle": True}
    config["optim"] = {"_target_": "torch.load", "f": "evil.pkl", "weights_only": False}
    config["scheduler"] = {"_target_": "torch.hub.load", "repo_or_dir": "someone/repo", "model": "x"}
    config["trainer"]["grad_clip"] = {"max_norm": {"_target_": "os.system", "command": f"touch {marker}-nested"}}
    torch.save(saved, tmp_path / "crafted.pt")

    result = run_command("evaluate", "run=crafted.pt", cwd=tmp_path, check=False)
    out = result.output
    assert result.returncode == 2, out
    assert "Traceback" not in out
    assert "refusing to build what the config stored in 'crafted.pt' names" in out, out
    for named in ("data._target_=builtins.open", "model._target_=evilmod.Net", "loss._target_=numpy.load",
                  "optim._target_=torch.load", "scheduler._target_=torch.hub.load",
                  "trainer.grad_clip.max_norm._target_=os.system"):
        assert named in out, named
    assert "key: run" in out
    assert not list(tmp_path.glob("marker*")), [p.name for p in tmp_path.glob("marker*")]
    assert not (tmp_path / "eval").exists()


def test_load_refuses_stored_code_unless_trusted(checkpoint, tmp_path, monkeypatch):
    """The fix offers to trust the target only because mynet.py is the user's own file (in the
    working folder, nothing installed of that name)."""
    saved = copy.deepcopy(checkpoint)
    saved["config"]["model"]["_target_"] = "mynet.Net"
    torch.save(saved, tmp_path / "mine.pt")
    (tmp_path / "mynet.py").write_text("import torch\nclass Net(torch.nn.Linear):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainrunError) as refused:
        load(tmp_path / "mine.pt", key="run")
    assert "model._target_=mynet.Net" in refused.value.message and "trust=" not in refused.value.fix
    with pytest.raises(TrainrunError) as offered:
        load(tmp_path / "mine.pt", key="run", trust_option="trust")
    assert "trust=[mynet.Net]" in str(offered.value)
    assert load(tmp_path / "mine.pt", trust=["mynet.Net"])["config"]["model"]["_target_"] == "mynet.Net"
    assert load(tmp_path / "mine.pt", trust=True)  # resume: compares the stored config, builds nothing


def test_files_that_are_not_checkpoints(checkpoint, tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save(checkpoint, whole)
    data = whole.read_bytes()
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    assert not_an_archive(whole) == ""
    assert "the file is empty" in not_an_archive(tmp_path / "empty.pt")
    assert "not a torch.save archive" in not_an_archive(tmp_path / "cut.pt")
    assert "not a torch.save archive" in not_an_archive(tmp_path / "notes.pt")
    for name in ("empty.pt", "cut.pt", "notes.pt"):
        with pytest.raises(TrainrunError, match="is not a trainrun checkpoint") as err:
            load(tmp_path / name)
        assert err.value.key == "resume" and "checkpoints/last.pt" in err.value.fix


@pytest.mark.parametrize("change, says", [
    (lambda p: p.pop("config"), "it has no 'config' entry"),
    (lambda p: p.update(config="text"), "its 'config' entry is a str"),
    (lambda p: p.update(model={"w": [1.0]}), "not a state dict of tensors"),
    (lambda p: p["state"].update(epoch="x"), "its state.epoch is 'x'"),
    (lambda p: p["state"].update(step=True), "its state.step is True"),
    (lambda p: p["state"].update(evil=1), "unknown entries: evil"),
    (lambda p: p["state"].update(batch=-1), "negative"),
    (lambda p: p["state"].update(history=[1, 2]), "not a list of epoch rows"),
    (lambda p: p.update(rng={}), "random-stream state lacks torch"),
    (lambda p: p["config"].pop("model"), "no model section"),
])
def test_malformed_payloads(checkpoint, change, says):
    saved = copy.deepcopy(checkpoint)
    assert malformed(saved) == ""
    change(saved)
    assert says in malformed(saved)


@pytest.mark.real_process  # torch, hydra, omegaconf: preloaded in a fork-server child
def test_modules_of_the_working_folder_replace_no_installed_one(tmp_path):
    """A torch.py, hydra.py and omegaconf.py in the folder a run starts in: never imported (their
    marker stays absent), and the run is not refused for the built-in targets it did not name
    (torch.nn.CrossEntropyLoss used to be refused as "shadowed by your torch.py")."""
    for name in ("torch", "hydra", "omegaconf"):
        (tmp_path / f"{name}.py").write_text(f"open({name + '-ran'!r}, 'w').close()\nraise ImportError\n")
    result = run_train(*SMALL, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.output
    assert not list(tmp_path.glob("*-ran"))
