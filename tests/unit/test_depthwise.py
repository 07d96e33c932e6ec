"""The depthwise convolutions' backward pass of helpers.run.depthwise: same forward, same
gradients as PyTorch's (to float rounding), installed by training on CPU only where eligible."""
import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import config, models, train
from helpers.run import depthwise

sys.path.insert(0, str(Path(__file__).parent))
from conv_grads import assert_close, swapped_and_reference  # noqa: E402

# (channels, map size, kernel, stride): one per route of input_grad / weight_grad, odd sizes too
CASES = [
    (6, 12, 3, 1),    # 3x3: oneDNN for both gradients
    (6, 11, 3, 2),    # strided 3x3: input gradient by float32 transposed convolution in bf16
    (8, 4, 5, 1),     # 5x5 on a small map: weight gradient by the grouped convolution
    (5, 7, 5, 1),     # the same, odd map
    (4, 20, 5, 1),    # 5x5 on a larger map: float32 oneDNN weight gradient in bf16
    (6, 9, 5, 2),     # strided 5x5
]


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("c,size,k,stride", CASES)
def test_gradients_match_pytorch(c, size, k, stride, channels_last, bf16):
    torch.manual_seed(c * 100 + size)
    if bf16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU does not compute bf16 natively")
    ref = nn.Conv2d(c, c, k, stride=stride, padding=k // 2, groups=c, bias=False)
    (_, gx1, gw1, _, _), (_, gx0, gw0, _, _), fmt = swapped_and_reference(
        ref, depthwise.install, (3, c, size, size), channels_last, bf16)
    assert gx1.shape == gx0.shape and gx1.is_contiguous(memory_format=fmt)
    tol = 1e-3 if bf16 else 1e-5  # bf16: a last-bit difference now and then, sums in another order
    assert_close(gx1, gx0, tol)
    assert_close(gw1, gw0, tol)


def test_each_route_of_the_weight_gradient_is_taken(monkeypatch):
    """The grouped-convolution route runs for a 5x5 kernel on a small map, oneDNN otherwise."""
    calls = []
    real = depthwise._aten_backward
    monkeypatch.setattr(depthwise, "_aten_backward",
                        lambda *a, **k: calls.append(a[1].shape[-1]) or real(*a, **k))
    w5 = torch.randn(4, 1, 5, 5)
    small = torch.randn(2, 4, 6, 6)
    depthwise.weight_grad(torch.randn(2, 4, 6, 6), small, w5, 1, 2)
    assert calls == []  # no oneDNN call: the grouped convolution
    big = torch.randn(2, 4, 20, 20)
    depthwise.weight_grad(torch.randn(2, 4, 20, 20), big, w5, 1, 2)
    assert calls == [20]


def test_install_keeps_parameters_and_names_and_leaves_other_convs():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2, groups=8),
                        nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Conv2d(8, 8, 3, dilation=2, groups=8),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect"))
    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    assert depthwise.install(net) == 1  # only the plain depthwise one
    assert [type(m).__name__ for m in net] == ["Conv2d", "DepthwiseConv2d", "Conv2d", "Conv2d", "Conv2d"]
    assert {k: v.data_ptr() for k, v in net.state_dict().items()} == before


def test_bias_is_added():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=True)
    ref = copy.deepcopy(conv)
    depthwise.install(conv)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv(x), ref(x))


def test_training_on_cpu_installs_it_in_efficientnet_only():
    prof = config.make_profile("smoke")
    eff = train.build(prof, "efficientnet_b4", "cpu")
    n_dw = sum(isinstance(m, depthwise.DepthwiseConv2d) for m in eff.modules())
    assert n_dw == 32  # every MBConv's depthwise convolution of EfficientNet-B4
    plain = models.make_classifier("efficientnet_b4", hidden=prof.head_hidden, dropout=prof.head_dropout)
    assert list(plain.state_dict()) == list(eff.state_dict())  # weights load either way
    assert depthwise.install(plain, "cuda") == 0  # the rules were measured on CPU only
    assert not any(isinstance(m, depthwise.DepthwiseConv2d) for m in plain.modules())
    hr = train.build(prof, "hrnet_w18_small", "cpu")
    assert not any(isinstance(m, depthwise.DepthwiseConv2d) for m in hr.modules())
