"""The report room: what the user reads and what lands in the run folder: the console
(``console``), loggers (``loggers``), pictures (``plots``) and a sweep read from disk (``sweep``).
Nothing here knows optimizers or the loop: it is handed rows, summaries and folders."""
