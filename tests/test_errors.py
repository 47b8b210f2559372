"""Bad inputs of every kind, through the real ``train`` command: each one must exit with the
right status, name the offending key or value, and print no traceback."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

QUIET = ("print_config=false", "trainer.epochs=1")
CSV = ("data=csv", "data.path=m.csv", "data.target=y", "data.batch_size=16")

USER_MODELS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x):
        return self.fc(x)


class Crash(nn.Module):
    "Hard-codes 7 input features."
    def __init__(self, out_features):
        super().__init__()
        self.fc = nn.Linear(7, out_features)

    def forward(self, x):
        return self.fc(x)


class Squeezed(Net):
    def forward(self, x):
        return self.fc(x).squeeze(-1)


class Unused(Net):
    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features)
        self.spare = nn.Linear(in_features, 2)


def make_list(in_features, out_features):
    return [in_features, out_features]


class Blowup(nn.Module):
    "Its output turns NaN on training call `at` (`once`: only then; else from then on)."
    def __init__(self, in_features, out_features, at=5, once=False):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.at, self.once = at, once
        # A buffer, so preflight's trial forward pass is undone like any other state.
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        out = self.fc(x)
        if self.training:
            self.calls += 1
            n = int(self.calls)
            if n == self.at or (n > self.at and not self.once):
                out = out * float("nan")
        return out
"""

USER_DATA = """
def text():
    return "not arrays"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    rows = [",".join(f"{v:.5f}" for v in r) + f",{t}" for r, t in zip(x, y, strict=True)]
    (tmp_path / "m.csv").write_text("a,b,c,d,y\n" + "\n".join(rows) + "\n")
    yr = x @ np.array([1.0, -2.0, 0.5, 0.0])
    rows = [",".join(f"{v:.5f}" for v in r) + f",{t:.5f}" for r, t in zip(x, yr, strict=True)]
    (tmp_path / "r.csv").write_text("a,b,c,d,y\n" + "\n".join(rows) + "\n")
    (tmp_path / "text.csv").write_text("a,colour,y\n1.0,2.0,0\n2.0,red,1\n3.0,blue,0\n")
    (tmp_path / "nan.csv").write_text("a,b,y\n1.0,2.0,0\n2.0,nan,1\n3.0,1.0,0\n4.0,0.5,1\n")
    (tmp_path / "bad.npz").write_bytes(b"this is not a zip archive")
    (tmp_path / "mymodels.py").write_text(textwrap.dedent(USER_MODELS))
    (tmp_path / "mydata.py").write_text(textwrap.dedent(USER_DATA))
    return tmp_path


no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
no_mps = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")

# (id, overrides, exit status, what the output must say). Paths are relative to the folder the
# command runs in (tmp_path).
CASES = [
    # -- composition: typos, types, options (Hydra's errors, made short)
    ("typo_in_key", ["optim.lrr=0.1"], 2, ["optim.lrr is not a key", "did you mean optim.lr?"]),
    ("key_in_wrong_place", ["epochs=3"], 2, ["epochs is not a key", "did you mean trainer.epochs?"]),
    ("typo_in_group", ["optimizer=sgd"], 2, ["optimizer is not a key", "did you mean optim?"]),
    ("wrong_type_int", ["trainer.epochs=ten"], 2, ["trainer.epochs=ten is not a whole number"]),
    ("wrong_type_float", ["optim.lr=fast"], 2, ["optim.lr=fast is not a number"]),
    ("unknown_option", ["model=transformer"], 2,
     ["model=transformer is not an option", "cnn, linear, mlp", "model._target_"]),
    ("unknown_option_typo", ["optim=adamm"], 2, ["optim=adamm", "did you mean optim=adam?"]),
    ("invalid_choice", ["trainer.on_nonfinite=stp"], 2,
     ["trainer.on_nonfinite=stp is not a valid choice", "stop, skip", "did you mean trainer.on_nonfinite=stop?"]),
    ("null_for_required_number", ["optim.lr=null"], 2, ["optim.lr cannot be null"]),
    ("unparsable_override", ["data.image_shape=[1,8"], 2, ["cannot read a command-line override"]),
    ("append_existing_key", ["+optim.lr=3"], 2, ["+optim.lr adds a key, but optim.lr already exists"]),
    ("list_expected", ["data.image_shape=5"], 2, ["data.image_shape must be a list"]),
    ("recipe_key_missing_in_option", ["experiment=regression_diabetes", "model=linear"], 2,
     ["model.hidden is not a key of LinearConfig", "experiment/regression_diabetes"]),
    # -- values
    ("lr_negative", ["optim.lr=-1"], 2, ["optim.lr=-1.0 is not allowed", "greater than 0"]),
    ("lr_zero", ["optim=sgd", "optim.lr=0"], 2, ["optim.lr=0.0 is not allowed"]),
    ("batch_size_zero", ["data.batch_size=0"], 2, ["data.batch_size=0 is not allowed", "at least 1"]),
    ("epochs_negative", ["trainer.epochs=-2"], 2, ["trainer.epochs=-2 is not allowed"]),
    ("fraction_is_one", ["data.val_fraction=1.0"], 2, ["data.val_fraction=1.0 is not allowed", "[0, 1)"]),
    ("fractions_leave_no_train", ["data.val_fraction=0.5", "data.test_fraction=0.5"], 2,
     ["add up to 1", "no samples to train on", "data.val_fraction"]),
    ("accumulate_zero", ["trainer.accumulate_grad_batches=0"], 2,
     ["trainer.accumulate_grad_batches=0 is not allowed"]),
    ("dropout_above_one", ["model.dropout=1.5"], 2, ["model.dropout=1.5 is not allowed"]),
    ("hidden_size_zero", ["model.hidden=[64,0]"], 2, ["model.hidden=[64,0] is not allowed"]),
    # torch's own checks, passed on with the key they are about (the boundary names it)
    ("nesterov_without_momentum", ["optim=sgd", "optim.nesterov=true", "optim.momentum=0"], 2,
     ["building the optimizer", "Nesterov momentum requires a momentum", "key: optim.nesterov"]),
    ("betas_out_of_range", ["optim.betas=[0.9,1.5]"], 2,
     ["Invalid beta parameter at index 1: 1.5", "key: optim.betas"]),
    ("broken_interpolation", ["scheduler=cosine", "scheduler.T_max=${trainer.epoch}"], 2,
     ["scheduler.T_max refers to a value that cannot be found", "trainer.epoch"]),
    ("unknown_precision", ["trainer.precision=16"], 2, ["trainer.precision=16", "32, bf16, fp16"]),
    ("objective_not_logged", [*CSV, "data.val_fraction=0", "objective=val_loss"], 2,
     ["objective=val_loss is not a value this run logs", "no validation split"]),
    # -- devices
    pytest.param(["device=cuda"], 2, ["device=cuda", "available here: cpu"], id="cuda_absent", marks=no_cuda),
    pytest.param(["device=mps"], 2, ["device=mps", "available here: cpu"], id="mps_absent", marks=no_mps),
    # -- files and data
    ("csv_without_path", ["data=csv"], 2, ["data.path and data.target are required", "data=csv"]),
    ("csv_missing_file", ["data=csv", "data.path=nope.csv", "data.target=y"], 2,
     ["file not found", "nope.csv", "data.path"]),
    ("csv_missing_column", ["data=csv", "data.path=m.csv", "data.target=label"], 2,
     ["no column 'label'", "'a', 'b', 'c', 'd', 'y'", "data.target"]),
    ("csv_text_feature", ["data=csv", "data.path=text.csv", "data.target=y"], 2,
     ["CSV column 'colour' is not numeric (value 'red')", "data.features"]),
    ("csv_nan_feature", ["data=csv", "data.path=nan.csv", "data.target=y"], 2,
     ["NaN or infinite values", "rows [1]"]),
    ("npz_unreadable", ["data=npz", "data.path=bad.npz"], 2, ["cannot read NPZ file", "bad.npz"]),
    ("data_source_returns_text", ["data._target_=mydata.text"], 2,
     ["data._target_=mydata.text returned a str", "key: data._target_"]),
    ("loss_does_not_fit_task", [*CSV, "loss=bce"], 2, ["3 classes", "loss=cross_entropy"]),
    ("cnn_without_image_shape", [*CSV, "model=cnn"], 2, ["model=cnn needs image-shaped samples", "data.image_shape"]),
    # -- user _target_ modules
    ("target_not_importable", ["model._target_=nosuchmod.Net"], 2,
     ["cannot import model._target_='nosuchmod.Net'", "No module named 'nosuchmod'",
      "('nosuchmod') must be importable from"]),
    ("target_rejects_argument", [*CSV, "model._target_=mymodels.Net", "+model.width=3"], 2,
     ["model.width=3 is not an argument of mymodels.Net", "in_features, out_features"]),
    ("target_not_a_module", [*CSV, "model._target_=mymodels.make_list"], 2, ["built a list, not a torch.nn.Module"]),
    ("optimizer_rejects_value", ["optim=sgd", "+optim.momentum_decay=0.1"], 2,
     ["optim.momentum_decay=0.1 is not an argument of torch.optim.SGD"]),
    # -- preflight, end to end
    ("model_forward_fails", [*CSV, "model._target_=mymodels.Crash"], 2,
     ["preflight: the model failed on a batch x of shape [16,4]", "mat1 and mat2", "model._target_"]),
    ("output_would_broadcast", ["data=csv", "data.path=r.csv", "data.target=y", "data.batch_size=16",
                                "loss=mse", "model._target_=mymodels.Squeezed"], 2,
     ["output has shape [16]", "broadcast them to [16,16]"]),
    ("unused_layer", [*CSV, "model._target_=mymodels.Unused"], 2,
     ["spare.weight [2,4]", "unused layer"]),
]


PARAMS = [c if hasattr(c, "marks") else pytest.param(*c[1:], id=c[0]) for c in CASES]


@pytest.mark.parametrize("overrides, status, needles", PARAMS)
def test_bad_input(train, folder: Path, overrides, status, needles) -> None:
    result = train(*QUIET, *overrides, check=False)
    out = result.output
    assert result.returncode == status, out
    assert "Traceback" not in out, out
    assert "Error: " in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 25


def test_error_is_recorded_in_run_log(train, folder: Path) -> None:
    result = train(*QUIET, *CSV, "model._target_=mymodels.Crash", check=False)
    assert result.returncode == 2
    logs = list(result.run_dir.glob("*.log"))
    assert logs and "mat1 and mat2" in logs[0].read_text()


def test_full_error_shows_traceback(train, folder: Path) -> None:
    """HYDRA_FULL_ERROR=1 is the way to see where an error came from."""
    result = train(*QUIET, "optim.lrr=0.1", check=False, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.output


def test_nonfinite_loss_stops(train, folder: Path) -> None:
    """The loss turns NaN in epoch 2, batch 2: exit 1, the message says where, and what epoch 1
    wrote is intact and readable."""
    result = train("print_config=false", "trainer.epochs=3", *CSV, "data.val_fraction=0.25",
                   "model._target_=mymodels.Blowup", "+model.at=5", check=False)
    out = result.output
    assert result.returncode == 1, out
    assert "Traceback" not in out
    assert "non-finite in epoch 2, batch 2" in out, out
    assert "last finite loss:" in out and "optim.lr" in out
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    saved = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert "non-finite" in next(result.run_dir.glob("*.log")).read_text()


def test_nonfinite_loss_skipped(train, folder: Path) -> None:
    """With on_nonfinite=skip the NaN batch adds no gradient and the run completes."""
    result = train("print_config=false", "trainer.epochs=2", *CSV, "data.val_fraction=0.25",
                   "model._target_=mymodels.Blowup", "+model.at=5", "+model.once=true",
                   "trainer.on_nonfinite=skip")
    rows = result.metrics
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    saved = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert int(saved["model"]["calls"]) == 6  # 3 batches x 2 epochs; preflight's call undone
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
