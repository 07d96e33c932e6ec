"""Networks and losses: the UNet of Table 4 (sections 3.2, 4.2), the Dice loss of eq. (1), the HRNet
classifier of section 3.4 with the fully connected head of Fig. 11 (section 4.3), and the Table 7
baselines (ResNet152, DenseNet121, EfficientNet-B4).

Everything is built offline and from random weights: ``pretrained=False`` for timm,
``encoder_weights=None`` for smp.

UNet (Table 4)
    :class:`PaperUNet` mirrors Table 4 layer by layer (names ``conv1a`` ... ``conv10``; see
    :data:`TABLE4_NAMES` for the paper's names). Table 4 gives ReLU as the activation of the
    1 x 1 output layer, which cannot produce a probability map for a Dice loss; the module returns
    **logits** and :meth:`PaperUNet.predict_proba` applies the sigmoid. Training uses
    :func:`dice_loss`, i.e. eq. (1) on ``sigmoid(logits)``. Table 4 has no batch normalisation;
    ``batchnorm=True`` adds it after every 3 x 3 conv should training from scratch be unstable.
    Convolutions use He (Kaiming) normal initialisation, suited to ReLU nets trained from scratch.

HRNet classifier (section 3.4, Fig. 11)
    :class:`HRNetClassifier` = timm HRNet backbone with ``num_classes=0`` (timm's classification
    neck: incre modules on the four stage-4 branches, downsampling fusion and a 1 x 1 conv to
    2048 channels, global average pooled: a 2048-d vector) + the head of Fig. 11:
    Linear(2048, hidden) - ReLU - Dropout(p) - Linear(hidden, 1). One logit per image, for
    ``BCEWithLogitsLoss`` (binary cross-entropy, section 4.3).

    Input channels: the backbone takes 3 channels (``in_chans=3``) so that local ImageNet weights
    stay loadable; grayscale inputs of shape (B, 1, H, W) are replicated to 3 channels inside
    ``forward``, so datasets may hand over one channel.

    Grad-CAM target (:attr:`HRNetClassifier.target_layer`): ``backbone.incre_modules[0]``, the
    bottleneck applied to the highest-resolution (1/4 scale) output of the last fused stage
    (stage 4). It gives H/4 x W/4 maps (40 x 40 at 160 px, 128 x 128 at 512 px) while every
    gradient still flows through the classification path. The final 2048-channel conv
    (``backbone.final_layer``, 1/32 scale: 2 x 2 at 64 px) is available as
    :attr:`HRNetClassifier.coarse_target_layer`.

Baselines (Table 7)
    :func:`make_classifier` wraps any other timm model (``num_classes=1``) in
    :class:`TimmClassifier`, whose ``target_layer`` is the last 1/32-scale feature stage (timm's
    ``feature_info``; ``bn2`` after ``conv_head`` for EfficientNets): ``layer4`` for ResNets,
    ``features.norm5`` for DenseNets.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "PaperUNet", "make_unet", "table4_shapes", "table4_frame", "TABLE4_NAMES",
    "dice_coefficient", "dice_loss", "hard_dice",
    "HRNetClassifier", "TimmClassifier", "make_classifier",
    "count_parameters",
]

# ------------------------------------------------------------------------------------------------
# UNet of Table 4
# ------------------------------------------------------------------------------------------------

#: module name -> layer name in Table 4 (rows in Table 4 order; "input" is the input tensor)
TABLE4_NAMES: dict[str, str] = {
    "input": "Input",
    "conv1a": "Conv2d_1a", "conv1b": "Conv2d_1b", "pool1": "MaxPooling2d_1",
    "conv2a": "Conv2d_2a", "conv2b": "Conv2d_2b", "pool2": "MaxPooling2d_2",
    "conv3a": "Conv2d_3a", "conv3b": "Conv2d_3b", "pool3": "MaxPooling2d_3",
    "conv4a": "Conv2d_4a", "conv4b": "Conv2d_4b", "pool4": "MaxPooling2d_4",
    "conv5a": "Conv2d_5a", "conv5b": "Conv2d_5b",
    "up1": "Conv2D_trans_1", "concat1": "Concatenate (Conv2D_trans_1, Conv2d_4b)",
    "conv6a": "Conv2d_6a", "conv6b": "Conv2d_6b",
    "up2": "Conv2D_trans_2", "concat2": "Concatenate (Conv2D_trans_2, Conv2d_3b)",
    "conv7a": "Conv2d_7a", "conv7b": "Conv2d_7b",
    "up3": "Conv2D_trans_3", "concat3": "Concatenate (Conv2D_trans_3, Conv2d_2b)",
    "conv8a": "Conv2d_8a", "conv8b": "Conv2d_8b",
    "up4": "Conv2D_trans_4", "concat4": "Concatenate (Conv2D_trans_4, Conv2d_1b)",
    "conv9a": "Conv2d_9a", "conv9b": "Conv2d_9b",
    "conv10": "Conv2d_10",
}


class _ConvReLU(nn.Sequential):
    """3 x 3 conv (padding 1) [+ BatchNorm] + ReLU: one "Conv2d_*" row of Table 4."""

    def __init__(self, cin: int, cout: int, batchnorm: bool = False):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batchnorm)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class _Concat(nn.Module):
    """Channel concatenation (a module so that forward hooks can report its shape)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b], dim=1)


class PaperUNet(nn.Module):
    """The UNet of Table 4: 1-channel input, channels base x (1, 2, 4, 8, 16), 1-channel LOGITS.

    Kept by hand: segmentation-models-pytorch's Unet has an encoder backbone, not Table 4's layers.

    ``base=32`` gives Table 4 exactly (32-64-128-256-512). The input side must be divisible by 16.
    """

    def __init__(self, base: int = 32, batchnorm: bool = False, in_channels: int = 1):
        super().__init__()
        c1, c2, c3, c4, c5 = (base * m for m in (1, 2, 4, 8, 16))
        self.base = base
        bn = batchnorm
        # contracting path
        self.conv1a = _ConvReLU(in_channels, c1, bn)
        self.conv1b, self.pool1 = _ConvReLU(c1, c1, bn), nn.MaxPool2d(2)
        self.conv2a, self.conv2b, self.pool2 = _ConvReLU(c1, c2, bn), _ConvReLU(c2, c2, bn), nn.MaxPool2d(2)
        self.conv3a, self.conv3b, self.pool3 = _ConvReLU(c2, c3, bn), _ConvReLU(c3, c3, bn), nn.MaxPool2d(2)
        self.conv4a, self.conv4b, self.pool4 = _ConvReLU(c3, c4, bn), _ConvReLU(c4, c4, bn), nn.MaxPool2d(2)
        # bottleneck
        self.conv5a, self.conv5b = _ConvReLU(c4, c5, bn), _ConvReLU(c5, c5, bn)
        # expanding path
        self.up1, self.concat1 = nn.ConvTranspose2d(c5, c4, 2, stride=2), _Concat()
        self.conv6a, self.conv6b = _ConvReLU(2 * c4, c4, bn), _ConvReLU(c4, c4, bn)
        self.up2, self.concat2 = nn.ConvTranspose2d(c4, c3, 2, stride=2), _Concat()
        self.conv7a, self.conv7b = _ConvReLU(2 * c3, c3, bn), _ConvReLU(c3, c3, bn)
        self.up3, self.concat3 = nn.ConvTranspose2d(c3, c2, 2, stride=2), _Concat()
        self.conv8a, self.conv8b = _ConvReLU(2 * c2, c2, bn), _ConvReLU(c2, c2, bn)
        self.up4, self.concat4 = nn.ConvTranspose2d(c2, c1, 2, stride=2), _Concat()
        self.conv9a, self.conv9b = _ConvReLU(2 * c1, c1, bn), _ConvReLU(c1, c1, bn)
        self.conv10 = nn.Conv2d(c1, 1, 1)  # Table 4 says ReLU; we return logits (module docstring)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.conv10.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) image -> (B, 1, H, W) logits."""
        e1 = self.conv1b(self.conv1a(x))
        e2 = self.conv2b(self.conv2a(self.pool1(e1)))
        e3 = self.conv3b(self.conv3a(self.pool2(e2)))
        e4 = self.conv4b(self.conv4a(self.pool3(e3)))
        b = self.conv5b(self.conv5a(self.pool4(e4)))
        d = self.conv6b(self.conv6a(self.concat1(self.up1(b), e4)))
        d = self.conv7b(self.conv7a(self.concat2(self.up2(d), e3)))
        d = self.conv8b(self.conv8a(self.concat3(self.up3(d), e2)))
        d = self.conv9b(self.conv9a(self.concat4(self.up4(d), e1)))
        return self.conv10(d)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid lung probability map (B, 1, H, W)."""
        return torch.sigmoid(self(x).float())


def make_unet(arch: str = "paper", base: int = 32, batchnorm: bool = False) -> nn.Module:
    """``"paper"``: :class:`PaperUNet` (Table 4); ``"smp"``: segmentation_models_pytorch.Unet with a
    ResNet18 encoder, random init, 1 input channel, 1 logit channel. Both return logits."""
    if arch == "paper":
        return PaperUNet(base=base, batchnorm=batchnorm)
    if arch == "smp":
        import segmentation_models_pytorch as smp

        return smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=1, classes=1,
                        activation=None)
    raise ValueError(f"unknown UNet arch {arch!r}; choose 'paper' or 'smp'")


def _trace_table4(size: int, base: int) -> list[tuple[str, tuple, tuple]]:
    """(module name, input shape, output shape) of every Table 4 layer, in forward order.

    Runs on the ``meta`` device: shapes only, no memory or compute. Shapes are (C, H, W).
    """
    with torch.device("meta"):
        model = PaperUNet(base=base)
    rows: list[tuple[str, tuple, tuple]] = []
    handles = []
    for name in TABLE4_NAMES:
        if name == "input":
            continue
        handles.append(getattr(model, name).register_forward_hook(
            lambda _m, inputs, out, name=name: rows.append(
                (name, tuple(int(v) for v in inputs[0].shape[1:]), tuple(int(v) for v in out.shape[1:])))))
    try:
        with torch.no_grad():
            model(torch.empty(1, 1, size, size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return rows


def table4_shapes(size: int = 512, base: int = 32) -> list[tuple[str, tuple[int, int, int]]]:
    """(module name, output shape (C, H, W)) for every Table 4 row, from forward hooks.

    Names map to the paper's via :data:`TABLE4_NAMES`.
    """
    return [("input", (1, size, size))] + [(n, out) for n, _, out in _trace_table4(size, base)]


def table4_frame(size: int = 512, base: int = 32):
    """Table 4 as the paper lays it out: Layer, Parameters (the input), Activation, Output Shape.

    Shapes are written H x W x C as in the paper. The output layer returns logits (the sigmoid is
    applied in the loss and in ``predict_proba``), where the paper's table says ReLU.
    """
    import pandas as pd

    def hwc(shape) -> str:
        c, h, w = shape
        return f"{h} x {w} x {c}"

    rows = [{"Layer": "Input", "Parameters": "-", "Activation": "-", "Output Shape": f"{size} x {size} x 1"}]
    for name, inp, out in _trace_table4(size, base):
        paper = TABLE4_NAMES[name]
        params = paper.split("(", 1)[1].rstrip(")") if name.startswith("concat") else hwc(inp)
        act = "none (logits)" if name == "conv10" else "ReLU" if name.startswith("conv") else "-"
        rows.append({"Layer": "Concatenate" if name.startswith("concat") else paper, "Parameters": params,
                     "Activation": act, "Output Shape": hwc(out)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Dice, eq. (1)
# ------------------------------------------------------------------------------------------------

def dice_coefficient(prob: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft Dice of eq. (1), per image: D = 2 sum(p g) / (sum p^2 + sum g^2).

    Kept by hand: segmentation-models-pytorch's DiceLoss divides by sum(p) + sum(g), not eq. (1)'s squares.

    ``prob`` and ``target``: (B, 1, H, W) (any shape with a leading batch axis) in [0, 1].
    ``eps`` is added to numerator and denominator, so two empty maps give D = 1. Returns (B,).
    """
    p = prob.float().flatten(1)
    g = target.float().flatten(1)
    num = 2.0 * (p * g).sum(1)
    den = (p * p).sum(1) + (g * g).sum(1)
    return (num + eps) / (den + eps)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - mean Dice (eq. 1) over the batch, on ``sigmoid(logits)``; computed in float32."""
    return 1.0 - dice_coefficient(torch.sigmoid(logits.float()), target, eps).mean()


def hard_dice(pred: Any, target: Any) -> float:
    """Binary Dice 2|A n B| / (|A| + |B|) over all given pixels (= F1); both empty -> 1.0.

    Accepts numpy arrays or tensors of bools (or anything where nonzero means foreground).
    """
    a = (pred.detach().cpu().numpy() if torch.is_tensor(pred) else np.asarray(pred)).astype(bool)
    b = (target.detach().cpu().numpy() if torch.is_tensor(target) else np.asarray(target)).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


# ------------------------------------------------------------------------------------------------
# Classifiers
# ------------------------------------------------------------------------------------------------

class HRNetClassifier(nn.Module):
    """HRNet backbone (timm, random init) + Fig. 11 head; returns (B, 1) logits."""

    def __init__(self, name: str = "hrnet_w18", hidden: int = 512, dropout: float = 0.5,
                 in_chans: int = 3):
        super().__init__()
        import timm

        self.name = name
        self.in_chans = in_chans
        self.backbone = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans)
        self.feature_dim = int(self.backbone.num_features)
        self.head = nn.Sequential(
            nn.Linear(self.feature_dim, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    @property
    def target_layer(self) -> nn.Module:
        """Grad-CAM layer: the incre module on stage 4's highest-resolution branch (1/4 scale)."""
        return self.backbone.incre_modules[0]

    @property
    def coarse_target_layer(self) -> nn.Module:
        """The final 2048-channel feature conv (1/32 scale)."""
        return self.backbone.final_layer

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, feature_dim)."""
        if x.shape[1] == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TimmClassifier(nn.Module):
    """Any timm classifier with one output logit (Table 7 baselines); same contract as HRNet's."""

    def __init__(self, name: str, in_chans: int = 3):
        super().__init__()
        import timm

        self.name = name
        self.in_chans = in_chans
        self.model = timm.create_model(name, pretrained=False, num_classes=1, in_chans=in_chans)
        self._target_name = self._find_target_layer()

    def _find_target_layer(self) -> str:
        conv_head = getattr(self.model, "conv_head", None)
        if isinstance(conv_head, nn.Conv2d):
            bn2 = getattr(self.model, "bn2", None)
            return "bn2" if isinstance(bn2, nn.Module) and not isinstance(bn2, nn.Identity) else "conv_head"
        info = getattr(self.model, "feature_info", None)
        if info:
            last = info[-1]
            return last["module"] if isinstance(last, dict) else info.module_name()[-1]
        raise ValueError(f"cannot find a Grad-CAM target layer for {self.name!r}")

    @property
    def target_layer(self) -> nn.Module:
        """Grad-CAM layer: the last 1/32-scale conv stage."""
        return self.model.get_submodule(self._target_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        return self.model(x)


def make_classifier(name: str, hidden: int = 512, dropout: float = 0.5, in_chans: int = 3) -> nn.Module:
    """``"hrnet*"`` -> :class:`HRNetClassifier`; any other timm name -> :class:`TimmClassifier`.

    Both map (B, 1 or 3, H, W) images to (B, 1) logits and expose ``.target_layer``.
    """
    if name.startswith("hrnet"):
        return HRNetClassifier(name, hidden=hidden, dropout=dropout, in_chans=in_chans)
    return TimmClassifier(name, in_chans=in_chans)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
