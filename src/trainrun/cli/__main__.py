"""``python -m trainrun.cli``: the ``train`` command (``torchrun --nproc_per_node=2 -m trainrun.cli``).

``python -m`` puts the working folder first on ``sys.path``; importing the ``trainrun`` package
(which Python does before this file runs) takes it off the front before anything else is
imported (:mod:`trainrun.hygiene`), so a ``numpy.py`` lying there cannot run; user modules stay
importable at the end of the path.
"""

from trainrun.cli.main import train

train()
