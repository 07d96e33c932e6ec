"""A faster backward pass for depthwise convolutions on CPU (EfficientNet-B4's 3x3 and 5x5 ones).

The forward pass is PyTorch's own convolution, unchanged. The backward pass computes the same
two gradients by other routes where oneDNN's depthwise backward is slow on CPU. Measured on the
2-core machine (docs/measurements.md), batch 16 at 128 px, channels_last:

* the weight gradient of a 5x5 depthwise convolution on a small feature map takes oneDNN 12-26 ms
  (e.g. 1632 channels at 4x4, bf16: 25.8 ms); written as one float32 grouped convolution that
  slides the output gradient over the padded input (every channel of every image its own group,
  then a sum over the batch) it takes 1.4-2.5 ms on maps up to 16x16;
* the input gradient of a strided depthwise convolution in bf16 takes oneDNN 13-31 ms; the
  transposed convolution in float32 takes 0.5-13 ms;
* a 5x5 weight gradient on a larger map in bf16 is faster in float32 (16.8 -> 4.4 ms).

Everything else keeps oneDNN's backward. The rules depend only on the layer's shape and dtype
(no timing at run time), so a run computes the same numbers every time. Gradients agree with
PyTorch's to float rounding (tests/unit/test_depthwise.py): the same sums, in another order.

:func:`install` swaps every depthwise ``nn.Conv2d`` of a model for :class:`DepthwiseConv2d`,
which holds the same parameters under the same names (state dicts load either way). Training on
CPU takes it (:func:`helpers.train.build`); the naive reference of ``scripts/bench.py`` does not.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: a weight gradient on a map of at most this many pixels per image goes through the grouped
#: convolution (at 32x32 = 1024 it was slower than oneDNN in float32: 10.3 against 4.4 ms)
SMALL_MAP = 16 * 16
#: kernels at least this wide have the slow oneDNN weight gradient (3x3 ones are fast)
WIDE_KERNEL = 5


def _aten_backward(g, x, w, stride, padding, mask):
    return torch.ops.aten.convolution_backward(g, x, w, None, [stride, stride], [padding, padding],
                                               [1, 1], False, [0, 0], w.shape[0], mask)


def input_grad(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stride: int, padding: int
               ) -> torch.Tensor:
    """Gradient of a depthwise convolution with respect to its input ``x``."""
    if stride > 1 and g.dtype == torch.bfloat16:
        k, size = w.shape[-1], x.shape[-2:]
        out_pad = [size[i] - ((g.shape[-2 + i] - 1) * stride - 2 * padding + k) for i in range(2)]
        gi = F.conv_transpose2d(g.float(), w.float(), stride=stride, padding=padding,
                                output_padding=out_pad, groups=w.shape[0])
        return gi.to(x.dtype).contiguous(memory_format=memory_format_of(x))
    return _aten_backward(g, x, w, stride, padding, [True, False, False])[0]


def weight_grad(g: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stride: int, padding: int
                ) -> torch.Tensor:
    """Gradient of a depthwise convolution with respect to its weight ``w`` (C, 1, k, k)."""
    k = w.shape[-1]
    if k < WIDE_KERNEL:
        return _aten_backward(g, x, w, stride, padding, [False, True, False])[1]
    n, c, h, wd = x.shape
    if stride == 1 and h * wd <= SMALL_MAP:
        # gw[c, i, j] = sum_n sum_hw xpad[n, c, h + i, w + j] * g[n, c, h, w]: a convolution of
        # each padded input channel (one group per image and channel) with its output gradient,
        # in float32 (as oneDNN accumulates bf16), rounded once at the end; NCHW makes the
        # (image, channel) groups a free reshape
        nchw = dict(dtype=torch.float32, memory_format=torch.contiguous_format)
        xp = F.pad(x.to(**nchw), (padding, padding, padding, padding))
        per_image = F.conv2d(xp.reshape(1, n * c, *xp.shape[-2:]),
                             g.to(**nchw).reshape(n * c, 1, *g.shape[-2:]), groups=n * c)
        return per_image.reshape(n, c, k, k).sum(0).unsqueeze(1).to(w.dtype)
    # oneDNN's float32 route (no copies for float32 inputs; bf16 ones are 4x faster this way)
    return _aten_backward(g.float(), x.float(), w.float(), stride, padding,
                          [False, True, False])[1].to(w.dtype)


def memory_format_of(t: torch.Tensor):
    """channels_last for a 4-D tensor laid out so (and not also plain contiguous), else contiguous."""
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, stride: int, padding: int):
        ctx.save_for_backward(x, w)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, w, None, stride, padding, 1, w.shape[0])

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g = g.contiguous(memory_format=memory_format_of(x))
        gi = input_grad(g, x, w, ctx.stride, ctx.padding) if ctx.needs_input_grad[0] else None
        gw = weight_grad(g, x, w, ctx.stride, ctx.padding) if ctx.needs_input_grad[1] else None
        return gi, gw, None, None


def depthwise_conv2d(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """``F.conv2d(x, w, stride=stride, padding=padding, groups=C)`` with the backward pass of this
    module. Under autocast the inputs are cast as autocast would cast them for a convolution."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        x, w = x.to(dt), w.to(dt)
    with torch.autocast(dev, enabled=False):
        return _DepthwiseConv.apply(x, w, stride, padding)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` (square kernel, equal strides and paddings, no dilation, zero
    padding) whose backward pass is :func:`input_grad` / :func:`weight_grad`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = depthwise_conv2d(x, self.weight, self.stride[0], self.padding[0])
        return y if self.bias is None else y + self.bias.to(y.dtype).view(1, -1, 1, 1)


def eligible(m: nn.Module) -> bool:
    """Whether ``m`` is a depthwise convolution :class:`DepthwiseConv2d` can stand in for."""
    return (type(m) is nn.Conv2d and m.groups == m.in_channels == m.out_channels and m.groups > 1
            and m.kernel_size[0] == m.kernel_size[1] and m.stride[0] == m.stride[1]
            and isinstance(m.padding, tuple) and m.padding[0] == m.padding[1]
            and m.dilation == (1, 1) and m.padding_mode == "zeros")


def install(model: nn.Module, device: str = "cpu") -> int:
    """Give every eligible depthwise convolution of ``model`` this module's backward pass (in
    place: the same parameter objects, names and memory format); returns how many. Only on CPU,
    where the rules were measured: on another ``device`` the model is left as it is (0)."""
    if torch.device(device).type != "cpu":
        return 0
    n = 0
    for m in model.modules():
        if eligible(m):
            m.__class__ = DepthwiseConv2d  # same attributes and parameters; only forward differs
            n += 1
    return n
