"""What evaluate, predict and export-model share about a trained run's model: its outputs as
the columns of ``predictions.csv`` (labels decoded, probabilities only when the output is one),
the data config of new data (the training run's keys where the user gave none), and the training
split's statistics, which new data must be prepared with."""

from __future__ import annotations

import copy
import csv
import io
import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from trainrun.build import contracts
from trainrun.build.losses import LossPlan
from trainrun.commands.trained import Trained
from trainrun.data.identity import training_columns
from trainrun.data.parquet_file import file_columns
from trainrun.data.prepare import DataInfo
from trainrun.data.tables import lacks_trained_column
from trainrun.errors import TrainrunError

log = logging.getLogger("trainrun")


def prediction_columns(out: torch.Tensor, info: DataInfo, plan: LossPlan) -> dict[str, list[Any]]:
    """The model's outputs as predictions: the value in the target's units (regression), or the
    predicted label and each class's probability (from the kind of output the loss received:
    raw scores, probabilities or log-probabilities), labels as in the training data."""
    out = out.float().cpu()
    columns: dict[str, list[Any]] = {}
    if info.task == "regression":
        out = contracts.as_values(out, plan.output, plan.contract.targets)  # BCE on soft labels: probabilities
        if info.y_mean is not None and info.y_std is not None:  # back to the target's units
            out = out * torch.tensor(info.y_std) + torch.tensor(info.y_mean)
        width = out.shape[1]
        for j in range(width):
            columns[f"prediction_{j}" if width > 1 else "prediction"] = out[:, j].tolist()
        return columns
    labels = info.classes or list(range(info.num_classes or 2))
    probs = contracts.probabilities(out, plan.output)  # the kind the loss received (build/contracts.py)
    columns["prediction"] = [labels[i] for i in probs.argmax(dim=1).tolist()]
    for j, label in enumerate(labels[: probs.shape[1]]):
        columns[f"p_{label}"] = probs[:, j].tolist()
    return columns


def decode_targets(y: torch.Tensor, info: DataInfo, plan: LossPlan) -> dict[str, list[Any]]:
    """Prepared targets (class ids, standardized values) back as the data had them."""
    y = y.cpu()
    if info.task == "regression":
        y = y.float().reshape(len(y), -1)
        if info.y_mean is not None and info.y_std is not None:
            y = y * torch.tensor(info.y_std) + torch.tensor(info.y_mean)
        return {f"target_{j}" if y.shape[1] > 1 else "target": y[:, j].tolist() for j in range(y.shape[1])}
    labels = info.classes or list(range(info.num_classes or 2))
    ids = y.long().tolist() if plan.targets == "index" else (y.reshape(len(y), -1)[:, 0] > 0.5).long().tolist()
    return {"target": [labels[i] for i in ids]}


def csv_text(table: dict[str, list[Any]]) -> str:
    """Columns (same length each) as CSV text with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table)
    writer.writerows(zip(*table.values(), strict=True))
    return buffer.getvalue()


def data_config(user: DictConfig, stored: DictConfig, info: DataInfo) -> DictConfig:
    """The user's data config, with what it leaves unset taken from the training run's when it
    names the same source (``data.target`` of a CSV file), and a CSV file's feature columns
    picked by the names training used, so a new file's column order or extra columns (an id)
    change nothing."""
    node = copy.deepcopy(user)  # typed as composed: build reads the schema's declared keys
    same = str(node.get("_target_")) == str(stored.get("_target_"))
    for key in node:
        if same and OmegaConf.is_missing(node, key) and key in stored and not OmegaConf.is_missing(stored, key):
            node[key] = stored[key]
    header = file_columns(node)  # a table's column names, or None
    if "features" in node and info.features:  # a table: the training's columns, by name, in its order
        node.features = training_columns(node.features, info.features)
        absent = [c for c in info.features if header is not None and c not in header]
        if absent:
            raise lacks_trained_column(f"data.path={node.path!r}", absent[0], header or [], info.features)
    elif "features" in node:  # trained on arrays (a bundled set, .npz, .npy): no names to pick them by
        log.info("the run's training data had no column names: the new file's feature columns are taken in "
                 "their order, as the training data's were (data.features=[...] picks and orders them)")
    coded = [c["name"] for c in info.encoding.columns if c["kind"] == "category"] if info.encoding else []
    if "categorical" in node and node.categorical is None and (stored.get("categorical") or coded):
        # the columns training one-hot encoded are read as text, as written (007, a 9-digit code),
        # even where every cell of the new file looks like a number
        node.categorical = list(dict.fromkeys([*(stored.get("categorical") or []), *coded]))
    if "id" in node and node.id is None and info.id_name:  # the training run's id column, if this file has it
        node.id = info.id_name if header is not None and info.id_name in header else None
    missing = [str(k) for k in node if OmegaConf.is_missing(node, k) and str(k) != "target"]
    if missing:
        raise TrainrunError(f"predict needs data.{missing[0]}", key=f"data.{missing[0]}",
                            fix=f"e.g. predict run=<run folder> data=csv data.{missing[0]}=new.csv")
    # ``in`` is False for a missing (``???``) value: ask the keys, not the node
    if "target" in list(node) and OmegaConf.is_missing(node, "target"):
        node.target = ""  # a CSV source of another run's kind: no target column
    return node


def fitted_info(trained: Trained) -> DataInfo:
    info = trained.fitted
    if info is None:
        raise TrainrunError(
            f"{trained.file} holds no training statistics (it was written before trainrun saved "
            "them), so new data cannot be scaled as the training data was",
            key="run", fix="evaluate it on its own data, or train again (resume=auto adds them to "
            "its next checkpoint)")
    return info
