"""``scripts/device_report.py``: what the phases of ``scripts/device_check.sh`` leave (pytest's
JUnit XML with the figures tests record, its verbose log, the benchmark's rows) read into the
report a GPU run gives."""

from __future__ import annotations

import json

from device_report import build_report, read_benchmark, read_pytest, read_pytest_log, text, verdict

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


def test_a_log_says_what_finished_when_the_xml_is_missing(tmp_path):
    (tmp_path / "pytest.log").write_text(
        "[gw0] PASSED tests/e2e/test_cuda.py::test_each_loss_trains_on_cuda[nll-mlp-data0] \n"
        "[gw1] FAILED tests/e2e/test_cuda.py::test_no_host_sync_per_step[false] \n"
        "[gw1] SKIPPED tests/e2e/test_cuda.py::test_a_strategy_on_one_process_with_nccl[ddp] \n"
        "tests/e2e/test_fidelity_devices.py::test_fp32[cuda] PASSED                 [ 50%]\n"  # without xdist
        "2 passed, 1 failed, 1 skipped in 30.0s\n")
    done = read_pytest_log(tmp_path / "pytest.log")
    assert (done["passed"], done["failed"], done["skipped"], done["collected"]) == (2, 1, 1, 4)
    shown = text(build_report(tmp_path, pytest_exit=124))
    assert "did not finish" in shown and "FAILED tests/e2e/test_cuda.py::test_no_host_sync_per_step" in shown
