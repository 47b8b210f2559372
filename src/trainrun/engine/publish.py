"""Publishing a sharded checkpoint's folder whole: written under a temporary name, renamed into
place once complete, the previous one kept aside between the two renames and put back after a
kill there. Light (no torch): every run looks its checkpoints up through it, and DCP's import
costs seconds (:mod:`trainrun.engine.sharded` is imported only where several processes save or
such a checkpoint is read).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from trainrun.files import written_as

META = "trainrun.pt"  # the run's state beside the shards (torch.save, read with weights_only=True)


def meta_identity(folder: Path) -> tuple[int, int] | None:
    """Which save a sharded folder holds now (its ``trainrun.pt``'s inode and time): a reader
    compares it with the one it read, since a running job publishes a new folder under the name."""
    return written_as(folder / META)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder to ``final``; the previous ``final`` waits as
    ``.<name>.old`` between the two renames (see :func:`recover`), then goes."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover(folder: Path) -> None:
    """Put back a checkpoint a kill left under ``.<name>.old`` between :func:`publish`'s renames."""
    if not folder.is_dir():
        return
    for old in folder.glob(".*.old"):
        final = folder / old.name[1:-4]
        if not final.exists() and (old / META).is_file():
            os.replace(old, final)


def linked_copy(source: Path, target: Path) -> None:
    """``source``'s files hard-linked into a new ``target`` folder (best.pt and last.pt of one
    moment share their shards)."""
    target.mkdir()
    for item in source.iterdir():
        os.link(item, target / item.name)
