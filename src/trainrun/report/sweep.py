"""A sweep read from disk: each job folder's ``summary.json`` (written by the job itself, or by
the launcher for a job the cluster killed), and the sweep's ``summary.csv``, table and picture.

Read from the folders, not from the launcher's return values (which some launchers never bring
back), so the summary is the same whatever the launcher and sweeper.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from omegaconf import OmegaConf

from trainrun.config.choices import direction
from trainrun.errors import TrainrunError
from trainrun.files import SUMMARY_JSON, SWEEP_CSV, SWEEP_PNG, atomic_write_json, atomic_write_text
from trainrun.report import echo
from trainrun.report.record import commit_text, data_text
from trainrun.report.sweep_plot import plot_sweep

# Statuses of a job that ran to its end (its objective counts).
OK = ("completed", "stopped early")
# Statuses of a job with nothing left to do: running the sweep again skips it (a pruned trial was
# stopped on purpose by the study's pruner; its objective does not rank it with the others).
FINISHED = (*OK, "pruned")
# Row keys that are bookkeeping, not metrics.
_NOT_METRICS = ("epoch", "step", "seconds", "samples_per_s")


# --------------------------------------------------------------------------- one job's record


def first_line(err: BaseException | str) -> str:
    """The first line of an error, with its type unless it is a :class:`TrainrunError`."""
    if isinstance(err, str):
        lines = err.strip().splitlines()
        return lines[0] if lines else ""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(err, TrainrunError):
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A job folder's ``summary.json``, or None when absent or unreadable."""
    try:
        value = json.loads((run_dir / SUMMARY_JSON).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def update_summary(run_dir: Path, **values: Any) -> dict[str, Any]:
    """Merge ``values`` into the job's ``summary.json`` (created if absent), atomically."""
    summary = read_summary(run_dir) or {"run_dir": str(run_dir)}
    summary.update(values)
    atomic_write_json(run_dir / SUMMARY_JSON, summary)
    return summary


def mark_failed(run_dir: Path, error: str, **values: Any) -> dict[str, Any]:
    """Record in ``summary.json`` that the job failed, with the error's first line."""
    return update_summary(run_dir, status="failed", error=first_line(error), **values)


def finite_or_none(value: Any) -> float | None:
    """What a sweeper gets: a finite float, or None (Optuna then records a failed trial)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None



# --------------------------------------------------------------------------- the sweep


def find_jobs(sweep_dir: Path) -> Iterator[Path]:
    """Job folders under ``sweep_dir``: those holding ``.hydra/hydra.yaml`` (written before the
    task starts) or a ``summary.json`` (a failure recorded from outside the job)."""
    for root, dirs, files in os.walk(sweep_dir):
        if root != str(sweep_dir) and (
            SUMMARY_JSON in files or os.path.isfile(os.path.join(root, ".hydra", "hydra.yaml"))
        ):
            yield Path(root)
            dirs[:] = []
        dirs[:] = sorted(d for d in dirs if d not in (".hydra", ".submitit", "checkpoints"))


def _job_identity(job_dir: Path, summary: dict[str, Any] | None) -> tuple[int | None, list[str]]:
    """The job's number and overrides, from its ``.hydra/hydra.yaml`` (else its summary)."""
    num, overrides = (summary or {}).get("job"), (summary or {}).get("overrides") or []
    try:
        hydra_cfg = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra
        num = OmegaConf.select(hydra_cfg, "job.num", throw_on_resolution_failure=False)
        overrides = OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False) or []
    except Exception:
        pass
    return (int(num) if isinstance(num, int) else None), [str(o) for o in overrides]


def _metrics(row: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (row or {}).items() if k not in _NOT_METRICS}


def job_row(job_dir: Path) -> dict[str, Any]:
    """One row of the sweep summary, from the job folder alone."""
    summary = read_summary(job_dir)
    num, overrides = _job_identity(job_dir, summary)
    trial = (summary or {}).get("trial")
    if isinstance(trial, int):  # an Optuna trial: its folder is its number
        num = trial
    row: dict[str, Any] = {"job": num, "overrides": overrides, "run_dir": str(job_dir),
                           "tags": [str(t) for t in (summary or {}).get("tags") or []],
                           "commit": commit_text((summary or {}).get("record")),
                           "data": data_text((summary or {}).get("record"))}
    if summary is None:
        row.update(status="failed", objective=None, objective_name=None, seconds=None,
                   error="no summary.json: the job was killed or crashed before it finished "
                   f"(see {job_dir.name}/*.log)")
        row.update(final={}, best={}, test={}, best_epoch=None, epochs=None)
        return row
    objective = summary.get("objective") or {}
    status = str(summary.get("status") or "failed")
    # Only a job that ran to its end has an objective (a failed one's partial best is not one; a
    # pruned one's is shown, ranked after the finished ones).
    value = finite_or_none(objective.get("value")) if status in FINISHED else None
    error = summary.get("error") if status not in FINISHED else None
    if status == "pruned":
        error = summary.get("stop_reason")
    if status in OK and value is None:
        status = "failed"
        error = f"objective {objective.get('name')}={objective.get('value')} is not finite"
    row.update(
        status=status, objective=value, objective_name=objective.get("name"),
        seconds=summary.get("total_seconds"), error=error,
        final=_metrics(summary.get("final")), best=_metrics(summary.get("best")),
        test={k: v for k, v in (summary.get("test") or {}).items()
              if k not in ("epoch", "samples", "checkpoint")},
        best_epoch=summary.get("best_epoch"), epochs=summary.get("epochs_run"),
    )
    return row


def sort_rows(rows: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    """Jobs with an objective first, best first; then the others by job number."""
    sign = 1.0 if direction == "minimize" else -1.0

    def key(row: dict[str, Any]) -> tuple[int, float, int]:
        ranked = row["status"] in FINISHED and row["objective"] is not None
        number = row["job"] if row["job"] is not None else sys.maxsize
        group = 0 if row["status"] in OK else 1  # pruned ones after the finished ones
        return (group, sign * row["objective"], number) if ranked else (2, 0.0, number)

    return sorted(rows, key=key)


def varying(rows: list[dict[str, Any]]) -> set[str]:
    """The override keys whose values differ between jobs (what the sweep swept)."""
    values: dict[str, set[str]] = {}
    for row in rows:
        seen = dict(o.split("=", 1) if "=" in o else (o, "") for o in row["overrides"])
        for key in set(values) | set(seen):
            values.setdefault(key, set()).add(seen.get(key, "<unset>"))
    return {k for k, v in values.items() if len(v) > 1}


def swept_columns(rows: list[dict[str, Any]]) -> dict[str, str]:
    """One column per swept key (``optim.lr``, ``model.hidden``), in the order the overrides name
    them: column name -> override key (a key that clashes with a built-in column is prefixed)."""
    swept = varying(rows)
    keys = dict.fromkeys(o.split("=", 1)[0] for r in rows for o in r["overrides"])
    return {(f"override:{k}" if k in BUILT_IN else k): k for k in keys if k in swept}


BUILT_IN = ("rank", "job", "status", "objective_name", "objective", "overrides", "tags", "best_epoch", "commit", "data",
            "epochs", "seconds", "run_dir", "error")


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """``summary.csv``: one row per job, already sorted; one column per swept key, after the
    overrides, holding each job's value as written on the command line."""
    metric_names = list(dict.fromkeys(k for r in rows for k in (*r["final"], *r["best"])))
    swept = swept_columns(rows)
    columns = ["rank", "job", "status", "objective_name", "objective", "overrides", *swept, "tags",
               "best_epoch", "epochs",
               *[f"final_{k}" for k in metric_names if any(k in r["final"] for r in rows)],
               *[f"best_{k}" for k in metric_names if any(k in r["best"] for r in rows)],
               *[f"test_{k}" for k in dict.fromkeys(k for r in rows for k in r.get("test", {}))],
               "seconds", "commit", "data", "run_dir", "error"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for rank, row in enumerate(rows, 1):
        flat = {k: v for k, v in row.items() if k not in ("final", "best", "test", "overrides", "tags")}
        flat["rank"] = rank
        flat["overrides"] = " ".join(row["overrides"])
        given = dict(o.split("=", 1) if "=" in o else (o, "") for o in row["overrides"])
        flat.update({column: given.get(key) for column, key in swept.items()})
        flat["tags"] = ",".join(row.get("tags") or [])
        flat.update({f"final_{k}": v for k, v in row["final"].items()})
        flat.update({f"best_{k}": v for k, v in row["best"].items()})
        flat.update({f"test_{k}": v for k, v in (row.get("test") or {}).items()})
        writer.writerow({k: "" if v is None else v for k, v in flat.items()})
    return out.getvalue()


def _fmt(value: object) -> str:
    if value is None:
        return ""
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def _fmt_seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(rows: list[dict[str, Any]], sweep_dir: Path, objective: str,
                file: IO[str] | None = None) -> None:
    """The sweep's rich table, best first."""
    from rich.table import Table

    swept = varying(rows)
    interrupted = sum(r["status"] == "interrupted" for r in rows)  # a signal's stop: saved, resumable
    failed = sum(r["status"] not in FINISHED for r in rows) - interrupted
    pruned = sum(r["status"] == "pruned" for r in rows)
    title = (f"sweep: {len(rows)} jobs, {len(rows) - failed - pruned - interrupted} done, "
             + (f"{pruned} pruned, " if pruned else "") + (f"{interrupted} interrupted, " if interrupted else "")
             + f"{failed} failed; "
             f"sorted by {objective} ({direction(objective)}), best first")
    table = Table(title=title, title_justify="left")
    tagged = any(r.get("tags") for r in rows)  # a tags column only when a job has tags
    names = ("#", "job", "overrides", *(("tags",) if tagged else ()), "status", objective,
             "best epoch", "seconds", "error")
    for name in names:
        text = name in ("overrides", "tags", "error")
        table.add_column(name, justify="left" if text or name == "status" else "right",
                         overflow="fold", no_wrap=not text)
    for rank, row in enumerate(rows, 1):
        shown = [o for o in row["overrides"] if o.split("=", 1)[0] in swept] or row["overrides"]
        status = row["status"]
        style = "red" if status not in FINISHED else ("green" if rank == 1 else "dim" if status == "pruned" else "")
        tags = (",".join(row.get("tags") or []),) if tagged else ()
        table.add_row(str(rank), _fmt(row["job"]), " ".join(shown), *tags, status, _fmt(row["objective"]),
                      _fmt(row["best_epoch"]), _fmt_seconds(row["seconds"]),
                      _shorten(row.get("error") or "", 70), style=style)
    console = echo.console(file or sys.stdout, width=max(100, echo.console().width))
    console.print(table)
    console.print(f"summary: {sweep_dir / SWEEP_CSV}")


def summarize(sweep_dir: Path, objective: str, *, table: bool = True,
              plot: bool = False) -> list[dict[str, Any]]:
    """Write ``summary.csv`` in ``sweep_dir`` (and print the table, and draw ``sweep.png``);
    returns the sorted rows."""
    rows = [job_row(d) for d in find_jobs(sweep_dir)]
    rows = sort_rows(rows, direction(objective))
    atomic_write_text(sweep_dir / SWEEP_CSV, summary_csv(rows))
    if table and rows:
        print_table(rows, sweep_dir, objective)
    if plot and rows:
        try:
            note = plot_sweep(rows, sweep_dir / SWEEP_PNG,
                              direction=direction(objective))
        except Exception as err:  # a picture never fails the sweep
            note = f"sweep.png not written: {first_line(err)}"
        print(note or f"plot: {sweep_dir / 'sweep.png'}")
    return rows
