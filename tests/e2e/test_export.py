"""``export-model``: each format written into the run folder, loaded back here with its own
loader (not trainrun's), and compared with the checkpoint's model on a batch. The exported
network is the whole one, with the head its loss added; ``preprocessing.json`` holds what a
deployment needs to feed it (the training statistics), which is checked on real rows.

Tolerances (absolute, on the outputs): safetensors bit-identical (the same weights in the same
class); torchscript and torch.export 1e-6 (the same CPU kernels); ONNX Runtime 1e-5 (its own
kernels). ``export-model`` itself refuses a file that differs by more than ``export.TOLERANCE``.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import run_command, run_train

from trainrun.errors import TrainrunError

pytestmark = pytest.mark.xdist_group("export")  # one worker: the module's run is trained once

# A CNN on 20 generated features shaped [1, 4, 5], with loss=nll: the exported network must end
# in the LogSoftmax head the loss added.
TRAIN = ("model=cnn", "model.channels=[4]", "model.hidden=8", "data=synthetic", "data.n_samples=200",
         "data.image_shape=[1,4,5]", "loss=nll", "trainer.epochs=2", "plot=false")
TOLERANCE = {"safetensors": 0.0, "torchscript": 1e-6, "exported": 1e-6, "onnx": 1e-5}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    result = run_train(*TRAIN, cwd=folder, run_dir=folder / "run")
    return folder, result.run_dir


def checkpoint_model(run_dir):
    """The checkpoint's model, rebuilt in this process, and the run's own validation batch."""
    from trainrun.build.setup import build_model, load_data
    from trainrun.commands.trained import typed_config
    from trainrun.data.fitted import from_payload
    from trainrun.engine.checkpoint import load

    saved = load(run_dir / "checkpoints" / "best.pt")
    cfg = typed_config(saved)
    model, _, _, _ = build_model(cfg, from_payload(saved["data"]))
    model.load_state_dict(saved["model"])
    return model.eval(), cfg, load_data


def exported_outputs(fmt: str, path, x: torch.Tensor) -> torch.Tensor:
    """The file run by its own library, as a deployment would."""
    if fmt == "torchscript":
        with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit (it still loads)
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path))(x)
    if fmt == "exported":
        return torch.export.load(str(path)).module()(x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    from safetensors.torch import load_file

    model, _, _ = checkpoint_model(path.parent.parent.parent)
    for p in model.parameters():
        p.data.zero_()  # the weights must come from the file
    model.load_state_dict(load_file(str(path)))
    return model(x)


def export_model(fmt: str, folder, run_dir) -> None:
    """The default format and the extra's through the real command; torchscript and exported
    through the function the command calls (in this process, which has torch imported already:
    the suite stays cheap)."""
    if fmt in ("safetensors", "onnx"):
        result = run_command("export-model", f"run={run_dir}", f"format={fmt}", cwd=folder)
        assert "largest difference" in result.output
        return
    from omegaconf import OmegaConf

    from trainrun.commands import export_model
    from trainrun.config.schemas import ExportConfig

    cfg = OmegaConf.merge(OmegaConf.structured(ExportConfig), {"run": str(run_dir), "format": fmt})
    assert export_model.run(cfg)["max_abs_difference"] <= TOLERANCE[fmt]


@pytest.mark.parametrize("fmt, name", [("safetensors", "model.safetensors"), ("torchscript", "model.torchscript.pt"),
                                       ("exported", "model.pt2"), ("onnx", "model.onnx")])
def test_each_format_reloads_and_gives_the_checkpoints_outputs(trained, fmt, name):
    if fmt in ("onnx", "safetensors"):
        pytest.importorskip("onnxruntime" if fmt == "onnx" else "safetensors")
    folder, run_dir = trained
    export_model(fmt, folder, run_dir)
    path = run_dir / "export" / "best" / name
    assert path.is_file()
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left over

    model, cfg, load_data = checkpoint_model(run_dir)
    assert isinstance(model.head, torch.nn.LogSoftmax)  # the whole network: body and head
    x = torch.randn(9, 1, 4, 5, generator=torch.Generator().manual_seed(1))  # another batch size than traced
    with torch.no_grad():
        expected, got = model(x), exported_outputs(fmt, path, x)
    assert got.shape == expected.shape == (9, 3)
    if TOLERANCE[fmt] == 0:
        assert torch.equal(got, expected)
    else:
        assert torch.allclose(got, expected, rtol=0, atol=TOLERANCE[fmt]), (got - expected).abs().max()
    assert torch.allclose(got.exp().sum(dim=1), torch.ones(9), atol=1e-5)  # log-probabilities

    # preprocessing.json: raw rows standardized with its statistics are the rows training fed.
    info = json.loads((path.parent / "preprocessing.json").read_text())
    assert info["input_shape"] == ["batch", 1, 4, 5] and info["input_name"] == "x"
    assert "log-probabilities" in info["output"] and info["classes"] == [0, 1, 2]
    from trainrun.data.sources import make_synthetic

    raw, _ = make_synthetic(n_samples=200, n_features=20)
    splits, _ = load_data(cfg)
    from trainrun.data.prepare import split_indices

    train_rows, _, _ = split_indices(200, 0.2, 0.0, 0)
    mean, std = np.asarray(info["standardize"]["mean"]), np.asarray(info["standardize"]["std"])
    mine = ((raw[train_rows[:5]] - mean) / std).astype(np.float32).reshape(5, 1, 4, 5)
    assert np.allclose(mine, splits.train[0][:5], atol=1e-5)


def test_a_missing_extra_is_one_paragraph(monkeypatch):
    from trainrun.commands import export_model as export

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    with pytest.raises(TrainrunError) as caught:
        export.to_onnx(torch.nn.Linear(2, 2), torch.zeros(2, 2), {})
    assert "pip install 'trainrun[onnx]'" in str(caught.value) and caught.value.key == "format"
