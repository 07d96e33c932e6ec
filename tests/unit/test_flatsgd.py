"""helpers.run.flatsgd: the same parameters as torch's SGD, bit for bit, on contiguous and
channels_last tensors; state dicts interchangeable; training on CPU takes it."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from helpers import config, train
from helpers.run import flatsgd


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 2))


def _steps(net, opt, grads):
    for gs in grads:
        for p, g in zip(net.parameters(), gs):
            p.grad = None if g is None else g.clone()
        opt.step()


def _grads(net, n: int, skip: int | None = None, layout=None):
    """``n`` steps of gradients, in each parameter's own layout (or ``layout`` for the 4-D ones)."""
    gen = torch.Generator().manual_seed(1)
    def one(p):
        g = torch.randn(p.shape, generator=gen)
        if layout is None:
            return torch.empty_like(p).copy_(g)
        return g.contiguous(memory_format=layout if p.dim() == 4 else torch.contiguous_format)
    return [[None if i == skip else one(p) for i, p in enumerate(net.parameters())] for _ in range(n)]


def _close(a, b):
    """float32 rounding: SGD's Python loop and the fused kernel order the same sums differently."""
    return all(torch.allclose(x, y, rtol=0, atol=1e-6) for x, y in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("kw", [dict(momentum=0.9, weight_decay=1e-4), dict(momentum=0.9, nesterov=True),
                                dict(momentum=0.0, weight_decay=1e-3), dict(momentum=0.5, maximize=True)],
                         ids=["momentum+decay", "nesterov", "plain", "maximize"])
def test_bit_for_bit_torch_sgd(fmt, kw):
    ref = _net().to(memory_format=fmt)
    grads = _grads(ref, 4, skip=1)  # one parameter without a gradient: skipped, as SGD does
    out = {}
    for name, make in [("flat", lambda ps: flatsgd.FlatSGD(ps, lr=0.05, **kw)),
                       ("fused", lambda ps: torch.optim.SGD(ps, lr=0.05, fused=True, **kw)),
                       ("loop", lambda ps: torch.optim.SGD(ps, lr=0.05, foreach=False, **kw))]:
        net = copy.deepcopy(ref)
        opt = make(net.parameters())
        _steps(net, opt, grads)
        out[name] = (net, opt)
    flat, fused = out["flat"], out["fused"]
    for a, b in zip(flat[0].parameters(), fused[0].parameters()):
        assert torch.equal(a, b)
        assert a.stride() == b.stride()  # the layout is the parameter's own throughout
    assert _close(flat[0], out["loop"][0])
    ps = list(ref.parameters())
    assert not torch.equal(ps[0], list(flat[0].parameters())[0])  # the step did move them
    if kw["momentum"]:
        for i, (a, b) in enumerate(zip(flat[0].parameters(), fused[0].parameters())):
            if i != 1:  # the parameter without gradients has no buffer
                assert torch.equal(flat[1].state[a]["momentum_buffer"], fused[1].state[b]["momentum_buffer"])


def test_state_dicts_are_interchangeable_with_torch_sgd():
    kw = dict(lr=0.05, momentum=0.9, weight_decay=1e-4)
    ref = _net().to(memory_format=torch.channels_last)
    grads = _grads(ref, 6)
    whole = copy.deepcopy(ref)
    _steps(whole, torch.optim.SGD(whole.parameters(), fused=True, **kw), grads)
    # three steps with FlatSGD, then its state continued by torch's SGD, and the other way round
    for first, second in [(flatsgd.FlatSGD, lambda ps, **k: torch.optim.SGD(ps, fused=True, **k)),
                          (lambda ps, **k: torch.optim.SGD(ps, fused=True, **k), flatsgd.FlatSGD)]:
        net = copy.deepcopy(ref)
        opt = first(net.parameters(), **kw)
        _steps(net, opt, grads[:3])
        opt2 = second(net.parameters(), **kw)
        opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
        _steps(net, opt2, grads[3:])
        for a, b in zip(net.parameters(), whole.parameters()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("fmt,grad_fmt", [(torch.channels_last, torch.contiguous_format),
                                          (torch.contiguous_format, torch.channels_last)])
def test_a_gradient_in_another_layout_than_its_parameter(fmt, grad_fmt):
    """Walked in the parameter's order: the same update as SGD's Python loop. (torch 2.14.1's
    fused CPU kernel walks the two in different orders here and mixes up elements.)"""
    ref = _net().to(memory_format=fmt)
    grads = _grads(ref, 3, layout=grad_fmt)
    net, loop = copy.deepcopy(ref), copy.deepcopy(ref)
    _steps(net, flatsgd.FlatSGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4), grads)
    kw = dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
    _steps(loop, torch.optim.SGD(loop.parameters(), foreach=False, **kw), grads)
    assert _close(net, loop)
    assert all(p.stride() == q.stride() for p, q in zip(net.parameters(), ref.parameters()))


def test_replaced_data_is_updated_not_the_old_storage():
    ref = _net().to(memory_format=torch.channels_last)
    net, loop = copy.deepcopy(ref), copy.deepcopy(ref)
    grads = _grads(ref, 3)
    opt = flatsgd.FlatSGD(net.parameters(), lr=0.1, momentum=0.9)
    opt2 = torch.optim.SGD(loop.parameters(), lr=0.1, momentum=0.9, foreach=False)
    _steps(net, opt, grads[:2])
    _steps(loop, opt2, grads[:2])
    w = net[0].weight
    w.data = w.data.contiguous()  # new storage: the views kept from before must not be used
    _steps(net, opt, grads[2:])
    _steps(loop, opt2, grads[2:])
    assert _close(net, loop)


def test_dampening_is_refused_and_flat_names_the_layout():
    with pytest.raises(ValueError, match="dampening"):
        flatsgd.FlatSGD(_net().parameters(), lr=0.1, momentum=0.9, dampening=0.1)
    with pytest.raises(ValueError, match="strides"):
        flatsgd.flat(torch.randn(4, 6)[:, ::2])


def test_training_on_cpu_takes_it(monkeypatch):
    assert isinstance(flatsgd.make(_net().parameters(), "cpu", lr=0.1, momentum=0.9), flatsgd.FlatSGD)
    prof = config.make_profile("smoke", {"cls_epochs": 1})
    seen = []
    real = flatsgd.make
    monkeypatch.setattr(flatsgd, "make", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, prof.cls_size, prof.cls_size), dtype=np.uint8)
    y = np.arange(12) % 2
    train.train_fold(prof, prof.hrnet, images, y, np.arange(8), np.arange(8, 12), seed=0, device="cpu")
    assert len(seen) == 1 and isinstance(seen[0], flatsgd.FlatSGD)
