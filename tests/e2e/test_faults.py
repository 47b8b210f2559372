"""Faults around a run: the folder cannot be written, the disk fills up, a second ``train`` on
the same folder, files in the working folder that must not run. Each ends with one paragraph
naming the folder or key, a clean exit status, and the last good checkpoint intact.

Root bypasses file permissions, so a read-only folder is made immutable (``chattr +i``) and a
full disk is a tiny tmpfs; both need root, which CI has.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import BIN, TOYS, env_for_tests, run_train

SMALL = ("data=synthetic", "data.n_samples=400", "trainer.epochs=2", "print_config=false", "plot=false")


def root_only() -> None:
    if os.geteuid() != 0:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)("needs root (chattr, mount)")


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Nothing can be created, renamed or removed in ``path`` (not even by root) while inside."""
    root_only()
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextlib.contextmanager
def tiny_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path``: a disk that fills up."""
    root_only()
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(f"cannot mount a tmpfs: {mounted.stderr}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def assert_clean_failure(result, status: int, *needles: str) -> None:
    out = result.output
    assert result.returncode == status, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"


def assert_whole(run_dir: Path) -> None:
    """No temporary file left by a write; every checkpoint there loads."""
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    for path in run_dir.rglob("*.pt"):
        torch.load(path, map_location="cpu", weights_only=True)


def test_run_folder_below_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    with immutable(locked):
        result = run_train(*SMALL, cwd=tmp_path, run_dir=locked / "run", check=False)
    assert_clean_failure(result, 2, "cannot write the run folder", "key: hydra.run.dir")
    assert not (locked / "run").exists()


def test_run_folder_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    result = run_train(*SMALL, cwd=tmp_path, run_dir=tmp_path / "taken", check=False)
    assert_clean_failure(result, 2, "key: hydra.run.dir")
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_checkpoints_folder_turns_read_only_during_a_resume(tmp_path):
    """The resumed run cannot write its checkpoint: exit 1 naming the folder, and the checkpoint
    of the first run is exactly as it was."""
    run_dir = tmp_path / "run"
    run_train(*SMALL, cwd=tmp_path, run_dir=run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with immutable(run_dir / "checkpoints"):
        result = run_train(*SMALL, "trainer.epochs=4", "resume=auto", cwd=tmp_path, run_dir=run_dir,
                           check=False)
    assert_clean_failure(result, 1, "could not write the checkpoint", "key: hydra.run.dir",
                         "written before it (if any) is intact")
    assert last.read_bytes() == before
    assert_whole(run_dir)


def test_a_full_disk_ends_the_run_cleanly(tmp_path):
    """The disk fills up while checkpoints and metrics are written: exit 1, one paragraph naming
    the folder and the cause, nothing half-written, the last checkpoint that was written loads."""
    with tiny_disk(tmp_path / "disk", "300k") as disk:
        result = run_train("trainer.epochs=20", "print_config=false", "plot=false", cwd=tmp_path,
                           run_dir=disk / "run", check=False)
        assert_clean_failure(result, 1, "key: hydra.run.dir", "No space left on device")
        assert_whole(disk / "run")


def test_a_second_train_on_the_same_folder_is_refused(tmp_path):
    """While one run writes a folder another is refused before it touches anything; once the
    first is killed (SIGKILL: no clean-up at all) the folder can be resumed."""
    run_dir = tmp_path / "run"
    args = [str(BIN / "train"), "data=synthetic", "data.n_samples=20000", "trainer.epochs=200",
            "print_config=false", "plot=false", "trainer.progress=epoch", f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen(args, cwd=tmp_path, env=env_for_tests(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.pt").exists():  # training for real
            assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()
            time.sleep(0.2)
        config = (run_dir / ".hydra" / "config.yaml").read_bytes()
        second = run_train(*SMALL, cwd=tmp_path, run_dir=run_dir, check=False)
        assert_clean_failure(second, 2, f"another train (pid {first.pid}) is writing into {run_dir}",
                             "key: hydra.run.dir")
        assert (run_dir / ".hydra" / "config.yaml").read_bytes() == config  # untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    resumed = run_train("data=synthetic", "data.n_samples=20000", "trainer.epochs=2", "print_config=false",
                        "plot=false", "resume=auto", cwd=tmp_path, run_dir=run_dir, check=False)
    assert "another train" not in resumed.output
    assert resumed.returncode == 0 or "different config" in resumed.output, resumed.output


SHADOW = """
from pathlib import Path
Path(__file__).with_name("{name}-ran").write_text("the working folder's {name}.py was imported")
raise ImportError("this is not the real {name}")
"""


@pytest.mark.real_process  # numpy: preloaded in a fork-server child
@pytest.mark.parametrize("how", ["console script", "python -m trainrun.cli"])
def test_modules_in_the_working_folder_never_shadow_installed_ones(tmp_path, how):
    """A numpy.py or matplotlib.py lying in the folder a run starts in is never imported (the
    run draws curves.png, so matplotlib is imported for real)."""
    for name in ("numpy", "matplotlib", "tqdm"):
        (tmp_path / f"{name}.py").write_text(SHADOW.format(name=name))
    command = [str(BIN / "train")] if how == "console script" else [sys.executable, "-m", "trainrun.cli"]
    proc = subprocess.run([*command, *SMALL, "plot=true", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=env_for_tests(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not list(tmp_path.glob("*-ran")), [p.read_text() for p in tmp_path.glob("*-ran")]
    assert (tmp_path / "run" / "curves.png").is_file()


def test_a_user_module_named_like_an_installed_one_is_refused(tmp_path):
    """model._target_=yaml.Net with a yaml.py in the folder: PyYAML is installed and would be the
    module imported; the run says so instead of building the wrong thing."""
    shutil.copy(TOYS, tmp_path / "yaml.py")
    result = run_train(*SMALL, "model._target_=yaml.Net", cwd=tmp_path, check=False)
    assert_clean_failure(result, 2, "your yaml.py", "is shadowed by the installed module", "rename your yaml.py")
