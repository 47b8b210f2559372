"""The loop is the tutorial loop on every device and precision: trainrun's ``fit`` against
``scripts/tutorial_loop.py`` (same weights, same batch order), on the CPU and on CUDA (marked
``cuda``), in fp32 and bf16.

* fp32: bit-identical. On CUDA with ``torch.use_deterministic_algorithms(True)`` and cuBLAS's
  fixed workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, set before CUDA starts:
  ``scripts/device_check.sh`` exports it), so that the same kernels reduce in the same order.
* bf16: trainrun's ``trainer.precision=bf16`` against the tutorial loop with the same
  ``torch.autocast`` around its forward and loss: the same kernels again, so at most
  ``BF16_SAME_MATH`` apart (0 expected). Against the fp32 tutorial loop it is another numeric
  format: the epoch losses within ``BF16_LOSS_REL`` and the weights within ``BF16_WEIGHTS``
  (measured on the CPU: see the recorded figures).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator

import pytest
import torch
from tutorial_loop import tutorial_epoch

from trainrun.build.setup import build
from trainrun.engine.loop import fit
from trainrun.engine.state import TrainState

BF16_SAME_MATH = 1e-6  # bf16 trainrun vs bf16 tutorial loop: max abs weight difference
BF16_LOSS_REL = 0.02  # bf16 trainrun vs fp32 tutorial loop: each epoch loss, relative (CPU: 1.8e-3)
BF16_WEIGHTS = 0.1  # ... and max abs weight difference after 3 epochs (CPU: 2.7e-2)

NO_CUDA = "no CUDA device (scripts/device_check.sh runs these tests on a GPU)"
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA),
    ]),
]
ARGS = ("data=digits", "data.batch_size=50", "trainer.epochs=3", "model.hidden=[128,128]", "optim=sgd",
        "optim.lr=0.05", "optim.momentum=0.9", "checkpoint.enabled=false", "trainer.progress=none")


class Quiet:
    def progress(self, epoch: int, steps: int) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext(self)

    def step(self, loss: torch.Tensor) -> None:
        pass

    def epoch_end(self, row: dict[str, object], state: TrainState) -> None:
        pass


@contextlib.contextmanager
def deterministic(device: str) -> Iterator[None]:
    """Deterministic algorithms for the test (and only for it) on CUDA."""
    if device != "cuda":
        yield
        return
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8"):
        pytest.fail("set CUBLAS_WORKSPACE_CONFIG=:4096:8 before CUDA starts (scripts/device_check.sh does)")
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def tutorial(run, initial, precision: str) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The tutorial loop from ``initial`` on ``run``'s batches in trainrun's order, with autocast
    around its forward and its loss (not backward or step) when ``precision`` is bf16, as
    trainrun's loop has it."""
    model = copy.deepcopy(run.raw_model)
    model.load_state_dict(initial)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    device = run.device.type
    autocast = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext

    def criterion(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast():
            return run.criterion(out, y)

    class Autocast(torch.nn.Module):  # the same forward, inside autocast as trainrun's loop does it
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with autocast():
                return self.inner(x)

    batches, losses = run.train_batches, []
    for epoch in range(3):
        perm = batches.permutation(epoch).to(batches.x.device)
        x_all, y_all = batches.x[perm], batches.y[perm]
        pairs = ((x_all[lo:hi], y_all[lo:hi]) for lo, hi in batches.bounds)
        losses.append(tutorial_epoch(Autocast(), optimizer, criterion, pairs))
    return model.state_dict(), losses


def difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("device", DEVICES)
def test_fp32_is_bit_identical_to_the_tutorial_loop(compose, device, record_property):
    with deterministic(device):
        run = build(compose(*ARGS, f"device={device}"))
        assert len(run.train_batches.x) % 50  # a short last batch, weighted by its size
        initial = copy.deepcopy(run.raw_model.state_dict())
        state = fit(run, TrainState(), Quiet())
        theirs, losses = tutorial(run, initial, "32")
    diff = difference(run.raw_model.state_dict(), theirs)
    record_property(f"fidelity_fp32_{device}_max_diff", f"{diff:.2e}")
    assert all(torch.equal(v, theirs[k]) for k, v in run.raw_model.state_dict().items()), diff
    assert [row["train_loss"] for row in state.history] == pytest.approx(losses, rel=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_is_the_tutorial_loop_under_autocast(compose, device, record_property):
    with deterministic(device):
        run = build(compose(*ARGS, f"device={device}", "trainer.precision=bf16"))
        initial = copy.deepcopy(run.raw_model.state_dict())
        state = fit(run, TrainState(), Quiet())
        same, same_losses = tutorial(run, initial, "bf16")
        fp32, fp32_losses = tutorial(run, initial, "32")
    ours = run.raw_model.state_dict()
    same_math, vs_fp32 = difference(ours, same), difference(ours, fp32)
    rel = max(abs(row["train_loss"] - f) / abs(f) for row, f in zip(state.history, fp32_losses, strict=True))
    record_property(f"fidelity_bf16_{device}_vs_bf16_tutorial", f"{same_math:.2e}")
    record_property(f"fidelity_bf16_{device}_vs_fp32_tutorial", f"weights {vs_fp32:.2e}, losses rel {rel:.2e}")
    assert same_math <= BF16_SAME_MATH
    assert [row["train_loss"] for row in state.history] == pytest.approx(same_losses, rel=1e-5)
    assert vs_fp32 <= BF16_WEIGHTS and rel <= BF16_LOSS_REL
