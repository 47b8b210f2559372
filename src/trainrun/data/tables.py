"""Tables: the columns of a tabular file chosen by name (Parquet files are read in ``parquet_file.py``).

:func:`select_columns` decides which columns are the features and which is the target, for CSV
(``csv_file.py``) and Parquet alike, and refuses every way names can be wrong or ambiguous
(duplicates, the target among the features, unnamed or missing columns, a first line of data
where the names belong). Parquet goes through pyarrow (an optional extra), reading only the
columns asked for, converted one at a time into the float32 feature matrix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from trainrun.errors import TrainrunError

DELIMITERS = (",", ";", "\t", "|")  # what delimiter=auto looks for in the header, in this order


def existing_file(path: str, key: str, kinds: Sequence[str] = ()) -> Path:
    """``path`` as a file that exists; an empty path, a folder or a missing file is one paragraph."""
    if not str(path).strip():  # Path("") is the current folder: say what was given instead
        raise TrainrunError(f"{key} is empty", key=key,
                            fix=f"name the data file, e.g. {key}=my_data{kinds[0] if kinds else '.csv'}")
    file = Path(path).expanduser()
    if file.is_dir():
        inside = sorted(p.name for p in file.iterdir() if p.suffix.lower() in kinds)
        shown = f"; it holds {', '.join(inside[:5])}" + (" ..." if len(inside) > 5 else "") if inside else ""
        raise TrainrunError(
            f"{key}={path!r} is a folder, not a file{shown}",
            key=key,
            fix=f"name the file itself, e.g. {key}={file / inside[0]}" if inside
            else f"name a {'/'.join(kinds) or 'data'} file inside it",
        )
    if not file.is_file():
        raise TrainrunError(
            f"file not found: {str(file)!r} (looked in {Path.cwd()})",
            key=key,
            fix="give an absolute path, or a path relative to the folder you run train from",
        )
    return file


def lacks_trained_column(where: str, name: str, header: Sequence[str], trained: Sequence[str]) -> TrainrunError:
    """New data (``evaluate``, ``predict``) without a column the model was trained on: the file
    is what to change, not ``data.features`` (the run's columns)."""
    return TrainrunError(f"{where} has no feature column {name!r}; its columns are {list(header)}",
                         key="data.path",
                         fix=f"give a file holding every column the model was trained on ({', '.join(trained)}), "
                         "in any order")


def select_columns(
    header: list[str], target: str, features: Sequence[str] | None, where: str, *,
    first: str | None = None, sep: str = ",", require_target: bool = True,
) -> tuple[list[int], int | None]:
    """Which columns are the features and which is the target, by name; every way the names
    can be ambiguous or wrong is refused (duplicates, the target among the features, unnamed
    or missing columns). ``first``/``sep``: the CSV header line as read, to say what went wrong.
    ``require_target=False`` (``predict``): a file without the target column gives ``None`` for it."""
    has_target = target in header
    if (not has_target and require_target) or (first is not None and _looks_like_data(header)):
        raise _missing_target(header, target, where, first, sep)
    if features is not None and len(features) == 0:  # [] is not null: it names no column at all
        raise TrainrunError(f"data.features=[] names no feature column, so the model would see nothing of {where}",
                            key="data.features",
                            fix="list the columns to learn from, or data.features=null for every column but the target")
    names = list(features) if features else [h for h in header if h != target]
    if features:
        for name in names:
            if name not in header:
                if not require_target:
                    raise lacks_trained_column(where, name, header, names)
                raise TrainrunError(f"{where} has no feature column {name!r}; its columns are {header}",
                                    key="data.features", fix="list columns of the file in data.features")
        if target in names:
            raise TrainrunError(
                f"data.features lists the target column {target!r}: the model would be given the "
                "answer it is trained to predict",
                key="data.features", fix=f"remove {target!r} from data.features",
            )
        twice = [n for n, c in Counter(names).items() if c > 1]
        if twice:
            raise TrainrunError(f"data.features lists {twice[0]!r} {Counter(names)[twice[0]]} times",
                                key="data.features", fix="list each feature column once")
    elif "" in names:
        number = header.index("") + 1
        raise TrainrunError(
            f"{where}: column {number} has no name in the header (an index column, as pandas' "
            "to_csv writes?); it would be used as a feature",
            key="data.features",
            fix="name it in the header, write the file without it (pandas: to_csv(path, index=False)), "
            "or list the features: data.features=[...]",
        )
    if not names:
        raise TrainrunError(f"{where} has no column besides the target {target!r}: there are no features",
                            key="data.path", fix="a header row naming the feature columns and the target")
    counts = Counter(header)
    for name in [target, *names] if has_target else names:
        if counts[name] > 1:
            where_ = [str(i + 1) for i, h in enumerate(header) if h == name]
            raise TrainrunError(
                f"{where} has {counts[name]} columns named {name!r} (columns {', '.join(where_)}): "
                "which one is meant cannot be told",
                key="data.path",
                fix=f"give each column its own name in the header (e.g. {name}_2)",
            )
    return [header.index(n) for n in names], header.index(target) if has_target else None


def _missing_target(header: list[str], target: str, where: str, first: str | None, sep: str) -> TrainrunError:
    if first is not None and _looks_like_data(header):
        return TrainrunError(
            f"{where} has no header row: its first line holds numbers ({first[:60]!r}), not the "
            "column names (trainrun would take that line for names and lose it as a sample)",
            key="data.path",
            fix=f"add a first line naming the {len(header)} columns, e.g. "
            f"{sep.join([*(f'x{i}' for i in range(1, len(header))), 'label'])!r} with data.target=label",
        )
    if first is not None and len(header) == 1:
        other = next((d for d in DELIMITERS if d != sep and d in first), None)
        if other is not None:
            return TrainrunError(
                f"{where} is not separated by {sep!r}: its header {first[:60]!r} is one column "
                f"when split at {sep!r}; it holds {other!r} between the names",
                key="data.delimiter", fix=f"add \"data.delimiter='{other}'\" (quoted so: for the shell and "
                "for Hydra)" if other != "\t" else "add data.delimiter=tab",
            )
    return TrainrunError(f"{where} has no column {target!r}; its columns are {header}",
                         key="data.target", fix="set data.target to one of the columns above")


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_data(header: list[str]) -> bool:
    """A first line of numbers that are not plain column numbers (pandas names columns 0, 1, ...
    when it has no names): values like 0.25 or -3 are a data row, not a header."""
    return all(is_number(h) for h in header) and not all(h.isdigit() for h in header)


def id_column(header: list[str], id: str | None, target: str, where: str) -> int | None:
    """The position of ``data.id`` in the header (None without one); missing or the target: refused."""
    if not id:
        return None
    if id not in header:
        raise TrainrunError(f"{where} has no id column {id!r}; its columns are {header}", key="data.id",
                            fix="set data.id to one of the columns above, or data.id=null")
    if id == target:
        raise TrainrunError(f"data.id={id!r} is the target column", key="data.id",
                            fix="name the column that identifies each row, not the one to predict")
    return header.index(id)
