"""``debug=profile``: torch.profiler over a few steps, the trace file, the top operators, and a
run that trains exactly as it would unprofiled."""

from __future__ import annotations

import json


def trace_events(run_dir) -> list[dict]:
    traces = list((run_dir / "profiler").glob("rank0.*.pt.trace.json"))
    assert len(traces) == 1, traces
    return json.loads(traces[0].read_text())["traceEvents"]  # Chrome's trace event format


def test_debug_profile_writes_a_trace_and_prints_the_top_operators(train, tmp_path):
    profiled = train("debug=profile", "print_config=false", run_dir=tmp_path / "profiled")
    events = trace_events(profiled.run_dir)
    names = {e.get("name", "") for e in events}
    # the three active steps of the default schedule (wait 1, warm-up 1), and the work in them
    assert {n for n in names if n.startswith("ProfilerStep#")} == {"ProfilerStep#2", "ProfilerStep#3",
                                                                  "ProfilerStep#4"}
    assert {"aten::addmm", "aten::mm"} & names and any(n.startswith("Optimizer.step#Adam") for n in names)
    assert "the top operators by self_cpu_time_total" in profiled.output
    assert "Self CPU %" in profiled.output and "aten::" in profiled.output
    table = (profiled.run_dir / "profiler" / "top_operators.txt").read_text()
    assert "Self CPU" in table and len([line for line in table.splitlines() if "aten::" in line]) <= 15
    assert profiled.summary["status"] == "completed" and len(profiled.metrics) == 1

    # Profiling observes; it changes nothing that is computed.
    plain = train("trainer.epochs=1", "print_config=false", run_dir=tmp_path / "plain")
    keys = ("train_loss", "val_loss", "val_acc")
    assert [[r[k] for k in keys] for r in plain.metrics] == [[r[k] for k in keys] for r in profiled.metrics]


def test_a_run_shorter_than_the_window_keeps_what_was_recorded(train):
    """4 batches in the one epoch of debug=profile; after 1 skipped and 2 of warm-up only the
    4th batch (ProfilerStep#3) is recorded, then what followed it until the run ended (#4:
    validation, the checkpoint), and the trace holds both."""
    result = train("debug=profile", "trainer.limit_train_batches=4", "profiler.warmup=2", "print_config=false")
    steps = {e["name"] for e in trace_events(result.run_dir) if e.get("name", "").startswith("ProfilerStep#")}
    assert steps == {"ProfilerStep#3", "ProfilerStep#4"}


def test_a_run_that_ends_before_recording_says_so(train):
    result = train("debug=profile", "trainer.limit_train_batches=4", "profiler.wait=10", "print_config=false")
    assert "profiler: no trace: the run took 4 training steps, and the profiler skips 10" in result.output
    assert result.summary["status"] == "completed"
    assert not list(result.run_dir.glob("profiler/*.pt.trace.json"))


def test_the_profiler_is_off_by_default(train):
    result = train("trainer.epochs=1", "print_config=false", "plot=false")
    assert not (result.run_dir / "profiler").exists()
    assert "profiler:" not in result.output
