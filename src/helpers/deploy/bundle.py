"""A self-contained, checksummed bundle of a finished run's models, for prediction (issue 11).

``export(run_dir, bundle_dir)`` (CLI: ``hrnet-cxr export RUN_DIR BUNDLE_DIR``) copies from a run
that finished notebooks 01-04 (05 and 06 add metrics and audits when present):

* ``weights/unet/fold{k}.pt``: the fold UNets (section 3.2), plain state dicts;
* ``weights/<model>/fold{k}.pt``: the fold classifiers of each exported model (``hrnet``, HRNet
  on segmented images, by default; ``hrnet_unsegmented`` or a Table 7 baseline by name when its
  weights were saved), plain state dicts;
* ``bundle.json``: format version, the resolved profile, each fold's decision threshold and the
  bundle's decision rule, the refinement settings, the training cohort's feature ranges for the
  out-of-distribution flags (:mod:`helpers.deploy.ood`), internal and external metrics with intervals,
  the shortcut audits, provenance (git revisions, data sources with counts and licences, package
  versions) and the SHA-256 of every weights file;
* ``evidence/``: the run's CSV tables the numbers come from; ``MODEL_CARD.md``
  (:mod:`helpers.report.model_card`).

Weights are re-saved from the state dicts loaded with ``torch.load(..., weights_only=True)`` and
loaded the same way, after their checksums have been verified (:func:`load`): opening a bundle
never runs code from it. An existing non-empty ``bundle_dir`` is never overwritten.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import refine
from helpers.deploy import ood
from helpers.run import repro, store
from helpers.run.artefacts import ART, MAIN_MODEL_DIR, STAGES, kept, migrate, read_csv

FORMAT = "hrnet-cxr-bundle/1"
BUNDLE_FILE = "bundle.json"
#: decision rule of a bundle with several folds (see :func:`decision_threshold`)
DECISION_RULE = "mean probability >= median of the fold thresholds"
#: run artefacts copied into ``evidence/`` (those present)
EVIDENCE = (ART.cohort, ART.flow, ART.dice_table, ART.pass_counts, ART.fold_table, ART.table7,
            ART.audit_table, ART.external_table, ART.stratified, ART.calibration, ART.heat_share_ci,
            ART.permutation_null, ART.pass_by_group, ART.within_source, ART.by_negative,
            ART.negatives_called, ART.loso_table, ART.learning,
            ART.external_preds)  # the held-out predictions the card scores the shipped rule on
#: the stages a bundle is made of (their notebooks: :data:`helpers.run.artefacts.STAGES`)
REQUIRED_STAGES = ("curation", "unet", "refine", "hrnet")


class BundleError(RuntimeError):
    """A bundle that cannot be written or used; the message says which file and what to do."""


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def profile_from_dict(d: dict):
    """Rebuild a :class:`helpers.config.Profile` from its saved dict (``to_dict`` or ``asdict``)."""
    from helpers.config import Profile, make_profile

    known = {f.name for f in dataclasses.fields(Profile)} - {"name"}
    return make_profile(d["name"], {k: v for k, v in d.items() if k in known})


def decision_threshold(thresholds) -> float:
    """The bundle's one threshold: the median of the fold thresholds.

    Each fold's threshold was chosen (Youden's J) on a small inner validation split, so they
    scatter (0.35-0.68 in the smoke run); the median is robust to one outlying fold and, with a
    single fold, is that fold's own threshold, so a one-fold prediction reproduces notebook 04's
    decision exactly.
    """
    t = np.asarray(list(thresholds), dtype=np.float64)
    if len(t) == 0:
        raise ValueError("no fold thresholds")
    return float(np.median(t))


def model_source(run_dir: Path, model: str, profile) -> tuple[Path, str, str]:
    """(folder of the fold files, timm architecture, input kind) of an exportable ``model``."""
    run_dir = Path(run_dir)
    if model == "hrnet":
        return run_dir / "hrnet" / MAIN_MODEL_DIR, profile.hrnet, "segmented"
    if model == "hrnet_unsegmented":
        return run_dir / "baselines" / "hrnet_unsegmented", profile.hrnet, "unsegmented"
    return run_dir / "baselines" / model, model, "segmented"


def _stage_profile(run_dir: Path):
    from helpers.evidence.recomputed import run_manifest

    for stage in ("hrnet", "refine", "unet", "curation"):
        cfg = run_manifest(run_dir, stage).get("config") or {}
        if cfg.get("profile"):
            return profile_from_dict(cfg["profile"]), cfg
    raise BundleError(f"{run_dir}: no run_manifest.json with a profile in its stage folders; is this "
                      "an OUT_DIR of run_all.sh (outputs/<profile>)?")


def _check_run(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise BundleError(f"{run_dir}: run folder not found")
    missing = [f"{s}/DONE.json ({STAGES[s]})" for s in REQUIRED_STAGES
               if not (run_dir / s / "DONE.json").is_file()]
    if missing:
        raise BundleError(f"{run_dir} is not a finished run: missing {', '.join(missing)}; run those "
                          "notebooks first (./run_all.sh with the same --out)")


def _check_dest(bundle_dir: Path) -> None:
    if bundle_dir.exists() and (not bundle_dir.is_dir() or any(bundle_dir.iterdir())):
        raise BundleError(f"{bundle_dir} already exists and is not empty; a bundle is never "
                          "overwritten: choose a new folder (or remove the old bundle yourself)")


def _copy_state(src: Path, dest: Path) -> dict:
    """Load a state dict without running code, save it as a plain state dict, return its entry."""
    import torch

    if not src.is_file():
        raise BundleError(f"{src} not found")
    state = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BundleError(f"{src} is not a plain state dict of tensors")
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dest)
    return {"file": dest.as_posix(), "sha256": sha256(dest)}


def _fold_thresholds(folder: Path, model: str) -> dict[int, float]:
    f = folder / "preds.csv"
    if not f.is_file():
        raise BundleError(f"model {model!r} was not trained in this run ({f} not found); exportable "
                          "models: hrnet, hrnet_unsegmented, or a baseline whose weights were saved")
    p = read_csv(f)
    p = p[p["set"].astype(str) == "oof"]
    out = {}
    for k, part in p.groupby("fold"):
        t = pd.to_numeric(part["threshold"]).unique()
        if len(t) != 1:
            raise BundleError(f"{f}: fold {k} has {len(t)} different thresholds")
        out[int(k)] = float(t[0])
    return out


def _rows(df: pd.DataFrame | None) -> list[dict]:
    if df is None or df.empty:
        return []
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def training_features(run_dir: Path) -> pd.DataFrame:
    """:func:`helpers.deploy.ood.features` of the training cohort: the classification images that
    passed refinement, from the run's saved arrays (the classifier's own inputs)."""
    _, keep = kept(run_dir)
    images = np.asarray(ART.cls_images.read(run_dir))[keep]
    refined = np.asarray(ART.masks_refined.read(run_dir))[keep]
    return ood.features(images, refined)


def _data_sources(run_dir: Path) -> list[dict]:
    """Training images by source, class and licence (classification index) with the registry's
    licence summary where the source is a registered public one."""
    from helpers.data.sources import get_source

    idx = ART.cls_index.find(run_dir)
    if idx is None or idx.empty:
        return []
    ri = ART.refine_index.find(run_dir)
    if ri is not None and len(ri) == len(idx):
        idx = idx.assign(used=store.bool_column(ri, "passed"))
    else:
        idx = idx.assign(used=True)
    if "license" not in idx:
        idx["license"] = ""
    rows = []
    for (src, label, lic), part in idx.groupby(["source", "label", "license"]):
        try:
            reg = get_source(str(src))
            reg_lic, home = reg.licence, reg.homepage
        except KeyError:
            reg_lic, home = "", ""
        rows.append({"source": str(src), "label": str(label), "license": str(lic) or "not stated",
                     "registry_licence": reg_lic, "homepage": home, "images": int(len(part)),
                     "images_used": int(part["used"].sum()), "patients": int(part["patient_id"].nunique())})
    return rows


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def export(run_dir: str | Path, bundle_dir: str | Path, models: tuple[str, ...] | list[str] = ("hrnet",),
           card: bool = True) -> Path:
    """Write the bundle of the finished run in ``run_dir`` to ``bundle_dir``; returns ``bundle_dir``.

    ``models``: the classifiers to include (first = the default for prediction). Raises
    :class:`BundleError` when the run is unfinished, a model's weights were not saved, or
    ``bundle_dir`` exists and is not empty. The bundle is assembled in a temporary folder next
    to ``bundle_dir`` and moved into place at the end, so a failed export leaves nothing behind.
    """
    run_dir, bundle_dir = Path(run_dir).resolve(), Path(bundle_dir).resolve()
    _check_run(run_dir)
    _check_dest(bundle_dir)
    migrate(run_dir)  # a run of the earlier layout (hrnet/hrnet/) is renamed in place
    models = list(dict.fromkeys(models))
    if not models:
        raise BundleError("no model to export")
    profile, cfg = _stage_profile(run_dir)
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{bundle_dir.name}.partial-", dir=bundle_dir.parent))
    try:
        meta = _assemble(run_dir, tmp, profile, cfg, models)
        store.save_json(meta, tmp / BUNDLE_FILE)
        if card:
            from helpers.report.model_card import write_model_card

            write_model_card(run_dir, tmp, meta)
        os.chmod(tmp, 0o777 & ~store.current_umask())
        if bundle_dir.exists():
            bundle_dir.rmdir()  # empty (checked above)
        os.replace(tmp, bundle_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return bundle_dir


def _assemble(run_dir: Path, out: Path, profile, cfg: dict, models: list[str]) -> dict:
    from helpers.evidence.recomputed import run_manifest

    weights: dict = {"unet": []}
    unet_files = sorted((run_dir / "unet").glob("fold*.pt"), key=lambda p: int(p.stem[4:]))
    if not unet_files:
        raise BundleError(f"{run_dir / 'unet'}: no fold*.pt (notebook 02 saves them)")
    for f in unet_files:
        e = _copy_state(f, out / "weights" / "unet" / f.name)
        weights["unet"].append({"fold": int(f.stem[4:]), **e})
    classifiers = {}
    for model in models:
        folder, arch, kind = model_source(run_dir, model, profile)
        thr = _fold_thresholds(folder, model)
        folds = []
        for k in sorted(thr):
            f = folder / f"fold{k}.pt"
            if not f.is_file():
                raise BundleError(f"{f} not found: the weights of {model!r} were not saved by its "
                                  "notebook (baselines are trained with save_weights=False); "
                                  "export 'hrnet' or 'hrnet_unsegmented' instead")
            e = _copy_state(f, out / "weights" / model / f.name)
            folds.append({"fold": k, "threshold": thr[k], **e})
        classifiers[model] = {"architecture": arch, "input": kind, "folds": folds,
                              "decision_threshold": decision_threshold(thr.values()),
                              "decision_rule": DECISION_RULE}
    # relative paths inside the bundle
    for e in weights["unet"] + [f for c in classifiers.values() for f in c["folds"]]:
        e["file"] = Path(e["file"]).relative_to(out).as_posix()

    feats = training_features(run_dir)
    evidence = {}
    for art in EVIDENCE:
        rel, src = art.rel(), art.path(run_dir)
        if src.is_file():
            dest = out / "evidence" / rel.replace("/", "__")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            evidence[rel] = {"file": dest.relative_to(out).as_posix(), "sha256": sha256(dest)}
    t7 = ART.table7.find(run_dir)
    ft = ART.fold_table.find(run_dir)
    et = ART.external_table.find(run_dir)
    at = ART.audit_table.find(run_dir)
    cal = ART.calibration.find(run_dir)
    def sel(df):
        if df is None or df.empty or "model" not in df:
            return None
        return df[df["model"].astype(str).isin(models)]
    manifests = {s: run_manifest(run_dir, s) for s in ("curation", "unet", "refine", "hrnet", "baselines",
                                                       "figures")}
    manifests = {s: m for s, m in manifests.items() if m}
    return {
        "format": FORMAT,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "default_model": models[0],
        "profile": dataclasses.asdict(profile),
        "data_kind": profile.data,
        "preprocessing": {
            "reader": ("helpers.data.decode.read_image (PNG/JPEG/TIFF 8- or 16-bit, DICOM via pydicom) "
                       "-> uint8"),
            "geometry": "helpers.data.decode.square: zero-pad to a centred square, resize (INTER_AREA)",
            "seg_size": profile.seg_size, "cls_size": profile.cls_size,
            "classifier_input": "uint8 / 255, standardised with mean 0.5, sd 0.25, grey replicated to "
                                "3 channels",
        },
        "refinement": {
            "unet_threshold": 0.5,
            "dilate_iters": refine.scaled_iterations(profile.dilate_iters, profile.seg_size),
            "close_iters": refine.scaled_iterations(profile.close_iters, profile.seg_size),
            "dilate_iters_at_512": profile.dilate_iters, "close_iters_at_512": profile.close_iters,
            "area_threshold_px": refine.area_threshold(profile, profile.seg_size),
            "area_threshold_512": profile.area_threshold_512, "at_size": profile.seg_size,
        },
        "weights": {"unet": weights["unet"]},
        "classifiers": classifiers,
        "ood": ood.training_ranges(feats),
        "metrics": {
            "internal_table7": _rows(sel(t7)),
            "internal_folds_hrnet": _rows(ft),
            "external": _rows(sel(et)),
            "calibration": _rows(sel(cal)),
        },
        "audits": _rows(at),
        "provenance": {
            "run_dir": str(run_dir),
            "run_config": cfg,
            "stage_git_revisions": {s: m.get("git_revision") for s, m in manifests.items()},
            "stage_finished_utc": {s: m.get("finished_utc") for s, m in manifests.items()},
            "training_packages": next((m.get("packages") for m in manifests.values()
                                       if m.get("packages")), {}),
            "export_git_revision": repro.git_revision(),
            "export_packages": repro.package_versions(),
            "data_sources": _data_sources(run_dir),
        },
        "evidence": evidence,
    }


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------
def read_meta(bundle_dir: str | Path) -> dict:
    bundle_dir = Path(bundle_dir)
    f = bundle_dir / BUNDLE_FILE
    if not f.is_file():
        raise BundleError(f"{bundle_dir}: not a bundle ({BUNDLE_FILE} missing); make one with "
                          "`hrnet-cxr export RUN_DIR BUNDLE_DIR`")
    try:
        meta = store.load_json(f)
    except ValueError as exc:
        raise BundleError(f"{f}: unreadable ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise BundleError(f"{f}: format {meta.get('format')!r}, expected {FORMAT!r}; re-export the run "
                          "with this version of hrnet-cxr")
    return meta


def verify(bundle_dir: str | Path, meta: dict | None = None, model: str | None = None) -> None:
    """Check the SHA-256 of every weights file the prediction needs (the UNets and ``model``'s
    folds; every classifier when ``model`` is None); raises :class:`BundleError` on a mismatch."""
    bundle_dir = Path(bundle_dir)
    meta = meta or read_meta(bundle_dir)
    entries = list(meta["weights"]["unet"])
    for name, c in meta["classifiers"].items():
        if model is None or name == model:
            entries += c["folds"]
    for e in entries:
        f = bundle_dir / e["file"]
        if not f.is_file():
            raise BundleError(f"{f}: weights file missing from the bundle")
        got = sha256(f)
        if got != e["sha256"]:
            raise BundleError(f"checksum mismatch for {f}: sha256 {got[:16]}..., the bundle records "
                              f"{e['sha256'][:16]}...; the file was altered or damaged. Refusing to "
                              "load it: re-export the bundle from its run")


def load_state(bundle_dir: Path, entry: dict) -> dict:
    """A verified weights file as a state dict (``weights_only=True``: no code is run)."""
    import torch

    f = Path(bundle_dir) / entry["file"]
    if sha256(f) != entry["sha256"]:
        raise BundleError(f"checksum mismatch for {f}; refusing to load it")
    return torch.load(f, map_location="cpu", weights_only=True)
