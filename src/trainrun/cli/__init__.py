"""The command-line room: the console scripts (``main``), Hydra's composition errors made short
(``hydra_errors``), ``--help`` and the configuration reference (``help``, ``reference``),
launching (``launch``, ``workers``, ``group``, ``ranks``) and multirun jobs (``sweep``)."""
