"""The speed and stability levers of the loop: gradient accumulation, clipping, learning-rate
schedulers (cadence, logging, checkpointing), precision, torch.compile, foreach/fused optimizers.

End-to-end runs are ``train`` subprocesses; the clipping checks build a run in this process and
watch the gradients the optimizer actually stepped with.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import TOYS, final_weights, max_difference

# Synthetic data with 803 training rows: batches of 32 leave a short last batch (3 rows), and
# windows of 4 batches of 8 leave a short last window (8 + 8 + 3), so the equalities below cover
# the ragged ends, not only the easy case.
DATA = ("data=synthetic", "data.n_samples=1004", "print_config=false")


# --------------------------------------------------------------------------- accumulation


def test_accumulating_k_batches_equals_one_batch_k_times_larger(train, tmp_path):
    common = (*DATA, "optim=sgd", "trainer.epochs=3")
    big = train(*common, "data.batch_size=32", run_dir=tmp_path / "big")
    acc = train(*common, "data.batch_size=8", "trainer.accumulate_grad_batches=4", run_dir=tmp_path / "acc")
    small = train(*common, "data.batch_size=8", run_dir=tmp_path / "small")

    assert [r["step"] for r in acc.metrics] == [r["step"] for r in big.metrics] == [26, 52, 78]
    assert max_difference(final_weights(big.run_dir), final_weights(acc.run_dir)) < 1e-5
    for a, b in zip(big.metrics, acc.metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    # the comparison can tell: four times as many steps of 8 end far away
    assert max_difference(final_weights(big.run_dir), final_weights(small.run_dir)) > 1e-2


# --------------------------------------------------------------------------- clipping


def _train_one_epoch(compose, *overrides):
    """Build a run in this process and train one epoch; return the run and, per optimizer step,
    the gradients it stepped with (the clipped ones: ``after_step`` runs after the step)."""
    from trainrun.build.setup import build
    from trainrun.engine.loop import TrainState, train_epoch

    cfg = compose(*DATA, "optim=sgd", "optim.lr=0.5", "preflight=false", *overrides)
    run = build(cfg)
    grads = []

    class Record:  # in the place of the run's Stop: asked after every optimizer step
        def after_step(self, state, epoch):
            grads.append([p.grad.detach().clone() for p in run.raw_model.parameters()])
            return False

    train_epoch(run, TrainState(), 0, Record())
    return run, grads


def _norm(grads):
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()


def test_clip_by_norm_bounds_every_step_and_changes_the_result(compose):
    free, free_grads = _train_one_epoch(compose)
    clipped, clipped_grads = _train_one_epoch(compose, "trainer.grad_clip.max_norm=0.05")
    assert sum(_norm(g) > 0.05 for g in free_grads) > len(free_grads) // 2  # the bound binds
    assert all(_norm(g) <= 0.05 * (1 + 1e-5) for g in clipped_grads)
    a, b = free.raw_model.state_dict(), clipped.raw_model.state_dict()
    assert max_difference(a, b) > 1e-3


def test_clip_by_value_bounds_every_gradient_entry(compose):
    _, free_grads = _train_one_epoch(compose)
    _, clipped_grads = _train_one_epoch(compose, "trainer.grad_clip.max_value=0.002")
    assert max(g.abs().max().item() for step in free_grads for g in step) > 0.002
    bound = torch.tensor(0.002).item()  # 0.002 as float32 holds it
    assert max(g.abs().max().item() for step in clipped_grads for g in step) == bound


# --------------------------------------------------------------------------- schedulers


def _replay(name, metrics, lr, steps_per_epoch):
    """The lr that torch's own scheduler gives at each logged epoch, stepped at the cadence the
    scheduler group promises: per epoch, per optimizer step (onecycle), on val_loss (plateau)."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    sched = {
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=len(metrics)),
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=len(metrics) * steps_per_epoch),
        "plateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", patience=0, factor=0.5, threshold=1.0),
    }[name]()
    expected = []
    for row in metrics:
        if name == "onecycle":
            for _ in range(steps_per_epoch):
                opt.step()
                sched.step()
        expected.append(opt.param_groups[0]["lr"])  # the lr of the epoch just logged
        if name == "plateau":
            sched.step(row["val_loss"])
        elif name != "onecycle":
            opt.step()  # (no gradient: changes nothing; keeps torch's order check quiet)
            sched.step()
    return expected


SCHEDULER_ARGS = {
    "step": ("scheduler.step_size=2", "scheduler.gamma=0.5"),
    "cosine": (),
    "onecycle": (),
    # threshold=1 (relative): only a loss below 0 would count as an improvement, so after the
    # first epoch none does and the lr is cut after each one
    "plateau": ("scheduler.patience=0", "scheduler.factor=0.5", "scheduler.threshold=1.0"),
}


@pytest.mark.parametrize("name", ["step", "cosine", "onecycle", "plateau"])
def test_scheduler_cadence_and_logged_lr(train, name):
    lr = 0.05
    result = train(*DATA, "optim=sgd", f"optim.lr={lr}", f"scheduler={name}", *SCHEDULER_ARGS[name],
                   "trainer.epochs=5", "data.batch_size=64")
    steps = result.metrics[0]["step"]
    assert steps == 13
    logged = [row["lr"] for row in result.metrics]
    assert logged == pytest.approx(_replay(name, result.metrics, lr, steps), rel=1e-9)
    assert len(set(logged)) > 1  # the schedule moved the lr
    saved = torch.load(result.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["scheduler"] is not None


@pytest.mark.parametrize("name", ["onecycle", "plateau"])
def test_resumed_run_has_the_same_lr_sequence_and_weights(train, tmp_path, name):
    shutil.copy(TOYS, tmp_path / "killer.py")
    args = (*DATA, "model._target_=killer.KillsItself", "optim=sgd", "optim.lr=0.05", f"scheduler={name}",
            *SCHEDULER_ARGS[name], "trainer.epochs=4", "data.batch_size=64")
    whole = train(*args, run_dir=tmp_path / "whole")
    # forward call 20 is inside epoch 2 (13 steps an epoch; the preflight batch is call 1)
    cut = train(*args, run_dir=tmp_path / "cut", env={"KILL_AT": "20"}, check=False)
    assert cut.returncode == 143, cut.output
    saved = torch.load(cut.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 1 and saved["state"]["batch"] > 0  # stopped mid-epoch
    resumed = train(*args, "resume=auto", run_dir=tmp_path / "cut")
    assert [r["lr"] for r in resumed.metrics] == [r["lr"] for r in whole.metrics]
    assert max_difference(final_weights(whole.run_dir), final_weights(resumed.run_dir)) == 0


# --------------------------------------------------------------------------- precision


def test_bf16_autocast_trains_on_cpu(train, tmp_path):
    fp32 = train(*DATA, "trainer.epochs=3", run_dir=tmp_path / "fp32")
    bf16 = train(*DATA, "trainer.epochs=3", "trainer.precision=bf16", run_dir=tmp_path / "bf16")
    assert bf16.summary["status"] == "completed"
    losses = [r["train_loss"] for r in bf16.metrics]
    assert losses[-1] < losses[0]
    # bf16 keeps ~3 significant digits: close to fp32, but not the same numbers
    assert losses[-1] == pytest.approx(fp32.metrics[-1]["train_loss"], rel=0.05)
    assert losses != [r["train_loss"] for r in fp32.metrics]


def test_fp16_on_cpu_is_a_clear_config_error(train):
    result = train(*DATA, "trainer.precision=fp16", "device=cpu", check=False)
    assert result.returncode == 2
    assert "trainer.precision=fp16 needs a CUDA device" in result.output
    assert "bf16" in result.output  # the fix names the CPU alternative
    assert "Traceback" not in result.output


def test_unknown_precision_lists_the_choices(train):
    result = train(*DATA, "trainer.precision=16", check=False)
    assert result.returncode == 2
    assert "32, bf16, fp16" in result.output


# --------------------------------------------------------------------------- compile, foreach, fused


@pytest.mark.timeout(900)  # inductor's first compile takes a minute on a busy 2-core machine
@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on CPU needs a C++ compiler")
def test_compile_runs_and_matches_eager(train, tmp_path):
    args = (*DATA, "model=linear", "trainer.epochs=2")
    eager = train(*args, run_dir=tmp_path / "eager")
    compiled = train(*args, "trainer.compile=true", run_dir=tmp_path / "compiled", timeout=600)
    assert compiled.summary["status"] == "completed"
    for a, b in zip(eager.metrics, compiled.metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    weights = final_weights(compiled.run_dir)
    assert not any(k.startswith("_orig_mod") for k in weights)  # the plain module is saved


def test_compile_without_a_compiler_is_a_clear_error(train):
    result = train(*DATA, "trainer.compile=true", env={"CXX": "/nonexistent/g++"}, check=False)
    assert result.returncode == 2
    assert "trainer.compile=true needs a C++ compiler" in result.output
    assert "Traceback" not in result.output


def test_foreach_and_fused_reach_the_optimizer(compose):
    from trainrun.build.setup import build

    adam = build(compose(*DATA, "optim=adam", "optim.fused=true", "preflight=false"))
    assert adam.optimizer.defaults["fused"] is True
    sgd = build(compose(*DATA, "optim=sgd", "optim.foreach=true", "preflight=false"))
    assert sgd.optimizer.defaults["foreach"] is True
    default = build(compose(*DATA, "optim=adam", "preflight=false"))
    assert default.optimizer.defaults["fused"] is None and default.optimizer.defaults["foreach"] is None


def test_fused_adam_trains_like_the_default(train, tmp_path):
    plain = train(*DATA, "optim=adam", "trainer.epochs=2", run_dir=tmp_path / "plain")
    fused = train(*DATA, "optim=adam", "optim.fused=true", "trainer.epochs=2", run_dir=tmp_path / "fused")
    # fused kernels round differently in the last bits, nothing more
    assert max_difference(final_weights(plain.run_dir), final_weights(fused.run_dir)) < 1e-4


def test_foreach_and_fused_together_are_refused(train):
    result = train(*DATA, "optim.foreach=true", "optim.fused=true", check=False)
    assert result.returncode == 2
    assert "`fused` and `foreach` cannot be `True` together" in result.output
