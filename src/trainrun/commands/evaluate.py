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
``predictions=true``, ``predictions.csv``; with ``report=true`` (classification) the per-class
precision, recall, F1 and confusion matrix as ``report.txt`` and ``confusion.png`` (also in
``eval.json``, and printed); ``out=<folder>`` puts them elsewhere.
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
from trainrun.build.setup import Setup, build, build_model
from trainrun.commands.predictions import csv_text, data_config, decode_targets, fitted_info, prediction_columns
from trainrun.commands.trained import open_trained
from trainrun.config.choices import text
from trainrun.data.batches import Batches, whole
from trainrun.data.identity import differences, with_stored_paths
from trainrun.data.prepare import DataInfo
from trainrun.engine.checkpoint import find, load
from trainrun.engine.history import rows_of
from trainrun.engine.loop import eval_epoch
from trainrun.errors import TrainrunError, exits_are_errors, phase
from trainrun.files import (
    CHECKPOINTS,
    CONFUSION_PNG,
    EVAL_JSON,
    PREDICTIONS_CSV,
    REPORT_TXT,
    atomic_write_json,
    atomic_write_text,
)
from trainrun.owner import output_owner
from trainrun.report.classes import class_report, report_text, write_confusion
from trainrun.report.record import run_record, training_record

log = logging.getLogger("trainrun")


def run_config(train_cfg: DictConfig, cfg: DictConfig, fitted: DataInfo | None = None) -> DictConfig:
    """The training config stored in the checkpoint, with what evaluate changes: the user's
    data/device choice (keys it leaves unset and the CSV columns as in training), the whole
    split in order, one process, no compilation."""
    if cfg.data is not None:
        train_cfg.data = data_config(cfg.data, train_cfg.data, fitted) if fitted else cfg.data
    if cfg.device is not None:
        merged = OmegaConf.merge(train_cfg, {"device": cfg.device})  # typed: DeviceConfig
        assert isinstance(merged, DictConfig)  # a DictConfig merged into stays one
        train_cfg = merged
    train_cfg.data.shuffle = False  # predictions in split order, also for split=train
    trainer = train_cfg.trainer
    for key, value in (("compile", False), ("devices", 1), ("limit_train_batches", None),
                       ("limit_val_batches", None)):
        if key in trainer:
            trainer[key] = value
    train_cfg.resume = None
    return train_cfg


# --------------------------------------------------------------------------- predictions


def outputs(setup: Setup, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs and the prepared targets of the whole split, in order, on the CPU."""
    model = setup.model
    model.eval()
    outs, ys = [], []
    with torch.no_grad():
        for x, y in batches.epoch():
            with setup.autocast():
                outs.append(model(x).float().cpu())
            ys.append(y.cpu())
    return torch.cat(outs), torch.cat(ys)


def class_ids(out: torch.Tensor, y: torch.Tensor, setup: Setup) -> tuple[list[int], list[int]]:
    """True and predicted class ids, as the run's metric decides them (argmax, or the binary
    threshold of the loss's output)."""
    if setup.loss.targets == "index":
        return y.long().reshape(-1).tolist(), out.argmax(dim=1).tolist()
    threshold = setup.loss.threshold
    return (y.reshape(len(y), -1)[:, 0] > 0.5).long().tolist(), (out[:, 0] > threshold).long().tolist()


def per_class(setup: Setup, out: torch.Tensor, y: torch.Tensor, folder: Path, title: str) -> dict[str, Any]:
    """``report=true``: precision, recall, F1 per class and the confusion matrix, written as
    ``report.txt`` and ``confusion.png`` into ``folder``; returns the numbers for eval.json."""
    if setup.info.task == "regression":
        raise TrainrunError("report=true is a per-class report, but this run is a regression", key="report",
                            fix="leave report=false; eval.json holds the RMSE (predictions=true the values)")
    labels = setup.info.classes or list(range(setup.info.num_classes or 2))
    report = class_report(*class_ids(out, y, setup), labels)
    text = report_text(report)
    atomic_write_text(folder / REPORT_TXT, text)
    note = write_confusion(report, folder / CONFUSION_PNG, title)
    if note:
        log.info(note)
    return report


def predictions_csv(setup: Setup, batches: Batches, split: str,
                    computed: tuple[torch.Tensor, torch.Tensor] | None = None) -> str:
    """One row per sample: its row in the source data, the target, the prediction and, for
    classification, the probability of each class (labels as in the source data)."""
    out, y = computed or outputs(setup, batches)
    positions = setup.info.rows.get(split)
    rows = positions.tolist() if positions is not None and len(positions) == len(out) else list(range(len(out)))
    table: dict[str, list[Any]] = {}
    ids = setup.info.ids
    if ids is not None and len(ids) > max(rows, default=-1):  # data.id: the key to join the predictions by
        table[setup.info.id_name or "id"] = ids[rows].tolist()
    table["row"] = rows
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

            load_into(model, None, found, {"model": saved["model_names"]}, key="trainer.test_after_fit",
                      ids=saved["layout"].get("shard_ids"))
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


@exits_are_errors("evaluate")
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
                           unbuilt=("data",) if new_data else ())
    file, folder, saved = trained.file, trained.folder, trained.saved
    # New data is scaled and encoded as the training data was (the checkpoint's statistics);
    # the run's own data is rebuilt by its config, which computes the same statistics again.
    fitted = fitted_info(trained) if new_data else None
    train_cfg = run_config(trained.config, cfg, fitted)
    fitted_before = trained.fitted
    trained_on = fitted_before.identity if fitted_before is not None else None
    if not new_data:  # the file trained on, by its absolute path: not a relative one resolved here
        with_stored_paths(train_cfg.data, trained_on)
    setup = build(train_cfg, training=False, fitted=fitted)
    differs = differences(trained_on, setup.info.identity) if trained_on and setup.info.identity else []
    if differs:
        log.warning(f"{'the data given' if new_data else 'the run data'} is not the data the model was trained "
                    f"on ({trained_on.short() if trained_on else '?'}): " + "; ".join(differs))
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
        "data_identity": setup.info.identity.to_dict() if setup.info.identity else None,
        "trained_on": trained_on.to_dict() if trained_on else None,
        "data_differs": differs,
        "device": str(setup.device),
        "seconds": time.perf_counter() - started,
        "record": run_record(training=training_record(folder)),  # and the training run's
    }
    try:  # the rows (older checkpoints), or which rows of history.jsonl beside it
        rows = rows_of(file, state.get("history", []), key="run")
    except TrainrunError:  # a checkpoint copied without its history: no row to compare with
        rows = []
    logged = next((r for r in rows if r.get("epoch") == state.get("epoch")), None)
    if logged is not None:
        report["logged"] = logged  # the epoch's row of metrics.csv, for comparison

    asked = bool(cfg.get("report"))
    written = [EVAL_JSON, *([PREDICTIONS_CSV] if cfg.predictions else []),
               *([REPORT_TXT, CONFUSION_PNG] if asked else [])]
    computed = outputs(setup, batches) if cfg.predictions or asked else None
    owner = output_owner(out, "evaluate", None if cfg.out else folder, source=file, home=folder)
    with phase(f"writing {' and '.join(written)} into {str(out)!r}", "out",
               fix="give out= a folder that can be written (or leave it out: <run folder>/eval/...)"):
        owner.claim()  # its own folder only: no links, no other run's folder, one writer
        try:
            if asked and computed is not None:  # report=true: per class, as text and a picture
                report["report"] = per_class(setup, computed[0], computed[1], out,
                                             title=f"{file.name} (epoch {state.get('epoch')}) on {split}")
            atomic_write_json(out / EVAL_JSON, report)
            if cfg.predictions:
                atomic_write_text(out / PREDICTIONS_CSV, predictions_csv(setup, batches, split, computed))
        finally:
            owner.release()

    where = f"epoch {state.get('epoch')}, step {state.get('step')}"
    log.info(f"evaluated {file} ({where}) on {split}: {report['samples']} samples")
    log.info("  " + "  ".join(f"{k} {v:.6g}" for k, v in values.items()))
    if asked:
        log.info(report_text(report["report"]).rstrip())
    log.info(f"wrote {', '.join(str(out / w) for w in written)}")
    return report
