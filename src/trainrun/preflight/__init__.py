"""Preflight: one real batch through the built objects before epoch 1 (``run.check``), with the
rules on output vs loss (``output``) and on the optimizer's binding to the model (``binding``)."""
