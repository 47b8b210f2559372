"""curves.png through the helper process that imports matplotlib while the run trains: the same
picture, a fallback to drawing in the run's own process whenever the helper fails, and no
helper left behind by a run that never draws."""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import pytest

from trainrun.report import drawer as drawing
from trainrun.report.drawer import CurvesDrawer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib (plot extra)")
HISTORY = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.5 / e, "val_acc": 0.5 + e / 10, "lr": 0.1,
            "seconds": 0.1, "samples_per_s": 100.0, "step": 4 * e} for e in range(1, 4)]


def test_the_helper_draws_and_leaves(tmp_path: Path) -> None:
    drawer = CurvesDrawer()
    drawer.start()
    helper = drawer.process
    assert helper is not None and helper.poll() is None  # importing matplotlib meanwhile
    assert drawer.draw(HISTORY, tmp_path / "curves.png") is None
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert helper.returncode == 0 and drawer.process is None


def test_a_helper_that_fails_is_replaced_by_drawing_here(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(drawing, "_HELPER", "import sys; sys.exit(3)")
    drawer = CurvesDrawer()
    drawer.start()
    assert drawer.draw(HISTORY, tmp_path / "curves.png") is None
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")




def test_a_process_forked_after_the_helper_started_does_not_hold_up_the_drawing(tmp_path, monkeypatch) -> None:
    """DataLoader workers (data.num_workers>0) are forked after the helper started and hold a
    copy of its input pipe: a helper reading to the end of its input waited WAIT_S (120 s) at the
    end of every such run, then the run drew itself. The helper reads one line instead."""
    drawer = CurvesDrawer()
    drawer.start()
    holder = os.fork()
    if holder == 0:  # a forked worker: every descriptor of its parent (no exec closes them)
        time.sleep(60)
        os._exit(0)
    try:
        monkeypatch.setattr(drawing, "WAIT_S", 30.0)
        monkeypatch.setattr(drawing, "write_curves", lambda *a, **k: pytest.fail("the run drew itself"))
        assert drawer.draw(HISTORY, tmp_path / "curves.png") is None
        assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)


def test_a_history_value_with_a_line_break_reaches_the_helper_whole(tmp_path: Path, monkeypatch) -> None:
    """The request is one line: a value of a callback's holding a line break (or non-ASCII text)
    is escaped by JSON, so the helper still draws (the run does not fall back to drawing itself)."""
    history = [{**row, "note": "first line\nsecond \u00e9"} for row in HISTORY]
    drawer = CurvesDrawer()
    drawer.start()
    monkeypatch.setattr(drawing, "write_curves", lambda *a, **k: pytest.fail("the run drew itself"))
    assert drawer.draw(history, tmp_path / "curves.png") is None
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
