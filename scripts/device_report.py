#!/usr/bin/env python
"""The report of ``scripts/device_check.sh``: one JSON and a short text from what its phases left
in the output folder.

    python scripts/device_report.py OUT_DIR [--started EPOCH_SECONDS] [--pytest-exit N] [--bench-exit N]

Reads ``OUT_DIR/pytest.xml`` (JUnit XML, ``-o junit_family=xunit1`` so that the figures tests
record with ``record_property`` are in it), ``OUT_DIR/benchmark.json`` (``scripts/benchmark.py
--json``) and the machine this runs on (torch, CUDA, the GPU), and writes
``OUT_DIR/device_check.json`` and ``OUT_DIR/device_check.txt``; prints the text. Exits 0 when
every test that ran passed and, with CUDA, the benchmark ran; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

SCHEMA = 1
GOAL = 3.0  # trainer.compile=reduce-overhead: steps per second over the hand loop's, tiny and digits
GOAL_WORKLOADS = ("tiny", "digits")


def machine() -> dict[str, Any]:
    """What ran the check: Python, torch, and the GPU if torch sees one."""
    facts: dict[str, Any] = {"python": platform.python_version(), "host": platform.node()}
    try:
        import torch
    except ImportError as err:
        return {**facts, "torch": None, "cuda": False, "why": f"torch cannot be imported: {err}"}
    facts.update(torch=torch.__version__, cuda_build=torch.version.cuda, cuda=torch.cuda.is_available())
    if facts["cuda"]:
        props = torch.cuda.get_device_properties(0)
        facts.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpus=torch.cuda.device_count(),
                     memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count)
    else:
        facts["why"] = ("this torch was built without CUDA" if torch.version.cuda is None
                        else "torch sees no CUDA device")
    return facts


def read_pytest(path: Path) -> dict[str, Any]:
    """Counts, failures (test and first lines of the message) and recorded figures."""
    if not path.is_file():
        return {"ran": False, "why": f"no {path.name} (pytest did not start or was stopped)"}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        return {"ran": False, "why": f"{path.name} is not complete XML ({err}): pytest was stopped"}
    cases = root.iter("testcase")
    summary: dict[str, Any] = {"ran": True, "passed": 0, "failed": 0, "errors": 0, "skipped": 0,
                               "failures": [], "skip_reasons": {}, "figures": {}, "seconds": 0.0}
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}".lstrip(":")
        summary["seconds"] += float(case.get("time") or 0)
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "errors"
                text = (child.get("message") or child.text or "").strip()
                summary["failures"].append({"test": name, "kind": child.tag, "message": text[:600]})
            elif child.tag == "skipped":
                outcome = "skipped"
                reason = (child.get("message") or "").strip()
                summary["skip_reasons"][reason] = summary["skip_reasons"].get(reason, 0) + 1
            elif child.tag == "properties":
                for prop in child.iter("property"):
                    summary["figures"][prop.get("name", "")] = prop.get("value", "")
        summary[outcome] += 1
    summary["collected"] = summary["passed"] + summary["failed"] + summary["errors"] + summary["skipped"]
    summary["seconds"] = round(summary["seconds"], 1)
    return summary


def read_pytest_log(path: Path) -> dict[str, Any]:
    """What a stopped run had finished, from its verbose log (``-v`` prints each result as it
    comes: ``[gw0] PASSED tests/...::test_x`` under xdist, ``tests/...::test_x PASSED [ 3%]``
    without); JUnit XML is written only at the end."""
    counts = {"PASSED": 0, "FAILED": 0, "ERROR": 0, "SKIPPED": 0, "XFAIL": 0, "XPASS": 0}
    failures = []
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
        words = line.split()
        if words and words[0].startswith("[gw"):
            words = words[1:]
        if len(words) >= 2 and "::" in words[0] and words[1] in counts:  # without xdist: test, then result
            words = [words[1], words[0]]
        if len(words) >= 2 and words[0] in counts and "::" in words[1]:
            counts[words[0]] += 1
            if words[0] in ("FAILED", "ERROR"):
                failures.append({"test": words[1], "kind": words[0].lower(), "message": "(from the log)"})
    done = sum(counts.values())
    return {"passed": counts["PASSED"] + counts["XFAIL"] + counts["XPASS"], "failed": counts["FAILED"],
            "errors": counts["ERROR"], "skipped": counts["SKIPPED"], "collected": done, "failures": failures,
            "skip_reasons": {}, "figures": {}}


def read_benchmark(path: Path) -> dict[str, Any]:
    """The rows and, per workload, each variant's steps per second over the hand loop's."""
    if not path.is_file():
        return {"ran": False, "rows": []}
    rows = json.loads(path.read_text())
    speedups: dict[str, dict[str, float]] = {}
    for row in rows:
        if "over_hand" in row and row["us_per_step"] > 0:
            speedups.setdefault(row["workload"], {})[row["variant"]] = round(1 / row["over_hand"], 3)
    goal = {w: speedups.get(w, {}).get("trainrun +reduce-overhead") for w in GOAL_WORKLOADS}
    return {"ran": True, "rows": rows, "speed_over_hand": speedups,
            "goal": {"steps_per_s_over_hand": GOAL, "reduce_overhead": goal,
                     "met": all(v is not None and v >= GOAL for v in goal.values())}}


def verdict(report: dict[str, Any]) -> str:
    tests = report["pytest"]
    if report.get("trainrun_installed") is False:
        return "incomplete: trainrun could not be installed from this tree (env.txt says why)"
    if not tests.get("ran"):
        return "incomplete: the tests did not run to the end"
    if tests["failed"] or tests["errors"]:
        return f"failures: {tests['failed']} failed, {tests['errors']} errors"
    if not report["machine"].get("cuda"):
        return "no CUDA: the cuda tests were collected and skipped, the benchmark not run"
    if not report["benchmark"].get("ran"):
        return "incomplete: the benchmark did not run"
    return "ok"


def text(report: dict[str, Any]) -> str:
    m, tests, bench = report["machine"], report["pytest"], report["benchmark"]
    where = (f"{m['gpu']} ({m['memory_gib']} GiB, sm {m['capability']})" if m.get("cuda")
             else f"no CUDA ({m.get('why', '')})")
    lines = [f"trainrun device check: {report['verdict']}",
             f"machine: {where}; torch {m.get('torch')} (CUDA {m.get('cuda_build')}), Python {m['python']}; "
             f"{report['seconds']:.0f} s"]
    if tests.get("ran"):
        lines.append(f"pytest -m cuda: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
                     f"{tests['skipped']} skipped of {tests['collected']} collected")
        lines += [f"  FAILED {f['test']}: {f['message'].splitlines()[0] if f['message'] else ''}"[:300]
                  for f in tests["failures"]]
        lines += [f"  skipped ({n}): {reason}"[:200] for reason, n in tests["skip_reasons"].items()]
        lines += [f"  {name}: {value}" for name, value in tests["figures"].items()]
    else:
        done = report["pytest_log"]
        lines.append(f"pytest -m cuda: did not finish ({tests.get('why')}); its log shows {done['passed']} passed, "
                     f"{done['failed']} failed, {done['errors']} errors, {done['skipped']} skipped")
        lines += [f"  FAILED {f['test']}" for f in done["failures"]]
    if bench.get("ran"):
        lines.append("benchmark (µs per step; steps/s over the hand loop's; final weights vs the hand loop):")
        for row in bench["rows"]:
            lines.append(f"  {row['workload']:<7} {row['variant']:<32} {row['us_per_step']:>9.0f} "
                         f"{1 / row['over_hand']:>6.2f}x  {row['weights_vs_hand']}")
        goal = bench["goal"]
        shown = ", ".join(f"{w} {v if v is not None else 'not measured'}" for w, v in goal["reduce_overhead"].items())
        lines.append(f"goal reduce-overhead >= {goal['steps_per_s_over_hand']}x the hand loop: {shown} -> "
                     + ("met" if goal["met"] else "not met"))
        if bench.get("exit_code") not in (0, None):
            lines.append(f"benchmark stopped with exit {bench['exit_code']} (124: its time ran out); rows above "
                         "are what it measured before")
    elif m.get("cuda"):
        lines.append(f"benchmark: did not run (exit {bench.get('exit_code')})")
    return "\n".join(lines) + "\n"


def build_report(out: Path, started: float | None = None, pytest_exit: int | None = None,
                 bench_exit: int | None = None, installed: bool | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "seconds": round(time.time() - started, 1) if started else 0.0,
        "machine": machine(),
        "trainrun_installed": installed,
        "pytest": {**read_pytest(out / "pytest.xml"), "exit_code": pytest_exit},
        "pytest_log": read_pytest_log(out / "pytest.log"),  # what finished, if the XML is missing
        "benchmark": {**read_benchmark(out / "benchmark.json"), "exit_code": bench_exit},
    }
    report["verdict"] = verdict(report)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--started", type=float, help="when the check started (seconds since the epoch)")
    parser.add_argument("--installed", type=int, choices=(0, 1), help="whether trainrun imports from this tree")
    parser.add_argument("--pytest-exit", type=int)
    parser.add_argument("--bench-exit", type=int)
    args = parser.parse_args()
    installed = None if args.installed is None else bool(args.installed)
    report = build_report(args.out, args.started, args.pytest_exit, args.bench_exit, installed)
    (args.out / "device_check.json").write_text(json.dumps(report, indent=2) + "\n")
    shown = text(report)
    (args.out / "device_check.txt").write_text(shown)
    sys.stdout.write(shown)
    return 0 if report["verdict"] in ("ok",) or report["verdict"].startswith("no CUDA") else 1


if __name__ == "__main__":
    sys.exit(main())
