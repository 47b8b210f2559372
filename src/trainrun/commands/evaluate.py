"""The ``evaluate`` command: score a trained run's checkpoint on one split.

``evaluate run=<run folder or checkpoint file> [checkpoint=best|last|<file>] [split=val|test|train]
[data=<option> data.<key>=...] [device=<option>] [predictions=true] [out=<folder>] [trust=[...]]``

The model is rebuilt from the config stored *in the checkpoint* (the exact config that produced
those weights; ``.hydra/config.yaml`` of a resumed run may carry harmless later changes), under
the trust rule of :mod:`trainrun.commands.trained`, through the same :func:`trainrun.build.setup.build` as
``train``, so the data is split and standardized exactly as in training and the loss and metric
are those of :func:`trainrun.engine.loop.eval_epoch`. Evaluating ``best.pt`` on ``val``
therefore reproduces the ``val_loss`` the run logged for that epoch, and ``split=test`` what
``train`` scored at its end (:func:`test_after_fit`, ``trainer.test_after_fit``). New data
(``data=...``) is split by its own config but scaled and encoded with the training split's
statistics saved in the checkpoint (:mod:`trainrun.data.fitted`).

Results go to ``<run folder>/eval/<checkpoint>_<split>/``: ``eval.json`` and, with
``predictions=true``, ``predictions.csv``; ``out=<folder>`` puts them elsewhere.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from trainrun.build.metrics import build_metrics
from trainrun.build.setup import Batches, Setup, build, build_model
from trainrun.commands.predictions import csv_text, data_config, decode_targets, fitted_info, prediction_columns
from trainrun.commands.trained import open_trained
from trainrun.config.choices import text
from trainrun.data.batches import whole
from trainrun.data.prepare import DataInfo
from trainrun.engine.checkpoint import find, load
from trainrun.engine.history import rows_of
from trainrun.engine.loop import eval_epoch
from trainrun.errors import TrainrunError, phase
from trainrun.files import CHECKPOINTS, EVAL_JSON, PREDICTIONS_CSV, atomic_write_json, atomic_write_text

log = logging.getLogger("trainrun")


def run_config(train_cfg: DictConfig, cfg: DictConfig, fitted: DataInfo | None = None) -> DictConfig:
    """The training config stored in the checkpoint, with what evaluate changes: the user's
    data/device choice (keys it leaves unset and the CSV columns as in training), the whole
    split in order, one process, no compilation."""
    if cfg.data is not None:
        train_cfg.data = data_config(cfg.data, train_cfg.data, fitted) if fitted else cfg.data
    if cfg.device is not None:
        train_cfg = OmegaConf.merge(train_cfg, {"device": cfg.device})  # typed: DeviceConfig
    train_cfg.data.shuffle = False  # predictions in split order, also for split=train
    trainer = train_cfg.trainer
    for key, value in (("compile", False), ("devices", 1), ("limit_train_batches", None),
                       ("limit_val_batches", None)):
        if key in trainer:
            trainer[key] = value
    train_cfg.resume = None
    return train_cfg


# --------------------------------------------------------------------------- predictions


def predictions_csv(setup: Setup, batches: Batches, split: str) -> str:
    """One row per sample: its row in the source data, the target, the prediction and, for
    classification, the probability of each class (labels as in the source data)."""
    model = setup.model
    model.eval()
    outs, ys = [], []
    with torch.no_grad():
        for x, y in batches.epoch():
            with setup.autocast():
                outs.append(model(x).float().cpu())
            ys.append(y.cpu())
    out, y = torch.cat(outs), torch.cat(ys)
    rows = setup.info.rows.get(split)
    rows = rows.tolist() if rows is not None and len(rows) == len(out) else list(range(len(out)))
    table: dict[str, list[Any]] = {"row": rows}
    table.update(decode_targets(y, setup.info, setup.loss))
    table.update(prediction_columns(out, setup.info, setup.loss))
    return csv_text(table)


# --------------------------------------------------------------------------- train's last step


def test_after_fit(setup: Setup, run_dir: Path) -> dict[str, Any] | None:
    """``train``'s last step when the data has a test split (``trainer.test_after_fit``): score
    ``best.pt`` (else ``last.pt``; with ``checkpoint.enabled=false``, the weights in memory) on the
    test split exactly as ``evaluate run=<run folder> split=test`` does: the model without DDP or
    compilation, the whole split in order, in one process, so the numbers are the same. Under DDP
    rank 0 scores alone and the other ranks return None; under FSDP rank 0 scores a whole copy
    (every rank first gathers the shards into it when no checkpoint holds them)."""
    if setup.test_batches is None:
        return None
    folder = run_dir / CHECKPOINTS
    found = (find(folder, "best") or find(folder, "last")) if setup.settings.save_checkpoints else None
    sharded_model = setup.world_size > 1 and setup.strategy == "fsdp"
    in_memory = None
    if found is None and sharded_model:  # a collective: every rank gives its shards to rank 0
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        in_memory = get_model_state_dict(setup.raw_model, options=StateDictOptions(full_state_dict=True,
                                                                                  cpu_offload=True))
    if setup.rank != 0:
        return None
    model = build_model(setup.cfg, setup.info)[0].to(setup.device) if sharded_model else setup.raw_model
    epoch = None
    if found is not None:  # the writer has finished: train closed it before the summary
        saved = load(found, key="trainer.test_after_fit", trust=True)  # this run's own; builds nothing
        if (saved.get("layout") or {}).get("sharded"):
            from trainrun.engine.sharded import load_into  # DCP: seconds to import, only when used

            load_into(model, None, found, {"model": saved["model_names"]})
        else:
            model.load_state_dict(saved["model"])
        epoch = saved["state"]["epoch"]
    elif in_memory is not None:
        model.load_state_dict(in_memory)
    metrics = build_metrics(list(setup.cfg.get("metrics") or []), setup.loss, setup.info, setup.device, sync=False)
    alone = dataclasses.replace(setup, model=model, raw_model=model, world_size=1, rank=0, metrics=metrics)
    batches = whole(setup.test_batches, int(setup.cfg.data.batch_size))
    values = eval_epoch(alone, batches)
    name = found.name if found is not None else None
    return {**values, "checkpoint": name or "final weights (checkpoint.enabled=false)", "epoch": epoch,
            "samples": int(batches.num_samples)}


# --------------------------------------------------------------------------- the command


def run(cfg: DictConfig) -> dict[str, Any]:
    """Load, rebuild, evaluate, write ``eval.json`` (and ``predictions.csv``); returns the
    report written to ``eval.json``."""
    if OmegaConf.is_missing(cfg, "run"):
        raise TrainrunError("evaluate needs run=<run folder or checkpoint file>", key="run",
                            fix="e.g. evaluate run=outputs/2026-11-24/08-30-00-123456 split=val")
    started = time.perf_counter()
    split = text(cfg.split)
    new_data = cfg.data is not None
    trained = open_trained(str(cfg.run), str(cfg.checkpoint), list(cfg.trust),
                           replaced=("data",) if new_data else ())
    file, folder, saved = trained.file, trained.folder, trained.saved
    # New data is scaled and encoded as the training data was (the checkpoint's statistics);
    # the run's own data is rebuilt by its config, which computes the same statistics again.
    fitted = fitted_info(trained) if new_data else None
    train_cfg = run_config(trained.config, cfg, fitted)
    setup = build(train_cfg, training=False, fitted=fitted)
    trained.weights_into(setup.raw_model, new_data=new_data)
    batches = {"train": setup.train_batches, "val": setup.val_batches, "test": setup.test_batches}[split]
    if batches is None:
        fraction = "val_fraction" if split == "val" else "test_fraction"
        raise TrainrunError(
            f"the run's data has no {split} split (data.{fraction}="
            f"{train_cfg.data[fraction]}); a split cannot be carved out after training, since "
            "its samples may have been trained on",
            key="split",
            fix=f"evaluate split=val or split=train (or give the next training run data.{fraction}=0.2)"
            if split == "test" else "evaluate split=train or split=test",
        )
    values = eval_epoch(setup, batches)

    state = saved.get("state", {})
    data_choice = None
    if cfg.data is not None and HydraConfig.initialized():
        data_choice = HydraConfig.get().runtime.choices.get("data")
    out = Path(cfg.out).expanduser() if cfg.out else \
        folder / "eval" / "_".join(filter(None, [file.stem, split, data_choice]))
    report: dict[str, Any] = {
        "checkpoint": str(file.resolve()),
        "run_dir": str(folder.resolve()),
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "split": split,
        "samples": int(batches.num_samples),
        **values,
        "metric": setup.loss.metric,
        "data": OmegaConf.to_container(train_cfg.data, resolve=True, enum_to_str=True),
        "data_changed": cfg.data is not None,
        "device": str(setup.device),
        "seconds": time.perf_counter() - started,
    }
    try:  # the rows (older checkpoints), or which rows of history.jsonl beside it
        rows = rows_of(file, state.get("history", []), key="run")
    except TrainrunError:  # a checkpoint copied without its history: no row to compare with
        rows = []
    logged = next((r for r in rows if r.get("epoch") == state.get("epoch")), None)
    if logged is not None:
        report["logged"] = logged  # the epoch's row of metrics.csv, for comparison

    written = [EVAL_JSON, *([PREDICTIONS_CSV] if cfg.predictions else [])]
    with phase(f"writing {' and '.join(written)} into {str(out)!r}", "out",
               fix="give out= a folder that can be written (or leave it out: <run folder>/eval/...)"):
        atomic_write_json(out / EVAL_JSON, report)
        if cfg.predictions:
            atomic_write_text(out / PREDICTIONS_CSV, predictions_csv(setup, batches, split))

    where = f"epoch {state.get('epoch')}, step {state.get('step')}"
    log.info(f"evaluated {file} ({where}) on {split}: {report['samples']} samples")
    log.info("  " + "  ".join(f"{k} {v:.6g}" for k, v in values.items()))
    log.info(f"wrote {', '.join(str(out / w) for w in written)}")
    return report
