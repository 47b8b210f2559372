"""``callbacks=[...]``: the user's own code at a few moments of a run, through one mechanism.

In the spirit of Lightning Fabric's ``fabric.call(hook, ...)``: a callback is any object built
from a ``_target_`` (``callbacks=[mycb.StopAt]``, or with arguments
``'callbacks=[{_target_: mycb.StopAt, value: 0.97}]'``), and each hook it defines is called at
its moment; hooks it does not define are skipped. The hooks, all with the run first:

``on_start(run)``                 before the first epoch (``run.epoch`` > 0 when resumed)
``on_epoch_end(run, row)``        after each validation, before the row is logged: ``row`` holds
                                  the epoch's values; a key added to it is logged like the others
``on_checkpoint(run, paths)``     rank 0, once the files (``last.pt``/``best.pt``) are on disk
``on_end(run, summary)``          after ``summary.json`` is written
``on_exception(run, error)``      the error that ends the run, before it is reported

``run`` (:class:`RunView`) gives the model, optimizer, device, run folder, history, rank,
``run.batch(split)`` (the first batch of a split, the same every time) and ``run.stop(reason)``
(stop after this epoch; agreed across DDP ranks). Callbacks run in every process, like the
loop; write files when ``run.rank == 0``.

Hooks are called at epoch granularity from ``fit``'s reporter (:class:`HookedReporter`), the
checkpoint writer and the orchestration, never from inside ``train_epoch``: the loop stays the
canonical loop. Everything is checked before training: the targets are built (each failure names
its ``callbacks[i]``), an ``on_*`` method that is no hook (a typo) is refused, and so is a hook
whose signature cannot take its arguments. During training, an error raised by a callback's
code is reported by the boundary with its key (``callbacks[0]``).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from trainrun.build.instantiate import build_from_config
from trainrun.build.setup import Setup
from trainrun.engine.state import Progress, Reporter, TrainState
from trainrun.engine.stop import Stop
from trainrun.errors import TRAINING_ERROR, TrainrunError

log = logging.getLogger("trainrun")

# hook name -> the arguments after ``run`` (for the signature check and the docs)
HOOKS: dict[str, tuple[str, ...]] = {
    "on_start": (),
    "on_epoch_end": ("row",),
    "on_checkpoint": ("paths",),
    "on_end": ("summary",),
    "on_exception": ("error",),
}


class RunView:
    """What a callback sees of the run. Read the objects; change them at your own risk (the
    optimizer's learning rate, say): the loop uses the very same ones."""

    def __init__(self, setup: Setup, state: TrainState, run_dir: Path, stop: Stop | None) -> None:
        self._setup, self._state, self._stop = setup, state, stop
        self.run_dir = run_dir

    model = property(lambda self: self._setup.raw_model, doc="the model with its head (not the DDP wrapper)")
    optimizer = property(lambda self: self._setup.optimizer)
    scheduler = property(lambda self: self._setup.scheduler)
    device = property(lambda self: self._setup.device)
    rank = property(lambda self: self._setup.rank)
    world_size = property(lambda self: self._setup.world_size)
    epoch = property(lambda self: self._state.epoch, doc="epochs completed")
    step = property(lambda self: self._state.step, doc="optimizer steps taken")
    history = property(lambda self: self._state.history, doc="one row per epoch so far")
    best_epoch = property(lambda self: self._state.best_epoch, doc="the epoch best.pt holds")
    classes = property(lambda self: self._setup.info.classes, doc="the labels, as the data has them")

    def batch(self, split: str = "val") -> tuple[torch.Tensor, torch.Tensor]:
        """The first batch of ``split`` (val, train or test) in order, on the run's device: the
        same samples at every call (train: without the epoch's shuffle)."""
        batches = {"val": self._setup.val_batches, "train": self._setup.train_batches,
                   "test": self._setup.test_batches}.get(split)
        if batches is None:
            raise ValueError(f"this run has no {split} split")
        x, y = next(iter(batches.epoch()))  # epoch 0's order: the same at every call
        return x, y

    def stop(self, reason: str) -> None:
        """Stop the run after this epoch; ``reason`` is printed and kept in summary.json."""
        if self._stop is None:
            raise RuntimeError("run.stop() works during training only")
        self._stop.request(reason)


def _node(item: Any, index: int) -> DictConfig:
    """``callbacks[i]`` as a config node: a dotted name alone, or a node with ``_target_``."""
    if isinstance(item, str):
        return OmegaConf.create({"_target_": item})
    if isinstance(item, DictConfig) and "_target_" in item:
        return item
    raise TrainrunError(
        f"callbacks[{index}]={item!r} is neither a class name (mycb.StopAt) nor a node with a _target_",
        key=f"callbacks[{index}]",
        fix="write callbacks=[mycb.StopAt] or 'callbacks=[{_target_: mycb.StopAt, value: 0.97}]'")


def check_hooks(callback: Any, key: str) -> list[str]:
    """The hooks ``callback`` defines; an ``on_*`` method that is no hook, a callback with no
    hook at all, or a hook that cannot take its arguments is refused (before training)."""
    found = []
    for name in dir(callback):
        if not name.startswith("on_") or not callable(getattr(callback, name, None)):
            continue
        if name not in HOOKS:
            close = difflib.get_close_matches(name, list(HOOKS), n=1)
            raise TrainrunError(
                f"{key} ({type(callback).__name__}) has a method {name}, which is no hook"
                + (f" (did you mean {close[0]}?)" if close else "") + f"; the hooks are {', '.join(HOOKS)}",
                key=key, fix=f"rename it to one of the hooks, or drop the on_ prefix from {name}")
        args = ("run", *HOOKS[name])
        try:
            inspect.signature(getattr(callback, name)).bind(*args)
        except TypeError:
            raise TrainrunError(
                f"{key}: {type(callback).__name__}.{name} cannot be called as {name}({', '.join(args)})",
                key=key, fix=f"define it as def {name}(self, {', '.join(args)}): ...") from None
        except ValueError:  # no signature to read (a builtin): called as it is
            pass
        found.append(name)
    if not found:
        raise TrainrunError(
            f"{key} ({type(callback).__name__}) defines none of the hooks {', '.join(HOOKS)}",
            key=key, fix="give it at least one of these methods (see docs/user-guide.md, \"Callbacks\")")
    return found


class Callbacks:
    """The built callbacks, each under its key, called together in their order."""

    def __init__(self, built: list[tuple[str, Any]]) -> None:
        self.built = built
        self.view: RunView | None = None

    @classmethod
    def from_config(cls, items: ListConfig | list[Any] | None) -> Callbacks:
        built = []
        for i, item in enumerate(items or []):
            key = f"callbacks[{i}]"
            callback = build_from_config(_node(item, i), key, what=f"building the callback {key}")
            check_hooks(callback, key)
            built.append((key, callback))
        return cls(built)

    def __bool__(self) -> bool:
        return bool(self.built)

    def owners(self) -> dict[str, list[object]]:
        """For the error boundary: an error in a callback's own code names its key."""
        return {key: [callback] for key, callback in self.built}

    def defines(self, hook: str) -> bool:
        return any(callable(getattr(c, hook, None)) for _, c in self.built)

    def start(self, setup: Setup, state: TrainState, run_dir: Path, stop: Stop | None) -> None:
        """Bind the run and call ``on_start``; a callback that checkpoints gets the writer's word."""
        self.view = RunView(setup, state, run_dir, stop)
        if stop is not None:
            stop.listen_for_requests(bool(self.built))
            if self.defines("on_checkpoint"):
                stop.writer.saved.append(lambda paths: self.call("on_checkpoint", paths))
        self.call("on_start")

    def call(self, hook: str, *args: Any) -> None:
        assert self.view is not None, "Callbacks.start() binds the run first"
        for _, callback in self.built:
            method = getattr(callback, hook, None)
            if callable(method):
                method(self.view, *args)

    def exception(self, error: BaseException) -> None:
        """``on_exception``: the run's own error stays the one reported, whatever a hook does."""
        if self.view is None:
            return
        for key, callback in self.built:
            method = getattr(callback, "on_exception", None)
            if callable(method):
                try:
                    method(self.view, error)
                except Exception as err:
                    log.warning(f"{key}.on_exception failed too: {type(err).__name__}: {err}")

    def around(self, reporter: Reporter) -> Reporter:
        """``fit``'s reporter, with ``on_epoch_end`` called before the row is logged."""
        return HookedReporter(reporter, self) if self.defines("on_epoch_end") else reporter


class HookedReporter:
    """A reporter for ``fit``: each epoch's row goes through the callbacks' ``on_epoch_end``
    (which may add values to it), then on to the reporter it wraps (console, loggers)."""

    def __init__(self, reporter: Reporter, callbacks: Callbacks) -> None:
        self.reporter, self.callbacks = reporter, callbacks

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reporter, name)

    @contextlib.contextmanager
    def progress(self, epoch: int, steps: int) -> Iterator[Progress]:
        with self.reporter.progress(epoch, steps) as bar:
            yield bar

    def epoch_end(self, row: dict[str, Any], state: TrainState) -> None:
        own = dict(row)  # trainrun's values: a callback adds values, never changes these
        self.callbacks.call("on_epoch_end", row)
        changed = [k for k, v in own.items() if k not in row or not _same(row[k], v)]
        if changed:
            raise TrainrunError(
                f"a callback's on_epoch_end changed trainrun's own value {changed[0]} (was {own[changed[0]]!r}): "
                "best.pt, early stopping and the objective were judged by the value trainrun measured, so the "
                "logs would show another", key="callbacks", exit_code=TRAINING_ERROR,
                fix="add your value under a new name (row['my_val_loss'] = ...) instead of changing one of "
                f"trainrun's ({', '.join(own)})")
        self.reporter.epoch_end(row, state)


def _same(a: object, b: object) -> bool:
    """Equal, NaN equal to NaN (a value trainrun measured as NaN is left as it was)."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
