"""``predict`` and the statistics a checkpoint keeps, through the real commands, on one run: a
user's model (so the trust rule is exercised too) trained on a CSV file whose features have very
different scales (so standardizing with the wrong statistics shows), with a test split (so
``train`` scores ``best.pt`` on it at the end)."""

from __future__ import annotations

import numpy as np
import pytest


def test_a_label_training_never_saw_is_refused():
    from trainrun.data.fitted import encode_labels
    from trainrun.errors import TrainrunError

    assert encode_labels(np.array(["dog", "bird", "dog"]), ["bird", "cat", "dog"]).tolist() == [2, 0, 2]
    assert encode_labels(np.array([2.0, 0.0]), [0, 1, 2]).tolist() == [2, 0]  # 2.0 is the label 2
    with pytest.raises(TrainrunError, match="'fish' \\(row 1\\), which the model was not trained on"):
        encode_labels(np.array(["dog", "fish"]), ["bird", "cat", "dog"])


def test_the_trust_rule_reads_every_target_of_the_stored_config():
    from trainrun.targets import untrusted_targets

    own = {"model": {"_target_": "trainrun.build.models.MLP"}, "loss": {"_target_": "torch.nn.CrossEntropyLoss"},
           "optim": {"_target_": "torch.optim.Adam"}, "scheduler": {"_target_": None},
           "data": {"_target_": "trainrun.data.sources.read_csv"}}
    assert untrusted_targets(own) == []  # trainrun's and torch's own
    cases = {
        "data._target_=torch.hub.load": {**own, "data": {"_target_": "torch.hub.load", "repo_or_dir": "x/y"}},
        "model.layers[0]._target_=os.system": {**own, "model": {"_target_": "torch.nn.Sequential",
                                                                "layers": [{"_target_": "os.system"}]}},
        "optim._target_=mypkg.opt.Fancy": {**own, "optim": {"_target_": "mypkg.opt.Fancy"}},
    }
    for named, config in cases.items():
        assert untrusted_targets(config) == [named]
    fancy = cases["optim._target_=mypkg.opt.Fancy"]
    assert untrusted_targets(fancy, ["mypkg"]) == []  # a module named by the user
    assert untrusted_targets(fancy, ["mypkg.opt.Fancy"]) == []
    assert untrusted_targets(fancy, ["mypk"]) == ["optim._target_=mypkg.opt.Fancy"]  # a prefix of a name is not it


def test_the_statistics_survive_a_safe_load(tmp_path):
    import torch

    from trainrun.data.fitted import from_payload, to_payload
    from trainrun.data.prepare import prepare_arrays

    x = np.random.default_rng(0).normal(5, 3, size=(40, 3)).astype(np.float32)
    _, info = prepare_arrays(x, np.array(["b", "a"] * 20), task="auto", val_fraction=0.25, test_fraction=0.0,
                             standardize=True, seed=0, image_shape=None)
    torch.save(to_payload(info), tmp_path / "d.pt")
    back = from_payload(torch.load(tmp_path / "d.pt", weights_only=True))
    assert back.classes == ["a", "b"] and back.in_shape == (3,) and back.task == "binary"
    assert np.array_equal(back.x_mean, info.x_mean) and np.array_equal(back.x_std, info.x_std)
