"""The fork server the e2e tier runs its commands through (tests/forkserver.py) behaves as the
process it stands for: argv, working folder, environment, descriptors, exit status, death by a
signal, signals forwarded, no child outliving its shim; and it runs the real interpreter where a
fork could not honour the environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forkserver
import pytest
from conftest import env_for_tests

pytestmark = pytest.mark.skipif(not forkserver.enabled(), reason="TRAINRUN_TESTS_FORKSERVER=0")

REPORT = ("import json, os, sys; print(json.dumps({'argv': sys.argv, 'cwd': os.getcwd(), "
          "'x': os.environ.get('X'), 'torch': 'torch' in sys.modules, 'exe': sys.executable}))")


def python(*args: str, cwd: Path, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(forkserver.shim(forkserver.PYTHON)), *args], cwd=cwd, env=env_for_tests(env),
                          capture_output=True, text=True, timeout=60, **kwargs)


def test_a_child_gets_the_argv_folder_and_environment_of_its_shim(tmp_path: Path) -> None:
    done = python("-c", REPORT, "a b", "--c", cwd=tmp_path, env={"X": "given"})
    seen = json.loads(done.stdout)
    assert done.returncode == 0 and seen["argv"] == ["-c", "a b", "--c"]
    assert seen["cwd"] == str(tmp_path) and seen["x"] == "given"
    assert seen["torch"] and seen["exe"] == str(forkserver.shim(forkserver.PYTHON))  # forked, preloaded


def test_a_variable_read_at_start_runs_the_real_interpreter(tmp_path: Path) -> None:
    seen = json.loads(python("-c", REPORT, cwd=tmp_path, env={"OMP_NUM_THREADS": "3"}).stdout)
    assert not seen["torch"] and seen["exe"] == sys.executable


def test_status_death_by_a_signal_and_descriptors_pass_through(tmp_path: Path) -> None:
    assert python("-c", "import sys; sys.exit(7)", cwd=tmp_path).returncode == 7
    killed = python("-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)", cwd=tmp_path)
    assert killed.returncode == -signal.SIGTERM
    killed = python("-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    read, write = os.pipe()
    done = python("-c", f"import os; os.write({write}, b'through fd {write}')", cwd=tmp_path, pass_fds=(write,))
    os.close(write)
    assert done.returncode == 0 and os.read(read, 100) == f"through fd {write}".encode()
    os.close(read)
    given = python("-c", "import sys; print(sys.stdin.read().upper())", cwd=tmp_path, input="piped in")
    assert given.stdout.strip() == "PIPED IN"


def test_signals_reach_the_child_and_a_killed_shim_takes_it(tmp_path: Path) -> None:
    code = ("import os, signal, time; open('pid', 'w').write(str(os.getpid()));"
            "signal.signal(signal.SIGUSR1, lambda *a: open('got', 'w').write('usr1'));"
            "time.sleep(60)")
    shim = subprocess.Popen([str(forkserver.shim(forkserver.PYTHON)), "-c", code], cwd=tmp_path,
                            env=env_for_tests())
    deadline = time.monotonic() + 30
    while not (tmp_path / "pid").is_file() or not (tmp_path / "pid").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int((tmp_path / "pid").read_text())
    shim.send_signal(signal.SIGUSR1)
    while not (tmp_path / "got").is_file():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    shim.kill()
    shim.wait()
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().split(")")[1][:3]:
        assert time.monotonic() < deadline, "the child outlived its SIGKILLed shim"
        time.sleep(0.05)
