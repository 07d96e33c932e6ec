"""Shortcut audits: does the classifier look at the disease or at where the film came from?

In the paper the COVID-19 images come from one collection and the normal images from others, so
"COVID" and "source" are confounded: a network can score well by recognising a collection (its
scanner, processing, burned-in labels, borders, image size, patient positioning) instead of the
lungs. DeGrave, Janizek & Lee (Nature Machine Intelligence 2021, "AI for radiographic COVID-19
detection selects shortcuts over signal") showed that such classifiers do exactly this. The audits
below ask the same questions of this pipeline. They run on the same patient-grouped folds as the
main models (column ``fold`` of the classification index) and all produce predictions in the
schema of :func:`helpers.train.cross_validate` (``image_id, patient_id, fold, set='oof', y,
prob, threshold, pred, model`` plus ``source``/``view``/``label`` when the index has them), so
:func:`helpers.evidence.metrics.summarise_models`, :func:`helpers.evidence.metrics.stratified` and
:func:`audit_table` read them unchanged.

The audits and how to read them (AUC = pooled out-of-fold ROC-AUC; 0.5 is chance):

``source`` (image -> source collection; CNN on the full images, target from :func:`source_target`)
    Can the source be told from the pixels? A high AUC shows that the collections differ
    visibly, i.e. that a shortcut is *available*. It does not show that the COVID model uses it.
``lungs_blacked_out`` (COVID vs normal; CNN on :func:`blackout_lungs` images)
    Everything inside the (refined) lung mask is set to 0, so the disease is invisible. A high
    AUC means the label is predictable from what lies outside the lungs (labels, borders,
    devices, body habitus, processing): the task can be solved without the lungs.
``mask_only`` (COVID vs normal; CNN on :func:`mask_only` images)
    Only the predicted lung field's shape, position and size remain. A high AUC means
    positioning, projection (AP/PA), patient size or collection predicts the label.
``lowlevel`` (COVID vs non-COVID; logistic regression on :func:`pixel_features`)
    Cheap statistics of the pixels with no notion of anatomy: intensity histogram, border and
    corner brightness, edge density, left-right / top-bottom asymmetry, lung area. No file
    geometry enters (see ``geometry``). With the in-lung statistics included, a high AUC means
    cheap statistics separate the classes - through acquisition / processing differences *or* through the
    disease itself, which brightens the lungs. :func:`permutation_null` turns this into a test
    (p-value against patient-level permuted labels).
``lowlevel_outside`` (COVID vs non-COVID; logistic regression on :func:`outside_lung_features`)
    The same pixel statistics restricted to what no lung pixel enters: the histogram outside the
    lung mask, the border frame, the corners. A high AUC means the label is predictable from
    outside the lungs by the crudest model (the linear twin of ``lungs_blacked_out``).
``geometry`` (COVID vs non-COVID; logistic regression on :func:`geometry_features`)
    The original film's height, width, aspect and pixel count alone, read from the file header:
    no pixel. A high AUC means the films' geometry tells the class; the classifier sees it only
    where its input keeps the film's shape (zero padding to a square does).
``lowlevel_geometry`` (pixels and geometry together)
    :func:`lowlevel_features` with the original geometry: how far the two routes add up.
``not_square_from_inputs`` (original film not square; logistic regression on thumbnails of the
    classifier's own inputs)
    Whether the classifier's inputs still carry the film's original shape: a high AUC means
    they do, whatever the label.
``permuted_labels`` (the same CNN with labels permuted per patient within each fold,
    ``permuted_labels(y, patient_id, seed, strata=fold)``)
    A negative control of the whole pipeline: labels that carry no information must give an
    AUC near 0.5. A clear signal here means leakage between folds (e.g. a patient in two
    folds) or a bug, and every other number is suspect.

:func:`audit_table` puts the audits side by side with a patient-level bootstrap interval and a
verdict that is a *reading aid*, not a test: "shortcut signal" when the interval's lower bound
exceeds 0.6, "no evidence" when it contains 0.5, "weak" otherwise. An audit that finds nothing
does not prove the main model is shortcut-free (it tests one route); one that finds a signal
shows that a route exists. Stratified tables (:func:`stratified_table`) show whether the main
model's accuracy holds within one view or one source, where the source cannot explain it.

numpy / pandas / scipy / scikit-learn only (PIL for image headers); no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from helpers import decision
from helpers.data.splits import inner_split, split_groups
from helpers.evidence import linear, metrics

__all__ = [
    "AUDITS",
    "describe",
    "blackout_lungs",
    "mask_only",
    "source_target",
    "permuted_labels",
    "lowlevel_features",
    "outside_lung_features",
    "cv_logistic",
    "permutation_null",
    "audit_table",
    "stratified_table",
]

#: What each known audit key tests (the ``tests`` column of :func:`audit_table`).
@dataclass(frozen=True)
class Audit:
    """How an audit is named: ``label`` (its model in tables), ``short`` (one line in figures and
    summaries), ``long`` (what a high AUC means; the ``tests`` column of :func:`audit_table`)."""

    label: str
    short: str
    long: str


#: Every shortcut audit and linear probe, by key: the one description table of the package.
AUDITS: dict[str, Audit] = {
    "source": Audit(
        "Audit: source", "source from pixels: is a shortcut available?",
        "Predicts the image's source collection instead of the disease: a high AUC means "
        "the collections differ visibly, so a source shortcut is available to any model."),
    "lungs_blacked_out": Audit(
        "Audit: lungs blacked out", "label with lungs blacked out: solvable without lungs?",
        "COVID vs normal with the lung fields set to black: a high AUC means the "
        "label is predictable from outside the lungs (labels, borders, devices, "
        "processing), i.e. without seeing the disease."),
    "mask_only": Audit(
        "Audit: mask only", "label from lung-mask shape alone: positioning / size?",
        "COVID vs normal from the predicted lung mask alone (shape, position, size): a "
        "high AUC means positioning, projection or patient size predicts the label."),
    "lowlevel": Audit(
        "Audit: low-level pixel statistics",
        "label from low-level pixel statistics (lungs included, no file geometry)",
        "Logistic regression on cheap statistics of the pixels (whole-image, in-lung and "
        "outside-lung histograms, borders, corners, edges, asymmetry; no file geometry): a high AUC "
        "means cheap statistics separate the classes, through acquisition or processing "
        "differences or through the disease brightening the lungs; compare "
        "lowlevel_outside."),
    "geometry": Audit(
        "Audit: film geometry only", "label from the original film's height, width, aspect (no pixels)",
        "Logistic regression on the original film's height, width, aspect and pixel count, read "
        "from the file header: a high AUC means the films' geometry tells the class; a classifier "
        "can use it only where its input keeps the film's shape."),
    "lowlevel_geometry": Audit(
        "Audit: pixel statistics + film geometry",
        "label from low-level pixel statistics plus the original film geometry",
        "The low-level pixel statistics together with the original film's geometry: how far the "
        "two routes add up; read it against the pixels-only and geometry-only audits."),
    "not_square_from_inputs": Audit(
        "Audit: film shape from the classifier's inputs",
        "original film not square, read from the classifier's inputs",
        "Logistic regression on thumbnails of the classifier's own inputs predicting whether the "
        "original film was not square: a high AUC means the inputs still carry the film's shape, "
        "which in these data goes with the class."),
    "lowlevel_inside": Audit(
        "Probe: statistics inside the lungs", "label from grey-level statistics inside the lungs",
        "Logistic regression on grey-level statistics of the lung pixels only: these can carry "
        "the disease as well as exposure and processing."),
    "lowlevel_outside": Audit(
        "Audit: low-level pixel statistics outside the lungs",
        "label from pixel statistics outside the lungs only (no file geometry)",
        "Logistic regression on statistics of pixels outside the lung mask only "
        "(outside-lung histogram, border frame, corners; no file geometry): a high "
        "AUC means the label is predictable without any lung pixel."),
    "permuted_labels": Audit(
        "Audit: permuted labels", "negative control, permuted labels: must be ~0.5",
        "Negative control: patient-level permuted labels carry no information, so "
        "the AUC must be near 0.5; a signal here means leakage or a bug."),
}


def describe(key: str) -> Audit:
    """The description of audit ``key``; a generic one for an audit not in :data:`AUDITS`."""
    return AUDITS.get(str(key)) or Audit(
        f"Audit: {key}", f"audit {key}",
        f"Audit {key!r}: pooled out-of-fold ROC-AUC of its predictions, read against 0.5 "
        "(chance); a high AUC means the inputs it was given predict its target.")


def short_descriptions() -> dict[str, str]:
    """audit key -> its one-line description (figures, summaries)."""
    return {k: a.short for k, a in AUDITS.items()}


PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
VERDICT_SIGNAL_LO = 0.6  # CI lower bound above this: "shortcut signal" (a reading aid)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _as_stack(images, name: str = "images") -> np.ndarray:
    a = np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W), got shape {a.shape}")
    return a


def _as_uint8(images, name: str = "images") -> np.ndarray:
    a = _as_stack(images, name)
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be uint8 (or numbers in [0, 255]), got {a.dtype}")
    if a.size:
        bad = np.isnan(a).any() if np.issubdtype(a.dtype, np.floating) else False
        if bad or a.min() < 0 or a.max() > 255:
            raise ValueError(f"{name} must be uint8 or values in [0, 255] without NaN, got "
                             f"{a.dtype} with range [{np.nanmin(a)}, {np.nanmax(a)}]")
    return np.rint(a).astype(np.uint8)


def _as_mask(masks, shape: tuple[int, ...] | None = None) -> np.ndarray:
    m = _as_stack(masks, "masks") > 0
    if shape is not None and m.shape != tuple(shape):
        raise ValueError(f"masks {m.shape} and images {tuple(shape)} differ in shape; resize the "
                         "masks first (helpers.refine.resize_masks, nearest neighbour)")
    return m


def _model_features(features) -> np.ndarray:
    if isinstance(features, pd.DataFrame):
        X = features.to_numpy(dtype=np.float64)
    else:
        X = np.asarray(features, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {X.shape}")
    return X


def _check_inputs(X: np.ndarray, y, index: pd.DataFrame) -> np.ndarray:
    y = np.asarray(y).astype(np.int64).ravel()
    if not np.isin(y, [0, 1]).all():
        raise ValueError("y must be 0/1")
    if not (len(X) == len(y) == len(index)):
        raise ValueError(f"features ({len(X)}), y ({len(y)}) and index ({len(index)}) differ in length")
    if "fold" not in index:
        raise KeyError("index has no 'fold' column (the patient-grouped folds of curation)")
    return y


def _fit_predict(X_fit: np.ndarray, y_fit: np.ndarray, X_pred: np.ndarray, C: float,
                 seed: int) -> np.ndarray:
    """The low-level audit's model (median imputation, standardisation, logistic regression;
    :func:`helpers.evidence.linear.fit_predict`): P(y = 1) for ``X_pred``."""
    return linear.fit_predict(X_fit, y_fit, X_pred, C, seed, impute=True)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC (ties count 1/2); nan with one class (:func:`helpers.evidence.decision.auc_or_nan`)."""
    return decision.auc_or_nan(y, score)


# --------------------------------------------------------------------------------------------
# 1. inputs for the CNN audits (trained with train.cross_validate)
# --------------------------------------------------------------------------------------------
def blackout_lungs(images, masks) -> np.ndarray:
    """Images with the lung mask set to 0 ("lungs blacked out"): uint8 (N, H, W).

    ``masks``: (N, H, W), non-zero = lung (the refined masks, {0, 1} or {0, 255}), same shape
    as ``images``. Only mask pixels change; everything outside them is kept exactly.
    """
    imgs = _as_uint8(images)
    m = _as_mask(masks, imgs.shape)
    return np.where(m, np.uint8(0), imgs).astype(np.uint8)


def mask_only(masks) -> np.ndarray:
    """Binary masks as images, 0 outside and 255 inside the lung field: uint8 (N, H, W).

    The "mask only" audit trains the classifier on these: shape, position and size of the
    predicted lung field and nothing else.
    """
    return (_as_mask(masks).astype(np.uint8) * np.uint8(255)).astype(np.uint8)


def source_target(index: pd.DataFrame, classes: Sequence[str] | str | None = None
                  ) -> tuple[np.ndarray, str]:
    """Binary "image -> source" target: ``(y, description)``.

    Without ``classes``, 1 marks the source holding the most COVID images (``y == 1``, or
    ``label == "covid"`` when there is no ``y``; ties go to the alphabetically first source) and
    0 every other source, e.g. ``"ieee8023 vs rest"``. ``classes`` gives the positive sources
    explicitly. Raises ValueError when there is a single source, when ``classes`` names an
    unknown source, or when the target would have one class.
    """
    if "source" not in index:
        raise KeyError("index has no 'source' column; the source audit needs it")
    src = index["source"].astype(str).to_numpy()
    sources = sorted(set(src))
    if len(sources) < 2:
        raise ValueError(f"the source audit needs at least two sources; all {len(src)} images "
                         f"come from {sources[0] if sources else 'nothing'!r}, so source and "
                         "label cannot be told apart by this audit")
    if classes is None:
        if "y" in index:
            covid = index["y"].astype(int).to_numpy() == 1
        elif "label" in index:
            covid = index["label"].astype(str).to_numpy() == "covid"
        else:
            raise KeyError("index needs 'y' or 'label' to find the COVID-majority source; "
                           "or pass classes=[...]")
        counts = pd.Series(covid.astype(int), index=src).groupby(level=0).sum()
        if counts.max() <= 0:
            raise ValueError("no COVID images in the index; pass classes=[...] explicitly")
        pos = [sorted(counts[counts == counts.max()].index)[0]]
    else:
        pos = [classes] if isinstance(classes, str) else [str(c) for c in classes]
        unknown = sorted(set(pos) - set(sources))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; sources present: {sources}")
    y = np.isin(src, pos).astype(np.int64)
    if y.min() == y.max():
        raise ValueError(f"sources {pos} cover every image; the target would have one class")
    rest = sorted(set(sources) - set(pos))
    desc = f"{' + '.join(sorted(pos))} vs " + ("rest" if len(rest) > 1 or classes is None
                                                else rest[0])
    return y, desc


def permuted_labels(y, groups, seed: int, strata=None) -> np.ndarray:
    """Labels permuted at the patient (group) level: int64 (N,).

    Kept by hand: scikit-learn's ``permutation_test_score`` permutes images, not patients within folds.

    Each group's label (the majority of its images' labels, ties to 1) is shuffled among the
    groups, so every group keeps a single label, the number of groups per class is preserved
    and the labels no longer relate to the images. Same ``seed``, same permutation.

    ``strata`` (one value per image, constant within a group; e.g. ``index['fold']``) restricts
    the shuffle to groups of the same stratum, so each fold keeps its number of patients per
    class. Use it for cross-validated audits: the folds were stratified on the true labels, and
    a free shuffle leaves folds unbalanced, which biases pooled out-of-fold AUCs below 0.5
    (each training part then leans towards the class its test fold lacks).
    """
    y = np.asarray(y).astype(np.int64).ravel()
    g = np.asarray(groups).astype(str).ravel()
    if len(g) != len(y):
        raise ValueError(f"y ({len(y)}) and groups ({len(g)}) differ in length")
    if len(y) == 0:
        return y.copy()
    uniq, first, inv = np.unique(g, return_index=True, return_inverse=True)
    inv = inv.ravel()
    frac = np.bincount(inv, weights=y, minlength=len(uniq)) / np.bincount(inv, minlength=len(uniq))
    group_y = (frac >= 0.5).astype(np.int64)
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.permutation(group_y)[inv]
    st = np.asarray(strata).astype(str).ravel()
    if len(st) != len(y):
        raise ValueError(f"y ({len(y)}) and strata ({len(st)}) differ in length")
    group_st = st[first]
    if not np.array_equal(group_st[inv], st):
        raise ValueError("strata must be constant within each group (patient)")
    out = group_y.copy()
    for s in np.unique(group_st):
        members = np.flatnonzero(group_st == s)
        out[members] = group_y[rng.permutation(members)]
    return out[inv]


# --------------------------------------------------------------------------------------------
# 2. low-level image statistics
# --------------------------------------------------------------------------------------------
_V = np.arange(256, dtype=np.float64)


def _hist(imgs: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
    """Per-image 256-bin histograms: float64 (N, 256); ``sel`` (N, H, W) bool restricts pixels."""
    n = len(imgs)
    flat = imgs.reshape(n, -1)
    idx = flat.astype(np.int64) + (np.arange(n, dtype=np.int64) * 256)[:, None]
    if sel is not None:
        idx = idx[sel.reshape(n, -1)]
    return np.bincount(idx.ravel(), minlength=n * 256).reshape(n, 256).astype(np.float64)


def _hist_stats(H: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
    """Intensity statistics from histograms; equal to numpy on the pixels themselves.

    mean, std (ddof 0), skewness and excess kurtosis (biased moments, 0 for a constant image),
    percentiles (numpy's default linear interpolation), fractions at 0 and 255, entropy of the
    64-bin histogram (bits). An empty histogram gives nan.
    """
    n = H.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = H @ _V / n
        d = _V[None, :] - mean[:, None]
        m2 = np.sum(H * d ** 2, axis=1) / n
        m3 = np.sum(H * d ** 3, axis=1) / n
        m4 = np.sum(H * d ** 4, axis=1) / n
        flat = m2 <= 1e-12 * np.maximum(mean ** 2, 1.0)
        skew = np.where(flat, 0.0, m3 / m2 ** 1.5)
        kurt = np.where(flat, 0.0, m4 / m2 ** 2 - 3.0)
        out = {"mean": mean, "std": np.sqrt(m2), "skew": skew, "kurtosis": kurt}
        cum = np.cumsum(H, axis=1)
        for q in PERCENTILES:
            pos = q / 100.0 * (n - 1)
            lo = np.floor(pos)
            frac = pos - lo
            v_lo = np.sum(cum <= lo[:, None], axis=1).astype(np.float64)          # order stat lo
            v_hi = np.sum(cum <= np.minimum(lo + 1, n - 1)[:, None], axis=1).astype(np.float64)
            out[f"p{q:02d}"] = v_lo + frac * (v_hi - v_lo)
        out["frac_0"] = H[:, 0] / n
        out["frac_255"] = H[:, 255] / n
        p = H.reshape(len(H), 64, 4).sum(axis=2) / n[:, None]
        out["entropy"] = -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    empty = n <= 0
    for k in out:
        out[k] = np.where(empty, np.nan, out[k])
    return {f"{prefix}{k}": v for k, v in out.items()}


def _spatial_features(imgs: np.ndarray, chunk: int = 256) -> dict[str, np.ndarray]:
    """Edge density, border frame, corners and asymmetries (intensity units, 0-255)."""
    n, h, w = imgs.shape
    b = max(1, int(round(0.05 * min(h, w))))            # outer 5 % frame
    c = max(1, int(round(0.10 * min(h, w))))            # 10 % corner squares
    out = {k: np.empty(n) for k in ("grad_mean", "border_mean", "corner_tl", "corner_tr",
                                    "corner_bl", "corner_br", "asym_lr", "asym_tb")}
    for s in range(0, n, chunk):
        x = imgs[s:s + chunk].astype(np.float32)
        gy = np.diff(x, axis=1)[:, :, :-1]
        gx = np.diff(x, axis=2)[:, :-1, :]
        out["grad_mean"][s:s + chunk] = np.sqrt(gx * gx + gy * gy).mean(axis=(1, 2))
        total = x.sum(axis=(1, 2), dtype=np.float64)
        inner = x[:, b:h - b, b:w - b].sum(axis=(1, 2), dtype=np.float64)
        n_frame = h * w - max(h - 2 * b, 0) * max(w - 2 * b, 0)
        out["border_mean"][s:s + chunk] = (total - inner) / n_frame
        out["corner_tl"][s:s + chunk] = x[:, :c, :c].mean(axis=(1, 2), dtype=np.float64)
        out["corner_tr"][s:s + chunk] = x[:, :c, w - c:].mean(axis=(1, 2), dtype=np.float64)
        out["corner_bl"][s:s + chunk] = x[:, h - c:, :c].mean(axis=(1, 2), dtype=np.float64)
        out["corner_br"][s:s + chunk] = x[:, h - c:, w - c:].mean(axis=(1, 2), dtype=np.float64)
        out["asym_lr"][s:s + chunk] = (x[:, :, :w // 2].mean(axis=(1, 2), dtype=np.float64)
                                       - x[:, :, w - w // 2:].mean(axis=(1, 2), dtype=np.float64))
        out["asym_tb"][s:s + chunk] = (x[:, :h // 2].mean(axis=(1, 2), dtype=np.float64)
                                       - x[:, h - h // 2:].mean(axis=(1, 2), dtype=np.float64))
    return out


def lowlevel_features(images, masks=None, original_shapes=None) -> pd.DataFrame:
    """Cheap per-image statistics: a DataFrame with one row per image (index 0..N-1).

    images: uint8 (N, H, W). Columns (intensities in 0-255 units):

    * whole image: ``mean, std, skew, kurtosis, p01 ... p99`` (percentiles 1, 5, 25, 50, 75,
      95, 99, as numpy's default), ``frac_0, frac_255`` (fraction of pixels at 0 / 255),
      ``entropy`` (64-bin histogram, bits), ``grad_mean`` (mean gradient magnitude of forward
      differences: edge density), ``border_mean`` (outer 5 % frame), ``corner_tl, corner_tr,
      corner_bl, corner_br`` (10 % squares), ``asym_lr`` (left half mean - right half mean),
      ``asym_tb`` (top - bottom);
    * with ``masks`` (N, H, W), non-zero = lung: the same intensity statistics inside
      (``in_*``) and outside (``out_*``) the mask, and ``lung_area_frac``; an empty region gives
      nan (:func:`cv_logistic` imputes the training part's median);
    * with ``original_shapes`` (N, 2) (height, width of the original files before resizing, see
      :func:`helpers.data.decode.original_shapes`): ``orig_height, orig_width, orig_aspect`` (width / height),
      ``orig_log_pixels`` (natural log of height x width).

    Everything is computed from per-image 256-bin histograms and array reductions (no Python
    loop over images); 1,000 images of 160 x 160 take well under a second.
    """
    imgs = _as_uint8(images)
    n = len(imgs)
    cols: dict[str, np.ndarray] = {}
    cols.update(_hist_stats(_hist(imgs)))
    cols.update(_spatial_features(imgs))
    if masks is not None:
        m = _as_mask(masks, imgs.shape)
        H_in = _hist(imgs, m)
        H_all = _hist(imgs)
        cols.update(_hist_stats(H_in, "in_"))
        cols.update(_hist_stats(H_all - H_in, "out_"))
        cols["lung_area_frac"] = m.reshape(n, -1).mean(axis=1)
    if original_shapes is not None:
        s = np.asarray(original_shapes, dtype=np.float64)
        if s.shape != (n, 2):
            raise ValueError(f"original_shapes must be (N, 2) = ({n}, 2) (height, width), got {s.shape}")
        cols["orig_height"], cols["orig_width"] = s[:, 0], s[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            cols["orig_aspect"] = s[:, 1] / s[:, 0]
            cols["orig_log_pixels"] = np.log(s[:, 0] * s[:, 1])
    return pd.DataFrame(cols)


#: Columns of :func:`lowlevel_features` computed from pixels that no lung pixel enters (prefixes
#: and names); the film geometry (``orig_*``) is not a pixel and stays out.
OUTSIDE_PREFIXES = ("out_", "corner_")
OUTSIDE_COLUMNS = ("border_mean",)
#: prefix of the columns read from the original file's header, not from pixels
GEOMETRY_PREFIX = "orig_"


def pixel_features(features: pd.DataFrame) -> pd.DataFrame:
    """The columns of :func:`lowlevel_features` computed from pixels: all but the ``orig_*``
    geometry read from the file header."""
    return features[[c for c in features.columns if not str(c).startswith(GEOMETRY_PREFIX)]]


def geometry_features(features: pd.DataFrame) -> pd.DataFrame:
    """The ``orig_*`` columns of :func:`lowlevel_features` (original height, width, aspect, log
    pixel count): the film's geometry, no pixel. Raises ValueError when there are none (the
    features were computed without ``original_shapes``)."""
    cols = [c for c in features.columns if str(c).startswith(GEOMETRY_PREFIX)]
    if not cols:
        raise ValueError("features have no orig_* columns: call lowlevel_features(..., original_shapes=...)")
    return features[cols]


def not_square(original_shapes, tol: float = 0.02) -> np.ndarray:
    """1 where the original film was not square (aspect off 1 by more than ``tol``), else 0:
    int64 (N,) from (N, 2) heights and widths."""
    s = np.asarray(original_shapes, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(f"original_shapes must be (N, 2) (height, width), got {s.shape}")
    return (np.abs(s[:, 1] / s[:, 0] - 1.0) > tol).astype(np.int64)


def outside_lung_features(features: pd.DataFrame) -> pd.DataFrame:
    """The columns of :func:`lowlevel_features` computed without lung pixels.

    Keeps ``out_*`` (histogram statistics outside the mask), ``border_mean`` (outer 5 % frame) and
    ``corner_*`` (10 % squares); drops the ``orig_*`` file geometry (not pixels), the whole-image and
    ``in_*`` statistics, the edge density and asymmetries (which include the lungs) and
    ``lung_area_frac`` (the mask's own size, audited by ``mask_only``). Raises ValueError when
    ``features`` has no ``out_*`` column, i.e. was computed without masks.
    """
    if not isinstance(features, pd.DataFrame):
        raise TypeError("outside_lung_features needs the DataFrame of lowlevel_features")
    cols = [c for c in features.columns
            if str(c).startswith(OUTSIDE_PREFIXES) or c in OUTSIDE_COLUMNS]
    if not any(str(c).startswith("out_") for c in cols):
        raise ValueError("features have no out_* columns: call lowlevel_features(images, masks, ...) "
                         "with the lung masks to audit the outside of the lungs")
    return features[cols]


# --------------------------------------------------------------------------------------------
# cross-validated logistic regression and its permutation null
# --------------------------------------------------------------------------------------------
def cv_logistic(features, y, index: pd.DataFrame, seed: int = 0, model_name: str = "lowlevel",
                C: float = 1.0, val_fraction: float = 0.1) -> pd.DataFrame:
    """Out-of-fold predictions of a standardised logistic regression over ``index['fold']``.

    Per test fold k, on its training part (all other folds) only:

    1. a patient-grouped, label-stratified inner split (:func:`helpers.data.splits.inner_split`,
       ``val_fraction`` = 0.1 of the patients, seed ``seed + k``, grouped by ``group_id`` when
       present as in :mod:`helpers.train`); the model (median imputation, standardisation,
       L2 logistic regression with ``C``, lbfgs) is fitted on the inner training rows and the
       decision threshold chosen on the inner validation rows with
       :func:`helpers.evidence.decision.choose_threshold` (Youden's J);
    2. the model is refitted on the *whole* training part (the validation patients included:
       a linear model has no epochs to stop, so holding them out would only waste data) and
       predicts the test fold once, classified with the threshold of step 1.

    The test fold never enters any fit, scaling or threshold. Returns the columns of
    :func:`helpers.train.cross_validate` in its order (``image_id, patient_id`` and
    ``source, view, label`` when present in ``index``, then ``fold, set`` ('oof'), ``y, prob,
    threshold, pred, model``), every image exactly once, ordered by fold.
    """
    X = _model_features(features)
    y = _check_inputs(X, y, index)
    groups = split_groups(index).astype(str).to_numpy()
    folds = index["fold"].to_numpy()
    keep_cols = [c for c in ("image_id", "patient_id", "source", "view", "label") if c in index]
    parts = []
    with threadpool_limits(1):  # tiny fits: multithreaded BLAS only adds contention
        for k in sorted(np.unique(folds)):
            parts.append(_cv_fold(X, y, index, groups, folds, k, keep_cols, seed, C, val_fraction,
                                  model_name))
    return pd.concat(parts, ignore_index=True)


def _cv_fold(X, y, index, groups, folds, k, keep_cols, seed, C, val_fraction, model_name
             ) -> pd.DataFrame:
    """One fold of :func:`cv_logistic`: threshold from the inner split, refit, predict the test fold."""
    test = np.flatnonzero(folds == k)
    train = np.flatnonzero(folds != k)
    tr, va = inner_split(train, groups, y, val_fraction, seed + int(k))
    thr = decision.choose_threshold(y[va], _fit_predict(X[tr], y[tr], X[va], C, seed))
    pt = _fit_predict(X[train], y[train], X[test], C, seed)
    t = index.iloc[test][keep_cols].copy().reset_index(drop=True)
    t["fold"], t["set"], t["y"], t["prob"] = k, "oof", y[test], pt
    t["threshold"] = thr
    t["pred"] = (pt >= thr).astype(int)
    t["model"] = model_name
    return t


def permutation_null(features, y, index: pd.DataFrame, n_perm: int = 200, seed: int = 0,
                     C: float = 1.0) -> dict:
    """Is the low-level audit's AUC more than chance? A patient-level permutation test.

    Kept by hand: the null must permute whole patients within each fold (:func:`permuted_labels`),
    which no library's permutation test does.

    ``observed_auc`` is the pooled out-of-fold ROC-AUC of the procedure of :func:`cv_logistic`
    (its refit on the whole training part of each fold; equal to the AUC of its predictions).
    The null repeats that procedure ``n_perm`` times with labels permuted among the patients of
    each fold (:func:`permuted_labels` with ``strata = fold``, seeds ``seed + 1 ... seed +
    n_perm``) on the same folds, so every permutation keeps the observed number of patients per
    class in every fold. (A free shuffle would unbalance the folds and pull the null AUCs below
    0.5, making noise look significant.) No threshold is needed for an AUC, so none is chosen;
    imputation and scaling do not depend on the labels and are fitted once per fold.

    Returns ``dict(observed_auc, null_aucs`` (float64 (n_perm,)), ``p_value`` =
    (1 + #{null >= observed}) / (1 + n_perm), ``null_mean, null_q95, n_perm)``.
    About 1.5 ms per fit: 200 permutations x 10 folds of 1,000 images x 40 features take ~3 s.
    """
    X = _model_features(features)
    y = _check_inputs(X, y, index)
    groups = split_groups(index).astype(str).to_numpy()
    folds = index["fold"].to_numpy()
    prepared = []
    for k in sorted(np.unique(folds)):
        test, train = np.flatnonzero(folds == k), np.flatnonzero(folds != k)
        pre = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler())]).fit(X[train])
        prepared.append((train, test, pre.transform(X[train]), pre.transform(X[test])))

    def pooled_auc(labels: np.ndarray) -> float:
        score = np.empty(len(labels))
        for train, test, Xtr, Xte in prepared:  # imputed and scaled once per fold above
            score[test] = linear.fit_predict(Xtr, labels[train], Xte, C, seed, scale=False)
        return _auc(labels, score)

    with threadpool_limits(1):  # tiny fits: multithreaded BLAS only adds contention
        observed = pooled_auc(y)
        null = np.array([pooled_auc(permuted_labels(y, groups, seed + 1 + i, strata=folds))
                         for i in range(n_perm)], dtype=np.float64)
    ok = null[~np.isnan(null)]
    p = (1 + int(np.sum(ok >= observed))) / (1 + len(ok)) if not np.isnan(observed) else float("nan")
    return dict(observed_auc=observed, null_aucs=null, p_value=float(p),
                null_mean=float(ok.mean()) if len(ok) else float("nan"),
                null_q95=float(np.quantile(ok, 0.95)) if len(ok) else float("nan"),
                n_perm=int(n_perm))


# --------------------------------------------------------------------------------------------
# 3. reading the audits
# --------------------------------------------------------------------------------------------
def _oof(preds: pd.DataFrame) -> pd.DataFrame:
    return preds[preds["set"] == "oof"] if "set" in preds.columns else preds


def _verdict(lo: float, hi: float) -> str:
    if np.isnan(lo) or np.isnan(hi):
        return "undefined"
    if lo > VERDICT_SIGNAL_LO:
        return "shortcut signal"
    if lo <= 0.5 <= hi:
        return "no evidence"
    return "weak"


def audit_table(preds_by_audit: Mapping[str, pd.DataFrame], n_boot: int = 2000,
                seed: int = 0) -> pd.DataFrame:
    """One row per audit: what it tests, its pooled out-of-fold AUC with a patient-level CI.

    ``preds_by_audit``: audit key -> predictions (schema of :func:`cv_logistic` /
    ``train.cross_validate``; only ``set == 'oof'`` rows are used). Known keys (``source``,
    ``lungs_blacked_out``, ``mask_only``, ``lowlevel``, ``permuted_labels``) get their fixed
    sentence from :data:`AUDITS`, others a generic one.

    Columns: ``audit, tests, model, n, n_pos, n_neg, n_patients, auc, auc_lo, auc_hi`` (the
    percentile bootstrap of :func:`helpers.evidence.metrics.auc_ci`, resampling patients), ``verdict,
    note``. The verdict is a reading aid, not a test: ``"shortcut signal"`` when
    ``auc_lo > 0.6``, ``"no evidence"`` when the interval contains 0.5, ``"weak"`` otherwise
    (e.g. an interval from 0.55 to 0.7, or one wholly below 0.5, which is noted), ``"undefined"``
    when the AUC cannot be computed. For ``permuted_labels`` anything but "no evidence" points
    to leakage or a bug rather than a shortcut.
    """
    rows = []
    for key, preds in preds_by_audit.items():
        d = _oof(preds)
        y = d["y"].to_numpy()
        groups = d["patient_id"].to_numpy() if "patient_id" in d.columns else None
        a = metrics.auc_ci(y, d["prob"].to_numpy(dtype=np.float64), n_boot=n_boot, seed=seed,
                           groups=groups)
        verdict = _verdict(a["lo"], a["hi"])
        notes = [a["reason"]] if a["reason"] else []
        if verdict == "weak" and a["hi"] < 0.5:
            notes.append("AUC below chance: the folds' models rank inversely; no usable signal")
        models = sorted(map(str, d["model"].unique())) if "model" in d.columns else []
        rows.append(dict(audit=key, tests=describe(key).long,
                         model=", ".join(models), n=len(d), n_pos=a["n_pos"], n_neg=a["n_neg"],
                         n_patients=a["n_clusters"], auc=a["auc"], auc_lo=a["lo"],
                         auc_hi=a["hi"], verdict=verdict, note="; ".join(notes)))
    cols = ["audit", "tests", "model", "n", "n_pos", "n_neg", "n_patients", "auc", "auc_lo",
            "auc_hi", "verdict", "note"]
    return pd.DataFrame(rows, columns=cols)


def stratified_table(preds_all: pd.DataFrame, by: Sequence[str] | str = ("view", "source")
                     ) -> pd.DataFrame:
    """:func:`helpers.evidence.metrics.stratified` for each column in ``by``, stacked.

    Only ``set == 'oof'`` rows are used. Each block's stratum column is renamed ``stratum``
    and a ``stratum_type`` column (the ``by`` name) is put in front of it, so the blocks share
    columns. A ``by`` column missing from the predictions raises KeyError.
    """
    by = [by] if isinstance(by, str) else list(by)
    d = _oof(preds_all)
    blocks = []
    for b in by:
        s = metrics.stratified(d, by=b).rename(columns={b: "stratum"})
        s.insert(list(s.columns).index("stratum"), "stratum_type", b)
        blocks.append(s)
    return pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame()
