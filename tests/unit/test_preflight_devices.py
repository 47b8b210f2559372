"""The preflight's words for a model whose tensors are not all on the run's device: a tensor made
in ``forward`` or kept as a plain attribute stays where it was made when the model moves. Only a
second device makes torch raise (a CPU tensor next to CUDA ones: ``tests/test_cuda.py`` runs that
through ``train``); here, the fix chosen for each of torch's two wordings of it."""

from __future__ import annotations

import pytest
import torch

from trainrun.preflight.common import forward_fix


@pytest.mark.parametrize("message", [
    # torch's two wordings (libtorch's strings), as a CUDA run meets them
    "Expected all tensors to be on the same device, but got mat2 is on cpu, different from other tensors on "
    "cuda:0 (when checking argument in method wrapper_CUDA_mm)",
    "Tensor on device cpu is not on the expected device cuda:0!",
])
def test_both_of_torchs_wordings_get_the_device_fix(message):
    fix = forward_fix(RuntimeError(message), torch.zeros(2))
    assert "register_buffer" in fix and "on cpu" in fix


def test_other_forward_failures_keep_the_shape_fix():
    fix = forward_fix(RuntimeError("mat1 and mat2 shapes cannot be multiplied (16x4 and 5x3)"), torch.zeros(2))
    assert "input size" in fix and "register_buffer" not in fix
