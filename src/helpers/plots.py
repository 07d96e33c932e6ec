"""Figures: one function per paper figure or table, each returning a matplotlib Figure.

``save`` writes PNGs at a fixed size and dpi with fixed metadata, so the same data give the same
file. Notebooks display the figures; ``06_figure_generation`` writes them.

The backend is left to matplotlib: inline images in a Jupyter kernel (JupyterLab, papermill,
nbval), a headless raster backend elsewhere. Every builder detaches its figure from pyplot
(:func:`finish`) before returning it, so a figure shows exactly once: where the notebook displays
it, never again when the cell ends.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

DPI = 120
METADATA = {"Software": "hrnet-cxr", "Creation Time": None}
sns.set_theme(context="notebook", style="whitegrid", font_scale=0.9)


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG (fixed dpi and metadata) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata=METADATA)
    plt.close(fig)
    return path


def finish(fig):
    """Detach ``fig`` from pyplot and return it (it still displays and saves)."""
    plt.close(fig)
    return fig


def _caption(fig, text: str) -> None:
    if text:
        fig.text(0.01, 0.005, text, fontsize=7.5, color="0.35", ha="left", va="bottom", wrap=True)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, ncols: int = 6,
               masks: Sequence[np.ndarray] | None = None, title: str = "", caption: str = "",
               cell: float = 1.8):
    """Grayscale images in a grid, optional mask contours (red)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols)) or 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        if masks is not None and masks[i] is not None and np.any(masks[i]):
            ax.contour(np.asarray(masks[i]) > 0, levels=[0.5], colors="r", linewidths=0.8)
        if titles:
            ax.set_title(titles[i], fontsize=7)
    fig.suptitle(title, fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    return finish(fig)


def augmentation_samples(originals: np.ndarray, augmented: np.ndarray, masks: np.ndarray | None,
                         caption: str = ""):
    """Fig. 7: each row one image, first column the original, then augmented versions.

    originals: uint8 (R, S, S); augmented: uint8 (R, K, S, S); masks: (R, K, S, S) or None.
    """
    r, k = augmented.shape[:2]
    fig, axes = plt.subplots(r, k + 1, figsize=(1.7 * (k + 1), 1.7 * r + 0.7), squeeze=False)
    for i in range(r):
        axes[i, 0].imshow(originals[i], cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_title("original" if i == 0 else "", fontsize=8)
        for j in range(k):
            ax = axes[i, j + 1]
            ax.imshow(augmented[i, j], cmap="gray", vmin=0, vmax=255)
            if masks is not None and masks[i, j].any():
                ax.contour(masks[i, j] > 0, levels=[0.5], colors="r", linewidths=0.6)
            if i == 0:
                ax.set_title(f"augmented {j + 1}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Fig. 7 - Table 3 augmentation (image and mask transformed jointly)", fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    return finish(fig)


def training_curves(history: pd.DataFrame, metrics: Sequence[tuple[str, str]], title: str,
                    caption: str = ""):
    """Fig. 10 style: mean +- sd over folds per epoch, one panel per (train, val) metric pair.

    history: columns fold, epoch and the named metric columns.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, (tr, va) in zip(axes[0], metrics):
        for col, colour in ((tr, "C0"), (va, "C1")):
            g = history.groupby("epoch")[col]
            m, s = g.mean(), g.std().fillna(0)
            ax.plot(m.index, m.values, color=colour, label=col.replace("_", " "))
            ax.fill_between(m.index, (m - s).values, (m + s).values, color=colour, alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_title(tr.split("_", 1)[1])
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    return finish(fig)


def refinement_examples(images, raw, refined, titles, caption: str = ""):
    """Fig. 6: image, predicted mask, refined mask (dilate + close), segmented image per row."""
    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(7.2, 1.8 * n + 0.7), squeeze=False)
    heads = ["image", "UNet mask", "refined mask", "segmented"]
    for i in range(n):
        panels = [images[i], raw[i] * 255, refined[i] * 255, images[i] * (refined[i] > 0)]
        for j, p in enumerate(panels):
            axes[i, j].imshow(p, cmap="gray", vmin=0, vmax=255)
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(heads[j], fontsize=8)
        axes[i, 0].text(2, 8, titles[i], color="yellow", fontsize=6.5, va="top")
    fig.suptitle("Fig. 6 - lung masks before and after refinement", fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    return finish(fig)


def table_figure(df: pd.DataFrame, title: str, caption: str = "", col_width: float = 1.25,
                 fontsize: float = 8):
    """Render a small DataFrame as a figure (Tables 6 and 7)."""
    nrows, ncols = df.shape
    fig, ax = plt.subplots(figsize=(max(4.0, col_width * ncols), 0.32 * (nrows + 1) + 1.0))
    ax.axis("off")
    cells = [[_fmt(v) for v in row] for row in df.itertuples(index=False)]
    t = ax.table(cellText=cells, colLabels=list(df.columns), loc="center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(fontsize)
    t.scale(1, 1.25)
    ax.set_title(title, fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return finish(fig)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.3g}" if abs(v) < 1e-3 else f"{v:.3f}".rstrip("0").rstrip(".")
    return str(v)


def confusion_matrices(mats: Sequence[dict], titles: Sequence[str], suptitle: str, caption: str = ""):
    """Figs. 13/14: 2 x 2 matrices (rows true, columns predicted), counts annotated."""
    n = len(mats)
    fig, axes = plt.subplots(1, n, figsize=(2.9 * n, 3.0), squeeze=False)
    for ax, m, t in zip(axes[0], mats, titles):
        a = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        sns.heatmap(a, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax,
                    xticklabels=["normal", "covid"], yticklabels=["normal", "covid"],
                    annot_kws={"fontsize": 11})
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(t, fontsize=8)
    fig.suptitle(suptitle, fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.06, 1, 0.93))
    return finish(fig)


def heatmap_pairs(images_unseg, heat_unseg, images_seg, heat_seg, masks, titles, caption: str = ""):
    """Figs. 9 and 12: Grad-CAM without segmentation (left pair) and with it (right pair).

    Each row: image (no segmentation) + its heat map, segmented image + its heat map; the lung
    mask outline in white on the heat maps.
    """
    n = len(images_unseg)
    fig, axes = plt.subplots(n, 4, figsize=(7.6, 1.9 * n + 0.8), squeeze=False)
    heads = ["input (no segmentation)", "Grad-CAM, Fig. 9", "input (segmented)", "Grad-CAM, Fig. 12"]
    for i in range(n):
        for j, (img, heat) in enumerate(((images_unseg[i], heat_unseg[i]), (images_seg[i], heat_seg[i]))):
            axes[i, 2 * j].imshow(img, cmap="gray", vmin=0, vmax=255)
            axes[i, 2 * j + 1].imshow(img, cmap="gray", vmin=0, vmax=255)
            axes[i, 2 * j + 1].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if masks[i].any():
                axes[i, 2 * j + 1].contour(masks[i] > 0, levels=[0.5], colors="w", linewidths=0.6)
        axes[i, 0].set_ylabel(titles[i], fontsize=7)
        axes[i, 0].text(1, 6, titles[i], color="yellow", fontsize=6.5, va="top")
        if i == 0:
            for j, h in enumerate(heads):
                axes[i, j].set_title(h, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Figs. 9 / 12 - Grad-CAM without and with lung segmentation", fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    return finish(fig)


def share_plot(df: pd.DataFrame, x: str, y: str, hue: str | None, title: str, chance: float | None = None,
               caption: str = ""):
    """Strip + box plot of per-image shares (e.g. heat inside the lungs), with a chance line."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sns.boxplot(data=df, x=x, y=y, hue=hue, ax=ax, showfliers=False)
    sns.stripplot(data=df, x=x, y=y, hue=hue, dodge=hue is not None, ax=ax, size=2.5,
                  color="0.25", alpha=0.5, legend=False)
    if chance is not None:
        ax.axhline(chance, ls="--", color="0.4", lw=1)
        ax.text(ax.get_xlim()[1], chance, " uniform heat", va="center", fontsize=7, color="0.4")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return finish(fig)


def metric_forest(df: pd.DataFrame, label: str, est: str, lo: str, hi: str, title: str,
                  xlabel: str, ref: float | None = None, caption: str = ""):
    """Point estimates with confidence intervals, one row per entry of ``df[label]``."""
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(df) + 1.4))
    ypos = np.arange(len(df))[::-1]
    ax.errorbar(df[est], ypos, xerr=[df[est] - df[lo], df[hi] - df[est]], fmt="o", capsize=3)
    ax.set_yticks(ypos)
    ax.set_yticklabels(df[label])
    if ref is not None:
        ax.axvline(ref, ls="--", color="0.5", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return finish(fig)
