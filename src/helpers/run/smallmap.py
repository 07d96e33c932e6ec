"""Ordinary convolutions on small feature maps as matrix products, in bf16 training on CPU.

oneDNN's bf16 convolution routes are slow on the last stages of the classifiers at 128 px, where
maps are 8x8 and smaller and channels are many. There the computation is done as matrix products
of the input's patches (images x output pixels) by (kernel x kernel x input channels), read from
the channels_last input as a strided view, and the output gradient (images x output pixels) by
output channels. :func:`route` decides by shape alone:

``"gemm"``   output maps of at most 4x4 pixels, with a 1x1 kernel or a product of inner dimension
             kernel x kernel x input channels >= 4096: the whole convolution is products
             (:class:`_Gemm`: the forward, the input gradient by stride phases,
             :func:`input_grad_mm`, and the weight gradient);
``"wgrad"``  other output maps of at most 8x8 pixels: oneDNN's forward and input gradient, the
             weight gradient as one product (:class:`_Conv`, :func:`weight_grad_mm`);
``"onednn"`` larger maps, float32, and evaluation: ``nn.Conv2d`` itself.

Measured on the 2-core machine (docs/measurements.md), batch 16 at 128 px, bf16, channels_last:

* HRNet's 512 -> 1024 3x3 stride-2 head convolution (8x8 -> 4x4): forward 4.2 against 1.7 ms,
  input gradient 6.3 against 2.7 ms, weight gradient 12.5 against 1.5 ms;
* its 1024 -> 2048 1x1 convolution at 4x4: 1.9 / 1.7 / 4.3 against 0.5 / 0.6 / 0.7 ms;
* its 256 -> 512 3x3 stride-2 convolution (16x16 -> 8x8): weight gradient 4.8 against 1.7 ms,
  while its forward and input gradient are faster in oneDNN (2.0 / 2.1 against 2.8 / 4.4 ms);
* on larger maps oneDNN is faster throughout (128 -> 16 3x3 at 32x32: weight gradient 1.0
  against 2.4 ms, input gradient 0.4 against 18.6 ms), so they keep it.

The rule depends only on the layer's shape and dtype (no timing at run time), so a run computes
the same numbers every time. Every product accumulates in float32 and rounds once, as oneDNN does;
the input gradient sums each input pixel's patches inside one product (one per stride phase), so
it too is within one bf16 step of the exact value (tests/unit/test_smallmap.py).

:func:`install` swaps every eligible ``nn.Conv2d`` (no groups, square kernel, zero padding, no
dilation) of a model for :class:`SmallMapConv2d`, which holds the same parameters under the same
names. Training on CPU takes it (:func:`helpers.train.build` and the UNet of
:mod:`helpers.segment`); the naive reference of ``scripts/bench.py`` does not.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helpers.run.depthwise import memory_format_of

#: weight gradients on output maps of at most this many pixels per image take the product
SMALL_OUTPUT = 8 * 8
#: the whole convolution (forward, input and weight gradients) is a product on output maps of at
#: most this many pixels per image, for 1x1 kernels and for kernels whose product has an inner
#: dimension (kernel x kernel x input channels) of at least :data:`GEMM_INNER`
GEMM_OUTPUT = 4 * 4
GEMM_INNER = 4096


def route(c_in: int, k: int, out_pixels: int) -> str:
    """Which computation a bf16 training convolution takes, by shape alone: ``"gemm"`` (every
    pass a matrix product, :class:`_Gemm`), ``"wgrad"`` (oneDNN's forward and input gradient,
    the weight gradient as a product, :class:`_Conv`) or ``"onednn"`` (``nn.Conv2d`` itself)."""
    if out_pixels <= GEMM_OUTPUT and (k == 1 or k * k * c_in >= GEMM_INNER):
        return "gemm"
    return "wgrad" if out_pixels <= SMALL_OUTPUT else "onednn"


def patches(x: torch.Tensor, k: int, stride: int, padding: int, ho: int, wo: int) -> torch.Tensor:
    """The input's patches as a (images x output pixels) by (kernel x kernel x input channels)
    matrix, laid out (i, j, c) so that a channels_last input gives them as a strided view (a
    1x1 kernel at stride 1 copies nothing)."""
    n, c = x.shape[:2]
    xh = x.permute(0, 2, 3, 1)  # (n, h, w, c); a view when x is channels_last
    if k == 1 and stride == 1 and padding == 0:
        return xh.reshape(n * ho * wo, c)
    xp = F.pad(xh, (0, 0, padding, padding, padding, padding)).contiguous()
    sn, sh, sw, sc = xp.stride()
    cols = xp.as_strided((n, ho, wo, k, k, c), (sn, stride * sh, stride * sw, sh, sw, sc))
    return cols.reshape(n * ho * wo, k * k * c)


def weight_grad_mm(g: torch.Tensor, x: torch.Tensor | None, k: int, stride: int, padding: int,
                   cols: torch.Tensor | None = None) -> torch.Tensor:
    """Weight gradient (C_out, C_in, k, k) of a convolution as one matrix product.

    ``gw[o, c, i, j] = sum_{n, h, w} g[n, o, h, w] * xpad[n, c, h * stride + i, w * stride + j]``:
    rows (n, h, w) of the output gradient against the same rows of the input's :func:`patches`
    (``cols``, when already at hand). Returned in channels_last layout (a free view of the
    product)."""
    if cols is None:
        cols = patches(x, k, stride, padding, *g.shape[-2:])
    c = cols.shape[1] // (k * k)
    gm = g.permute(0, 2, 3, 1).reshape(-1, g.shape[1])
    return (gm.t() @ cols).reshape(g.shape[1], k, k, c).permute(0, 3, 1, 2)


def _taps(a: int, k: int, stride: int, padding: int) -> list[tuple[int, int]]:
    """The kernel rows ``i`` that reach input rows ``a, a + stride, ...`` and the output-row
    offset ``d`` of each: input row ``a + stride * t`` takes output row ``t + d`` through ``i``."""
    return [(i, (a + padding - i) // stride) for i in range(k) if (a + padding - i) % stride == 0]


def input_grad_mm(g: torch.Tensor, w: torch.Tensor, shape: torch.Size, k: int, stride: int,
                  padding: int) -> torch.Tensor:
    """Input gradient of a convolution (input ``shape``) from the output gradient ``g`` and the
    weight ``w``, as matrix products; channels_last.

    Where patches do not overlap (kernel no larger than stride) one product gives every patch's
    gradient and each lands on its own input pixels. Otherwise the input pixels are split into
    the stride x stride phases of their position: all pixels of a phase are reached by the same
    kernel taps, so a phase's gradient is one product of the output gradient's matching windows
    with those taps. Either way every input pixel's gradient is one float32 sum rounded once, as
    in oneDNN."""
    n, c, h, wd = shape
    o, ho, wo = g.shape[1], g.shape[2], g.shape[3]
    gh = g.permute(0, 2, 3, 1)  # (n, ho, wo, o); a view when g is channels_last
    if k <= stride:
        gc = gh.reshape(-1, o) @ w.permute(0, 2, 3, 1).reshape(o, -1)
        if k == 1 and stride == 1 and padding == 0:
            return gc.reshape(n, h, wd, c).permute(0, 3, 1, 2)
        gc = gc.reshape(n, ho, wo, k, k, c)
        out = gc.new_zeros((n, h + 2 * padding, wd + 2 * padding, c))
        span_h, span_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1
        for i in range(k):
            for j in range(k):
                out[:, i:i + span_h:stride, j:j + span_w:stride] = gc[:, :, :, i, j]
        return out[:, padding:padding + h, padding:padding + wd].permute(0, 3, 1, 2)
    wt = w.permute(2, 3, 0, 1)  # (k, k, o, c)
    out = g.new_empty((n, h, wd, c))
    for a in range(min(stride, h)):
        ta, nt = _taps(a, k, stride, padding), len(range(a, h, stride))
        for b in range(min(stride, wd)):
            tb, nu = _taps(b, k, stride, padding), len(range(b, wd, stride))
            dst = out[:, a::stride, b::stride]
            if not ta or not tb:
                dst.zero_()
                continue
            top = max(0, -min(d for _, d in ta))
            left = max(0, -min(e for _, e in tb))
            bottom = max(0, nt + max(d for _, d in ta) - ho)
            right = max(0, nu + max(e for _, e in tb) - wo)
            gp = F.pad(gh, (0, 0, left, right, top, bottom))
            cols = torch.stack([gp[:, d + top:d + top + nt, e + left:e + left + nu]
                                for _, d in ta for _, e in tb], dim=3)  # (n, nt, nu, taps, o)
            # the taps of a phase are every stride-th kernel row and column: a view, copied once
            taps = wt[ta[0][0]::stride, tb[0][0]::stride].reshape(-1, c)  # (taps x o, c)
            dst.copy_((cols.reshape(n * nt * nu, -1) @ taps).reshape(n, nt, nu, c))
    return out.permute(0, 3, 1, 2)


def _bias_grad(g: torch.Tensor) -> torch.Tensor:
    return g.float().sum((0, 2, 3)).to(g.dtype)


class _Conv(torch.autograd.Function):
    """oneDNN's forward and input gradient; the weight gradient as :func:`weight_grad_mm`."""

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
        gb = _bias_grad(g) if need_b else None
        return gx, gw, gb, None, None


class _Gemm(torch.autograd.Function):
    """The whole convolution as matrix products: forward ``patches(x) @ W^T`` (the patches are
    kept for the weight gradient), input gradient :func:`input_grad_mm`, weight gradient
    :func:`weight_grad_mm`. Output and input gradient in ``x``'s memory format."""

    @staticmethod
    def forward(ctx, x, w, b, stride: int, padding: int):
        n, _, h, wd = x.shape
        o, k = w.shape[0], w.shape[-1]
        ho, wo = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
        cols = patches(x, k, stride, padding, ho, wo)
        wm = w.permute(0, 2, 3, 1).reshape(o, -1)  # (o, (i, j, c)); a view when w is channels_last
        # written straight into a channels_last output, so that it is no view (in-place
        # activations may follow)
        y = torch.empty((n, o, ho, wo), dtype=cols.dtype, device=cols.device,
                        memory_format=torch.channels_last)
        rows = y.permute(0, 2, 3, 1).view(-1, o)
        if b is None:
            torch.mm(cols, wm.t(), out=rows)
        else:
            torch.addmm(b, cols, wm.t(), out=rows)
        ctx.save_for_backward(cols, w)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, b is not None
        ctx.shape, ctx.fmt = x.shape, memory_format_of(x)
        return y if ctx.fmt == torch.channels_last else y.contiguous(memory_format=ctx.fmt)

    @staticmethod
    def backward(ctx, g):
        cols, w = ctx.saved_tensors
        k = w.shape[-1]
        g = g.contiguous(memory_format=torch.channels_last)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = input_grad_mm(g, w, ctx.shape, k, ctx.stride, ctx.padding).contiguous(memory_format=ctx.fmt)
        if ctx.needs_input_grad[1]:
            gw = weight_grad_mm(g, None, k, ctx.stride, ctx.padding, cols=cols).to(w.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = _bias_grad(g)
        return gx, gw, gb, None, None


class SmallMapConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (no groups, square kernel, equal strides and paddings, no dilation, zero
    padding) whose bf16 training passes on small maps are matrix products, by :func:`route`.
    Under autocast the inputs are cast as autocast casts them for a convolution; without
    gradients (evaluation) and in float32 it is ``nn.Conv2d`` itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device.type
        dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        k, s, p = self.kernel_size[0], self.stride[0], self.padding[0]
        out = [(x.shape[i] + 2 * p - k) // s + 1 for i in (-2, -1)]
        way = route(self.in_channels, k, out[0] * out[1])
        if dt != torch.bfloat16 or way == "onednn" or not torch.is_grad_enabled():
            return super().forward(x)  # nn.Conv2d itself: nothing to gain here
        w, b = self.weight.to(dt), None if self.bias is None else self.bias.to(dt)
        with torch.autocast(dev, enabled=False):
            return (_Gemm if way == "gemm" else _Conv).apply(x.to(dt), w, b, s, p)


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
