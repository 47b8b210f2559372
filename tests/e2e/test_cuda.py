"""On a CUDA device: every CUDA path trainrun has, through the real commands where a user would
meet it. Marked ``cuda``: collected everywhere, skipped without a CUDA device;
``scripts/device_check.sh`` runs them on a GPU machine (``pytest -m cuda``) and puts
the figures each test records (``record_property``) in its report.

What is checked: each loss with a built-in model; bf16 and fp16 (the scaler); torch.compile;
the captured step (``trainer.compile=reduce-overhead``) against the loop, its refusals and its
failure message; no host sync per step (``torch.cuda.set_sync_debug_mode``); one process under
the strategies of ``trainer.strategy`` (skipped until that key exists); SIGKILL and
``resume=auto`` bit for bit with deterministic algorithms; evaluate, predict and export-model of
a CUDA run on the CPU and back; the preflight's words for a model that makes a CPU tensor in
``forward``. The fidelity of the loop on CUDA is in ``tests/e2e/test_fidelity_devices.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import textwrap
from typing import Any

import numpy as np
import pytest
import torch
from conftest import final_weights, max_difference, run_command, run_train
from killpoints import launch, metric_rows, same_weights, weights

from trainrun.build.setup import build
from trainrun.engine.loop import fit, train_epoch
from trainrun.engine.state import TrainState
from trainrun.engine.stop import Stop
from trainrun.errors import TrainrunError

NO_CUDA = "no CUDA device (scripts/device_check.sh runs these tests on a GPU)"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA),
]

QUICK = ("device=cuda", "trainer.epochs=2", "plot=false")
# SGD: the comparisons below are not blurred by Adam, which turns rounding noise in near-zero
# gradients into steps of size lr.
DIGITS = ("data=digits", "model.hidden=[64]", "data.batch_size=64", "optim=sgd", "optim.lr=0.05",
          "optim.momentum=0.9", *QUICK)
# Tolerances of the captured step against the loop's eager steps (final weights, max abs, after
# 3 epochs): the same kernels on the same data, so equal up to the libraries' choice of kernel for
# the graph's memory (SGD, fp32), and for Adam up to its capturable arithmetic (bias correction in
# float32 tensors, not Python floats), which Adam can amplify where gradients are near zero:
# held to half of one step of its lr (2e-3).
CAPTURE_TOLERANCE = {"sgd": 1e-5, "adam": 1e-3, "bf16-clip": 1e-3, "epoch-scheduler": 1e-5}


class Quiet:
    """A reporter that reports nothing (the test reads the state)."""

    def progress(self, epoch: int, steps: int) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext(NoProgress())

    def epoch_end(self, row: dict[str, Any], state: TrainState) -> None:
        pass


class NoProgress:
    def step(self, loss: torch.Tensor) -> None:
        pass


# --------------------------------------------------------------------------- the real commands


@pytest.mark.parametrize(("loss", "model", "data"), [
    ("cross_entropy", "mlp", ("data=digits",)),
    ("nll", "mlp", ("data=digits",)),
    ("bce", "mlp", ("data=breast_cancer",)),
    ("bce_logits", "mlp", ("data=breast_cancer",)),
    ("mse", "mlp", ("data=diabetes",)),
    ("cross_entropy", "cnn", ("data=digits", "data.image_shape=[1,8,8]")),
    ("cross_entropy", "linear", ("data=digits",)),
])
def test_each_loss_trains_on_cuda(tmp_path, loss, model, data):
    result = run_train(f"loss={loss}", f"model={model}", *data, *QUICK, cwd=tmp_path)
    assert result.summary["device"].startswith("cuda")
    rows = result.metrics
    assert len(rows) == 2 and all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert rows[1]["train_loss"] < rows[0]["train_loss"] * 1.05


def test_bf16_and_fp16_train_like_fp32(tmp_path, record_property):
    """bf16 (autocast) and fp16 (autocast + GradScaler, whose state the checkpoint keeps) reach
    the accuracy of fp32 within 5 points on digits (fp16's scaler skips its first steps)."""
    args = (*DIGITS, "trainer.epochs=5")
    fp32 = run_train(*args, cwd=tmp_path, run_dir=tmp_path / "fp32").metrics[-1]
    for precision in ("bf16", "fp16"):
        run = run_train(*args, f"trainer.precision={precision}", cwd=tmp_path, run_dir=tmp_path / precision)
        last = run.metrics[-1]
        record_property(f"val_acc_{precision}_vs_fp32", f"{last['val_acc']:.4f} vs {fp32['val_acc']:.4f}")
        assert abs(last["val_acc"] - fp32["val_acc"]) < 0.05, precision
        saved = torch.load(run.run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
        assert (saved["scaler"] is not None) == (precision == "fp16")


def test_torch_compile_on_cuda(tmp_path, record_property):
    eager = run_train(*DIGITS, cwd=tmp_path, run_dir=tmp_path / "eager")
    compiled = run_train(*DIGITS, "trainer.compile=true", cwd=tmp_path, run_dir=tmp_path / "compiled", timeout=600)
    diff = max_difference(final_weights(eager.run_dir), final_weights(compiled.run_dir))
    record_property("compile_max_diff", f"{diff:.2e}")
    assert diff < 1e-3


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_strategy_on_one_process_with_nccl(tmp_path, compose, strategy, record_property):
    if "strategy" not in compose().trainer:
        pytest.skip("trainer.strategy does not exist yet (issue 19 brings it)")
    plain = run_train(*DIGITS, cwd=tmp_path, run_dir=tmp_path / "plain")
    run = run_train(*DIGITS, f"trainer.strategy={strategy}", "trainer.devices=1", cwd=tmp_path,
                    run_dir=tmp_path / strategy)
    diff = max_difference(final_weights(plain.run_dir), final_weights(run.run_dir))
    record_property(f"{strategy}_max_diff", f"{diff:.2e}")
    assert diff < 1e-4


SMALL = ("data=synthetic", "data.n_samples=400", "data.batch_size=16", "model.hidden=[32]", "model.dropout=0.3",
         "trainer.epochs=4", "checkpoint.every_n_steps=5", "plot=false", "device=cuda", "trainer.deterministic=true")


def test_kill_and_resume_is_bit_identical_on_cuda(tmp_path, monkeypatch):
    """SIGKILL after an epoch-end checkpoint and after steps (dropout: the CUDA random stream is
    restored too), resumed with resume=auto: the weights and metrics of the run that was never
    stopped, bit for bit. Deterministic algorithms need cuBLAS's fixed workspace."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    run_train(*SMALL, cwd=tmp_path, run_dir=tmp_path / "reference")
    run_dir = tmp_path / "killed"
    for i, point in enumerate(["saved:2", "step:13", "step:37"]):
        proc = launch(point, *SMALL, *(("resume=auto",) if i else ()), run_dir=run_dir)
        assert proc.returncode == -9, f"kill point {point} not reached (exit {proc.returncode})\n{proc.stderr}"
    run_train(*SMALL, "resume=auto", cwd=tmp_path, run_dir=run_dir)
    assert same_weights(weights(run_dir), weights(tmp_path / "reference"))
    assert metric_rows(run_dir) == metric_rows(tmp_path / "reference")


def test_evaluate_predict_export_of_a_cuda_run_on_cpu_and_back(tmp_path, record_property):
    data = ("data=synthetic", "data.n_features=20", "data.test_fraction=0.2")
    run_train(*data, *QUICK, cwd=tmp_path, run_dir=tmp_path / "gpu")
    run_train(*data, "trainer.epochs=2", "plot=false", "device=cpu", cwd=tmp_path, run_dir=tmp_path / "cpu")
    scores = {}
    for trained in ("gpu", "cpu"):
        for device in ("cpu", "cuda"):
            out = tmp_path / f"eval-{trained}-{device}"
            run_command("evaluate", f"run={tmp_path / trained}", "split=test", f"device={device}", f"out={out}",
                        cwd=tmp_path)
            scores[trained, device] = json.loads((out / "eval.json").read_text())
        cpu, gpu = scores[trained, "cpu"], scores[trained, "cuda"]
        record_property(f"evaluate_{trained}_run_cpu_vs_cuda", f"{abs(cpu['loss'] - gpu['loss']):.2e}")
        assert cpu["loss"] == pytest.approx(gpu["loss"], abs=1e-5) and cpu["acc"] == gpu["acc"]
    np.savez(tmp_path / "new.npz", X=np.random.default_rng(0).normal(size=(7, 20)).astype(np.float32))
    out = tmp_path / "predicted"
    run_command("predict", f"run={tmp_path / 'gpu'}", "data=npz", "data.path=new.npz", "device=cpu",
                f"hydra.run.dir={out}", cwd=tmp_path)
    assert len((out / "predictions.csv").read_text().splitlines()) == 8
    exported = run_command("export-model", f"run={tmp_path / 'gpu'}", "format=safetensors", cwd=tmp_path)
    assert "largest difference" in exported.output


MISMATCH = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.layer = nn.Linear(in_features, out_features)

        def forward(self, x):
            return self.layer(x) + torch.zeros(self.layer.out_features)  # made on the CPU
""")


def test_a_cpu_tensor_made_in_forward_is_named_by_the_preflight(tmp_path):
    (tmp_path / "usernet.py").write_text(MISMATCH)
    result = run_train("model._target_=usernet.Net", "data=synthetic", *QUICK, cwd=tmp_path, check=False)
    assert result.returncode == 2, result.output
    assert "preflight" in result.output and "same device" in result.output
    assert "register_buffer" in result.output and "device=x.device" in result.output
    assert "model._target_" in result.output and "Traceback" not in result.output


ITEM = textwrap.dedent("""
    from torch import nn

    class Net(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.layer = nn.Linear(in_features, out_features)

        def forward(self, x):
            if x.abs().max().item() > 1e6:  # reads a value on the host: fine eagerly, not in a graph
                x = x / 1e6
            return self.layer(x)
""")


def test_a_step_that_cannot_be_captured_is_one_paragraph(tmp_path):
    (tmp_path / "usernet.py").write_text(ITEM)
    result = run_train("model._target_=usernet.Net", "data=synthetic", "trainer.compile=reduce-overhead", *QUICK,
                       cwd=tmp_path, check=False)
    assert result.returncode == 1, result.output
    assert "could not capture the training step" in result.output and "trainer.compile" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- in this process


def built(compose, *overrides: str):
    return build(compose(*overrides, "device=cuda", "checkpoint.enabled=false", "trainer.progress=none"))


@pytest.mark.parametrize("case", list(CAPTURE_TOLERANCE))
def test_the_captured_step_ends_where_the_loop_ends(compose, case, record_property):
    """trainer.compile=reduce-overhead against the loop's eager steps from the same weights:
    digits at batch 50 (every epoch ends with a short batch of 37, run eagerly)."""
    extra = {
        "sgd": ("optim=sgd", "optim.lr=0.05", "optim.momentum=0.9"),
        "adam": ("optim=adam", "optim.lr=0.002"),
        "bf16-clip": ("optim=sgd", "optim.lr=0.05", "trainer.precision=bf16", "trainer.grad_clip.max_norm=0.5"),
        "epoch-scheduler": ("optim=sgd", "optim.lr=0.05", "scheduler=step", "scheduler.step_size=1",
                            "scheduler.gamma=0.5"),
    }[case]
    args = ("data=digits", "data.batch_size=50", "trainer.epochs=3", "model.hidden=[128,128]", *extra)
    eager, captured = built(compose, *args), built(compose, *args, "trainer.compile=reduce-overhead")
    assert len(eager.train_batches.x) % 50 and captured.step_graph is not None
    captured.raw_model.load_state_dict(eager.raw_model.state_dict())
    ours, theirs = fit(captured, TrainState(), Quiet()), fit(eager, TrainState(), Quiet())
    graph = captured.step_graph
    full = len(eager.train_batches) - 1
    diff = max_difference(captured.raw_model.state_dict(), eager.raw_model.state_dict())
    record_property(f"captured_{case}_max_diff", f"{diff:.2e}")
    record_property(f"captured_{case}_replays", f"{graph.replays} of {3 * len(eager.train_batches)} steps")
    assert diff <= CAPTURE_TOLERANCE[case]
    assert graph.replays == 3 * full - graph.WARM_UP  # every full batch after the warm-up
    assert graph.captures == (3 if case == "epoch-scheduler" else 1)  # a new rate: captured again
    for a, b in zip(ours.history, theirs.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_a_captured_runs_checkpoint_resumes_on_the_cpu(compose):
    run = built(compose, "data=digits", "optim=adam", "trainer.epochs=1", "trainer.compile=reduce-overhead")
    fit(run, TrainState(), Quiet())
    assert run.optimizer.param_groups[0]["capturable"] is True  # live: captured
    saved = run.optimizer.state_dict()
    assert saved["param_groups"][0]["capturable"] is False  # stored: as the user built it
    assert all(entry["step"].device.type == "cpu" for entry in saved["state"].values())
    model = run.raw_model.cpu()
    cpu = torch.optim.Adam(model.parameters(), lr=0.001)
    cpu.load_state_dict(saved)
    model(torch.randn(4, 64)).sum().backward()
    cpu.step()  # a capturable Adam would refuse CPU parameters here


@pytest.mark.parametrize(("override", "key"), [
    ("trainer.precision=fp16", "trainer.precision"),
    ("scheduler=onecycle", "scheduler.interval"),
    ("optim=adagrad", "optim._target_"),
    ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches"),
    ("trainer.on_nonfinite=skip", "trainer.on_nonfinite"),
])
def test_the_captured_step_refuses_what_it_would_compute_otherwise(compose, override, key):
    with pytest.raises(TrainrunError) as caught:
        built(compose, "data=digits", "trainer.compile=reduce-overhead", override)
    assert caught.value.key == key and "reduce-overhead" in caught.value.message


class SyncsAreErrors(NoProgress):
    """After the first step of an epoch (whose start reads the batch sizes and copies the
    permutation: once per epoch), every host sync raises."""

    def step(self, loss: torch.Tensor) -> None:
        torch.cuda.set_sync_debug_mode("error")


@pytest.mark.parametrize("compile_mode", ["false", "reduce-overhead"])
def test_no_host_sync_per_step(compose, compile_mode):
    run = built(compose, "data=digits", "data.batch_size=32", "optim=sgd", "optim.momentum=0.9",
                f"trainer.compile={compile_mode}")
    state, stop = TrainState(), Stop.for_setup(run, checkpoints=None)
    assert train_epoch(run, state, 0, stop)  # warms up (and captures)
    try:
        assert train_epoch(run, state, 1, stop, SyncsAreErrors())  # 45 steps, none may sync
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert state.step == 2 * len(run.train_batches)


@pytest.fixture
def torch_defaults():
    """TF32 as torch starts, again after the test (the setting is global to the process)."""
    yield
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True


def test_channels_last_and_tf32_where_they_apply(compose, torch_defaults):
    run = built(compose, "experiment=digits_cnn", "trainer.epochs=2", "trainer.precision=bf16", "trainer.tf32=true")
    conv = next(m for m in run.raw_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    state = fit(run, TrainState(), Quiet())
    assert state.history[-1]["val_acc"] > 0.8
    assert not built(compose, "experiment=digits_cnn").raw_model.features[0].weight.is_contiguous(
        memory_format=torch.channels_last)  # fp32: left as it is (other kernels would round otherwise)
    built(compose, "trainer.tf32=false")
    assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
