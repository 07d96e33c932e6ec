"""One convolution's output and gradients, with or without bf16 autocast: the tests of the CPU
backward passes (helpers.run.depthwise, helpers.run.smallmap) compare a swapped layer with
PyTorch's own through it."""
from __future__ import annotations

import copy

import torch
from torch import nn


def conv_grads(conv: nn.Module, x: torch.Tensor, g: torch.Tensor | None, bf16: bool):
    """``(y, grad x, grad weight, grad bias or None, g)`` for output gradient ``g`` (drawn at
    random when None, so that the reference's draw can be replayed into the other layer)."""
    xi = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(xi)
    g = torch.randn_like(y, dtype=torch.float32).to(y.dtype) if g is None else g
    y.backward(g)
    gb = None if conv.bias is None else conv.bias.grad
    return y.detach(), xi.grad, conv.weight.grad, gb, g


def swapped_and_reference(ref: nn.Module, install, x_shape: tuple, channels_last: bool, bf16: bool,
                          same_forward: bool = True, x: torch.Tensor | None = None):
    """Run ``ref`` and a copy whose class ``install`` swapped (exactly one layer) on the same input
    and output gradient; asserts the forward passes are equal (``same_forward``; otherwise only
    their dtypes, shapes and memory formats, the caller compares the values). Returns the new
    layer's ``conv_grads``, the reference's, and the memory format used. ``x``: the input (drawn
    at random with ``x_shape`` when None)."""
    new = copy.deepcopy(ref)
    assert install(new) == 1 and type(new) is not type(ref)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ref, new = ref.to(memory_format=fmt), new.to(memory_format=fmt)
    x = (torch.randn(*x_shape) if x is None else x).contiguous(memory_format=fmt)
    r = conv_grads(ref, x, None, bf16)
    n = conv_grads(new, x, r[-1], bf16)
    assert n[0].dtype == r[0].dtype and n[0].shape == r[0].shape
    assert n[0].is_contiguous(memory_format=fmt) and n[1].is_contiguous(memory_format=fmt)
    if same_forward:
        assert torch.equal(n[0], r[0])  # the forward is PyTorch's own
    assert n[1].dtype == r[1].dtype and n[2].dtype == r[2].dtype and n[2].shape == r[2].shape
    return n, r, fmt


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    """Largest difference at most ``tol`` of the largest element of ``b`` (which must be nonzero)."""
    scale = b.abs().max().item()
    assert scale > 0
    assert (a.float() - b.float()).abs().max().item() <= tol * scale
