"""Near-duplicate guard across sources (paper section 3.1 / Table 2: one dataset from several sources).

The public COVID collections copy each other (a Figure 1 image re-appears in ieee8023, the same
film is filed under two patient ids, a figure is cropped from two papers), so a radiograph can
enter the dataset twice - possibly with two patient ids (breaking patient-grouped splits) or two
labels. This module finds such pairs:

1. every image is decoded once to a small grayscale thumbnail (JPEG draft mode / PIL reduce, so
   large files are not decoded at full size where avoidable);
2. perceptual hashes (``imagehash`` pHash, and dHash for reporting) are packed into ``uint64``
   and compared with a vectorised Hamming-distance matrix (row blocks, ``numpy.bitwise_count``),
   which handles thousands of images in well under a second;
3. candidate pairs (pHash distance <= ``max_hamming``) are confirmed by the Pearson correlation
   of 32x32 thumbnails (>= ``min_corr``) and of the *detail* of 64x64 thumbnails (thumbnail minus
   its Gaussian blur, radius 1; >= ``min_detail_corr``).

Why the second confirmation: chest radiographs share their low-frequency layout, so different
films of similar build reach pHash distance <= 6 and 32x32 correlation >= 0.95 (on the shared
data: 4 such pairs, all visibly different films). A re-encoded, resized or brightened copy keeps
its rib/vessel detail (detail correlation >= 0.97 in tests) while different films stay below
~0.75 (identical anonymisation boxes in JSRT give the highest values). Pass
``min_detail_corr=None`` for the pHash + 32x32 rule alone.

:func:`find_duplicates` returns the pairs with provenance flags (same patient, cross source,
conflicting label) and :func:`duplicate_groups` the connected components for reporting.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageFilter, UnidentifiedImageError
from scipy import sparse
from scipy.sparse.csgraph import connected_components

PAIR_COLUMNS = ["path_a", "path_b", "source_a", "source_b", "patient_a", "patient_b", "label_a",
                "label_b", "hamming", "dhash_hamming", "corr", "detail_corr", "same_patient",
                "cross_source", "conflicting_label"]
THUMB = 32  # side of the correlation thumbnail
DETAIL = 64  # side of the detail thumbnail
_WORK = 128  # side of the working thumbnail the hashes are computed from


@dataclass
class Fingerprints:
    """Per-image fingerprints: ``phash``/``dhash`` (N,) uint64, ``thumbs`` (N, 1024) and
    ``details`` (N, 4096) z-scored float32, ``ok`` (N,) bool; ``errors`` maps index -> reason
    for the images that failed. About 20 kB per image."""

    phash: np.ndarray
    dhash: np.ndarray
    thumbs: np.ndarray
    details: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]


def _small_gray(path: Path) -> Image.Image:
    """Decode ``path`` to a grayscale image whose longer side is about ``_WORK``..2x``_WORK``."""
    from helpers.data import decode

    if decode.is_dicom(path):
        g = Image.fromarray(decode.read_image(path), mode="L")
        factor = min(g.size) // (_WORK * 2)
        return g.reduce(factor) if factor >= 2 else g
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft("L", (_WORK * 2, _WORK * 2))
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            a = np.asarray(im, dtype=np.float64)
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
            g = Image.fromarray(a.round().astype(np.uint8), mode="L")
        else:
            g = im.convert("L")
    factor = min(g.size) // (_WORK * 2)
    if factor >= 2:
        g = g.reduce(factor)
    return g


def _bits_to_u64(h: imagehash.ImageHash) -> np.uint64:
    packed = np.packbits(np.asarray(h.hash, dtype=bool).ravel())
    return np.frombuffer(packed.tobytes(), dtype=">u8")[0].astype(np.uint64)


def _z(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32).ravel()
    sd = float(a.std())
    return ((a - a.mean()) / sd if sd > 1e-6 else np.zeros_like(a)).astype(np.float32)


def fingerprint(path: str | Path) -> tuple[np.uint64, np.uint64, np.ndarray, np.ndarray]:
    """(pHash, dHash, z-scored 32x32 thumbnail (1024,), z-scored 64x64 detail (4096,)) of one image."""
    g = _small_gray(Path(path))
    ph = _bits_to_u64(imagehash.phash(g, hash_size=8))
    dh = _bits_to_u64(imagehash.dhash(g, hash_size=8))
    t = np.asarray(g.resize((THUMB, THUMB), Image.BILINEAR), dtype=np.float32)
    d = g.resize((DETAIL, DETAIL), Image.BILINEAR)
    detail = np.asarray(d, np.float32) - np.asarray(d.filter(ImageFilter.GaussianBlur(1)), np.float32)
    return ph, dh, _z(t), _z(detail)


def fingerprints(paths: list[str | Path], workers: int | None = None) -> Fingerprints:
    """Fingerprint every path (threads; PIL releases the GIL while decoding)."""
    n = len(paths)
    ph = np.zeros(n, dtype=np.uint64)
    dh = np.zeros(n, dtype=np.uint64)
    th = np.zeros((n, THUMB * THUMB), dtype=np.float32)
    de = np.zeros((n, DETAIL * DETAIL), dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}

    def one(i: int) -> None:
        try:
            a, b, t, dt = fingerprint(paths[i])
        except FileNotFoundError:
            errors[i] = "missing file"
            return
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            errors[i] = f"unreadable image ({type(exc).__name__})"
            return
        ph[i], dh[i], th[i], de[i], ok[i] = a, b, t, dt, True

    if n < 32:
        for i in range(n):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=workers or min(16, (os.cpu_count() or 2) * 2)) as ex:
            list(ex.map(one, range(n), chunksize=16))
    return Fingerprints(ph, dh, th, de, ok, errors)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances (uint8, shape (len(a), len(b))) between uint64 hashes.

    Kept: ``scipy.spatial.distance.cdist(..., "hamming")`` works on bit arrays 64x the size."""
    x = np.bitwise_xor(a[:, None].astype(np.uint64), b[None, :].astype(np.uint64))
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.uint8)
    by = x.view(np.uint8).reshape(*x.shape, 8)  # numpy < 2.0
    return np.unpackbits(by, axis=-1).sum(axis=-1).astype(np.uint8)


def candidate_pairs(hashes: np.ndarray, max_hamming: int, valid: np.ndarray | None = None,
                    block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) for i < j with Hamming distance <= ``max_hamming``; row blocks keep the
    memory at ``block`` x N bytes."""
    n = len(hashes)
    valid = np.ones(n, dtype=bool) if valid is None else valid
    rows, cols, dists = [], [], []
    for s in range(0, n, block):
        e = min(n, s + block)
        d = hamming_matrix(hashes[s:e], hashes)
        ii, jj = np.nonzero(d <= max_hamming)
        gi = ii + s
        keep = (jj > gi) & valid[gi] & valid[jj]
        rows.append(gi[keep])
        cols.append(jj[keep])
        dists.append(d[ii[keep], jj[keep]])

    def cat(xs):
        return np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)
    return cat(rows), cat(cols), cat(dists)


def _col(df: pd.DataFrame, name: str) -> np.ndarray:
    if name in df.columns:
        return df[name].fillna("").astype(str).to_numpy()
    return np.full(len(df), "", dtype=object)


def find_duplicates(df: pd.DataFrame, root: str | Path | None = None, max_hamming: int = 6,
                    min_corr: float | None = 0.95, min_detail_corr: float | None = 0.85,
                    workers: int | None = None, fp: Fingerprints | None = None) -> pd.DataFrame:
    """Near-duplicate image pairs among the rows of a manifest-like frame.

    ``df`` needs ``path`` (relative to ``root`` when given, else absolute / relative to the
    working directory) and may have ``source``, ``patient_id``, ``label``. A pair is reported when
    its pHash Hamming distance is <= ``max_hamming``, the correlation of the 32x32 thumbnails is
    >= ``min_corr`` and that of the 64x64 detail images >= ``min_detail_corr`` (either check is
    skipped when None; both values are always reported). Returns one row per pair
    (:data:`PAIR_COLUMNS`) sorted by correlation; ``attrs["errors"]`` lists unreadable images
    (path -> reason), ``attrs["n_images"]`` the number fingerprinted. ``fp`` reuses precomputed
    :func:`fingerprints` of the same rows.
    """
    df = df.reset_index(drop=True)
    base = Path(root) if root is not None else None
    paths = [str(base / p) if base is not None else str(p) for p in _col(df, "path")]
    fp = fp or fingerprints(paths, workers=workers)
    i, j, d = candidate_pairs(fp.phash, max_hamming, fp.ok)
    corr = np.einsum("ij,ij->i", fp.thumbs[i], fp.thumbs[j]) / float(THUMB * THUMB)
    dcorr = np.einsum("ij,ij->i", fp.details[i], fp.details[j]) / float(DETAIL * DETAIL)
    keep = np.ones(len(i), dtype=bool)
    if min_corr is not None:
        keep &= corr >= min_corr
    if min_detail_corr is not None:
        keep &= dcorr >= min_detail_corr
    i, j, d, corr, dcorr = i[keep], j[keep], d[keep], corr[keep], dcorr[keep]
    dd = hamming_matrix(fp.dhash[i], fp.dhash[j]).diagonal() if len(i) else np.zeros(0, np.uint8)
    rel = _col(df, "path")
    src, pat, lab = _col(df, "source"), _col(df, "patient_id"), _col(df, "label")
    out = pd.DataFrame({
        "path_a": rel[i], "path_b": rel[j], "source_a": src[i], "source_b": src[j],
        "patient_a": pat[i], "patient_b": pat[j], "label_a": lab[i], "label_b": lab[j],
        "hamming": d.astype(int), "dhash_hamming": dd.astype(int), "corr": np.round(corr, 4),
        "detail_corr": np.round(dcorr, 4),
    })
    out["same_patient"] = (out["patient_a"] == out["patient_b"]) & (out["patient_a"] != "")
    out["cross_source"] = out["source_a"] != out["source_b"]
    out["conflicting_label"] = ((out["label_a"] != out["label_b"]) & (out["label_a"] != "")
                                & (out["label_b"] != ""))
    out = out.sort_values(["detail_corr", "corr", "hamming"], ascending=[False, False, True],
                          kind="stable").reset_index(drop=True)
    out = out[PAIR_COLUMNS]
    out.attrs["errors"] = {paths[k]: v for k, v in fp.errors.items()}
    out.attrs["n_images"] = int(fp.ok.sum())
    return out


def component_roots(nodes, a, b) -> dict:
    """Each of ``nodes`` -> the smallest node of its connected component under the edges ``(a[i], b[i])``.

    ``scipy.sparse.csgraph.connected_components`` on the undirected adjacency matrix; the smallest
    member (Python ordering) names the component, so names do not depend on the order of the edges.
    Every endpoint in ``a`` and ``b`` must be one of ``nodes``.
    """
    names = sorted(set(nodes))
    if not names:
        return {}
    pos = {x: i for i, x in enumerate(names)}
    ia = np.fromiter((pos[x] for x in a), dtype=np.int64)
    ib = np.fromiter((pos[x] for x in b), dtype=np.int64)
    n = len(names)
    adj = sparse.coo_matrix((np.ones(len(ia), dtype=np.int8), (ia, ib)), shape=(n, n))
    _, label = connected_components(adj, directed=False)
    first = np.full(int(label.max()) + 1, n, dtype=np.int64)
    np.minimum.at(first, label, np.arange(n))   # names are sorted: the lowest index is the smallest
    return {x: names[first[label[i]]] for i, x in enumerate(names)}


def duplicate_groups(pairs: pd.DataFrame) -> pd.DataFrame:
    """Connected components of the duplicate pairs: one row per image in a group.

    Columns: ``group`` (0.., numbered in the order of each group's smallest path), ``size``,
    ``path``, ``source``, ``patient_id``, ``label``, ``n_patients``, ``n_sources``, ``n_labels``
    (per group), sorted by group then path.
    """
    cols = ["group", "size", "path", "source", "patient_id", "label", "n_patients", "n_sources", "n_labels"]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    info: dict[str, tuple[str, str, str]] = {}
    for r in pairs.itertuples(index=False):
        info[r.path_a] = (r.source_a, r.patient_a, r.label_a)
        info[r.path_b] = (r.source_b, r.patient_b, r.label_b)
    root = component_roots(info, pairs["path_a"], pairs["path_b"])
    rows = [(root[p], p, *info[p]) for p in info]
    g = pd.DataFrame(rows, columns=["root", "path", "source", "patient_id", "label"])
    order = {r: k for k, r in enumerate(sorted(g["root"].unique()))}
    g["group"] = g["root"].map(order)
    agg = g.groupby("group").agg(size=("path", "size"), n_patients=("patient_id", "nunique"),
                                 n_sources=("source", "nunique"),
                                 n_labels=("label", lambda s: s[s != ""].nunique()))
    g = g.join(agg, on="group").sort_values(["group", "path"], kind="stable").reset_index(drop=True)
    return g[cols]
