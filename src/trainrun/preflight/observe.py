"""What the model gives, seen on the first batch: the kind of its output observed (or a
declared kind checked against it), and the chain model -> head -> loss of
:mod:`trainrun.build.contracts` checked again with it. Building refused what fits no model;
this refuses what does not fit this one."""

from __future__ import annotations

from typing import Any

import torch

from trainrun.build import contracts
from trainrun.build.contracts import LOG_PROBABILITIES, PROBABILITIES, RANGES, SCORES, WORDS
from trainrun.config.choices import text
from trainrun.errors import TrainrunError
from trainrun.preflight.common import split_head


def whole_split(setup: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    batches = setup.train_batches
    if hasattr(batches, "x") and hasattr(batches, "y"):
        return batches.x, batches.y, "the training split"
    return x, y, "the first batch"


def check_composition(setup: Any, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor,
                      inner: torch.Tensor | None) -> None:
    """The chain model -> head -> loss (``build/contracts.py``) with the model's real output: a
    declared kind must hold, an undeclared one is observed and must fit the head and the loss;
    a regression output whose kind bounds it must reach the targets."""
    plan, body = setup.loss, split_head(setup)[0]
    body_out = inner if inner is not None else out
    said = text(setup.cfg.model.get("output", "auto"))
    if said != "auto":
        check_declared(said, body_out)
    declared = contracts.model_kind(body, said)
    if declared is None:
        seen, evidence = observe(body_out)
        if seen == PROBABILITIES and body_out.shape[1] == 1 and not stays_bounded(body, x):
            seen = SCORES  # raw scores that happen to lie in [0, 1] on this batch
        if seen is not None:
            contracts.compose(seen, plan.head_name, plan.contract, task=setup.info.task,
                              model_name=type(body).__name__, evidence=evidence)
    if plan.contract.targets == contracts.VALUES and (declared is not None or plan.head_name != "none"):
        _, ys, where = whole_split(setup, y, y)
        if len(ys) and ys.is_floating_point():
            check_range(plan.output, float(ys.min()), float(ys.max()), head=plan.head_name, where=where)


def stays_bounded(body: Any, x: torch.Tensor) -> bool:
    """Whether one output column stays inside [0, 1] for far-off inputs too (``1000 * randn``, no
    gradients, eval mode): a sigmoid does, raw scores that only happened to lie in [0, 1] on the
    first batch do not. A model that fails on such inputs gives no evidence."""
    was = [(m, m.training) for m in body.modules()]
    try:
        body.eval()
        with torch.no_grad():
            probe = body(torch.randn_like(x) * 1000)
    except Exception:
        return False
    finally:
        for m, mode in was:
            m.training = mode
    return isinstance(probe, torch.Tensor) and bool(((probe >= 0) & (probe <= 1)).all())


def observe(out: torch.Tensor) -> tuple[str | None, str]:
    """The kind a batch of outputs shows, with the evidence in words; None when it shows none
    but raw scores could be anything (a single column below 0)."""
    o = out.detach().float()
    if o.ndim != 2 or not len(o):
        return None, ""
    lo, hi = float(o.min()), float(o.max())
    if o.shape[1] > 1:
        if lo >= 0 and hi <= 1 and float((o.sum(dim=1) - 1).abs().max()) < 1e-3:
            return PROBABILITIES, " (observed: each row of the first batch is >= 0 and sums to 1)"
        if hi <= 1e-4 and float(torch.logsumexp(o, dim=1).abs().max()) < 1e-3:
            return LOG_PROBABILITIES, " (observed: each row's exp sums to 1)"
        return SCORES, ""
    if lo >= 0 and hi <= 1:
        return PROBABILITIES, f" (observed: every value of the first batch lies in [0, 1], {lo:.3g} to {hi:.3g})"
    return SCORES, ""


def check_declared(declared: str, out: torch.Tensor, key: str = "model.output") -> None:
    """A declared kind must be true of the output: probabilities in [0, 1], log-probabilities
    <= 0 (rows summing to 1 after exp when there are several columns)."""
    if declared == SCORES:
        return
    seen, _ = observe(out)
    lo, hi = RANGES[declared]
    o = out.detach().float()
    inside = float(o.min()) >= lo - 1e-6 and float(o.max()) <= hi + 1e-6
    if inside and (o.ndim != 2 or o.shape[1] == 1 or seen == declared):
        return
    raise TrainrunError(
        f"{key}={declared}, but the model's first outputs range from {float(o.min()):.4g} to "
        f"{float(o.max()):.4g}" + ("" if inside else f", outside [{lo:g}, {hi:g}]")
        + ("" if not inside or o.ndim != 2 else " and the rows are not distributions"),
        key=key, fix=f"declare what forward returns ({key}=scores for raw scores), or end the model "
        "with the matching layer (nn.Softmax(dim=1), nn.LogSoftmax(dim=1), nn.Sigmoid())")


def check_range(kind: str, low: float, high: float, *, head: str, where: str) -> None:
    """Values targets must lie within what the composed output can reach."""
    lo, hi = RANGES[kind]
    if low >= lo and high <= hi:
        return
    raise TrainrunError(
        f"the output is {WORDS[kind]} (within [{lo:g}, {hi:g}]) but {where}'s targets range from "
        f"{low:.4g} to {high:.4g}: no prediction could reach them",
        key="loss.head" if head != "none" else "model.output",
        fix="loss.head=none (raw outputs for regression)" if head != "none" else
        "model.output=scores, or targets inside the output's range (data.standardize=false)")
