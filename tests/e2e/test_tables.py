"""Tabular and array files read into (X, y): CSV through numpy's C parser, Parquet through
pyarrow, NPZ without pickle. Every file a user might hand over (a byte-order mark, semicolons,
no header, duplicate or unnamed columns, ragged rows, empty cells, text labels, a folder, a
.npy) is either read right or refused with one paragraph naming the key to change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import GOOD, write


@pytest.mark.parametrize("overrides, needles", [
    (["data=csv", "data.path=dup.csv", "data.target=y"], ["2 columns named 'a'", "key: data.path"]),
    (["data=csv", "data.path=data", "data.target=y"], ["data.path='data' is a folder, not a file", "train.csv"]),
    (["data=npz", "data.path=one.npy"], ["is a .npy file holding one array", "numpy.savez"]),
])
def test_through_the_train_command(train, tmp_path: Path, overrides, needles) -> None:
    """The same paragraphs from the real command: exit 2 before training, no traceback, no
    run folder left behind."""
    write(tmp_path, "dup.csv", "a,b,a,y\n1,2,3,0\n4,5,6,1\n")
    (tmp_path / "data").mkdir()
    write(tmp_path / "data", "train.csv", GOOD)
    np.save(tmp_path / "one.npy", np.zeros((4, 3)))
    result = train("print_config=false", *overrides, check=False)
    assert result.returncode == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert not (result.run_dir / "summary.json").exists()
