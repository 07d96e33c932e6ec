"""The "honest evidence": tables recomputed from a run's stored predictions only.

Nothing here trains or runs a model, and nothing here draws. Every number is recomputed from the
CSV files the notebooks wrote into ``OUT_DIR`` (out-of-fold predictions of every model, the fold
table, Table 7, the Grad-CAM heat-share tables), with :mod:`helpers.evidence.metrics` and
:mod:`helpers.evidence.ledger`, so a reader can check each figure against the predictions it came from.

What the paper reports (per-fold accuracy / sensitivity / specificity and their mean) leaves out
what a reader needs to judge a diagnostic claim; this module adds it:

* :func:`calibration` / :func:`reliability` - Brier score, expected calibration error and the
  bins of a reliability diagram;
* :func:`prevalence_table` - PPV and NPV at prevalences of 1-20 % (Bayes' rule from the pooled
  out-of-fold sensitivity and specificity, with Wilson bounds), the study's own ~45 % being far
  above any screening setting;
* :func:`comparisons` - paired AUC differences (DeLong or bootstrap) and McNemar tests against the
  reference model on the same images;
* :func:`ledger_tables` - the claims ledger for the paper's numbers and for the companion's own;
* :func:`heat_share_ci` - the share of Grad-CAM heat inside the lungs with patient-level
  bootstrap intervals, segmented vs unsegmented HRNet on the same images;
* :func:`evidence_tables` / :func:`save_tables` / :func:`read_tables` - all of them for one run,
  computed once by notebook 06, saved in its stage folder and read back by every reader.

The figures are drawn in :mod:`helpers.report.plots` from these tables. Functions are robust to a
missing external set, folds with one class, missing models (skipped, with a note) and NaN
probabilities (dropped, counted).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from helpers.evidence import heldout, ledger, metrics, sites, verdict
from helpers.evidence.metrics import model_order  # noqa: F401 (the one model order, for the reports)
from helpers.run.artefacts import ART, EVIDENCE_TABLES, STAGES, artefact  # noqa: F401 (STAGES: readers of a run)
from helpers.run.repro import run_manifest

__all__ = [
    "run_manifest",
    "run_info",
    "data_note",
    "load_predictions",
    "reliability",
    "calibration",
    "prevalence_table",
    "comparisons",
    "table7_claims",
    "ledger_tables",
    "heat_share_ci",
    "evidence_tables",
    "save_tables",
    "read_table",
    "read_tables",
    "TABLES",
]


#: the evidence tables notebook 06 computes once (:func:`evidence_tables`) and saves in its stage
#: folder (``OUT_DIR/figures/``): name -> file. Figures, SUMMARY.md and the model card read these.
TABLES = {name: getattr(ART, name).file for name in EVIDENCE_TABLES}

COMPARISON_COLUMNS = ["model", "reference", "n", "n_pos", "n_neg", "auc_reference", "auc_model",
                      "auc_diff", "auc_diff_lo", "auc_diff_hi", "auc_p", "auc_method",
                      "accuracy_reference", "accuracy_model", "mcnemar_b", "mcnemar_c",
                      "mcnemar_statistic", "mcnemar_p", "mcnemar_method", "note"]
HEAT_COLUMNS = ["quantity", "model", "label", "fold", "n_images", "n_patients", "mean", "lo", "hi",
                "chance", "n_missing", "note"]


# --------------------------------------------------------------------------------------------
# reading a run
# --------------------------------------------------------------------------------------------
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
        cfg = cfg_dict or run_manifest(out_dir).get("config") or {}
        more = [Path(str(d)).name for d in cfg.get("extra_data_dirs") or []]  # one cohort, several folders
        return f"profile {info['profile']}: real chest X-rays from {' + '.join([where, *more])}"
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
    allp = ART.all_preds.find(out_dir)
    if allp is None:
        raise FileNotFoundError(f"{ART.all_preds.path(out_dir)} not found: run "
                                "notebooks/05_baseline_comparison.ipynb first (same OUT_DIR)")
    parts = [_clean_preds(allp)] if len(allp) else []
    ext = ART.external_preds.find(out_dir)
    if ext is not None and len(ext):
        ext = ext.copy()
        ext["set"] = ext["set"].fillna("external") if "set" in ext.columns else "external"
        parts.append(_clean_preds(ext))
    if not parts:
        return _clean_preds(allp) if len(allp.columns) else pd.DataFrame(
            columns=["image_id", "patient_id", "fold", "set", "y", "prob", "threshold", "model"])
    return pd.concat(parts, ignore_index=True)


def _oof(preds: pd.DataFrame) -> pd.DataFrame:
    return metrics.oof_rows(preds)


def _usable(d: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Rows with a finite probability, and how many were dropped."""
    ok = np.isfinite(d["prob"].to_numpy(dtype=np.float64))
    return d[ok], int((~ok).sum())


# --------------------------------------------------------------------------------------------
# 2. calibration
# --------------------------------------------------------------------------------------------
def reliability(preds: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """Reliability bins per model (pooled out-of-fold): ``model, bin_lo, bin_hi, n, mean_prob,
    frac_pos`` (:func:`helpers.evidence.metrics.reliability_table`)."""
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


def calibration(preds: pd.DataFrame, n_bins: int = 10) -> pd.DataFrame:
    """Calibration of each model's pooled out-of-fold probabilities, one row per model.

    Table columns: ``model, n, n_pos, n_neg, prevalence`` (observed fraction of COVID),
    ``mean_prob`` (calibration in the large: should equal the prevalence), ``brier``
    (:func:`helpers.evidence.metrics.brier`), ``ece``
    (:func:`helpers.evidence.metrics.ece`, ``n_bins`` equal-width
    bins), ``n_bins, n_missing`` (NaN probabilities dropped), ``note``.
    :func:`helpers.report.plots.calibration_plot` draws it with :func:`reliability`.
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
    return table


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
    thr = metrics.fold_thresholds(g, "threshold", 0.5)
    cm = metrics.confusion(y, metrics.predict(p, thr))
    return cm, metrics.rates(**cm)


def prevalence_table(preds: pd.DataFrame,
                     prevalences: Iterable[float] = np.linspace(0.01, 0.20, 20)) -> pd.DataFrame:
    """PPV and NPV each model would have at other prevalences, one row per model and prevalence.

    From the pooled out-of-fold sensitivity and specificity (each fold's own threshold) by Bayes'
    rule, :func:`helpers.evidence.metrics.ppv_npv_at_prevalence`; the bounds use the Wilson bounds of
    sensitivity and specificity together (a conservative box, not a joint interval). Columns:
    ``model, prevalence, ppv, ppv_lo, ppv_hi, npv, npv_lo, npv_hi, sensitivity(_lo/_hi),
    specificity(_lo/_hi), study_prevalence`` (n_pos / n of the pooled predictions) ``, n_pos,
    n_neg, note``. :func:`helpers.report.plots.prevalence_plot` draws it.
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
    return table


# --------------------------------------------------------------------------------------------
# 4. paired comparisons
# --------------------------------------------------------------------------------------------
def comparisons(preds: pd.DataFrame, reference: str = "hrnet", method: str = "delong",
                n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Paired comparison of every other model with ``reference`` on the same OOF images.

    :func:`helpers.evidence.metrics.compare_to_reference` per model (``auc_diff`` = reference - model,
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
            source=f"{ART.table7.rel()} ({r.model}, pooled out-of-fold)"))
    return claims


def ledger_tables(out_dir: Path) -> dict[str, pd.DataFrame]:
    """The claims ledger: ``{"paper": ..., "companion": ...}`` (:func:`helpers.evidence.ledger.ledger_table`).

    ``paper``: the paper's Tables 6 and 7, abstract and text. ``companion``: every triple the
    companion itself prints - HRNet's per-fold, pooled and mean rows (``hrnet/fold_table.csv``,
    :func:`helpers.evidence.ledger.claims_from_fold_table`) and the pooled Table 7 rows of every model
    (:func:`table7_claims`). Each companion row should be consistent; a mean row is left out
    when a fold lacks a class (its fold claim is skipped, so the mean could not be checked).
    """
    # with the other readings of each impossible row (e.g. "specificity" printed as NPV)
    paper = ledger.ledger_table(ledger.paper_claims(), alternatives=True)
    claims: list[ledger.Claim] = []
    ft = ART.fold_table.find(out_dir)
    if ft is not None and len(ft):
        ft = ft.copy()
        ft["fold"] = ft["fold"].astype(str)
        fc = ledger.claims_from_fold_table(ft, "companion HRNet")
        n_folds = int((~ft["fold"].isin(["pooled", "mean"])).sum())
        n_fold_claims = sum(1 for c in fc if c.kind == "single" and c.group)
        if n_fold_claims < n_folds:
            fc = [c for c in fc if c.kind != "mean_over_folds"]
        for c in fc:
            c.source = f"{ART.fold_table.rel()} ({c.source})"
        claims += fc
    t7 = ART.table7.find(out_dir)
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
    for art, kind, default in ((ART.hrnet_heat_share, "segmented", "hrnet (segmented)"),
                               (ART.unsegmented_heat_share, "unsegmented", "hrnet (unsegmented)")):
        df = art.find(out_dir)
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


# --------------------------------------------------------------------------------------------
# 8. every table of one run: computed once (notebook 06), saved, read back by every reader
# --------------------------------------------------------------------------------------------
def evidence_tables(out_dir: Path, n_boot: int = 1000, seed: int = 0,
                    reference: str = "hrnet") -> dict[str, pd.DataFrame]:
    """Every evidence table of the run in ``out_dir``, computed once: ``{name: table}`` with the
    names of :data:`TABLES`.

    Notebook 06 calls this and saves the result (:func:`save_tables`) in its stage folder;
    figures, ``SUMMARY.md`` and the model card read the saved files (:func:`read_tables`) and
    recompute nothing. ``n_boot`` / ``seed``: the paired-comparison and heat-share bootstraps.
    Raises FileNotFoundError (naming notebook 05) when the predictions are missing.
    """
    preds = load_predictions(out_dir)
    lt = ledger_tables(out_dir)
    tables = {"calibration": calibration(preds),
            "reliability": reliability(preds),
            "ppv_npv": prevalence_table(preds),
            "comparisons": comparisons(preds, reference=reference, n_boot=n_boot, seed=seed),
            "ledger_paper": lt["paper"],
            "ledger_companion": lt["companion"],
            "heat_share_ci": heat_share_ci(out_dir, n_boot=n_boot, seed=seed),
            "external_table": heldout.table(preds, n_boot=n_boot, seed=seed),
            "external_table_all": heldout.table(preds, n_boot=n_boot, seed=seed, set_name="external_all"),
            "within_source": sites.within_source(preds, n_boot=n_boot, seed=seed),
            "by_negative": sites.by_negative(preds, n_boot=n_boot, seed=seed),
            "negatives_called": sites.negatives_called_covid(preds),
            "learning": learning_table(out_dir, preds),
            "loso_table": sites.loso_table(ART.loso_preds.find(out_dir), preds, n_boot=n_boot, seed=seed),
            "cohort_manifest": cohort_manifest(out_dir)}
    tables["verdict"] = verdict.claims(ART.table7.find(out_dir), ART.fold_table.find(out_dir),
                                       tables["comparisons"], tables["heat_share_ci"],
                                       tables["within_source"], tables["learning"], reference)
    return tables


#: the columns of :func:`cohort_manifest`: where each film came from, never its pixels or a path
#: on this machine
MANIFEST_COLUMNS = ["role", "image_id", "source", "source_repo", "source_path", "source_commit",
                    "patient_id", "label", "finding", "view", "sex", "age", "license", "fold"]


def cohort_manifest(out_dir: Path) -> pd.DataFrame:
    """Every film of the run, classification and segmentation, by its origin (source repository,
    path in it and commit), patient, label and fold: text only, so that a published run names
    the data it was made from without holding any of it."""
    parts = []
    for role, art in (("classify", ART.cls_index), ("segment", ART.seg_index)):
        idx = art.find(out_dir)
        if idx is not None and len(idx):
            parts.append(idx.assign(role=role).reindex(columns=MANIFEST_COLUMNS))
    if not parts:
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    return pd.concat(parts, ignore_index=True).fillna("")


def learning_table(out_dir: Path, preds: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`helpers.evidence.dynamics.learning` for every classifier of the run (notebooks 04,
    05, 05a), each against the loss of predicting its out-of-fold class frequency."""
    from helpers import train
    from helpers.evidence import dynamics

    preds = load_predictions(out_dir) if preds is None else preds
    h = [train.histories(Path(out_dir) / s) for s in ("hrnet", "baselines", "audits")]
    h = [x for x in h if len(x)]
    if not h:
        return dynamics.learning(pd.DataFrame(), 0.5)
    oof = _oof(preds)
    prevalence = oof.groupby("model")["y"].mean().to_dict() if len(oof) else {}
    return dynamics.learning(pd.concat(h, ignore_index=True), prevalence)


def save_tables(tables: dict[str, pd.DataFrame], dest: Path) -> list[Path]:
    """Write each table of :func:`evidence_tables` to ``dest/<file of TABLES>``; returns the paths."""
    from helpers.run import store

    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise KeyError(f"unknown evidence tables {unknown} (known: {list(TABLES)})")
    return [store.save_csv(df, Path(dest) / TABLES[name]) for name, df in tables.items()]


def read_table(figures_dir: Path, name: str) -> pd.DataFrame | None:
    """One saved evidence table (``name`` of :data:`TABLES`) from the figures stage folder, with
    the types :func:`evidence_tables` gave it (declared in the registry: fold and label as text,
    empty text as "", the ledger's verdicts as True / False / None); None when the file is missing."""
    return artefact(name).find_in(figures_dir)


def read_tables(figures_dir: Path) -> dict[str, pd.DataFrame | None]:
    """Every saved evidence table (:func:`read_table`); a missing file gives None."""
    return {name: read_table(figures_dir, name) for name in TABLES}
