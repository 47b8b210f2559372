"""A trained run, found, checked and typed again: the checkpoint ``run=`` points to, the
trust rule for the code its stored config names, and that config typed by trainrun's schemas,
for the commands that use a trained model (``evaluate``, ``predict``, ``export``).

**Trust.** A checkpoint is data. Its stored config names the code that builds the model, the
loss, the data source (``_target_``); trainrun imports and runs such a target only when it is
trainrun's own preset or a torch.nn / torch.optim class (:func:`trainrun.targets.trusted_target`),
or when the user names it on the command line (``trust=[mynet]``: a module or a dotted target).
Anything else is refused by :func:`trainrun.engine.checkpoint.load` before anything is imported,
so a checkpoint from elsewhere cannot run code just by being evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn

from trainrun.config.groups import GROUP_BASES, GROUP_SCHEMAS
from trainrun.config.schemas import TrainConfig
from trainrun.data.fitted import from_payload
from trainrun.data.prepare import DataInfo
from trainrun.engine.checkpoint import find, load
from trainrun.engine.publish import META, meta_identity
from trainrun.errors import TrainrunError, phase
from trainrun.files import BEST, CHECKPOINTS, LAST


@dataclass
class Trained:
    """A checkpoint found, loaded safely, its code checked against the trust rule."""

    file: Path  # the checkpoint
    folder: Path  # its run folder
    saved: dict[str, Any]  # the payload (torch.load with weights_only=True)
    config: DictConfig  # the stored training config, typed again
    read_as: tuple[int, int] | None = None  # a sharded folder: which save was read (meta_identity)

    @property
    def fitted(self) -> DataInfo | None:
        """The training split's statistics and encoding (None in checkpoints older than them)."""
        data = self.saved.get("data")
        return None if data is None else from_payload(data)

    def weights_into(self, model: nn.Module, *, new_data: bool = False) -> None:
        """Load the checkpoint's weights into ``model`` (rebuilt from the stored config): with
        new data (``data=...``) a mismatch means the data differs from the training data."""
        fitted = self.fitted
        shape = f" (samples {list(fitted.in_shape)}" + (
            f", {fitted.num_classes} classes)" if fitted.num_classes else ")") if fitted else ""
        with phase("loading the checkpoint's weights into the model built for "
                   + ("the new data" if new_data else "its stored config"), "data" if new_data else "run",
                   fix=f"give data shaped like the training data{shape}" if new_data else
                   "use a checkpoint that trainrun wrote for this run, unchanged"):
            if (self.saved.get("layout") or {}).get("sharded"):  # several processes' shards, gathered here
                from trainrun.engine.sharded import load_into  # DCP: seconds to import, only when used

                load_into(model, None, self.file, {"model": self.saved["model_names"]}, key="run",
                          ids=self.saved["layout"].get("shard_ids"), read_as=self.read_as)
            else:
                model.load_state_dict(self.saved["model"])

    @property
    def where(self) -> str:
        state = self.saved.get("state", {})
        return f"epoch {state.get('epoch')}, step {state.get('step')}"


# What predict and export-model never build from a stored config: they rebuild the model and its
# loss, nothing that trains (evaluate builds the whole run again, the optimizer included).
TRAINING_ONLY = ("optim", "scheduler")


def open_trained(run: str, checkpoint: str, trust: list[str] | None = None,
                 unbuilt: tuple[str, ...] = ()) -> Trained:
    """Find, load and check the checkpoint of ``run=`` / ``checkpoint=``; ``unbuilt``: sections
    of the stored config this command does not build (given anew, as ``data=...``, or not used),
    whose code therefore needs no ``trust=``."""
    file, folder = locate(run, checkpoint)
    for _ in range(3):  # a sharded folder a running job replaces meanwhile: read the save that stays
        before = meta_identity(file)
        # Loggers and callbacks are never built from a checkpoint; the rest is the caller's to say.
        saved = load(file, key="run", trust=[str(t) for t in trust or []], trust_option="trust",
                     unbuilt=("logger", "callbacks", *unbuilt))
        if meta_identity(file) == before:
            break
    return Trained(file, folder, saved, typed_config(saved), read_as=before)


def locate(run: str, checkpoint: str) -> tuple[Path, Path]:
    """``(checkpoint file, run folder)`` for ``run=`` and ``checkpoint=``."""
    path = Path(run).expanduser()
    if not path.exists():
        raise TrainrunError(
            f"run={run!r}: no such folder or file (looked in {Path.cwd()})",
            key="run",
            fix="give a run folder (e.g. outputs/2026-11-24/08-30-00-123456) or a checkpoint file",
        )
    if path.is_file() or (path / META).is_file():  # a checkpoint file, or a sharded one's folder
        folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return path, folder
    names = {"best": BEST, "last": LAST}
    name = names.get(checkpoint, checkpoint)
    file = Path(name).expanduser()
    if not file.is_absolute():
        file = path / CHECKPOINTS / name
    if checkpoint in names:  # last.pt (one process) or last/ (several: sharded), the newer
        file = find(path / CHECKPOINTS, checkpoint) or file
    if not (file.is_file() or (file / META).is_file()):
        found = sorted(p.name for p in (path / CHECKPOINTS).glob("*.pt"))
        have = f"; checkpoints/ holds {', '.join(found)}" if found else \
            " and it has no checkpoints/ files (was it run with checkpoint.enabled=false?)"
        raise TrainrunError(
            f"run={run!r}: no checkpoint {str(file)!r}{have}",
            key="checkpoint",
            fix="choose one with checkpoint=best|last|<file>" if found else
            "point run= at a run folder that holds checkpoints/best.pt or last.pt",
        )
    return file, path


def typed_config(saved: dict[str, Any]) -> DictConfig:
    """The plain config stored in a checkpoint, typed again by the schemas ``train`` composed it
    with (the checkpoint names them; older ones are matched by ``_target_``). The types matter:
    building leaves out a preset's declared keys that its ``_target_`` does not take."""
    base = OmegaConf.structured(TrainConfig)
    OmegaConf.set_struct(base, False)  # a checkpoint may hold keys a newer schema dropped
    cfg = OmegaConf.merge(base, saved["config"])
    assert isinstance(cfg, DictConfig)  # a DictConfig merged into stays one
    names = saved.get("schemas") or {}
    for key, node in saved["config"].items():
        if key not in GROUP_BASES or not isinstance(node, dict):
            continue
        # Only trainrun's own schema classes, looked up by name: a checkpoint names no code.
        by_name = {cls.__name__: cls for cls in GROUP_SCHEMAS[key].values()}
        kind = by_name.get(str(names.get(key)))
        if kind is None:
            same_target = [c for c in GROUP_SCHEMAS.get(key, {}).values()
                           if getattr(c, "_target_", MISSING) == node.get("_target_")]
            kind = same_target[0] if same_target else GROUP_BASES[key]
        section = OmegaConf.structured(kind)
        OmegaConf.set_struct(section, False)  # keys a user added (+model.width=3) stay
        cfg[key] = OmegaConf.merge(section, node)
    return cfg
