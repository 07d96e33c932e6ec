"""The tables a reader sees, framed from saved artefacts: Table 6 and 7 as the paper lays them
out, fold numbering, model names and order, the ladder and heat-share frames.

Table functions return DataFrames only; drawing is in :mod:`helpers.report.plots` and the figure records
in :mod:`helpers.report.figures`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.evidence import audits
from helpers.evidence.recomputed import model_order  # one order for every table and figure
from helpers.report.formats import fixed, fmt_auc, fmt_pct
from helpers.run.artefacts import ART

#: readable names of the models a run can train, in the order tables list them
MODEL_LABELS: dict[str, str] = {
    "hrnet": "HRNet, segmented lungs (proposed)",
    "hrnet_unsegmented": "HRNet, full image",
    "resnet152": "ResNet152", "densenet121": "DenseNet121", "efficientnet_b4": "EfficientNet-B4",
    "resnet18": "ResNet18 (smoke stand-in for ResNet152)",
    "efficientnet_b0": "EfficientNet-B0 (smoke stand-in for EfficientNet-B4)",
    "thumbnail_logreg_segmented": "Thumbnail logistic regression, segmented",
    "thumbnail_logreg_unsegmented": "Thumbnail logistic regression, full image",
    **{f"audit_{key}": a.label for key, a in audits.AUDITS.items()},
}

#: Table 7 of the paper (accuracy, sensitivity, specificity in %); HRNet is its "Proposed Model"
PAPER_TABLE7: dict[str, tuple[float, float, float]] = {
    "hrnet": (99.26, 98.53, 98.82), "resnet152": (94.50, 95.12, 94.00),
    "densenet121": (93.40, 90.24, 96.00), "efficientnet_b4": (97.56, 95.12, 96.15),
}

#: models whose inputs follow the profile's input settings: (segmented input, trained with the
#: classifier augmentation, name pattern); the thumbnail floors fit a logistic regression, unaugmented
_INPUT_MODELS = {"hrnet": (True, True, "HRNet, {} (proposed)"),
                 "hrnet_unsegmented": (False, True, "HRNet, {}"),
                 "thumbnail_logreg_segmented": (True, False, "Thumbnail logistic regression, {}"),
                 "thumbnail_logreg_unsegmented": (False, False, "Thumbnail logistic regression, {}")}


def model_label(name: str, profile=None, short: bool = False) -> str:
    """A model's readable name; with ``profile``, the proposed model and the floors name their
    inputs from the profile's input settings (:func:`helpers.preprocess.describe_inputs`;
    ``short``: its short form, for axis labels)."""
    if profile is not None and str(name) in _INPUT_MODELS:
        from helpers.preprocess import describe_inputs

        segmented, augmented, pattern = _INPUT_MODELS[str(name)]
        if not augmented:
            from dataclasses import is_dataclass, replace

            profile = replace(profile, cls_augment=False) if is_dataclass(profile) else profile
        return pattern.format(describe_inputs(profile, segmented, short=short))
    return MODEL_LABELS.get(str(name), str(name))

def fold_label(fold) -> str:
    """Folds are numbered from 1 wherever a reader sees them (stored ids start at 0)."""
    s = str(fold)
    return str(int(float(s)) + 1) if s.replace(".", "", 1).lstrip("-").isdigit() else s

def readable_folds(df: pd.DataFrame, col: str = "fold", where: pd.Series | None = None) -> pd.DataFrame:
    """A copy of ``df`` whose fold ids read 1..K (rows ``where`` is true, all by default)."""
    out = df.copy()
    mask = where if where is not None else pd.Series(True, index=out.index)
    out[col] = out[col].astype(object)
    out.loc[mask, col] = [fold_label(v) for v in out.loc[mask, col]]
    return out

def _numeric(t: pd.DataFrame, keep=("fold", "kind", "note", "model")) -> pd.DataFrame:
    t = t.copy()
    num = [c for c in t.columns if c not in keep]
    t[num] = t[num].apply(pd.to_numeric, errors="coerce")
    return t

def table6_frame(cfg, fold_table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 6 as the paper lays it out (fold, accuracy, sensitivity, specificity, in %), with
    Wilson 95 % intervals, each fold's images (COVID / non-COVID: every negative label, normal or
    not), its AUC and its decision threshold."""
    ft = fold_table if fold_table is not None else ART.fold_table.read(cfg.out_dir)
    ft = _numeric(ft)
    rows = []
    for r in ft.itertuples(index=False):
        row = {"Fold": {"pooled": "Pooled", "mean": "Average"}.get(str(r.fold), fold_label(r.fold)),
               "Images (COVID / non-COVID)": f"{int(r.n_pos)} / {int(r.n_neg)}"}
        for m in ("accuracy", "sensitivity", "specificity"):
            row[f"{m.capitalize()} %"] = fmt_pct(getattr(r, m), getattr(r, f"{m}_lo", np.nan),
                                                getattr(r, f"{m}_hi", np.nan), unit="")
        row["AUC"] = fmt_auc(r.auc)
        row["Threshold"] = fixed(r.threshold, 2) if np.isfinite(r.threshold) else "per fold"
        rows.append(row)
    return pd.DataFrame(rows)

def pooled_vs_mean_note(fold_table: pd.DataFrame) -> str:
    """Why the pooled AUC can fall below every fold's AUC, with this run's numbers."""
    ft = _numeric(fold_table)
    folds = ft[~ft["fold"].astype(str).isin(["pooled", "mean"])]
    pooled = ft[ft["fold"].astype(str) == "pooled"]
    if folds.empty or pooled.empty or not folds["auc"].notna().any():
        return ""
    pa, lo, hi = float(pooled["auc"].iloc[0]), folds["auc"].min(), folds["auc"].max()
    tlo, thi = folds["threshold"].min(), folds["threshold"].max()
    text = (f"Pooled AUC {pa:.3f} ranks all out-of-fold probabilities together; the fold AUCs "
            f"({lo:.3f}-{hi:.3f}) rank each fold model's own scores. ")
    if pa < lo:
        text += (f"The pooled AUC is lower than every fold's because the fold models score on "
                 f"different scales (validation thresholds {tlo:.2f}-{thi:.2f}): a score means "
                 "different things in different folds, which a single deployed model would not "
                 "allow. The pooled value is the one to quote.")
    else:
        text += f"Validation thresholds range {tlo:.2f}-{thi:.2f}."
    return text

def table7_frame(cfg, table7: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 7 with the paper's columns (accuracy, sensitivity, specificity in %) and our 95 %
    intervals, the paper's value beside ours where the paper reports the model, and ROC-AUC."""
    t = table7 if table7 is not None else ART.table7.read(cfg.out_dir)
    t = _numeric(t).set_index("model")
    # notebook 06 saves it before drawing; a frame built without a run has none
    learning = ART.learning.find(cfg.out_dir) if getattr(cfg, "out_dir", None) else None
    failed = set() if learning is None or learning.empty else {
        str(m) for m, ok in zip(learning["model"], learning["learned"]) if ok is False}
    rows = []
    for m in model_order(t.index):
        r, paper = t.loc[m], PAPER_TABLE7.get(m)
        label = model_label(m, getattr(cfg, "profile", None), short=True)
        row = {"Model": label + (" - did not learn" if m in failed else ""), "n": int(r["n"])}
        for i, name in enumerate(("accuracy", "sensitivity", "specificity")):
            row[f"{name.capitalize()} %"] = fmt_pct(r[name], r[f"{name}_lo"], r[f"{name}_hi"], unit="")
            row[f"{name[:4].capitalize()}. paper"] = fixed(paper[i], 2) if paper else "-"
        row["ROC-AUC [95% CI]"] = fmt_auc(r["roc_auc"], r["roc_auc_lo"], r["roc_auc_hi"])
        rows.append(row)
    return pd.DataFrame(rows)

def heat_share_frame(cfg) -> pd.DataFrame:
    a = ART.hrnet_heat_share.read(cfg.out_dir)
    b = ART.unsegmented_heat_share.read(cfg.out_dir)
    df = pd.concat([b, a], ignore_index=True)
    num = [c for c in df.columns if c.startswith(("share_", "area_"))]
    df[num] = df[num].apply(pd.to_numeric, errors="coerce")
    return df

def history_frame(cfg) -> pd.DataFrame:
    """Every classifier's per-epoch history of this run (notebooks 04, 05 and 05a)."""
    from helpers import train

    parts = [train.histories(cfg.out_dir / stage) for stage in ("hrnet", "baselines", "audits")]
    parts = [p for p in parts if len(p)]
    if not parts:
        raise FileNotFoundError(f"no classifier history under {cfg.out_dir}: run notebooks 04 and 05")
    return pd.concat(parts, ignore_index=True)

def planned_epochs(cfg, names) -> dict[str, int]:
    """The epochs each model trains for under this profile (baselines and audits may be cut)."""
    P = cfg.profile
    role = lambda n: "audit" if n.startswith("audit_") else (  # noqa: E731
        "proposed" if n.startswith("hrnet") else "baseline")
    return {n: P.for_network(n, role(n)).cls_epochs for n in names}

def ladder_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The ladder table as a reader sees it: one row per rung, AUCs to three decimals."""
    from helpers.evidence import probes

    if table is None or table.empty:
        return pd.DataFrame({"note": ["no ladder in this profile (./run_all.sh cpu-deconf runs one)"]})
    t = table.copy()
    out = pd.DataFrame({"rung": t["rung"], "steps": t["steps"],
                        "internal AUC [95% CI]": [fmt_auc(a, lo, hi) for a, lo, hi
                                                  in zip(t["auc"], t["auc_lo"], t["auc_hi"])]})
    for key in probes.PROBES:
        out[f"probe {key.replace('_', ' ')}"] = t[f"audit_{key}"].round(3)
    out["shortcut excess"] = t["shortcut_excess"].round(3)
    out["heat in lungs / lung area"] = [f"{fixed(h, 2)} / {fixed(a, 2)}" for h, a in
                                         zip(t["heat_share_lungs"], t["lung_area"])]
    out["within-source AUC"] = t["within_source"].fillna("").replace("", "none with both classes")
    return out
