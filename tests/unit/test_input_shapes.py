"""What a model asks for decides the shape of its input: ``in_features`` alone means flat
samples (digits as ``[N, 64]``), ``in_shape`` means the samples as the data shapes them
(``[N, 1, 8, 8]``), and preflight, explain and evaluate see the same input as training."""

from __future__ import annotations

from omegaconf import OmegaConf

from trainrun.build.instantiate import takes_flat_samples


def test_which_models_take_flat_samples(shapes_folder, monkeypatch):
    monkeypatch.chdir(shapes_folder)
    node = lambda target: OmegaConf.create({"_target_": target})  # noqa: E731
    assert takes_flat_samples(node("shapes.LinearFirst"), "model")
    assert not takes_flat_samples(node("shapes.Images"), "model")
    assert takes_flat_samples(node("trainrun.build.models.MLP"), "model")  # flattens anyway
    assert not takes_flat_samples(node("trainrun.build.models.CNN"), "model")
    assert not takes_flat_samples(node("torch.nn.Identity"), "model")  # asks for neither
