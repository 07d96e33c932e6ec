"""External validation: the trained models on a data set from elsewhere (issue: real chest X-rays).

``EXTERNAL_DATA_DIR`` names a manifest folder (or a public source in its layout), possibly with
sources never seen in training. Curation decodes it once and checks that it shares no patient
(and no near-duplicate film) with the training data; the UNet is scored on its image/mask pairs
(Dice per source); every fold model of every classifier predicts its classification images, and
so does the mean of the fold models. Results are per source and overall, with 95 % intervals.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import decode as decoding
from helpers.evidence import metrics
from helpers.run import store
from helpers.run.artefacts import ART, EXTERNAL_PREFIX

PREFIX = EXTERNAL_PREFIX  # the external set's files sit beside the internal ones


def load(cfg, out: Path | None = None) -> tuple[Path, pd.DataFrame]:
    """The external manifest (validated) and the root its paths refer to.

    The external set is curated exactly as ``DATA_DIR`` is (:func:`helpers.data.sources.load_source`):
    lateral views, missing or broken files, implausible images and bad lung masks are excluded
    with their reasons (:mod:`helpers.data.checks`), and one line says how many and why. With ``out``
    the selection is written there as ``ext_flow.csv``, ``ext_excluded.csv`` and ``ext_notes.csv``.
    Raises :class:`helpers.curate.CurationError` when nothing usable is left (or, with the
    profile's ``strict``, at any file or content problem).
    """
    from helpers.curate import enforce
    from helpers.data import manifest as mf
    from helpers.data import sources

    root = Path(cfg.external_data_dir)
    name = "manifest" if (root / "manifest.csv").is_file() else "auto"
    res = sources.load_source(name, root, derived_dir=cfg.out_dir / "data" / "derived_external")
    df = mf.validate(res.manifest, where=str(root), check_files=False)
    if out is not None:
        store.save_csv(res.flow, Path(out) / f"{PREFIX}flow.csv")
        store.save_csv(res.excluded, Path(out) / f"{PREFIX}excluded.csv")
        store.save_csv(res.notes, Path(out) / f"{PREFIX}notes.csv")
    print(enforce(df, res.flow, res.excluded, getattr(cfg.profile, "strict", False),
                  f"EXTERNAL_DATA_DIR {root}"))
    return Path("/"), df


def overlap_report(internal: pd.DataFrame, external: pd.DataFrame) -> pd.DataFrame:
    """Patients present in both sets (by ``patient_id``); an external set should share none."""
    shared = sorted(set(internal["patient_id"]) & set(external["patient_id"]))
    return pd.DataFrame({"patient_id": shared})


def decode(cfg, manifest: pd.DataFrame, root: Path, out: Path) -> dict[str, pd.DataFrame]:
    """Decode the external images once, as curation does for the internal ones.

    Writes ``ext_cls_index.csv``, ``ext_seg_index.csv`` and ``ext_*.npy`` stacks into ``out``.
    """
    from helpers.curate import image_ids

    p = cfg.profile
    cls = manifest[manifest["split_role"] == "classify"].sort_values("path").reset_index(drop=True)
    seg = manifest[manifest["split_role"] == "segment"].sort_values("path").reset_index(drop=True)
    cls.insert(0, "image_id", image_ids(cls["path"], cls["source"]))
    seg.insert(0, "image_id", image_ids(seg["path"], seg["source"]))
    cls["y"] = (cls["label"] == "covid").astype(int)
    files = [Path(root) / f for f in cls["path"]]
    seg_files = [Path(root) / f for f in seg["path"]]
    cls["file"] = [str(f) for f in files]  # as curation's index: the original files
    seg["file"] = [str(f) for f in seg_files]
    store.save_npy(decoding.load_stack(files, p.cls_size, desc="external classify"),
                   out / f"{PREFIX}cls_images.npy")
    store.save_npy(decoding.load_stack(files, p.seg_size, desc="external @ seg size"),
                out / f"{PREFIX}cls_images_seg.npy")
    store.save_npy(decoding.load_stack(seg_files, p.seg_size, desc="external seg"),
                   out / f"{PREFIX}seg_images.npy")
    store.save_npy(decoding.load_stack([Path(root) / f for f in seg["mask_path"]], p.seg_size, mask=True,
                              desc="external masks", images=seg_files),
                out / f"{PREFIX}seg_masks.npy")
    store.save_csv(cls, out / f"{PREFIX}cls_index.csv")
    store.save_csv(seg, out / f"{PREFIX}seg_index.csv")
    return {"cls": cls, "seg": seg}


def available(cfg) -> bool:
    """True when curation decoded an external set for this run."""
    return ART.ext_cls_index.exists(cfg)


def mean_of_folds(preds: pd.DataFrame, set_name: str = "external") -> pd.DataFrame:
    """Per model, average the fold models' probabilities on each external image.

    The decision threshold of the mean model is the mean of the folds' thresholds (each chosen
    on its own inner validation split). Returned rows have ``fold = "mean"``.
    """
    e = preds[preds["set"] == set_name]
    if e.empty:
        return e.copy()
    keys = [c for c in ("model", "image_id", "patient_id", "source", "view", "label", "y") if c in e]
    g = (e.groupby(keys, dropna=False)
         .agg(prob=("prob", "mean"), threshold=("threshold", "mean")).reset_index())
    g["pred"] = (g["prob"] >= g["threshold"]).astype(int)
    g["fold"], g["set"] = "mean", set_name
    return g


def _row(part: pd.DataFrame, n_boot: int, seed: int) -> dict:
    m = metrics.confusion(part["y"], part["pred"])
    r = metrics.rates(**m)
    a = metrics.auc_ci(part["y"], part["prob"], n_boot=n_boot, seed=seed, groups=part["patient_id"])
    out = {"n": len(part), "n_pos": int(part["y"].sum()), "n_neg": int((1 - part["y"]).sum()), **m,
           "auc": a["auc"], "auc_lo": a["lo"], "auc_hi": a["hi"]}
    for k in ("accuracy", "sensitivity", "specificity"):
        out.update({k: r[k], f"{k}_lo": r[f"{k}_lo"], f"{k}_hi": r[f"{k}_hi"]})
    return out


def table(preds: pd.DataFrame, n_boot: int = 1000, seed: int = 0, set_name: str = "external") -> pd.DataFrame:
    """External results: per model, per fold model and the mean of folds, per source and overall."""
    e = preds[preds["set"] == set_name].copy()
    if e.empty:
        return pd.DataFrame()
    both = pd.concat([e.assign(fold=e["fold"].astype(str)), mean_of_folds(preds, set_name)],
                     ignore_index=True)
    rows = []
    for (model, fold), part in both.groupby(["model", "fold"], sort=True):
        rows.append({"model": model, "fold": fold, "source": "all", **_row(part, n_boot, seed)})
        for src, sp in part.groupby("source"):
            rows.append({"model": model, "fold": fold, "source": src, **_row(sp, n_boot, seed)})
    return pd.DataFrame(rows)


def check_disjoint(internal: pd.DataFrame, external: pd.DataFrame, internal_root: Path,
                   external_root: Path) -> pd.DataFrame:
    """Refuse an external set that shares patients or near-duplicate films with the training data.

    Returns the (empty) table of cross-set duplicate pairs; raises ValueError naming them otherwise.
    """
    from helpers.data import dedup

    shared = overlap_report(internal, external)
    if len(shared):
        raise ValueError(f"EXTERNAL_DATA_DIR shares {len(shared)} patient(s) with DATA_DIR, e.g. "
                         f"{shared.patient_id.tolist()[:5]}; an external set must be patient-disjoint")
    a = internal.assign(path=[str(Path(internal_root) / p) for p in internal["path"]], _set="internal")
    b = external.assign(path=[str(Path(external_root) / p) for p in external["path"]], _set="external")
    both = pd.concat([a, b], ignore_index=True)
    pairs = dedup.find_duplicates(both)
    where = dict(zip(both["path"], both["_set"]))
    cross = pairs[[where[x] != where[y] for x, y in zip(pairs["path_a"], pairs["path_b"])]]
    if len(cross):
        raise ValueError(f"{len(cross)} external image(s) are near-duplicates of training images, e.g. "
                         f"{cross.path_a.iloc[0]} ~ {cross.path_b.iloc[0]}; "
                         "remove them from the external set")
    return cross


def unet_dice(cfg, states: list[dict], device: str = "cpu") -> pd.DataFrame:
    """Dice of each fold UNet and of their mean on the external image/mask pairs."""
    from helpers import segment

    idx = ART.ext_seg_index.read(cfg)
    if idx.empty:
        return pd.DataFrame(columns=["image_id", "patient_id", "source", "fold", "dice"])
    imgs, masks = ART.ext_seg_images.read(cfg), ART.ext_seg_masks.read(cfg)
    rows = []
    for name, group in [(str(k), [st]) for k, st in enumerate(states)] + [("mean", states)]:
        prob = segment.predict(cfg.profile, group, np.asarray(imgs), device, desc=f"external, UNet {name}")
        rows.append(idx[["image_id", "patient_id", "source"]].assign(
            fold=name, dice=segment.hard_dice_per_image(prob, np.asarray(masks))))
    return pd.concat(rows, ignore_index=True)


def refine(cfg, states: list[dict], device: str, out: Path) -> pd.DataFrame:
    """Masks, refinement and segmentation of the external classification images (as notebook 03).

    Writes ``ext_refine_index.csv`` (one row per external classification image: source, label,
    refined lung ``area``, the ``threshold`` and ``passed``), ``ext_masks_raw_cls.npy`` and
    ``ext_segmented.npy`` for every image - also those that fail the area threshold, so that a
    sensitivity analysis can score them (:func:`extra_set` with ``include="failed"``).
    """
    from helpers import refine as rf
    from helpers import segment

    p = cfg.profile
    idx = ART.ext_cls_index.read(cfg)
    prob = segment.predict(p, states, np.asarray(ART.ext_cls_images_seg.read(cfg)), device,
                           desc="external masks")
    raw, refined, area = rf.refine_all(prob, p)
    raw_c, ref_c = rf.resize_masks(raw, p.cls_size), rf.resize_masks(refined, p.cls_size)
    images = np.asarray(ART.ext_cls_images.read(cfg))
    store.save_npy(raw_c, out / f"{PREFIX}masks_raw_cls.npy")
    store.save_npy(ref_c, out / f"{PREFIX}masks_refined_cls.npy")  # for helpers.preprocess
    store.save_npy(rf.apply_mask(images, ref_c), out / f"{PREFIX}segmented.npy")
    thr = rf.area_threshold(p, p.seg_size)
    ri = idx[["image_id", "patient_id", "label", "source"]].assign(area=area, threshold=thr,
                                                                   passed=area >= thr)
    store.save_csv(ri, out / f"{PREFIX}refine_index.csv")
    return ri


def refine_counts(ri: pd.DataFrame) -> pd.DataFrame:
    """Images that passed / failed refinement per source and label, with totals.

    ri: an (external) refine index with ``source``, ``label`` and ``passed`` (bool or "True"/"False").
    Returns columns source, label, total, passed, failed, failed_% ; rows per (source, label),
    then per source over both labels (label "all") and the overall row (source "all").
    """
    cols = ["source", "label", "total", "passed", "failed", "failed_%"]
    if ri is None or ri.empty:
        return pd.DataFrame(columns=cols)
    d = ri.assign(passed=store.bool_column(ri, "passed"))

    def agg(part: pd.DataFrame, **keys) -> dict:
        n, k = len(part), int(part["passed"].sum())
        return {**keys, "total": n, "passed": k, "failed": n - k,
                "failed_%": round(100.0 * (n - k) / n, 1) if n else float("nan")}

    rows = [agg(part, source=s, label=lab) for (s, lab), part in d.groupby(["source", "label"], sort=True)]
    rows += [agg(part, source=s, label="all") for s, part in d.groupby("source", sort=True)]
    rows += [agg(part, source="all", label=lab) for lab, part in d.groupby("label", sort=True)]
    rows.append(agg(d, source="all", label="all"))
    return pd.DataFrame(rows, columns=cols)


def extra_set(cfg, segmented: bool, include: str = "passed") -> dict | None:
    """External images as ``train.cross_validate(extra=...)`` wants.

    ``include``: "passed" (the images that passed refinement: the main external analysis),
    "failed" (those that did not: their unsegmented images, or their segmented images with the
    small refined mask, for a sensitivity analysis) or "all". The index carries ``area`` and
    ``passed`` so that results can be split by them.
    """
    if include not in ("passed", "failed", "all"):
        raise ValueError(f"include must be 'passed', 'failed' or 'all', got {include!r}")
    if not available(cfg):
        return None
    ri = ART.ext_refine_index.read(cfg)
    passed = store.bool_column(ri, "passed")
    sel = {"passed": passed, "failed": ~passed, "all": passed | ~passed}[include]
    keep = np.flatnonzero(sel)
    idx = ART.ext_cls_index.read(cfg).iloc[keep].reset_index(drop=True)
    idx = idx.assign(area=ri["area"].to_numpy()[keep], passed=passed[keep])
    f = ART.ext_segmented.path(cfg) if segmented else ART.ext_cls_images.path(cfg)
    name = {"passed": "external", "failed": "external_failed", "all": "external_all"}[include]
    return {name: {"images": np.asarray(store.load_npy(f))[keep], "y": idx["y"].to_numpy(), "index": idx}}
