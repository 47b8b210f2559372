"""``scripts/device_check.sh``, the one command a GPU session runs first: on this machine (no
CUDA) it must run to the end, collect the cuda tests and skip them, and say so in its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO


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
