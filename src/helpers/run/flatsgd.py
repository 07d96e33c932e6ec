"""SGD's fused step without the layout copies that channels_last parameters cost it on CPU.

``torch.optim.SGD(fused=True)`` hands each parameter, its gradient and its momentum buffer to one
fused kernel, which on CPU first makes each of them contiguous. A channels_last convolution
weight is not, so every step copied the weights of every such layer into NCHW order and the
results back: on ``hrnet_w18_small`` at 2 threads the step over its 13 M parameters took
8.6 ms with channels_last weights and 4.7 ms with contiguous ones (docs/measurements.md).

The update is elementwise, so the order in which memory is walked does not matter as long as
parameter, gradient and buffer are walked alike. :class:`FlatSGD` passes the kernel each of
them as the flat run of memory it already is (a free view), and keeps the momentum buffer in
the parameter's own layout. The buffer starts at zero instead of being a copy of the first
gradient: without dampening ``momentum * 0 + grad`` is ``grad`` exactly, so the parameters
are bit for bit those of ``SGD(fused=True)`` (tests/unit/test_flatsgd.py), and a state dict
has the same keys and shapes.

Training on CPU takes it (:func:`make`); elsewhere, and for the naive reference of
``scripts/bench.py``, ``torch.optim.SGD`` is used as it is.
"""
from __future__ import annotations

import torch

from helpers.run import compute


def order(t: torch.Tensor) -> str | None:
    """The order in which :func:`flat` walks ``t``: ``"c"`` (contiguous), ``"cl"``
    (channels_last) or None (neither)."""
    if t.is_contiguous():
        return "c"
    return "cl" if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) else None


def flat(t: torch.Tensor) -> torch.Tensor:
    """``t``'s memory as a 1-D view (contiguous or channels_last tensors only)."""
    o = order(t)
    if o == "c":
        return t.view(-1)
    if o == "cl":
        return t.permute(0, 2, 3, 1).reshape(-1)  # a view: this permutation is contiguous
    raise ValueError(f"FlatSGD needs contiguous or channels_last tensors, got strides {t.stride()} "
                     f"for shape {tuple(t.shape)}")


class FlatSGD(torch.optim.SGD):
    """``torch.optim.SGD(fused=True)`` whose fused kernel sees every tensor as flat memory.

    Same arguments as ``torch.optim.SGD`` except ``dampening`` (must be 0: see the module's
    note on the zero-initialised buffer), ``foreach`` and ``fused``."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False):
        if dampening != 0:
            raise ValueError("FlatSGD starts the momentum buffer at zero, which equals SGD's first "
                             "step only without dampening; use torch.optim.SGD for dampening != 0")
        super().__init__(params, lr=lr, momentum=momentum, dampening=0.0, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize, fused=True)

    def _flat_pair(self, p: torch.Tensor, momentum: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flat views of ``p`` and its momentum buffer (created at zero in ``p``'s layout, or
        brought into it), kept between steps and made again when either tensor was replaced (a
        loaded state dict, new ``.data``)."""
        state = self.state[p]
        buf = state.get("momentum_buffer") if momentum else None
        if momentum and buf is None:
            buf = state["momentum_buffer"] = torch.zeros_like(p)
        elif buf is not None and order(buf) != order(p):  # e.g. a loaded state, or new ``.data``
            buf = state["momentum_buffer"] = torch.empty_like(p).copy_(buf)
        hit = self._views.get(p)
        if hit is None or hit[0] != p.data_ptr() or hit[1] is not buf:
            hit = self._views[p] = (p.data_ptr(), buf, flat(p), None if buf is None else flat(buf))
        return hit[2], hit[3]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not hasattr(self, "_views"):
            self._views = {}
        for group in self.param_groups:
            ps, gs, bufs = [], [], []
            momentum = group["momentum"] != 0
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError("FlatSGD does not support sparse gradients")
                if order(g) != order(p):  # walk the gradient in the parameter's order
                    g = torch.empty_like(p).copy_(g)
                fp, fb = self._flat_pair(p, momentum)
                ps.append(fp)
                gs.append(flat(g))
                if momentum:
                    bufs.append(fb)
            if ps:
                torch._fused_sgd_(ps, gs, bufs, weight_decay=group["weight_decay"],
                                  momentum=group["momentum"], lr=group["lr"], dampening=0.0,
                                  nesterov=group["nesterov"], maximize=group["maximize"],
                                  is_first_step=False)
        return loss


def make(params, device: str = "cpu", **kw) -> torch.optim.Optimizer:
    """The training SGD: :class:`FlatSGD` on CPU, ``SGD(fused=True)`` on CUDA (where the kernel
    was not measured with this change), ``torch.optim.SGD`` otherwise; ``kw`` as for SGD."""
    if torch.device(device).type == "cpu":
        return FlatSGD(params, **kw)
    return torch.optim.SGD(params, **kw, **compute.fused_optimizer(device))
