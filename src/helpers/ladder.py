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

Each rung's inputs are audited with the linear probes of :mod:`helpers.evidence.probes`, which
also builds the ladder table and names the rung the audits favour.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from helpers import explain, inputs
from helpers.run.artefacts import ART, MAIN_MODEL_DIR

#: rung -> (profile fields it switches on, one line for readers); applied cumulatively in order
RUNGS: dict[str, tuple[dict, str]] = {
    "paper": ({}, "segmented lungs, squared and resized (the paper's inputs)"),
    "crop": ({"cls_crop_lungs": True}, "+ (a) square crop around the refined lung mask"),
    "standardise": ({"cls_lung_standardise": True}, "+ (b) grey levels standardised inside the lungs"),
    "augment": ({"cls_augment": True}, "+ (c) Table 3 augmentation for the classifier"),
    "film": ({"cls_film_only": True}, "+ (d) crop kept inside the film: no padding bars"),
}


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


def train_rung(cfg, name: str, Pr, kept: inputs.Kept, out, device: str = "cpu"
               ) -> tuple[dict[str, np.ndarray], pd.DataFrame, pd.DataFrame]:
    """Train (or reuse) the proposed model of one rung; returns (the rung's inputs, its
    predictions, the share of its Grad-CAM heat inside the lungs per test image).

    The inputs are :func:`helpers.inputs.view` of ``kept`` under the rung's profile ``Pr``. The
    rung whose settings equal the profile's own model is read from notebook 04's results instead
    of being trained again.
    """
    from helpers import train

    x = inputs.view(kept, Pr)
    y, index = kept.y, kept.index
    if same_inputs_and_training(Pr, cfg.profile):
        stage, tag = ART.hrnet_preds.path(cfg).parent.parent, MAIN_MODEL_DIR
        preds = ART.hrnet_preds.read(cfg)
    else:
        stage, tag = out, f"ladder_{name}"
        preds = train.cross_validate(Pr, Pr.hrnet, tag, x["segmented"], y, index, out, cfg.seed, device,
                                     after_fold=explain.fold_hook(x["segmented"], y, device),
                                     save_weights=False)
    heat = explain.collect(stage, tag, len(index))
    share = explain.share_table(index, heat, {"lung": x["lungs"]}, name)
    return x, preds, share
