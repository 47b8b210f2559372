"""The engine room: the loop (``loop``), the one answer to "stop now?" (``stop``), checkpoints
and resuming (``checkpoint``, ``resume``), and the DDP reductions the loop needs
(``collectives``). Nothing here knows Hydra, or how the user reads what happened."""
