"""The config room: schemas (with their help text) and value checks, nothing else.

``schemas`` and ``groups`` hold the dataclasses Hydra composes the YAML files in ``configs/``
against; ``checks`` refuses values that have the right type but cannot work. :func:`config_dir`
finds the YAML files themselves (inside a wheel, or the repository's top-level ``configs/``).
"""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """``configs/`` inside an installed wheel, or the repository's top-level ``configs/``."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "configs", here.parents[1] / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"trainrun's configs/ folder was not found next to {here}")
