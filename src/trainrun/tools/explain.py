"""``train explain=true``: the binding report.

Answers the question every newcomer asks, "how does ``loss.backward()`` reach the model, and how
does ``optimizer.step()`` know the gradients?", on the run's own built objects. It shows the
model's layers, the tensors the optimizer holds (the very same objects as
``model.parameters()``), the loss with its head and target rule, then takes exactly one
training step and shows each parameter's ``.grad`` before ``backward`` (None), its norm after
``backward``, the parameter's change after ``step`` checked against the optimizer's rule for a
first step (``-lr * grad`` for plain SGD), and ``.grad`` after ``zero_grad``. Nothing is written
and no training follows.
"""

from __future__ import annotations

import math
import sys
from typing import IO, TYPE_CHECKING, Any

import torch
from torch import nn
from torch.autograd.graph import Node

from trainrun.build.setup import Setup
from trainrun.preflight.common import dtype_text, shape_text, split_head
from trainrun.preflight.run import first_batch
from trainrun.report import echo

if TYPE_CHECKING:  # rich is imported when the report is printed
    from rich.console import JustifyMethod

# Optimizer settings not worth a beginner's attention in the report.
QUIET_SETTINGS = ("params", "foreach", "maximize", "capturable", "differentiable", "fused",
                  "decoupled_weight_decay", "initial_lr")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, tuple | list):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return str(v)


def first_step_rule(optimizer: torch.optim.Optimizer) -> tuple[str, Any] | None:
    """For a fresh SGD optimizer (the teaching case): the formula of its first step and a
    function ``(p_before, grad) -> expected change``. None for any other optimizer: its rule is
    torch's, and the report shows what the step did without re-deriving it."""
    if type(optimizer) is not torch.optim.SGD or len(optimizer.state) or len(optimizer.param_groups) != 1:
        return None
    g = optimizer.param_groups[0]
    if g.get("maximize"):
        return None
    lr, wd = float(g["lr"]), float(g.get("weight_decay", 0.0))
    momentum, nesterov = float(g["momentum"]), bool(g["nesterov"])
    # The momentum buffer starts as the gradient itself, so a first step is -lr·grad (times
    # 1+momentum with Nesterov).
    factor = 1 + momentum if nesterov and momentum else 1.0
    text = "-lr·grad" if not wd else "-lr·(grad + weight_decay·p)"
    if factor != 1:
        text = f"-lr·(1+momentum)·{text[4:] if wd else 'grad'}"
    return text, lambda p, d: -lr * factor * (d + wd * p)


def _backward_path(loss: torch.Tensor, names: dict[int, str]) -> tuple[list[str], int]:
    """The longest chain of autograd nodes from ``loss.grad_fn`` to a parameter's
    ``AccumulateGrad``, and the number of AccumulateGrad nodes (one per parameter reached)."""
    depth: dict[Any, tuple[int, Any]] = {}
    leaves: set[int] = set()

    def longest(fn: Node) -> int:
        if fn in depth:
            return depth[fn][0]
        best, nxt = 0, None
        if hasattr(fn, "variable"):
            leaves.add(id(fn.variable))
        for child, _ in fn.next_functions:
            if child is not None:
                d = longest(child)
                if d + 1 > best:
                    best, nxt = d + 1, child
        depth[fn] = (best, nxt)
        return best

    path: list[str] = []
    fn = loss.grad_fn
    if fn is None:
        return path, 0
    longest(fn)
    while fn is not None:
        label = type(fn).__name__
        if hasattr(fn, "variable"):
            label = f"AccumulateGrad({names.get(id(fn.variable), '?')})"
        path.append(label)
        fn = depth[fn][1]
    return path, len(leaves)


def explain(setup: Setup, file: IO[str] | None = None) -> dict[str, Any]:
    """Print the binding report for ``run`` after one training step; returns a summary."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    module, optimizer, criterion = setup.raw_model, setup.optimizer, setup.criterion
    summary: dict[str, Any] = {"status": "explained", "signal": None,
               "objective": {"name": setup.cfg.objective, "value": math.nan}}
    if setup.rank != 0:
        return summary
    file = file or sys.stdout
    console = echo.console(file, width=None if file.isatty() else 110)  # no markup: names are the user's
    named = list(module.named_parameters())
    names = {id(p): n for n, p in named}
    total = sum(p.numel() for _, p in named)

    console.rule(Text.assemble(("trainrun explain", "bold"), ": one training step, and how backward() "
                               "and step() find each other"), style="dim")
    # -- the model
    trainable = sum(p.numel() for _, p in named if p.requires_grad)
    layers = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title_justify="left",
                   title=Text.assemble(("model", "bold"), f": {type(split_head(setup)[0]).__name__}, {total:,} "
                                       f"parameters in {len(named)} tensors "
                                       f"({'all' if trainable == total else f'{trainable:,}'} trainable)"))
    for col in ("layer", "module", "parameters"):
        layers.add_column(col, justify="right" if col == "parameters" else "left")
    for name, m in module.named_modules():
        if any(True for _ in m.children()):
            continue
        count = sum(p.numel() for p in m.parameters(recurse=False))
        layers.add_row(name or "(model)", _short(m), f"{count:,}" if count else "")
    console.print(layers)

    # -- one step, instrumented
    x, y = first_batch(setup)
    rule_now = first_step_rule(optimizer)
    module.train()
    optimizer.zero_grad(set_to_none=True)
    grad_before = {n: p.grad for n, p in named}
    before = {n: p.detach().clone() for n, p in named}
    with setup.autocast():
        out = module(x)
        loss = criterion(out, y)
    path, reached = _backward_path(loss, names)
    loss.backward()
    grads = {n: None if p.grad is None else p.grad.detach().clone() for n, p in named}
    optimizer.step()
    delta = {n: p.detach() - before[n] for n, p in named}
    optimizer.zero_grad(set_to_none=True)
    grad_after = {n: p.grad for n, p in named}

    # -- the loss, the optimizer, the graph
    head = setup.loss.head
    head_text = f"{type(head).__name__} (module 'head')" if head is not None else "none (raw scores)"
    if setup.loss.targets == "index":
        rule = f"class indices, int64 [N], in [0, {out.shape[-1]})"
    else:
        rule = "floats shaped like the output [N, k], never broadcast"
    held = [p for g in optimizer.param_groups for p in g["params"]]
    same = all(id(p) in names for p in held)
    settings = ", ".join(f"{k}={_fmt(v)}" for k, v in optimizer.param_groups[0].items()
                         if k not in QUIET_SETTINGS and v is not None)
    shown = path if len(path) <= 8 else [*path[:4], "…", *path[-3:]]
    facts = Table.grid(padding=(0, 1))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row("loss", f"{_short(criterion)}; head added: {head_text}; targets: {rule}")
    facts.add_row("optimizer", f"{type(optimizer).__name__}({settings}) holds {len(held)} tensors "
                  f"({sum(p.numel() for p in held):,} values) in {len(optimizer.param_groups)} "
                  f"group(s): {'the very same objects' if same else 'NOT the same objects'} as "
                  "model.parameters() (checked with `is`)")
    facts.add_row("batch", f"x {shape_text(x)} {dtype_text(x)} -> output {shape_text(out)} {dtype_text(out)}; "
                  f"y {shape_text(y)} {dtype_text(y)}; loss {float(loss.detach()):.5g}")
    facts.add_row("graph", f"loss.grad_fn = {' <- '.join(shown)}. backward() follows it to "
                  f"{reached} AccumulateGrad nodes, one per parameter, which write p.grad; "
                  "step() then reads p.grad of every tensor it holds")
    facts.add_row("step", "zero_grad() -> out = model(x) -> loss = criterion(out, y) -> "
                  "loss.backward() -> optimizer.step() -> zero_grad()")
    console.print(facts)

    step = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    just: JustifyMethod
    for col, just in (("parameter", "left"), ("shape", "left"), (".grad before\nbackward", "left"),
                      ("|grad| after\nbackward", "right"), ("|Δp| after\nstep", "right"),
                      ("Δp = rule?\n(max error)", "left"), (".grad after\nzero_grad", "left")):
        step.add_column(col, justify=just)
    worst, checked, failed = 0.0, 0, 0
    for n, p in named:
        g = grads[n]
        check = "" if p.requires_grad else "frozen"
        if rule_now is not None and g is not None and p.numel():
            want = rule_now[1](before[n].float(), g.float())
            err = float((delta[n].float() - want).abs().max())
            scale = float(before[n].abs().max()) + float(want.abs().max())
            ok = err <= 4 * torch.finfo(torch.float32).eps * scale + 1e-6 * float(want.abs().max())
            worst, checked, failed = max(worst, err), checked + 1, failed + (not ok)
            check = f"{'yes' if ok else 'NO'} {err:.1e}"
        step.add_row(n, shape_text(p), str(grad_before[n]),
                     "None" if g is None else f"{float(g.norm()):.6g}",
                     f"{float(delta[n].norm()):.6g}", check,
                     "None" if grad_after[n] is None else "zeros")
    console.print(step)
    if rule_now is not None:
        lr = float(optimizer.param_groups[0]["lr"])
        verdict = "holds" if not failed else f"FAILS for {failed} tensor(s)"
        console.print(Text.assemble((f"{type(optimizer).__name__} check", "bold"), f": Δp = {rule_now[0]} with "
                                    f"lr={lr:g} {verdict} for {checked} tensors; max |Δp - ({rule_now[0]})| = "
                                    f"{worst:.2e} (float32 rounding)"))
    else:
        console.print(Text.assemble((type(optimizer).__name__, "bold"), ": its step is torch's own rule "
                                    "(running averages, scaling); the Δp column shows what this one did"))
    console.print(Text("Nothing was trained and no checkpoint or metrics were written; run without "
                       "explain=true to train.", style="dim"))
    summary["loss"] = float(loss.detach())
    return summary


def _short(m: nn.Module) -> str:
    text = repr(m)
    return text if len(text) <= 60 and "\n" not in text else f"{type(m).__name__}(…)"
