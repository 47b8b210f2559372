"""A table as it is: text (categorical) feature columns, empty cells, and an id column.

A reader returns :class:`Columns` instead of a float matrix when a table is not all numbers:
each feature column as float32 (NaN where a cell is empty) or as text ("" where empty), and the
``data.id`` column apart. :func:`fit` learns from the **train split only** how to make numbers
of them (:class:`Encoding`, saved in the checkpoint with the other training statistics, applied
by ``predict`` and written to ``export-model``'s ``preprocessing.json``):

- **Text columns are one-hot encoded**, one 0/1 column per category seen in the train split
  (sorted). One-hot, not an embedding index: the built-in models (MLP, Linear, CNN) take a flat
  vector of numbers, and a one-hot block is what such a layer can use without an embedding
  layer of the model's own; the categories of a tabular column are few. One-hot columns are
  never standardized (mean 0, std 1 in the saved statistics). **A category the train split
  never saw** (in validation, test or ``predict`` rows) is encoded as all zeros, like an empty
  cell under a fill policy, and counted: ``predict`` says how many rows had one. A column with
  more distinct values than one-hot can carry (an identifier, free text) is refused, naming
  ``data.id`` and ``data.features``.
- **Empty cells** follow ``data.missing``: ``refuse`` (the default: the message names the
  column, how many and the first row, and the fix), ``mean`` / ``median`` of the train split's
  values of that column, or ``constant`` (``data.fill_value``); an empty text cell is all zeros.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trainrun.errors import TrainrunError

MAX_CATEGORIES = 1000


@dataclass
class Columns:
    """A table's feature columns as read: float32 with NaN for empty cells, or text with "" for
    empty cells; ``ids``: the ``data.id`` column (text), one per row."""

    names: list[str]
    values: list[np.ndarray]
    ids: np.ndarray | None = None
    id_name: str | None = None
    categorical: list[str] | None = None  # data.categorical: one-hot even where cells look like numbers
    where: str = "the data"  # the file, for messages

    def __len__(self) -> int:
        return len(self.values[0]) if self.values else (0 if self.ids is None else len(self.ids))

    @classmethod
    def of_matrix(cls, x: np.ndarray, names: list[str] | None = None) -> Columns:
        flat = x.reshape(len(x), -1)
        return cls(names or [f"x{j}" for j in range(flat.shape[1])],
                   [flat[:, j].astype(np.float32) for j in range(flat.shape[1])])


@dataclass
class Encoding:
    """Per feature column: ``kind`` number or category, its fill value, its categories."""

    columns: list[dict[str, Any]] = field(default_factory=list)
    missing: str = "refuse"  # data.missing at training

    @property
    def width(self) -> int:
        return sum(len(c["categories"]) if c["kind"] == "category" else 1 for c in self.columns)

    @property
    def names(self) -> list[str]:
        """The model's input columns: ``name`` for a number, ``name=category`` per category."""
        out: list[str] = []
        for c in self.columns:
            out += [f"{c['name']}={v}" for v in c["categories"]] if c["kind"] == "category" else [c["name"]]
        return out

    @property
    def one_hot(self) -> np.ndarray:
        """Which input columns are one-hot (never standardized)."""
        flags: list[bool] = []
        for c in self.columns:
            flags += [True] * len(c["categories"]) if c["kind"] == "category" else [False]
        return np.asarray(flags, dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, table: Columns, where: str = "the data") -> tuple[np.ndarray, dict[str, int]]:
        """The table as the model's float32 matrix; how many rows had an unseen category, per column."""
        by_name = dict(zip(table.names, table.values, strict=True))
        out = np.zeros((len(table), self.width), dtype=np.float32)
        unseen: dict[str, int] = {}
        j = 0
        for c in self.columns:
            if c["name"] not in by_name:
                raise TrainrunError(f"{where} has no column {c['name']!r}, which the model was trained on",
                                    key="data.features", fix="give the columns the model was trained on")
            values = by_name[c["name"]]
            if c["kind"] == "number":
                column = _numbers(values, c["name"], where)
                empty = np.isnan(column)
                if np.any(empty):
                    if c["fill"] is None:
                        raise _empty_cells(c["name"], empty, where)
                    column = np.where(empty, np.float32(c["fill"]), column)
                out[:, j] = column
                j += 1
                continue
            text = cell_text(values)
            if self.missing == "refuse" and np.any(text == ""):
                raise _empty_cells(c["name"], text == "", where)
            categories = np.asarray(c["categories"], dtype=str)
            at = np.minimum(np.searchsorted(categories, text), len(categories) - 1)
            known = (categories[at] == text) & (text != "")
            _match_by_value(text, categories, at, known)
            rows = np.flatnonzero(known)
            out[rows, j + at[rows]] = 1.0
            if np.any(~known & (text != "")):
                unseen[c["name"]] = int(np.count_nonzero(~known & (text != "")))
            j += len(categories)
        return out, unseen


def cell_text(values: np.ndarray) -> np.ndarray:
    """A column's cells as the text of categories: stripped text, or numbers as they would be
    written (``10115``, not ``10115.0``), an empty cell (NaN) as ``""``. A column of codes reads
    as numbers from a file where every cell is one, as text where one is not."""
    if values.dtype.kind in "iub":
        return values.astype(np.int64).astype(str)
    if values.dtype.kind == "f":
        whole = np.isfinite(values) & (np.mod(values, 1) == 0) & (np.abs(values) < 2**53)
        out = np.where(whole, np.where(whole, values, 0).astype(np.int64).astype(str), values.astype(str))
        return np.where(np.isnan(values), "", out)
    return np.char.strip(values.astype(str))


def _match_by_value(text: np.ndarray, categories: np.ndarray, at: np.ndarray, known: np.ndarray) -> None:
    """Cells whose text names no category but whose number is one's (``10115.0`` for ``10115``,
    a run trained before :func:`cell_text` kept ``"10.0"``): that category, in place."""
    loose = ~known & (text != "")
    if not np.any(loose):
        return
    by_value: dict[float, int] = {}
    for k, name in enumerate(categories.tolist()):
        if _is_number(name) and math.isfinite(number := float(name)):
            by_value[number] = -1 if number in by_value else k  # "7" and "007": neither, unseen
    if not by_value:
        return
    cells, inverse = np.unique(text[loose], return_inverse=True)
    found = np.asarray([by_value.get(float(v), -1) if _is_number(v) and math.isfinite(float(v)) else -1
                        for v in cells.tolist()])[inverse]
    rows = np.flatnonzero(loose)[found >= 0]
    at[rows], known[rows] = found[found >= 0], True


def _numbers(values: np.ndarray, name: str, where: str) -> np.ndarray:
    if values.dtype.kind in "biuf":
        return values.astype(np.float32)
    text = np.char.strip(values.astype(str))
    try:
        return np.where(text == "", "nan", text).astype(np.float32)
    except ValueError:
        bad = next(v for v in text.tolist() if v and not _is_number(v))
        raise TrainrunError(f"{where}: column {name!r} holds the text {bad!r}, but the model was trained on it as "
                            "numbers", key="data.features",
                            fix=f"give numbers in {name!r}, as in training, or keep it out of the features: "
                            f"data.id={name} (an id column) or data.features=[...]") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _empty_cells(name: str, empty: np.ndarray, where: str) -> TrainrunError:
    first = int(np.flatnonzero(empty)[0])
    return TrainrunError(
        f"{where}: column {name!r} has {int(np.count_nonzero(empty))} empty cell(s) (missing values; the first in "
        f"data row {first + 1}, line {first + 2} of a CSV file)",
        key="data.missing",
        fix="fill them in, or choose a policy: data.missing=mean (or median) fills them with the train split's "
        "value of that column, data.missing=constant data.fill_value=0 with a number",
    )


def kinds(table: Columns, categorical: list[str] | None, where: str) -> list[str]:
    """Each column's kind: ``number`` when every non-empty cell is a number, ``category`` when
    none is (or ``data.categorical`` names it); a column mixing both is refused."""
    out = []
    for name, values in zip(table.names, table.values, strict=True):
        if values.dtype.kind in "biuf" and name not in (categorical or []):
            out.append("number")
            continue
        text = np.char.strip(values.astype(str))
        distinct = np.unique(text[text != ""])
        numeric = [_is_number(v) for v in distinct.tolist()]
        if name in (categorical or []) or not any(numeric):
            out.append("category")
        elif all(numeric):
            out.append("number")
        else:
            # the first cell by row that is not a number (not the first in sorted order)
            row = int(np.flatnonzero(np.isin(text, distinct[~np.asarray(numeric)]))[0])
            bad = text[row]
            if _is_number(str(bad).replace(",", ".")):
                raise TrainrunError(f"{where}: column {name!r} holds value {str(bad)!r} (data row {row + 1}, line "
                                    f"{row + 2} of a CSV file): a decimal comma", key="data.features",
                                    fix="write decimal points (1.5, not 1,5)")
            raise TrainrunError(
                f"{where}: column {name!r} mixes numbers and text (value {str(bad)!r} in data row {row + 1}, line "
                f"{row + 2} of a CSV file)",
                key="data.categorical",
                fix=f"correct that cell, or declare the column as categories: data.categorical=[{name}] "
                "(each distinct value a category)",
            )
    return out


def fit(table: Columns, train_idx: np.ndarray, *, missing: str, fill_value: float,
        categorical: list[str] | None = None, where: str = "the data") -> Encoding:
    """What the train split teaches: each column's kind, fill value and categories."""
    columns: list[dict[str, Any]] = []
    for name, values, kind in zip(table.names, table.values, kinds(table, categorical, where), strict=True):
        if kind == "number":
            column = _numbers(values, name, where)
            empty = np.isnan(column)
            fill: float | None = None
            if missing == "refuse" and np.any(empty):
                raise _empty_cells(name, empty, where)
            if missing != "refuse":
                known = column[train_idx][~empty[train_idx]]
                if missing == "constant":
                    fill = float(fill_value)
                elif not len(known):
                    raise TrainrunError(f"{where}: column {name!r} has no value in the train split to take the "
                                        f"{missing} of", key="data.missing",
                                        fix="data.missing=constant, or leave the column out with data.features=[...]")
                else:
                    fill = float(np.mean(known) if missing == "mean" else np.median(known))
            columns.append({"name": name, "kind": "number", "fill": fill, "categories": []})
            continue
        text = cell_text(values)
        if missing == "refuse" and np.any(text == ""):
            raise _empty_cells(name, text == "", where)
        seen = np.unique(text[train_idx])
        seen = seen[seen != ""]
        if len(seen) > min(MAX_CATEGORIES, max(20, len(train_idx) // 2)):
            raise TrainrunError(
                f"{where}: text column {name!r} has {len(seen):,} distinct values in {len(train_idx):,} training rows: "
                "too many to one-hot encode (an identifier or free text?)",
                key="data.features",
                fix=f"name it data.id={name} (kept out of the features, written to predictions.csv), or leave it "
                "out with data.features=[...]",
            )
        columns.append({"name": name, "kind": "category", "fill": None, "categories": seen.tolist()})
    return Encoding(columns, missing)
