"""The ``evaluate`` command: rebuilds a run from the config in its checkpoint, scores a split,
writes eval.json / predictions.csv; its errors are config errors (exit 2, no traceback)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("with_names", [True, False])
def test_the_stored_config_is_typed_as_train_composed_it(compose, with_names):
    """The checkpoint's plain config gets the schema classes back (named in the checkpoint, or
    matched by _target_ for checkpoints without the names)."""
    from omegaconf import OmegaConf

    from trainrun.commands.trained import typed_config
    from trainrun.config.plain import schema_names

    composed = compose("data=diabetes", "loss=mse", "optim=sgd", "scheduler=onecycle", "model=cnn",
                       "data.image_shape=[1,2,5]")
    saved = {"config": OmegaConf.to_container(composed, resolve=True, enum_to_str=True)}
    if with_names:
        saved["schemas"] = schema_names(composed)
    typed = typed_config(saved)
    for key in ("model", "loss", "optim", "scheduler", "data", "trainer", "checkpoint"):
        assert OmegaConf.get_type(typed, key) is OmegaConf.get_type(composed, key), key
    assert typed == composed
