"""Opt-in tools around a run: explain, lr_find, profiler, model summary, the overfit verdict."""
