"""Grad-CAM heat maps and how much of their heat falls on the lungs (section 4.2-4.3, Figs. 9, 12).

The paper shows heat maps of a classifier trained without segmentation (Fig. 9, "focused regions
redundant") and with it (Fig. 12). Pictures of a few images cannot carry that claim, so here every
test image gets a heat map from its own fold's model and the share of the heat inside the lung mask
is measured: ``share = sum(heat * lung) / sum(heat)``. Under uniform heat the share equals the lung
area fraction, reported alongside as the chance level.
"""
from __future__ import annotations

import numpy as np
import torch

from helpers.train import to_input


def gradcam(model: torch.nn.Module, images: np.ndarray, categories: np.ndarray,
            device: str = "cpu", batch: int = 16) -> np.ndarray:
    """Grad-CAM of ``model.target_layer`` for each image's category (1 = covid, 0 = normal).

    images: uint8 (N, S, S); returns float32 (N, S, S) in [0, 1] (each map scaled to max 1; an
    all-zero map stays zero).
    """
    # imported here: pytorch_grad_cam pulls in torchvision's models (about 1.5 s), which every
    # notebook importing this module for its tables alone would otherwise pay
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    model.eval()
    out = np.zeros(images.shape, dtype=np.float32)
    if len(images) == 0:
        return out
    with GradCAM(model=model, target_layers=[model.target_layer]) as cam:
        for s in range(0, len(images), batch):
            x = to_input(np.asarray(images[s:s + batch]), device).float()
            targets = [BinaryClassifierOutputTarget(int(c)) for c in categories[s:s + batch]]
            with torch.enable_grad():
                h = cam(input_tensor=x, targets=targets)
            out[s:s + batch] = np.nan_to_num(h.astype(np.float32))
    return out


def heat_share(heat: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Share of each map's heat inside its mask: float64 (N,) in [0, 1] (nan for an all-zero map)."""
    heat = np.asarray(heat, dtype=np.float64)
    m = (np.asarray(masks) > 0).astype(np.float64)
    if heat.shape != m.shape:
        raise ValueError(f"heat {heat.shape} and masks {m.shape} differ in shape")
    tot = heat.reshape(len(heat), -1).sum(1)
    inside = (heat * m).reshape(len(heat), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, inside / tot, np.nan)


def area_fraction(masks: np.ndarray) -> np.ndarray:
    """Lung area / image area per mask: float64 (N,) — the share a uniform heat map would give."""
    m = np.asarray(masks) > 0
    return m.reshape(len(m), -1).mean(1).astype(np.float64)


def map_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between paired heat maps: float64 (N,), for the randomisation check."""
    from scipy.stats import spearmanr

    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a, b)):
        x, y = np.ravel(x), np.ravel(y)
        if x.std() > 0 and y.std() > 0:
            out[i] = spearmanr(x, y).statistic
    return out


def fold_hook(images: np.ndarray, y: np.ndarray, device: str = "cpu"):
    """An ``after_fold`` callback for :func:`helpers.train.cross_validate`: Grad-CAM of every test
    image by its own fold's model, stored as float16 maps with their row positions."""

    def hook(k: int, model, test_idx: np.ndarray) -> dict:
        heat = gradcam(model, np.asarray(images[test_idx]), np.asarray(y)[test_idx], device)
        return {"rows": np.asarray(test_idx), "heat": heat.astype(np.float16)}

    return hook


def collect(stage_dir, tag: str, n: int) -> np.ndarray:
    """Reassemble the per-fold heat maps of ``tag`` into float32 (n, S, S) in row order."""
    from pathlib import Path

    files = sorted(Path(stage_dir, tag).glob("fold*_extra.npz"))
    if not files:
        raise FileNotFoundError(f"no Grad-CAM files in {Path(stage_dir, tag)}")
    out = None
    for f in files:
        z = np.load(f)
        if out is None:
            out = np.full((n,) + z["heat"].shape[1:], np.nan, dtype=np.float32)
        out[z["rows"]] = z["heat"].astype(np.float32)
    return out


def share_table(index, heat: np.ndarray, masks: dict[str, np.ndarray], model: str):
    """Per-image share of heat inside each named mask, plus the uniform-heat chance level."""
    t = index[[c for c in ("image_id", "patient_id", "fold", "label", "source") if c in index]].copy()
    t["model"] = model
    for name, m in masks.items():
        t[f"share_{name}"] = heat_share(heat, m)
        t[f"area_{name}"] = area_fraction(m)
    return t.reset_index(drop=True)


def randomisation_check(profile, name: str, stage_dir, tag: str, images: np.ndarray, y: np.ndarray,
                        index, device: str = "cpu", n: int = 32, fold: int = 0, seed: int = 0):
    """Model-randomisation sanity check (Adebayo et al., 2018): Grad-CAM maps of the trained fold
    model against those of the same network with freshly initialised weights, on up to ``n`` of
    that fold's test images. Heat maps that barely change when the weights are random do not
    explain the trained model. Returns one row per image with the Spearman correlation of the two
    maps and the share of heat inside the lungs is left to the caller.
    """
    import torch

    from helpers import train

    rows = np.flatnonzero(index["fold"].to_numpy() == fold)[:n]
    trained = train.load_fold_model(profile, name, stage_dir, tag, fold, device)
    torch.manual_seed(seed + 12345)
    random_model = train.build(profile, name, device).eval()
    a = gradcam(trained, np.asarray(images[rows]), np.asarray(y)[rows], device)
    b = gradcam(random_model, np.asarray(images[rows]), np.asarray(y)[rows], device)
    out = index.iloc[rows][[c for c in ("image_id", "label") if c in index]].copy()
    out["spearman_trained_vs_random"] = map_similarity(a, b)
    return out.reset_index(drop=True)
