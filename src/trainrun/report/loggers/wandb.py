"""``logger=wandb``: a Weights & Biases run (the ``wandb`` extra; ``WANDB_MODE=offline`` needs no account)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from trainrun.errors import TrainrunError
from trainrun.files import atomic_write_text
from trainrun.report.loggers.base import NOT_METRICS, TIMINGS, charted, is_scalar, missing_extra, test_values


class WandbLogger:
    """One Weights & Biases run per trainrun run: the flat config, one history row per epoch
    (the values of ``metrics.csv``; x axis ``epoch``, timings under ``time/``), the summary's
    status, objective and best values, and ``tags``.

    Its files live under ``<run>/wandb``. ``WANDB_MODE=offline`` (or ``logger.wandb.mode=offline``)
    needs no account and no network; ``wandb sync <run>/wandb/offline-run-*`` uploads it later. A
    resumed run (``resume=...``) continues the same W&B run (its id is kept in ``<run>/wandb_run_id``).
    """

    def __init__(self, run_dir: str | Path, project: str = "trainrun", entity: str | None = None,
                 name: str | None = None, mode: Literal["online", "offline", "disabled", "shared"] | None = None,
                 resume: bool = False,
                 tags: list[str] | None = None) -> None:
        try:
            import wandb
        except ImportError as err:
            raise missing_extra("wandb", "wandb", err) from None
        self.run_dir = Path(run_dir)
        id_file = self.run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=project, entity=entity, name=name or self.run_dir.name, dir=str(self.run_dir),
                id=run_id, resume="allow" if run_id else None, mode=mode, tags=[str(t) for t in tags or []],
                # trainrun prints its own progress; wandb's console capture would wrap its streams
                settings=wandb.Settings(console="off"),
            )
        except Exception as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise TrainrunError(
                f"could not start a W&B run: {type(err).__name__}: {lines[0][:300] if lines else ''}",
                key="logger.wandb",
                fix="log in (wandb login, or WANDB_API_KEY), or keep the run on disk with WANDB_MODE=offline "
                "(or logger.wandb.mode=offline) and `wandb sync` it later",
            ) from None
        atomic_write_text(id_file, self.run.id + "\n")
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        self.exit_code = 1  # until a summary says the run completed

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_epoch(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.run.log({**charted(row), "epoch": int(row["epoch"]), "step": int(row["step"])})

    def log_summary(self, summary: dict[str, Any]) -> None:
        best = summary.get("best") or {}
        objective = summary.get("objective") or {}
        values: dict[str, Any] = {f"best/{k}": v for k, v in best.items()
                                  if k not in (*NOT_METRICS, *TIMINGS) and is_scalar(v)}
        values.update(test_values(summary))
        values.update(status=summary.get("status"), best_epoch=summary.get("best_epoch"))
        if is_scalar(objective.get("value")):
            values["objective"] = objective["value"]
        self.run.summary.update(values)
        self.exit_code = 0 if summary.get("status") in ("completed", "stopped early") else 1

    def close(self) -> None:
        self.run.finish(exit_code=self.exit_code)
