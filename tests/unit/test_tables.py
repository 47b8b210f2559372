"""Tabular and array files read into (X, y): CSV through numpy's C parser, Parquet through
pyarrow, NPZ without pickle. Every file a user might hand over (a byte-order mark, semicolons,
no header, duplicate or unnamed columns, ragged rows, empty cells, text labels, a folder, a
.npy) is either read right or refused with one paragraph naming the key to change."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import GOOD, write

from trainrun.data.prepare import prepare_arrays
from trainrun.data.sources import read_csv, read_npz, read_parquet
from trainrun.data.tables import select_columns
from trainrun.errors import TrainrunError


def refused(call, *needles: str, key: str) -> TrainrunError:
    with pytest.raises(TrainrunError) as caught:
        call()
    err = caught.value
    assert err.key == key, str(err)
    assert err.fix, str(err)
    for needle in needles:
        assert needle in str(err), f"{needle!r} not in:\n{err}"
    return err


def test_numbers_and_labels_are_read_as_they_are(tmp_path: Path) -> None:
    x, y = read_csv(write(tmp_path, "m.csv", GOOD), "y")
    assert x.dtype == np.float32 and x.tolist() == [[1.5, 2], [3, 4.25], [5, 6]]
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2]
    x, y = read_csv(write(tmp_path, "r.csv", "a,y,b\n1,0.5,2\n3,1.5,4\n"), "y")  # target in the middle
    assert x.tolist() == [[1, 2], [3, 4]] and y.dtype == np.float64 and y.tolist() == [0.5, 1.5]
    x, y = read_csv(write(tmp_path, "t.csv", 'a,b,y\n1,2,cat\n3,4,"big, dog"\n5,6, cat\n'), "y")
    assert x.shape == (3, 2) and y.tolist() == ["cat", "big, dog", "cat"]  # quoted, stripped
    x, _ = read_csv(write(tmp_path, "f.csv", GOOD), "y", features=["b"])
    assert x.tolist() == [[2], [4.25], [6]]


def test_the_same_as_pythons_csv_module_on_a_random_file(tmp_path: Path) -> None:
    """Against the reader trainrun used before (csv module, float64 then float32): equal values,
    blank lines, CRLF line ends and a byte-order mark included."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=(300, 6)) * 10.0 ** rng.integers(-3, 4, size=(300, 6))
    labels = rng.choice(["red", "green", "blue"], size=300)
    rows = [",".join(f"{v:.7g}" for v in row) + f",{lab}" for row, lab in zip(values, labels, strict=True)]
    lines = ["p,q,r,s,t,u,label", *rows]
    lines.insert(100, "")
    path = write(tmp_path, "big.csv", "\ufeff" + "\r\n".join(lines) + "\r\n")
    x, y = read_csv(path, "label")
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.reader(f) if r][1:]
    assert np.array_equal(x, np.asarray([r[:6] for r in rows], dtype=np.float64).astype(np.float32))
    assert y.tolist() == [r[6] for r in rows]


@pytest.mark.parametrize("text, expected", [
    ("\ufeffa,b,y\n1,2,0\n3,4,1\n", [[1, 2], [3, 4]]),  # a byte-order mark (Excel's "CSV UTF-8")
    ("a;b;y\n1;2;0\n3;4;1\n", [[1, 2], [3, 4]]),  # delimiter=auto finds the semicolons
    ("a\tb\ty\n1\t2\t0\n3\t4\t1\n", [[1, 2], [3, 4]]),
    ("a , b , y\n 1 , 2 , 0\n3,4,1\n", [[1, 2], [3, 4]]),
    ("a,b,y\r\n1,2,0\r\n\r\n3,4,1\r\n", [[1, 2], [3, 4]]),
    ("0,1,2\n5,6,0\n7,8,1\n", None),  # pandas' column numbers as the header: data.target=2
])
def test_files_that_are_read_right(tmp_path: Path, text: str, expected) -> None:
    x, y = read_csv(write(tmp_path, "f.csv", text), "2" if text.startswith("0,1,2") else "y")
    assert x.tolist() == (expected or [[5, 6], [7, 8]]) and y.tolist() == [0, 1]


def test_an_explicit_delimiter_and_its_words(tmp_path: Path) -> None:
    semi = write(tmp_path, "s.csv", "a;b;y\n1;2;0\n3;4;1\n")
    assert read_csv(semi, "y", delimiter=";")[0].tolist() == [[1, 2], [3, 4]]
    tab = write(tmp_path, "t.csv", "a\tb\ty\n1\t2\t0\n")
    assert read_csv(tab, "y", delimiter="tab")[0].tolist() == [[1, 2]]
    refused(lambda: read_csv(semi, "y", delimiter=","), "is not separated by ','", "'a;b;y'",
            "add \"data.delimiter=';'\"", key="data.delimiter")
    refused(lambda: read_csv(semi, "y", delimiter=";;"), "not one character", key="data.delimiter")


@pytest.mark.parametrize("case, text, kwargs, key, needles", [
    ("no_header", "0.5,1.25,0\n0.1,0.3,1\n", {}, "data.path",
     ["has no header row", "'0.5,1.25,0'", "'x1,x2,label' with data.target=label"]),
    ("duplicate_column", "a,b,a,y\n1,2,3,0\n", {}, "data.path",
     ["2 columns named 'a' (columns 1, 3)", "its own name"]),
    ("duplicate_target", "a,y,y\n1,2,3\n", {}, "data.path", ["2 columns named 'y'"]),
    ("unnamed_index_column", ",a,y\n0,2,0\n1,4,1\n", {}, "data.features",
     ["column 1 has no name", "index=False"]),
    ("target_among_features", GOOD, {"features": ["a", "y"]}, "data.features",
     ["data.features lists the target column 'y'", "remove 'y' from data.features"]),
    ("feature_twice", GOOD, {"features": ["a", "a"]}, "data.features", ["lists 'a' 2 times"]),
    ("missing_target", GOOD, {"target": "label"}, "data.target", ["no column 'label'", "['a', 'b', 'y']"]),
    ("missing_feature", GOOD, {"features": ["a", "c"]}, "data.features", ["no feature column 'c'"]),
    ("only_the_target", "y\n1\n2\n", {}, "data.path", ["no column besides the target"]),
    ("header_only", "a,b,y\n", {}, "data.path", ["has no data rows"]),
    ("empty_file", "", {}, "data.path", ["has no data rows"]),
    ("row_too_short", "a,b,y\n1,2,0\n3,1\n", {}, "data.path", ["line 3: 2 fields, the header has 3"]),
    ("row_too_long", "a,b,y\n1,2,0\n3,4,5,1\n", {}, "data.path", ["line 3: 4 fields, the header has 3"]),
    # An unquoted comma in a column left out of the features: numpy, told to use some columns
    # only, would take the shifted values without a word; the delimiter count catches it.
    ("stray_comma_in_unused_column", "name,a,b,y\nSmith, John,1,2,0\nDoe,3,4,1\n", {"features": ["a", "b"]},
     "data.path", ["line 2: 5 fields, the header has 4", "quotes"]),
    # Cells the encoding refuses (data/encode.py): read as a table, refused when it is prepared.
    ("empty_cell", "a,b,y\n1,2,0\n3,,1\n", {}, "data.missing",
     ["column 'b' has 1 empty cell(s)", "line 3", "data.missing=mean"]),
    ("text_feature", "a,colour,y\n1.0,2.0,0\n2.0,red,1\n", {}, "data.categorical",
     ["column 'colour' mixes numbers and text (value 'red'", "line 3", "data.categorical=[colour]"]),
    ("text_feature_text_labels", "a,colour,y\n1.0,2.0,cat\n2.0,red,dog\n", {}, "data.categorical",
     ["column 'colour' mixes numbers and text (value 'red'"]),
    ("decimal_comma", "a;b;y\n1,5;2;0\n3;4;1\n", {}, "data.features", ["value '1,5'", "decimal points"]),
    ("empty_target", "a,b,y\n1,2,0\n3,4,\n", {}, "data.target", ["line 3: the target column 'y' is empty"]),
    ("empty_text_target", "a,b,y\n1,2,cat\n3,4,\n", {}, "data.target", ["line 3", "is empty"]),
])
def test_hostile_csv_files_are_refused(tmp_path: Path, case, text, kwargs, key, needles) -> None:
    kwargs = dict(kwargs)
    path = write(tmp_path, f"{case}.csv", text)
    refused(lambda: read_and_prepare(path, kwargs.pop("target", "y"), **kwargs), *needles, key=key)


def read_and_prepare(path: str, target: str, **kwargs):
    """read_csv, then (for a table with text or empty cells) the encoding prepare_arrays fits."""
    x, y = read_csv(path, target, **kwargs)
    return prepare_arrays(x, y, task="auto", val_fraction=0.0, test_fraction=0.0, standardize=True, seed=0,
                          image_shape=None)


def test_not_utf8_and_not_a_file(tmp_path: Path) -> None:
    latin = write(tmp_path, "latin.csv", "a,b,y\n1,2,café\n", encoding="latin-1")
    refused(lambda: read_csv(latin, "y"), "is not UTF-8 text", key="data.path")
    (tmp_path / "data").mkdir()
    write(tmp_path / "data", "train.csv", GOOD)
    err = refused(lambda: read_csv(str(tmp_path / "data"), "y"), "is a folder, not a file", "train.csv",
                  key="data.path")
    assert "not found" not in str(err)
    refused(lambda: read_csv(str(tmp_path / "nope.csv"), "y"), "file not found", key="data.path")


def test_npz_files(tmp_path: Path) -> None:
    x = np.arange(12.0).reshape(4, 3)
    np.savez(tmp_path / "ok.npz", X=x, y=np.arange(4))
    got = read_npz(str(tmp_path / "ok.npz"))
    assert np.array_equal(got[0], x) and got[1].tolist() == [0, 1, 2, 3]
    np.save(tmp_path / "one.npy", x)
    refused(lambda: read_npz(str(tmp_path / "one.npy")), "is a .npy file holding one array (shape [4, 3])",
            "numpy.savez", key="data.path")
    np.savez(tmp_path / "scalar.npz", X=x, y=np.float64(3))
    refused(lambda: read_npz(str(tmp_path / "scalar.npz")), "and y []; y is a single number", key="data.y_key")
    np.savez(tmp_path / "cube.npz", X=x, y=np.zeros((4, 2, 2)))
    refused(lambda: read_npz(str(tmp_path / "cube.npz")), "y [4, 2, 2]", key="data.y_key")
    np.savez(tmp_path / "short.npz", X=x, y=np.arange(3))
    refused(lambda: read_npz(str(tmp_path / "short.npz")), "4 samples of features but 3 targets", key="data.path")
    np.savez(tmp_path / "objects.npz", X=x, y=np.array([{"a": 1}] * 4, dtype=object))
    refused(lambda: read_npz(str(tmp_path / "objects.npz")), "cannot read array 'y'", key="data.path")
    refused(lambda: read_npz(str(tmp_path)), "is a folder, not a file", "ok.npz", key="data.path")


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow (trainrun[parquet])")
def test_parquet_files(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "d.parquet")
    pq.write_table(pa.table({"a": [1.5, 3.0, 5.0], "n": [1, 2, 3], "name": ["x", "y", "z"],
                             "label": ["cat", "dog", "cat"]}), path)
    x, y = read_parquet(path, "label", features=["a", "n"])
    assert x.dtype == np.float32 and x.tolist() == [[1.5, 1], [3, 2], [5, 3]] and y.tolist() == ["cat", "dog", "cat"]
    table, _ = read_parquet(path, "label")  # a text column: a table, one-hot encoded when prepared (encode.py)
    assert table.names == ["a", "n", "name"] and table.values[2].tolist() == ["x", "y", "z"]
    refused(lambda: read_parquet(path, "label", features=["a", "label"]), "lists the target column",
            key="data.features")
    pq.write_table(pa.table({"a": [1.0, None], "y": [0, 1]}), str(tmp_path / "null.parquet"))
    table, y = read_parquet(str(tmp_path / "null.parquet"), "y")  # a null: an empty cell, refused by default
    refused(lambda: prepare_arrays(table, y, task="auto", val_fraction=0.0, test_fraction=0.0, standardize=True,
                                   seed=0, image_shape=None), "1 empty cell(s)", key="data.missing")
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": pa.array(["u", "v"]).dictionary_encode()}),
                   str(tmp_path / "cat.parquet"))
    assert read_parquet(str(tmp_path / "cat.parquet"), "y")[1].tolist() == ["u", "v"]
    write(tmp_path, "fake.parquet", GOOD)
    refused(lambda: read_parquet(str(tmp_path / "fake.parquet"), "y"), "cannot read Parquet file", key="data.path")




STREAM_PEAK = """
import sys
import pyarrow as pa
from trainrun.data.sources import read_parquet
read_parquet(sys.argv[1], "label", stream=True)  # the copy training reads
converted = pa.default_memory_pool().max_memory()
chunks = read_parquet(sys.argv[1], "label", stream=True, require_target=False)  # predict's chunks
rows = sum(len(values[1]) for values in chunks.read())
print(converted, pa.default_memory_pool().max_memory(), rows)
"""


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow (trainrun[parquet])")
def test_a_streamed_parquet_pass_holds_about_a_row_group_not_the_file(tmp_path: Path) -> None:
    """pyarrow pre-buffers every row group it will read by default and keeps them until the file
    closes: a streamed 2 GiB file peaked at 2.9 GB. The pool's peak (4.4 row groups here, a read
    and its decoding; 15 and 22 of this file's 12 with pre-buffering) must stay well under the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups, rows, width = 12, 1 << 16, 4  # 2 MiB of float64 features per row group, 24 MiB in all
    rng = np.random.default_rng(0)
    schema = pa.schema([*(pa.field(f"f{j}", pa.float64()) for j in range(width)), pa.field("label", pa.int64())])
    with pq.ParquetWriter(tmp_path / "big.parquet", schema, compression="none") as writer:
        for _ in range(groups):
            x = rng.normal(size=(rows, width))
            writer.write_table(pa.table([*x.T, (x[:, 0] > 0).astype(np.int64)], schema=schema))
    done = subprocess.run([sys.executable, "-c", STREAM_PEAK, str(tmp_path / "big.parquet")], capture_output=True,
                          text=True, env={**os.environ, "TRAINRUN_CACHE_DIR": str(tmp_path / "cache")}, check=False)
    assert done.returncode == 0, done.stderr
    converted, predicted, seen = map(int, done.stdout.split())
    group = rows * (width + 1) * 8
    assert seen == groups * rows
    assert converted < 6 * group and predicted < 6 * group, (converted / group, predicted / group)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow (trainrun[parquet])")
def test_a_shard_without_a_column_is_refused_before_a_row_is_read(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "shards").mkdir()
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [3, 4], "label": [0, 1]}), tmp_path / "shards" / "0.parquet")
    pq.write_table(pa.table({"a": [5.0], "label": [1]}), tmp_path / "shards" / "1.parquet")
    folder = str(tmp_path / "shards")
    for kwargs in ({}, {"require_target": False}):  # train's copy, predict's chunks
        err = refused(lambda kwargs=kwargs: read_parquet(folder, "label", **kwargs), "1.parquet", "no column 'b'",
                      key="data.path")
        assert "0.parquet" in err.message


def test_an_empty_feature_list_names_no_column_for_every_table_reader():
    """Adversarial pass: data.features=[] trained on every column (CSV and Parquet share this)."""
    with pytest.raises(TrainrunError, match=r"data.features=\[\] names no feature column") as err:
        select_columns(["a", "b", "label"], "label", [], "Parquet file 'p.parquet'")
    assert err.value.key == "data.features"


def test_categorical_columns_of_a_streamed_file_are_refused_not_read_as_numbers(tmp_path: Path) -> None:
    """Adversarial pass: data.categorical=[zip] on a streamed CSV trained on the zip codes as
    quantities (2 inputs instead of 1 + 3 one-hot), exit 0. The streamed copy holds numbers
    only, so the setting is refused there, naming what made the file stream."""
    path = write(tmp_path, "d.csv", "a,zip,label\n" + "".join(f"0.{i},{10 * (1 + i % 3)},{i % 2}\n" for i in range(9)))
    x, _ = read_csv(path, "label", categorical=["zip"], stream=False)  # whole: one-hot, as asked
    assert getattr(x, "categorical", None) == ["zip"]
    refused(lambda: read_csv(path, "label", categorical=["zip"], stream=True), "data.stream=true", "zip",
            key="data.categorical")
    refused(lambda: read_csv(path, "label", categorical=["zip"], stream_above_mb=0),
            "larger than data.stream_above_mb=0", key="data.categorical")
    assert read_csv(path, "label", stream=True) is not None  # without categorical: streamed, as before


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow (trainrun[parquet])")
def test_parquet_shards_with_stream_false_or_categorical_are_refused(tmp_path: Path) -> None:
    """Shards are always streamed: data.stream=false on a folder streamed anyway (and the fix of
    the missing-values message pointed at it), data.categorical was dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "shards").mkdir()
    for k in range(2):
        pq.write_table(pa.table({"a": [0.5, 1.5], "zip": [10, 20], "label": [0, 1]}),
                       tmp_path / "shards" / f"{k}.parquet")
    folder = str(tmp_path / "shards")
    refused(lambda: read_parquet(folder, "label", stream=False), "data.stream=false", "2 Parquet shard(s)",
            key="data.stream")
    refused(lambda: read_parquet(folder, "label", categorical=["zip"]), "shards", key="data.categorical")
    one = str(tmp_path / "shards" / "0.parquet")
    refused(lambda: read_parquet(one, "label", categorical=["zip"], stream=True), "data.stream=true",
            key="data.categorical")
    x, _ = read_parquet(one, "label", categorical=["zip"], stream=False)  # whole: as asked
    assert getattr(x, "categorical", None) == ["zip"]
    # predict reads with the training run's encoding: the config's categorical is not used there
    assert read_parquet(folder, "label", categorical=["zip"], require_target=False) is not None


def test_a_categorical_column_is_read_as_written_never_as_float32(tmp_path: Path) -> None:
    """Adversarial pass: declared codes where every cell is a number were read as float32, which
    merged 123456789 and 123456790 (val_acc 0.49 against 1.0 for the same codes as text), and
    turned 007 into 7 and a literal nan into an empty cell."""
    rows = "".join(f"{code},{i % 3},{i % 2}\n" for i, code in enumerate(["123456789", "123456790", "007", "7",
                                                                          "nan", "1.5"] * 3))
    path = write(tmp_path, "codes.csv", "code,x,label\n" + rows)
    for kwargs in ({}, {"require_target": False}):  # training's read, predict's
        table, _ = read_csv(path, "label", categorical=["code"], **kwargs)
        assert table.values[0][:6].tolist() == ["123456789", "123456790", "007", "7", "nan", "1.5"]
        assert table.values[1].dtype == np.float32  # the other columns as before
