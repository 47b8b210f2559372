"""SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 stop a run after the current step with last.pt saved,
the resume command printed and exit status 128 + the signal number; a second Ctrl-C stops at
once (status 130); the printed command resumes to the uninterrupted run's weights."""

from __future__ import annotations

import os
import signal

import pytest

from trainrun.engine.signals import Signals


def test_interrupt_handler(monkeypatch):
    """In-process: the handler records the first signal, restores the previous handlers on
    exit, and a second SIGINT raises KeyboardInterrupt."""
    before = signal.getsignal(signal.SIGUSR1)
    with Signals() as interrupt:
        assert interrupt.signum is None and interrupt.name == ""
        os.kill(os.getpid(), signal.SIGUSR1)
        assert interrupt.signum == signal.SIGUSR1 and interrupt.name == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)  # a later, different signal: still stop, no raise
    assert signal.getsignal(signal.SIGUSR1) is before
    with Signals() as interrupt, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.name == "SIGINT"
        os.kill(os.getpid(), signal.SIGINT)
