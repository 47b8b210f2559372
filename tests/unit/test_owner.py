"""One owner for every folder a command writes (:mod:`trainrun.owner`), in-process: links where
trainrun or Hydra write are refused (and nothing is written through them: the file a link points
to is a marker that must stay absent), a folder holding another run is refused unless the
command continues it or replaces its own results, and one process at a time holds the lock.
The end-to-end twins (train, predict, evaluate, export-model, resume=auto) are in
tests/e2e/test_run_folder.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from trainrun.errors import TrainrunError
from trainrun.files import LOCK, RunFolderLock
from trainrun.owner import Owner, held, links, output_owner


def owner(folder: Path, command: str = "train") -> Owner:
    return Owner(folder, command, key="hydra.run.dir", fix_other="name a new folder")


def finished_run(folder: Path, command: str = "train", lock: str | None = None) -> Path:
    """A folder as a finished ``command`` leaves it (``lock``: the lock file's text)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("a: 1\n")
    (folder / LOCK).write_text(lock if lock is not None else f"{command} pid 1")
    if command == "train":
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.pt").write_bytes(b"weights")
        (folder / "metrics.csv").write_text("epoch\n1\n")
    else:
        (folder / "predictions.csv").write_text("row\n0\n")
    return folder


# A link planted where trainrun or Hydra write, pointing at a marker that must never appear.
PLANTED: dict[str, Callable[[Path, Path], None]] = {
    "the lock file": lambda f, m: (f / LOCK).symlink_to(m),
    "train.log": lambda f, m: (f / "train.log").symlink_to(m),
    "predict.log": lambda f, m: (f / "predict.log").symlink_to(m),
    "summary.json": lambda f, m: (f / "summary.json").symlink_to(m),
    "metrics.csv": lambda f, m: (f / "metrics.csv").symlink_to(m),
    "curves.png": lambda f, m: (f / "curves.png").symlink_to(m),
    "checkpoints/ itself": lambda f, m: (f / "checkpoints").symlink_to(m.parent),
    "checkpoints/last.pt": lambda f, m: ((f / "checkpoints").mkdir(), (f / "checkpoints" / "last.pt").symlink_to(m)),
    ".hydra/config.yaml": lambda f, m: ((f / ".hydra").mkdir(), (f / ".hydra" / "config.yaml").symlink_to(m)),
    ".hydra/ itself": lambda f, m: (f / ".hydra").symlink_to(m.parent),
    "profiler/trace": lambda f, m: ((f / "profiler").mkdir(), (f / "profiler" / "trace.json").symlink_to(m)),
    "a dangling link": lambda f, m: (f / "params.csv").symlink_to(f / "nowhere"),
}


@pytest.mark.parametrize("where", list(PLANTED))
def test_links_where_trainrun_writes_are_refused(tmp_path, where):
    folder, marker = tmp_path / "run", tmp_path / "elsewhere" / "marker"
    folder.mkdir()
    marker.parent.mkdir()
    PLANTED[where](folder, marker)
    with pytest.raises(TrainrunError, match="holds symbolic links where trainrun writes") as err:
        owner(folder).claim()
    assert err.value.key == "hydra.run.dir"
    assert not marker.exists()  # nothing was written through the link
    assert not (folder / LOCK).exists() or (folder / LOCK).is_symlink()


def test_the_lock_opens_no_link_even_unchecked(tmp_path):
    """O_NOFOLLOW: the lock alone (no check before it) refuses a link and writes nothing through it."""
    marker = tmp_path / "marker"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK).symlink_to(marker)
    with pytest.raises(TrainrunError, match="is a symbolic link"):
        RunFolderLock(tmp_path / "run").acquire()
    assert not marker.exists()


@pytest.mark.parametrize("make", [os.mkfifo, os.mkdir])
def test_a_lock_that_is_not_a_plain_file_is_refused(tmp_path, make):
    (tmp_path / "run").mkdir()
    make(tmp_path / "run" / LOCK)
    with pytest.raises(TrainrunError):
        RunFolderLock(tmp_path / "run").acquire()


def test_an_output_folder_inside_a_run_is_reached_through_no_link(tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (run / "eval").symlink_to(elsewhere)
    with pytest.raises(TrainrunError, match=r"eval") as err:
        output_owner(run / "eval" / "best_val", "evaluate", run).claim()
    assert err.value.key == "out"
    assert list(elsewhere.iterdir()) == []
    assert links(tmp_path / "mine", None) == []  # a folder that is not there yet holds none


# --------------------------------------------------------------------------- another run's folder


@pytest.mark.parametrize("command, continuing, refused", [
    ("train", False, True),  # train hydra.run.dir=<a finished run>, no resume
    ("train", True, False),  # resume=auto: its own run
    ("predict", False, True),  # predict hydra.run.dir=<a training run>
    ("evaluate", False, True),  # evaluate out=<a training run>
    ("export-model", False, True),
])
def test_a_training_runs_folder(tmp_path, command, continuing, refused):
    folder = finished_run(tmp_path / "run")
    claim = Owner(folder, command, key="k", fix_other="name a new folder")
    if refused:
        with pytest.raises(TrainrunError, match=r"holds a train run \(checkpoints, metrics.csv\)"):
            claim.claim(continuing=continuing)
        assert (folder / LOCK).read_text() == "train pid 1"  # untouched
    else:
        claim.claim(continuing=continuing)
        assert (folder / LOCK).read_text().startswith("train pid ")
        claim.release()


def test_a_folder_of_an_older_release_and_of_other_commands(tmp_path):
    old = finished_run(tmp_path / "old", lock="pid 77")  # before commands were recorded
    with pytest.raises(TrainrunError, match="holds another run"):
        owner(old).claim()
    owner(old).claim(continuing=True)  # a train resuming it: allowed
    predicted = finished_run(tmp_path / "pred", command="predict")
    for command, continuing in (("train", True), ("train", False), ("predict", False)):
        with pytest.raises(TrainrunError, match="holds a predict run"):
            Owner(predicted, command, key="k", fix_other="x").claim(continuing=continuing)


def test_evaluate_replaces_its_own_results(tmp_path):
    out = tmp_path / "eval" / "best_val"
    first = output_owner(out, "evaluate", None)
    first.claim()
    (out / "eval.json").write_text("{}")
    first.release()
    again = output_owner(out, "evaluate", None)
    again.claim()  # evaluate the same checkpoint again
    again.release()
    with pytest.raises(TrainrunError, match="holds an evaluate run"):
        output_owner(out, "export-model", None).claim()


@pytest.mark.parametrize("command, record", [("evaluate", "eval.json"), ("export-model", "preprocessing.json")])
def test_results_of_another_checkpoint_are_not_replaced(tmp_path, command, record):
    """Attack pass: ``evaluate run=B out=<A's evaluation>`` replaced A's eval.json (exit 0); the
    results name their checkpoint, and only the same one may replace them."""
    a, b = tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt"
    out = tmp_path / "out"
    first = output_owner(out, command, None, source=a)
    first.claim()
    (out / record).write_text(json.dumps({"checkpoint": str(a.resolve())}))
    first.release()
    again = output_owner(out, command, None, source=a)
    again.claim()  # the same checkpoint again (another split, another format)
    again.release()
    before = (out / record).read_text()
    with pytest.raises(TrainrunError, match=f"holds the {command} results of another checkpoint") as err:
        output_owner(out, command, None, source=b).claim()
    assert str(a.resolve()) in err.value.message and (out / record).read_text() == before


@pytest.mark.parametrize("command, record", [("evaluate", "eval.json"), ("export-model", "preprocessing.json")])
def test_a_copied_run_folder_replaces_its_own_results(tmp_path, command, record):
    """Adversarial pass: ``cp -r run run2`` then ``evaluate run=run2`` was refused (the results in
    run2 name run/checkpoints/best.pt). The same place in a copied or moved run folder is the
    same checkpoint; another run's checkpoint still is not."""
    run, copy, other = tmp_path / "run", tmp_path / "run2", tmp_path / "other"
    out = copy / "eval" / "best_val"
    out.mkdir(parents=True)
    (copy / "checkpoints").mkdir()
    (out / record).write_text(json.dumps({"checkpoint": str(run / "checkpoints" / "best.pt")}))
    mine = output_owner(out, command, copy, source=copy / "checkpoints" / "best.pt")
    mine.claim()  # its own results, from before the copy
    mine.release()
    (out / record).write_text(json.dumps({"checkpoint": str(other / "checkpoints" / "last.pt")}))
    with pytest.raises(TrainrunError, match=f"holds the {command} results of another checkpoint"):
        output_owner(out, command, copy, source=copy / "checkpoints" / "best.pt").claim()


@pytest.mark.parametrize("inner", ["checkpoints", ".hydra", "eval/mine", "notes/deep/er"])
def test_a_folder_inside_another_commands_folder_is_its(tmp_path, inner):
    """Attack pass: ``train hydra.run.dir=<a run>/checkpoints`` wrote a second run into the first
    one's folder (no lock of its own in the way); a folder under another command's is refused,
    except an output folder in the run it belongs to (evaluate's out=<run>/eval/...)."""
    run = finished_run(tmp_path / "run")
    before = sorted(p.name for p in run.rglob("*"))
    for command in ("train", "predict"):
        with pytest.raises(TrainrunError, match=f"lies inside {run}, the folder of a train run"):
            owner(run / inner, command).claim()
    with pytest.raises(TrainrunError, match="lies inside"):
        output_owner(run / inner, "evaluate", None, home=tmp_path / "other").claim()
    assert sorted(p.name for p in run.rglob("*")) == before
    mine = output_owner(run / inner, "evaluate", None, home=run)
    mine.claim()
    mine.release()


@pytest.mark.parametrize("contents", [
    {},  # empty: a folder made for the run
    {"notes.txt": "mine"},  # the user's own folder: no command ever wrote there
    {".hydra": None, "train.log": "x", LOCK: "train pid 3"},  # a failed start: nothing but its traces
])
def test_folders_that_hold_no_run(tmp_path, contents):
    folder = tmp_path / "run"
    folder.mkdir()
    for name, text in contents.items():
        (folder / name).mkdir() if text is None else (folder / name).write_text(text)
    assert held(folder)[1] == []
    owner(folder).claim()


def test_one_process_at_a_time(tmp_path):
    first = owner(tmp_path / "run")
    first.claim()
    with pytest.raises(TrainrunError, match=r"another train \(pid \d+\) is writing into"):
        owner(tmp_path / "run", "predict").lock.acquire()
    first.release()
    owner(tmp_path / "run", "predict").lock.acquire()


def test_a_refused_claim_changes_nothing(tmp_path):
    """A run of another Hydra program (no lock file): refused, and no lock file is left behind."""
    folder = finished_run(tmp_path / "run")
    (folder / LOCK).unlink()
    with pytest.raises(TrainrunError, match="holds another run"):
        owner(folder).claim()
    assert not (folder / LOCK).exists()
    with pytest.raises(TrainrunError):
        owner(folder, "predict").claim()
    assert not (folder / LOCK).exists()
