"""A faster weight gradient for ordinary convolutions on small feature maps in bf16 on CPU.

The forward pass is PyTorch's own convolution, unchanged, and so is the input gradient. Where
oneDNN's bf16 weight gradient is slow, on maps of at most 8x8 output pixels (the last stages and
HRNet's classification head at 128 px), it is computed as one matrix product instead: the output
gradient, (images x output pixels) by output channels, against the input's patches, (images x
output pixels) by (kernel x kernel x input channels), read from the channels_last input without
copying the image twice. Measured on the 2-core machine (docs/measurements.md), batch 16 at
128 px, bf16, channels_last, weight gradient alone:

* HRNet's 512 -> 1024 3x3 stride-2 head convolution (8x8 -> 4x4): oneDNN 12.6 ms, product 1.9 ms;
* its 1024 -> 2048 1x1 convolution at 4x4: 4.3 against 0.7 ms;
* its 256 -> 512 3x3 stride-2 convolution (16x16 -> 8x8): 4.7 against 2.5 ms;
* on larger maps oneDNN is faster (128 -> 16 3x3 at 32x32: 1.0 against 13.4 ms), so they keep it.

float32 layers keep oneDNN. The rule depends only on the layer's shape and dtype (no timing at run
time), so a run computes the same numbers every time; the product accumulates in float32 as
oneDNN does and rounds once (tests/unit/test_smallmap.py holds the gradients to PyTorch's).

:func:`install` swaps every eligible ``nn.Conv2d`` (no groups, square kernel, zero padding, no
dilation) of a model for :class:`SmallMapConv2d`, which holds the same parameters under the same
names. Training on CPU takes it (:func:`helpers.train.build`); the naive reference of
``scripts/bench.py`` does not.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helpers.run.depthwise import memory_format_of

#: weight gradients on output maps of at most this many pixels per image take the product
SMALL_OUTPUT = 8 * 8


def weight_grad_mm(g: torch.Tensor, x: torch.Tensor, k: int, stride: int, padding: int) -> torch.Tensor:
    """Weight gradient (C_out, C_in, k, k) of a convolution as one matrix product.

    ``gw[o, c, i, j] = sum_{n, h, w} g[n, o, h, w] * xpad[n, c, h * stride + i, w * stride + j]``:
    rows (n, h, w) of the output gradient against the same rows of the input's patches, laid out
    (i, j, c) so that a channels_last input gives them as a strided view. Returned in
    channels_last layout (a free view of the product)."""
    n, c, h, w = x.shape
    ho, wo = g.shape[-2:]
    xh = x.permute(0, 2, 3, 1)  # (n, h, w, c); a view when x is channels_last
    if k == 1 and stride == 1 and padding == 0:
        cols = xh.reshape(n * h * w, c)
    else:
        xp = F.pad(xh, (0, 0, padding, padding, padding, padding)).contiguous()
        sn, sh, sw, sc = xp.stride()
        cols = xp.as_strided((n, ho, wo, k, k, c), (sn, stride * sh, stride * sw, sh, sw, sc))
        cols = cols.reshape(n * ho * wo, k * k * c)
    gm = g.permute(0, 2, 3, 1).reshape(n * ho * wo, g.shape[1])
    return (gm.t() @ cols).reshape(g.shape[1], k, k, c).permute(0, 3, 1, 2)


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, stride: int, padding: int):
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, b is not None
        return F.conv2d(x, w, b, stride, padding)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = ctx.has_bias and ctx.needs_input_grad[2]
        g = g.contiguous(memory_format=memory_format_of(x))

        def aten(mask):
            return torch.ops.aten.convolution_backward(g, x, w, [w.shape[0]] if ctx.has_bias else None,
                                                       [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)
        if not need_w:  # oneDNN, exactly as nn.Conv2d
            gx, gw, gb = aten([need_x, need_w, need_b])
            return gx, gw, gb, None, None
        gx = aten([True, False, False])[0] if need_x else None
        gw = weight_grad_mm(g, x, w.shape[-1], s, p).to(w.dtype)
        gb = g.float().sum((0, 2, 3)).to(g.dtype) if need_b else None
        return gx, gw, gb, None, None


class SmallMapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (no groups, square kernel, equal strides and paddings, no dilation, zero
    padding) whose bf16 weight gradient on small maps is :func:`weight_grad_mm`. Under autocast
    the inputs are cast as autocast casts them for a convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device.type
        dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        k, s, p = self.kernel_size[0], self.stride[0], self.padding[0]
        out = [(x.shape[i] + 2 * p - k) // s + 1 for i in (-2, -1)]
        if dt != torch.bfloat16 or out[0] * out[1] > SMALL_OUTPUT or not torch.is_grad_enabled():
            return super().forward(x)  # nn.Conv2d itself: nothing to gain here
        w, b = self.weight.to(dt), None if self.bias is None else self.bias.to(dt)
        with torch.autocast(dev, enabled=False):
            return _Conv.apply(x.to(dt), w, b, s, p)


def eligible(m: nn.Module) -> bool:
    """Whether ``m`` is an ordinary convolution :class:`SmallMapConv2d` can stand in for."""
    return (type(m) is nn.Conv2d and m.groups == 1
            and m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
            and isinstance(m.padding, tuple) and m.padding[0] == m.padding[1]
            and m.dilation == (1, 1) and m.padding_mode == "zeros")


def install(model: nn.Module, device: str = "cpu") -> int:
    """Give every eligible convolution of ``model`` this module's weight gradient (in place: the
    same parameter objects, names and memory format); returns how many. Only on CPU, where the
    rule was measured: on another ``device`` the model is left as it is (0)."""
    if torch.device(device).type != "cpu":
        return 0
    n = 0
    for m in model.modules():
        if eligible(m):
            m.__class__ = SmallMapConv2d
            n += 1
    return n
