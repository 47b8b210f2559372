"""Each composition rewording reads a real Hydra/OmegaConf exception: these tests compose the
config with a bad override (Hydra's compose API, as ``train`` composes it), take the exception
Hydra raises, and pin both what it says and how trainrun words it. A Hydra or OmegaConf release
that changes a message fails here, naming the function to update."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from trainrun.cli import composition
from trainrun.config import config_dir
from trainrun.config.schemas import register


def raised(*overrides: str) -> BaseException:
    register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        try:
            compose("train", overrides=list(overrides))
        except Exception as ex:
            return ex
    raise AssertionError(f"{overrides} composed")


# (the function that must take it, the overrides, what Hydra/OmegaConf says, what trainrun says)
CASES = [
    (composition.unknown_option, ["optim=adamm"], "Could not find 'optim/adamm'",
     ["optim=adamm is not an option of the 'optim' group", "did you mean optim=adam?",
      "optim._target_=yourmodule.Name"]),
    (composition.unreadable_override, ["optim.lr=[0.1"], "no viable alternative at input",
     ["cannot read a command-line override"]),
    (composition.unknown_key, ["optim.lrr=0.1"], "Key 'lrr' not in",
     ["optim.lrr is not a key of 'optim' (did you mean optim.lr?)", "valid keys there:"]),
    (composition.unknown_key, ["epochs=3"], "Key 'epochs' not in 'TrainConfig'",
     ["epochs is not a key of the top level of the config (did you mean trainer.epochs?)"]),
    (composition.unknown_key, ["data.n_samples=10"], "Key 'n_samples' not in",
     ["only data=synthetic has it"]),
    (composition.wrong_type, ["trainer.epochs=ten"], "could not be converted to Integer",
     ["trainer.epochs=ten is not a whole number"]),
    (composition.wrong_type, ["optim.lr=fast"], "could not be converted to Float",
     ["optim.lr=fast is not a number"]),
    (composition.not_a_bool, ["plot=maybe"], "is not a valid bool", ["plot=maybe is not true or false"]),
    (composition.invalid_choice, ["trainer.on_nonfinite=stp"], "Invalid value 'stp', expected one of",
     ["trainer.on_nonfinite=stp is not a valid choice", "did you mean trainer.on_nonfinite=stop?"]),
    (composition.null_not_allowed, ["optim.lr=null"], "is not Optional", ["optim.lr cannot be null"]),
    (composition.deleted_key, ["~trainer.epochs"], "does not support deletion",
     ["~trainer.epochs removes a key that every run reads"]),
    (composition.not_a_list, ["data.image_shape=5"], "is not a ListConfig",
     ["data.image_shape must be a list"]),
    (composition.key_already_there, ["+trainer.epochs=3"], "An item is already at 'trainer.epochs'",
     ["+trainer.epochs adds a key, but trainer.epochs already exists"]),
    (composition.group_set_to_null, ["optim=null"], "Config group override must be a string or a list",
     ["optim=null: a group's choice cannot be null"]),
]


@pytest.mark.parametrize(("reword", "overrides", "hydra_says", "we_say"), CASES,
                         ids=[f"{c[0].__name__}:{c[1][0]}" for c in CASES])
def test_each_rewording_reads_the_message_hydra_gives(reword, overrides, hydra_says, we_say):
    ex = raised(*overrides)
    full = f"{ex} {ex.__cause__ or ''}"
    assert hydra_says in full, f"Hydra/OmegaConf now says: {full!r}; update composition.{reword.__name__}"
    err = reword(ex, overrides)
    assert err is not None, f"composition.{reword.__name__} no longer recognizes: {full!r}"
    assert composition.composition_error(ex, overrides) is not None
    for needle in we_say:
        assert needle in str(err), str(err)


def test_the_first_rewording_that_recognizes_an_error_words_it():
    ex = raised("trainer.epochs=ten")
    err = composition.composition_error(ex, ["trainer.epochs=ten"])
    assert err is not None and err.message == "trainer.epochs=ten is not a whole number"


def test_a_key_the_users_target_takes_is_offered_with_a_plus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mysched.py").write_text("class Sched:\n    def __init__(self, optimizer, min_lr=0.0):\n        pass\n")
    ex = raised("scheduler=plateau", "scheduler.min_lr=0.001")
    err = composition.composition_error(ex)
    assert err is not None and "ReduceLROnPlateau takes min_lr: add it with +scheduler.min_lr=0.001" in err.fix


def test_anything_else_is_not_a_composition_error():
    assert composition.composition_error(ValueError("boom")) is None
