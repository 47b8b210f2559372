"""``scripts/device_check.sh``, the one command a GPU session runs first: on this machine (no
CUDA) it must run to the end, collect the cuda tests and skip them, and say so in its JSON;
``scripts/device_report.py`` must read what the phases leave (pytest's JUnit XML with recorded
figures, the benchmark's rows) into the report a GPU run will give."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO
from device_report import build_report, read_benchmark, read_pytest, text, verdict

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="4" time="12.0">
<testcase classname="tests.test_cuda" name="test_a[sgd]" time="3.5">
  <properties><property name="captured_sgd_max_diff" value="0.00e+00"/></properties></testcase>
<testcase classname="tests.test_cuda" name="test_b" time="1.0">
  <failure message="AssertionError: 0.2 &gt; 1e-05">long traceback</failure></testcase>
<testcase classname="tests.test_cuda" name="test_c" time="0.0">
  <skipped type="pytest.skip" message="trainer.strategy does not exist yet">skip</skipped></testcase>
<testcase classname="tests.test_fidelity_devices" name="test_d[cuda]" time="2.0"/>
</testsuite></testsuites>
"""
ROWS = [
    {"workload": "tiny", "variant": "trainrun", "us_per_step": 400.0, "over_hand": 1.02,
     "weights_vs_hand": "identical"},
    {"workload": "tiny", "variant": "hand", "us_per_step": 392.0, "over_hand": 1.0, "weights_vs_hand": "identical"},
    {"workload": "tiny", "variant": "trainrun +reduce-overhead", "us_per_step": 98.0, "over_hand": 0.25,
     "weights_vs_hand": "max diff 1.2e-07"},
    {"workload": "digits", "variant": "trainrun +reduce-overhead", "us_per_step": 150.0, "over_hand": 0.4,
     "weights_vs_hand": "identical"},
]


def test_the_report_reads_pytest_and_the_benchmark(tmp_path):
    (tmp_path / "pytest.xml").write_text(JUNIT)
    tests = read_pytest(tmp_path / "pytest.xml")
    assert (tests["passed"], tests["failed"], tests["skipped"], tests["collected"]) == (2, 1, 1, 4)
    assert tests["failures"] == [{"test": "tests.test_cuda::test_b", "kind": "failure",
                                  "message": "AssertionError: 0.2 > 1e-05"}]
    assert tests["figures"] == {"captured_sgd_max_diff": "0.00e+00"}
    assert tests["skip_reasons"] == {"trainer.strategy does not exist yet": 1}

    (tmp_path / "benchmark.json").write_text(json.dumps(ROWS))
    bench = read_benchmark(tmp_path / "benchmark.json")
    assert bench["speed_over_hand"]["tiny"]["trainrun +reduce-overhead"] == 4.0
    assert bench["goal"]["reduce_overhead"] == {"tiny": 4.0, "digits": 2.5} and not bench["goal"]["met"]

    report = build_report(tmp_path, pytest_exit=1, bench_exit=0)
    assert report["verdict"] == verdict(report) == "failures: 1 failed, 0 errors"
    shown = text(report)
    assert shown.startswith("trainrun device check: failures")
    assert "FAILED tests.test_cuda::test_b: AssertionError" in shown and "captured_sgd_max_diff: 0.00e+00" in shown
    assert "tiny 4.0, digits 2.5 -> not met" in shown


def test_a_stopped_pytest_or_a_failed_install_is_incomplete_not_ok(tmp_path):
    (tmp_path / "pytest.xml").write_text(JUNIT[: len(JUNIT) // 2])  # killed while writing
    report = build_report(tmp_path, pytest_exit=124)
    assert not report["pytest"]["ran"] and report["verdict"].startswith("incomplete: the tests")
    (tmp_path / "pytest.xml").write_text(JUNIT)
    report = build_report(tmp_path, pytest_exit=2, installed=False)
    assert report["verdict"].startswith("incomplete: trainrun could not be installed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the whole check (minutes)")
def test_without_cuda_it_runs_to_the_end_and_says_so(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "not-this")}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["device_check.json", "device_check.txt", "env.txt",
                                                     "pytest.log", "pytest.xml"]
    report = json.loads((out / "device_check.json").read_text())
    assert report["schema"] == 1 and report["machine"]["cuda"] is False and report["machine"]["torch"]
    assert report["trainrun_installed"] is True  # this tree's trainrun, found without installing
    tests = report["pytest"]
    assert tests["ran"] and tests["exit_code"] == 0 and tests["collected"] >= 20
    assert tests["skipped"] == tests["collected"] and not tests["failures"]  # collected, every one skipped
    assert report["benchmark"] == {"ran": False, "rows": [], "exit_code": None}
    assert report["verdict"].startswith("no CUDA")
    assert (out / "device_check.txt").read_text() in proc.stdout
