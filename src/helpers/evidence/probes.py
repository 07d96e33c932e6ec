"""Linear-probe audits of a classifier's inputs, and the de-confounding ladder's table.

Probes are cheap enough to re-run on every rung of the ladder (:mod:`helpers.ladder`): a logistic
regression on 32 x 32 thumbnails of the rung's inputs predicting the source, the label with the
lungs blacked out, and the label from the lung mask alone, plus the low-level statistics inside
and outside the lungs (:func:`helpers.evidence.audits.cv_logistic`). Notebook 05a's CNN audits
measure the paper's inputs with a network instead; a probe is a lower bound on what a network can
find. The favoured rung is the one whose probes sit nearest chance while its heat stays on the
lungs; internal AUC plays no part.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from helpers.evidence import audits, floors, metrics

#: the ladder's audits: key -> (column in the ladder table, what it tests)
#: the ladder's probe audits, in the ladder table's column order (described in
#: :data:`helpers.evidence.audits.PROBES`)
PROBES = ("source", "lungs_blacked_out", "mask_only", "lowlevel_inside", "lowlevel_outside",
          "not_square_from_inputs")


#: rungs whose shortcut excess is within this of the lowest count as tied (then heat decides)
TIE = 0.02


def probe_audits(x: dict[str, np.ndarray], y, index: pd.DataFrame, seed: int,
                 val_fraction: float, shapes: np.ndarray | None = None) -> dict[str, pd.DataFrame]:
    """The ladder's linear-probe audits on one rung's inputs (keys of :data:`PROBES`).

    ``shapes`` (int (N, 2), the original films' height and width) adds the ``not_square_from_inputs`` probe:
    how well "this film was not square" can be read from the rung's segmented inputs, i.e. whether
    the input mode lets the film's geometry through (left out when every film has one shape)."""
    y = np.asarray(y)
    out = {}
    try:
        y_src, _ = audits.source_target(index)
        out["source"] = floors.thumbnail_logreg(x["segmented"], y_src, index, seed, "probe_source",
                                                val_fraction=val_fraction)
    except (KeyError, ValueError):
        pass  # one source, or no source column: nothing to audit
    out["lungs_blacked_out"] = floors.thumbnail_logreg(
        audits.blackout_lungs(x["unsegmented"], x["refined"]), y, index, seed,
        "probe_lungs_blacked_out", val_fraction=val_fraction)
    out["mask_only"] = floors.thumbnail_logreg(audits.mask_only(x["refined"]), y, index, seed,
                                               "probe_mask_only", val_fraction=val_fraction)
    feats = audits.lowlevel_features(x["unsegmented"], x["lungs"])
    inside = feats[[c for c in feats.columns if str(c).startswith("in_")]]
    out["lowlevel_inside"] = audits.cv_logistic(inside, y, index, seed, model_name="probe_lowlevel_inside")
    outside = audits.outside_lung_features(audits.lowlevel_features(x["unsegmented"], x["refined"]))
    out["lowlevel_outside"] = audits.cv_logistic(outside, y, index, seed,
                                                 model_name="probe_lowlevel_outside")
    if shapes is not None:
        square = audits.not_square(shapes)
        if 0 < square.sum() < len(square):
            out["not_square_from_inputs"] = floors.thumbnail_logreg(x["segmented"], square, index, seed,
                                                        "probe_not_square", val_fraction=val_fraction)
    return out


def within_source(preds: pd.DataFrame) -> str:
    """AUC within each source that holds both classes, as ``source auc (n)``; '' if none."""
    d = preds[preds["set"].astype(str) == "oof"] if "set" in preds else preds
    if "source" not in d:
        return ""
    parts = []
    for src, g in d.groupby("source"):
        if g["y"].nunique() == 2:
            parts.append(f"{src} {roc_auc_score(g['y'], g['prob']):.2f} (n={len(g)})")
    return "; ".join(parts)


def rung_row(rung: str, text: str, preds: pd.DataFrame, probes: dict[str, pd.DataFrame],
             share: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """One row of the ladder table from a rung's predictions, probes and heat shares."""
    d = preds[preds["set"].astype(str) == "oof"]
    a = metrics.auc_ci(d["y"].to_numpy(), d["prob"].to_numpy(dtype=np.float64), n_boot=n_boot,
                       seed=seed, groups=d["patient_id"].to_numpy())
    row = {"rung": rung, "steps": text, "n": len(d), "auc": a["auc"], "auc_lo": a["lo"],
           "auc_hi": a["hi"]}
    for key in PROBES:
        p = probes.get(key)
        row[f"audit_{key}"] = (roc_auc_score(p["y"], p["prob"])
                               if p is not None and p["y"].nunique() == 2 else float("nan"))
    vals = [abs(row[f"audit_{k}"] - 0.5) for k in PROBES if math.isfinite(row[f"audit_{k}"])]
    row["shortcut_excess"] = float(np.mean(vals)) if vals else float("nan")
    row["heat_share_lungs"] = float(np.nanmean(share["share_lung"]))
    row["lung_area"] = float(np.nanmean(share["area_lung"]))
    row["heat_excess"] = row["heat_share_lungs"] - row["lung_area"]
    row["within_source"] = within_source(d)
    return row


#: columns of the ladder table (``ladder/ladder_table.csv``), also when the profile runs no rung
TABLE_COLUMNS = ["rung", "steps", "n", "auc", "auc_lo", "auc_hi",
                 *[f"audit_{k}" for k in PROBES], "shortcut_excess", "heat_share_lungs",
                 "lung_area", "heat_excess", "within_source"]


def table(rows: list[dict]) -> pd.DataFrame:
    """The ladder table from :func:`rung_row` rows; an empty table keeps its columns."""
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def favoured(table: pd.DataFrame) -> str:
    """The rung the audits favour: shortcut audits nearest chance (lowest mean |AUC - 0.5| over
    the probes), ties within :data:`TIE` broken by the larger heat excess inside the lungs
    (heat share minus lung area). Internal AUC plays no part."""
    t = table[np.isfinite(table["shortcut_excess"].astype(float))]
    if t.empty:
        return ""
    best = t["shortcut_excess"].min()
    tied = t[t["shortcut_excess"] <= best + TIE]
    return str(tied.sort_values("heat_excess", ascending=False)["rung"].iloc[0])

