"""The ``export-model`` command: a trained run's whole network, with the head its loss added, as a
file another program loads without trainrun. (Not ``export``: every POSIX shell has a builtin of
that name, which would take the command line and silently set shell variables.)

``export-model run=<run folder or checkpoint> format=safetensors|torchscript|exported|onnx
[checkpoint=best|last|<file>] [out=<folder>] [trust=[mymodule]]``

=============  ==========================  ==================================================
format         file                        loaded with
=============  ==========================  ==================================================
safetensors    ``model.safetensors``       ``safetensors.torch.load_file`` into the same class
torchscript    ``model.torchscript.pt``    ``torch.jit.load`` (traced; deprecated by torch)
exported       ``model.pt2``               ``torch.export.load(...).module()``
onnx           ``model.onnx``              ``onnxruntime.InferenceSession`` (input ``x``)
=============  ==========================  ==================================================

Files go to ``<run folder>/export/<checkpoint>/`` (``out=`` to choose), each written atomically,
with ``preprocessing.json`` beside them: the exported network takes *standardized* samples shaped
``[batch, *input_shape]``, exactly as the model saw them in training, so a deployed model needs
the training split's mean and std (and the label names, and how to read the output), which that
file holds. The batch dimension is dynamic.

Before a file is written, it is loaded back from its bytes and run on a batch next to the
checkpoint's model; outputs that differ by more than :data:`TOLERANCE` refuse the export (exit 1).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainrun import __version__
from trainrun.build import contracts
from trainrun.build.losses import LossPlan
from trainrun.build.setup import build_model
from trainrun.commands.predictions import fitted_info
from trainrun.commands.trained import TRAINING_ONLY, open_trained
from trainrun.config.choices import text
from trainrun.data.fitted import preprocessing
from trainrun.data.prepare import DataInfo
from trainrun.errors import TRAINING_ERROR, TrainrunError, exits_are_errors, phase
from trainrun.files import EXPORT, PREPROCESSING_JSON, atomic_write, atomic_write_json
from trainrun.owner import output_owner

log = logging.getLogger("trainrun")

FILES = {"safetensors": "model.safetensors", "torchscript": "model.torchscript.pt",
         "exported": "model.pt2", "onnx": "model.onnx"}
# Largest difference allowed between the reloaded export's outputs and the checkpoint model's on
# the same batch (absolute and relative, as torch.allclose): safetensors holds the same weights
# (bit-identical outputs); torchscript and torch.export run the same CPU kernels; ONNX Runtime
# runs its own kernels (float32 sums in another order).
TOLERANCE = {"safetensors": 0.0, "torchscript": 1e-6, "exported": 1e-6, "onnx": 1e-4}
EXTRAS = {"safetensors": "safetensors", "onnx": "onnx"}
INPUT = "x"


def missing_extra(fmt: str, err: ImportError) -> TrainrunError:
    return TrainrunError(
        f"format={fmt} needs a package that is not installed ({err})", key="format",
        fix=f"pip install 'trainrun[{EXTRAS[fmt]}]', or choose format=exported (torch alone)")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch's exporters warn about their own deprecations and log the operators they skip
    (torchvision's): not the user's concern here."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo",
                                                    "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


# --------------------------------------------------------------------------- each format: bytes, and run them


def to_safetensors(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    try:
        from safetensors.torch import save
    except ImportError as err:
        raise missing_extra("safetensors", err) from None
    return save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, metadata=meta)


def run_safetensors(data: bytes, x: torch.Tensor, rebuild: Callable[[], nn.Module]) -> torch.Tensor:
    from safetensors.torch import load

    model = rebuild()
    model.load_state_dict(load(data))
    with torch.no_grad():
        return model.eval()(x)


def to_torchscript(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    scripted = torch.jit.trace(model, example)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer, _extra_files={"trainrun.json": json.dumps(meta)})
    return buffer.getvalue()


def run_torchscript(data: bytes, x: torch.Tensor, rebuild: Callable[[], nn.Module]) -> torch.Tensor:
    with torch.no_grad():
        return torch.jit.load(io.BytesIO(data))(x)


def _dynamic_batch() -> tuple[dict[int, Any]]:
    """The first dimension of the one input is the batch, of any size."""
    return ({0: torch.export.Dim("batch")},)


def to_exported(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"trainrun.json": json.dumps(meta)})
    return buffer.getvalue()


def run_exported(data: bytes, x: torch.Tensor, rebuild: Callable[[], nn.Module]) -> torch.Tensor:
    with torch.no_grad():
        return torch.export.load(io.BytesIO(data)).module()(x)


def to_onnx(model: nn.Module, example: torch.Tensor, meta: dict[str, str]) -> bytes:
    try:
        import onnx  # noqa: F401  (torch's exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise missing_extra("onnx", err) from None
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=_dynamic_batch(),
                                input_names=[INPUT], output_names=["output"], verbose=False)
    assert program is not None  # dynamo=True returns the program (None only for the old exporter)
    proto = program.model_proto
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def run_onnx(data: bytes, x: torch.Tensor, rebuild: Callable[[], nn.Module]) -> torch.Tensor:
    try:
        import onnxruntime
    except ImportError as err:
        raise missing_extra("onnx", err) from None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT: x.numpy()})[0])


WRITERS = {"safetensors": (to_safetensors, run_safetensors), "torchscript": (to_torchscript, run_torchscript),
           "exported": (to_exported, run_exported), "onnx": (to_onnx, run_onnx)}


# --------------------------------------------------------------------------- the command


def output_meaning(plan: LossPlan, info: DataInfo) -> str:
    """What the exported network's output is, in words (``preprocessing.json``)."""
    if info.task == "regression":
        return ("the standardized target: value = output * target_scale.std + target_scale.mean"
                if info.y_mean is not None else "the target's value")
    return contracts.meaning(plan.output, plan.contract.targets)


@exits_are_errors("export-model")
def run(cfg: DictConfig) -> dict[str, Any]:
    """Rebuild the checkpoint's model, write it in ``cfg.format`` after checking that the file
    reproduces its outputs, and write ``preprocessing.json``; returns what was written."""
    if OmegaConf.is_missing(cfg, "run"):
        raise TrainrunError("export needs run=<run folder or checkpoint file>", key="run",
                            fix="e.g. export-model run=outputs/2026-11-24/08-30-00-123456 format=onnx")
    started = time.perf_counter()
    fmt = text(cfg.format)
    # the model and its loss are rebuilt; the data's statistics come from the checkpoint
    trained = open_trained(str(cfg.run), str(cfg.checkpoint), list(cfg.trust), unbuilt=("data", *TRAINING_ONLY))
    info = fitted_info(trained)

    def rebuild() -> nn.Module:  # a fresh model of the same class (safetensors' check loads into it)
        return build_model(trained.config, info)[0].eval()

    model, plan, _, _ = build_model(trained.config, info)
    model.eval()
    trained.weights_into(model)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, *info.in_shape, generator=generator)  # traced with 2, checked with 7
    check = torch.randn(7, *info.in_shape, generator=generator)
    settings = {**preprocessing(info), "output": output_meaning(plan, info), "input_name": INPUT,
                "checkpoint": str(trained.file.resolve()), "epoch": trained.saved.get("state", {}).get("epoch"),
                "model": trained.config.model.get("_target_"), "loss": trained.config.loss.get("_target_"),
                "trainrun": __version__, "torch": torch.__version__}
    meta = {"trainrun": json.dumps(settings)}
    write, run = WRITERS[fmt]
    fix = ("format=safetensors (the weights alone) works for every model; torch.export and tracing "
           "need a forward without data-dependent Python control flow")
    with phase(f"exporting {trained.config.model.get('_target_')} as format={fmt}", "format",
               exit_code=TRAINING_ERROR, fix=fix), quiet():
        data = write(model, example, meta)
        with torch.no_grad():
            expected = model(check)
        got = run(data, check, rebuild)
    tolerance = TOLERANCE[fmt]
    difference = float((got.float() - expected.float()).abs().max()) if got.shape == expected.shape else float("inf")
    if not (got.shape == expected.shape and torch.allclose(got.float(), expected.float(), rtol=tolerance,
                                                           atol=tolerance)):
        raise TrainrunError(
            f"the {fmt} export, loaded back, gives outputs {list(got.shape)} that differ from the "
            f"checkpoint's model by up to {difference:.3g} (allowed: {tolerance:g}); nothing was written",
            key="format", exit_code=TRAINING_ERROR, fix=fix)

    out = Path(cfg.out).expanduser() if cfg.out else trained.folder / EXPORT / trained.file.stem
    owner = output_owner(out, "export-model", None if cfg.out else trained.folder, source=trained.file,
                         home=trained.folder)
    with phase(f"writing the export into {str(out)!r}", "out",
               fix="give out= a folder that can be written (or leave it out: <run folder>/export/...)"):
        owner.claim()  # its own folder only: no links, no other run's folder, one writer
        try:
            path = atomic_write(out / FILES[fmt], lambda f: f.write(data))
            atomic_write_json(out / PREPROCESSING_JSON, settings)
        finally:
            owner.release()
    log.info(f"exported {trained.file} ({trained.where}) as {fmt}: {path} ({len(data) / 1e6:.2f} MB)")
    log.info(f"  reloaded and checked on a batch of {len(check)}: largest difference {difference:.3g} "
             f"(allowed {tolerance:g}); inputs: standardized as in {out / PREPROCESSING_JSON}")
    return {"file": str(path), "format": fmt, "max_abs_difference": difference, "tolerance": tolerance,
            "bytes": len(data), "seconds": time.perf_counter() - started}
