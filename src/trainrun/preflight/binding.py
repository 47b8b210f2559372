"""Binding: the optimizer holds exactly the model's trainable parameters, and after one
``backward`` each of them has a finite gradient (an unused layer and a detached output are told
apart by which layers ran)."""

from __future__ import annotations

import torch

from trainrun.build.setup import Setup
from trainrun.errors import describe, named_key
from trainrun.preflight.common import MODEL_KEY, Report, names, refuse, shape_text


def check_binding(setup: Setup, report: Report, after_forward: bool = False) -> None:
    module, optimizer = setup.raw_model, setup.optimizer
    named = list(module.named_parameters())
    in_model = {id(p) for _, p in named}
    held = [p for g in optimizer.param_groups for p in g["params"]]
    held_ids = {id(p) for p in held}
    when = " during the first forward pass" if after_forward else ""
    strays = [p for p in held if id(p) not in in_model]
    if strays and not after_forward:
        raise refuse(
            f"the optimizer holds {len(strays)} tensor(s) that are not parameters of the model "
            f"(shapes {names([shape_text(p) for p in strays])}), so optimizer.step() would update "
            "tensors the model does not use",
            key="optim._target_",
            fix="build the optimizer over the parameters trainrun passes it (its params argument: "
            "the model's own, on their device), not over copies",
        )
    if strays:
        raise refuse(
            f"the optimizer holds {len(strays)} tensor(s) that are no longer parameters of the "
            f"model (shapes {names([shape_text(p) for p in strays])}){when}: the model's parameters "
            "were replaced after the optimizer was built, so optimizer.step() would update copies "
            "the model no longer uses",
            key=MODEL_KEY,
            fix="don't move the model to another device/dtype or re-create layers after it is "
            "built (in forward or in a callback); create every layer in __init__",
        )
    missing = [f"{n} {shape_text(p)}" for n, p in named if p.requires_grad and id(p) not in held_ids]
    if missing:
        created = " (created during the first forward pass)" if after_forward else ""
        raise refuse(
            f"the optimizer does not hold these trainable parameters{created}, so "
            f"optimizer.step() would never change them: {names(missing)}",
            key="optim._target_" if not after_forward else MODEL_KEY,
            fix="create every layer in the model's __init__ and build the optimizer from all of "
            "model.parameters(); if leaving them out is on purpose, freeze them "
            "(requires_grad=False)",
        )
    if after_forward:
        return
    frozen = [n for n, p in named if not p.requires_grad]
    if frozen and len(frozen) == len(named):
        raise refuse("every parameter of the model is frozen (requires_grad=False): nothing "
                    "would train", key=MODEL_KEY,
                    fix="unfreeze the layers you want to train")
    if frozen:
        report.warnings.append(
            f"{len(frozen)} parameter tensor(s) are frozen (requires_grad=False) and will not "
            f"train: {names(frozen)}"
        )


def check_gradients(setup: Setup, ran: set[str]) -> None:
    module = setup.raw_model
    owner = {id(p): (m, n) for m, sub in module.named_modules()
             for n, p in sub.named_parameters(recurse=False)}
    held = [p for g in setup.optimizer.param_groups for p in g["params"] if p.requires_grad]
    param_names = {id(p): n for n, p in module.named_parameters()}
    unused: list[str] = []
    cut: list[str] = []
    for p in held:
        if p.grad is None:
            layer = owner.get(id(p), ("?", ""))[0]
            (cut if layer in ran else unused).append(f"{param_names.get(id(p), '?')} {shape_text(p)}")
    if unused or cut:
        parts = []
        if unused:
            parts.append(f"{names(unused)}: its layer never ran in forward (an unused layer)")
        if cut:
            parts.append(f"{names(cut)}: its layer ran, but the output is cut from it (a "
                         ".detach(), .data or no_grad between it and the output)")
        raise refuse(
            "after loss.backward() these parameters have no gradient, so optimizer.step() would "
            "never change them: " + "; ".join(parts),
            key=MODEL_KEY,
            fix="use every layer in forward and remove the .detach(); if a layer is unused on "
            "purpose, freeze it (requires_grad=False) or delete it",
        )
    bad = [param_names.get(id(p), "?") for p in held
           if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if bad:
        raise refuse(f"the first backward gave NaN or infinite gradients for {names(bad)}",
                    key=MODEL_KEY,
                    fix="check the model's forward for operations that are not differentiable "
                    "everywhere (sqrt/log at 0, division by a tiny number)")


def check_step(setup: Setup) -> None:
    """One ``optimizer.step()`` on the first gradients (preflight restores the parameters and
    the optimizer's state after): an optimizer that fails on this model's parameters, or a step
    that leaves a parameter NaN or infinite, is refused before training instead of at step 1."""
    optimizer = setup.optimizer
    try:
        optimizer.step()
    except Exception as err:
        raise refuse(f"optimizer.step() failed on the first gradients: {describe(err)}",
                     key=named_key(err, "optim._target_", setup.cfg.optim),
                     fix="check the optimizer and its values under optim (sparse or complex "
                     "parameters, fused/foreach on this device, a user optimizer's step)") from None
    param_names = {id(p): n for n, p in setup.raw_model.named_parameters()}
    bad = [param_names.get(id(p), "?") for g in optimizer.param_groups for p in g["params"]
           if not bool(torch.isfinite(p.detach()).all())]
    if bad:
        lr = optimizer.param_groups[0].get("lr")
        raise refuse(f"the first optimizer.step() (lr={lr}) made {names(bad)} NaN or infinite, "
                     "from finite weights and gradients", key="optim.lr",
                     fix="lower optim.lr (or check a user optimizer's step)")
