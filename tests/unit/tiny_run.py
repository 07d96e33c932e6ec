"""A finished run of notebooks 01-05 in miniature, made by calling the helpers the notebooks call,
on a handful of generated phantoms (no real data, no papermill): tests of the bundle and of
prediction use it, and so can a timing script at another profile's sizes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config, curate, refine, segment, train
from helpers.evidence import metrics
from helpers.run import artefacts, notebooks, repro, stages, store

TINY = dict(n_patients=12, images_per_patient=(1, 2), n_seg_pairs=16, phantom_size=64, seg_size=64,
            cls_size=64, seg_folds=2, n_folds=2, unet_epochs=8, unet_lr=0.002, unet_base_channels=8,
            cls_epochs=1, cls_batch=8, cls_val_fraction=0.25, head_hidden=16, bf16=False,
            channels_last=False,
            # one phantom folder of square films and a UNet without the opacity augmentation: the
            # tiny run the unit tests were written against (the smoke chain covers the rest)
            pneumonia_patients=0, aspect_cue=0.0, unet_opacity=0.0)


def build_run(out_dir: Path, profile: str = "smoke", overrides: dict | None = None, seed: int = 0,
              unsegmented: bool = True) -> Path:
    """Curation, UNet, refinement and HRNet cross-validation (plus Table 7 and, optionally, HRNet
    on unsegmented images) into ``out_dir``, with manifests and DONE files; returns ``out_dir``."""
    ov = dict(TINY if overrides is None else overrides)
    cfg = config.resolve(profile, out_dir=out_dir, seed=seed, overrides=ov)
    P, device = cfg.profile, "cpu"
    repro.seed_everything(seed)
    params = notebooks.notebook_parameters(cfg)

    out = cfg.stage_dir("curation")                                         # notebook 01
    root, manifest, flow, excluded, _ = curate.load_cohort(cfg)
    manifest = manifest.assign(group_id=manifest["patient_id"])
    cls, seg = curate.build_indices(manifest, P, seed, root)
    curate.decode_arrays(cls, seg, root, P, out)
    for name, df in {"cls_index": cls, "seg_index": seg, "cohort": curate.cohort_table(cls, seg),
                     "flow": flow, "excluded": excluded}.items():
        store.save_csv(df, out / f"{name}.csv")
    _finish(cfg, "curation", params)

    out = cfg.stage_dir("unet")                                             # notebook 02
    segment.cross_validate(P, store.load_npy(cfg.out_dir / "curation/seg_images.npy"),
                           store.load_npy(cfg.out_dir / "curation/seg_masks.npy"), seg, out, seed, device)
    _finish(cfg, "unet", params)

    out = cfg.stage_dir("refine")                                           # notebook 03
    images_seg = store.load_npy(cfg.out_dir / "curation/cls_images_seg.npy")
    probs = segment.predict(P, segment.load_fold_states(cfg.out_dir / "unet"), images_seg, device)
    raw, refined, area = refine.refine_all(probs, P)
    passed = area >= refine.area_threshold(P, P.seg_size)
    images = np.asarray(store.load_npy(cfg.out_dir / "curation/cls_images.npy"))
    raw_c, ref_c = refine.resize_masks(raw, P.cls_size), refine.resize_masks(refined, P.cls_size)
    for name, arr in {"masks_refined": refined, "masks_raw_cls": raw_c,
                      "masks_refined_cls": ref_c, "segmented": refine.apply_mask(images, ref_c)}.items():
        store.save_npy(arr, out / f"{name}.npy")
    store.save_csv(cls[["image_id", "patient_id", "label", "source", "fold"]]
                   .assign(area=area, passed=passed),
                out / "refine_index.csv")
    store.save_csv(refine.pass_table(cls["label"], passed), out / "pass_counts.csv")
    _finish(cfg, "refine", params)

    out = cfg.stage_dir("hrnet")                                            # notebook 04
    keep = np.flatnonzero(passed)
    kept = cls.iloc[keep].reset_index(drop=True)
    y = kept["y"].to_numpy()
    seg_imgs = np.asarray(store.load_npy(cfg.out_dir / "refine/segmented.npy"))[keep]
    preds = train.cross_validate(P, P.hrnet, "hrnet", seg_imgs, y, kept, out, seed, device,
                                 folder=artefacts.MAIN_MODEL_DIR)
    store.save_csv(metrics.fold_table(preds[preds["set"] == "oof"]), out / "fold_table.csv")
    _finish(cfg, "hrnet", params)

    out = cfg.stage_dir("baselines")                                        # notebook 05 (part)
    everything = [preds]
    if unsegmented:
        everything.append(train.cross_validate(P, P.hrnet, "hrnet_unsegmented", images[keep], y, kept,
                                               out, seed, device))
    allp = pd.concat(everything, ignore_index=True)
    allp = allp[allp["set"] == "oof"]
    store.save_csv(allp, out / "all_preds.csv")
    store.save_csv(metrics.summarise_models(allp, n_boot=50, seed=seed), out / "table7.csv")
    _finish(cfg, "baselines", params)
    return Path(out_dir)


def _finish(cfg, stage: str, params: dict) -> None:
    repro.RunLog(cfg, stage, params).write()
    stages.mark_done(cfg, stage)
