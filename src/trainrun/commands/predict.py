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

import csv
import io
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from trainrun.build.devices import autocast_factory, resolve_device
from trainrun.build.instantiate import build_from_config
from trainrun.build.losses import LossPlan
from trainrun.build.setup import DATA_KEYS, build_model
from trainrun.commands.predictions import data_config, fitted_info, prediction_columns
from trainrun.commands.trained import TRAINING_ONLY, Trained, open_trained
from trainrun.config.choices import text
from trainrun.data import new_data
from trainrun.data.prepare import DataInfo
from trainrun.errors import TrainrunError, exits_are_errors, phase
from trainrun.files import PREDICT_JSON, PREDICTIONS_CSV, atomic_write, atomic_write_json
from trainrun.report.record import run_record, training_record

log = logging.getLogger("trainrun")


# --------------------------------------------------------------------------- the new data




def raw_targets(y: np.ndarray) -> dict[str, list[Any]]:
    """The new data's own targets, as read (labels or values), for the ``target`` column(s)."""
    y = y.reshape(len(y), -1) if y.ndim > 1 else y.reshape(len(y), 1)
    values = [[v.item() if isinstance(v, np.generic) else v for v in column] for column in y.T]
    if len(values) == 1:
        return {"target": values[0]}
    return {f"target_{j}": column for j, column in enumerate(values)}


# --------------------------------------------------------------------------- the command


@exits_are_errors("predict")
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
    trained = open_trained(str(cfg.run), str(cfg.checkpoint), list(cfg.trust), unbuilt=("data", *TRAINING_ONLY))
    info = fitted_info(trained)
    node = data_config(cfg.data, trained.config.data, info)
    source = build_from_config(node, "data", what="reading the new data", consumed=DATA_KEYS,
                               require_target=False)
    model, plan, device, autocast = loaded_model(trained, info, cfg.device)
    batch_size = int(node.get("batch_size") or 256)
    folder = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
    written: dict[str, Any] = {"rows": 0, "columns": []}

    def write(f: IO[bytes]) -> None:  # one chunk read, predicted and written at a time
        out_text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(out_text, lineterminator="\n")
        with phase(f"preparing the data that data._target_={node._target_} returned", "data._target_",
                   section=node, fix="a source for predict returns X, (X, y), (X, None) or a Dataset"):
            for chunk in new_data.chunks(source, info):
                table = chunk_table(chunk, info, plan, model, device, autocast, batch_size)
                if not written["columns"]:
                    written["columns"] = list(table)
                    writer.writerow(table)
                writer.writerows(zip(*table.values(), strict=True))
                written["rows"] += len(chunk.x)
        out_text.flush()
        out_text.detach()

    atomic_write(folder / PREDICTIONS_CSV, write)
    report = {
        "checkpoint": str(trained.file.resolve()),
        "run_dir": str(trained.folder.resolve()),
        "epoch": trained.saved.get("state", {}).get("epoch"),
        "step": trained.saved.get("state", {}).get("step"),
        "rows": written["rows"],
        "columns": written["columns"],
        "task": info.task,
        "data": OmegaConf.to_container(node, resolve=True, enum_to_str=True),
        "standardized_with": "the training split's statistics" if info.x_mean is not None else None,
        "unseen_categories": info.unseen,
        "trained_on": info.identity.to_dict() if info.identity else None,
        "seconds": time.perf_counter() - started,
        "record": run_record(training=training_record(trained.folder)),  # and the training run's
    }
    atomic_write_json(folder / PREDICT_JSON, report)
    log.info(f"predicted {written['rows']} rows with {trained.file} ({trained.where})")
    if info.unseen:
        log.info("rows with a category the training data never had (encoded as none of its categories): "
                 + ", ".join(f"{k} {v}" for k, v in info.unseen.items()))
    log.info(f"wrote {folder / PREDICTIONS_CSV}")
    return report


def loaded_model(trained: Trained, info: DataInfo,
                 device_cfg: DictConfig | None) -> tuple[torch.nn.Module, LossPlan, torch.device, Any]:
    """The trained model rebuilt, its weights loaded, on its device, in eval mode."""
    cfg = trained.config
    model, plan, _, _ = build_model(cfg, info)
    trained.weights_into(model)
    device = resolve_device(text((device_cfg or cfg.device).type), 0)
    return model.to(device).eval(), plan, device, autocast_factory(str(cfg.trainer.precision), device)


def chunk_table(chunk: new_data.Chunk, info: DataInfo, plan: LossPlan, model: torch.nn.Module,
                device: torch.device, autocast: Callable[[], AbstractContextManager[Any]],
                batch_size: int) -> dict[str, list[Any]]:
    """One chunk's rows of ``predictions.csv``: its id and row, its own targets, the predictions."""
    outs = []
    with torch.no_grad():
        for batch in torch.as_tensor(chunk.x).split(batch_size):
            with autocast():
                outs.append(model(batch.to(device)).float().cpu())
    out = torch.cat(outs) if outs else torch.zeros(0)
    table: dict[str, list[Any]] = {}
    if chunk.ids is not None:
        table[info.id_name or "id"] = chunk.ids.tolist()
    table["row"] = list(range(chunk.first, chunk.first + len(chunk.x)))
    if chunk.y is not None:
        table.update(raw_targets(np.asarray(chunk.y)))
    table.update(prediction_columns(out, info, plan))
    return table
