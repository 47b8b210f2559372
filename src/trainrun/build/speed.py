"""How a run computes fast on its device, decided once by ``build``: what ``trainer.compile``
asks of ``torch.compile`` (``reduce-overhead`` on CUDA is the whole step captured as one CUDA
graph, :mod:`trainrun.build.step_graph`), TF32 (``trainer.tf32``) and channels_last
(``trainer.channels_last``).

Each mode that cannot compute what the loop computes, or that was measured not to help on the
device, is refused here with the reason, before anything trains (docs/performance.md has the
figures). None of these levers is on by default where it would change fp32 results: the
promise that trainrun's loop ends with the weights of the tutorial loop holds for the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainrun.config.choices import COMPILE_MODES
from trainrun.errors import TrainrunError

KEY = "trainer.compile"


@dataclass(frozen=True)
class CompilePlan:
    """What ``trainer.compile`` turns into on this device."""

    torch_mode: str | None  # the mode handed to torch.compile; None: the model is not torch.compiled
    captured: bool  # the whole step captured as one CUDA graph (trainrun.build.step_graph)


def compile_word(value: object) -> str:
    """``trainer.compile`` as one lower-case word (the key is a string: ``true`` arrives as
    ``"True"``)."""
    return str(value).strip().lower()


def compile_plan(value: object, device: torch.device) -> CompilePlan:
    """``trainer.compile`` on ``device``; a mode refused there raises, naming why."""
    word = compile_word(value)
    if word == "false":
        return CompilePlan(None, False)
    if word in ("true", "default"):
        return CompilePlan("default", False)
    if word == "reduce-overhead":
        if device.type != "cuda":
            raise TrainrunError(
                f"trainer.compile=reduce-overhead replays the training step as a CUDA graph, which "
                f"exists only on CUDA devices (this run is on {device.type}); torch.compile's own "
                "reduce-overhead mode is its default mode there, measured slower than no compilation "
                "for trainrun's MLPs on CPU (docs/performance.md)",
                key=KEY, fix="use trainer.compile=false (fastest here) or trainer.compile=true",
            )
        return CompilePlan(None, True)
    if word in ("max-autotune", "max-autotune-no-cudagraphs"):
        if device.type == "cpu":
            raise TrainrunError(
                f"trainer.compile={word} on CPU autotunes its matrix-product kernels against oneDNN's and "
                "was measured slower than no compilation for trainrun's MLPs (docs/performance.md)",
                key=KEY, fix="use trainer.compile=false (fastest here) or trainer.compile=true; "
                f"{word} is for CUDA devices",
            )
        return CompilePlan(word, False)
    raise TrainrunError(
        f"trainer.compile={value} is not one of {', '.join(COMPILE_MODES)}",
        key=KEY, fix="use trainer.compile=false, true, reduce-overhead (CUDA) or max-autotune (CUDA)",
    )


def check_capturable(*, distributed: bool, precision: str, accumulate: int,
                     skip_nonfinite: bool, scheduler_interval: str, detect_anomaly: bool,
                     optimizer: torch.optim.Optimizer, optimizer_key: str) -> None:
    """A captured step replays the same kernels with the same constants: refuse each setting
    under which that would compute something other than the loop (or sync the host every step,
    which a graph cannot hold)."""
    why: list[tuple[str, str, str]] = []  # (key, reason, fix)
    if distributed:
        why.append(("trainer.devices", "a multi-process or sharded run exchanges gradients through "
                    "collectives that trainrun does not capture", "use one process (trainer.devices=1)"))
    if precision == "fp16":
        why.append(("trainer.precision", "fp16's gradient scaler reads on the host, every step, whether "
                    "the gradients overflowed", "use trainer.precision=bf16 (no scaler) or 32"))
    if accumulate > 1:
        why.append(("trainer.accumulate_grad_batches", "accumulation steps the optimizer on some batches "
                    "only, a second kind of step", "use trainer.accumulate_grad_batches=1 and a larger "
                    "data.batch_size"))
    if skip_nonfinite:
        why.append(("trainer.on_nonfinite", "skip reads every batch's loss on the host", "use "
                    "trainer.on_nonfinite=stop"))
    if scheduler_interval == "step":
        why.append(("scheduler.interval", "a per-step schedule changes the learning rate every step, "
                    "which a graph holds as a constant (it would be captured again every step)",
                    "use scheduler.interval=epoch (captured again once per epoch)"))
    if detect_anomaly:
        why.append(("trainer.detect_anomaly", "anomaly detection checks every gradient on the host",
                    "leave trainer.detect_anomaly=false"))
    if not graph_safe(optimizer):
        why.append((optimizer_key, f"{type(optimizer).__name__} keeps step counts on the host, which a "
                    "replay would never advance", "use SGD or an optimizer with a capturable option "
                    "(Adam, AdamW, RMSprop, ...)"))
    if why:
        key, reason, fix = why[0]
        raise TrainrunError(
            f"trainer.compile=reduce-overhead captures the whole training step as one CUDA graph, but "
            f"{key}: {reason}", key=key, fix=f"{fix}, or use trainer.compile=true",
        )


def graph_safe(optimizer: torch.optim.Optimizer) -> bool:
    """SGD holds no counter; torch's optimizers with a ``capturable`` option keep theirs on the
    device when it is set. Any other optimizer (Adagrad, a user's) may count on the host."""
    return isinstance(optimizer, torch.optim.SGD) or "capturable" in optimizer.defaults


def set_tf32(value: bool | None, device: torch.device) -> None:
    """``trainer.tf32``: true lets cuBLAS matmuls and cuDNN convolutions use TensorFloat-32 (about
    10 mantissa bits instead of 23, several times faster on Ampere and later), false keeps both in
    full fp32, null leaves torch's defaults (matmuls in fp32, convolutions in TF32). Off by default:
    it changes fp32 results. Through the APIs torch documents (``set_float32_matmul_precision``,
    ``cudnn.allow_tf32``)."""
    if value is None or device.type != "cuda":
        return
    torch.set_float32_matmul_precision("high" if value else "highest")
    torch.backends.cudnn.allow_tf32 = bool(value)


def wants_channels_last(value: bool | None, device: torch.device, precision: str, model: nn.Module) -> bool:
    """``trainer.channels_last``: null (auto) puts a model with 2-d convolutions in channels_last
    on CUDA under bf16/fp16, where cuDNN's tensor-core kernels want NHWC; never in fp32 by default
    (other kernels, other rounding). true/false force it."""
    if value is not None:
        return bool(value) and has_conv2d(model)
    return device.type == "cuda" and precision in ("bf16", "fp16") and has_conv2d(model)


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def to_channels_last(value: bool | None, device: torch.device, precision: str, model: nn.Module) -> bool:
    """Put ``model`` (already on ``device``) in channels_last where :func:`wants_channels_last`
    says so; whether it did."""
    if not wants_channels_last(value, device, precision, model):
        return False
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # documented; the stubs omit it
    return True
