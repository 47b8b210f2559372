"""The ``predict`` command: a trained run's model on new data, ``predictions.csv`` in a run
folder of its own (``predictions/<date>/<time>/``, with ``.hydra/`` and ``predict.log``).

``predict run=<run folder or checkpoint> data=csv data.path=new.csv [checkpoint=best|last|<file>]
[device=<option>] [trust=[mymodule]]``

The new data needs no target: a CSV file without the target column, an NPZ archive with only
``X``, a user source returning ``X`` alone (or ``(X, None)``, or a Dataset of samples). It is
prepared with what the *training* split taught (:mod:`trainrun.data.fitted`, saved in the
checkpoint): its feature statistics, its columns by name (CSV), its sample shape and its label
encoding, never with statistics of the new rows (a 3-row or a shifted file would get others).
Keys the new data config leaves unset (``data.target``, ``data.features`` of a CSV file) are the
training run's. The model is rebuilt from the checkpoint's config under the trust rule
(:mod:`trainrun.commands.trained`).

``predictions.csv``: ``row`` (the sample's position in the new data, 0-based), ``target`` when
the data has one, then ``prediction`` (the original label, or the value in the target's units)
and, for classification, ``p_<label>`` per class.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from trainrun.build import contracts
from trainrun.build.devices import autocast_factory, resolve_device
from trainrun.build.instantiate import build_from_config
from trainrun.build.losses import LossPlan
from trainrun.build.setup import DATA_KEYS, build_model
from trainrun.commands.trained import Trained, open_trained
from trainrun.config.choices import text
from trainrun.data import fitted as fitted_data
from trainrun.data.prepare import DataInfo
from trainrun.errors import TrainrunError, exits_are_errors, phase
from trainrun.files import PREDICT_JSON, PREDICTIONS_CSV, atomic_write_json, atomic_write_text

log = logging.getLogger("trainrun")


# --------------------------------------------------------------------------- the table


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


# --------------------------------------------------------------------------- the new data


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
    if same and "features" in node and node.features is None and info.features:
        node.features = list(info.features)
    missing = [str(k) for k in node if OmegaConf.is_missing(node, k) and str(k) != "target"]
    if missing:
        raise TrainrunError(f"predict needs data.{missing[0]}", key=f"data.{missing[0]}",
                            fix=f"e.g. predict run=<run folder> data=csv data.{missing[0]}=new.csv")
    if "target" in node and OmegaConf.is_missing(node, "target"):
        node.target = ""  # a CSV source of another run's kind: no target column
    return node


def read_new_data(node: DictConfig, info: DataInfo) -> tuple[np.ndarray, Any | None]:
    """Call the data source (``require_target=False`` where it takes it) and return the samples
    as the model takes them, and the targets as the data has them (None without)."""
    source = build_from_config(node, "data", what="reading the new data", consumed=DATA_KEYS,
                               require_target=False)
    with phase(f"preparing the data that data._target_={node._target_} returned", "data._target_",
               section=node, fix="a source for predict returns X, (X, y), (X, None) or a Dataset"):
        if isinstance(source, torch.utils.data.Dataset):
            return _dataset_samples(source, info)
        if isinstance(source, tuple | list):
            if len(source) != 2:
                raise TrainrunError(f"the data source returned {len(source)} items; predict takes X, "
                                    "(X, y) or (X, None)", key="data._target_")
            x, y = source
        else:
            x, y = source, None
        x = fitted_data.features(x, info)
        if y is not None:
            y = np.asarray(y.numpy() if isinstance(y, torch.Tensor) else y)
            if len(y) != len(x):
                raise TrainrunError(f"the data source returned {len(x)} samples and {len(y)} targets",
                                    key="data._target_")
        return x, y


def _dataset_samples(dataset: Any, info: DataInfo) -> tuple[np.ndarray, Any | None]:
    """A user Dataset's samples (``x`` or ``(x, y)`` each), shaped as in training."""
    xs, ys = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        x, y = item if isinstance(item, tuple | list) and len(item) == 2 else (item, None)
        xs.append(np.asarray(torch.as_tensor(x), dtype=np.float32).reshape(info.in_shape))
        ys.append(y)
    y_out = None if all(y is None for y in ys) else np.asarray([np.asarray(y) for y in ys])
    return np.stack(xs), y_out


def raw_targets(y: np.ndarray) -> dict[str, list[Any]]:
    """The new data's own targets, as read (labels or values), for the ``target`` column(s)."""
    y = y.reshape(len(y), -1) if y.ndim > 1 else y.reshape(len(y), 1)
    values = [[v.item() if isinstance(v, np.generic) else v for v in column] for column in y.T]
    if len(values) == 1:
        return {"target": values[0]}
    return {f"target_{j}": column for j, column in enumerate(values)}


# --------------------------------------------------------------------------- the command


def model_outputs(trained: Trained, info: DataInfo, x: np.ndarray, device_cfg: Any,
                  batch_size: int) -> tuple[torch.Tensor, LossPlan]:
    """The trained model (rebuilt, weights loaded, eval mode) on ``x``, in batches."""
    cfg = trained.config
    model, plan, _, _ = build_model(cfg, info)
    trained.weights_into(model)
    device = resolve_device(text((device_cfg or cfg.device).type), 0)
    autocast = autocast_factory(str(cfg.trainer.precision), device)
    model.to(device).eval()
    outs = []
    with torch.no_grad():
        for batch in torch.as_tensor(x).split(batch_size):
            with autocast():
                outs.append(model(batch.to(device)).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0), plan


def fitted_info(trained: Trained) -> DataInfo:
    info = trained.fitted
    if info is None:
        raise TrainrunError(
            f"{trained.file} holds no training statistics (it was written before trainrun saved "
            "them), so new data cannot be scaled as the training data was",
            key="run", fix="evaluate it on its own data, or train again (resume=auto adds them to "
            "its next checkpoint)")
    return info


@exits_are_errors("predict")
def predict(cfg: DictConfig) -> dict[str, Any]:
    """Load, prepare the new data with the training's statistics, run the model, write
    ``predictions.csv`` and ``predict.json``; returns the report."""
    if OmegaConf.is_missing(cfg, "run"):
        raise TrainrunError("predict needs run=<run folder or checkpoint file>", key="run",
                            fix="e.g. predict run=outputs/2026-11-24/08-30-00-123456 data=csv data.path=new.csv")
    if cfg.data is None or OmegaConf.is_missing(cfg.data, "_target_"):
        raise TrainrunError("predict needs the new data: data=<option> and its keys", key="data",
                            fix="e.g. predict run=<run folder> data=csv data.path=new.csv "
                            "(or data=npz data.path=new.npz, or data._target_=mymodule.load)")
    started = time.perf_counter()
    trained = open_trained(str(cfg.run), str(cfg.checkpoint), list(cfg.trust), replaced=("data",))
    info = fitted_info(trained)
    node = data_config(cfg.data, trained.config.data, info)
    x, y = read_new_data(node, info)
    out, plan = model_outputs(trained, info, x, cfg.device, int(node.get("batch_size") or 256))

    table: dict[str, list[Any]] = {"row": list(range(len(x)))}
    if y is not None:
        table.update(raw_targets(y))
    table.update(prediction_columns(out, info, plan))
    folder = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    atomic_write_text(folder / PREDICTIONS_CSV, csv_text(table))
    report = {
        "checkpoint": str(trained.file.resolve()),
        "run_dir": str(trained.folder.resolve()),
        "epoch": trained.saved.get("state", {}).get("epoch"),
        "step": trained.saved.get("state", {}).get("step"),
        "rows": len(x),
        "columns": list(table),
        "task": info.task,
        "data": OmegaConf.to_container(node, resolve=True, enum_to_str=True),
        "standardized_with": "the training split's statistics" if info.x_mean is not None else None,
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(folder / PREDICT_JSON, report)
    log.info(f"predicted {len(x)} rows with {trained.file} ({trained.where})")
    log.info(f"wrote {folder / PREDICTIONS_CSV}")
    return report
