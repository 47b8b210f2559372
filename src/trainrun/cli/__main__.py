"""``python -m trainrun.cli``: the ``train`` command (``torchrun --nproc_per_node=2 -m trainrun.cli``).

``python -m`` puts the working folder first on ``sys.path``; importing the ``trainrun`` package
(which Python does before this file runs) takes it off the front before anything else is
imported (:mod:`trainrun.hygiene`), so a ``numpy.py`` lying there cannot run; user modules stay
importable at the end of the path. A command then takes it off the path altogether
(:func:`trainrun.hygiene.protect`) here, before ``main``'s imports: they probe for optional
packages (``attr`` by OmegaConf, ``org`` by ``copy``) that a file in the working folder would
otherwise answer.
"""

from trainrun.hygiene import protect

protect()

from trainrun.cli.main import train  # noqa: E402  (after the working folder is off the path)

train()
