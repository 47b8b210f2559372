"""The value rules live on the schema fields (``setting(..., check=...)``) and one walker checks
every field of a composed config, reporting every problem at once."""

from __future__ import annotations

import dataclasses

import pytest

from trainrun.config.fields import Rule, at_least, fraction, one_of, rule_of, seed, setting, sizes
from trainrun.config.groups import GROUP_SCHEMAS, SGDConfig
from trainrun.config.schemas import TrainConfig
from trainrun.config.values import check_config
from trainrun.errors import TrainrunError


def problems_of(cfg) -> TrainrunError | None:
    try:
        check_config(cfg)
    except TrainrunError as err:
        return err
    return None


def test_the_defaults_pass(compose):
    assert problems_of(compose()) is None


@pytest.mark.parametrize("overrides", [
    ["optim=sgd", "optim.lr=0.5", "optim.momentum=0"],
    ["model=cnn", "model.hidden=8", "model.channels=[4]"],
    ["scheduler=plateau", "scheduler.factor=0.5"],
    ["trainer.grad_clip.max_norm=1", "trainer.grad_clip.norm_type=inf"],  # inf is a norm
    ["lr_find=apply"], ["lr_find=true"], ["trainer.precision=bf16"],
    ["data=synthetic", "data.n_samples=2", "data.num_classes=2"],
    ["trainer.epochs=0", "data.val_fraction=0", "trainer.limit_train_batches=null"],
])
def test_valid_values_pass(compose, overrides):
    assert problems_of(compose(*overrides)) is None


def test_every_problem_is_reported_at_once(compose):
    err = problems_of(compose("optim.lr=-1", "data.batch_size=0", "model.hidden=[64,0]",
                              "trainer.precision=fp32", "trainer.epochs=-3", "+trainer.epoch=2"))
    assert err is not None
    text = str(err)
    assert text.startswith("6 values cannot work:")
    for needle in ("optim.lr=-1.0 is not allowed: it must be greater than 0",
                   "data.batch_size=0 is not allowed: it must be at least 1",
                   "model.hidden=[64,0] is not allowed", "trainer.precision=fp32", "did you mean 32?",
                   "trainer.epochs=-3", "trainer.epoch is not a key"):
        assert needle in text, text
    assert err.key is not None and err.key.split(", ")[0] == "trainer.epoch"  # config order: trainer first


def test_one_problem_keeps_its_own_paragraph(compose):
    err = problems_of(compose("optim=sgd", "optim.lr=0"))
    assert err is not None and err.key == "optim.lr"
    assert err.message == "optim.lr=0.0 is not allowed: it must be greater than 0"
    assert err.fix == "set it on the command line, e.g. optim.lr=0.1"  # sgd's own default


def test_a_nan_is_one_problem_not_two(compose):
    err = problems_of(compose("optim.lr=nan"))
    assert err is not None and err.message == "optim.lr=nan is not a finite number"


def test_an_interpolation_that_points_nowhere_does_not_hide_the_rest(compose):
    err = problems_of(compose("scheduler=cosine", "scheduler.T_max=${trainer.epoch}", "data.batch_size=0"))
    assert err is not None
    assert "scheduler.T_max refers to a value that cannot be found" in str(err)
    assert "data.batch_size=0 is not allowed" in str(err)


def test_required_values_are_named_by_section(compose):
    err = problems_of(compose("data=csv"))
    assert err is not None and err.key == "data.path"
    assert err.message.startswith("data.path and data.target are required")


def test_a_subclass_default_keeps_its_base_rule():
    """``SGDConfig.lr = 0.1`` is a plain default: the rule comes from ``OptimConfig.lr``."""
    rule = rule_of(SGDConfig, "lr")
    assert rule is not None and not rule.holds(0.0) and rule.holds(0.1)


def test_a_users_target_under_a_preset_keeps_the_presets_rules(compose):
    err = problems_of(compose("model._target_=mynet.Net", "model.dropout=1.5"))
    assert err is not None and err.key == "model.dropout"


def test_rules_hold_as_they_say():
    assert at_least(1).holds(1) and not at_least(1).holds(0) and at_least(1).holds(None)
    assert not at_least(0).holds(True)  # a bool is not a number
    assert not fraction().holds(float("nan")) and fraction().holds(0.0) and not fraction().holds(1.0)
    assert seed().holds(0) and not seed().holds(2**32) and not seed().holds(-1)
    assert sizes().holds([1, 8]) and not sizes().holds([1, 0]) and not sizes().holds([True]) and sizes().holds(3)
    assert one_of("false", "true").holds(True) and not one_of("false", "true").holds("maybe")


def test_a_field_declares_its_rule_beside_its_help():
    @dataclasses.dataclass
    class Schema:
        width: int = setting(8, "the width", check=at_least(1))

    rule = rule_of(Schema, "width")
    assert isinstance(rule, Rule) and rule.must == "at least 1"


def test_every_rule_is_reachable_from_a_schema():
    """Each rule sits on a field of a schema that composes (no rule on a dead field)."""
    classes = [TrainConfig, *(c for group in GROUP_SCHEMAS.values() for c in group.values())]
    ruled = [(c.__name__, f.name) for c in classes for f in dataclasses.fields(c) if rule_of(c, f.name)]
    assert ("OptimConfig", "lr") not in ruled  # OptimConfig is a base: its rule shows on the options
    assert ("SGDConfig", "lr") in ruled and ("MLPConfig", "hidden") in ruled and len(ruled) > 40
