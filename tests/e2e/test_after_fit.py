"""``trainer.test_after_fit``: ``train`` ends by scoring ``best.pt`` (else ``last.pt``, else the
weights in memory) on the test split when the data has one, and ``summary.json``'s ``test`` is
what ``evaluate split=test`` reports. The single-process case with ``best.pt`` is in
``test_predict.py`` (on its run); ``trainer.test_after_fit=false`` and ``checkpoint.enabled=false``
(the weights in memory) in ``test_console.py``; here DDP, with an extra metric."""

from __future__ import annotations

import json

from conftest import run_command


def test_under_ddp_rank_0_scores_the_whole_test_split_as_evaluate_does(train, tmp_path):
    """Two processes: the test split (61 samples, odd on purpose: a sharded pass would drop one)
    is scored by rank 0 alone, with the same numbers as evaluate in one process."""
    result = train("data=synthetic", "data.n_samples=305", "data.test_fraction=0.2", "trainer.epochs=2",
                   "trainer.devices=2", "plot=false", "metrics=[f1]")
    test = result.summary["test"]
    assert test["checkpoint"] == "best" and test["samples"] == 61  # several processes: the sharded best/
    run_command("evaluate", f"run={result.run_dir}", "split=test", cwd=tmp_path)
    report = json.loads((result.run_dir / "eval" / "best_test" / "eval.json").read_text())
    assert (report["loss"], report["acc"], report["f1"]) == (test["loss"], test["acc"], test["f1"])
