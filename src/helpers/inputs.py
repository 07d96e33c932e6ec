"""What every classifier sees: the films that passed refinement, under the profile's input steps.

Notebooks 04, 05, 05a and 05b train on the same films in the same folds. :func:`kept_arrays` reads
them once from curation and refinement (the classification rows whose refined lung mask passed
the section 3.2 area threshold, with their segmented and full images and both lung masks), and
:func:`view` applies the profile's de-confounding steps (:mod:`helpers.preprocess`) to all of
them alike. :func:`external_sets` gives the external films every fold model also scores, prepared
the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers import preprocess
from helpers.data import decode
from helpers.run import store
from helpers.run.artefacts import ART, kept


@dataclass(frozen=True)
class Kept:
    """The classification films that passed refinement, as curation and refinement saved them.

    ``index``: their rows of ``cls_index.csv`` (reindexed from 0); ``positions``: where they sit in
    the curated arrays; ``y``: int (N,) in {0, 1}; ``segmented``/``unsegmented``: uint8 (N, S, S)
    at ``cls_size``; ``refined``/``lungs``: the refined and the raw lung masks, uint8 (N, S, S) in
    {0, 1}; ``shapes``: int (N, 2) original (height, width) of each film, or None when not read.
    """

    index: pd.DataFrame
    positions: np.ndarray
    y: np.ndarray
    segmented: np.ndarray
    unsegmented: np.ndarray
    refined: np.ndarray
    lungs: np.ndarray
    shapes: np.ndarray | None


def kept_arrays(cfg, shapes: bool = False) -> Kept:
    """The films that passed refinement (:class:`Kept`); ``shapes`` also reads each original
    film's size from its header (needed by ``cls_film_only`` and the geometry audits)."""
    cls, keep = kept(cfg)
    return Kept(index=cls, positions=keep, y=cls["y"].to_numpy(),
                segmented=np.asarray(ART.segmented.read(cfg))[keep],
                unsegmented=np.asarray(ART.cls_images.read(cfg))[keep],
                refined=np.asarray(ART.masks_refined_cls.read(cfg))[keep],
                lungs=np.asarray(ART.masks_raw_cls.read(cfg))[keep],
                shapes=decode.original_shapes(cls["file"]) if shapes else None)


def view(k: Kept, profile) -> dict[str, np.ndarray]:
    """The films as a classifier of ``profile`` sees them: ``segmented`` and ``unsegmented`` inputs,
    and the ``refined`` and raw (``lungs``) masks cropped with them; all (N, cls_size, cls_size)
    uint8. With every de-confounding step off, the saved arrays unchanged."""
    if profile.cls_film_only and k.shapes is None:
        raise ValueError("cls_film_only needs the films' original shapes: kept_arrays(cfg, shapes=True)")
    s = preprocess.classifier_inputs(k.segmented, k.refined, profile, segmented=True, shapes=k.shapes,
                                     carry={"lungs": k.lungs})
    u = preprocess.classifier_inputs(k.unsegmented, k.refined, profile, segmented=False, shapes=k.shapes)
    return {"segmented": s["images"], "unsegmented": u["images"], "refined": s["masks"],
            "lungs": s["lungs"]}


# ------------------------------------------------------------------------------------------------
# the external set (EXTERNAL_DATA_DIR)
# ------------------------------------------------------------------------------------------------
def external_available(cfg) -> bool:
    """True when curation decoded an external set for this run."""
    return ART.ext_cls_index.exists(cfg)


INCLUDE = ("passed", "failed", "all")
SET_NAMES = {"passed": "external", "failed": "external_failed", "all": "external_all"}


def external_set(cfg, segmented: bool, include: str = "passed") -> dict | None:
    """External films as ``train.cross_validate(extra=...)`` wants them, under the profile's input
    steps: ``{name: {"images", "y", "index"}}``, or None without an external set.

    ``include``: "passed" (the films whose lung mask passed refinement: the main external
    analysis, named ``external``), "failed" (those that did not: unsegmented, or segmented with
    their small refined mask; ``external_failed``) or "all" (``external_all``). The index carries
    ``area`` and ``passed``, so results can be split by them. Fold models trained on
    preprocessed inputs score external films preprocessed the same way; that needs
    ``refine/ext_masks_refined_cls.npy`` (notebook 03) when a step is on.
    """
    if include not in INCLUDE:
        raise ValueError(f"include must be one of {INCLUDE}, got {include!r}")
    if not external_available(cfg):
        return None
    ri = ART.ext_refine_index.read(cfg)
    passed = store.bool_column(ri, "passed")
    keep = np.flatnonzero({"passed": passed, "failed": ~passed, "all": passed | ~passed}[include])
    idx = ART.ext_cls_index.read(cfg).iloc[keep].reset_index(drop=True)
    idx = idx.assign(area=ri["area"].to_numpy()[keep], passed=passed[keep])
    art = ART.ext_segmented if segmented else ART.ext_cls_images
    images = np.asarray(store.load_npy(art.path(cfg)))[keep]
    P = cfg.profile
    if preprocess.uses_preprocessing(P):
        f = ART.ext_masks_refined_cls.path(cfg)
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: re-run 03_mask_refinement.ipynb, which writes the "
                                    "refined masks of the external films that preprocessing needs")
        # runs curated before the external index had "file" kept an absolute "path"
        files = idx["file" if "file" in idx.columns else "path"]
        shapes = decode.original_shapes(files) if P.cls_film_only else None
        images = preprocess.classifier_inputs(images, np.asarray(store.load_npy(f))[keep], P,
                                              segmented=segmented, shapes=shapes)["images"]
    return {SET_NAMES[include]: {"images": images, "y": idx["y"].to_numpy(), "index": idx}}


def external_sets(cfg, segmented: bool) -> dict | None:
    """The external sets every fold model scores: ``external`` (films whose lung mask passed
    refinement, the main analysis) and, when some failed, ``external_all`` (every film, the failed
    ones with their small refined mask or unsegmented), a sensitivity analysis that keeps the
    external AUC from being computed on the easy part alone."""
    main = external_set(cfg, segmented)
    if main is None:
        return None
    if not store.bool_column(ART.ext_refine_index.read(cfg), "passed").all():
        main.update(external_set(cfg, segmented, include="all"))
    return main
