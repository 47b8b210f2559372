"""The command-line room: the console scripts (``main``), Hydra's composition errors made short
(``hydra_errors``), ``--help`` and the configuration reference (``help``, ``reference``),
launching (``launch``, ``ranks``, ``group``; ``devices`` and ``agent`` for ``trainer.devices=N``)
and multirun jobs (``sweep``)."""
