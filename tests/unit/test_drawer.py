"""curves.png through the helper process that imports matplotlib while the run trains: the same
picture, a fallback to drawing in the run's own process whenever the helper fails, and no
helper left behind by a run that never draws."""

from __future__ import annotations

import gc

from trainrun.report.drawer import CurvesDrawer


def test_a_run_that_never_draws_stops_its_helper() -> None:
    drawer = CurvesDrawer()
    drawer.start()
    helper = drawer.process
    del drawer
    gc.collect()
    assert helper.poll() is not None
