"""The ``evaluate`` command: score a trained run's checkpoint on one split.

``evaluate run=<run folder or checkpoint file> [checkpoint=best|last|<file>] [split=val|test|train]
[data=<option> data.<key>=...] [device=<option>] [predictions=true] [out=<folder>]``

The model is rebuilt from the config stored *in the checkpoint* (the exact config that produced
those weights; ``.hydra/config.yaml`` of a resumed run may carry harmless later changes) through
the same :func:`trainrun.build.build` as ``train``, so the data is split and standardized exactly
as in training and the loss and metric are those of :func:`trainrun.loop.evaluate`. Evaluating
``best.pt`` on ``val`` therefore reproduces the ``val_loss`` the run logged for that epoch.

Results go to ``<run folder>/eval/<checkpoint>_<split>/``: ``eval.json`` and, with
``predictions=true``, ``predictions.csv``; ``out=<folder>`` puts them elsewhere.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from trainrun.errors import TrainrunError

log = logging.getLogger("trainrun")


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


@dataclass
class EvaluateConfig:
    """The primary config of ``evaluate`` (``configs/evaluate.yaml`` builds on it)."""

    # A run folder (holding checkpoints/) or a checkpoint file.
    run: str = MISSING
    # With a run folder: best (checkpoints/best.pt), last (checkpoints/last.pt), or a file name
    # or path. Ignored when ``run`` is a file.
    checkpoint: str = "best"
    split: Split = Split.val
    # Also write predictions.csv (one row per sample of the split).
    predictions: bool = False
    # Folder for eval.json / predictions.csv; null: <run folder>/eval/<checkpoint>_<split>.
    out: str | None = None
    # ``data=<option>`` replaces the run's data config (new data; see docs/checkpoints.md);
    # ``device=<option>`` replaces its device. Null keeps the run's own.
    data: Any = None
    device: Any = None


def register() -> None:
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


register()


# --------------------------------------------------------------------------- locating


def locate(run: str, checkpoint: str) -> tuple[Path, Path]:
    """``(checkpoint file, run folder)`` for ``run=`` and ``checkpoint=``."""
    path = Path(run).expanduser()
    if not path.exists():
        raise TrainrunError(
            f"run={run!r}: no such folder or file (looked in {Path.cwd()})",
            key="run",
            fix="give a run folder (e.g. outputs/2026-11-24/08-30-00-123456) or a checkpoint file",
        )
    if path.is_file():
        folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return path, folder
    names = {"best": "best.pt", "last": "last.pt"}
    name = names.get(checkpoint, checkpoint)
    file = Path(name).expanduser()
    if not file.is_absolute():
        file = path / "checkpoints" / name
    if not file.is_file():
        found = sorted(p.name for p in (path / "checkpoints").glob("*.pt"))
        have = f"; checkpoints/ holds {', '.join(found)}" if found else \
            " and it has no checkpoints/ files (was it run with checkpoint.enabled=false?)"
        raise TrainrunError(
            f"run={run!r}: no checkpoint {str(file)!r}{have}",
            key="checkpoint",
            fix="choose one with checkpoint=best|last|<file>" if found else
            "point run= at a run folder that holds checkpoints/best.pt or last.pt",
        )
    return file, path


def typed_config(saved: dict[str, Any]) -> DictConfig:
    """The plain config stored in a checkpoint, typed again by the schemas ``train`` composed it
    with (the checkpoint names them; older ones are matched by ``_target_``). The types matter:
    building leaves out a preset's declared keys that its ``_target_`` does not take."""
    from trainrun import config as schemas

    base = OmegaConf.structured(schemas.TrainConfig)
    OmegaConf.set_struct(base, False)  # a checkpoint may hold keys a newer schema dropped
    cfg = OmegaConf.merge(base, saved["config"])
    names = saved.get("schemas") or {}
    fallback = {"model": schemas.ModelConfig, "loss": schemas.LossConfig,
                "optim": schemas.OptimConfig, "scheduler": schemas.SchedulerConfig,
                "data": schemas.DataConfig}
    for key, node in saved["config"].items():
        if key not in fallback or not isinstance(node, dict):
            continue
        # Only trainrun's own schema classes, looked up by name: a checkpoint names no code.
        kind = getattr(schemas, str(names.get(key)), None)
        if not dataclasses.is_dataclass(kind):
            same_target = [c for c in schemas.SCHEMAS.get(key, {}).values()
                           if getattr(c, "_target_", MISSING) == node.get("_target_")]
            kind = same_target[0] if same_target else fallback[key]
        section = OmegaConf.structured(kind)
        OmegaConf.set_struct(section, False)  # keys a user added (+model.width=3) stay
        cfg[key] = OmegaConf.merge(section, node)
    return cfg


def run_config(saved: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The training config stored in the checkpoint, with what evaluate changes: the user's
    data/device choice, the whole split in order, one process, no compilation."""
    train_cfg = typed_config(saved)
    if cfg.data is not None:
        train_cfg.data = cfg.data
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


def predictions_csv(run: Any, batches: Any, split: str) -> str:
    """One row per sample: its row in the source data, the target, the prediction and, for
    classification, the probability of each class (labels as in the source data)."""
    import torch

    plan, info = run.loss, run.info
    model = run.model
    model.eval()
    outs, ys = [], []
    with torch.no_grad():
        for x, y in batches.epoch():
            with run.autocast():
                outs.append(model(x).float().cpu())
            ys.append(y.cpu())
    out, y = torch.cat(outs), torch.cat(ys)
    rows = info.rows.get(split)
    rows = rows.tolist() if rows is not None and len(rows) == len(out) else list(range(len(out)))
    table: dict[str, list[Any]] = {"row": rows}

    if info.task == "regression":
        if info.y_mean is not None and info.y_std is not None:  # back to the target's units
            mean, std = torch.tensor(info.y_mean), torch.tensor(info.y_std)
            out, y = out * std + mean, y.float() * std + mean
        width = out.shape[1]
        for j in range(width):
            suffix = f"_{j}" if width > 1 else ""
            table[f"target{suffix}"] = y[:, j].tolist()
            table[f"prediction{suffix}"] = out[:, j].tolist()
    else:
        labels = info.classes or list(range(info.num_classes or 2))
        if plan.targets == "index":  # loss=nll puts a log-softmax head on the model
            probs = out.exp() if isinstance(plan.head, torch.nn.LogSoftmax) else out.softmax(dim=1)
            target_ids = y.long().tolist()
        else:  # one output: the positive class (BCE: a probability, BCE-with-logits: a logit)
            p = out[:, 0].sigmoid() if plan.threshold == 0.0 else out[:, 0]
            probs = torch.stack([1 - p, p], dim=1)
            target_ids = (y[:, 0] > 0.5).long().tolist()
        table["target"] = [labels[i] for i in target_ids]
        table["prediction"] = [labels[i] for i in probs.argmax(dim=1).tolist()]
        for j, label in enumerate(labels[: probs.shape[1]]):
            table[f"p_{label}"] = probs[:, j].tolist()

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(table)
    writer.writerows(zip(*table.values(), strict=True))
    return text.getvalue()


# --------------------------------------------------------------------------- the command


def evaluate_run(cfg: DictConfig) -> dict[str, Any]:
    """Load, rebuild, evaluate, write ``eval.json`` (and ``predictions.csv``); returns the
    report written to ``eval.json``."""
    from trainrun import checkpoint as ckpt
    from trainrun.atomic import atomic_write_json, atomic_write_text
    from trainrun.build import build
    from trainrun.loop import evaluate

    if OmegaConf.is_missing(cfg, "run"):
        raise TrainrunError("evaluate needs run=<run folder or checkpoint file>", key="run",
                            fix="e.g. evaluate run=outputs/2026-11-24/08-30-00-123456 split=test")
    started = time.perf_counter()
    split = str(getattr(cfg.split, "value", cfg.split))
    file, folder = locate(str(cfg.run), str(cfg.checkpoint))
    saved = ckpt.load(file, key="run")
    train_cfg = run_config(saved, cfg)
    run = build(train_cfg)
    run.module.load_state_dict(saved["model"])
    batches = {"train": run.train_batches, "val": run.val_batches, "test": run.test_batches}[split]
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
    values = evaluate(run, batches)

    state = saved.get("state", {})
    data_choice = None
    if cfg.data is not None:
        from hydra.core.hydra_config import HydraConfig

        data_choice = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else None
    out = Path(cfg.out).expanduser() if cfg.out else \
        folder / "eval" / "_".join(filter(None, [file.stem, split, data_choice]))
    report: dict[str, Any] = {
        "checkpoint": str(file.resolve()),
        "run_dir": str(folder.resolve()),
        "epoch": state.get("epoch"),
        "step": state.get("step"),
        "split": split,
        "samples": int(batches.num_samples),
        **{("loss" if k == "loss" else k): v for k, v in values.items()},
        "metric": run.loss.metric,
        "data": OmegaConf.to_container(train_cfg.data, resolve=True, enum_to_str=True),
        "data_changed": cfg.data is not None,
        "device": str(run.device),
        "seconds": time.perf_counter() - started,
    }
    logged = next((r for r in state.get("history", []) if r.get("epoch") == state.get("epoch")), None)
    if logged is not None:
        report["logged"] = logged  # the epoch's row of metrics.csv, for comparison

    atomic_write_json(out / "eval.json", report)
    written = ["eval.json"]
    if cfg.predictions:
        atomic_write_text(out / "predictions.csv", predictions_csv(run, batches, split))
        written.append("predictions.csv")

    where = f"epoch {state.get('epoch')}, step {state.get('step')}"
    log.info(f"evaluated {file} ({where}) on {split}: {report['samples']} samples")
    log.info("  " + "  ".join(f"{k} {v:.6g}" for k, v in values.items()))
    log.info(f"wrote {', '.join(str(out / w) for w in written)}")
    return report
