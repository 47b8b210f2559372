"""Compositions are declared (build/contracts.py, data/guesses.py), in process: every part of a
run says what it gives and takes, and one check refuses what does not fit, naming the key that
decides. The inputs below are compositions no rule names one by one: the chain model -> head ->
loss -> task decides them all. Valid compositions must still build and pass preflight, and the
fix a refusal names must make the run build."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, write_csv

from trainrun.build import contracts
from trainrun.errors import TrainrunError

# A user's module: models, losses and sources written the way users write them.
USER = textwrap.dedent('''
    import numpy as np
    import torch
    from torch import nn

    class Raw(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.fc = nn.Linear(in_features, out_features)
        def forward(self, x):
            return self.fc(x)

    class Ends(nn.Module):
        """Linear, then softmax / log_softmax / sigmoid (a module or a function), by `last`."""
        def __init__(self, in_features, out_features, last="sigmoid"):
            super().__init__()
            self.fc = nn.Linear(in_features, out_features)
            self.last = last
        def forward(self, x):
            z = self.fc(x)
            return {"softmax": lambda: z.softmax(1), "log_softmax": lambda: torch.log_softmax(z, 1),
                    "sigmoid": lambda: torch.sigmoid(z)}[self.last]()

    class Shifted(nn.Module):
        """Raw scores that lie in [0, 1] on the first batch (tiny weights, bias 0.5)."""
        def __init__(self, in_features, out_features):
            super().__init__()
            self.fc = nn.Linear(in_features, out_features)
            with torch.no_grad():
                self.fc.weight.mul_(0.01)
                self.fc.bias.fill_(0.5)
        def forward(self, x):
            return self.fc(x)

    class MyLogits(nn.BCEWithLogitsLoss):
        """A user's loss deriving from torch's: it takes what its parent takes."""

    class Plain(nn.Module):
        """A user's loss trainrun knows nothing of."""
        def forward(self, out, y):
            return ((out - y) ** 2).mean()

    def ids():
        rng = np.random.default_rng(0)
        return rng.normal(size=(120, 3)).astype("float32"), np.arange(120)

    def rounded_prices():
        rng = np.random.default_rng(1)
        x = rng.normal(size=(200, 3)).astype("float32")
        return x, np.round(1000 + 300 * x[:, 0] + 50 * rng.normal(size=200))

    def one_sample_class():
        rng = np.random.default_rng(2)
        y = np.array([0, 1] * 50 + [2])
        return rng.normal(size=(101, 3)).astype("float32"), y

    def single_positive():
        rng = np.random.default_rng(3)
        y = np.zeros(80, dtype=int); y[7] = 1
        return rng.normal(size=(80, 3)).astype("float32"), y

    def constant():
        rng = np.random.default_rng(4)
        return rng.normal(size=(60, 3)).astype("float32"), np.full(60, 0.5)

    def constant_column():
        rng = np.random.default_rng(5)
        x = rng.normal(size=(60, 3)).astype("float32")
        return x, np.stack([x[:, 0] * 1.5, np.full(60, 2.0)], axis=1)

    def names():
        rng = np.random.default_rng(6)
        return rng.normal(size=(40, 3)).astype("float32"), np.array([f"user{i}" for i in range(40)])

    class EmptySamples(torch.utils.data.Dataset):
        def __len__(self):
            return 40
        def __getitem__(self, i):
            return torch.zeros(0), i % 2

    def constant_features():
        return np.ones((60, 3), dtype="float32"), np.arange(60) % 2

    def no_features():
        return np.zeros((50, 0), dtype="float32"), np.arange(50) % 2

    def soft_labels():
        rng = np.random.default_rng(7)
        x = rng.normal(size=(200, 3)).astype("float32")
        return x, 1 / (1 + np.exp(-x[:, 0] - 0.3 * x[:, 1]))
''')


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "usernet.py").write_text(USER)
    monkeypatch.chdir(tmp_path)
    for kind in ("binary", "multiclass", "regression"):
        write_csv(tmp_path, kind, n=96)
    np.savez(tmp_path / "empty.npz", X=np.zeros((50, 0), dtype=np.float32), y=np.arange(50) % 2)
    rng = np.random.default_rng(8)
    rows = [(a, b, int(a + b > 0)) for a, b in rng.normal(size=(80, 2))]
    (tmp_path / "leak.csv").write_text("a,b,label_copy,y\n" + "".join(f"{a:.4f},{b:.4f},{y},{y}\n" for a, b, y in rows))
    return tmp_path


def data(kind: str) -> list[str]:
    """Overrides selecting a CSV written by the fixture, or a source of usernet.py."""
    if kind in ("binary", "multiclass", "regression"):
        return ["data=csv", f"data.path={kind}.csv", "data.target=y", "data.batch_size=16"]
    if kind == "npz":
        return ["data=npz", "data.path=empty.npz"]
    if kind == "leak":
        return ["data=csv", "data.path=leak.csv", "data.target=y", "data.batch_size=16"]
    return [f"data._target_=usernet.{kind}", "data.batch_size=16"]


def build_and_check(compose, *overrides: str):
    from trainrun.build.setup import build
    from trainrun.preflight import run as preflight

    setup = build(compose(*overrides))
    report = preflight.check(setup)
    return setup, report


def refusal(compose, *overrides: str) -> TrainrunError:
    with pytest.raises(TrainrunError) as caught:
        build_and_check(compose, *overrides)
    assert caught.value.exit_code == 2, str(caught.value)
    return caught.value


# (id, data, overrides, the key that decides, words the paragraph must hold)
REFUSED = [
    # the examples
    ("bce_logits_with_sigmoid_head", "binary", ["loss=bce_logits", "loss.head=sigmoid"], "loss.head",
     ["loss.head=sigmoid turns them into probabilities", "(BCEWithLogitsLoss) takes raw scores", "applied twice",
      "loss.head=none"]),
    ("mse_on_binary_labels", "binary", ["loss=mse"], "data.task",
     ["(MSELoss) fits real values", "binary task", "not probabilities", "data.task=regression"]),
    # heads that do not fit their loss, for every built-in loss
    ("cross_entropy_with_sigmoid_head", "multiclass", ["loss.head=sigmoid"], "loss.head",
     ["(CrossEntropyLoss) takes raw scores or log-probabilities", "loss.head=none"]),
    ("nll_with_sigmoid_head", "multiclass", ["loss=nll", "loss.head=sigmoid"], "loss.head",
     ["(NLLLoss) takes log-probabilities", "loss.head=log_softmax"]),
    ("bce_with_log_softmax_head", "binary", ["loss=bce", "loss.head=log_softmax"], "loss.head",
     ["(BCELoss) takes probabilities", "loss.head=sigmoid"]),
    ("nll_target_on_cross_entropy_preset", "multiclass", ["loss._target_=torch.nn.NLLLoss"], "loss.head",
     ["no head is added", "(NLLLoss) takes log-probabilities", "loss.head=log_softmax"]),
    ("torch_loss_no_preset_names", "multiclass", ["loss._target_=torch.nn.MultiMarginLoss", "loss.head=sigmoid"],
     "loss.head", ["(MultiMarginLoss) takes raw scores", "loss.head=none"]),
    ("user_loss_inherits_its_parent", "binary", ["loss=bce_logits", "loss._target_=usernet.MyLogits",
                                                 "loss.head=sigmoid"], "loss.head",
     ["(MyLogits) takes raw scores", "loss.head=none"]),
    ("user_loss_declares_its_input", "binary", ["loss=bce_logits", "loss._target_=usernet.Plain",
                                                "loss.input=probabilities"], "loss.head",
     ["(Plain) takes probabilities", "loss.head=sigmoid"]),
    ("a_false_declaration_of_a_torch_loss", "binary", ["loss=bce_logits", "loss.input=probabilities"], "loss.input",
     ["loss.input=probabilities, but BCEWithLogitsLoss takes raw scores"]),
    # what the model gives, observed on the first batch
    ("softmax_model_under_nll", "multiclass", ["loss=nll", "loss.head=none", "model._target_=usernet.Ends",
                                               "+model.last=softmax"], "model._target_",
     ["(Ends) gives probabilities (observed: each row", "return raw scores"]),
    ("functional_sigmoid_under_bce_logits", "binary", ["loss=bce_logits", "model._target_=usernet.Ends"], "loss",
     ["gives probabilities (observed: every value", "loss=bce loss.head=none",
      "or model.output=scores if forward returns raw scores that only happen to lie in that range"]),
    ("softmax_model_under_log_softmax_head", "multiclass", ["loss.head=log_softmax", "model._target_=usernet.Ends",
                                                            "+model.last=softmax"], "model._target_",
     ["gives probabilities", "loss.head=log_softmax takes raw scores or log-probabilities"]),
    # what the model declares
    ("declared_log_probabilities_under_bce_logits", "binary",
     ["loss=bce_logits", "model._target_=usernet.Raw", "model.output=log_probabilities"], "loss",
     ["(Raw) gives log-probabilities", "loss=cross_entropy"]),
    ("declaration_false_of_the_output", "binary",
     ["loss=bce", "loss.head=none", "model._target_=usernet.Raw", "model.output=probabilities"], "model.output",
     ["model.output=probabilities, but the model's first outputs range from", "outside [0, 1]"]),
    ("declared_probabilities_cannot_be_cross_entropy", "multiclass",
     ["model._target_=usernet.Raw", "model.output=probabilities"], "model.output",
     ["(Raw) gives probabilities", "(CrossEntropyLoss) takes raw scores or log-probabilities"]),
    # the loss's targets against the task
    ("huber_on_binary_labels", "binary", ["loss=mse", "loss._target_=torch.nn.HuberLoss"], "data.task",
     ["(HuberLoss) fits real values", "data.task=regression"]),
    ("l1_on_classes", "multiclass", ["loss=mse", "loss._target_=torch.nn.L1Loss"], "data.task",
     ["(L1Loss) fits real values", "multiclass"]),
    ("bce_on_three_classes", "multiclass", ["loss=bce"], "data.task",
     ["one float output cannot tell several classes apart", "loss=cross_entropy"]),
    ("nll_on_regression", "regression", ["loss=nll"], "data.task",
     ["a loss over labels cannot learn real values", "loss=mse"]),
    ("cross_entropy_with_float_targets", "binary", ["loss.targets=float"], "loss.targets",
     ["compares its input with class labels", "loss.targets=index"]),
    ("bce_with_index_targets", "binary", ["loss=bce", "loss.targets=index"], "loss.targets",
     ["loss.targets=float"]),
    # a bounded output against the targets it must reach
    ("sigmoid_head_for_standardized_values", "regression", ["loss=mse", "loss.head=sigmoid"], "loss.head",
     ["within [0, 1]", "no prediction could reach them"]),
    # the guesses: task from labels, features from columns
    ("integer_ids_are_not_classes", "ids", [], "data.task",
     ["each of the 120 samples has a value of its own", "not a 120-class task", "data.task=regression"]),
    ("rounded_prices_are_not_classes", "rounded_prices", [], "data.task", ["hold a single sample"]),
    ("one_sample_class", "one_sample_class", [], "data.task", ["1 of its 3 classes (2)"]),
    ("single_positive", "single_positive", [], "data.task", ["1 of its 2 classes (1)"]),
    ("distinct_names_are_not_classes", "names", [], "data.task", ["'user0'", "40-class"]),
    ("constant_value", "constant", [], "data._target_", ["one value, 0.5, for all 60 samples"]),
    ("constant_column", "constant_column", [], "data._target_", ["(column 1 of 2)", "2.0"]),
    ("constant_value_declared", "constant", ["data.task=regression"], "data.task", ["nothing to learn"]),
    ("no_feature_array", "no_features", [], "data._target_", ["X has shape [50, 0]"]),
    ("no_feature_npz", "npz", [], "data.x_key", ["X has shape [50, 0]", "data.x_key"]),
    ("constant_features", "constant_features", [], "data._target_", ["every feature holds one value for all 60"]),
    ("a_guessed_feature_is_the_target", "leak", [], "data.features", ["column 'label_copy' equals the target"]),
    ("no_feature_dataset", "EmptySamples", [], "data._target_", ["each sample has shape [0]"]),
]


@pytest.mark.parametrize("kind, overrides, key, needles", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_composition_refused(compose, folder, kind, overrides, key, needles):
    err = refusal(compose, *data(kind), *overrides)
    assert err.key == key, str(err)
    for needle in needles:
        assert needle in str(err), f"{needle!r} not in:\n{err}"


# Valid compositions: each builds, passes preflight and composes to the kind predict must read.
VALID = [
    ("cross_entropy_classes", "multiclass", [], contracts.SCORES),
    ("nll_classes", "multiclass", ["loss=nll"], contracts.LOG_PROBABILITIES),
    ("cross_entropy_binary", "binary", [], contracts.SCORES),
    ("nll_binary", "binary", ["loss=nll"], contracts.LOG_PROBABILITIES),
    ("bce_binary", "binary", ["loss=bce"], contracts.PROBABILITIES),
    ("bce_logits_binary", "binary", ["loss=bce_logits"], contracts.SCORES),
    ("mse_regression", "regression", ["loss=mse"], contracts.SCORES),
    ("mse_on_binary_labels_as_numbers", "binary", ["loss=mse", "data.task=regression"], contracts.SCORES),
    ("declared_log_probabilities_nll", "multiclass", ["loss=nll", "loss.head=none", "model._target_=usernet.Ends",
                                                      "+model.last=log_softmax", "model.output=log_probabilities"],
     contracts.LOG_PROBABILITIES),
    ("observed_log_probabilities_nll", "multiclass", ["loss=nll", "loss.head=none", "model._target_=usernet.Ends",
                                                      "+model.last=log_softmax"], contracts.LOG_PROBABILITIES),
    ("sigmoid_model_bce", "binary", ["loss=bce", "loss.head=none", "model._target_=usernet.Ends"],
     contracts.PROBABILITIES),
    ("declared_probabilities_bce", "binary", ["loss=bce", "loss.head=none", "model._target_=usernet.Ends",
                                              "model.output=probabilities"], contracts.PROBABILITIES),
    ("log_softmax_model_cross_entropy", "multiclass", ["model._target_=usernet.Ends", "+model.last=log_softmax"],
     contracts.SCORES),
    ("log_softmax_head_cross_entropy", "multiclass", ["loss.head=log_softmax"], contracts.LOG_PROBABILITIES),
    ("multi_margin_classes", "multiclass", ["loss._target_=torch.nn.MultiMarginLoss"], contracts.SCORES),
    ("huber_regression", "regression", ["loss=mse", "loss._target_=torch.nn.HuberLoss"], contracts.SCORES),
    ("l1_regression", "regression", ["loss=mse", "loss._target_=torch.nn.L1Loss"], contracts.SCORES),
    ("one_sample_class_declared", "one_sample_class", ["data.task=multiclass"], contracts.SCORES),
    ("integer_ids_as_regression", "ids", ["data.task=regression", "loss=mse"], contracts.SCORES),
    ("soft_labels_bce_logits", "soft_labels", ["loss=bce_logits", "data.standardize=false"], contracts.SCORES),
    ("soft_labels_mse_sigmoid", "soft_labels", ["loss=mse", "loss.head=sigmoid", "data.standardize=false"],
     contracts.PROBABILITIES),
    ("undeclared_user_loss_binary", "binary", ["loss=bce_logits", "loss._target_=usernet.Plain"], contracts.SCORES),
    ("declared_scores_user_model", "multiclass", ["model._target_=usernet.Raw", "model.output=scores"],
     contracts.SCORES),
    ("named_features_stand", "leak", ["data.features=[a,b]"], contracts.SCORES),
    ("raw_scores_that_look_like_probabilities", "binary", ["loss=bce_logits", "model._target_=usernet.Shifted"],
     contracts.SCORES),
]


@pytest.mark.parametrize("kind, overrides, output", [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_composition_builds(compose, folder, kind, overrides, output):
    setup, report = build_and_check(compose, *data(kind), *overrides)
    assert "preflight ok" in report.line
    assert setup.loss.output == output


FIXED = [  # a refusal's fix, applied as it is written, makes the run build and pass preflight
    ("binary", ["loss=bce_logits", "loss.head=sigmoid"]),
    ("multiclass", ["loss.head=sigmoid"]),
    ("multiclass", ["loss=nll", "loss.head=sigmoid"]),
    ("binary", ["loss=bce", "loss.head=log_softmax"]),
    ("multiclass", ["loss._target_=torch.nn.NLLLoss"]),
    ("binary", ["loss=bce_logits", "model._target_=usernet.Ends"]),
    ("binary", ["loss=bce", "model._target_=usernet.Ends"]),
    ("binary", ["loss=cross_entropy", "loss.targets=float"]),
    ("binary", ["loss=mse"]),
    ("ids", []),
]


@pytest.mark.parametrize("kind, overrides", FIXED, ids=[" ".join(f[1]) or f[0] for f in FIXED])
def test_the_fix_named_works(compose, folder, kind, overrides):
    err = refusal(compose, *data(kind), *overrides)
    first = err.fix.split(", or ")[0].split(" or ")[0]  # the first option the fix offers
    fix: list[str] = []
    for token in re.findall(r"[\w./]+=[\w\[\].,-]*\w", first):  # loss=nll, ... are alternatives: the first
        if token.split("=")[0] not in {f.split("=")[0] for f in fix}:
            fix.append(token)
    assert fix, err.fix
    keys = {w.split("=")[0] for w in fix}
    kept = [o for o in overrides if o.split("=")[0].lstrip("+") not in keys and not
            (o.startswith("loss.") and "loss" in keys)]  # loss=<preset> replaces the loss keys
    build_and_check(compose, *data(kind), *kept, *fix)


def test_presets_are_the_loss_options():
    """contracts.PRESETS (the fixes it offers) is what configs/loss/*.yaml holds."""
    for name, (cls, head) in contracts.PRESETS.items():
        option = yaml.safe_load((REPO / "configs" / "loss" / f"{name}.yaml").read_text())
        target = option.get("_target_", "torch.nn.CrossEntropyLoss")
        assert target == f"torch.nn.{cls.__name__}", name
        assert option.get("head", "none") == head, name
    assert sorted(contracts.PRESETS) == sorted(p.stem for p in (REPO / "configs" / "loss").glob("*.yaml"))


@pytest.mark.parametrize("kind", contracts.KINDS)
@pytest.mark.parametrize("width", [1, 2, 5])
def test_probabilities_of_every_kind(kind, width):
    """What predict and the metrics read: probabilities in [0, 1] whose rows sum to 1, the same
    whichever kind the same scores reach the loss as."""
    scores = torch.randn(64, width, generator=torch.Generator().manual_seed(width))
    if width == 1:
        as_kind = {contracts.SCORES: scores, contracts.PROBABILITIES: scores.sigmoid(),
                   contracts.LOG_PROBABILITIES: torch.nn.functional.logsigmoid(scores)}[kind]
        want = torch.cat([1 - scores.sigmoid(), scores.sigmoid()], dim=1)
    else:
        as_kind = {contracts.SCORES: scores, contracts.PROBABILITIES: scores.softmax(1),
                   contracts.LOG_PROBABILITIES: scores.log_softmax(1)}[kind]
        want = scores.softmax(1)
    probs = contracts.probabilities(as_kind, kind)
    assert torch.allclose(probs, want, atol=1e-6)
    assert bool(((probs >= 0) & (probs <= 1)).all()) and torch.allclose(probs.sum(1), torch.ones(64))
    positive = as_kind[:, 0] > contracts.positive_threshold(kind)
    if width == 1:
        assert torch.equal(positive, scores[:, 0] > 0)


@pytest.mark.parametrize("kind, values, seen", [
    ("softmax rows", torch.randn(8, 4).softmax(1), contracts.PROBABILITIES),
    ("log_softmax rows", torch.randn(8, 4).log_softmax(1), contracts.LOG_PROBABILITIES),
    ("sigmoid column", torch.randn(8, 1).sigmoid(), contracts.PROBABILITIES),
    ("raw rows", torch.randn(8, 4) * 3, contracts.SCORES),
    ("raw column", torch.linspace(-2, 2, 8)[:, None], contracts.SCORES),
    ("independent sigmoids", torch.randn(8, 4).sigmoid(), contracts.SCORES),  # no distribution: not called one
])
def test_observe(kind, values, seen):
    from trainrun.preflight.observe import observe

    assert observe(values)[0] == seen, kind


def test_degenerate_guesses_are_refused_only_when_guessed():
    """Declared, a class of one sample stands (the user decided); guessed, it is refused."""
    from trainrun.data.prepare import prepare_arrays

    x = np.random.default_rng(0).normal(size=(11, 2))
    y = np.array([0, 1] * 5 + [2])
    common = dict(val_fraction=0.0, test_fraction=0.0, standardize=False, seed=0, image_shape=None)
    with pytest.raises(TrainrunError, match="1 of its 3 classes"):
        prepare_arrays(x, y, task="auto", **common)
    _, info = prepare_arrays(x, y, task="multiclass", **common)
    assert info.num_classes == 3


def test_a_checkpoint_without_declarations_still_resumes(compose):
    """model.output and loss.input compute nothing: a checkpoint written before they existed (or
    with another declaration) resumes."""
    from omegaconf import OmegaConf

    from trainrun.engine.resume import config_differences

    cfg = compose("loss=nll")
    saved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    del saved["model"]["output"], saved["loss"]["input"]
    blocking, _ = config_differences(saved, cfg)
    assert not blocking
    blocking, _ = config_differences(saved, compose("loss=nll", "loss.head=none"))
    assert blocking == ["loss.head: 'log_softmax' -> 'none'"]
