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

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from trainrun.build.devices import autocast_factory, resolve_device
from trainrun.build.instantiate import build_from_config
from trainrun.build.losses import LossPlan
from trainrun.build.setup import DATA_KEYS, build_model
from trainrun.commands.predictions import csv_text, data_config, fitted_info, prediction_columns
from trainrun.commands.trained import Trained, open_trained
from trainrun.config.choices import text
from trainrun.data import fitted as fitted_data
from trainrun.data.prepare import DataInfo
from trainrun.errors import TrainrunError, phase
from trainrun.files import PREDICT_JSON, PREDICTIONS_CSV, atomic_write_json, atomic_write_text

log = logging.getLogger("trainrun")


# --------------------------------------------------------------------------- the new data


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


def run(cfg: DictConfig) -> dict[str, Any]:
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
