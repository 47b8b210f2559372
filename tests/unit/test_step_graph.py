"""``trainer.compile=reduce-overhead`` on the CPU: what can be checked without a GPU.

The refusals (``trainrun.build.speed``) are checked as a user meets them. The captured step
(``trainrun.build.step_graph``) cannot record a CUDA graph here, so ``Recorded`` records the step as
what a graph is to its caller: a fixed function of fixed input tensors, writing its loss into a
fixed tensor, run again at each replay. Everything around the recording is the real code in the
real loop: the warm-up, the static inputs, the short last batch run eagerly, a new capture when a
scheduler changes the rate, a new warm-up when the optimizer's state is replaced, and the
checkpoint as an uncaptured run holds it. Replaying the same operations on the same values must
end with the loop's weights bit for bit. ``tests/test_cuda.py`` runs the CUDA graph itself.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from helpers import Quiet

from trainrun.build.setup import build
from trainrun.build.speed import check_capturable, compile_plan, graph_safe, wants_channels_last
from trainrun.build.step_graph import StepGraph, device_counters
from trainrun.engine.loop import fit, train_epoch
from trainrun.engine.state import TrainState
from trainrun.engine.stop import Stop
from trainrun.errors import TrainrunError


class Recorded(StepGraph):
    """The step recorded as a function of the static inputs, replayed by calling it."""

    def record(self, inputs):
        loss = torch.zeros(())

        def replay() -> None:
            loss.copy_(self.step(*inputs).detach())

        return SimpleNamespace(replay=replay), loss


ARGS = ("data=digits", "data.batch_size=50", "trainer.epochs=3", "model.hidden=[32]", "optim=sgd",
        "optim.lr=0.05", "optim.momentum=0.9", "checkpoint.enabled=false", "trainer.progress=none", "device=cpu")


def with_recording(run):
    run.step_graph = Recorded(run.raw_model, run.criterion, run.optimizer, run.autocast, 50,
                              clip_params=list(run.raw_model.parameters()), clip_norm=run.settings.clip_norm)
    return run.step_graph


@pytest.mark.parametrize("extra", [(), ("scheduler=step", "scheduler.step_size=1", "scheduler.gamma=0.5"),
                                   ("trainer.grad_clip.max_norm=0.3",)], ids=["sgd", "epoch-scheduler", "clip"])
def test_replays_end_with_the_loops_weights(compose, extra):
    plain, captured = build(compose(*ARGS, *extra)), build(compose(*ARGS, *extra))
    graph = with_recording(captured)
    n = len(plain.train_batches)
    assert len(plain.train_batches.x) % 50  # each epoch ends with a short batch: run eagerly
    ours, theirs = fit(captured, TrainState(), Quiet()), fit(plain, TrainState(), Quiet())
    for key, value in plain.raw_model.state_dict().items():
        assert torch.equal(captured.raw_model.state_dict()[key], value), key
    assert [r["train_loss"] for r in ours.history] == [r["train_loss"] for r in theirs.history]
    assert graph.replays == 3 * (n - 1) - StepGraph.WARM_UP
    assert graph.captures == (3 if extra and extra[0] == "scheduler=step" else 1)  # new rate, new capture


def test_a_replaced_or_cleared_state_is_warmed_up_again(compose):
    run = build(compose(*ARGS))
    graph = with_recording(run)
    stop = Stop.for_setup(run, checkpoints=None)
    train_epoch(run, TrainState(), 0, stop)
    assert graph.captures == 1 and graph.inputs is not None
    saved = copy.deepcopy(run.optimizer.state_dict())
    run.optimizer.load_state_dict(saved)  # new state tensors: the graph would step the old ones
    assert graph.inputs is None and graph.warm == 0
    replays = graph.replays
    train_epoch(run, TrainState(), 1, stop)
    assert graph.captures == 2 and graph.replays == replays + len(run.train_batches) - 1 - StepGraph.WARM_UP
    run.optimizer.state.clear()  # a state created inside a capture would be created at every replay
    assert not graph.takes(*next(run.train_batches.epoch(2)))  # eager again, until warmed up


def test_checkpoints_hold_the_optimizer_as_built(compose):
    run = build(compose(*(a for a in ARGS if a.startswith(("data", "checkpoint", "trainer", "device"))), "optim=adam"))
    with_recording(run)
    assert run.optimizer.param_groups[0]["capturable"] is False
    device_counters(run.optimizer)  # what a capture does to the live optimizer
    assert run.optimizer.param_groups[0]["capturable"] is True
    assert run.optimizer.state_dict()["param_groups"][0]["capturable"] is False


def test_refused_on_the_cpu_with_the_reason(compose):
    for mode in ("reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        with pytest.raises(TrainrunError) as caught:
            build(compose(*ARGS, f"trainer.compile={mode}"))
        assert caught.value.key == "trainer.compile" and "docs/performance.md" in caught.value.message
        assert "trainer.compile=false" in caught.value.fix
    with pytest.raises(TrainrunError, match="is not one of false, true"):
        build(compose(*ARGS, "trainer.compile=maybe"))


@pytest.mark.parametrize(("value", "mode"), [("false", None), ("False", None), ("True", "default"),
                                             ("default", "default"), (" MAX-AUTOTUNE ", "max-autotune")])
def test_compile_words(value, mode):
    plan = compile_plan(value, torch.device("cuda"))
    assert plan.torch_mode == mode and not plan.captured
    assert compile_plan("reduce-overhead", torch.device("cuda")).captured


BASE = dict(distributed=False, precision="32", accumulate=1, skip_nonfinite=False, scheduler_interval="epoch",
            detect_anomaly=False, optimizer_key="optim._target_")


@pytest.mark.parametrize(("change", "key"), [
    ({"distributed": True}, "trainer.devices"),
    ({"precision": "fp16"}, "trainer.precision"),
    ({"accumulate": 4}, "trainer.accumulate_grad_batches"),
    ({"skip_nonfinite": True}, "trainer.on_nonfinite"),
    ({"scheduler_interval": "step"}, "scheduler.interval"),
    ({"detect_anomaly": True}, "trainer.detect_anomaly"),
])
def test_capture_refuses_what_would_compute_otherwise(change, key):
    params = [torch.nn.Parameter(torch.zeros(2))]
    check_capturable(**BASE, optimizer=torch.optim.SGD(params, lr=0.1))  # the plain case passes
    with pytest.raises(TrainrunError) as caught:
        check_capturable(**{**BASE, **change}, optimizer=torch.optim.SGD(params, lr=0.1))
    assert caught.value.key == key and "trainer.compile=true" in caught.value.fix


def test_optimizers_that_count_on_the_host_are_refused():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert graph_safe(torch.optim.SGD(params, lr=0.1)) and graph_safe(torch.optim.AdamW(params))
    assert not graph_safe(torch.optim.Adagrad(params))
    with pytest.raises(TrainrunError, match="Adagrad keeps step counts on the host"):
        check_capturable(**BASE, optimizer=torch.optim.Adagrad(params))


def test_channels_last_only_where_it_applies():
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4))
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert wants_channels_last(None, cuda, "bf16", cnn) and wants_channels_last(None, cuda, "fp16", cnn)
    assert not wants_channels_last(None, cuda, "32", cnn)  # fp32: the tutorial loop's kernels
    assert not wants_channels_last(None, cpu, "bf16", cnn) and not wants_channels_last(None, cuda, "bf16", mlp)
    assert wants_channels_last(True, cpu, "32", cnn) and not wants_channels_last(True, cpu, "32", mlp)
    assert not wants_channels_last(False, cuda, "bf16", cnn)


def test_channels_last_on_the_cpu_trains_like_the_default(compose):
    args = ("experiment=digits_cnn", "trainer.epochs=1", "checkpoint.enabled=false", "trainer.progress=none",
            "device=cpu")
    plain, nhwc = build(compose(*args)), build(compose(*args, "trainer.channels_last=true"))
    assert nhwc.raw_model.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    a, b = fit(plain, TrainState(), Quiet()), fit(nhwc, TrainState(), Quiet())
    assert a.history[-1]["train_loss"] == pytest.approx(b.history[-1]["train_loss"], rel=1e-4)
