"""``trainer.compile=reduce-overhead`` on CUDA: the whole training step (zero_grad, forward, loss,
backward, clipping, optimizer step) captured once as a CUDA graph and replayed for every full
batch.

Why: a small model's step on a GPU is bound by launching its kernels from Python (several
microseconds of host work for kernels that run for a few); a replay launches the whole step at
once. ``torch.compile``'s own reduce-overhead mode graphs forward and backward but leaves
``zero_grad`` and the optimizer step to Python, and compiles for minutes; capturing the loop's
own eager step with ``torch.cuda.graph`` needs no compiler and replays the same kernels the loop
would launch.

How it stays the loop's step:

* The captured function is the loop's step with one batch per optimizer step and no gradient
  scaler (``speed.check_capturable`` refuses the settings where that differs: fp16, accumulation,
  a per-step schedule, DDP, ``on_nonfinite=skip``, an optimizer counting on the host).
* The first ``WARM_UP`` full batches go through the loop's own lines: they create the optimizer's
  state and the libraries' workspaces, which a capture cannot allocate.
* A batch of another shape (an epoch's short last batch, a Dataset's odd one) also goes through the
  loop's own lines, uncaptured: it trains on exactly its samples and counts by its size in the
  epoch mean. Dropping it would change what is trained, padding it would change the mean; it
  costs one eager step per epoch.
* Hyperparameters are constants inside a graph: before every replay they are compared with the
  captured ones, and a change (an epoch-interval schedule, the range test) captures again.
* The graph holds the addresses of the optimizer's state tensors, and a state created inside a
  capture would be created anew at every replay (momentum reset each step). So an
  ``optimizer.load_state_dict`` (new state tensors) or a state that grew or was cleared drops the
  graph and the warm-up starts over: the state always exists before a capture.
* Checkpoints hold the optimizer as an uncaptured run would (``capturable`` as the user built it,
  step counts on the host), so they resume on any device, captured or not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from trainrun.build.settings import LoopSettings
from trainrun.build.speed import check_capturable
from trainrun.errors import TRAINING_ERROR, TrainrunError

Hyper = list[tuple[tuple[str, object], ...]]


class Replayable(Protocol):
    """A recorded step (``torch.cuda.CUDAGraph``)."""

    def replay(self) -> None: ...


class StepGraph:
    """One captured training step, replayed with each full batch copied into its inputs."""

    WARM_UP = 3  # full batches stepped eagerly before the capture

    def __init__(self, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                 autocast: Callable[[], contextlib.AbstractContextManager[Any]], batch_size: int, *,
                 clip_params: list[torch.Tensor], clip_norm: float | None = None, clip_norm_type: float = 2.0,
                 clip_value: float | None = None) -> None:
        self.model, self.criterion, self.optimizer, self.autocast = model, criterion, optimizer, autocast
        self.batch_size = batch_size
        self.clip_params, self.clip_norm, self.clip_norm_type, self.clip_value = (
            clip_params, clip_norm, clip_norm_type, clip_value)
        self.warm = 0  # full batches stepped by the loop since the graph was last dropped
        self.captures = 0  # how often the step was captured (1 unless hyperparameters changed)
        self.replays = 0
        self.graph: Replayable | None = None
        self.inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self.loss: torch.Tensor | None = None
        self.grads: list[torch.Tensor | None] = []  # the captured gradients, kept alive with the graph
        self.hyper: Hyper = []
        self.state_size = 0
        self.user_capturable = [g.get("capturable") for g in optimizer.param_groups]
        optimizer.register_load_state_dict_post_hook(self._forget)
        optimizer.register_state_dict_post_hook(self._as_uncaptured)

    def takes(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Whether this batch is replayed (else the loop steps it eagerly): once warmed up, every
        batch of the full batch's shape. Counts the warm-up batches as it answers."""
        if self.inputs is not None and len(self.optimizer.state) != self.state_size:
            self._forget(self.optimizer)  # the state was cleared or grew: warm up again
        if self.inputs is not None:
            return x.shape == self.inputs[0].shape and y.shape == self.inputs[1].shape
        if len(x) != self.batch_size:
            return False
        self.warm += 1
        return self.warm > self.WARM_UP

    def replay(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One training step on ``(x, y)``; returns its loss (a new tensor, detached)."""
        if self.graph is None or hyperparameters(self.optimizer) != self.hyper:
            self.capture(x, y)
        assert self.graph is not None and self.inputs is not None and self.loss is not None
        self.inputs[0].copy_(x)
        self.inputs[1].copy_(y)
        self.graph.replay()
        self.replays += 1
        return self.loss.detach().clone()

    def capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Record the step on inputs shaped like ``(x, y)``; nothing runs until a replay."""
        self.graph, self.grads = None, []  # the previous graph's memory goes back first
        device_counters(self.optimizer)
        inputs = (torch.empty_like(x), torch.empty_like(y))
        try:
            graph, loss = self.record(inputs)
        except Exception as err:
            first: BaseException = err
            while first.__context__ is not None:  # ending the capture fails too: name what broke it
                first = first.__context__
            raise TrainrunError(
                f"trainer.compile=reduce-overhead could not capture the training step as a CUDA graph: "
                f"{type(first).__name__}: {str(first).strip().splitlines()[0] if str(first).strip() else ''}. "
                "A captured step cannot read values on the host (.item(), print of a tensor, a Python "
                "if on a tensor), copy to or from the CPU, or change shapes with the data",
                key="trainer.compile", exit_code=TRAINING_ERROR,
                fix="use trainer.compile=true or false, or keep the model's forward on the device",
            ) from err
        self.graph, self.inputs, self.loss = graph, inputs, loss
        self.grads = [p.grad for g in self.optimizer.param_groups for p in g["params"]]
        self.hyper, self.state_size = hyperparameters(self.optimizer), len(self.optimizer.state)
        self.captures += 1

    def record(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> tuple[Replayable, torch.Tensor]:
        """The step on ``inputs`` as a CUDA graph, and the tensor each replay writes the loss to."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: the run's background threads (checkpoint writes) may call CUDA meanwhile
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            loss = self.step(*inputs)
        return graph, loss

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loop's step for one batch (``engine.loop.train_epoch`` with k=1, no scaler)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.model(x)
            loss = self.criterion(out, y)
        loss.backward()
        if self.clip_norm:
            torch.nn.utils.clip_grad_norm_(self.clip_params, self.clip_norm, self.clip_norm_type)
        if self.clip_value:
            torch.nn.utils.clip_grad_value_(self.clip_params, self.clip_value)
        self.optimizer.step()
        return loss

    def _forget(self, optimizer: torch.optim.Optimizer) -> None:
        """After ``optimizer.load_state_dict`` (new state tensors): drop the graph and warm up again."""
        self.graph, self.inputs, self.grads, self.warm = None, None, [], 0

    def _as_uncaptured(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        """The optimizer's state dict as an uncaptured run holds it: the user's ``capturable`` and
        step counts on the host, so a checkpoint resumes on a CPU (where capturable is refused)."""
        groups = state["param_groups"]
        for group, user in zip(groups, self.user_capturable, strict=False):
            if "capturable" in group:
                group["capturable"] = bool(user)
        if not any(g.get("capturable") or g.get("fused") for g in groups):
            for index, entry in list(state["state"].items()):
                step = entry.get("step")
                if isinstance(step, torch.Tensor) and step.device.type != "cpu":
                    state["state"][index] = {**entry, "step": step.detach().to("cpu", torch.float32)}
        return state


def captured_step(settings: LoopSettings, model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                  autocast: Callable[[], contextlib.AbstractContextManager[Any]], batch_size: int, *,
                  distributed: bool, precision: str) -> StepGraph:
    """The run's captured step, once every setting has been checked to allow one."""
    check_capturable(distributed=distributed, precision=precision, accumulate=settings.accumulate,
                     skip_nonfinite=settings.skip_nonfinite, scheduler_interval=settings.scheduler_interval,
                     detect_anomaly=settings.detect_anomaly, optimizer=optimizer, optimizer_key="optim._target_")
    return StepGraph(model, criterion, optimizer, autocast, batch_size, clip_params=list(model.parameters()),
                     clip_norm=settings.clip_norm, clip_norm_type=settings.clip_norm_type,
                     clip_value=settings.clip_value)


def device_counters(optimizer: torch.optim.Optimizer) -> None:
    """Make ``optimizer`` graph-safe: ``capturable`` on, its step counts on its parameters' device
    (a counter on the host would stay at its captured value)."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True
    for param, state in optimizer.state.items():
        step = state.get("step")
        if isinstance(param, torch.Tensor) and isinstance(step, torch.Tensor) and step.device != param.device:
            state["step"] = step.to(param.device, torch.float32)


def hyperparameters(optimizer: torch.optim.Optimizer) -> Hyper:
    """Each group's settings but its parameters; a tensor setting by identity (a replay reads its
    current value from the device)."""
    return [tuple((k, id(v) if isinstance(v, torch.Tensor) else v) for k, v in g.items() if k != "params")
            for g in optimizer.param_groups]
