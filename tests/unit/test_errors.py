"""Bad inputs of every kind, through the real ``train`` command: each one must exit with the
right status, name the offending key or value, and print no traceback."""

from __future__ import annotations

import sys

import pytest


def test_the_boundary_names_the_object_whose_code_raised() -> None:
    """In training every error used to be blamed on model._target_ (LBFGS's step, a scheduler's
    get_lr): the innermost frame whose ``self`` is a built object names its key."""
    from trainrun.errors import TrainrunError, phase

    class Schedule:
        def step(self):
            raise RuntimeError("table exhausted")

    schedule = Schedule()
    with pytest.raises(TrainrunError) as err, phase("training", "model._target_",
                                                    owners=lambda: {"scheduler._target_": [schedule]}):
        schedule.step()
    assert err.value.key == "scheduler._target_" and "RuntimeError: table exhausted" in err.value.message


def test_an_exit_inside_a_phase_is_an_error_and_ctrl_c_is_not() -> None:
    """A user's code calling sys.exit(0) ended the run with status 0 and no result."""

    from trainrun.errors import TrainrunError, phase

    with pytest.raises(TrainrunError, match=r"SystemExit: the code called sys.exit\(0\)"), phase("x", "model._target_"):
        sys.exit(0)
    with pytest.raises(KeyboardInterrupt), phase("x", "model._target_"):
        raise KeyboardInterrupt


def test_the_line_that_raised_names_the_key() -> None:
    """torch's ``betas[1]`` raising IndexError names no key in its text; its line does."""
    from trainrun.errors import TrainrunError, describe, phase

    def check(betas):
        return 0.0 <= betas[1] < 1.0

    with pytest.raises(TrainrunError) as err, phase("building the optimizer", "optim._target_",
                                                    section={"lr": 0.1, "betas": [0.9]}):
        check([0.9])
    assert err.value.key == "optim.betas"
    wrapped = RuntimeError("Target 'x' is blocklisted because it allows\nconfig data to run code. More text.")
    assert describe(wrapped).endswith("because it allows config data to run code. More text.")


def test_inf_is_a_norm(compose) -> None:
    """inf is torch's max-norm for clipping: refused as "not finite" before."""
    from trainrun.config.values import check_config

    check_config(compose("trainer.grad_clip.norm_type=inf", "trainer.grad_clip.max_norm=1"))
