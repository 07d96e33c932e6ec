"""Figures: one function per paper figure or table, each returning a matplotlib Figure.

All drawing lives here; the functions take tables (from the stage CSVs or from
:mod:`helpers.evidence.recomputed`) and compute no reported number themselves.

``save`` writes PNGs at a fixed size and dpi with fixed metadata, so the same data give the same
file. Notebooks display the figures; ``06_figure_generation`` writes them.

The backend is left to matplotlib: inline images in a Jupyter kernel (JupyterLab, papermill,
nbval), a headless raster backend elsewhere. Every builder detaches its figure from pyplot
(:func:`finish`) before returning it, so a figure shows exactly once: where the notebook displays
it, never again when the cell ends.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.evidence import metrics
from helpers.report.formats import figure_cell

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
        label = "\n".join(textwrap.wrap(label, 30)) or label   # input descriptions can be long
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
    cells = [[figure_cell(v) for v in row] for row in df.itertuples(index=False)]
    cols = [str(c) for c in df.columns]
    chars = [max(len(c), *(len(r[j]) for r in cells)) if cells else len(c) for j, c in enumerate(cols)]
    char_in = 0.078 * fontsize / 9  # inches per character at this font size
    width = max(5.0, sum(chars) * char_in + 0.25 * len(cols) + 0.4)
    wrapped = textwrap.fill(caption, width=int((width - 0.3) / 0.064)) if caption else ""
    n_cap = wrapped.count("\n") + 1 if wrapped else 0
    # the title wrapped to the table's width too (a long input description is wider than the table)
    title = textwrap.fill(title, width=int((width - 0.3) / (0.0085 * (fontsize + 1.5))))
    title_extra = 0.2 * title.count("\n")
    row_h = 0.27 * fontsize / 9
    table_h = row_h * (len(cells) + 1)
    height = table_h + 0.55 + 0.16 * n_cap + title_extra
    fig = plt.figure(figsize=(width, height))
    top = 1 - (0.4 + title_extra) / height
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


def confusion_matrices(mats: Sequence[dict], titles: Sequence[str], suptitle: str, caption: str = ""):
    """Figs. 13/14: 2 x 2 matrices (rows true, columns predicted), counts annotated."""
    n = len(mats)
    fig, axes = plt.subplots(1, n, figsize=(2.9 * n, 3.0), squeeze=False)
    for ax, m, t in zip(axes[0], mats, titles):
        a = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
        sns.heatmap(a, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax,
                    xticklabels=["non-COVID", "COVID"], yticklabels=["non-COVID", "COVID"],
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
    wrap = [textwrap.fill(m, 24) for m in models]       # long input descriptions stay in their column
    heads = [f"{wrap[0]}:\ninput", f"{wrap[0]}:\nGrad-CAM (Fig. 9)",
             f"{wrap[1]}:\ninput", f"{wrap[1]}:\nGrad-CAM (Fig. 12)"]
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


# --------------------------------------------------------------------------------------------
# evidence figures: drawn from the tables helpers.evidence.recomputed computes (notebook 06 saves them)
# --------------------------------------------------------------------------------------------
def _colours(models: Sequence[str]) -> dict:
    pal = sns.color_palette("tab10", max(10, len(models)))
    return {m: pal[i % len(pal)] for i, m in enumerate(models)}


def _empty_fig(title: str, message: str, caption: str = ""):
    fig, ax = plt.subplots(figsize=(6.4, 2.4))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.3", wrap=True)
    ax.set_title(title, fontsize=10)
    _caption(fig, caption)
    return finish(fig)


def calibration_plot(table: pd.DataFrame, reliability: pd.DataFrame, caption: str = ""):
    """Reliability diagram (one line per model, the diagonal = perfect calibration) above the
    number of images per bin. ``table``: :func:`helpers.evidence.recomputed.calibration` (Brier and ECE in the
    legend; its order and ``n_bins``); ``reliability``: :func:`helpers.evidence.recomputed.reliability`."""
    title = "Calibration of the pooled out-of-fold probabilities"
    if table.empty or table["n"].sum() == 0:
        return _empty_fig(title, "no out-of-fold predictions", caption)
    n_bins = int(table["n_bins"].iloc[0])
    models = list(table["model"])
    col = _colours(models)
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(6.4, 6.2), sharex=True,
                                  gridspec_kw=dict(height_ratios=[3, 1.1]))
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    width = 1.0 / n_bins
    bw = width * 0.85 / max(1, len(models))
    for i, r in enumerate(table.itertuples(index=False)):
        t = reliability[reliability["model"] == r.model]
        ok = t["n"] > 0
        ax.plot(t.loc[ok, "mean_prob"], t.loc[ok, "frac_pos"], marker="o", ms=4, lw=1.4,
                color=col[r.model], label=f"{r.model}: Brier {r.brier:.3f}, ECE {r.ece:.3f}")
        left = t["bin_lo"].to_numpy() + width * 0.075 + i * bw
        axh.bar(left, t["n"], width=bw, align="edge", color=col[r.model], alpha=0.45, lw=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("observed fraction COVID")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="upper left", frameon=True)
    axh.set_xlabel(f"predicted probability of COVID ({n_bins} equal-width bins)")
    axh.set_ylabel("images\nper bin", fontsize=8)
    axh.tick_params(labelsize=8)
    cap = "; ".join(x for x in [caption, "bins with no images are not drawn; ECE weights each bin "
                                "by its share of images"] if x)
    _caption(fig, cap)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return finish(fig)


def prevalence_plot(table: pd.DataFrame, caption: str = ""):
    """PPV (left) and NPV (right) against prevalence, one curve + band per model (log x axis).

    ``table``: :func:`helpers.evidence.recomputed.prevalence_table`. The dotted extension to the study's
    prevalence is drawn with the same formula (:func:`helpers.evidence.metrics.ppv_npv_at_prevalence`);
    it is a curve, not a reported number.

    The table's prevalence range is shaded; curves continue (same formula, thinner) up to the
    study's own prevalence, which is marked with a dashed line.
    """
    title = "Predictive values at other prevalences (pooled out-of-fold sensitivity/specificity)"
    if table.empty:
        return _empty_fig(title, "no out-of-fold predictions", caption)
    models = list(dict.fromkeys(table["model"]))
    col = _colours(models)
    pmin, pmax = float(table["prevalence"].min()), float(table["prevalence"].max())
    study = float(np.nanmedian(table["study_prevalence"])) if table["study_prevalence"].notna().any() \
        else np.nan
    top = max(pmax, study if np.isfinite(study) else pmax)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.4))
    for ax, what in zip(axes, ("ppv", "npv")):
        for m in models:
            t = table[table["model"] == m]
            r = t.iloc[0]
            if not (np.isfinite(r["sensitivity"]) and np.isfinite(r["specificity"])):
                continue
            ax.plot(t["prevalence"], t[what], color=col[m], lw=1.6,
                    label=f"{m} (se {100 * r['sensitivity']:.1f} %, sp {100 * r['specificity']:.1f} %)")
            ax.fill_between(t["prevalence"], t[f"{what}_lo"], t[f"{what}_hi"], color=col[m],
                            alpha=0.15, lw=0)
            if top > pmax:
                ext = metrics.ppv_npv_at_prevalence(
                    r["sensitivity"], r["specificity"], np.geomspace(pmax, top, 30))
                ax.plot(ext["prevalence"], ext[what], color=col[m], lw=0.9, ls=":")
            if np.isfinite(study):
                at = metrics.ppv_npv_at_prevalence(r["sensitivity"], r["specificity"], [study])
                ax.plot([study], at[what], "o", color=col[m], ms=4)
        ax.axvspan(pmin, pmax, color="0.95", zorder=0)
        if np.isfinite(study):
            ax.axvline(study, ls="--", color="0.4", lw=1)
            ax.text(study, 0.02, f" this study\n {100 * study:.1f} %", fontsize=7.5,
                    color="0.3", ha="right", va="bottom", transform=ax.get_xaxis_transform())
        ax.set_xscale("log")
        ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5) if pmin * 0.99 <= t <= top * 1.05]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{100 * t:g} %" for t in ticks])
        ax.set_xlim(pmin * 0.9, top * 1.15)
        if what == "npv":
            low = np.nanmin(np.r_[table["npv_lo"].to_numpy(float), table["npv"].to_numpy(float), 1.0])
            if np.isfinite(study):
                for m in models:
                    r = table[table["model"] == m].iloc[0]
                    low = np.nanmin([low, metrics.ppv_npv_at_prevalence(
                        r["sensitivity_lo"], r["specificity_lo"], [study])["npv"].iloc[0]])
            ax.set_ylim(max(0.0, np.floor((low - 0.02) * 20) / 20), 1.005)
        else:
            ax.set_ylim(0, 1.02)
        ax.set_xlabel("prevalence of COVID-19 (log scale)")
        ax.set_ylabel(what.upper())
        ax.set_title({"ppv": "PPV: P(COVID | positive)", "npv": "NPV: P(not COVID | negative)"}[what],
                     fontsize=9.5)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    cap = "; ".join(x for x in [caption, f"shaded: {100 * pmin:g}-{100 * pmax:g} % (table range); "
                                "bands from the Wilson bounds of sensitivity and specificity; "
                                "dotted: extrapolated to the study's own prevalence"] if x)
    _caption(fig, cap)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    return finish(fig)


def _external_mean_rows(external_table: pd.DataFrame | None) -> pd.DataFrame:
    if external_table is None or external_table.empty or "fold" not in external_table.columns:
        return pd.DataFrame()
    e = external_table
    m = e["fold"].astype(str) == "mean"
    if "source" in e.columns:
        m &= e["source"].astype(str) == "all"
    return e[m]


#: a source enters the forest's within-source rows with at least this many films of each class
#: (fewer give intervals as wide as the axis; the within-source table keeps every source). A
#: held-out source needs only both classes: its row's point is the share of its non-COVID films
#: called COVID, which a handful of films already shows (its AUC interval says how little else).
FOREST_MIN_PER_CLASS = 5


def _source_rows(t: pd.DataFrame, order: Sequence[str], label, heldout: bool,
                 min_per_class: int = FOREST_MIN_PER_CLASS) -> pd.DataFrame:
    """Per-source AUC rows (``model, source, n, n_pos, n_neg, auc, auc_lo, auc_hi``) with at least
    ``min_per_class`` films per class, in ``order``'s model order, as forest rows; ``label(row)``
    names each row."""
    t = t[(pd.to_numeric(t["n_pos"], errors="coerce") >= min_per_class)
          & (pd.to_numeric(t["n_neg"], errors="coerce") >= min_per_class)]
    if t.empty:
        return pd.DataFrame()
    rank = {m: i for i, m in enumerate(order)}
    t = t.assign(_r=t["model"].astype(str).map(rank).fillna(len(rank))).sort_values(["_r", "source"])
    num = {k: pd.to_numeric(t[c], errors="coerce").to_numpy()
           for k, c in (("roc_auc", "auc"), ("roc_auc_lo", "auc_lo"), ("roc_auc_hi", "auc_hi"), ("n", "n"))}
    return pd.DataFrame({"model": [label(r) for r in t.itertuples(index=False)], **num,
                         "within": True, "heldout": heldout})


def _within_rows(within: pd.DataFrame | None, order: Sequence[str]) -> pd.DataFrame:
    """Rows of a within-source table (:func:`helpers.evidence.sites.within_source`) as forest
    rows: model "<model> · within <source> (n COVID/non-COVID)"."""
    if within is None or within.empty:
        return pd.DataFrame()
    def label(r) -> str:
        return f"{r.model} · within {r.source} ({int(r.n_pos)}/{int(r.n_neg)})"

    return _source_rows(within, order, label, heldout=False)


def _heldout_source_rows(external_table: pd.DataFrame | None, order: Sequence[str]) -> pd.DataFrame:
    """Per model and held-out source that gave both classes (however few films): the
    mean-of-folds AUC as a forest row, labelled with the share of that source's non-COVID films
    called COVID (a mixed set's AUC can hide a site where every film is)."""
    if external_table is None or external_table.empty or "source" not in external_table.columns:
        return pd.DataFrame()
    e = external_table[(external_table["fold"].astype(str) == "mean")
                       & (external_table["source"].astype(str) != "all")]
    e = e.assign(called=1.0 - pd.to_numeric(e["specificity"], errors="coerce"))
    def label(r) -> str:
        return (f"{r.model} · held-out {r.source} ({int(r.n_pos)}/{int(r.n_neg)}; "
                f"non-COVID called COVID {r.called:.0%})")

    return _source_rows(e, order, label, heldout=True, min_per_class=1)


def _source_rows_caption(within: bool, heldout: bool) -> str:
    parts = ([f"within-source rows: sources with >= {FOREST_MIN_PER_CLASS} films of each class"]
             if within else []) + (["held-out-source rows: every held-out source with both classes"]
                                   if heldout else [])
    return "".join(f"; {p}" for p in parts)


def auc_forest(table7: pd.DataFrame, external_table: pd.DataFrame | None = None,
               caption: str = "", order: Sequence[str] | None = None,
               within: pd.DataFrame | None = None):
    """ROC-AUC with its 95 % interval per model: pooled out-of-fold (internal, circles) and, when
    an external table is given, the mean-of-folds model on the external set (squares). With
    ``within`` (:func:`helpers.evidence.sites.within_source`), the same models' AUC inside each
    source that gave both classes follows as rows of their own (diamonds): the comparison a
    hospital signal cannot inflate. Each held-out source that gave both classes gets a row per
    model too (red squares, the mean-of-folds model), labelled with the share of its non-COVID
    films called COVID.

    Rows are drawn top to bottom in the order of ``order`` (model names; default: as given)."""
    title = "ROC-AUC per model with 95 % intervals"
    if table7 is None or table7.empty:
        return _empty_fig(title, "no Table 7 rows", caption)
    t = table7.copy()
    order = list(order) if order is not None else list(t["model"].astype(str))
    t = t.set_index(t["model"].astype(str)).loc[order].reset_index(drop=True)
    w = _within_rows(within, order)
    h = _heldout_source_rows(external_table, order)
    caption_rows = _source_rows_caption(len(w) > 0, len(h) > 0)
    t = pd.concat([t.assign(within=False, heldout=False), *(x for x in (w, h) if len(x))],
                  ignore_index=True)
    w = pd.concat([x for x in (w, h) if len(x)], ignore_index=True) if len(w) or len(h) else w
    ext = _external_mean_rows(external_table)
    ext = ext.set_index(ext["model"].astype(str)) if len(ext) else ext
    n = len(t)
    wide = len(ext) or len(w)
    fig, ax = plt.subplots(figsize=(9.5 if wide else 7.0, (0.42 if len(w) else 0.55) * n + 2.2))
    ypos = np.arange(n)[::-1].astype(float)
    off = 0.14 if len(ext) else 0.0
    ext_labelled = False
    within_labelled = heldout_labelled = False
    for i, r in enumerate(t.itertuples(index=False)):
        a, lo, hi = (float(getattr(r, k)) for k in ("roc_auc", "roc_auc_lo", "roc_auc_hi"))
        if np.isfinite(a) and r.heldout:
            xerr = [[a - lo], [hi - a]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar([a], [ypos[i]], xerr=xerr, fmt="s", color="C3", capsize=3, ms=5, mfc="white",
                        label=None if heldout_labelled else "one held-out source (mean of fold models)")
            heldout_labelled = True
            ax.text(1.005, ypos[i], f"{a:.3f}", va="center", fontsize=7.5, color="C3",
                    transform=ax.get_yaxis_transform())
        elif np.isfinite(a) and r.within:
            xerr = [[a - lo], [hi - a]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar([a], [ypos[i]], xerr=xerr, fmt="D", color="C2", capsize=3, ms=5,
                        label=None if within_labelled else "within one source (n COVID/non-COVID)")
            within_labelled = True
            ax.text(1.005, ypos[i], f"{a:.3f}", va="center", fontsize=7.5, color="C2",
                    transform=ax.get_yaxis_transform())
        elif np.isfinite(a):
            xerr = [[a - lo], [hi - a]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar([a], [ypos[i] + off], xerr=xerr, fmt="o", color="C0", capsize=3, ms=5,
                        label="internal (pooled out-of-fold)" if i == 0 else None)
            ax.text(1.005, ypos[i] + off, f"{a:.3f}", va="center", fontsize=7.5, color="C0",
                    transform=ax.get_yaxis_transform())
        if len(ext) and r.model in ext.index:
            e = ext.loc[[r.model]].iloc[0]
            ea, elo, ehi = float(e["auc"]), float(e["auc_lo"]), float(e["auc_hi"])
            if np.isfinite(ea):
                xerr = [[ea - elo], [ehi - ea]] if np.isfinite(elo) and np.isfinite(ehi) else None
                ax.errorbar([ea], [ypos[i] - off], xerr=xerr, fmt="s", color="C3", capsize=3,
                            ms=5, label=None if ext_labelled else "held-out set (mean of fold models)")
                ext_labelled = True
                ax.text(1.005, ypos[i] - off, f"{ea:.3f}", va="center", fontsize=7.5, color="C3",
                        transform=ax.get_yaxis_transform())
    ax.axvline(0.5, ls="--", color="0.5", lw=1)
    ax.text(0.5, 0.01, " chance", ha="left", va="bottom", fontsize=7, color="0.4",
            transform=ax.get_xaxis_transform())
    labels = []
    for m, k, wi in zip(t["model"], pd.to_numeric(t.get("n", pd.Series([np.nan] * n)), errors="coerce"),
                        t["within"]):
        if wi:
            labels.append(m)
            continue
        k_ext = (pd.to_numeric(ext.loc[[m]].iloc[0].get("n"), errors="coerce")
                 if len(ext) and m in ext.index else np.nan)
        ns = [f"n={int(k)}" if np.isfinite(k) else "",
              f"held-out set n={int(k_ext)}" if np.isfinite(k_ext) else ""]
        ns = ", ".join(x for x in ns if x)
        labels.append(f"{m}  ({ns})" if ns else m)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=8.5)
    lo_all = np.nanmin(np.r_[pd.to_numeric(t["roc_auc_lo"], errors="coerce").to_numpy(), 0.5,
                             pd.to_numeric(ext["auc_lo"], errors="coerce").to_numpy()
                             if len(ext) else []])
    ax.set_xlim(max(0.0, min(0.45, lo_all - 0.05)), 1.01)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel("ROC-AUC")
    ax.set_title(title, fontsize=10)
    # the legend under the axes, centred on the figure (the row labels make the axes sit right of
    # centre), a fixed height above the caption whatever the number of rows
    height = fig.get_size_inches()[1]
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7.5, loc="lower center", bbox_to_anchor=(0.5, 0.42 / height),
               ncol=2, frameon=False)
    cap = "; ".join(x for x in [caption, "patient-level bootstrap intervals"
                                + ("" if len(ext) else "; no held-out set in this run")
                                + caption_rows] if x)
    _caption(fig, cap)
    fig.tight_layout(rect=(0, 0.95 / height, 0.93, 1))
    return finish(fig)


def loso_plot(loso: pd.DataFrame, caption: str = "", order: Sequence[str] | None = None):
    """Leave one site out (:func:`helpers.evidence.sites.loso_table`): per model and left-out site,
    the share of that site's non-COVID films called COVID by models trained without it (red, Wilson
    95 % interval), next to the same share when the site was in training (grey, out-of-fold). The
    false-positive rate at a hospital the model never saw."""
    title = "Non-COVID films called COVID at a site left out of training"
    if loso is None or loso.empty:
        return _empty_fig(title, "no leave-one-site-out rows in this run", caption)
    t = loso.copy()
    rank = {m: i for i, m in enumerate(order or list(dict.fromkeys(t["model"].astype(str))))}
    t = t.assign(_r=t["model"].astype(str).map(rank).fillna(len(rank))).sort_values(["_r", "site"])
    n = len(t)
    fig, ax = plt.subplots(figsize=(9.5, 0.5 * n + 2.2))
    ypos = np.arange(n)[::-1].astype(float)
    num = {k: pd.to_numeric(t[k], errors="coerce").to_numpy() for k in
           ("share", "share_lo", "share_hi", "cv_share", "cv_share_lo", "cv_share_hi", "n_neg")}
    for i in range(n):
        for key, colour, mark, dy, lab in (("share", "C3", "o", 0.12, "left out of training"),
                                           ("cv_share", "0.45", "s", -0.12, "in training (out-of-fold)")):
            a, lo, hi = num[key][i], num[f"{key}_lo"][i], num[f"{key}_hi"][i]
            if not np.isfinite(a):
                continue
            xerr = [[a - lo], [hi - a]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar([a], [ypos[i] + dy], xerr=xerr, fmt=mark, color=colour, capsize=3, ms=5,
                        label=lab if i == 0 else None)
            if key == "share":
                ax.text(1.01, ypos[i] + dy, f"{100 * a:.0f} %", va="center", fontsize=7.5, color=colour,
                        transform=ax.get_yaxis_transform())
    ax.set_yticks(ypos)
    ax.set_yticklabels([f"{m} · without {s} (n={int(k)} non-COVID)" for m, s, k in
                        zip(t["model"], t["site"], num["n_neg"])], fontsize=8.5)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel("share of the site's non-COVID films called COVID")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    _caption(fig, "; ".join(x for x in [caption, "threshold frozen on the training folds; Wilson 95 % "
                                                 "intervals"] if x))
    fig.tight_layout(rect=(0, 0.06, 0.93, 1))
    return finish(fig)


def heat_share_plot(table: pd.DataFrame, caption: str = ""):
    """``table``: :func:`helpers.evidence.recomputed.heat_share_ci`. Left: pooled share of heat in the lungs
    per class and model (interval; grey bar = chance, the lung-area fraction). Right: the paired
    difference segmented - unsegmented per class, pooled (large) and per fold (small)."""
    title = "Share of Grad-CAM heat inside the lung mask (patient-level bootstrap 95 % CI)"
    if table is None or table.empty:
        return _empty_fig(title, "no heat-share tables in this run", caption)
    share = table[(table["quantity"] == "share_lung") & (table["fold"] == "pooled")]
    diff = table[table["quantity"] == "difference"]
    labels = [lab for lab in ["covid", "normal"] + sorted(set(share["label"]) - {"covid", "normal", "all"})
              + ["all"] if lab in set(share["label"])]
    models = list(dict.fromkeys(share["model"]))
    col = _colours(models)
    ncols = 2 if len(diff) else 1
    height = 0.5 * len(labels) * max(1, len(models)) + 2.6
    fig, axes = plt.subplots(1, ncols, figsize=(10.5 if ncols == 2 else 6.4, height), squeeze=False)
    ax = axes[0, 0]
    ylab, ypos, y = [], [], 0.0
    for lab in labels:
        for j, m in enumerate(models):
            r = share[(share["label"] == lab) & (share["model"] == m)]
            if r.empty:
                continue
            r = r.iloc[0]
            yy = -y
            if np.isfinite(r["chance"]):
                ax.plot([r["chance"]] * 2, [yy - 0.3, yy + 0.3], color="0.35", lw=2.5, solid_capstyle="butt",
                        label="chance (lung-area fraction)" if not ylab else None)
            xerr = [[r["mean"] - r["lo"]], [r["hi"] - r["mean"]]] if np.isfinite(r["lo"]) else None
            ax.errorbar([r["mean"]], [yy], xerr=xerr, fmt="o", color=col[m], capsize=3, ms=5,
                        label=m if lab == labels[0] else None)
            short = m.replace("hrnet (", "").rstrip(")") if m.startswith("hrnet (") else m
            ylab.append(f"{lab}, {short} (n={int(r['n_images'])})")
            ypos.append(yy)
            y += 1
        y += 0.5
    ax.set_yticks(ypos)
    ax.set_yticklabels(ylab, fontsize=7.5)
    top = np.nanmax(np.r_[share["hi"].to_numpy(float), share["mean"].to_numpy(float),
                          share["chance"].to_numpy(float), 0.1])
    ax.set_xlim(0, min(1.0, 1.4 * top))
    ax.set_xlabel("mean share of heat inside the lungs")
    ax.set_title("share of heat in the lungs (pooled folds)", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    if ncols == 2:
        ax2 = axes[0, 1]
        ylab2, ypos2 = [], []
        for i, lab in enumerate(labels):
            d = diff[diff["label"] == lab]
            pooled = d[d["fold"] == "pooled"]
            folds = d[d["fold"] != "pooled"]
            for k, r in enumerate(folds.itertuples(index=False)):
                yy = -i + 0.3 - 0.6 * (k + 1) / (len(folds) + 1)
                if np.isfinite(r.mean):
                    xerr = [[r.mean - r.lo], [r.hi - r.mean]] if np.isfinite(r.lo) else None
                    ax2.errorbar([r.mean], [yy], xerr=xerr, fmt="o", ms=2.5, color="0.6", lw=0.8,
                                 capsize=1.5, label="per test fold" if (i == 0 and k == 0) else None)
            if len(pooled) and np.isfinite(pooled["mean"].iloc[0]):
                r = pooled.iloc[0]
                xerr = [[r["mean"] - r["lo"]], [r["hi"] - r["mean"]]] if np.isfinite(r["lo"]) else None
                ax2.errorbar([r["mean"]], [-i], xerr=xerr, fmt="D", ms=6, color="C2", capsize=3,
                             label="pooled" if i == 0 else None)
                ylab2.append(f"{lab} (n={int(r['n_images'])}): {r['mean']:+.3f}")
            else:
                ylab2.append(lab)
            ypos2.append(-i)
        ax2.axvline(0, ls="--", color="0.5", lw=1)
        ax2.set_yticks(ypos2)
        ax2.set_yticklabels(ylab2, fontsize=8)
        lim = np.nanmax(np.abs(np.r_[diff["lo"].to_numpy(float), diff["hi"].to_numpy(float),
                                     diff["mean"].to_numpy(float), 0.05]))
        ax2.set_xlim(-1.1 * lim, 1.1 * lim)
        ax2.set_xlabel("segmented - unsegmented (same images)")
        ax2.set_title("paired difference in share", fontsize=9)
        ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.suptitle(title, fontsize=10)
    _caption(fig, "; ".join(x for x in [caption, "grey bars: mean lung-area fraction (the share of a "
                                        "uniform heat map)"] if x))
    fig.tight_layout(rect=(0.015, 0.04, 1, 0.95))
    return finish(fig)


def audit_plot(audit_table: pd.DataFrame, permutation_null: dict | None = None,
               caption: str = "", descriptions: dict[str, str] | None = None):
    """Each audit's pooled out-of-fold AUC with its patient-level interval against chance (0.5),
    labelled with what it tests and its verdict; the low-level audit's permutation-null 95th
    percentile is marked when ``permutation_null`` (``baselines/permutation_null.json``) is given.
    ``descriptions``: audit name -> what it tests (:func:`helpers.evidence.audits.short_descriptions`)."""
    title = "Shortcut audits: can the label be predicted without the disease?"
    if audit_table is None or audit_table.empty:
        return _empty_fig(title, "no audits in this run", caption)
    t = audit_table.reset_index(drop=True)
    n = len(t)
    fig, ax = plt.subplots(figsize=(8.0, 0.8 * n + 1.6))
    ypos = np.arange(n)[::-1].astype(float)
    vcol = {"shortcut signal": "C3", "weak": "C1", "no evidence": "C2", "undefined": "0.5"}
    labels = []
    for i, r in enumerate(t.itertuples(index=False)):
        key = str(r.audit)
        a, lo, hi = (float(pd.to_numeric(getattr(r, k), errors="coerce"))
                     for k in ("auc", "auc_lo", "auc_hi"))
        verdict = str(getattr(r, "verdict", "") or "")
        c = vcol.get(verdict, "C0")
        if np.isfinite(a):
            xerr = [[a - lo], [hi - a]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar([a], [ypos[i]], xerr=xerr, fmt="o", color=c, capsize=3, ms=6)
            ax.text(1.01, ypos[i], f"{a:.3f}\n{verdict}", va="center", fontsize=7.5, color=c,
                    transform=ax.get_yaxis_transform())
        n_txt = f" (n={int(r.n)})" if "n" in t.columns and pd.notna(r.n) else ""
        labels.append(f"{key}{n_txt}")
        what = (descriptions or {}).get(key, "pooled out-of-fold AUC of its own target")
        ax.text(0.01, ypos[i] + 0.36, what,
                fontsize=7, color="0.3", ha="left", va="bottom")
        if key == "lowlevel" and permutation_null and np.isfinite(permutation_null.get("null_q95", np.nan)):
            q = float(permutation_null["null_q95"])
            ax.plot([q, q], [ypos[i] - 0.25, ypos[i] + 0.25], color="0.3", lw=2)
            pval = permutation_null.get("p_value", np.nan)
            ax.text(q, ypos[i] - 0.28, f"permutation null, 95th pct (p = {pval:.3g})",
                    fontsize=6.5, color="0.3", ha="center", va="top")
    ax.axvline(0.5, ls="--", color="0.5", lw=1)
    ax.axvline(0.6, ls=":", color="0.7", lw=1)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, 1.02)  # a little past 1, so that a marker at AUC 1.000 is drawn whole
    ax.set_ylim(-0.7, n - 0.1)
    ax.set_xlabel("pooled out-of-fold ROC-AUC (0.5 = chance)")
    ax.set_title(title, fontsize=10)
    cap = "; ".join(x for x in [caption, "dashed: chance; dotted: 0.6, the verdict's 'signal' bound "
                                "(a reading aid, not a test)"] if x)
    _caption(fig, cap)
    fig.tight_layout(rect=(0, 0.06, 0.88, 1))
    return finish(fig)

