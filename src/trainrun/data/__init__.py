"""The data room: ``sources`` (what ``data._target_`` names), ``prepare`` (split, standardize,
encode: :class:`~trainrun.data.prepare.DataInfo`), ``batches`` (what the loop iterates)."""
