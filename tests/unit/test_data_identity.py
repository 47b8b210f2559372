"""The data known by its content (data/identity.py): fingerprints of files, arrays and Datasets,
what a resume compares, the columns new data is read with. In-process; the commands that use it
are exercised in tests/test_data_streams_e2e.py."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from trainrun.data.identity import (
    DataIdentity,
    data_files,
    differences,
    file_digest,
    identify,
    same_data,
    training_columns,
    with_stored_paths,
)
from trainrun.errors import TrainrunError

CSV = "trainrun.data.sources.read_csv"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def ident(path: Path, cache: Path | None, **kw) -> DataIdentity:
    return identify(CSV, {"path": str(path), "target": "y"}, None, columns=kw.get("columns", ["a", "b"]),
                    rows=kw.get("rows", 2), split_seed=kw.get("seed", 0), cache=cache)


def resume_check(before: DataIdentity, now: DataIdentity, allow: bool = False) -> list[str]:
    class Info:
        identity = now
    return same_data({"identity": before.to_dict()}, Info(), allow=allow, path=Path("last.pt"))


def test_a_file_is_known_by_its_bytes_and_its_absolute_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d.csv", "a,b,y\n1,2,0\n3,4,1\n")
    first = ident(Path("d.csv"), tmp_path / "cache")
    assert first.paths == [str(tmp_path / "d.csv")] and first.of == "files" and len(first.fingerprint) == 32
    assert ident(Path("d.csv"), None).fingerprint == first.fingerprint  # the memo changes nothing


# Ten inputs of our own, each a change a resume must see (or must not be fooled by).
def test_what_a_resume_sees(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    data = write(tmp_path / "d.csv", "a,b,y\n1,2,0\n3,4,1\n")
    before = ident(data, cache)
    # 1. a row gained (the example): content and rows differ
    write(data, "a,b,y\n1,2,0\n3,4,1\n5,6,0\n")
    lines = differences(before, ident(data, cache, rows=3))
    assert any(line.startswith("content") for line in lines) and "rows: 2 -> 3" in lines
    # 2. one value changed, same size and row count: the bytes say it
    write(data, "a,b,y\n1,2,0\n3,5,1\n")
    with pytest.raises(TrainrunError) as caught:
        resume_check(before, ident(data, cache))
    assert caught.value.key == "resume" and "resume_changed_data=true" in caught.value.fix
    # 3. the same bytes again, written anew (new mtime and ctime): the same data
    write(data, "a,b,y\n1,2,0\n3,4,1\n")
    assert resume_check(before, ident(data, cache)) == []
    # 4. touched only: the memo is stale (ctime moved), hashed again, still the same
    os.utime(data, (time.time() + 100, time.time() + 100))
    assert resume_check(before, ident(data, cache)) == []
    # 5. a byte-identical copy elsewhere, renamed over it (another inode): the same data
    shutil.copy(data, tmp_path / "copy.csv")
    os.replace(tmp_path / "copy.csv", data)
    assert resume_check(before, ident(data, cache)) == []
    # 6. the columns reordered in the file: other bytes, refused (an override says what differs)
    write(data, "b,a,y\n2,1,0\n4,3,1\n")
    said = resume_check(before, ident(data, cache), allow=True)
    assert any(line.startswith("content") for line in said)
    # 7. another split seed
    write(data, "a,b,y\n1,2,0\n3,4,1\n")
    assert differences(before, ident(data, cache, seed=1)) == ["split_seed: 0 -> 1"]
    # 8. other feature columns
    assert differences(before, ident(data, cache, columns=["a"])) == ["columns: ['a', 'b'] -> ['a']"]
    # 9. a checkpoint older than identities: nothing to compare, nothing refused
    class Info:
        identity = before
    assert same_data({}, Info(), allow=False, path=Path("x")) == []
    # 10. a memo that lies about a file of the same stat is never consulted for another path
    other = write(tmp_path / "e.csv", "a,b,y\n9,9,9\n")
    assert file_digest(other, cache) != file_digest(data, cache)


def test_shards_folder_and_glob(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"X_{i}.npy", np.full((2, 2), i, dtype=np.float32))
    files, root = data_files(str(folder))
    assert [f.name for f in files] == ["X_0.npy", "X_1.npy", "X_2.npy"] and root == folder
    globbed, _ = data_files(str(folder / "X_*.npy"))
    assert globbed == files
    before = identify("trainrun.data.sources.read_npy", {"path": str(folder), "target_path": None}, None,
                      columns=None, rows=6, split_seed=0, cache=None)
    np.save(folder / "X_3.npy", np.zeros((2, 2), dtype=np.float32))  # a shard added
    after = identify("trainrun.data.sources.read_npy", {"path": str(folder), "target_path": None}, None,
                     columns=None, rows=8, split_seed=0, cache=None)
    assert before.fingerprint != after.fingerprint
    with pytest.raises(TrainrunError, match="matches no file"):
        data_files(str(tmp_path / "none_*.npy"))


def test_arrays_and_datasets(tmp_path: Path) -> None:
    x, y = np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0, 1, 0])
    a = identify("m.load", {}, (x, y), columns=None, rows=3, split_seed=0, cache=None)
    b = identify("m.load", {}, (x.copy(), y.copy()), columns=None, rows=3, split_seed=0, cache=None)
    x[0, 0] = 9
    c = identify("m.load", {}, (x, y), columns=None, rows=3, split_seed=0, cache=None)
    assert a.of == "arrays" and a.fingerprint == b.fingerprint != c.fingerprint

    class Versioned(torch.utils.data.Dataset):
        fingerprint = "v1"

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(2), 0

    d1 = identify("m.D", {"root": str(tmp_path)}, Versioned(), columns=None, rows=4, split_seed=0, cache=None)
    Versioned.fingerprint = "v2"
    d2 = identify("m.D", {"root": str(tmp_path)}, Versioned(), columns=None, rows=4, split_seed=0, cache=None)
    assert d1.of == "declared fingerprint" and d1.fingerprint != d2.fingerprint
    assert d1.paths == [str(tmp_path)]  # a user source's folder recorded, not hashed


def test_new_data_takes_the_training_columns_by_name() -> None:
    assert training_columns(None, ["a", "b"]) == ["a", "b"]
    assert training_columns(["b", "a"], ["a", "b"]) == ["a", "b"]  # another order: the training's
    with pytest.raises(TrainrunError) as caught:
        training_columns(["a", "c"], ["a", "b"])
    assert caught.value.key == "data.features" and "missing ['b']" in str(caught.value)


def test_the_run_data_by_its_stored_absolute_path(tmp_path: Path) -> None:
    stored = DataIdentity(source=CSV, fingerprint="f" * 32, of="files", paths=[str(tmp_path / "d.csv")])
    options = {"_target_": CSV, "path": "d.csv"}
    assert with_stored_paths(options, stored) == ["path"] and options["path"] == str(tmp_path / "d.csv")
