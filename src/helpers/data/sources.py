"""Public chest X-ray sources and their adapters to the manifest schema (paper section 3.1, Table 2; 3.2).

The paper assembles its classification set from the ieee8023 COVID-19 image data collection
(every COVID-19 image, lateral and marked images removed), NIH ChestX-ray14 and CheXpert
("No Finding", adults, random selection, no medical equipment; Table 2), and its lung
segmentation set from Montgomery and Shenzhen (section 3.2). This module knows each of those
sources in its original layout (plus the COVIDx companions Figure 1 / Actualmed, JSRT/SCR and a
ready manifest folder such as the shared ``cxr/`` folder) and turns it into a manifest
(:mod:`helpers.data.manifest`) while accounting for every row it leaves out.

Registry
    :data:`SOURCES` maps a source name to a :class:`SourceSpec` (homepage, licence summary,
    pinned revision where one exists, expected layout, how to get it). :func:`get_source` also
    accepts aliases (``nih``, ``jsrt``, ...). :func:`verify_layout` checks a folder against the
    expected layout and raises :class:`SourceLayoutError` naming the missing file or folder, the
    layout and where to get the source. :func:`detect_source` guesses the source of a folder.

Adapters
    ``adapt_<source>(root, derived_dir=None, check_images=True, ...) -> AdapterResult`` for
    ``ieee8023``, ``figure1``, ``actualmed``, ``nih``, ``chexpert``, ``montgomery``,
    ``shenzhen``, ``jsrt`` and ``manifest``; :func:`load_source` dispatches by name and
    :func:`curate` merges several sources.

    Path convention: ``AdapterResult.manifest`` holds **absolute** paths in ``path`` and
    ``mask_path``; ``AdapterResult.root`` is the source folder (``None`` for a merged result) and
    ``source_path`` keeps the path inside the source as published. Use
    :meth:`AdapterResult.relative_manifest` to write a manifest folder with relative paths.

    ``AdapterResult.flow`` lists the selection: ``source rows`` -> each filter -> ``kept`` with
    ``n_in, n_kept, n_removed`` and a reason summary; ``AdapterResult.excluded`` has one line per
    row left out (source, row id, source path, step, reason); ``AdapterResult.notes`` one line per
    row kept with a remark (age not stated, RGB image converted, mask resized, ...). Nothing is
    dropped silently.

Image policy (:func:`check_image`, then :mod:`helpers.data.checks`)
    mode ``L`` is used as is; RGB / RGBA / LA / palette images whose content is gray
    (channels equal up to JPEG noise) are kept and noted - :func:`helpers.data.decode.read_image` converts
    them losslessly on load; colour content, bilevel and unreadable files are excluded; 16-bit
    images are excluded (``"not 8-bit grayscale: mode I;16"``) unless ``allow_16bit=True``, which
    keeps them with a note (rescaled min..max on load). DICOM files (``.dcm``) are read by
    :func:`helpers.data.decode.read_image` (LUTs applied, mapped to 8 bits, noted); unsupported objects
    are excluded with what was found. Every kept image is then decoded once and must be a
    plausible frontal radiograph (:func:`helpers.data.checks.check_radiograph`: minimum size, not
    near-constant, a DICOM's ViewPosition frontal); rows with a lung mask pass
    :func:`helpers.data.checks.mask_reason` (values, geometry, coverage). Exclusions carry the reason.

Offline counts
    The NIH ChestX-ray14 (``Data_Entry_2017_v2020.csv.gz``) and CheXpert (``chexpert_train.csv.gz``)
    metadata ship inside the ``torchxrayvision`` package: :func:`nih_metadata`,
    :func:`chexpert_metadata` read them and :func:`count_selection` / :func:`select_metadata` run
    the Table 2 selection on metadata alone (no image needed). For ieee8023 and Figure 1 they use
    the original ``metadata.csv`` files of the shared data (``helpers.paths.shared_metadata_dir``).
"""
from __future__ import annotations

import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from helpers import paths
from helpers.data import checks, decode
from helpers.data.manifest import COLUMNS, read_manifest, validate
from helpers.paths import shared_metadata_dir

FLOW_COLUMNS = ["source", "step", "n_in", "n_kept", "n_removed", "reason"]
EXCLUDED_COLUMNS = ["source", "row_id", "source_path", "step", "reason"]
NOTE_COLUMNS = ["source", "row_id", "source_path", "step", "note"]
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".dcm", ".dicom")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "LA", "La", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
GRAY_TOLERANCE = 12  # 99th percentile of max-min channel difference still called "gray"


class SourceLayoutError(FileNotFoundError):
    """A source folder that does not have the expected layout; the message says where to get it."""


# --------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class LayoutItem:
    """One required entry of a source layout.

    ``alternatives`` are globs relative to the source root (a trailing ``/`` means a folder); the
    item is present when any of them matches. ``images`` marks image/mask folders, which a
    metadata-only selection (``check_images=False``) does not need.
    """

    alternatives: tuple[str, ...]
    what: str
    images: bool = False

    def find(self, root: Path) -> Path | None:
        for alt in self.alternatives:
            want_dir = alt.endswith("/")
            pattern = alt.rstrip("/")
            hits = sorted(root.glob(pattern)) if any(c in pattern for c in "*?[") else [root / pattern]
            for h in hits:
                if (h.is_dir() if want_dir else h.is_file()):
                    return h
        return None

    def describe(self) -> str:
        return " | ".join(self.alternatives) + f"  ({self.what})"


@dataclass(frozen=True)
class SourceSpec:
    """A public source: where it comes from, under which terms and in which layout."""

    name: str
    title: str
    role: str  # "classify", "segment" or "any"
    homepage: str
    licence: str
    revision: str  # pinned commit / release where one exists, else ""
    revision_note: str
    layout: tuple[LayoutItem, ...]
    instructions: str
    citation: str = ""
    repo: str = ""
    aliases: tuple[str, ...] = ()

    def layout_text(self) -> str:
        return "\n".join("  " + item.describe() for item in self.layout)

    def where_to_get(self) -> str:
        rev = f" (revision {self.revision})" if self.revision else ""
        return f"Get it from {self.homepage}{rev}: {self.instructions}"


SOURCES: dict[str, SourceSpec] = {}


def _register(spec: SourceSpec) -> None:
    SOURCES[spec.name] = spec


_register(SourceSpec(
    name="ieee8023",
    title="COVID-19 image data collection (ieee8023/covid-chestxray-dataset)",
    role="classify",
    homepage="https://github.com/ieee8023/covid-chestxray-dataset",
    repo="ieee8023/covid-chestxray-dataset",
    licence=("per-image licence in metadata.csv 'license' (Apache 2.0, CC BY, CC BY-NC-SA 4.0, "
             "CC BY-NC-ND, ...; empty = unknown); metadata and documents CC BY-NC-SA 4.0"),
    revision="173779df5bb2ab06fa1dc7f84ee9a212c759464b",
    revision_note=("commit of the fork s-mostafa-a/covid-chestxray-dataset that holds upstream up to "
                   "0f7245d (2020-06-05) - the snapshot of the shared data; the paper used the "
                   "repository as of 2020-07-03 without naming a commit"),
    layout=(LayoutItem(("metadata.csv",), "one row per image: patientid, finding, view, modality, "
                       "age, folder, filename, license"),
            LayoutItem(("images/",), "the image files named in metadata.csv", images=True)),
    instructions=("git clone https://github.com/ieee8023/covid-chestxray-dataset (optionally "
                  "git checkout the pinned revision, or use the fork s-mostafa-a/"
                  "covid-chestxray-dataset at that commit) and pass the clone as root."),
    citation="Cohen, Morrison, Dao. COVID-19 image data collection. arXiv:2003.11597 (2020)",
    aliases=("covid-chestxray-dataset", "ieee", "cohen"),
))
_register(SourceSpec(
    name="figure1",
    title="Figure 1 COVID-19 Chest X-ray Dataset Initiative (COVIDx)",
    role="classify",
    homepage="https://github.com/agchung/Figure1-COVID-chestxray-dataset",
    repo="agchung/Figure1-COVID-chestxray-dataset",
    licence="no licence file; the README says the images are for research purposes only",
    revision="95bb569e55f4110d3b734c0f355340e04e16989a",
    revision_note="the snapshot of the shared data",
    layout=(LayoutItem(("metadata.csv",), "patientid, finding, view, modality, age, sex"),
            LayoutItem(("images/",), "images named <patientid>.<ext>", images=True)),
    instructions=("git clone https://github.com/agchung/Figure1-COVID-chestxray-dataset and pass "
                  "the clone as root."),
    citation="Wang, Lin, Wong. COVID-Net. Sci Rep 10, 19549 (2020)",
    aliases=("fig1", "figure-1"),
))
_register(SourceSpec(
    name="actualmed",
    title="Actualmed COVID-19 Chest X-ray Dataset Initiative (COVIDx)",
    role="classify",
    homepage="https://github.com/agchung/Actualmed-COVID-chestxray-dataset",
    repo="agchung/Actualmed-COVID-chestxray-dataset",
    licence="no licence file; the README says the images are for research purposes only",
    revision="",
    revision_note=("not pinned; written against the metadata.csv of commit "
                   "2635e4b05d2b59628edb10a6e16a506951c84c59 (column 'imagename')"),
    layout=(LayoutItem(("metadata.csv",), "patientid, finding, view, modality, imagename"),
            LayoutItem(("images/",), "images named in the 'imagename' column", images=True)),
    instructions=("git clone https://github.com/agchung/Actualmed-COVID-chestxray-dataset and pass "
                  "the clone as root."),
    citation="Wang, Lin, Wong. COVID-Net. Sci Rep 10, 19549 (2020)",
))
_register(SourceSpec(
    name="nih-cxr8",
    title="NIH ChestX-ray8 / ChestX-ray14",
    role="classify",
    homepage="https://nihcc.app.box.com/v/ChestXray-NIHCC",
    licence=("no restriction on use; link to the NIH download site, cite Wang et al. CVPR 2017 "
             "and acknowledge the NIH Clinical Center"),
    revision="Data_Entry_2017_v2020.csv",
    revision_note="2020 revision of the metadata; the images are those of the 2017 release",
    layout=(LayoutItem(("Data_Entry_2017_v2020.csv", "Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz"),
                       "Image Index, Finding Labels, Patient ID, Patient Age, Patient Gender, View Position"),
            LayoutItem(("images/", "images_*/images/", "images_*/"),
                       "the PNG files, in images/ or spread over images_001/images/ ... images_012/images/",
                       images=True)),
    instructions=("download images_001.tar.gz ... images_012.tar.gz and Data_Entry_2017_v2020.csv "
                  "from the NIH Box folder (or the Kaggle 'nih-chest-xrays/data' copy) into one "
                  "folder, extract the archives there and pass that folder as root."),
    citation="Wang et al. ChestX-ray8. CVPR 2017",
    aliases=("nih", "chestx-ray14", "chestxray14", "chestx-ray8", "nih-cxr14"),
))
_register(SourceSpec(
    name="chexpert",
    title="CheXpert (Stanford ML Group)",
    role="classify",
    homepage="https://stanfordmlgroup.github.io/competitions/chexpert/",
    licence="Stanford CheXpert Dataset Research Use Agreement (registration; non-commercial research)",
    revision="CheXpert-v1.0-small",
    revision_note="the downsampled v1.0 release; the full-size v1.0 has the same CSV layout",
    layout=(LayoutItem(("train.csv", "CheXpert-v1.0*/train.csv"),
                       "Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, ..., Support Devices"),
            LayoutItem(("train/", "CheXpert-v1.0*/train/"), "train/patientNNNNN/studyN/viewN_*.jpg",
                       images=True)),
    instructions=("register on the homepage, download CheXpert-v1.0-small.zip, unzip it and pass "
                  "the CheXpert-v1.0-small folder (or its parent) as root."),
    citation="Irvin et al. CheXpert. AAAI 2019",
))
_register(SourceSpec(
    name="montgomery",
    title="Montgomery County chest X-ray set (NLM)",
    role="segment",
    homepage="https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets",
    licence="public for research; cite Jaeger et al. QIMS 2014 and Candemir et al. IEEE TMI 2014",
    revision="MontgomerySet (NLM release)",
    revision_note="the NLM zip; no versioning",
    layout=(LayoutItem(("CXR_png/",), "MCUCXR_NNNN_D.png radiographs", images=True),
            LayoutItem(("ManualMask/leftMask/",), "left-lung masks, same file names", images=True),
            LayoutItem(("ManualMask/rightMask/",), "right-lung masks, same file names", images=True)),
    instructions=("download MontgomerySet.zip from the NLM page, unzip it and pass the "
                  "MontgomerySet folder (holding CXR_png/, ManualMask/, ClinicalReadings/) as root."),
    citation="Jaeger et al. Two public chest X-ray datasets... QIMS 4(6) 2014",
    aliases=("mcu", "mcucxr"),
))
_register(SourceSpec(
    name="shenzhen",
    title="Shenzhen chest X-ray set (NLM) with lung masks",
    role="segment",
    homepage="https://www.kaggle.com/datasets/nikhilpandey360/chest-xray-masks-and-labels",
    licence=("images public for research (cite Jaeger et al. QIMS 2014); lung masks of Stirenko "
             "et al. arXiv:1803.01199, reportedly CC BY-NC-SA 4.0"),
    revision="",
    revision_note="Kaggle 'Chest X-ray masks and labels' layout; no versioning",
    layout=(LayoutItem(("CXR_png/",), "CHNCXR_NNNN_D.png radiographs", images=True),
            LayoutItem(("mask/", "masks/"), "lung masks named <image stem>_mask.png (or <image stem>.png)",
                       images=True)),
    instructions=("download the Kaggle set 'Chest X-ray masks and labels' (Shenzhen images with "
                  "Stirenko et al.'s masks; the images alone are on "
                  "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html) and pass the folder "
                  "holding CXR_png/ and masks/ ('Lung Segmentation') as root."),
    citation="Jaeger et al. QIMS 2014; Stirenko et al. arXiv:1803.01199",
    aliases=("chn", "chncxr", "shenzen"),
))
_register(SourceSpec(
    name="jsrt-scr",
    title="JSRT radiographs with SCR lung masks",
    role="segment",
    homepage="http://db.jsrt.or.jp/eng.php",
    licence=("JSRT database and SCR masks: research/education under their owners' registration "
             "terms; cite Shiraishi et al. AJR 2000 and van Ginneken et al. MedIA 2006"),
    revision="",
    revision_note=("documented layout below; the GitHub copy AnishHota/JSRT-Segmentation@"
                   "047d3193a744c4cd62b5dd1b217a6e9e63db8446 (JSRT/jsrt_images/images, "
                   "JSRT/masks/masks/{left,right}_lung_png) is accepted as is"),
    layout=(LayoutItem(("images/", "jsrt_images/images/", "JSRT/jsrt_images/images/"),
                       "JSRT radiographs as PNG: <id>.png or <id>.IMG.png (JPCLN001, JPCNN001, ...)",
                       images=True),
            LayoutItem(("masks/left_lung/", "masks/left lung/", "masks/left_lung_png/",
                        "masks/masks/left_lung_png/", "JSRT/masks/masks/left_lung_png/"),
                       "SCR left-lung masks <id>.png|.gif", images=True),
            LayoutItem(("masks/right_lung/", "masks/right lung/", "masks/right_lung_png/",
                        "masks/masks/right_lung_png/", "JSRT/masks/masks/right_lung_png/"),
                       "SCR right-lung masks <id>.png|.gif", images=True)),
    instructions=("register at the JSRT site and convert the 2048x2048 12-bit .IMG files to PNG "
                  "(images/<id>.png); get the SCR masks (van Ginneken et al.; "
                  "https://www.isi.uu.nl/Research/Databases/SCR/) and put the left/right lung "
                  "masks in masks/left_lung/ and masks/right_lung/ (GIF or PNG; the 1024x1024 "
                  "masks are resized to the image size with nearest neighbour)."),
    citation="Shiraishi et al. AJR 174 (2000); van Ginneken et al. MedIA 10 (2006)",
    aliases=("jsrt", "scr"),
))
_register(SourceSpec(
    name="manifest",
    title="A ready manifest folder (manifest.csv + the files it lists)",
    role="any",
    homepage="docs/data.md (e.g. the shared folder ../shared/data/cxr)",
    licence="as stated per row in the manifest's 'license' column",
    revision="",
    revision_note="per row: source_repo / source_commit",
    layout=(LayoutItem(("manifest.csv",), "columns of helpers.data.manifest.COLUMNS, paths relative "
                       "to the folder"),),
    instructions=("point at a folder holding manifest.csv and the files it lists (the shared "
                  "real-data folder, or one written by helpers.data.manifest.write_manifest)."),
    aliases=("cxr", "shared"),
))


def get_source(name: str) -> SourceSpec:
    """The registry entry for ``name`` (or one of its aliases, case-insensitive)."""
    key = str(name).strip().lower()
    if key in SOURCES:
        return SOURCES[key]
    for spec in SOURCES.values():
        if key in spec.aliases:
            return spec
    raise KeyError(f"unknown source {name!r}; known: {sorted(SOURCES)} "
                   f"(aliases: {sorted(a for s in SOURCES.values() for a in s.aliases)})")


def registry_table() -> pd.DataFrame:
    """The registry as a table (one row per source) for reports and the README."""
    return pd.DataFrame([{
        "name": s.name, "title": s.title, "role": s.role, "homepage": s.homepage,
        "licence": s.licence, "revision": s.revision, "revision_note": s.revision_note,
        "layout": "; ".join(" | ".join(i.alternatives) for i in s.layout),
        "instructions": s.instructions, "citation": s.citation,
    } for s in SOURCES.values()])


def verify_layout(source: str, root: str | Path, need_images: bool = True,
                  need_metadata: bool = True) -> dict[str, Path]:
    """Check ``root`` against the expected layout of ``source``.

    Returns ``{first alternative: matched path}``. Raises :class:`SourceLayoutError` naming the
    missing file/folder, the expected layout and where to get the source. ``need_images=False``
    skips image/mask folders (metadata-only selection); ``need_metadata=False`` skips the others.
    """
    spec = get_source(source)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SourceLayoutError(
            f"{spec.name}: source folder {root} does not exist. Expected layout under it:\n"
            f"{spec.layout_text()}\n{spec.where_to_get()}")
    found: dict[str, Path] = {}
    for item in spec.layout:
        if (item.images and not need_images) or (not item.images and not need_metadata):
            continue
        hit = item.find(root)
        if hit is None:
            raise SourceLayoutError(
                f"{spec.name} ({spec.title}): missing {' or '.join(item.alternatives)} under "
                f"{root}. Expected layout:\n{spec.layout_text()}\n{spec.where_to_get()}")
        found[item.alternatives[0]] = hit
    return found


def _csv_header(path: Path) -> list[str]:
    try:
        return [c.strip().lower() for c in _read_csv(path, nrows=0).columns]
    except Exception:
        return []


def detect_source(root: str | Path) -> str:
    """Guess which source a folder holds from the files present; raises ValueError if none fits."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if (root / "manifest.csv").is_file():
        return "manifest"
    if any(root.glob("Data_Entry_2017*.csv*")):
        return "nih-cxr8"
    for csv in [root / "train.csv", *sorted(root.glob("CheXpert-v1.0*/train.csv"))]:
        if csv.is_file() and "frontal/lateral" in _csv_header(csv):
            return "chexpert"
    if (root / "CXR_png").is_dir() and (root / "ManualMask").is_dir():
        return "montgomery"
    if (root / "CXR_png").is_dir() and ((root / "mask").is_dir() or (root / "masks").is_dir()):
        return "shenzhen"
    if (root / "metadata.csv").is_file():
        cols = _csv_header(root / "metadata.csv")
        if "imagename" in cols:
            return "actualmed"
        if "filename" in cols and "modality" in cols:
            return "ieee8023"
        if "patientid" in cols and "finding" in cols:
            return "figure1"
    try:
        verify_layout("jsrt-scr", root)
        return "jsrt-scr"
    except SourceLayoutError:
        pass
    present = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:20]
    layouts = "\n".join(f"{s.name}:\n{s.layout_text()}" for s in SOURCES.values())
    raise ValueError(f"{root}: cannot tell which source this is (found {present}). Known layouts:\n{layouts}")


# --------------------------------------------------------------------------------------------
# results and bookkeeping


@dataclass
class AdapterResult:
    """What an adapter returns.

    ``manifest``: manifest schema, absolute ``path``/``mask_path``; ``flow``: the selection,
    step by step; ``excluded``: every row left out with its reason; ``notes``: remarks on kept
    rows; ``root``: the source folder (None when several sources were merged).
    """

    source: str
    root: Path | None
    manifest: pd.DataFrame
    flow: pd.DataFrame
    excluded: pd.DataFrame
    notes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=NOTE_COLUMNS))

    def __len__(self) -> int:
        return len(self.manifest)

    def counts(self) -> pd.DataFrame:
        """Images and patients per (split_role, label, source)."""
        g = self.manifest.groupby(["split_role", "label", "source"], dropna=False)
        return g.agg(images=("path", "size"), patients=("patient_id", "nunique")).reset_index()

    def exclusion_counts(self) -> pd.DataFrame:
        """Excluded rows per (source, step, reason)."""
        if self.excluded.empty:
            return pd.DataFrame(columns=["source", "step", "reason", "n"])
        return (self.excluded.groupby(["source", "step", "reason"]).size()
                .rename("n").reset_index().sort_values("n", ascending=False, kind="stable"))

    def relative_manifest(self, base: str | Path) -> pd.DataFrame:
        """The manifest with ``path``/``mask_path`` relative to ``base`` (for write_manifest)."""
        base = Path(base).resolve()
        df = self.manifest.copy()
        for c in ("path", "mask_path"):
            df[c] = df[c].map(lambda p: os.path.relpath(p, base) if p else "")
        return df


def _summarise(reasons: Iterable[str], top: int = 6) -> str:
    vc = pd.Series(list(reasons), dtype=object).value_counts()
    parts = [f"{r} ({n})" for r, n in vc.head(top).items()]
    if len(vc) > top:
        parts.append(f"{len(vc) - top} more reason(s), {int(vc.iloc[top:].sum())} rows")
    return "; ".join(parts)


class _Selection:
    """Applies filters to candidate rows and records the flow, exclusions and notes."""

    def __init__(self, source: str, df: pd.DataFrame, what: str = "rows in the source"):
        self.source = source
        self.df = df.reset_index(drop=True)
        self._where = "_where" if "_where" in self.df.columns else "source_path"
        n = len(self.df)
        self.flow: list[dict] = [dict(source=source, step="source rows", n_in=n, n_kept=n,
                                      n_removed=0, reason=what)]
        self.excluded: list[pd.DataFrame] = []
        self.notes: list[pd.DataFrame] = []

    def keep(self, step: str, keep: Any, reason: str | pd.Series, criterion: str) -> None:
        keep = np.asarray(keep, dtype=bool)
        gone = self.df.loc[~keep]
        n_in = len(self.df)
        if isinstance(reason, pd.Series):
            reasons = reason.loc[~keep].astype(str).to_numpy()
        else:
            reasons = np.full(len(gone), reason, dtype=object)
        if len(gone):
            self.excluded.append(pd.DataFrame({
                "source": self.source, "row_id": gone["_row_id"].to_numpy(),
                "source_path": gone[self._where].to_numpy(), "step": step, "reason": reasons}))
        text = criterion + (f" - removed: {_summarise(reasons)}" if len(gone) else "")
        self.df = self.df.loc[keep].reset_index(drop=True)
        self.flow.append(dict(source=self.source, step=step, n_in=n_in, n_kept=len(self.df),
                              n_removed=len(gone), reason=text))

    def note(self, step: str, mask: Any, note: str | pd.Series) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        rows = self.df.loc[mask]
        notes = note.loc[mask].astype(str).to_numpy() if isinstance(note, pd.Series) else note
        self.notes.append(pd.DataFrame({
            "source": self.source, "row_id": rows["_row_id"].to_numpy(),
            "source_path": rows[self._where].to_numpy(), "step": step, "note": notes}))

    def skip(self, step: str, why: str) -> None:
        n = len(self.df)
        self.flow.append(dict(source=self.source, step=step, n_in=n, n_kept=n, n_removed=0, reason=why))

    def result(self, root: Path | None) -> AdapterResult:
        n = len(self.df)
        self.flow.append(dict(source=self.source, step="kept", n_in=n, n_kept=n, n_removed=0,
                              reason="rows in the manifest"))
        manifest = validate(self.df[COLUMNS], where=f"{self.source} adapter", check_files=False)
        excluded = (pd.concat(self.excluded, ignore_index=True) if self.excluded
                    else pd.DataFrame(columns=EXCLUDED_COLUMNS))
        notes = (pd.concat(self.notes, ignore_index=True) if self.notes
                 else pd.DataFrame(columns=NOTE_COLUMNS))
        return AdapterResult(self.source, root, manifest, pd.DataFrame(self.flow, columns=FLOW_COLUMNS),
                             excluded[EXCLUDED_COLUMNS], notes[NOTE_COLUMNS])


def _candidates(n: int, **cols: Any) -> pd.DataFrame:
    """A candidate frame: manifest columns (missing ones empty) plus private ``_`` columns."""
    df = pd.DataFrame({k: (v if not np.isscalar(v) else [v] * n) for k, v in cols.items()},
                      index=range(n))
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = ""
    for c in df.columns:
        if not c.startswith("_") and df[c].dtype != object:
            df[c] = df[c].astype(str)
    return df


# --------------------------------------------------------------------------------------------
# small parsers


def _read_csv(path: str | Path, **kw: Any) -> pd.DataFrame:
    """Read a CSV as strings; metadata files of these sources are UTF-8 or Windows-1252."""
    last: Exception | None = None
    for enc in ("utf-8", "cp1252", "latin-1"):
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=enc, **kw)
        except UnicodeDecodeError as exc:
            last = exc
    raise ValueError(f"{path}: cannot decode ({last})")


@functools.lru_cache(maxsize=4)
def _read_csv_cached(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    return _read_csv(path)


def _read_metadata(path: str | Path) -> pd.DataFrame:
    """Read a metadata CSV (cached by path, mtime and size: the shipped NIH/CheXpert files are
    large and read by several calls); returns a copy the caller may change."""
    st = Path(path).stat()
    return _read_csv_cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size).copy()


def _as_frame(metadata: str | Path | pd.DataFrame) -> pd.DataFrame:
    if isinstance(metadata, pd.DataFrame):
        return metadata.reset_index(drop=True).astype(str).replace({"nan": "", "None": ""})
    return _read_metadata(metadata)


def parse_age(values: pd.Series) -> pd.Series:
    """Years as float (NaN when not stated): '65', '058Y', '50+', 'early 40s' -> 65, 58, 50, 40."""
    s = values.fillna("").astype(str)
    return pd.to_numeric(s.str.extract(r"(\d+(?:\.\d+)?)", expand=False), errors="coerce")


def _view_class(view: str) -> str:
    """'frontal', 'lateral', 'other' or '' (not stated); see :func:`helpers.data.checks.view_class`."""
    return checks.view_class(view)


def _norm_sex(values: pd.Series) -> pd.Series:
    s = values.fillna("").astype(str).str.strip().str.upper()
    return s.map({"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"}).fillna("").astype(str)


def _file_index(folder: Path, recursive: bool = False) -> dict[str, Path]:
    """Lower-cased file name -> path for the image files in ``folder``."""
    out: dict[str, Path] = {}
    if not folder.is_dir():
        return out
    it = folder.rglob("*") if recursive else folder.iterdir()
    for p in it:
        if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file():
            out.setdefault(p.name.lower(), p)
    return out


def _pmap(fn: Callable[[Any], Any], items: list[Any], workers: int | None = None) -> list[Any]:
    if len(items) < 32:
        return [fn(x) for x in items]
    workers = workers or min(16, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, items, chunksize=16))


# --------------------------------------------------------------------------------------------
# image checks


@dataclass(frozen=True)
class ImageInfo:
    """Result of :func:`inspect_image`: ``reason`` (exclude) or ``note`` (keep, remark)."""

    path: str
    mode: str = ""
    size: tuple[int, int] = (0, 0)
    reason: str | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _gray_content(im: Image.Image, tol: int = GRAY_TOLERANCE) -> bool:
    if im.format == "JPEG":
        im.draft("RGB", (256, 256))  # decode at 1/2..1/8 scale
    rgb = im.convert("RGB")
    rgb.thumbnail((256, 256))
    a = np.asarray(rgb, dtype=np.int16)
    chroma = a.max(axis=2) - a.min(axis=2)
    return float(np.percentile(chroma, 99)) <= tol


def inspect_image(path: str | Path, allow_16bit: bool = False, deep: bool = False) -> ImageInfo:
    """Open the header of ``path`` and decide whether it can be used as an 8-bit grayscale CXR.

    Mode ``L``: header plus PNG CRC check (``deep`` decodes fully). Colour modes: a reduced
    decode tells gray content (kept, noted) from colour (excluded). 16-bit: excluded unless
    ``allow_16bit``. Missing / unreadable files are excluded with the reason. DICOM files: the
    header only (pixels, LUTs and unsupported objects are judged by :func:`helpers.data.decode.read_image`
    in the image step).
    """
    p = Path(path)
    if not p.is_file():
        return ImageInfo(str(p), reason="missing file")
    if decode.is_dicom(p):
        try:
            h, w = decode.image_size(p)
        except decode.ImageError as exc:
            return ImageInfo(str(p), "DICOM", reason=checks.short_reason(exc, p))
        return ImageInfo(str(p), "DICOM", (w, h))
    try:
        with Image.open(p) as im:
            mode, size, fmt = im.mode, im.size, im.format
            if mode == "L":
                if deep:
                    im.load()
                elif fmt == "PNG":
                    im.verify()
                return ImageInfo(str(p), mode, size)
            if mode in SIXTEEN_BIT_MODES:
                if deep:
                    im.load()
                if allow_16bit:
                    return ImageInfo(str(p), mode, size, note=(
                        f"mode {mode} (more than 8 bits): kept, rescaled min..max to 8-bit on load"))
                return ImageInfo(str(p), mode, size, reason=f"not 8-bit grayscale: mode {mode}")
            if mode in COLOUR_MODES:
                if _gray_content(im):
                    alpha = " (alpha dropped)" if "A" in mode else ""
                    return ImageInfo(str(p), mode, size, note=(
                        f"mode {mode} with gray content{alpha}: kept, converted to 8-bit "
                        "grayscale (PIL 'L', lossless) on load"))
                return ImageInfo(str(p), mode, size,
                                 reason=f"not 8-bit grayscale: mode {mode} (colour content)")
            if mode == "1":
                return ImageInfo(str(p), mode, size, reason="not 8-bit grayscale: mode 1 (bilevel)")
            return ImageInfo(str(p), mode, size, reason=f"not 8-bit grayscale: mode {mode}")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        msg = str(exc).replace(str(p), "").strip(" :'") or type(exc).__name__
        return ImageInfo(str(p), reason=f"unreadable image ({type(exc).__name__}: {msg[:120]})")


def check_image(path: str | Path, allow_16bit: bool = False, deep: bool = False) -> str | None:
    """The reason ``path`` cannot be used as an 8-bit grayscale radiograph, or None if it can."""
    return inspect_image(path, allow_16bit=allow_16bit, deep=deep).reason


def _check_file(path: str, view: str, allow_16bit: bool, deep: bool) -> tuple[str, str, str]:
    """(reason, note, view read from a DICOM) for one image: header policy, then pixel checks."""
    info = inspect_image(path, allow_16bit=allow_16bit, deep=deep)
    if info.reason:
        return info.reason, "", ""
    c = checks.check_radiograph(path, view)
    notes = [n for n in (info.note, c.note) if n]
    return c.reason or "", "; ".join(notes), (c.view if not view else "")


def _image_step(sel: _Selection, check_images: bool, allow_16bit: bool, deep: bool,
                step: str = "image check") -> None:
    if not check_images:
        sel.skip(step, "skipped (check_images=False): image files not opened")
        return
    views = sel.df["view"].astype(str).tolist()
    out = _pmap(lambda pv: _check_file(pv[0], pv[1], allow_16bit, deep),
                list(zip(sel.df["path"].tolist(), views)))
    reasons = pd.Series([o[0] for o in out], index=sel.df.index, dtype=object)
    notes = pd.Series([o[1] for o in out], index=sel.df.index, dtype=object)
    dicom_view = pd.Series([o[2] for o in out], index=sel.df.index, dtype=object)
    sel.df.loc[dicom_view != "", "view"] = dicom_view[dicom_view != ""]  # stated only in the DICOM
    sel.note(step, (notes != "") & (reasons == ""), notes)
    crit = "image file present, readable, 8-bit grayscale (gray-content colour modes kept"
    crit += ", 16-bit kept)" if allow_16bit else ", 16-bit excluded; DICOM mapped to 8-bit)"
    crit += (f"; a radiograph: shorter side >= {checks.MIN_SIDE} px, 1st-99th percentile range "
             f">= {checks.MIN_RANGE} grey levels, frontal where a DICOM states its view")
    n_conv = int(((notes != "") & (reasons == "")).sum())
    if n_conv:
        crit += f"; {n_conv} kept with a conversion note"
    sel.keep(step, (reasons == "").to_numpy(), reasons, crit)


def _check_mask_file(path: str, mask_path: str) -> tuple[str, str]:
    """(reason, note) for the lung mask of one kept image (see :mod:`helpers.data.checks`)."""
    if not mask_path:
        return "", ""
    try:
        shape = decode.image_size(path)
    except decode.ImageError as exc:
        return checks.short_reason(exc, path), ""
    info: dict = {}
    try:
        m = decode.read_mask(mask_path, image_shape=shape, info=info)
    except decode.ImageError as exc:
        return checks.short_reason(exc, mask_path, prefix="mask: "), ""
    reason, note = checks.mask_reason(m)
    notes = info.get("notes", []) + ([note] if note else [])
    return reason or "", "; ".join(notes)


def _mask_step(sel: _Selection, check_images: bool, step: str = "lung mask check") -> None:
    has = sel.df["mask_path"].astype(str) != ""
    if not check_images or not has.any():
        sel.skip(step, "skipped (check_images=False): masks not opened" if not check_images
                 else "no row has a lung mask")
        return
    out = _pmap(lambda pm: _check_mask_file(*pm), list(zip(sel.df["path"], sel.df["mask_path"])))
    reasons = pd.Series([o[0] for o in out], index=sel.df.index, dtype=object)
    notes = pd.Series([o[1] for o in out], index=sel.df.index, dtype=object)
    sel.note(step, (notes != "") & (reasons == ""), notes)
    lo, hi = checks.LUNG_FRACTION_RANGE
    sel.keep(step, (reasons == "").to_numpy(), reasons,
             "lung mask readable, binary ({0,255}, {0,1} or {False,True}; normalised), the size of its "
             "image (same aspect: resized), covering "
             f"{100 * checks.MASK_MIN_FRACTION:g}-{100 * checks.MASK_MAX_FRACTION:g} % of it "
             f"(outside {lo:g}-{hi:g}: kept with a note)")


def _one_row_per_file(sel: _Selection) -> None:
    dup = sel.df["path"].duplicated(keep="first")
    sel.keep("one row per file", ~dup.to_numpy(), "duplicate row for a file listed earlier",
             "each image file listed once")


# --------------------------------------------------------------------------------------------
# common filters for the COVID collections


def _frontal_step(sel: _Selection, keep_unknown: bool = True) -> None:
    cls = sel.df["view"].map(_view_class)
    keep = (cls == "frontal") | ((cls == "") & keep_unknown)
    sel.note("frontal view", (cls == "") & keep_unknown, "view not stated (kept)")
    reason = "not frontal: view " + sel.df["view"].where(sel.df["view"] != "", "not stated")
    sel.keep("frontal view", keep.to_numpy(), reason,
             "frontal X-ray (PA, AP, AP Supine, AP erect, ...)"
             + ("; view not stated kept" if keep_unknown else ""))


def _adult_step(sel: _Selection, min_age: float | None, strict: bool = False,
                keep_unknown: bool = True) -> None:
    if min_age is None:
        sel.skip("adult", "no age threshold")
        return
    age = parse_age(sel.df["age"])
    ok = (age > min_age) if strict else (age >= min_age)
    keep = ok | (age.isna() & keep_unknown)
    sel.note("adult", age.isna() & keep_unknown, "age not stated (kept)")
    reason = ("child: age " + sel.df["age"]).where(age.notna(), "age not stated")
    sel.keep("adult", keep.to_numpy(), reason,
             f"age {'>' if strict else '>='} {min_age:g}" + (" where stated" if keep_unknown else ""))


def _xray_step(sel: _Selection, has_modality: bool) -> None:
    if not has_modality:
        sel.skip("modality X-ray", "no modality column: all rows taken as X-ray")
        return
    m = sel.df["_modality"].astype(str)
    key = m.str.lower().str.replace(r"[\s\-_]", "", regex=True)
    keep = key.isin(["xray", "cxr", "radiograph", "cr", "dx"])
    sel.keep("modality X-ray", keep.to_numpy(), "modality " + m.where(m != "", "not stated"),
             "modality X-ray (CT and others out)")


def _label_step(sel: _Selection, covid_contains: bool = True) -> None:
    f = sel.df["_finding"].astype(str).str.strip()
    low = f.str.lower()
    if covid_contains:
        is_covid = low.str.contains(r"covid[\s\-]?19", regex=True)
    else:
        is_covid = low.isin(["covid-19", "covid19"])
    is_normal = low.isin(["no finding", "no findings", "normal"])
    label = np.where(is_covid, "covid", np.where(is_normal, "normal", ""))
    sel.df["label"] = label
    reason = ("other finding: " + f).where(f != "", "finding not stated")
    sel.keep("finding", (label != ""), reason,
             "finding COVID-19 -> covid, No Finding -> normal")


# --------------------------------------------------------------------------------------------
# classification sources


def _prepare(name: str, root: str | Path, check_images: bool, metadata: Any) -> Path:
    root = Path(root).expanduser().resolve()
    verify_layout(name, root, need_images=check_images, need_metadata=metadata is None)
    return root


def adapt_ieee8023(root: str | Path, derived_dir: str | Path | None = None, check_images: bool = True,
                   *, metadata: str | Path | pd.DataFrame | None = None, min_age: float | None = 18,
                   keep_unknown_view: bool = True, allow_16bit: bool = False,
                   deep: bool = False) -> AdapterResult:
    """ieee8023/covid-chestxray-dataset -> classify rows (paper 3.1: "all COVID images").

    Filters, in order: modality X-ray; finding containing "COVID-19" (incl. "COVID-19, ARDS" and
    hierarchical "Pneumonia/Viral/COVID-19") -> covid, "No Finding" -> normal; frontal view (PA,
    AP, AP Supine, AP erect; lateral L and CT views out; not stated kept and noted); age >= 18
    where stated (unknown kept and noted); file named; one row per file; image check.
    ``patient_id`` = ``ieee-<patientid>``. ``derived_dir`` is unused.
    """
    root = _prepare("ieee8023", root, check_images, metadata)
    meta = _as_frame(metadata if metadata is not None else root / "metadata.csv")
    n = len(meta)
    def col(c):
        return meta[c].astype(str).str.strip() if c in meta.columns else pd.Series([""] * n)
    folder = col("folder").where(col("folder") != "", "images")
    filename = col("filename")
    rel = (folder + "/" + filename).where(filename != "", "")
    df = _candidates(
        n, path=[str(root / r) if r else "" for r in rel], split_role="classify", source="ieee8023",
        source_repo=get_source("ieee8023").repo, source_path=rel, source_commit=paths.head_commit(root),
        patient_id="ieee-" + col("patientid"), view=col("view"), sex=col("sex"), age=col("age"),
        license=col("license"), _row_id=[f"metadata.csv:{i + 2}" for i in range(n)],
        _modality=col("modality"), _finding=col("finding"))
    sel = _Selection("ieee8023", df, "rows of metadata.csv")
    _xray_step(sel, "modality" in meta.columns)
    _label_step(sel)
    _frontal_step(sel, keep_unknown_view)
    _adult_step(sel, min_age)
    sel.keep("file named", (sel.df["source_path"] != "").to_numpy(), "no file name in metadata.csv",
             "metadata names an image file")
    _one_row_per_file(sel)
    _image_step(sel, check_images, allow_16bit, deep)
    return sel.result(root)


def _adapt_covidx(name: str, prefix: str, root: str | Path, check_images: bool, metadata: Any,
                  min_age: float | None, keep_unknown_view: bool, allow_16bit: bool,
                  deep: bool) -> AdapterResult:
    root = _prepare(name, root, check_images, metadata)
    meta = _as_frame(metadata if metadata is not None else root / "metadata.csv")
    n = len(meta)
    def col(c):
        return meta[c].astype(str).str.strip() if c in meta.columns else pd.Series([""] * n)
    pid = col("patientid")
    index = _file_index(root / "images")
    by_stem: dict[str, str] = {}
    for low, p in index.items():
        by_stem.setdefault(Path(low).stem, p.name)
    imagename = col("imagename")
    rel: list[str] = []
    unresolved: list[bool] = []
    for i in range(n):
        if imagename.iloc[i]:
            rel.append("images/" + imagename.iloc[i])
            unresolved.append(False)
        elif pid.iloc[i] and pid.iloc[i].lower() in by_stem:
            rel.append("images/" + by_stem[pid.iloc[i].lower()])
            unresolved.append(False)
        else:
            rel.append("images/" + pid.iloc[i] if pid.iloc[i] else "")
            unresolved.append(bool(pid.iloc[i]))
    patient = pid.str.replace(r"^(COVID-\d+)[a-z]$", r"\1", regex=True)
    df = _candidates(
        n, path=[str(root / r) if r else "" for r in rel], split_role="classify", source=name,
        source_repo=get_source(name).repo, source_path=rel, source_commit=paths.head_commit(root),
        patient_id=prefix + patient, view=col("view"), sex=_norm_sex(col("sex")), age=col("age"),
        license=col("license"), _row_id=[f"metadata.csv:{i + 2}" for i in range(n)],
        _unresolved=unresolved, _pid=pid, _modality=col("modality"), _finding=col("finding"))
    sel = _Selection(name, df, "rows of metadata.csv")
    _xray_step(sel, "modality" in meta.columns)
    _label_step(sel, covid_contains=False)
    _frontal_step(sel, keep_unknown_view)
    _adult_step(sel, min_age)
    sel.keep("file named", (sel.df["source_path"] != "").to_numpy(), "no patientid / imagename",
             "image file named by imagename or <patientid>.<ext>")
    unres = sel.df["_unresolved"].astype(bool)
    if not check_images:
        sel.note("file named", unres, "file extension not resolved (images/ not listed)")
    else:
        sel.keep("image file found", (~unres).to_numpy(),
                 "missing file: no images/" + sel.df["_pid"] + ".<ext>",
                 "an image named <patientid>.<ext> exists")
    _one_row_per_file(sel)
    _image_step(sel, check_images, allow_16bit, deep)
    return sel.result(root)


def adapt_figure1(root: str | Path, derived_dir: str | Path | None = None, check_images: bool = True,
                  *, metadata: str | Path | pd.DataFrame | None = None, min_age: float | None = 18,
                  keep_unknown_view: bool = True, allow_16bit: bool = False,
                  deep: bool = False) -> AdapterResult:
    """agchung/Figure1-COVID-chestxray-dataset -> classify rows.

    finding "COVID-19" -> covid, "No finding" -> normal (empty and other findings out); image =
    ``images/<patientid>.<any image extension>``; frontal view where stated; age >= 18 where
    stated ("50+", "early 40s" parse to 50, 40). ``patient_id`` = ``fig1-<patientid>`` with the
    per-image letter suffix dropped (COVID-00003a/b -> fig1-COVID-00003).
    """
    return _adapt_covidx("figure1", "fig1-", root, check_images, metadata, min_age,
                         keep_unknown_view, allow_16bit, deep)


def adapt_actualmed(root: str | Path, derived_dir: str | Path | None = None, check_images: bool = True,
                    *, metadata: str | Path | pd.DataFrame | None = None, min_age: float | None = 18,
                    keep_unknown_view: bool = True, allow_16bit: bool = False,
                    deep: bool = False) -> AdapterResult:
    """agchung/Actualmed-COVID-chestxray-dataset -> classify rows (as Figure 1; file from ``imagename``).

    ``patient_id`` = ``actualmed-<patientid>``; "Inconclusive" rows (empty finding) are excluded.
    """
    return _adapt_covidx("actualmed", "actualmed-", root, check_images, metadata, min_age,
                         keep_unknown_view, allow_16bit, deep)


def _random_step(sel: _Selection, n_sample: int | None, seed: int) -> None:
    if n_sample is None or n_sample >= len(sel.df):
        sel.skip("random selection", "no random selection" if n_sample is None
                 else f"fewer than {n_sample} rows: all kept")
        return
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(sel.df), dtype=bool)
    keep[rng.choice(len(sel.df), size=n_sample, replace=False)] = True
    sel.keep("random selection", keep, f"not drawn (random {n_sample}, seed {seed})",
             f"random selection of {n_sample} (seed {seed})")


def _torchxrayvision_data() -> Path | None:
    try:
        import importlib.util
        spec = importlib.util.find_spec("torchxrayvision")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    return d if d.is_dir() else None


def shipped_metadata(source: str) -> Path | None:
    """The metadata file shipped in the torchxrayvision package for ``nih-cxr8`` / ``chexpert``."""
    d = _torchxrayvision_data()
    name = {"nih-cxr8": "Data_Entry_2017_v2020.csv.gz", "chexpert": "chexpert_train.csv.gz"}.get(
        get_source(source).name)
    if d is None or name is None or not (d / name).is_file():
        return None
    return d / name


def nih_metadata(path: str | Path | None = None) -> pd.DataFrame:
    """NIH ChestX-ray14 ``Data_Entry_2017*.csv`` (default: the copy shipped in torchxrayvision)."""
    p = Path(path) if path is not None else shipped_metadata("nih-cxr8")
    if p is None or not p.is_file():
        raise FileNotFoundError(
            "NIH metadata not found: pass the path of Data_Entry_2017_v2020.csv or install "
            "torchxrayvision (it ships torchxrayvision/data/Data_Entry_2017_v2020.csv.gz)")
    return _read_metadata(p)


def chexpert_metadata(path: str | Path | None = None) -> pd.DataFrame:
    """CheXpert ``train.csv`` (default: ``chexpert_train.csv.gz`` shipped in torchxrayvision)."""
    p = Path(path) if path is not None else shipped_metadata("chexpert")
    if p is None or not p.is_file():
        raise FileNotFoundError(
            "CheXpert metadata not found: pass the path of train.csv or install torchxrayvision "
            "(it ships torchxrayvision/data/chexpert_train.csv.gz)")
    return _read_metadata(p)


def _nih_image_index(root: Path) -> dict[str, Path]:
    idx: dict[str, Path] = {}
    dirs = [root / "images", *sorted(root.glob("images_*/images")), *sorted(root.glob("images_*"))]
    for d in dirs:
        if d.is_dir():
            with os.scandir(d) as it:
                for e in it:
                    if e.name.lower().endswith(".png"):
                        idx.setdefault(e.name, Path(e.path))
    return idx


def adapt_nih(root: str | Path, derived_dir: str | Path | None = None, check_images: bool = True,
              *, metadata: str | Path | pd.DataFrame | None = None, min_age: float | None = 18,
              n_sample: int | None = None, seed: int = 0, allow_16bit: bool = False,
              deep: bool = False) -> AdapterResult:
    """NIH ChestX-ray14 -> normal classify rows (Table 2: "No findings, age threshold, random selection").

    Filters: Finding Labels == "No Finding"; Patient Age >= 18; View Position PA/AP; optional
    random selection of ``n_sample`` (seed); image check. Images are looked up in ``images/``,
    ``images_NNN/images/`` or ``images_NNN/``. ``patient_id`` = ``nih-<8-digit Patient ID>``.
    "Without any medical equipment" (Table 2) is not in the metadata and is not applied.
    """
    root = Path(root).expanduser().resolve()
    if metadata is None:
        verify_layout("nih-cxr8", root, need_images=check_images)
        found = sorted(root.glob("Data_Entry_2017*.csv*"))
        metadata = next((f for f in found if "v2020" in f.name), found[0])
    elif check_images:
        verify_layout("nih-cxr8", root, need_metadata=False)
    meta = _as_frame(metadata)
    meta_name = Path(metadata).name if not isinstance(metadata, pd.DataFrame) else "metadata"
    n = len(meta)
    idx = _nih_image_index(root) if root.is_dir() else {}
    names = meta["Image Index"].astype(str).str.strip()
    prefix = str(root) + os.sep
    paths = [str(idx[nm]) if nm in idx else prefix + "images" + os.sep + nm for nm in names]
    rel = [p[len(prefix):].replace(os.sep, "/") for p in paths]
    pid = meta["Patient ID"].astype(str).str.strip().str.extract(r"(\d+)", expand=False).fillna("")
    df = _candidates(
        n, path=paths, split_role="classify", label="normal", source="nih-cxr8",
        source_repo="", source_path=rel, source_commit="",
        patient_id="nih-" + pid.str.zfill(8), view=meta["View Position"].astype(str).str.strip(),
        sex=_norm_sex(meta["Patient Gender"]), age=meta["Patient Age"].astype(str).str.strip(),
        _row_id=[f"{meta_name}:{i + 2}" for i in range(n)],
        _finding=meta["Finding Labels"].astype(str).str.strip())
    sel = _Selection("nih-cxr8", df, f"rows of {meta_name}")
    nf = sel.df["_finding"] == "No Finding"
    sel.keep("No Finding", nf.to_numpy(), "finding: " + sel.df["_finding"],
             "Finding Labels == 'No Finding' -> normal")
    _adult_step(sel, min_age, keep_unknown=False)
    _frontal_step(sel, keep_unknown=False)
    _random_step(sel, n_sample, seed)
    _one_row_per_file(sel)
    _image_step(sel, check_images, allow_16bit, deep)
    return sel.result(root)


def adapt_chexpert(root: str | Path, derived_dir: str | Path | None = None, check_images: bool = True,
                   *, metadata: str | Path | pd.DataFrame | None = None, min_age: float | None = 18,
                   include_valid: bool = True, n_sample: int | None = None, seed: int = 0,
                   allow_16bit: bool = False, deep: bool = False) -> AdapterResult:
    """CheXpert -> normal classify rows (Table 2: "No findings, age threshold, ..., without any
    medical equipment").

    Filters: Frontal/Lateral == Frontal; No Finding == 1; Age > 18; Support Devices != 1
    (0, -1 uncertain and blank kept); optional random selection; image check. Reads ``train.csv``
    (+ ``valid.csv``) in ``root`` or ``root/CheXpert-v1.0*/``; the CSV paths
    (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``) are resolved against
    the folder holding the CSV. ``patient_id`` = ``chexpert-patientNNNNN``; view from AP/PA.
    """
    root = Path(root).expanduser().resolve()
    if metadata is None:
        found = verify_layout("chexpert", root, need_images=check_images)
        csv = found["train.csv"]
        base = csv.parent
        frames = [_read_csv(csv).assign(_file=csv.name)]
        if include_valid and (base / "valid.csv").is_file():
            frames.append(_read_csv(base / "valid.csv").assign(_file="valid.csv"))
        meta = pd.concat(frames, ignore_index=True)
    else:
        if check_images:
            verify_layout("chexpert", root, need_metadata=False)
        base = root if not any(root.glob("CheXpert-v1.0*/train")) else sorted(root.glob("CheXpert-v1.0*"))[0]
        meta = _as_frame(metadata).assign(
            _file=Path(metadata).name if not isinstance(metadata, pd.DataFrame) else "metadata")
    n = len(meta)
    p = meta["Path"].astype(str).str.strip()
    inner = p.str.split("/", n=1).str[-1]
    line = meta.groupby("_file").cumcount() + 2
    def col(c):
        return meta[c].astype(str).str.strip() if c in meta.columns else pd.Series([""] * n)
    df = _candidates(
        n, path=(str(base) + os.sep + inner).to_numpy(), split_role="classify", label="normal",
        source="chexpert", source_repo="", source_path=p, source_commit="",
        patient_id="chexpert-" + p.str.extract(r"(patient\d+)", expand=False).fillna(""),
        view=col("AP/PA"), sex=_norm_sex(col("Sex")), age=col("Age"),
        _row_id=(meta["_file"] + ":" + line.astype(str)).to_numpy(),
        _fl=col("Frontal/Lateral"), _nf=col("No Finding"), _sd=col("Support Devices"))
    sel = _Selection("chexpert", df, "rows of " + " + ".join(meta["_file"].unique()))
    sel.keep("frontal view", (sel.df["_fl"] == "Frontal").to_numpy(),
             "not frontal: " + sel.df["_fl"].where(sel.df["_fl"] != "", "not stated"),
             "Frontal/Lateral == Frontal")
    nf = pd.to_numeric(sel.df["_nf"], errors="coerce")
    sel.keep("No Finding", (nf == 1).to_numpy(),
             "No Finding = " + sel.df["_nf"].where(sel.df["_nf"] != "", "blank"),
             "No Finding == 1 -> normal")
    _adult_step(sel, min_age, strict=True, keep_unknown=False)
    sd = pd.to_numeric(sel.df["_sd"], errors="coerce")
    sel.keep("no support devices", (sd != 1).to_numpy(), "Support Devices = 1",
             "Support Devices != 1 (Table 2 'without any medical equipment')")
    _random_step(sel, n_sample, seed)
    _one_row_per_file(sel)
    _image_step(sel, check_images, allow_16bit, deep)
    return sel.result(root)


# --------------------------------------------------------------------------------------------
# segmentation sources


def _check_derived(derived_dir: str | Path | None, root: Path, name: str) -> Path:
    if derived_dir is None:
        raise ValueError(
            f"{name}: segment sources write their lung masks (left/right merged by OR, 0/255 PNG) "
            "to a derived folder; pass derived_dir= (outside the source folder)")
    d = Path(derived_dir).expanduser().resolve()
    if d == root or root in d.parents:
        raise ValueError(f"{name}: derived_dir {d} lies inside the source folder {root}; "
                         "derived files are never written into a source")
    return d


def build_mask(parts: list[Path], image_size: tuple[int, int], out: Path,
               max_aspect_diff: float = 0.02) -> tuple[str | None, str | None]:
    """OR the ``parts`` into one 0/255 mode-L PNG at ``out`` of ``image_size`` (W, H).

    Each part is read by :func:`helpers.data.decode.read_mask`: {0, 255}, {0, 1} and {False, True}
    normalised; a part of another size but the same aspect ratio (within ``max_aspect_diff``) is
    resized with nearest neighbour (noted); otherwise the image is excluded. The merged mask must
    pass :func:`helpers.data.checks.mask_reason` (not empty, near-empty or near-full). Returns
    ``(reason, note)``: reason when the mask cannot be used, note for a remark.
    """
    w, h = image_size
    merged = np.zeros((h, w), dtype=bool)
    notes = []
    for part in parts:
        info: dict = {}
        try:
            m = decode.read_mask(part, None, info)
        except decode.ImageError as exc:
            return f"mask {part.name}: {checks.short_reason(exc, part)}", None
        mh, mw = m.shape
        if (mw, mh) != (w, h):
            if abs(mw / mh - w / h) > max_aspect_diff * (w / h):
                return f"mask size {mw}x{mh} does not match image size {w}x{h}", None
            m = np.asarray(Image.fromarray(m * 255).resize((w, h), Image.NEAREST)) > 127
            info["notes"].append(f"resized {mw}x{mh} -> {w}x{h} (nearest)")
        notes += [f"mask {part.name} {n}" for n in info["notes"]]
        merged |= m > 0
    reason, note = checks.mask_reason(merged.astype(np.uint8))
    if reason:
        return reason, None
    if note:
        notes.append(note)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("." + out.name + ".tmp")
    Image.fromarray(merged.astype(np.uint8) * 255, mode="L").save(tmp, format="PNG")
    os.replace(tmp, out)
    return None, ("; ".join(notes) or None)


def _clinical_reading(path: Path | None) -> tuple[str, str]:
    """(sex, age) from an NLM ClinicalReadings text file ('Patient's Sex: M' / 'male 35yrs')."""
    if path is None or not path.is_file():
        return "", ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "", ""
    sex = ""
    m = re.search(r"sex\W*\s*([MF])\b", text, re.I) or re.search(r"\b(male|female)\b", text, re.I)
    if m:
        sex = m.group(1)[0].upper() if m.group(1).lower() != "female" else "F"
    age = ""
    a = re.search(r"age\W*\s*0*(\d+)", text, re.I) or re.search(r"0*(\d+)\s*(?:yrs?|years?|y)\b", text, re.I)
    if a:
        age = a.group(1)
    return sex, age


def _adapt_segment(name: str, root: Path, images_dir: Path, derived_dir: str | Path | None,
                   check_images: bool, mask_parts: Callable[[Path], tuple[list[Path], str]],
                   source_of: Callable[[str], str], patient_of: Callable[[str], str],
                   readings_dir: Path | None, view: str, allow_16bit: bool, deep: bool) -> AdapterResult:
    derived = _check_derived(derived_dir, root, name)
    files = sorted(p for p in images_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
    n = len(files)
    stems = [p.stem for p in files]
    clin = [_clinical_reading(readings_dir / (s + ".txt") if readings_dir else None) for s in stems]
    spec = get_source(name)
    df = _candidates(
        n, path=[str(p) for p in files], split_role="segment", label="",
        source=[source_of(s) for s in stems], source_repo=spec.repo,
        source_path=[os.path.relpath(p, root) for p in files], source_commit=paths.head_commit(root),
        patient_id=[patient_of(s) for s in stems], view=view,
        sex=[c[0] for c in clin], age=[c[1] for c in clin],
        _row_id=[os.path.relpath(p, root) for p in files])
    sel = _Selection(name, df, f"image files in {os.path.relpath(images_dir, root)}/")
    found = [mask_parts(Path(p)) for p in sel.df["path"]]
    sel.df["_parts"] = [f[0] for f in found]
    has = np.array([bool(f[0]) for f in found], dtype=bool)
    sel.keep("lung mask present", has, pd.Series([f[1] for f in found], index=sel.df.index),
             "a manual lung mask exists for the image")
    _one_row_per_file(sel)
    _image_step(sel, check_images, allow_16bit, deep)
    reasons, notes, outs = [], [], []
    for path, parts, src in zip(sel.df["path"], sel.df["_parts"], sel.df["source"]):
        out = derived / src / "masks" / (Path(path).stem + ".png")
        try:
            ih, iw = decode.image_size(path)
            size = (iw, ih)
        except decode.ImageError as exc:
            reasons.append(checks.short_reason(exc, path))
            notes.append("")
            outs.append("")
            continue
        r, nt = build_mask(parts, size, out)
        reasons.append(r or "")
        notes.append(nt or "")
        outs.append("" if r else str(out))
    reasons_s = pd.Series(reasons, index=sel.df.index, dtype=object)
    sel.df["mask_path"] = outs
    sel.note("mask merged", (reasons_s == "") & (pd.Series(notes, index=sel.df.index) != ""),
             pd.Series(notes, index=sel.df.index, dtype=object))
    sel.keep("mask merged", (reasons_s == "").to_numpy(), reasons_s,
             f"lung masks binarised, merged by OR and written as 0/255 PNG under {derived}")
    return sel.result(root)


def _mask_lookup(folder: Path) -> dict[str, Path]:
    """Lower-case stem (``.IMG`` and ``_mask`` kept) -> file, for the image files in ``folder``."""
    return {Path(k).stem: v for k, v in _file_index(folder).items()}


def adapt_montgomery(root: str | Path, derived_dir: str | Path | None = None, check_images: bool = True,
                     *, allow_16bit: bool = False, deep: bool = False) -> AdapterResult:
    """Montgomery County set -> segment rows (paper 3.2).

    Images ``CXR_png/*.png``; masks ``ManualMask/leftMask/<name>`` and ``ManualMask/rightMask/<name>``
    merged by OR into ``<derived_dir>/montgomery/masks/<stem>.png`` (0/255). Sex/age from
    ``ClinicalReadings/<stem>.txt`` when present. ``patient_id`` = ``montgomery-<stem>``; view PA.
    """
    root = Path(root).expanduser().resolve()
    verify_layout("montgomery", root)
    left = _mask_lookup(root / "ManualMask" / "leftMask")
    right = _mask_lookup(root / "ManualMask" / "rightMask")

    def parts(p: Path) -> tuple[list[Path], str]:
        s = p.stem.lower()
        miss = [f"ManualMask/{side}/{p.name}" for side, d in (("leftMask", left), ("rightMask", right))
                if s not in d]
        if miss:
            return [], "no lung mask: missing " + ", ".join(miss)
        return [left[s], right[s]], ""

    return _adapt_segment("montgomery", root, root / "CXR_png", derived_dir, check_images, parts,
                          lambda s: "montgomery", lambda s: f"montgomery-{s}",
                          root / "ClinicalReadings", "PA", allow_16bit, deep)


def adapt_shenzhen(root: str | Path, derived_dir: str | Path | None = None, check_images: bool = True,
                   *, allow_16bit: bool = False, deep: bool = False) -> AdapterResult:
    """Shenzhen set in the Kaggle layout -> segment rows (paper 3.2).

    Images ``CXR_png/``; masks in ``mask/`` or ``masks/`` named ``<stem>_mask.png`` (or
    ``<stem>.png``), normalised to 0/255 in ``<derived_dir>/shenzhen/masks/<stem>.png``. Images
    without a mask (the Kaggle set has masks for 566 of 662) are excluded and counted. The Kaggle
    folder also holds Montgomery images (``MCUCXR_*``): those rows get source ``montgomery``.
    ``patient_id`` = ``shenzhen-<stem>`` / ``montgomery-<stem>``.
    """
    root = Path(root).expanduser().resolve()
    found = verify_layout("shenzhen", root)
    masks = _mask_lookup(found["mask/"])
    mdir = found["mask/"].name

    def parts(p: Path) -> tuple[list[Path], str]:
        s = p.stem.lower()
        m = masks.get(s + "_mask") or masks.get(s)
        return ([m], "") if m else ([], f"no lung mask: missing {mdir}/{p.stem}_mask.png")

    def src(s):
        return "montgomery" if s.upper().startswith("MCUCXR") else "shenzhen"
    return _adapt_segment("shenzhen", root, root / "CXR_png", derived_dir, check_images, parts,
                          src, lambda s: f"{src(s)}-{s}", root / "ClinicalReadings", "PA",
                          allow_16bit, deep)


def adapt_jsrt(root: str | Path, derived_dir: str | Path | None = None, check_images: bool = True,
               *, allow_16bit: bool = False, deep: bool = False) -> AdapterResult:
    """JSRT radiographs with SCR lung masks -> segment rows.

    Documented layout: ``images/<id>.png`` (or ``<id>.IMG.png``), ``masks/left_lung/<id>.png|gif``
    and ``masks/right_lung/<id>.png|gif`` (alternatives in ``SOURCES['jsrt-scr'].layout``,
    including the AnishHota/JSRT-Segmentation copy). The 1024x1024 SCR masks are resized to the
    image size (nearest) and merged by OR into ``<derived_dir>/jsrt-scr/masks/<stem>.png``.
    ``patient_id`` = ``jsrt-<id>``; view PA.
    """
    root = Path(root).expanduser().resolve()
    found = verify_layout("jsrt-scr", root)
    def key(stem):
        return re.sub(r"\.img$", "", stem.lower())
    left = {key(k): v for k, v in _mask_lookup(found["masks/left_lung/"]).items()}
    right = {key(k): v for k, v in _mask_lookup(found["masks/right_lung/"]).items()}
    lname = os.path.relpath(found["masks/left_lung/"], root)
    rname = os.path.relpath(found["masks/right_lung/"], root)

    def parts(p: Path) -> tuple[list[Path], str]:
        s = key(p.stem)
        miss = [f"{d}/{p.stem.split('.')[0]}.png" for d, m in ((lname, left), (rname, right)) if s not in m]
        if miss:
            return [], "no lung mask: missing " + ", ".join(miss)
        return [left[s], right[s]], ""

    def ident(s):
        return re.sub(r"\.img$", "", s, flags=re.I)
    return _adapt_segment("jsrt-scr", root, found["images/"], derived_dir, check_images, parts,
                          lambda s: "jsrt-scr", lambda s: f"jsrt-{ident(s)}", None, "PA",
                          allow_16bit, deep)


def adapt_manifest(root: str | Path, derived_dir: str | Path | None = None, check_images: bool = True,
                   *, allow_16bit: bool = False, deep: bool = False) -> AdapterResult:
    """A ready manifest folder (e.g. the shared ``cxr/``): schema validated by ``read_manifest``.

    Paths are made absolute. Rows are filtered like any other source, each exclusion with its
    reason: frontal view (lateral and other views out; not stated kept and noted); with
    ``check_images`` the image (missing, unreadable, not grayscale, not a plausible radiograph:
    see :func:`_image_step`) and its lung mask (:func:`_mask_step`). A missing file excludes its
    row; only a broken schema (columns, roles, labels, duplicate paths) raises.
    """
    root = Path(root).expanduser().resolve()
    verify_layout("manifest", root)
    df = read_manifest(root, check_files=False)
    n = len(df)
    df = df.copy()
    df["_row_id"] = [f"manifest.csv:{i + 2}" for i in range(n)]
    df["_where"] = df["path"]  # exclusions name the file in this folder
    df["path"] = [str(root / p) for p in df["path"]]
    df["mask_path"] = [str(root / p) if p else "" for p in df["mask_path"]]
    sel = _Selection("manifest", df, "rows of manifest.csv")
    sel.skip("manifest validated", "schema checked by helpers.data.manifest.read_manifest")
    _frontal_step(sel, keep_unknown=True)
    _image_step(sel, check_images, allow_16bit, deep)
    _mask_step(sel, check_images)
    return sel.result(root)


ADAPTERS: dict[str, Callable[..., AdapterResult]] = {
    "ieee8023": adapt_ieee8023, "figure1": adapt_figure1, "actualmed": adapt_actualmed,
    "nih-cxr8": adapt_nih, "chexpert": adapt_chexpert, "montgomery": adapt_montgomery,
    "shenzhen": adapt_shenzhen, "jsrt-scr": adapt_jsrt, "manifest": adapt_manifest,
}


def load_source(name: str | None, root: str | Path, derived_dir: str | Path | None = None,
                check_images: bool = True, **options: Any) -> AdapterResult:
    """Run the adapter of ``name`` (or of :func:`detect_source` when ``name`` is None/"auto")."""
    if name is None or str(name).lower() == "auto":
        name = detect_source(root)
    spec = get_source(name)
    return ADAPTERS[spec.name](root, derived_dir, check_images, **options)


def merge_results(results: Iterable[AdapterResult], source: str = "curated") -> AdapterResult:
    """Concatenate adapter results; a file listed by two sources is an error."""
    results = list(results)
    man = (pd.concat([r.manifest for r in results], ignore_index=True) if results
           else pd.DataFrame(columns=COLUMNS))
    man = validate(man, where="merged sources", check_files=False)

    def cat(frames, cols):
        return (pd.concat([f for f in frames if len(f)], ignore_index=True)
                if any(len(f) for f in frames) else pd.DataFrame(columns=cols))
    return AdapterResult(
        source, None, man,
        cat([r.flow for r in results], FLOW_COLUMNS).reset_index(drop=True),
        cat([r.excluded for r in results], EXCLUDED_COLUMNS),
        cat([r.notes for r in results], NOTE_COLUMNS))


def curate(roots: Mapping[str, str | Path], derived_dir: str | Path | None = None,
           check_images: bool = True,
           options: Mapping[str, Mapping[str, Any]] | None = None) -> AdapterResult:
    """Adapt several sources (``{name: root}``) and merge them into one result.

    ``options`` gives per-source keyword arguments (e.g. ``{"nih-cxr8": {"n_sample": 1000}}``).
    Segment sources need ``derived_dir``. Run :func:`helpers.data.dedup.find_duplicates` on the
    merged manifest to guard against the same radiograph entering through two sources.
    """
    options = options or {}
    results = []
    for name, root in roots.items():
        opts = dict(options.get(name, {}))
        results.append(load_source(name, root, derived_dir, check_images, **opts))
    return merge_results(results)


def select_metadata(source: str, metadata: str | Path | pd.DataFrame | None = None,
                    root: str | Path | None = None, **options: Any) -> AdapterResult:
    """The Table 2 selection on metadata alone (no image opened, ``check_images=False``).

    Default metadata: torchxrayvision's shipped copy for ``nih-cxr8`` / ``chexpert``; the
    shared ``metadata/<source>/metadata.csv`` for ``ieee8023`` / ``figure1``. Paths in the
    manifest point where the images would be under ``root`` (default: the metadata's folder).
    """
    spec = get_source(source)
    if spec.role == "segment" or spec.name == "manifest":
        raise ValueError(f"{spec.name}: selection from metadata alone applies to classify sources only")
    if metadata is None:
        if spec.name == "nih-cxr8":
            metadata = shipped_metadata("nih-cxr8")
        elif spec.name == "chexpert":
            metadata = shipped_metadata("chexpert")
        else:
            d = shared_metadata_dir()
            metadata = d / spec.name / "metadata.csv" if d is not None else None
        if metadata is None or not Path(metadata).is_file():
            raise FileNotFoundError(f"{spec.name}: no metadata available offline; pass metadata=<path>. "
                                    f"{spec.where_to_get()}")
    if root is None:
        root = Path(metadata).parent if not isinstance(metadata, pd.DataFrame) else Path.cwd()
    return ADAPTERS[spec.name](root, None, False, metadata=metadata, **options)


def count_selection(source: str, metadata: str | Path | pd.DataFrame | None = None,
                    **options: Any) -> pd.DataFrame:
    """The filter flow (step, n_in, n_kept, n_removed, reason) of :func:`select_metadata`."""
    return select_metadata(source, metadata, **options).flow
