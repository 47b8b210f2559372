"""``curves.png`` drawn by a helper process that imports matplotlib while the run trains.

Importing matplotlib takes ~0.6 s and drawing the curves ~0.25 s: done at the end of the run, in
the run's own process, that was 10-15 % of the whole digits workload (30 epochs in ~4 s), the
largest single thing a ``train`` process adds to a hand-written script (docs/performance.md).
So rank 0 starts a plain Python process as the run starts (:meth:`CurvesDrawer.start`); it
imports matplotlib and trainrun's plotting code on another core and waits. At the end the run
sends it the history (:meth:`CurvesDrawer.draw`): it draws, writes ``curves.png`` and exits.

Whatever goes wrong with the helper (no matplotlib, it could not start, it died, it hangs), the
run draws in its own process as before, so the picture never depends on it. The helper starts
in its own session (a Ctrl-C meant for the run does not kill it half-way), imports nothing from
the working folder (like ``python -m trainrun.cli``), and exits when its input closes: a run
that ends any other way (an error, a signal, SIGKILL) leaves no helper behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

from trainrun.hygiene import BOOTSTRAP
from trainrun.report.plots import write_curves

# Run in the helper with ``python -c``: the working folder leaves the front of sys.path before
# any import (trainrun.hygiene; PYTHONSAFEPATH does it on Python 3.11+ already).
_HELPER = f"{BOOTSTRAP}; from trainrun.report.drawer import serve; serve()"
WAIT_S = 120.0  # the most the end of a run waits for the helper before drawing itself


class CurvesDrawer:
    """Draws ``curves.png`` through a helper process when one could be started, else here."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self._stop: weakref.finalize | None = None

    def start(self) -> None:
        """Start the helper (once); nothing happens without matplotlib, or if it cannot start."""
        if self.process is not None or importlib.util.find_spec("matplotlib") is None:
            return
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )
        except OSError:
            return
        self._stop = weakref.finalize(self, _stop, self.process)  # a run that never draws

    def draw(self, history: list[dict[str, Any]], path: Path, best: dict[str, Any] | None = None) -> str | None:
        """Write ``curves.png`` (the ``best`` row marked): None when written, or a note saying why
        not (as write_curves)."""
        process, self.process = self.process, None
        if self._stop is not None:
            self._stop.detach()  # handled here, from now on
        if process is None or not history:
            if process is not None:
                _stop(process)
            return write_curves(history, path, best)
        try:
            # One line, not "until end of input": DataLoader workers forked after the helper
            # started hold a copy of its input pipe, so its end would never come.
            request = json.dumps({"history": history, "path": str(path), "best": best}) + "\n"
            out, _ = process.communicate(request.encode(), timeout=WAIT_S)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            _stop(process)
            return write_curves(history, path, best)
        if process.returncode != 0:  # it died or failed: draw here, where a failure is seen
            return write_curves(history, path, best)
        return out.decode().strip() or None


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            process.wait(timeout=5)
    for pipe in filter(None, (process.stdin, process.stdout)):
        with contextlib.suppress(OSError):
            pipe.close()


def serve() -> None:
    """The helper: import matplotlib now, then draw what arrives on stdin (nothing: just exit)."""
    with contextlib.suppress(ImportError):
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401  (the import is the point)
        from matplotlib.figure import Figure  # noqa: F401
    request = sys.stdin.buffer.readline()  # one line (see draw); none: the run ended without one
    if not request.strip():
        return
    asked = json.loads(request)
    note = write_curves(asked["history"], Path(asked["path"]), asked.get("best"))
    sys.stdout.write(note or "")
    sys.stdout.flush()
    os._exit(0)  # nothing left to tidy up: skip the interpreter's teardown
