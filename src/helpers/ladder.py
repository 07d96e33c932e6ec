"""A de-confounding ladder: the proposed model re-trained on inputs that carry less of the hospital.

The shared data are built the way the paper's were (COVID-19 films from one set of hospitals,
normal films mostly from another), so a model can score well by recognising where a film comes
from. Each rung of the ladder switches on one more input step of :mod:`helpers.preprocess` on top
of the rungs below it, trains the proposed HRNet on the same folds, and re-runs the shortcut
audits on that rung's inputs. The configuration the audits favour is the one whose audits sit
nearest chance while its heat stays on the lungs, not the one with the highest internal AUC
(which rewards learning the hospital).

Rungs (:data:`RUNGS`, in order; a profile's ``ladder`` field names the ones to run):

* ``paper``: the paper's inputs, segmented lungs squared and resized (section 3.2);
* ``crop`` (a): a square crop around the refined lung mask, so the lungs fill the input;
* ``standardise`` (b): grey levels rescaled by their in-lung percentiles, so exposure and
  processing differences between hospitals carry less signal;
* ``augment`` (c): Table 3 augmentation for the classifier, at the profile's epoch count;
* ``film`` (d): the crop kept inside the film, so no zero-padding bar enters the input. Squaring a
  film pads it by an amount set by its aspect ratio, which differs between hospitals and
  scanners; DeGrave et al. (2021, Nat. Mach. Intell. 3:610) found COVID-19 classifiers relying
  on image borders and burnt-in annotations outside the lungs.

Audits per rung are linear probes (cheap enough to re-run on every rung): a logistic
regression on 32 x 32 thumbnails of the rung's inputs predicting the source, the label with the
lungs blacked out, and the label from the lung mask alone, plus the low-level statistics inside
and outside the lungs (:func:`helpers.evidence.audits.cv_logistic`). Notebook 05's CNN audits measure the
paper rung with a network instead; a probe is a lower bound on what a network can find.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from helpers import explain, preprocess
from helpers.evidence import audits, floors, metrics
from helpers.run.artefacts import ART, MAIN_MODEL_DIR

#: rung -> (profile fields it switches on, one line for readers); applied cumulatively in order
RUNGS: dict[str, tuple[dict, str]] = {
    "paper": ({}, "segmented lungs, squared and resized (the paper's inputs)"),
    "crop": ({"cls_crop_lungs": True}, "+ (a) square crop around the refined lung mask"),
    "standardise": ({"cls_lung_standardise": True}, "+ (b) grey levels standardised inside the lungs"),
    "augment": ({"cls_augment": True}, "+ (c) Table 3 augmentation for the classifier"),
    "film": ({"cls_film_only": True}, "+ (d) crop kept inside the film: no padding bars"),
}

#: the ladder's audits: key -> (column in the ladder table, what it tests)
AUDITS: dict[str, str] = {
    "source": "source from the model's inputs",
    "lungs_blacked_out": "label with the lungs blacked out (rung's field of view)",
    "mask_only": "label from the lung mask alone",
    "lowlevel_inside": "label from grey-level statistics inside the lungs",
    "lowlevel_outside": "label from grey-level statistics outside the lungs",
}

#: rungs whose shortcut excess is within this of the lowest count as tied (then heat decides)
TIE = 0.02


def rung_profiles(profile) -> list[tuple[str, object, str]]:
    """``[(rung, profile of that rung, description)]`` for ``profile.ladder``, cumulative.

    Every rung starts from ``profile`` with the de-confounding steps off and adds the steps of
    each rung up to itself, so the rungs differ only by the ladder. Unknown rung names raise."""
    unknown = [r for r in profile.ladder if r not in RUNGS]
    if unknown:
        raise ValueError(f"unknown ladder rung(s) {unknown}; choose from {list(RUNGS)}")
    base = replace(profile, cls_crop_lungs=False, cls_lung_standardise=False,
                   cls_film_only=False, cls_augment=False)
    out, on = [], {}
    for name in RUNGS:
        if name not in profile.ladder:
            continue
        on.update(RUNGS[name][0])
        if on.get("cls_film_only") and not on.get("cls_crop_lungs"):
            on["cls_crop_lungs"] = True  # the film rung acts on the lung crop
        out.append((name, replace(base, **on), RUNGS[name][1]))
    return out


def same_inputs_and_training(a, b) -> bool:
    """True when two profiles train the proposed model identically (its stage settings agree)."""
    from helpers.config import stage_settings

    return stage_settings(a, "hrnet") == stage_settings(b, "hrnet")


def rung_inputs(P, segmented, unsegmented, refined, lungs, shapes) -> dict[str, np.ndarray]:
    """The rung's model inputs (``images``, segmented), the same view unsegmented
    (``unsegmented``), and the refined and raw lung masks cropped with them."""
    s = preprocess.classifier_inputs(segmented, refined, P, segmented=True, shapes=shapes,
                                     carry={"lungs": lungs})
    u = preprocess.classifier_inputs(unsegmented, refined, P, segmented=False, shapes=shapes)
    return {"images": s["images"], "unsegmented": u["images"], "refined": s["masks"],
            "lungs": s["lungs"]}


def probe_audits(x: dict[str, np.ndarray], y, index: pd.DataFrame, seed: int,
                 val_fraction: float) -> dict[str, pd.DataFrame]:
    """The ladder's linear-probe audits on one rung's inputs (keys of :data:`AUDITS`)."""
    y = np.asarray(y)
    out = {}
    try:
        y_src, _ = audits.source_target(index)
        out["source"] = floors.thumbnail_logreg(x["images"], y_src, index, seed, "probe_source",
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
    for key in AUDITS:
        p = probes.get(key)
        row[f"audit_{key}"] = (roc_auc_score(p["y"], p["prob"])
                               if p is not None and p["y"].nunique() == 2 else float("nan"))
    vals = [abs(row[f"audit_{k}"] - 0.5) for k in AUDITS if math.isfinite(row[f"audit_{k}"])]
    row["shortcut_excess"] = float(np.mean(vals)) if vals else float("nan")
    row["heat_share_lungs"] = float(np.nanmean(share["share_lung"]))
    row["lung_area"] = float(np.nanmean(share["area_lung"]))
    row["heat_excess"] = row["heat_share_lungs"] - row["lung_area"]
    row["within_source"] = within_source(d)
    return row


#: columns of the ladder table (``ladder/ladder_table.csv``), also when the profile runs no rung
TABLE_COLUMNS = ["rung", "steps", "n", "auc", "auc_lo", "auc_hi",
                 *[f"audit_{k}" for k in AUDITS], "shortcut_excess", "heat_share_lungs",
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


def run_rung(cfg, name: str, Pr, text: str, data: dict, out, device: str = "cpu",
             n_boot: int = 1000) -> tuple[dict, list[pd.DataFrame], pd.DataFrame]:
    """Train (or reuse) one rung, audit its inputs; returns (table row, probe predictions, heat).

    data: ``segmented, unsegmented, refined, lungs`` (N, S, S), ``shapes`` (N, 2) or None,
    ``y`` (N,) and ``index`` (the classification rows). The rung whose settings equal the
    profile's own model is read from notebook 04's results instead of being trained again.
    """
    from helpers import train

    x = rung_inputs(Pr, data["segmented"], data["unsegmented"], data["refined"], data["lungs"],
                    data["shapes"])
    y, index = data["y"], data["index"]
    if same_inputs_and_training(Pr, cfg.profile):
        stage, tag = ART.hrnet_preds.path(cfg).parent.parent, MAIN_MODEL_DIR
        preds = ART.hrnet_preds.read(cfg)
    else:
        stage, tag = out, f"ladder_{name}"
        preds = train.cross_validate(Pr, Pr.hrnet, tag, x["images"], y, index, out, cfg.seed, device,
                                     after_fold=explain.fold_hook(x["images"], y, device),
                                     save_weights=False)
    heat = explain.collect(stage, tag, len(index))
    share = explain.share_table(index, heat, {"lung": x["lungs"]}, name)
    probes = probe_audits(x, y, index, cfg.seed, cfg.profile.cls_val_fraction)
    row = rung_row(name, text, preds, probes, share, n_boot=n_boot, seed=cfg.seed)
    return row, [p.assign(rung=name, audit=k) for k, p in probes.items()], share.assign(rung=name)
