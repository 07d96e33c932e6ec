"""The "honest evidence": tables and figures recomputed from a run's stored predictions only.

Nothing here trains or runs a model. Every number is recomputed from the CSV files the notebooks
wrote into ``OUT_DIR`` (out-of-fold predictions of every model, the fold table, Table 7, the
Grad-CAM heat-share tables, the shortcut-audit table), with :mod:`helpers.metrics` and
:mod:`helpers.ledger`, so a reader can check each figure against the predictions it came from.

What the paper reports (per-fold accuracy / sensitivity / specificity and their mean) leaves out
what a reader needs to judge a diagnostic claim; this module adds it:

* :func:`calibration` - Brier score, expected calibration error and a reliability diagram;
* :func:`prevalence_table` - PPV and NPV at prevalences of 1-20 % (Bayes' rule from the pooled
  out-of-fold sensitivity and specificity, with Wilson bounds), the study's own ~45 % being far
  above any screening setting;
* :func:`comparisons` - paired AUC differences (DeLong or bootstrap) and McNemar tests against the
  reference model on the same images;
* :func:`auc_forest` - ROC-AUC with intervals per model, internal and (when run) external;
* :func:`ledger_tables` - the claims ledger for the paper's numbers and for the companion's own;
* :func:`heat_share_ci` / :func:`heat_share_fig` - the share of Grad-CAM heat inside the lungs
  with patient-level bootstrap intervals, segmented vs unsegmented HRNet on the same images;
* :func:`audit_figure` - the shortcut audits' AUCs against chance;
* :func:`evidence_figures` / :func:`write_evidence` - all figures (and tables) of one run.

Functions are robust to a missing external set, folds with one class, missing models (skipped,
with a note) and NaN probabilities (dropped, counted).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import ledger, metrics, plots

plt = plots.plt

__all__ = [
    "run_manifest",
    "run_info",
    "data_note",
    "read_artefact",
    "load_predictions",
    "reliability",
    "calibration",
    "prevalence_table",
    "prevalence_fig",
    "comparisons",
    "auc_forest",
    "table7_claims",
    "ledger_tables",
    "heat_share_ci",
    "heat_share_fig",
    "audit_figure",
    "evidence_figures",
    "write_evidence",
    "AUDIT_SHORT",
    "FIGURE_FILES",
]

STAGES = ("curation", "unet", "refine", "hrnet", "baselines", "ladder", "figures")

#: One-line reading of each known audit (the label in :func:`audit_figure`).
AUDIT_SHORT = {
    "source": "source from pixels: is a shortcut available?",
    "lungs_blacked_out": "label with lungs blacked out: solvable without lungs?",
    "mask_only": "label from lung-mask shape alone: positioning / size?",
    "lowlevel": "label from low-level statistics (lungs included): acquisition or disease?",
    "lowlevel_outside": "label from low-level statistics outside the lungs only",
    "permuted_labels": "negative control, permuted labels: must be ~0.5",
}

FIGURE_FILES = ("ev_calibration.png", "ev_ppv_npv.png", "ev_auc_forest.png", "ev_heat_share.png",
                "ev_audits.png")

COMPARISON_COLUMNS = ["model", "reference", "n", "n_pos", "n_neg", "auc_reference", "auc_model",
                      "auc_diff", "auc_diff_lo", "auc_diff_hi", "auc_p", "auc_method",
                      "accuracy_reference", "accuracy_model", "mcnemar_b", "mcnemar_c",
                      "mcnemar_statistic", "mcnemar_p", "mcnemar_method", "note"]
HEAT_COLUMNS = ["quantity", "model", "label", "fold", "n_images", "n_patients", "mean", "lo", "hi",
                "chance", "n_missing", "note"]


# --------------------------------------------------------------------------------------------
# reading a run
# --------------------------------------------------------------------------------------------
def read_artefact(out_dir: Path, rel: str) -> pd.DataFrame | None:
    """``OUT_DIR/rel`` read with pandas defaults; None when missing, empty frame when empty."""
    path = Path(out_dir) / rel
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def run_manifest(out_dir: Path, stage: str | None = None) -> dict:
    """``run_manifest.json`` of ``stage``, or of the latest stage that has one ({} if none)."""
    stages = [stage] if stage else list(STAGES)[::-1]
    for s in stages:
        p = Path(out_dir) / s / "run_manifest.json"
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except (OSError, ValueError):
                continue
    return {}


def run_info(out_dir: Path, cfg_dict: dict | None = None) -> dict:
    """Profile name and data kind of a run: ``dict(profile, data, synthetic, data_dir)``.

    Taken from ``cfg_dict`` (``RunConfig.to_dict()``) when given, else from the stage manifests.
    ``data`` is ``"synthetic"``, ``"real"`` or ``"unknown"``.
    """
    cfg = cfg_dict or run_manifest(out_dir).get("config") or {}
    prof = cfg.get("profile") or {}
    name = prof.get("name") or run_manifest(out_dir).get("profile") or "unknown"
    data = prof.get("data") or "unknown"
    return dict(profile=name, data=data, synthetic=data == "synthetic",
                data_dir=cfg.get("data_dir"))


def data_note(out_dir: Path, cfg_dict: dict | None = None) -> str:
    """One line for captions saying what the data are (so phantoms are never taken for X-rays)."""
    info = run_info(out_dir, cfg_dict)
    if info["synthetic"]:
        return (f"profile {info['profile']}: generated phantoms, not radiographs - plumbing, "
                "not science")
    if info["data"] == "real":
        where = Path(str(info["data_dir"])).name if info["data_dir"] else "DATA_DIR"
        return f"profile {info['profile']}: real chest X-rays from {where}"
    return f"profile {info['profile']}: data of unknown kind"


def _clean_preds(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    if "set" not in df.columns:
        df["set"] = "oof"
    df["set"] = df["set"].fillna("oof").astype(str)
    df["prob"] = pd.to_numeric(df["prob"], errors="coerce")
    df["y"] = pd.to_numeric(df["y"], errors="coerce")
    if "threshold" in df.columns:
        df["threshold"] = pd.to_numeric(df["threshold"], errors="coerce")
    df["model"] = df["model"].astype(str)
    return df


def load_predictions(out_dir: Path) -> pd.DataFrame:
    """Every model's out-of-fold predictions (``baselines/all_preds.csv``), and the external ones.

    External predictions (``baselines/external_preds.csv``, when present and not empty) are
    appended with ``set = 'external'`` where the file leaves it empty. Raises FileNotFoundError
    naming notebook 05 when ``all_preds.csv`` is missing.
    """
    allp = read_artefact(out_dir, "baselines/all_preds.csv")
    if allp is None:
        raise FileNotFoundError(f"{Path(out_dir) / 'baselines/all_preds.csv'} not found: run "
                                "notebooks/05_baseline_comparison.ipynb first (same OUT_DIR)")
    parts = [_clean_preds(allp)] if len(allp) else []
    ext = read_artefact(out_dir, "baselines/external_preds.csv")
    if ext is not None and len(ext):
        ext = ext.copy()
        ext["set"] = ext["set"].fillna("external") if "set" in ext.columns else "external"
        parts.append(_clean_preds(ext))
    if not parts:
        return _clean_preds(allp) if len(allp.columns) else pd.DataFrame(
            columns=["image_id", "patient_id", "fold", "set", "y", "prob", "threshold", "model"])
    return pd.concat(parts, ignore_index=True)


def _oof(preds: pd.DataFrame) -> pd.DataFrame:
    d = preds[preds["set"].astype(str) == "oof"] if "set" in preds.columns else preds
    return d[d["y"].notna()]


def model_order(models: Iterable[str], reference: str = "hrnet") -> list[str]:
    """Reference first, its unsegmented twin second, then the rest alphabetically."""
    ms = sorted(set(map(str, models)))
    head = [m for m in (reference, f"{reference}_unsegmented") if m in ms]
    return head + [m for m in ms if m not in head]


def _colours(models: Sequence[str]) -> dict:
    pal = plots.sns.color_palette("tab10", max(10, len(models)))
    return {m: pal[i % len(pal)] for i, m in enumerate(models)}


def _caption(fig, text: str) -> None:
    """Small grey caption at the bottom left (the style of :func:`helpers.plots._caption`)."""
    if text:
        fig.text(0.01, 0.005, text, fontsize=7.5, color="0.35", ha="left", va="bottom", wrap=True)


def _empty_fig(title: str, message: str, caption: str = ""):
    fig, ax = plt.subplots(figsize=(6.4, 2.4))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="0.3", wrap=True)
    ax.set_title(title, fontsize=10)
    _caption(fig, caption)
    return plots.finish(fig)


def _usable(d: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows with a finite probability, and how many were dropped."""
    ok = np.isfinite(d["prob"].to_numpy(dtype=np.float64))
    return d[ok], int((~ok).sum())


# --------------------------------------------------------------------------------------------
# 2. calibration
# --------------------------------------------------------------------------------------------
def reliability(preds: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """Reliability bins per model (pooled out-of-fold): ``model, bin_lo, bin_hi, n, mean_prob,
    frac_pos`` (:func:`helpers.metrics.reliability_table`)."""
    rows = []
    d = _oof(preds)
    for m in model_order(d["model"].unique()):
        g, _ = _usable(d[d["model"] == m])
        t = metrics.reliability_table(g["y"].astype(int).to_numpy(), g["prob"].to_numpy(), n_bins)
        rows.append(t.assign(model=m))
    if not rows:
        return pd.DataFrame(columns=["model", "bin_lo", "bin_hi", "n", "mean_prob", "frac_pos"])
    out = pd.concat(rows, ignore_index=True)
    return out[["model", "bin_lo", "bin_hi", "n", "mean_prob", "frac_pos"]]


def calibration(preds: pd.DataFrame, n_bins: int = 10, caption: str = ""):
    """Calibration of each model's pooled out-of-fold probabilities: ``(table, fig)``.

    Table columns: ``model, n, n_pos, n_neg, prevalence`` (observed fraction of COVID),
    ``mean_prob`` (calibration in the large: should equal the prevalence), ``brier``
    (:func:`helpers.metrics.brier`), ``ece`` (:func:`helpers.metrics.ece`, ``n_bins`` equal-width
    bins), ``n_bins, n_missing`` (NaN probabilities dropped), ``note``. The figure is a
    reliability diagram (one line per model, the diagonal = perfect calibration) above the
    number of images per bin.
    """
    d = _oof(preds)
    rows = []
    for m in model_order(d["model"].unique()):
        g, n_missing = _usable(d[d["model"] == m])
        y = g["y"].astype(int).to_numpy()
        p = g["prob"].to_numpy(dtype=np.float64)
        n_pos = int(y.sum())
        note = []
        if n_missing:
            note.append(f"{n_missing} NaN probabilities dropped")
        if len(y) and (n_pos == 0 or n_pos == len(y)):
            note.append("one class only")
        rows.append(dict(model=m, n=len(y), n_pos=n_pos, n_neg=len(y) - n_pos,
                         prevalence=float(y.mean()) if len(y) else np.nan,
                         mean_prob=float(p.mean()) if len(p) else np.nan,
                         brier=metrics.brier(y, p), ece=metrics.ece(y, p, n_bins) if len(y) else np.nan,
                         n_bins=n_bins, n_missing=n_missing, note="; ".join(note)))
    table = pd.DataFrame(rows, columns=["model", "n", "n_pos", "n_neg", "prevalence", "mean_prob",
                                        "brier", "ece", "n_bins", "n_missing", "note"])
    title = "Calibration of the pooled out-of-fold probabilities"
    if table.empty or table["n"].sum() == 0:
        return table, _empty_fig(title, "no out-of-fold predictions", caption)
    rel = reliability(d, n_bins)
    models = list(table["model"])
    col = _colours(models)
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(6.4, 6.2), sharex=True,
                                  gridspec_kw=dict(height_ratios=[3, 1.1]))
    ax.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    width = 1.0 / n_bins
    bw = width * 0.85 / max(1, len(models))
    for i, r in enumerate(table.itertuples(index=False)):
        t = rel[rel["model"] == r.model]
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
    return table, plots.finish(fig)


# --------------------------------------------------------------------------------------------
# 3. PPV / NPV at other prevalences
# --------------------------------------------------------------------------------------------
PREVALENCE_COLUMNS = ["model", "prevalence", "ppv", "ppv_lo", "ppv_hi", "npv", "npv_lo", "npv_hi",
                      "sensitivity", "sensitivity_lo", "sensitivity_hi", "specificity",
                      "specificity_lo", "specificity_hi", "study_prevalence", "n_pos", "n_neg",
                      "note"]


def _pooled_rates(g: pd.DataFrame) -> tuple[dict, dict]:
    y = g["y"].astype(int).to_numpy()
    p = g["prob"].to_numpy(dtype=np.float64)
    thr = metrics._thresholds(g, "threshold", 0.5)
    cm = metrics.confusion(y, metrics.predict(p, thr))
    return cm, metrics.rates(**cm)


def prevalence_table(preds: pd.DataFrame,
                     prevalences: Iterable[float] = np.linspace(0.01, 0.20, 20),
                     caption: str = ""):
    """PPV and NPV each model would have at other prevalences: ``(table, fig)``.

    From the pooled out-of-fold sensitivity and specificity (each fold's own threshold) by Bayes'
    rule, :func:`helpers.metrics.ppv_npv_at_prevalence`; the bounds use the Wilson bounds of
    sensitivity and specificity together (a conservative box, not a joint interval). Columns:
    ``model, prevalence, ppv, ppv_lo, ppv_hi, npv, npv_lo, npv_hi, sensitivity(_lo/_hi),
    specificity(_lo/_hi), study_prevalence`` (n_pos / n of the pooled predictions) ``, n_pos,
    n_neg, note``. The figure (:func:`prevalence_fig`) draws the curves with their bands on a
    log prevalence axis and marks the study's own prevalence.
    """
    prev = np.asarray(list(prevalences), dtype=np.float64)
    d = _oof(preds)
    blocks = []
    for m in model_order(d["model"].unique()):
        g, n_missing = _usable(d[d["model"] == m])
        cm, r = _pooled_rates(g)
        n_pos, n_neg = cm["tp"] + cm["fn"], cm["fp"] + cm["tn"]
        note = []
        if n_missing:
            note.append(f"{n_missing} NaN probabilities dropped")
        if n_pos == 0 or n_neg == 0:
            note.append("one class only: sensitivity or specificity undefined")
        t = metrics.ppv_npv_at_prevalence(r["sensitivity"], r["specificity"], prev,
                                          r["sensitivity_lo"], r["sensitivity_hi"],
                                          r["specificity_lo"], r["specificity_hi"])
        for k in ("sensitivity", "specificity"):
            t[k], t[f"{k}_lo"], t[f"{k}_hi"] = r[k], r[f"{k}_lo"], r[f"{k}_hi"]
        t["study_prevalence"] = n_pos / (n_pos + n_neg) if n_pos + n_neg else np.nan
        t["n_pos"], t["n_neg"], t["note"] = n_pos, n_neg, "; ".join(note)
        blocks.append(t.assign(model=m))
    table = (pd.concat(blocks, ignore_index=True)[PREVALENCE_COLUMNS] if blocks
             else pd.DataFrame(columns=PREVALENCE_COLUMNS))
    return table, prevalence_fig(table, caption)


def prevalence_fig(table: pd.DataFrame, caption: str = ""):
    """PPV (left) and NPV (right) against prevalence, one curve + band per model (log x axis).

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
    return plots.finish(fig)


# --------------------------------------------------------------------------------------------
# 4. paired comparisons
# --------------------------------------------------------------------------------------------
def comparisons(preds: pd.DataFrame, reference: str = "hrnet", method: str = "delong",
                n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paired comparison of every other model with ``reference`` on the same OOF images.

    :func:`helpers.metrics.compare_to_reference` per model (``auc_diff`` = reference - model,
    with its interval and p; McNemar on the hard predictions). Images whose probability is NaN
    for either model are left out of that pair. A model that cannot be paired (different
    images / folds) gets a row with only ``model, reference, note``; a missing reference gives
    an empty table. Columns: see ``COMPARISON_COLUMNS``.
    """
    d = _oof(preds)
    models = model_order(d["model"].unique(), reference)
    if reference not in models:
        out = pd.DataFrame(columns=COMPARISON_COLUMNS)
        out.attrs["note"] = f"reference model {reference!r} not in the predictions"
        return out
    rows = []
    for m in models:
        if m == reference:
            continue
        sub = d[d["model"].isin([reference, m])]
        bad = set(sub.loc[~np.isfinite(sub["prob"].to_numpy(dtype=float)), "image_id"])
        sub = sub[~sub["image_id"].isin(bad)]
        try:
            r = metrics.compare_to_reference(sub, reference=reference, method=method,
                                             n_boot=n_boot, seed=seed)
        except ValueError as exc:
            rows.append(dict(model=m, reference=reference, note=f"skipped: {exc}"))
            continue
        if len(r):
            row = r.iloc[0].to_dict()
            if bad:
                row["note"] = "; ".join(x for x in [row.get("note", ""),
                                                    f"{len(bad)} images with NaN probability left out"]
                                        if x)
            rows.append(row)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


# --------------------------------------------------------------------------------------------
# 5. AUC forest
# --------------------------------------------------------------------------------------------
def _external_mean_rows(external_table: pd.DataFrame | None) -> pd.DataFrame:
    if external_table is None or external_table.empty or "fold" not in external_table.columns:
        return pd.DataFrame()
    e = external_table
    m = e["fold"].astype(str) == "mean"
    if "source" in e.columns:
        m &= e["source"].astype(str) == "all"
    return e[m]


def auc_forest(table7: pd.DataFrame, external_table: pd.DataFrame | None = None,
               caption: str = ""):
    """ROC-AUC with its 95 % interval per model: pooled out-of-fold (internal, circles) and, when
    an external table is given, the mean-of-folds model on the external set (squares)."""
    title = "ROC-AUC per model with 95 % intervals"
    if table7 is None or table7.empty:
        return _empty_fig(title, "no Table 7 rows", caption)
    t = table7.copy()
    order = model_order(t["model"].astype(str))
    t = t.set_index(t["model"].astype(str)).loc[order].reset_index(drop=True)
    ext = _external_mean_rows(external_table)
    ext = ext.set_index(ext["model"].astype(str)) if len(ext) else ext
    n = len(t)
    fig, ax = plt.subplots(figsize=(8.2 if len(ext) else 7.0, 0.55 * n + 2.0))
    ypos = np.arange(n)[::-1].astype(float)
    off = 0.14 if len(ext) else 0.0
    ext_labelled = False
    for i, r in enumerate(t.itertuples(index=False)):
        a, lo, hi = (float(getattr(r, k)) for k in ("roc_auc", "roc_auc_lo", "roc_auc_hi"))
        if np.isfinite(a):
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
                            ms=5, label=None if ext_labelled else "external (mean of fold models)")
                ext_labelled = True
                ax.text(1.005, ypos[i] - off, f"{ea:.3f}", va="center", fontsize=7.5, color="C3",
                        transform=ax.get_yaxis_transform())
    ax.axvline(0.5, ls="--", color="0.5", lw=1)
    ax.text(0.5, 0.01, " chance", ha="left", va="bottom", fontsize=7, color="0.4",
            transform=ax.get_xaxis_transform())
    labels = []
    for m, k in zip(t["model"], pd.to_numeric(t.get("n", pd.Series([np.nan] * n)), errors="coerce")):
        k_ext = (pd.to_numeric(ext.loc[[m]].iloc[0].get("n"), errors="coerce")
                 if len(ext) and m in ext.index else np.nan)
        ns = [f"n={int(k)}" if np.isfinite(k) else "",
              f"external n={int(k_ext)}" if np.isfinite(k_ext) else ""]
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
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    cap = "; ".join(x for x in [caption, "patient-level bootstrap intervals"
                                + ("" if len(ext) else "; no external set in this run")] if x)
    _caption(fig, cap)
    fig.tight_layout(rect=(0, 0.06, 0.95, 1))
    return plots.finish(fig)


# --------------------------------------------------------------------------------------------
# 6. the claims ledger
# --------------------------------------------------------------------------------------------
def _pct_units(k: int, n: int, decimals: int = 2) -> float:
    """k / n in percent, half-up rounded to ``decimals`` with integer arithmetic."""
    S = 100 * 10 ** decimals
    return ((2 * k * S + n) // (2 * n)) / 10 ** decimals


def table7_claims(table7: pd.DataFrame, decimals: int = 2) -> list[ledger.Claim]:
    """One ``single`` claim per Table 7 row (a pooled out-of-fold matrix with known counts):
    accuracy / sensitivity / specificity in percent from ``tp, fn, fp, tn``, half-up rounded.
    Rows lacking a class are skipped."""
    claims = []
    for r in table7.itertuples(index=False):
        try:
            tp, fn, fp, tn = (int(getattr(r, c)) for c in ("tp", "fn", "fp", "tn"))
        except (TypeError, ValueError):
            continue
        if tp + fn == 0 or fp + tn == 0:
            continue
        claims.append(ledger.Claim(
            f"companion Table 7 {r.model} pooled", _pct_units(tp + tn, tp + fn + fp + tn, decimals),
            _pct_units(tp, tp + fn, decimals), _pct_units(tn, tn + fp, decimals), kind="single",
            n_pos=tp + fn, n_neg=fp + tn, decimals=decimals, rounding="round",
            source=f"baselines/table7.csv ({r.model}, pooled out-of-fold)"))
    return claims


def ledger_tables(out_dir: Path) -> dict[str, pd.DataFrame]:
    """The claims ledger: ``{"paper": ..., "companion": ...}`` (:func:`helpers.ledger.ledger_table`).

    ``paper``: the paper's Tables 6 and 7, abstract and text. ``companion``: every triple the
    companion itself prints - HRNet's per-fold, pooled and mean rows (``hrnet/fold_table.csv``,
    :func:`helpers.ledger.claims_from_fold_table`) and the pooled Table 7 rows of every model
    (:func:`table7_claims`). Each companion row should be consistent; a mean row is left out
    when a fold lacks a class (its fold claim is skipped, so the mean could not be checked).
    """
    paper = ledger.ledger_table(ledger.paper_claims())
    claims: list[ledger.Claim] = []
    ft = read_artefact(out_dir, "hrnet/fold_table.csv")
    if ft is not None and len(ft):
        ft = ft.copy()
        ft["fold"] = ft["fold"].astype(str)
        fc = ledger.claims_from_fold_table(ft, "companion HRNet")
        n_folds = int((~ft["fold"].isin(["pooled", "mean"])).sum())
        n_fold_claims = sum(1 for c in fc if c.kind == "single" and c.group)
        if n_fold_claims < n_folds:
            fc = [c for c in fc if c.kind != "mean_over_folds"]
        for c in fc:
            c.source = f"hrnet/fold_table.csv ({c.source})"
        claims += fc
    t7 = read_artefact(out_dir, "baselines/table7.csv")
    if t7 is not None and len(t7):
        claims += table7_claims(t7)
    companion = ledger.ledger_table(claims) if claims else pd.DataFrame(columns=paper.columns)
    return {"paper": paper, "companion": companion}


# --------------------------------------------------------------------------------------------
# 7. heat share with patient-level intervals
# --------------------------------------------------------------------------------------------
def _cluster_mean_ci(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int,
                     alpha: float = 0.05) -> tuple[float, float, float, int]:
    """Mean of ``values`` with a percentile bootstrap interval resampling whole groups."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return np.nan, np.nan, np.nan, 0
    _, gi = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    K = int(gi.max()) + 1
    mean = float(v.mean())
    if K < 2 or n_boot <= 0:
        return mean, np.nan, np.nan, K
    S = np.bincount(gi, weights=v, minlength=K)
    C = np.bincount(gi, minlength=K).astype(np.float64)
    rng = np.random.default_rng(seed)
    W = rng.multinomial(K, np.full(K, 1.0 / K), size=int(n_boot)).astype(np.float64)
    boot = (W @ S) / (W @ C)
    lo, hi = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return mean, float(lo), float(hi), K


def _heat_frames(out_dir: Path) -> dict[str, pd.DataFrame]:
    frames = {}
    for rel, kind, default in (("hrnet/heat_share.csv", "segmented", "hrnet (segmented)"),
                               ("baselines/heat_share.csv", "unsegmented", "hrnet (unsegmented)")):
        df = read_artefact(out_dir, rel)
        if df is None or df.empty or "share_lung" not in df.columns:
            continue
        df = df.copy()
        if "model" not in df.columns:
            df["model"] = default
        df["share_lung"] = pd.to_numeric(df["share_lung"], errors="coerce")
        df["area_lung"] = pd.to_numeric(df.get("area_lung", np.nan), errors="coerce")
        if "patient_id" not in df.columns:
            df["patient_id"] = df["image_id"]
        df["fold"] = df["fold"].astype(str) if "fold" in df.columns else "all"
        df["label"] = df["label"].astype(str) if "label" in df.columns else "all"
        frames[kind] = df
    return frames


def _cells(df: pd.DataFrame):
    """(label, fold, rows) for every class x fold, the pooled folds and all classes."""
    labels = sorted(df["label"].unique()) + ["all"]
    folds = sorted(df["fold"].unique(), key=lambda f: (len(f), f)) + ["pooled"]
    for lab in labels:
        dl = df if lab == "all" else df[df["label"] == lab]
        for f in folds:
            yield lab, f, (dl if f == "pooled" else dl[dl["fold"] == f])


def heat_share_ci(out_dir: Path, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Share of Grad-CAM heat inside the lung mask, with patient-level bootstrap 95 % intervals.

    For segmented HRNet (``hrnet/heat_share.csv``) and unsegmented HRNet
    (``baselines/heat_share.csv``), per class (and ``all``) x test fold (and ``pooled``): the mean
    share (``quantity = "share_lung"``) with its interval and ``chance``, the mean lung-area
    fraction of the same images (the share a uniform heat map would give). Then the paired
    difference segmented - unsegmented on the images both have (``quantity = "difference"``,
    ``model = "segmented - unsegmented"``; ``chance`` is nan). Images with a NaN share (an
    all-zero map) are dropped and counted in ``n_missing``. Columns: ``HEAT_COLUMNS``.
    """
    frames = _heat_frames(out_dir)
    rows = []
    for kind, df in frames.items():
        model = str(df["model"].iloc[0])
        for lab, f, part in _cells(df):
            ok = part["share_lung"].notna().to_numpy()
            p = part[ok]
            mean, lo, hi, K = _cluster_mean_ci(p["share_lung"].to_numpy(), p["patient_id"].to_numpy(),
                                               n_boot, seed)
            note = "" if K >= 2 or len(p) == 0 else "one patient: no interval"
            rows.append(dict(quantity="share_lung", model=model, label=lab, fold=f,
                             n_images=len(p), n_patients=K, mean=mean, lo=lo, hi=hi,
                             chance=float(p["area_lung"].mean()) if len(p) else np.nan,
                             n_missing=int((~ok).sum()), note=note))
    if "segmented" in frames and "unsegmented" in frames:
        a, b = frames["segmented"], frames["unsegmented"]
        m = a.merge(b[["image_id", "share_lung"]], on="image_id", suffixes=("", "_unseg"))
        m["diff"] = m["share_lung"] - m["share_lung_unseg"]
        for lab, f, part in _cells(m):
            ok = part["diff"].notna().to_numpy()
            p = part[ok]
            mean, lo, hi, K = _cluster_mean_ci(p["diff"].to_numpy(), p["patient_id"].to_numpy(),
                                               n_boot, seed)
            rows.append(dict(quantity="difference", model="segmented - unsegmented", label=lab,
                             fold=f, n_images=len(p), n_patients=K, mean=mean, lo=lo, hi=hi,
                             chance=np.nan, n_missing=int((~ok).sum()),
                             note=f"paired on {len(m)} images in both tables"))
    return pd.DataFrame(rows, columns=HEAT_COLUMNS)


def heat_share_fig(table: pd.DataFrame, caption: str = ""):
    """Left: pooled share of heat in the lungs per class and model (interval; grey bar = chance,
    the lung-area fraction). Right: the paired difference segmented - unsegmented per class,
    pooled (large) and per fold (small)."""
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
    return plots.finish(fig)


# --------------------------------------------------------------------------------------------
# 8. the shortcut audits
# --------------------------------------------------------------------------------------------
def audit_figure(audit_table: pd.DataFrame, permutation_null: dict | None = None,
                 caption: str = ""):
    """Each audit's pooled out-of-fold AUC with its patient-level interval against chance (0.5),
    labelled with what it tests and its verdict; the low-level audit's permutation-null 95th
    percentile is marked when ``permutation_null`` (``baselines/permutation_null.json``) is given."""
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
        ax.text(0.01, ypos[i] + 0.36, AUDIT_SHORT.get(key, "pooled out-of-fold AUC of its own target"),
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
    ax.set_xlim(0, 1.0)
    ax.set_ylim(-0.7, n - 0.1)
    ax.set_xlabel("pooled out-of-fold ROC-AUC (0.5 = chance)")
    ax.set_title(title, fontsize=10)
    cap = "; ".join(x for x in [caption, "dashed: chance; dotted: 0.6, the verdict's 'signal' bound "
                                "(a reading aid, not a test)"] if x)
    _caption(fig, cap)
    fig.tight_layout(rect=(0, 0.06, 0.88, 1))
    return plots.finish(fig)


# --------------------------------------------------------------------------------------------
# 9. everything for one run
# --------------------------------------------------------------------------------------------
def _load_json(out_dir: Path, rel: str) -> dict | None:
    p = Path(out_dir) / rel
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def evidence_figures(out_dir: Path, n_boot: int = 1000, seed: int = 0,
                     cfg_dict: dict | None = None) -> list[tuple[str, str, str, object]]:
    """All evidence figures of a run: a list of ``(file_name, paper_panel, caption, fig)``.

    Files: ``ev_calibration.png``, ``ev_ppv_npv.png``, ``ev_auc_forest.png``,
    ``ev_heat_share.png``, ``ev_audits.png``. A figure whose inputs are missing is skipped (it is
    not in the list) and the reason is in ``evidence_figures.skipped`` after the call.
    """
    out_dir = Path(out_dir)
    note = data_note(out_dir, cfg_dict)
    figs, skipped = [], []
    try:
        preds = load_predictions(out_dir)
    except FileNotFoundError as exc:
        preds, _ = None, skipped.append(("ev_calibration.png / ev_ppv_npv.png", str(exc)))
    if preds is not None:
        cal, f = calibration(preds, caption=note)
        figs.append(("ev_calibration.png", "beyond the paper (calibration of Table 7 models)",
                     f"{note}; Brier and ECE of the pooled out-of-fold probabilities", f))
        pt, f = prevalence_table(preds, caption=note)
        figs.append(("ev_ppv_npv.png", "beyond the paper (predictive values behind Tables 6-7)",
                     f"{note}; PPV / NPV at 1-20 % prevalence by Bayes' rule", f))
    t7 = read_artefact(out_dir, "baselines/table7.csv")
    if t7 is not None and len(t7):
        ext = read_artefact(out_dir, "baselines/external_table.csv")
        f = auc_forest(t7, ext, caption=note)
        figs.append(("ev_auc_forest.png", "Table 7 (ROC-AUC with intervals)",
                     f"{note}; internal pooled out-of-fold AUC"
                     + ("; external mean-of-folds AUC" if ext is not None and len(ext) else ""), f))
    else:
        skipped.append(("ev_auc_forest.png", "baselines/table7.csv missing or empty"))
    hs = heat_share_ci(out_dir, n_boot=n_boot, seed=seed)
    if len(hs):
        figs.append(("ev_heat_share.png", "Figs. 9 and 12 (quantified, with intervals)",
                     f"{note}; heat share inside the lung mask, segmented vs unsegmented HRNet",
                     heat_share_fig(hs, caption=note)))
    else:
        skipped.append(("ev_heat_share.png", "no heat_share.csv in hrnet/ or baselines/"))
    at = read_artefact(out_dir, "baselines/audit_table.csv")
    if at is not None and len(at):
        null = _load_json(out_dir, "baselines/permutation_null.json")
        figs.append(("ev_audits.png", "beyond the paper (shortcut audits, DeGrave et al. 2021)",
                     f"{note}; audit AUCs against chance",
                     audit_figure(at, null, caption=note)))
    else:
        skipped.append(("ev_audits.png", "baselines/audit_table.csv missing or empty"))
    evidence_figures.skipped = skipped
    return figs


evidence_figures.skipped = []


def write_evidence(out_dir: Path, dest: Path, n_boot: int = 1000, seed: int = 0,
                   cfg_dict: dict | None = None) -> pd.DataFrame:
    """Save every evidence figure (:func:`helpers.plots.save`) and table (CSV) into ``dest``.

    Returns the index of figures: ``file, paper, caption``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, panel, cap, fig in evidence_figures(out_dir, n_boot=n_boot, seed=seed,
                                                  cfg_dict=cfg_dict):
        plots.save(fig, dest / name)
        rows.append(dict(file=name, paper=panel, caption=cap))
    try:
        preds = load_predictions(out_dir)
    except FileNotFoundError:
        preds = None
    if preds is not None:
        cal, f = calibration(preds)
        plt.close(f)
        pt, f = prevalence_table(preds)
        plt.close(f)
        cal.to_csv(dest / "ev_calibration.csv", index=False)
        pt.to_csv(dest / "ev_ppv_npv.csv", index=False)
        comparisons(preds, n_boot=n_boot, seed=seed).to_csv(dest / "ev_comparisons.csv", index=False)
    heat_share_ci(out_dir, n_boot=n_boot, seed=seed).to_csv(dest / "ev_heat_share.csv", index=False)
    for k, t in ledger_tables(out_dir).items():
        t.to_csv(dest / f"ev_ledger_{k}.csv", index=False)
    return pd.DataFrame(rows, columns=["file", "paper", "caption"])
