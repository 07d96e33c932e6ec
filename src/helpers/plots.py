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


def fold_curves(history: pd.DataFrame, rows: Sequence[tuple[str, str]], title: str, caption: str = "",
                planned: dict | None = None):
    """Per-epoch validation loss and AUC of every fold, one row per model.

    history: columns model, fold, epoch, train_loss, val_loss, val_auc (``helpers.train``);
    rows: (model name, row label) in display order; planned: model -> the epochs the profile
    gives the proposed model, drawn as a dotted line where a model's own run was cut shorter.
    """
    fig, axes = plt.subplots(len(rows), 2, figsize=(8.4, 1.9 * len(rows) + 0.9), squeeze=False,
                             sharex=False)
    for (name, label), (ax_l, ax_a) in zip(rows, axes):
        h = history[history["model"].astype(str) == name]
        for i, (fold, g) in enumerate(h.groupby("fold")):
            g = g.sort_values("epoch")
            c = f"C{i}"
            ax_l.plot(g["epoch"], g["val_loss"], color=c, label=f"fold {int(fold) + 1} val")
            ax_l.plot(g["epoch"], g["train_loss"], color=c, ls="--", lw=0.8, alpha=0.7)
            ax_a.plot(g["epoch"], g["val_auc"], color=c, marker=".", ms=3)
        top = float(np.nanpercentile(h["val_loss"], 95)) if len(h) else 1.0
        ax_l.set_ylim(0, max(top * 1.15, 0.1))
        ax_a.set_ylim(0.4, 1.0)
        ax_a.axhline(0.5, color="0.6", lw=0.7, ls=":")
        want = (planned or {}).get(name)
        if want and len(h) and h["epoch"].max() < want:
            for ax in (ax_l, ax_a):
                ax.axvline(h["epoch"].max(), color="0.3", lw=0.8, ls=":")
                ax.set_xlim(0.5, want + 0.5)
            label = f"{label}\n(cut at {int(h['epoch'].max())} of {want} epochs)"
        ax_l.set_ylabel(label, fontsize=8)
        ax_l.tick_params(labelsize=7)
        ax_a.tick_params(labelsize=7)
    axes[0, 0].set_title("loss (solid: validation, dashed: training)", fontsize=9)
    axes[0, 1].set_title("validation AUC", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title, fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    return finish(fig)


def ladder_plot(table: pd.DataFrame, audits: dict[str, str], favoured: str, title: str,
                caption: str = ""):
    """The de-confounding ladder: per rung, the probe audits' AUCs and the internal AUC (left),
    and the share of Grad-CAM heat inside the lungs against the lungs' share of the input (right).
    """
    t = table.reset_index(drop=True)
    ypos = np.arange(len(t))[::-1]
    height = 2.6 + 0.6 * len(t)  # rungs, plus fixed room for the legend and the caption below
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, height), sharey=True,
                                 gridspec_kw={"width_ratios": [2.2, 1]})
    markers = "osv^D"
    for j, (key, text) in enumerate(audits.items()):
        ax.scatter(t[f"audit_{key}"], ypos, marker=markers[j % len(markers)], s=36, color=f"C{j}",
                   label=f"probe: {text}", zorder=3)
    ax.errorbar(t["auc"], ypos, xerr=[t["auc"] - t["auc_lo"], t["auc_hi"] - t["auc"]], fmt="none",
                ecolor="k", lw=1, zorder=2)
    ax.scatter(t["auc"], ypos, marker="D", s=46, color="k", label="internal pooled AUC (95 % CI)",
               zorder=4)
    ax.axvline(0.5, color="0.5", ls=":", lw=1)
    ax.set_xlim(0.3, 1.0)
    ax.set_xlabel("AUC (0.5 = no signal)")
    labels = [("* " if r == favoured else "") + str(r) for r in t["rung"]]
    ax.set_yticks(ypos, labels)
    bx.barh(ypos + 0.18, t["heat_share_lungs"], height=0.34, color="C3", label="heat inside the lungs")
    bx.barh(ypos - 0.18, t["lung_area"], height=0.34, color="0.7", label="lungs' share of the input")
    bx.set_xlim(0, 1)
    bx.set_xlabel("fraction")
    handles = [h for a in (ax, bx) for h in a.get_legend_handles_labels()[0]]
    labels = [lab for a in (ax, bx) for lab in a.get_legend_handles_labels()[1]]
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.55 / height))
    fig.suptitle(title, fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0, 1.45 / height, 1, 1 - 0.35 / height))
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


def table_figure(df: pd.DataFrame, title: str, caption: str = "", fontsize: float = 9):
    """Render a DataFrame as a compact table figure (Tables 6 and 7).

    Column widths follow the longest entry of each column, the figure is as large as the table,
    and the caption is wrapped to the table's width below it.
    """
    import textwrap

    cells = [[_fmt(v) for v in row] for row in df.itertuples(index=False)]
    cols = [str(c) for c in df.columns]
    chars = [max(len(c), *(len(r[j]) for r in cells)) if cells else len(c) for j, c in enumerate(cols)]
    char_in = 0.078 * fontsize / 9  # inches per character at this font size
    width = max(5.0, sum(chars) * char_in + 0.25 * len(cols) + 0.4)
    wrapped = textwrap.fill(caption, width=int((width - 0.3) / 0.064)) if caption else ""
    n_cap = wrapped.count("\n") + 1 if wrapped else 0
    row_h = 0.27 * fontsize / 9
    table_h = row_h * (len(cells) + 1)
    height = table_h + 0.55 + 0.16 * n_cap
    fig = plt.figure(figsize=(width, height))
    top = 1 - 0.4 / height
    ax = fig.add_axes((0.02, top - table_h / height, 0.96, table_h / height))
    ax.axis("off")
    total = sum(c + 3 for c in chars)
    t = ax.table(cellText=cells, colLabels=cols, loc="upper center", cellLoc="center",
                 colWidths=[(c + 3) / total for c in chars], bbox=(0, 0, 1, 1))
    t.auto_set_font_size(False)
    t.set_fontsize(fontsize)
    for (r, _c), cell in t.get_celld().items():
        cell.set_edgecolor("0.8")
        if r == 0:
            cell.set_facecolor("0.92")
            cell.set_text_props(weight="bold")
    fig.text(0.5, 1 - 0.12 / height, title, ha="center", va="top", fontsize=fontsize + 1.5)
    if wrapped:
        fig.text(0.02, 0.08 / height, wrapped, ha="left", va="bottom", fontsize=7.5, color="0.3")
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


def heatmap_pairs(images_unseg, heat_unseg, images_seg, heat_seg, masks, titles, caption: str = "",
                  models: tuple[str, str] = ("HRNet, full image", "HRNet, segmented lungs")):
    """Figs. 9 and 12: Grad-CAM of the model trained on full images (left pair, Fig. 9) and of the
    one trained on segmented lungs (right pair, Fig. 12), the lung outline in white, one label per
    row, and one colour bar for every map (heat normalised to [0, 1] per image)."""
    n = len(images_unseg)
    fig, axes = plt.subplots(n, 4, figsize=(8.4, 1.9 * n + 1.2), squeeze=False)
    heads = [f"{models[0]}:\ninput", f"{models[0]}:\nGrad-CAM (Fig. 9)",
             f"{models[1]}:\ninput", f"{models[1]}:\nGrad-CAM (Fig. 12)"]
    im = None
    for i in range(n):
        for j, (img, heat) in enumerate(((images_unseg[i], heat_unseg[i]), (images_seg[i], heat_seg[i]))):
            axes[i, 2 * j].imshow(img, cmap="gray", vmin=0, vmax=255)
            axes[i, 2 * j + 1].imshow(img, cmap="gray", vmin=0, vmax=255)
            im = axes[i, 2 * j + 1].imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            if masks[i].any():
                axes[i, 2 * j + 1].contour(masks[i] > 0, levels=[0.5], colors="w", linewidths=0.6)
        axes[i, 0].set_ylabel(titles[i], fontsize=7, rotation=0, ha="right", va="center", labelpad=4)
    for j, h in enumerate(heads):
        axes[0, j].set_title(h, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Figs. 9 / 12 - Grad-CAM without and with lung segmentation", fontsize=10)
    _caption(fig, caption)
    fig.tight_layout(rect=(0.02, 0.05, 0.9, 0.96))
    if im is not None:
        cax = fig.add_axes((0.915, 0.25, 0.018, 0.5))
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("Grad-CAM (normalised per image)", fontsize=7)
        cb.ax.tick_params(labelsize=7)
    return finish(fig)


def share_plot(df: pd.DataFrame, x: str, y: str, hue: str | None, title: str, chance: float | None = None,
               caption: str = ""):
    """Strip + box plot of per-image shares (e.g. heat inside the lungs), with a chance line."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    sns.boxplot(data=df, x=x, y=y, hue=hue, ax=ax, showfliers=False)
    sns.stripplot(data=df, x=x, y=y, hue=hue, dodge=hue is not None, ax=ax, size=2.5,
                  palette="dark:0.25" if hue is not None else None, color=None if hue is not None else "0.25",
                  alpha=0.5, legend=False)
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
