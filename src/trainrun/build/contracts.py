"""Compositions are declared: what each part of a run gives and takes, and the one check that
the parts fit.

A run chains its parts: the model's output, the head the loss adds, the loss, and the data's
targets. Each part declares itself in the same few words, and :func:`compose` checks the chain,
instead of one rule per pair of keys:

* an **output kind**, what a tensor of outputs means: ``scores`` (raw: logits, or values),
  ``probabilities`` (in [0, 1]) or ``log_probabilities`` (<= 0; each row's exp sums to 1);
* the **model** gives one: trainrun's own models raw scores, a user's model what
  ``model.output`` declares, else what preflight observes on the first batch;
* a **head** (``loss.head``) takes some kinds and gives another: ``sigmoid`` raw scores ->
  probabilities, ``log_softmax`` raw scores -> log-probabilities, ``none`` passes any through;
* a **loss** takes some kinds and one **target kind**: class labels (``classes``), a probability
  per output (``probability``: binary labels), or real numbers (``values``): torch's losses are
  declared here (a subclass inherits its parent's), a user's loss by ``loss.input``;
* a **task** (``data.task``, guessed from the labels when ``auto``) holds some target kinds.

What a prediction column means follows from the same words: ``predict``'s ``p_<label>`` are
:func:`probabilities` of the composed kind, the positive class is whatever lies above
:func:`positive_threshold`. A composition that fits no model is refused while building; one that
fits only other models than this one is refused by preflight, which sees the model's output
(:mod:`trainrun.preflight.observe`).
The refusal names the key that decides, found by trying the other heads and the built-in losses
(:func:`_fix`), never written per pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from trainrun.errors import TrainrunError

SCORES, PROBABILITIES, LOG_PROBABILITIES = "scores", "probabilities", "log_probabilities"
KINDS = (SCORES, LOG_PROBABILITIES, PROBABILITIES)  # the order a guess tries them in
WORDS = {SCORES: "raw scores", PROBABILITIES: "probabilities", LOG_PROBABILITIES: "log-probabilities"}
RANGES = {SCORES: (-math.inf, math.inf), PROBABILITIES: (0.0, 1.0), LOG_PROBABILITIES: (-math.inf, 0.0)}

CLASSES, PROBABILITY, VALUES = "classes", "probability", "values"
TARGET_WORDS = {CLASSES: "class labels", PROBABILITY: "a probability in [0, 1] per output (binary labels)",
                VALUES: "real values (regression)"}
TASKS = {CLASSES: ("binary", "multiclass"), PROBABILITY: ("binary", "regression"), VALUES: ("regression",)}
TARGET_RULE = {CLASSES: "index", PROBABILITY: "float", VALUES: "float"}  # loss.targets

# loss.head -> {kind it takes: kind it gives}
HEADS: dict[str, dict[str, str]] = {
    "none": {kind: kind for kind in KINDS},
    "sigmoid": {SCORES: PROBABILITIES},
    "log_softmax": {SCORES: LOG_PROBABILITIES, LOG_PROBABILITIES: LOG_PROBABILITIES},
}

# torch's losses that take (output, target): what each takes. Looked up along the class's MRO.
_ANY = frozenset(KINDS)
KNOWN_LOSSES: tuple[tuple[type[nn.Module], frozenset[str], str], ...] = (
    (nn.BCEWithLogitsLoss, frozenset({SCORES}), PROBABILITY),
    (nn.BCELoss, frozenset({PROBABILITIES}), PROBABILITY),
    (nn.CrossEntropyLoss, frozenset({SCORES, LOG_PROBABILITIES}), CLASSES),  # log_softmax is idempotent
    (nn.NLLLoss, frozenset({LOG_PROBABILITIES}), CLASSES),
    (nn.MultiMarginLoss, frozenset({SCORES}), CLASSES),
    (nn.MSELoss, _ANY, VALUES), (nn.L1Loss, _ANY, VALUES), (nn.SmoothL1Loss, _ANY, VALUES),
    (nn.HuberLoss, _ANY, VALUES),
)
# The built-in presets (configs/loss/*.yaml; a test keeps the two equal): the fixes offered.
PRESETS: dict[str, tuple[type[nn.Module], str]] = {
    "cross_entropy": (nn.CrossEntropyLoss, "none"), "nll": (nn.NLLLoss, "log_softmax"),
    "bce_logits": (nn.BCEWithLogitsLoss, "none"), "bce": (nn.BCELoss, "sigmoid"), "mse": (nn.MSELoss, "none"),
}
BUILT_IN_MODELS = "trainrun.build.models"  # their docstring's promise: raw scores out


@dataclass(frozen=True)
class LossContract:
    """What a loss takes: output kinds (None: undeclared, not checked) and one target kind."""

    name: str
    takes: frozenset[str] | None
    targets: str


def loss_contract(criterion: nn.Module, declared: str, targets_rule: str) -> LossContract:
    """``loss.input`` when declared, else torch's class (or the torch class it derives from).
    An undeclared user loss keeps its ``loss.targets`` rule: index = class labels, float = a
    probability or a value (both are then allowed)."""
    name = type(criterion).__name__
    for cls, takes, targets in KNOWN_LOSSES:
        if isinstance(criterion, cls):
            if declared != "auto" and declared not in takes and type(criterion) is cls:  # torch's own: known
                raise TrainrunError(f"loss.input={declared}, but {name} takes {_words(takes)}", key="loss.input",
                                    fix="leave loss.input=auto for torch's losses (a subclass of yours may declare)")
            return LossContract(name, frozenset({declared}) if declared != "auto" else takes, targets)
    targets = CLASSES if targets_rule == "index" else PROBABILITY
    return LossContract(name, None if declared == "auto" else frozenset({declared}), targets)


def check_targets(contract: LossContract, task: str, targets_rule: str, *, guessed: bool) -> None:
    """The loss's target kind against the data's task and ``loss.targets``."""
    if TARGET_RULE[contract.targets] != targets_rule:
        raise TrainrunError(
            f"the loss ({contract.name}) compares its input with {TARGET_WORDS[contract.targets]}, but "
            f"loss.targets={targets_rule} prepares the targets as "
            + ("class indices" if targets_rule == "index" else "float columns"),
            key="loss.targets", fix=f"loss.targets={TARGET_RULE[contract.targets]} (or leave it to the preset)")
    undeclared_float = contract.takes is None and contract.targets == PROBABILITY
    fits = TASKS[contract.targets] + (("regression",) if undeclared_float else ())
    if task in fits:
        return
    losses = [f"loss={name}" for name, (cls, _) in PRESETS.items() if task in TASKS[_contract_of(cls).targets]
              and (task != "regression" or _contract_of(cls).targets == VALUES)]  # BCE: soft labels only
    said = f"data.task=auto took the targets for a {task} task" if guessed else f"the data is a {task} task"
    if contract.targets == VALUES:
        why, other = "its predictions would be numbers, not probabilities of the classes", "regression"
    elif task == "regression":
        why, other = "a loss over labels cannot learn real values", "multiclass"
    else:
        why, other = "one float output cannot tell several classes apart", ""
    raise TrainrunError(
        f"the loss ({contract.name}) fits {TARGET_WORDS[contract.targets]}, but {said}: {why}",
        key="data.task" if guessed else "loss",
        fix=f"use a loss for a {task} task ({', '.join(losses)})"
        + (f", or set data.task={other} if the targets are {'numbers' if other == 'regression' else 'labels'}"
           if other else ""),
    )


def _contract_of(cls: type[nn.Module]) -> LossContract:
    return next(LossContract(cls.__name__, takes, targets) for known, takes, targets in KNOWN_LOSSES
                if issubclass(cls, known))


def model_kind(body: nn.Module, declared: str) -> str | None:
    """What the model says it gives: ``model.output``, or raw scores for trainrun's own
    models; None when only its output can tell (preflight observes it)."""
    if declared != "auto":
        return declared
    return SCORES if type(body).__module__ == BUILT_IN_MODELS else None


def fitting_kinds(head: str, contract: LossContract) -> list[str]:
    """The model output kinds this head and loss can take, in :data:`KINDS` order."""
    return [k for k, given in HEADS[head].items() if contract.takes is None or given in contract.takes]


def composed_kind(model: str | None, head: str, contract: LossContract) -> str:
    """What the loss (and predict) receives: the head applied to the model's kind, or, when the
    model's kind is unknown, to the first kind that fits (raw scores for an undeclared loss)."""
    kinds = fitting_kinds(head, contract)
    start = model if model is not None else (kinds[0] if kinds else SCORES)
    return HEADS[head].get(start, start)


def compose(model: str | None, head: str, contract: LossContract, *, task: str, model_name: str,
            evidence: str = "", model_key: str = "model._target_") -> str:
    """Refuse the chain model -> head -> loss when it does not fit; return the composed kind.
    ``model`` None (not declared, not observed yet) refuses only what fits no model at all."""
    kinds = fitting_kinds(head, contract)
    loss = f"the loss ({contract.name}) takes {_words(_ordered(contract.takes))}"
    if model is None:
        if kinds:
            return composed_kind(None, head, contract)
        gives = _ordered(frozenset(HEADS[head].values()))
        raise _misfit(f"loss.head={head} gives {_words(gives)}, but {loss}", gives[0],
                      _ordered(contract.takes), head, contract, task, model_key, None)
    if model in kinds:
        return HEADS[head][model]
    who = f"the model ({model_name}) gives {WORDS[model]}{evidence}"
    if model not in HEADS[head]:
        err = _misfit(f"{who}, but loss.head={head} takes {_words(list(HEADS[head]))}", model,
                      list(HEADS[head]), head, contract, task, model_key, model)
    else:
        given = HEADS[head][model]
        via = f"loss.head={head} turns them into {WORDS[given]}" if head != "none" else "no head is added"
        err = _misfit(f"{who} and {via}, but {loss}", given, _ordered(contract.takes), head,
                      contract, task, model_key, model)
    if evidence and model != SCORES:  # seen on one batch only: raw scores may happen to look so
        err.fix = (f"{err.fix}, or model.output=scores if forward returns raw scores that only happen to lie "
                   "in that range here")
    raise err


# What goes wrong when a part receives one kind but reads it as another (given -> wanted).
_CONSEQUENCE = {
    (PROBABILITIES, SCORES): "it would squash them again (a sigmoid or softmax applied twice): every "
                             "prediction is squeezed toward the middle and the model learns badly",
    (LOG_PROBABILITIES, SCORES): "log-probabilities read as raw scores are squashed a second time",
    (SCORES, PROBABILITIES): "raw scores are not probabilities: values outside [0, 1] fail or train nonsense",
    (LOG_PROBABILITIES, PROBABILITIES): "log-probabilities (<= 0) read as probabilities train nonsense",
    (SCORES, LOG_PROBABILITIES): "raw scores read as log-probabilities give a loss without a minimum",
    (PROBABILITIES, LOG_PROBABILITIES): "probabilities read as log-probabilities give a loss without a minimum",
}


def _words(kinds: list[str] | frozenset[str] | set[str]) -> str:
    return " or ".join(WORDS[k] for k in KINDS if k in kinds)


def _ordered(kinds: frozenset[str] | None) -> list[str]:
    return [k for k in KINDS if kinds is None or k in kinds]


def _misfit(what: str, given: str, wanted: list[str], head: str, contract: LossContract, task: str,
            model_key: str, model: str | None) -> TrainrunError:
    why = next((_CONSEQUENCE[(given, w)] for w in wanted if (given, w) in _CONSEQUENCE), "")
    key, fix = _fix(model, head, contract, task, model_key)
    return TrainrunError(f"the parts of this run do not fit: {what}" + (f"; {why}" if why else ""),
                         key=key, fix=fix)


def _fix(model: str | None, head: str, contract: LossContract, task: str, model_key: str) -> tuple[str, str]:
    """The key that decides and its fix: another head for this loss, else a built-in loss (and
    head) for this task and model, else raw scores from the model."""
    starts = [model] if model is not None else list(KINDS)
    heads = {h: HEADS[h][s] for h in HEADS for s in reversed(starts) if s in fitting_kinds(h, contract)}
    if heads:
        return "loss.head", " or ".join(f"loss.head={h} ({contract.name} then receives {WORDS[given]})"
                                        for h, given in heads.items())
    options = []
    for name, (cls, preset_head) in PRESETS.items():
        other = _contract_of(cls)
        if task not in TASKS[other.targets]:
            continue
        for h in (preset_head, *(h for h in HEADS if h != preset_head)):
            if any(s in fitting_kinds(h, other) for s in starts):
                options.append(f"loss={name}" + ("" if h == preset_head else f" loss.head={h}"))
                break
    if options:
        return "loss", "use " + ", or ".join(options[:3])
    return model_key, ("return raw scores from the model's forward (no final sigmoid or softmax): the loss "
                       "adds the head it needs")


# --------------------------------------------------------------------------- what outputs mean


def probabilities(out: torch.Tensor, kind: str) -> torch.Tensor:
    """Outputs as class probabilities ``[N, C]``; a single column is the positive class's
    probability, returned as ``[N, 2]`` (negative, positive)."""
    out = out.float()
    if out.shape[1] == 1:
        p = out[:, 0].sigmoid() if kind == SCORES else out[:, 0].exp() if kind == LOG_PROBABILITIES else out[:, 0]
        return torch.stack([1 - p, p], dim=1)
    return out.softmax(dim=1) if kind == SCORES else out.exp() if kind == LOG_PROBABILITIES else out


def as_values(out: torch.Tensor, kind: str, targets: str) -> torch.Tensor:
    """Outputs in the targets' own terms for a regression: a probability per column for a
    probability target (soft labels under BCE), the output itself for real values."""
    if targets != PROBABILITY:
        return out
    return out.sigmoid() if kind == SCORES else out.exp() if kind == LOG_PROBABILITIES else out


def positive_threshold(kind: str) -> float:
    """A single output above this predicts the positive class (probability 0.5)."""
    return {SCORES: 0.0, PROBABILITIES: 0.5, LOG_PROBABILITIES: math.log(0.5)}[kind]


def meaning(kind: str, targets: str) -> str:
    """The output in words (export's ``preprocessing.json``)."""
    if targets == CLASSES:
        return {SCORES: "raw scores (logits) of the classes: softmax gives the probabilities",
                LOG_PROBABILITIES: "log-probabilities of the classes (exp() gives the probabilities)",
                PROBABILITIES: "probabilities of the classes"}[kind] + ", in the order of classes"
    return {SCORES: "the logit of classes[1] (sigmoid gives its probability; > 0 predicts classes[1])",
            LOG_PROBABILITIES: "the log-probability of classes[1] (> log 0.5 predicts classes[1])",
            PROBABILITIES: "the probability of classes[1] (> 0.5 predicts classes[1])"}[kind]
