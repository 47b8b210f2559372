"""The stored data is protected from the model, in process: no batch the model sees is a view
of the stored splits (data/batches.py), so a forward (or a loss) that changes its input in
place changes that batch only, in every path that runs the model: preflight, the layer table,
explain, training, validation, evaluate's whole split. And preflight steps the optimizer once
(everything restored after) and runs the epoch's short last batch."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import write_csv

from trainrun.errors import TrainrunError

# Models that change their input in place, each another way; none is named by any rule.
USER = textwrap.dedent('''
    import torch
    from torch import nn

    class Base(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.fc = nn.Linear(in_features, out_features)
        def change(self, x):
            raise NotImplementedError
        def forward(self, x):
            self.change(x)
            return self.fc(x)

    class Divides(Base):          # image code's x.div_(255)
        def change(self, x): x.div_(255)
    class Clamps(Base):
        def change(self, x): x.clamp_(-0.1, 0.1)
    class Noises(Base):
        def change(self, x): x.add_(torch.randn_like(x))
    class SetsColumn(Base):
        def change(self, x): x[:, 0] = 0
    class CopiesInto(Base):
        def change(self, x): x.copy_(x * 3)
    class Centers(Base):          # per-batch normalization written in place
        def change(self, x): x.sub_(x.mean(0)).div_(x.std(0) + 1e-6)
    class ThroughAView(Base):
        def change(self, x): x.view(-1).mul_(-1)
    class OnlyWhenEvaluating(Base):
        def change(self, x):
            if not self.training:
                x.zero_()

    class InplaceReLUFirst(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.net = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(in_features, out_features))
        def forward(self, x):
            return self.net(x)

    class InplaceDropoutFirst(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.net = nn.Sequential(nn.Dropout(0.5, inplace=True), nn.Linear(in_features, out_features))
        def forward(self, x):
            return self.net(x)

    class ZeroesTargets(nn.CrossEntropyLoss):
        """A loss that changes its targets in place."""
        def forward(self, out, y):
            loss = super().forward(out, y.clone())
            y.zero_()
            return loss

    class BatchNormed(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(in_features, 8), nn.BatchNorm1d(8), nn.Linear(8, out_features))
        def forward(self, x):
            return self.net(x)

    class FixedBatch(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.fc = nn.Linear(in_features, out_features)
        def forward(self, x):
            return self.fc(x.view(16, -1))

    class SqueezesAll(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.fc = nn.Linear(in_features, out_features)
        def forward(self, x):
            return self.fc(x).squeeze()

    def nans(params, lr=0.1):
        class Nans(torch.optim.SGD):
            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        p.add_(float("nan"))
        return Nans(params, lr=lr)

    def fails_on_step(params, lr=0.1):
        class Broken(torch.optim.SGD):
            def step(self, closure=None):
                raise RuntimeError("this optimizer cannot step")
        return Broken(params, lr=lr)
''')

CHANGERS = ["Divides", "Clamps", "Noises", "SetsColumn", "CopiesInto", "Centers", "ThroughAView",
            "OnlyWhenEvaluating", "InplaceReLUFirst", "InplaceDropoutFirst"]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "changers.py").write_text(USER)
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path, "multiclass", n=101)  # 81 training samples: 5 batches of 16, then 1
    return tmp_path


SHORT = ["data=csv", "data.path=multiclass.csv", "data.target=y", "data.batch_size=16", "trainer.epochs=2",
         "checkpoint.enabled=false"]  # 81 training samples: the last batch holds 1
DATA = [*SHORT, "data.test_fraction=0.1"]


def stored(setup) -> list[torch.Tensor]:
    return [t.clone() for b in (setup.train_batches, setup.val_batches, setup.test_batches) for t in (b.x, b.y)]


def run_everything(setup) -> None:
    """Every path that puts the model on stored batches."""
    from trainrun.data.batches import whole
    from trainrun.engine.loop import TrainState, eval_epoch, fit
    from trainrun.preflight import run as preflight
    from trainrun.tools import explain
    from trainrun.tools.model_summary import layer_rows

    class Quiet:
        def progress(self, epoch, steps):
            import contextlib
            return contextlib.nullcontext(type("P", (), {"step": lambda self, loss: None})())

        def epoch_end(self, row, state):
            pass

    preflight.check(setup)
    layer_rows(setup)
    explain.explain(setup, file=io.StringIO())
    fit(setup, TrainState(), Quiet())
    eval_epoch(setup, whole(setup.test_batches, 7))


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("model", CHANGERS)
def test_a_model_cannot_change_the_stored_data(compose, folder, model, shuffle):
    from trainrun.build.setup import build

    setup = build(compose(*DATA, f"model._target_=changers.{model}", f"data.shuffle={shuffle}"))
    before = stored(setup)
    run_everything(setup)
    for was, now in zip(before, stored(setup), strict=True):
        assert torch.equal(was, now)


def test_a_loss_cannot_change_the_stored_targets(compose, folder):
    from trainrun.build.setup import build

    setup = build(compose(*DATA, "loss._target_=changers.ZeroesTargets", "data.shuffle=false"))
    before = stored(setup)
    run_everything(setup)
    for was, now in zip(before, stored(setup), strict=True):
        assert torch.equal(was, now)


def test_the_issue_example_validation_does_not_drift(compose, folder):
    """x.div_(255) in forward: with weights that do not move, every epoch's validation is the
    same number (it used to be divided by 255 once more each epoch)."""
    from trainrun.build.setup import build
    from trainrun.engine.loop import eval_epoch

    setup = build(compose(*DATA, "model._target_=changers.Divides"))
    first = eval_epoch(setup, setup.val_batches)
    second = eval_epoch(setup, setup.val_batches)
    assert first == second


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("start", [0, 2])
def test_no_batch_shares_the_stored_memory(shuffle, start):
    from trainrun.data.batches import TensorBatches

    x, y = torch.randn(50, 3), torch.arange(50)
    batches = TensorBatches(x, y, 8, shuffle=shuffle, seed=1)
    stores = {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}
    seen = 0
    for bx, by in batches.epoch(3, start):
        assert bx.untyped_storage().data_ptr() not in stores and by.untyped_storage().data_ptr() not in stores
        seen += len(bx)
    assert seen == 50 - 8 * start
    bx, by = batches.batch(1)
    assert torch.equal(bx, x[8:16]) and bx.untyped_storage().data_ptr() not in stores


def test_same_batches_as_before():
    """Copies change no value: the order and contents are those of views of the stored split."""
    from trainrun.data.batches import TensorBatches

    x, y = torch.randn(37, 2), torch.arange(37)
    for shuffle in (True, False):
        batches = TensorBatches(x, y, 5, shuffle=shuffle, seed=4)
        order = batches.permutation(2) if shuffle else torch.arange(37)
        got = torch.cat([b for b, _ in batches.epoch(2)])
        assert torch.equal(got, x[order])


# ---------------------------------------------------------------- preflight: the step, the short batch


def test_preflight_steps_and_puts_the_optimizer_back(compose, folder):
    from trainrun.build.setup import build
    from trainrun.preflight import run as preflight

    setup = build(compose(*DATA, "optim=adam"))
    weights = {k: v.clone() for k, v in setup.raw_model.state_dict().items()}
    state = setup.optimizer.state_dict()
    preflight.check(setup)
    assert not setup.optimizer.state  # Adam's moments and step count: as before the check
    assert setup.optimizer.state_dict()["param_groups"] == state["param_groups"]
    for k, v in setup.raw_model.state_dict().items():
        assert torch.equal(v, weights[k]), k


@pytest.mark.parametrize("overrides, key, needle", [
    (["optim=sgd", "optim._target_=changers.fails_on_step"], "optim._target_",
     "optimizer.step() failed on the first gradients: RuntimeError: this optimizer cannot step"),
    (["optim=sgd", "optim._target_=changers.nans"], "optim.lr", "NaN or infinite, from finite weights"),
    (["optim=sgd", "optim.lr=1e39", "optim.momentum=0"], "optim.lr", "without overflow"),
    (["model._target_=changers.BatchNormed"], "model._target_", "the epoch's last batch"),
    (["model._target_=changers.FixedBatch"], "model._target_", "x of shape [1,4]"),
    (["model._target_=changers.SqueezesAll"], "model._target_", "output has shape [3] for a batch of 1"),
])
def test_preflight_refuses_what_fails_at_step_one_or_at_the_epochs_end(compose, folder, overrides, key, needle):
    from trainrun.build.setup import build
    from trainrun.preflight import run as preflight

    setup = build(compose(*SHORT, *overrides))
    with pytest.raises(TrainrunError) as caught:
        preflight.check(setup)
    assert caught.value.key == key, str(caught.value)
    assert needle in str(caught.value), str(caught.value)


def test_a_batch_size_that_divides_the_data_passes(compose, folder):
    """The BatchNorm model trains when no batch of one is left (81 = 3 x 27)."""
    from trainrun.build.setup import build
    from trainrun.preflight import run as preflight

    preflight.check(build(compose(*SHORT, "model._target_=changers.BatchNormed", "data.batch_size=27")))
