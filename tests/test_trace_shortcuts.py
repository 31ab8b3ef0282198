"""Regressions of the tracer's operator shortcuts against torch's own meta kernels (found by the property test
in tests/test_scoped_analysis.py exploring)."""

import pytest


@pytest.mark.torch
def test_group_norm_on_a_map_whose_strides_leave_a_choice():
    import torch

    from nnkit.introspect.trace import _shortcuts

    op = torch.ops.aten.native_group_norm.default
    x = torch.empty_strided((1, 1, 2, 1), (2, 1, 1, 2), device="meta")  # contiguous, by torch's own reading
    args = (x, None, None, 1, 1, 2, 1, 1e-5)
    ours, theirs = _shortcuts()[op](args)[0], op(*args)
    assert [(t.shape, t.stride(), t.dtype) for t in ours] == [(t.shape, t.stride(), t.dtype) for t in theirs]
