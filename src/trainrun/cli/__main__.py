"""``python -m trainrun.cli``: the ``train`` command (``torchrun --nproc_per_node=2 -m trainrun.cli``).

``python -m`` puts the current folder first on ``sys.path``; it is taken off before anything
else is imported, so a ``numpy.py`` lying there cannot run (user modules stay importable: see
``trainrun.targets.user_folder_importable``).
"""

import os
import sys

try:
    _here: str | None = os.getcwd()
except OSError:  # the working folder is gone: train() says so in one paragraph (cli/entry.py)
    _here = None
sys.path[:] = [p for p in sys.path if p not in ("", _here)]

from trainrun.cli.main import train  # noqa: E402  (after the path is safe)

train()
