"""Signals as requests to stop after the current step (:class:`Signals`), and, under DDP, the
step at which every rank agrees to stop (:class:`AgreedSignals`): what :class:`~trainrun.engine.stop.Stop`
listens to. Hydra's and submitit's own handlers come back when a run ends."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

import torch

from trainrun.engine.collectives import all_reduce_max

# Under DDP the ranks compare their stop requests every this many optimizer steps: one small
# all-reduce (about 0.3 ms with gloo on a 2-core machine), so a signal is honoured within this
# many steps, and every rank stops at the same step, which keeps collectives matched.
SIGNAL_CHECK_EVERY = 10


class Signals:
    """Turns SIGINT/SIGTERM/SIGUSR1/SIGUSR2 into a request to stop after the current step.

    A second SIGINT (Ctrl-C twice) stops at once.
    """

    NAMES = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")

    def __init__(self, quiet: bool = False) -> None:
        self.signum: int | None = None
        self.quiet = quiet  # DDP ranks other than 0: one message, not one per process
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Signals:
        for name in self.NAMES:
            signum = getattr(signal, name, None)
            if signum is not None:
                self._previous[signum] = signal.signal(signum, self._handle)
                # A handler that held a signal for the run (a sweep's, before this job's loop
                # began: trainrun.cli.sweep) hands it over: the run stops after its first step.
                self.signum = self.signum or getattr(self._previous[signum], "held", None)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None and not self.quiet:  # os.write: print() is unsafe in a handler
            again = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
            os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step, "
                        f"saving checkpoints/last.pt{again}\n".encode())
        self.signum = signum

    def request(self, signum: int) -> None:
        """Stop after the current step as if ``signum`` had come, without a word on the console
        (``SIGPIPE``: the console's reader went away, report/echo.py)."""
        if self.signum is None:
            self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def requested(self) -> bool:
        """Asked once per optimizer step."""
        return self.signum is not None


class AgreedSignals:
    """:class:`Signals` whose stop request all ranks agree on.

    Signals reach the ranks at slightly different steps; a rank that stopped alone would leave
    the others waiting in a collective. Every :data:`SIGNAL_CHECK_EVERY` optimizer steps the
    ranks reduce their requests (max of the signal numbers), and all stop at that same step.
    """

    def __init__(self, signals: Signals, world_size: int, device: torch.device,
                 every: int = SIGNAL_CHECK_EVERY) -> None:
        self.signals, self.world_size, self.every = signals, world_size, every
        self.agreed: int | None = None
        self._checks = 0
        self._flag = torch.zeros(1, dtype=torch.int64, device=device)

    def requested(self) -> bool:
        """Called once per optimizer step on every rank (a collective every ``every`` calls)."""
        if self.agreed is None:
            self._checks += 1
            if self._checks % self.every == 0:
                self._flag.fill_(self.signals.signum or 0)
                self.agreed = int(all_reduce_max(self._flag, self.world_size).item()) or None
        return self.agreed is not None

    @property
    def signum(self) -> int | None:
        return self.agreed or self.signals.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
