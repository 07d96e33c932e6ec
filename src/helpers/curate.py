"""Cohort curation (section 3.1, Table 2): from a manifest folder to the tables and arrays every
later stage reads.

Outputs of the curation stage (``OUT_DIR/curation/``):

* ``cls_index.csv``   one row per classification image: manifest columns, ``image_id``, ``y``
                      (1 = covid), ``fold`` (patient-grouped, stratified by label);
* ``seg_index.csv``   one row per image/mask pair, ``fold`` (patient-grouped, stratified by source);
* ``cls_images.npy``  uint8 (N, cls_size, cls_size); ``cls_images_seg.npy`` the same images at
                      ``seg_size`` for the UNet; ``seg_images.npy`` / ``seg_masks.npy`` at seg_size;
* ``cls_masks_true.npy`` (only when the manifest has masks for classification images, as the
                      phantoms do) the true lung masks at seg_size, to score the UNet on them;
* ``cohort.csv``, ``flow.csv``, ``folds_summary.csv``;
* ``excluded.csv``    every row left out, with the step and the reason (missing, unreadable, not
                      a plausible radiograph, not frontal, a bad lung mask: :mod:`helpers.data.checks`);
* ``notes.csv``       one line per kept file with a remark (colour converted to gray, DICOM
                      mapped to 8-bit, mask normalised or resized, lung fraction unusual, ...).

Bad input never trains silently: a missing or broken file is an exclusion with its reason, and
one summary line says how many rows were dropped and why. The run stops only when nothing usable
is left, or, with the profile's ``strict`` setting, at the first file or content problem.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import decode, splits
from helpers.run import store
from helpers.run.artefacts import ART

# Steps whose exclusions are problems of the files rather than the selection protocol; with
# ``strict`` any of them fails the run.
CHECK_STEPS = ("image file found", "image check", "lung mask check", "mask merged")
NOTE_COLUMNS = ["source", "row_id", "source_path", "step", "note"]


class CurationError(ValueError):
    """Curation cannot go on: nothing usable is left, or ``strict`` met a bad file."""


def _reason_key(reason: str) -> str:
    """A reason without its per-file details:
    'near-constant image (black): ... 3 ...' -> 'near-constant image'."""
    key = re.split(r":| \(", str(reason), maxsplit=1)[0].strip()
    return re.sub(r"\d+(?:\.\d+)?(?:x\d+)?", "N", key) or "no reason given"


def exclusion_summary(n_kept: int, excluded: pd.DataFrame, where: str = "curation", top: int = 8) -> str:
    """One line: how many rows are usable, how many were dropped and why (grouped reasons)."""
    if excluded is None or excluded.empty:
        return f"{where}: {n_kept} rows usable, none excluded"
    vc = excluded["reason"].map(_reason_key).value_counts()
    parts = [f"{k} ({n})" for k, n in vc.head(top).items()]
    if len(vc) > top:
        parts.append(f"{len(vc) - top} more reason(s) ({int(vc.iloc[top:].sum())})")
    return (f"{where}: {n_kept} rows usable, {len(excluded)} excluded: " + "; ".join(parts)
            + " (each with its reason in excluded.csv)")


def enforce(manifest: pd.DataFrame, flow: pd.DataFrame, excluded: pd.DataFrame, strict: bool,
            where: str) -> str:
    """Fail when nothing usable is left, or (``strict``) when a file or content check excluded a row.

    Returns the summary line of :func:`exclusion_summary` otherwise.
    """
    line = exclusion_summary(len(manifest), excluded, where)
    if len(manifest) == 0:
        n_in = int(flow["n_in"].iloc[0]) if len(flow) and "n_in" in flow else 0
        if n_in == 0 and (excluded is None or excluded.empty):
            raise CurationError(f"{where}: no rows to curate (an empty manifest.csv or source "
                                "metadata?); nothing to train on. Point DATA_DIR at a folder that "
                                "lists images (docs/data.md).")
        raise CurationError(f"{where}: nothing usable is left after curation. {line}. "
                            "Fix the files named in the excluded rows, or point at other data.")
    if strict and excluded is not None and not excluded.empty:
        bad = excluded[excluded["step"].isin(CHECK_STEPS)]
        if len(bad):
            sample = "; ".join(f"{r.source_path}: {r.reason}" for r in bad.head(5).itertuples())
            raise CurationError(f"{where}: strict is set and {len(bad)} row(s) failed a file or content "
                                f"check, e.g. {sample}. Fix them, or run without strict to exclude "
                                "them with their reasons.")
    return line


def image_ids(paths: pd.Series, sources: pd.Series | None = None) -> pd.Series:
    """A stable identifier per image: its manifest path without extension.

    Absolute paths (adapters and hold-out manifests point at the original files) become
    ``<source>/<parent>/<stem>`` so identifiers do not depend on where the data live.
    """
    out = []
    for i, p in enumerate(paths):
        pp = Path(p)
        if pp.is_absolute():
            src = str(sources.iloc[i]) if sources is not None else pp.parts[1]
            out.append(f"{src}/{pp.parent.name}/{pp.stem}")
        else:
            out.append(str(pp.with_suffix("")))
    ids = pd.Series(out, index=paths.index)
    if ids.duplicated().any():
        raise ValueError(f"image identifiers collide, e.g. {ids[ids.duplicated()].iloc[0]}; "
                         "file names must be unique per source and folder")
    return ids


def limit_per_class(cls: pd.DataFrame, max_per_class: int, seed: int) -> pd.DataFrame:
    """Keep whole patients, at random, until each class has about ``max_per_class`` images."""
    if max_per_class <= 0:
        return cls
    rng = np.random.default_rng(seed)
    keep = []
    for _, part in cls.groupby("label"):
        pats = np.array(sorted(part["patient_id"].unique()), dtype=object)
        rng.shuffle(pats)
        counts = part.groupby("patient_id").size()
        total = 0
        for p in pats:
            if total >= max_per_class:
                break
            keep.append(p)
            total += int(counts[p])
    return cls[cls["patient_id"].isin(keep)]


#: the label of the segmentation films when they join the classification cohort as non-COVID
#: films (JSRT normals and nodules, Shenzhen and Montgomery tuberculosis): neither normal nor pneumonia
SEG_NEGATIVE_LABEL = "other"


def build_indices(manifest: pd.DataFrame, profile, seed: int, root: Path | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a validated manifest into (classification index, segmentation index) with folds.

    With ``root``, a ``file`` column holds each image's full path (for audits of the originals).
    With ``profile.seg_negatives`` the segmentation films also join the classification index as
    non-COVID films (label :data:`SEG_NEGATIVE_LABEL`), each with ``unet_fold``: the UNet fold
    whose test set held it, so that its lung mask comes from a UNet that never saw it (-1 for
    every other film).
    """
    seg = manifest[manifest["split_role"] == "segment"].copy().sort_values("path").reset_index(drop=True)
    if len(seg) < 3 * profile.seg_folds:
        raise ValueError(f"{len(seg)} image/mask pairs are too few for {profile.seg_folds} UNet folds")
    seg.insert(0, "image_id", image_ids(seg["path"], seg["source"]))
    sgrp = splits.split_groups(seg)
    seg["fold"] = splits.patient_folds(sgrp, seg["source"], profile.seg_folds, seed)
    cls = manifest[manifest["split_role"] == "classify"].copy()
    cls = limit_per_class(cls, profile.max_images_per_class, seed)
    cls["unet_fold"] = -1
    if getattr(profile, "seg_negatives", False):
        neg = seg.drop(columns=["image_id"]).assign(split_role="classify", label=SEG_NEGATIVE_LABEL,
                                                    unet_fold=seg["fold"].to_numpy()).drop(columns=["fold"])
        cls = pd.concat([cls, neg], ignore_index=True)
    cls = cls.sort_values("path").reset_index(drop=True)
    cls.insert(0, "image_id", image_ids(cls["path"], cls["source"]))
    cls["y"] = (cls["label"] == "covid").astype(int)
    if cls.empty:
        raise CurationError("no classification (classify) images are left in the cohort; the "
                            f"classifier needs covid and non-covid images (see {ART.excluded.rel()})")
    if cls["y"].nunique() < 2:
        raise ValueError("the classification set needs both covid and non-covid (normal or pneumonia) "
                         "images; "
                         f"found only {cls['label'].unique().tolist()}")
    grp = splits.split_groups(cls)
    # balanced over label and source together, so that each fold holds every source's share of
    # each class (a within-source comparison needs both classes of a source in every test fold)
    cls["fold"] = splits.patient_folds(grp, cls["label"] + "|" + cls["source"], profile.n_folds, seed)
    splits.check_disjoint(cls["patient_id"], cls["fold"])
    splits.check_disjoint(seg["patient_id"], seg["fold"])
    if root is not None:
        cls["file"] = [str(Path(root) / p) for p in cls["path"]]
        seg["file"] = [str(Path(root) / p) for p in seg["path"]]
    return cls, seg


def cohort_table(cls: pd.DataFrame, seg: pd.DataFrame) -> pd.DataFrame:
    """Table 2 in spirit: images, patients, views, findings, sex and age per role, label and source."""
    rows = []
    for (role, label, source), part in pd.concat([cls.assign(role="classify"),
                                                  seg.assign(role="segment", label="-")]
                                                 ).groupby(["role", "label", "source"]):
        age = pd.to_numeric(part["age"], errors="coerce")
        views = part["view"].replace("", "not stated").value_counts()
        findings = (part["finding"] if "finding" in part else pd.Series("", index=part.index)
                    ).fillna("").astype(str).replace("", "not stated").value_counts()
        rows.append({
            "role": role, "label": label, "source": source, "images": len(part),
            "patients": part["patient_id"].nunique(),
            "views": "; ".join(f"{k} {v}" for k, v in views.items()),
            "findings": "; ".join(f"{k} {v}" for k, v in findings.items()),
            "female_%": round(100 * (part["sex"] == "F").mean(), 1),
            "age_median": float(age.median()) if age.notna().any() else np.nan,
            "age_known": int(age.notna().sum()),
        })
    return pd.DataFrame(rows)


def _source_roots(root: Path) -> dict[str, Path]:
    """The public sources under ``root``: ``root`` itself if it is one, else its sub-folders."""
    from helpers.data import sources

    try:
        return {sources.detect_source(root): root}
    except (sources.SourceLayoutError, ValueError, FileNotFoundError):
        pass
    found: dict[str, Path] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            name = sources.detect_source(sub)
        except (sources.SourceLayoutError, ValueError, FileNotFoundError):
            continue
        if name in found:
            raise ValueError(f"two folders hold source {name!r}: {found[name]} and {sub}")
        found[name] = sub
    if not found:
        table = sources.registry_table()
        raise FileNotFoundError(
            f"{root}: neither a manifest folder (manifest.csv) nor a public chest X-ray source in its "
            "original layout, nor a folder of such sources. Expected layouts:\n"
            + "\n".join(f"  {r.name}: {r.layout}" for r in table.itertuples())
        )
    return found


def load_cohort(cfg) -> tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The run's data as (root for relative paths, validated manifest, flow table, excluded rows,
    notes on kept rows).

    Synthetic profiles generate phantoms under ``OUT_DIR/data/phantoms`` (reused when the same
    parameters were generated before). Real profiles read ``cfg.data_dir``: a manifest folder,
    one public source in its original layout, or a folder holding several such sources (each
    adapter reports its selection flow and every excluded row with the reason; merged lung masks
    are written under ``OUT_DIR/data/derived``, never into the source). Every image and mask
    passes :mod:`helpers.data.checks`; prints one line saying how many rows were excluded and why, and
    raises :class:`CurationError` when nothing usable is left (or, with ``strict``, at any file
    or content problem).
    """
    from helpers.data import manifest as mf

    p = cfg.profile
    if p.data == "synthetic":
        return _phantom_cohort(cfg)
    folders = [Path(d) for d in cfg.data_dirs]
    parts = [_load_folder(cfg, folder) for folder in folders]
    where = "DATA_DIR " + ", ".join(map(str, folders))
    check_patients_in_one_folder([(folder, res.manifest) for folder, res in zip(folders, parts)])
    df = mf.validate(pd.concat([r.manifest for r in parts], ignore_index=True), where=where,
                     check_files=False)
    flow, excluded, notes = (pd.concat([getattr(r, k) for r in parts], ignore_index=True)
                             for k in ("flow", "excluded", "notes"))
    print(enforce(df, flow, excluded, getattr(p, "strict", False), where))
    return Path("/"), df, flow, excluded, notes


#: the second phantom folder of a synthetic profile with ``pneumonia_patients`` (beside ``phantoms``)
PHANTOM_PNEUMONIA_FOLDER = "phantoms-pneumonia"


def _phantom_cohort(cfg):
    """Generated phantoms as :func:`load_cohort` returns data: one folder ``OUT_DIR/data/phantoms``
    (COVID, normal and the segmentation pairs), and with ``pneumonia_patients`` a second folder
    beside it holding the non-COVID pneumonia films of the COVID films' site, read into one
    cohort as several real data folders are (a patient in both is refused); paths are relative
    to ``OUT_DIR/data``."""
    from helpers.data import manifest as mf
    from helpers.data import phantoms

    p = cfg.profile
    common = dict(images_per_patient=tuple(p.images_per_patient), size=p.phantom_size,
                  shortcut_strength=p.shortcut_strength, seed=cfg.seed, finding_contrast=p.finding_contrast)
    base = cfg.out_dir / "data"
    folders = [phantoms.generate(base / "phantoms", n_patients=p.n_patients, n_seg_pairs=p.n_seg_pairs,
                                 aspect_cue=p.aspect_cue, **common)]
    if p.pneumonia_patients:
        folders.append(phantoms.generate(base / PHANTOM_PNEUMONIA_FOLDER, n_patients=p.pneumonia_patients,
                                         n_seg_pairs=0, classes=("pneumonia",), **common))
    parts = [(Path(f), mf.read_manifest(f)) for f in folders]
    check_patients_in_one_folder(parts)
    if len(parts) == 1:                       # one folder: paths relative to it, as they always were
        root, df = parts[0]
    else:
        root = base
        df = pd.concat([m.assign(**{c: [f"{f.name}/{v}" if v else "" for v in m[c]]
                                    for c in ("path", "mask_path")}) for f, m in parts], ignore_index=True)
        df = mf.validate(df, where=f"phantoms in {', '.join(str(f) for f, _ in parts)}", root=root)
    flow = pd.DataFrame([{"source": f"phantoms ({f.name})", "step": "generated", "n_in": len(m),
                          "n_kept": len(m), "n_removed": 0, "reason": ""} for f, m in parts])
    return (Path(root), df, flow,
            pd.DataFrame(columns=["source", "row_id", "source_path", "step", "reason"]),
            pd.DataFrame(columns=NOTE_COLUMNS))


def _load_folder(cfg, root: Path):
    """One data folder as a curated source result (manifest with absolute paths, flow, excluded,
    notes): a manifest folder, one public source in its original layout, or a folder of them."""
    from helpers.data import sources

    if (root / "manifest.csv").is_file():
        return sources.load_source("manifest", root)
    roots = _source_roots(root)
    opts = {"nih-cxr8": {"n_sample": 1000, "seed": cfg.seed},   # Table 2: 1,000 random NIH normals
            "chexpert": {"n_sample": 1000, "seed": cfg.seed}}   # Table 2: 1,000 random CheXpert normals
    return sources.curate(roots, derived_dir=cfg.out_dir / "data" / "derived",
                          options={k: v for k, v in opts.items() if k in roots})


def check_patients_in_one_folder(parts: list[tuple[Path, pd.DataFrame]]) -> None:
    """Refuse a cohort in which one patient id is listed by two data folders: the same person
    filed twice could sit in training and test at once, and which folder's label holds is unclear.
    Raises :class:`CurationError` naming the folders and some of the patients."""
    seen: dict[str, Path] = {}
    clashes: dict[tuple[Path, Path], list[str]] = {}
    for folder, manifest in parts:
        for pid in dict.fromkeys(manifest["patient_id"].astype(str)):
            if pid in seen and seen[pid] != folder:
                clashes.setdefault((seen[pid], folder), []).append(pid)
            else:
                seen.setdefault(pid, folder)
    if clashes:
        lines = [f"{a} and {b}: {len(ids)} patient(s), e.g. {', '.join(ids[:5])}"
                 for (a, b), ids in clashes.items()]
        raise CurationError("the same patient id appears in two data folders (" + "; ".join(lines)
                            + "). A patient must come from one folder: remove the duplicate rows from "
                            "one manifest, or give the patients distinct ids if they are different people.")


def duplicate_guard(manifest: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Near-duplicate radiographs across and within sources (perceptual hash + correlation).

    Returns (pairs, manifest with ``group_id``): images found to be copies of each other share a
    group, so that folds keep them on one side (the same film filed under two patients or two
    collections would otherwise sit in training and test at once).
    """
    from helpers.data import dedup

    pairs = dedup.find_duplicates(manifest, root=root)
    known = set(manifest["patient_id"])
    edges = [(a, b) for a, b in zip(pairs["patient_a"], pairs["patient_b"])
             if a and b and a in known and b in known]
    root_of = dedup.component_roots(known, [a for a, _ in edges], [b for _, b in edges])
    out = manifest.copy()
    out["group_id"] = out["patient_id"].map(root_of)   # the smallest patient id of the group
    return pairs, out


def decode_arrays(cls: pd.DataFrame, seg: pd.DataFrame, root: Path, profile, out: Path,
                  prefix: str = "") -> dict:
    """Decode and resize every image once; write the ``.npy`` stacks listed in the module doc.

    ``prefix`` names the cohort: "" for ``DATA_DIR``, :data:`helpers.run.artefacts.EXTERNAL_PREFIX`
    for the external set, whose stacks sit beside the internal ones (``ext_cls_images.npy``...).
    True lung masks of the classification images are kept only for the internal cohort (the
    phantoms have them, for scoring the UNet). Returns ``{stack name: path}``.
    """
    root = Path(root)
    files = [root / p for p in cls["path"]]
    seg_files = [root / p for p in seg["path"]]
    what = "external " if prefix else ""
    stacks = {
        "cls_images": lambda: decode.load_stack(files, profile.cls_size, desc=f"{what}classify images"),
        "cls_images_seg": lambda: decode.load_stack(files, profile.seg_size,
                                                    desc=f"{what}classify images @ seg size"),
    }
    if not prefix and len(cls) and (cls["mask_path"] != "").all():
        stacks["cls_masks_true"] = lambda: decode.load_stack(
            [root / p for p in cls["mask_path"]], profile.seg_size, mask=True, desc="true lung masks",
            images=files)
    stacks["seg_images"] = lambda: decode.load_stack(seg_files, profile.seg_size, desc=f"{what}seg images")
    stacks["seg_masks"] = lambda: decode.load_stack([root / p for p in seg["mask_path"]], profile.seg_size,
                                                    mask=True, desc=f"{what}seg masks", images=seg_files)
    return {prefix + name: str(store.save_npy(make(), Path(out) / f"{prefix}{name}.npy"))
            for name, make in stacks.items()}


# ------------------------------------------------------------------------------------------------
# the external set (EXTERNAL_DATA_DIR): curated, checked and decoded as DATA_DIR is
# ------------------------------------------------------------------------------------------------
def load_external(cfg) -> tuple[Path, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The external set as :func:`load_cohort` gives ``DATA_DIR``: (root for relative paths,
    validated manifest, flow table, excluded rows, notes on kept rows).

    The external set is curated exactly as ``DATA_DIR`` is (:func:`helpers.data.sources.load_source`):
    lateral views, missing or broken files, implausible images and bad lung masks are excluded
    with their reasons (:mod:`helpers.data.checks`), and one line says how many and why. Raises
    :class:`CurationError` when nothing usable is left (or, with the profile's ``strict``, at any
    file or content problem).
    """
    from helpers.data import manifest as mf
    from helpers.data import sources

    root = Path(cfg.external_data_dir)
    name = "manifest" if (root / "manifest.csv").is_file() else "auto"
    res = sources.load_source(name, root, derived_dir=cfg.out_dir / "data" / "derived_external")
    df = mf.validate(res.manifest, where=str(root), check_files=False)
    print(enforce(df, res.flow, res.excluded, getattr(cfg.profile, "strict", False),
                  f"EXTERNAL_DATA_DIR {root}"))
    return Path("/"), df, res.flow, res.excluded, res.notes


def external_indices(manifest: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(classification index, segmentation index) of the external set, as curation's but without
    folds: ``image_id``, ``y`` (1 = covid) and ``file`` (each image's original file)."""
    cls = manifest[manifest["split_role"] == "classify"].sort_values("path").reset_index(drop=True)
    seg = manifest[manifest["split_role"] == "segment"].sort_values("path").reset_index(drop=True)
    cls.insert(0, "image_id", image_ids(cls["path"], cls["source"]))
    seg.insert(0, "image_id", image_ids(seg["path"], seg["source"]))
    cls["y"] = (cls["label"] == "covid").astype(int)
    cls["file"] = [str(Path(root) / f) for f in cls["path"]]
    seg["file"] = [str(Path(root) / f) for f in seg["path"]]
    return cls, seg


def check_disjoint(internal: pd.DataFrame, external: pd.DataFrame, internal_root: Path,
                   external_root: Path) -> pd.DataFrame:
    """Refuse an external set that shares patients or near-duplicate films with the training data.

    Returns the (empty) table of cross-set duplicate pairs; raises ValueError naming them otherwise.
    """
    from helpers.data import dedup

    shared = sorted(set(internal["patient_id"]) & set(external["patient_id"]))
    if shared:
        raise ValueError(f"EXTERNAL_DATA_DIR shares {len(shared)} patient(s) with DATA_DIR, e.g. "
                         f"{shared[:5]}; an external set must be patient-disjoint")
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
