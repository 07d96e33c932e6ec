"""The small-map products of helpers.run.smallmap: the route each shape takes; gradients as
PyTorch's (to bf16 rounding) and, where the whole convolution is a product, forward and input
gradient within one bf16 step of the exact values; taken only in bf16 training on small maps,
installed by training on CPU."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import config, models, train
from helpers.run import depthwise, smallmap

sys.path.insert(0, str(Path(__file__).parent))
from conv_grads import assert_close, swapped_and_reference  # noqa: E402

# (in channels, out channels, map size, kernel, stride, the route it takes in bf16)
CASES = [
    (8, 12, 8, 3, 2, "wgrad"),    # 3x3 stride 2, 8x8 -> 4x4, narrow: weight gradient only
    (6, 10, 7, 3, 1, "wgrad"),    # odd map
    (5, 7, 9, 5, 2, "wgrad"),     # 5x5 stride 2
    (512, 12, 8, 3, 2, "gemm"),   # HRNet's head: 3x3 stride 2 onto 4x4, 3 * 3 * 512 >= 4096
    (460, 6, 4, 3, 1, "gemm"),    # 3x3 stride 1 at 4x4: every input pixel in 9 patches
    (16, 24, 4, 1, 1, "gemm"),    # 1x1 at 4x4
    (32, 16, 8, 1, 2, "gemm"),    # 1x1 stride 2 onto 4x4 (ResNet's downsampling shortcut)
    (40, 96, 1, 1, 1, "gemm"),    # 1x1 at 1x1 (EfficientNet's squeeze-and-excitation)
    (4, 6, 10, 3, 1, "onednn"),   # 10x10 output
    (4, 6, 32, 3, 2, "onednn"),   # 16x16 output
]
ROUTE = {"gemm": "_Gemm", "wgrad": "_Conv"}

needs_bf16 = pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                                reason="this CPU does not compute bf16 natively")


def test_route_is_the_documented_rule():
    for ci, co, size, k, stride, way in CASES:
        out = ((size + 2 * (k // 2) - k) // stride + 1) ** 2
        assert smallmap.route(ci, k, out) == way, (ci, co, size, k, stride)
    assert smallmap.route(455, 3, 16) == "wgrad"  # 3 * 3 * 455 < 4096 <= 3 * 3 * 456
    assert smallmap.route(456, 3, 16) == "gemm"
    assert smallmap.route(4096, 3, 25) == "wgrad"  # 5x5 output: too large for the product
    assert smallmap.route(4, 1, 65) == "onednn"


@pytest.mark.parametrize("bf16", [False, pytest.param(True, marks=needs_bf16)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("ci,co,size,k,stride,way", CASES)
def test_gradients_match_pytorch(ci, co, size, k, stride, way, bias, channels_last, bf16, monkeypatch):
    torch.manual_seed(ci * 100 + size + k)
    taken = []
    for name in ROUTE.values():
        fn = getattr(smallmap, name)
        monkeypatch.setattr(fn, "apply", lambda *a, _f=fn.apply, _n=name: taken.append(_n) or _f(*a))
    ref = nn.Conv2d(ci, co, k, stride=stride, padding=k // 2, bias=bias)
    gemm = bf16 and way == "gemm"
    x = torch.randn(3, ci, size, size)
    (y1, gx1, gw1, gb1, g), (y0, gx0, gw0, gb0, _), _ = swapped_and_reference(
        ref, smallmap.install, x.shape, channels_last, bf16, same_forward=not gemm, x=x)
    assert taken == ([ROUTE[way]] if bf16 and way in ROUTE else [])
    # bf16: both sides round float32 sums (in another order) once, so at most one bf16 step
    # (2**-8 of the largest element) apart
    tol = 2.0 ** -8 if bf16 else 1e-5
    if gemm:
        # forward and input gradient are products too; the input gradient's patches are rounded
        # to bf16 before they are summed, so both sides are held to the exact values (float64 on
        # the same bf16 operands) instead of to each other: each within one bf16 step of them
        b16 = [None if t is None else t.detach().bfloat16().double() for t in (x, ref.weight, ref.bias)]
        s, p = (stride, stride), (k // 2, k // 2)
        y_ex = torch.nn.functional.conv2d(*b16, s, p)
        gx_ex = torch.ops.aten.convolution_backward(g.double(), b16[0], b16[1], None, s, p, (1, 1), False,
                                                    (0, 0), 1, (True, False, False))[0]
        for y, gx in ((y1, gx1), (y0, gx0)):
            assert_close(y, y_ex, tol)
            assert_close(gx, gx_ex, tol)
    else:
        assert torch.equal(gx1, gx0)  # the input gradient is oneDNN's
    assert_close(gw1, gw0, tol)
    if bias:
        assert_close(gb1, gb0, tol)


@needs_bf16
def test_the_product_output_takes_in_place_activations():
    """The product's output is no view, so that an in-place activation may follow it (as in
    EfficientNet's squeeze-and-excitation), and its gradient still flows."""
    conv = nn.Conv2d(40, 8, 1)
    smallmap.install(conv)
    x = torch.randn(2, 40, 1, 1, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.nn.functional.silu(conv(x), inplace=True)
    y.float().sum().backward()
    assert x.grad is not None and conv.weight.grad is not None and x.grad.abs().sum() > 0


@needs_bf16
def test_the_product_runs_only_in_bf16_on_small_maps(monkeypatch):
    calls = []
    real = smallmap.weight_grad_mm
    monkeypatch.setattr(smallmap, "weight_grad_mm", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    smallmap.install(conv)
    for size, bf16, grad in ((16, True, True), (18, True, True), (16, False, True), (16, True, False)):
        calls.clear()
        x = torch.randn(2, 4, size, size, requires_grad=grad)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.set_grad_enabled(grad):
            y = conv(x)
        if grad:
            y.float().sum().backward()
        # 16 -> 8x8 = 64 output pixels: the product; 18 -> 9x9: oneDNN; float32 or no grad: oneDNN
        assert len(calls) == (1 if (size, bf16, grad) == (16, True, True) else 0), (size, bf16, grad)


def test_install_keeps_parameters_and_names_and_leaves_other_convs():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2, groups=8),
                        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 8, 3, dilation=2),
                        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.Conv2d(8, 8, (1, 3)))
    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    assert smallmap.install(net) == 1  # only the plain first one
    assert [type(m).__name__ for m in net] == ["SmallMapConv2d"] + ["Conv2d"] * 5
    assert {k: v.data_ptr() for k, v in net.state_dict().items()} == before
    assert smallmap.install(nn.Conv2d(3, 8, 3), "cuda") == 0  # the rule was measured on CPU only


def test_training_on_cpu_installs_both_backward_passes():
    prof = config.make_profile("smoke")
    hr = train.build(prof, "hrnet_w18_small", "cpu")
    plain = models.make_classifier("hrnet_w18_small", hidden=prof.head_hidden, dropout=prof.head_dropout)
    n_conv = sum(type(m) is nn.Conv2d for m in plain.modules())
    assert sum(isinstance(m, smallmap.SmallMapConv2d) for m in hr.modules()) == n_conv > 0
    assert list(plain.state_dict()) == list(hr.state_dict())  # weights load either way
    eff = train.build(prof, "efficientnet_b4", "cpu")
    kinds = {type(m).__name__ for m in eff.modules() if isinstance(m, nn.Conv2d)}
    assert kinds == {"SmallMapConv2d", "DepthwiseConv2d"}
    assert not any(isinstance(m, depthwise.DepthwiseConv2d) for m in hr.modules())


def test_the_unet_takes_it_on_cpu_only():
    from helpers import segment

    prof = config.make_profile("smoke")
    net = segment._net(prof, "cpu")
    assert any(isinstance(m, smallmap.SmallMapConv2d) for m in net.modules())
    plain = models.make_unet(prof.unet_arch, prof.unet_base_channels)
    assert list(plain.state_dict()) == list(net.state_dict())
    segment._net(prof, "cpu", state=plain.state_dict())  # saved folds load into it
