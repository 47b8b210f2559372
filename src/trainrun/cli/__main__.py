"""``python -m trainrun.cli``: the ``train`` command (``torchrun --nproc_per_node=2 -m trainrun.cli``)."""

from trainrun.cli.main import train

train()
