"""Check what is used: a config stored in a checkpoint is resolved before the trust check
(:mod:`trainrun.stored`), the check runs on every ``_target_`` of the resolved tree, and
``trust=[mymod]`` covers only what is *defined* in ``mymod`` (:func:`trainrun.targets.defined_in`).
A refusal suggests trusting only the user's own modules. Checkpoints written before trainrun's
targets moved load under the new names (:data:`trainrun.targets.MOVED`).

In-process: a checkpoint is built from a composed config (no subprocess); the end-to-end twins
(evaluate/predict/export-model with marker files) are in tests/e2e/test_trust_resolved.py."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from trainrun.build.setup import build
from trainrun.engine import resume
from trainrun.engine.checkpoint import load, payload
from trainrun.engine.state import TrainState
from trainrun.errors import TrainrunError
from trainrun.stored import refused_interpolation, stored_config
from trainrun.targets import MOVED, covered_by, defined_in


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Any]:
    """A real trainrun checkpoint payload (built in this process, never trained)."""
    from hydra import compose, initialize_config_dir

    from trainrun.config import config_dir
    from trainrun.config.schemas import register

    register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("train", overrides=["data=synthetic", "data.n_samples=64", "model.hidden=[4]"])
    setup = build(cfg)
    return payload(setup, TrainState())


def write(saved: dict[str, Any], folder: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    crafted = copy.deepcopy(saved)
    change(crafted["config"])
    path = folder / "crafted.pt"
    torch.save(crafted, path)
    return path


def refusal(path: Path, **kwargs: Any) -> TrainrunError:
    with pytest.raises(TrainrunError) as refused:
        load(path, key="run", trust_option="trust", unbuilt=("logger",), **kwargs)
    return refused.value


# --------------------------------------------------------------------------- the examples


def test_an_unchecked_section_cannot_lend_a_target(saved, tmp_path):
    """loss.weight: ${logger.x}: the logger section is never built nor checked, but resolving
    copies its node into loss."""
    def smuggle(c):
        c["logger"] = {"csv": None, "x": {"_target_": "numpy.load", "file": "evil.npy", "allow_pickle": True}}
        c["loss"]["weight"] = "${logger.x}"
    err = refusal(write(saved, tmp_path, smuggle))
    assert "loss.weight._target_=numpy.load" in err.message
    assert "trust=" not in err.fix  # numpy is not the user's code: never offered


def test_oc_decode_is_refused(saved, tmp_path):
    err = refusal(write(saved, tmp_path, lambda c: c["loss"].update(
        weight="${oc.decode:'{_target_: numpy.load, file: evil.npy, allow_pickle: true}'}")))
    assert "the resolver 'oc.decode'" in err.message and "loss.weight" in err.message


def test_trust_covers_what_is_defined_not_what_is_reachable(saved, tmp_path, monkeypatch):
    """trust=[mymod] does not trust mymod.np.load, and the refusal does not offer numpy."""
    (tmp_path / "mymod.py").write_text("import numpy as np\n")
    monkeypatch.chdir(tmp_path)
    path = write(saved, tmp_path, lambda c: c["loss"].update(
        {"_target_": "mymod.np.load", "file": "evil.npy", "allow_pickle": True}))
    err = refusal(path, trust=["mymod"])
    assert "loss._target_=mymod.np.load" in err.message
    assert "numpy.load, defined in numpy" in err.message
    assert "trust=[" not in err.fix


# --------------------------------------------------------------------------- inputs no rule names


def _env_decode(c: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINRUN_TEST_EVIL", "${oc.decode:'{_target_: os.system, command: x}'}")
    c["data"]["path"] = "${oc.env:TRAINRUN_TEST_EVIL}"


ATTACKS: dict[str, Callable[..., Any]] = {
    "oc.create builds a node": lambda c, m: c["model"].update(hidden="${oc.create:{_target_: os.system, command: x}}"),
    "oc.select's default": lambda c, m: c["loss"].update(weight="${oc.select:nowhere,{_target_: os.system}}"),
    "a resolver name built by interpolation": lambda c, m: c["loss"].update(
        weight="${oc.${trainer.kind}:'{_target_: os.system}'}") or c["trainer"].update(kind="decode"),
    "text glued into an interpolation": lambda c, m: c["trainer"].update(
        a="$", b="{oc.decode:'{_target_: os.system, command: x}'}")
    or c["loss"].update(weight="${trainer.a}${trainer.b}"),
    "an environment variable holding an interpolation": _env_decode,
    "a list of targets from the logger section": lambda c, m: c.update(
        logger={"bad": [{"_target_": "builtins.exec", "source": "x"}]}) or c["model"].update(extra="${logger.bad}"),
    "the _target_ string itself interpolated": lambda c, m: c.update(
        logger={"t": "os.system"}) or c["loss"].update({"_target_": "${logger.t}", "command": "x"}),
    "a relative interpolation": lambda c, m: c.update(
        logger={"x": {"_target_": "os.system", "command": "x"}}) or c["loss"].update(weight="${..logger.x}"),
    "Hydra's own resolver": lambda c, m: c["data"].update(path="${hydra:runtime.cwd}"),
    "an unknown resolver": lambda c, m: c["data"].update(path="${python_version:}"),
    "oc.dict.values of the logger section": lambda c, m: c.update(
        logger={"a": {"_target_": "os.system", "command": "x"}}) or c["loss"].update(weight="${oc.dict.values:logger}"),
    "an escaped interpolation": lambda c, m: c["loss"].update(weight="\\${oc.decode:'{_target_: os.system}'}"),
    "a torch function assembled by interpolation": lambda c, m: c["trainer"].update(fn="load") or c["optim"].update(
        {"_target_": "torch.${trainer.fn}", "f": "evil.pkl", "weights_only": False}),
    "a nested interpolation in a key path": lambda c, m: c["trainer"].update(k="x") or c["loss"].update(
        weight="${logger.${trainer.k}}") or c.update(logger={"x": {"_target_": "os.system"}}),
    # Issue 17 attack pass (trust branch): inputs no rule names.
    "oc.deprecated forwarding to the logger section": lambda c, m: c.update(
        logger={"x": {"_target_": "os.system", "command": "x"}})
    or c["loss"].update(weight="${oc.deprecated:logger.x}"),
    "a target that is not a string": lambda c, m: c["loss"].update({"_target_": ["os.system"]}),
    "a target in _args_ of a trusted class": lambda c, m: c["model"].update(
        _args_=[{"_target_": "subprocess.run", "args": ["true"]}]),
    "an interpolation in a key": lambda c, m: c["trainer"].update({"${oc.decode:'{_target_: os.system}'}": 1}),
    "a torch.nn module reached through an attribute path": lambda c, m: c["loss"].update(
        {"_target_": "torch.nn.modules.module.torch.load", "f": "evil.pkl"}),
}


# What each refusal names: the resolver, the string that would be read again, or the target that
# resolving brought into a section that is built.
SAYS = {
    "oc.create builds a node": "model.hidden uses the resolver 'oc.create'",
    "oc.select's default": "loss.weight uses the resolver 'oc.select'",
    "a resolver name built by interpolation": "loss.weight uses an interpolation trainrun does not read",
    "text glued into an interpolation": "loss.weight resolves to \"${oc.decode",
    "an environment variable holding an interpolation": "data.path resolves to \"${oc.decode",
    "a list of targets from the logger section": "model.extra[0]._target_=builtins.exec",
    "the _target_ string itself interpolated": "loss._target_=os.system",
    "a relative interpolation": "loss.weight._target_=os.system",
    "Hydra's own resolver": "data.path uses the resolver 'hydra'",
    "an unknown resolver": "data.path uses the resolver 'python_version'",
    "oc.dict.values of the logger section": "loss.weight[0]._target_=os.system",
    "an escaped interpolation": "loss.weight uses the resolver 'oc.decode'",
    "a torch function assembled by interpolation": "optim._target_=torch.load",
    "a nested interpolation in a key path": "loss.weight uses an interpolation trainrun does not read",
    "oc.deprecated forwarding to the logger section": "loss.weight._target_=os.system",
    "a target that is not a string": "loss._target_=['os.system']",
    "a target in _args_ of a trusted class": "model._args_[0]._target_=subprocess.run",
    "an interpolation in a key": "uses the resolver 'oc.decode'",
    "a torch.nn module reached through an attribute path": "loss._target_=torch.nn.modules.module.torch.load",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_resolving_first_catches(saved, tmp_path, monkeypatch, attack):
    err = refusal(write(saved, tmp_path, lambda c: ATTACKS[attack](c, monkeypatch)))
    assert SAYS[attack] in err.message, err.message
    assert err.key == "run"
    assert "trust=[" not in err.fix, err.fix  # nothing of the user's to offer


@pytest.mark.parametrize("module, target, trust, covered", [
    ("import numpy as np\n", "mymod.np.load", "mymod", False),
    ("import functools, numpy\nloader = functools.partial(numpy.load)\n", "mymod.loader", "mymod", False),
    ("import os\n", "mymod.os.system", "mymod", False),
    ("from pickle import loads\n", "mymod.loads", "mymod", False),
    ("import torch\nNet = torch.nn.Linear\n", "mymod.Net", "mymod", False),  # an alias of torch's class
    ("class Net:\n    @classmethod\n    def make(cls):\n        return cls()\n", "mymod.Net.make", "mymod.Net", True),
    ("class Net:\n    pass\nclass Other:\n    pass\n", "mymod.Other", "mymod.Net", False),
    ("class Net:\n    pass\n", "mymod.Net", "mymod", True),
    ("def build():\n    return 1\n", "mymod.build", "mymod", True),
    ("class Net:\n    pass\n", "mymod.Net.__class__", "mymod", False),  # type, a builtin
    ("import numpy\nclass Net:\n    load = staticmethod(numpy.load)\n", "mymod.Net.load", "mymod.Net", False),
    ("class Net:\n    pass\n", "mymod.Net.mro", "mymod.Net", False),
    ("from numpy import load as Net\n", "mymod.Net", "mymod", False),
])
def test_trust_by_definition(tmp_path, monkeypatch, module, target, trust, covered):
    (tmp_path / "mymod.py").write_text(module)
    monkeypatch.chdir(tmp_path)
    assert covered_by(target, [trust]) is covered


def test_a_package_submodule_is_covered_but_not_what_it_imports(tmp_path, monkeypatch):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "layers.py").write_text("from subprocess import run\nclass Block:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    assert covered_by("mypkg.layers.Block", ["mypkg"])
    assert not covered_by("mypkg.layers.run", ["mypkg"])
    import mypkg.layers

    assert defined_in(mypkg.layers, "mypkg") and not defined_in(mypkg.layers.run, "mypkg.layers")


def test_oc_env_default_never_becomes_a_node(saved, tmp_path):
    """oc.env turns a node given as its default into text: nothing is built from it."""
    def change(c: dict[str, Any]) -> None:
        c["logger"] = {"x": {"_target_": "os.system", "command": "x"}}
        c["loss"]["weight"] = "${oc.env:TRAINRUN_TEST_UNSET_VARIABLE,${logger.x}}"

    loaded = load(write(saved, tmp_path, change), key="run", unbuilt=("logger",))
    assert isinstance(loaded["config"]["loss"]["weight"], str)


# --------------------------------------------------------------------------- what stays valid


def test_a_trainrun_checkpoint_and_harmless_resolvers_load(saved, tmp_path, monkeypatch):
    plain = tmp_path / "plain.pt"
    torch.save(saved, plain)
    assert load(plain, key="run")["config"] == saved["config"]
    monkeypatch.setenv("TRAINRUN_TEST_DIR", str(tmp_path))
    path = write(saved, tmp_path, lambda c: c["trainer"].update(note="${oc.env:TRAINRUN_TEST_DIR}/x",
                                                                   copy="${trainer.epochs}"))
    config = load(path, key="run")["config"]
    assert config["trainer"]["note"] == f"{tmp_path}/x"
    assert config["trainer"]["copy"] == saved["config"]["trainer"]["epochs"]


@pytest.mark.parametrize("text, refused", [
    ("plain", False), ("${a.b}", False), ("x${a}y", False), ("${oc.env:HOME}", False), ("${ now : %H }", False),
    ("${oc.decode:x}", True), ("${oc.create:{}}", True), ("${ oc.decode :x}", True), ("${custom:x}", True),
    ("${a.${b}}", True), ("${:x}", True), ("${'quoted'}", True),
])
def test_interpolation_heads(text, refused):
    assert bool(refused_interpolation(text)) is refused


# --------------------------------------------------------------------------- moved targets


def test_a_checkpoint_naming_the_old_targets_loads_under_the_new_ones(saved, tmp_path, compose):
    old = {new: old for old, new in MOVED.items()}
    def before_the_move(c):
        c["model"]["_target_"] = old[c["model"]["_target_"]]
        c["logger"] = {"csv": {"_target_": "trainrun.report.loggers.CsvLogger"}}
    config = load(write(saved, tmp_path, before_the_move), key="run")["config"]  # no trust needed
    assert config["model"]["_target_"] == "trainrun.build.models.MLP"
    assert config["logger"]["csv"]["_target_"] == "trainrun.report.loggers.csv_logs.CsvLogger"
    now = compose("data=synthetic", "data.n_samples=64", "model.hidden=[4]")
    blocking, _ = resume.config_differences(config, now)
    assert blocking == []
    assert all(new.rpartition(".")[0] != old.rpartition(".")[0] for old, new in MOVED.items())


def test_stored_config_alone(tmp_path):
    """The function every loader uses, on a bare config."""
    assert stored_config({"model": {"_target_": "trainrun.models.CNN"}, "a": "${model._target_}"}, tmp_path, "run") == \
        {"model": {"_target_": "trainrun.build.models.CNN"}, "a": "trainrun.models.CNN"}
