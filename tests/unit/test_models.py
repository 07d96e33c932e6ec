"""Table 4 UNet, eq. (1) Dice, HRNet classifier + Table 7 baselines (all offline, CPU, small)."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from helpers import models as M

# Table 4 of the paper, typed row by row: (layer, C, H, W). Concatenate rows have no output shape in
# the table; theirs is the input shape of the following conv (e.g. Conv2d_6a: 64 x 64 x 512).
PAPER_TABLE4 = [
    ("input", 1, 512, 512),
    ("conv1a", 32, 512, 512), ("conv1b", 32, 512, 512), ("pool1", 32, 256, 256),
    ("conv2a", 64, 256, 256), ("conv2b", 64, 256, 256), ("pool2", 64, 128, 128),
    ("conv3a", 128, 128, 128), ("conv3b", 128, 128, 128), ("pool3", 128, 64, 64),
    ("conv4a", 256, 64, 64), ("conv4b", 256, 64, 64), ("pool4", 256, 32, 32),
    ("conv5a", 512, 32, 32), ("conv5b", 512, 32, 32),
    ("up1", 256, 64, 64), ("concat1", 512, 64, 64), ("conv6a", 256, 64, 64), ("conv6b", 256, 64, 64),
    ("up2", 128, 128, 128), ("concat2", 256, 128, 128), ("conv7a", 128, 128, 128), ("conv7b", 128, 128, 128),
    ("up3", 64, 256, 256), ("concat3", 128, 256, 256), ("conv8a", 64, 256, 256), ("conv8b", 64, 256, 256),
    ("up4", 32, 512, 512), ("concat4", 64, 512, 512), ("conv9a", 32, 512, 512), ("conv9b", 32, 512, 512),
    ("conv10", 1, 512, 512),
]


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------- UNet -----------------------------

def test_table4_shapes_match_paper():
    rows = M.table4_shapes(512, 32)
    assert [(n, *s) for n, s in rows] == PAPER_TABLE4
    assert [n for n, _ in rows] == list(M.TABLE4_NAMES)


def test_paper_unet_parameter_count():
    def conv(cin, cout, k=3):
        return k * k * cin * cout + cout

    c = [32, 64, 128, 256, 512]
    expected = conv(1, 32) + conv(32, 32)
    for a, b in zip(c[:-1], c[1:]):
        expected += conv(a, b) + conv(b, b)                     # encoder 2-4 and bottleneck
    for a, b in zip(c[::-1][:-1], c[::-1][1:]):
        expected += conv(a, b, 2) + conv(2 * b, b) + conv(b, b)  # up-conv + two convs
    expected += conv(32, 1, 1)
    n = M.count_parameters(M.PaperUNet(32))
    assert n == expected
    assert 7.7e6 < n < 7.8e6


def test_paper_unet_small_forward_and_proba():
    torch.manual_seed(0)
    net = M.make_unet("paper", 8)
    x = torch.randn(2, 1, 64, 64)
    logits = net(x)
    assert logits.shape == (2, 1, 64, 64)
    p = net.predict_proba(x)
    assert torch.allclose(p, torch.sigmoid(logits.detach()))
    assert [s for _, s in M.table4_shapes(64, 8)][-1] == (1, 64, 64)
    assert M.count_parameters(net) == pytest.approx(M.count_parameters(M.PaperUNet(32)) / 16, rel=0.01)


def test_paper_unet_batchnorm_flag():
    net = M.PaperUNet(8, batchnorm=True)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in M.PaperUNet(8).modules())
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_smp_unet_builds_offline(offline):
    net = M.make_unet("smp", 8)
    assert net(torch.randn(2, 1, 64, 64)).shape == (2, 1, 64, 64)
    with pytest.raises(ValueError):
        M.make_unet("nope", 8)


# ---------------------------------------------------------------- Dice ------------------------------

def test_dice_coefficient_known_values():
    ones = torch.zeros(1, 1, 4, 4)
    ones[..., :2, :] = 1
    assert M.dice_coefficient(ones, ones).item() == pytest.approx(1.0)
    assert M.dice_coefficient(ones, 1 - ones).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(1, 1, 4, 4)
    assert M.dice_coefficient(empty, empty).item() == pytest.approx(1.0)
    # soft partial overlap: sum pg = 1.5, sum p^2 = 0.25 + 1 + 0.0625 = 1.3125, sum g^2 = 2
    p = torch.tensor([0.5, 1.0, 0.0, 0.25]).view(1, 1, 2, 2)
    g = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    assert M.dice_coefficient(p, g).item() == pytest.approx(3.0 / 3.3125, rel=1e-5)
    # per image
    d = M.dice_coefficient(torch.cat([p, g]), torch.cat([g, g]))
    assert d.shape == (2,)
    assert d[1].item() == pytest.approx(1.0)


def test_dice_loss_gradient_flows():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, requires_grad=True)
    target = (torch.rand(3, 1, 8, 8) > 0.5).float()
    loss = M.dice_loss(logits, target)
    assert 0.0 <= loss.item() <= 1.0
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    expected = 1 - M.dice_coefficient(torch.sigmoid(logits.detach()), target).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_hard_dice_equals_f1():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.random((32, 32)) > 0.6
        b = rng.random((32, 32)) > 0.5
        assert M.hard_dice(a, b) == pytest.approx(f1_score(b.ravel(), a.ravel()))
    assert M.hard_dice(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0
    assert M.hard_dice(torch.ones(4, 4, dtype=torch.bool), torch.ones(4, 4, dtype=torch.bool)) == 1.0


# ---------------------------------------------------------------- classifiers ------------------------

def _target_shape(model, x):
    seen = {}

    def hook(_m, _i, out):
        seen["shape"] = tuple(out.shape)

    h = model.target_layer.register_forward_hook(hook)
    try:
        out = model(x)
    finally:
        h.remove()
    return out, seen["shape"]


@pytest.mark.parametrize("name", ["hrnet_w18_small", "resnet152", "densenet121", "efficientnet_b4"])
def test_classifiers_give_one_logit_and_spatial_target(name, offline):
    torch.manual_seed(0)
    model = M.make_classifier(name, hidden=32, dropout=0.5).eval()
    with torch.no_grad():
        out, tshape = _target_shape(model, torch.randn(2, 3, 64, 64))
        out1 = model(torch.randn(2, 1, 64, 64))      # grayscale replicated inside
    assert out.shape == (2, 1) and out1.shape == (2, 1)
    assert len(tshape) == 4 and tshape[0] == 2 and tshape[2] >= 2 and tshape[3] >= 2
    if name.startswith("hrnet"):
        assert isinstance(model, M.HRNetClassifier)
        assert tshape[2:] == (16, 16)                # 1/4 scale high-resolution branch
        assert model.feature_dim == 2048
        head = [type(m) for m in model.head]
        assert head == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Dropout, torch.nn.Linear]
        assert model.head[-1].out_features == 1


def test_hrnet_backward(offline):
    model = M.make_classifier("hrnet_w18_small", hidden=16, dropout=0.0)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        model(torch.randn(2, 1, 64, 64)), torch.tensor([[1.0], [0.0]]))
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None


def test_count_parameters():
    lin = torch.nn.Linear(3, 2)
    assert M.count_parameters(lin) == 8
    lin.bias.requires_grad_(False)
    assert M.count_parameters(lin, trainable_only=True) == 6


def test_table4_frame_is_laid_out_as_the_paper_prints_it():
    from helpers import models

    t = models.table4_frame(512, 32)
    assert list(t.columns) == ["Layer", "Parameters", "Activation", "Output Shape"]
    assert len(t) == 32  # Input + 31 rows, Conv2d_1a ... Conv2d_10, as in Table 4
    rows = {r.Layer: r for r in t.itertuples(index=False) if r.Layer != "Concatenate"}
    # a few rows copied from the paper's Table 4
    assert (rows["Conv2d_1a"].Parameters, rows["Conv2d_1a"]._3) == ("512 x 512 x 1", "512 x 512 x 32")
    assert (rows["Conv2d_6a"].Parameters, rows["Conv2d_6a"]._3) == ("64 x 64 x 512", "64 x 64 x 256")
    assert rows["Conv2D_trans_4"]._3 == "512 x 512 x 32" and rows["MaxPooling2d_4"]._3 == "32 x 32 x 256"
    concat = t[t["Layer"] == "Concatenate"]
    assert concat["Parameters"].tolist()[0] == "Conv2D_trans_1, Conv2d_4b" and len(concat) == 4


def test_table3_frame_keeps_the_papers_columns():
    from helpers import augment

    t = augment.table3_frame()
    assert list(t.columns[:3]) == ["Process", "Values", "Probability"]
    assert t.set_index("Process").loc["Shear", "Probability"] == 0.7 and len(t) == 9
