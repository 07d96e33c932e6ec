"""The manifest: one row per image, the same schema for generated phantoms and every real source.

The schema is that of the shared real-data folder (``manifest.csv`` beside the images)::

    path          image file, relative to the manifest's folder
    split_role    "classify" (COVID vs non-COVID image) or "segment" (image with a lung mask)
    label         "covid" | "normal" | "pneumonia" (a non-COVID finding) for classify rows, empty
                  for segment rows; the task is the paper's COVID vs non-COVID (y = label is covid)
    source        short source name (ieee8023, nih-cxr8, jsrt-scr, phantom-a, ...)
    source_repo, source_path, source_commit   provenance of the original file
    patient_id    source-prefixed patient identifier; all splits group by it
    view          PA | AP | AP Supine | ... (empty when the source does not say)
    sex, age      as stated by the source (empty when unknown)
    license       as stated by the source (empty when none)
    mask_path     lung mask (0/255 PNG), relative to the folder, for segment rows
    finding       the source's own finding (e.g. "SARS", "Klebsiella"; empty when not stated)
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = [
    "path", "split_role", "label", "source", "source_repo", "source_path", "source_commit",
    "patient_id", "view", "sex", "age", "license", "mask_path", "finding",
]
REQUIRED = ["path", "split_role", "label", "source", "patient_id"]
ROLES = ("classify", "segment")
LABELS = ("covid", "normal", "pneumonia")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the rows and the fix."""



def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing optional columns (empty), order the columns, and make everything strings."""
    df = df.copy()
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = ""
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[COLUMNS + extra]
    for c in COLUMNS:
        df[c] = df[c].fillna("").astype(str)
        df.loc[df[c].str.lower().isin(["nan", "none"]), c] = ""
    return df.reset_index(drop=True)


def validate(df: pd.DataFrame, where: str = "manifest", root: Path | None = None,
             check_files: bool = True) -> pd.DataFrame:
    """Check the schema (and, with ``root``, that every image and mask exists).

    Raises :class:`ManifestError` naming ``where``, the offending rows and what to do.
    Returns the normalised frame.
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{where}: missing column(s) {missing}. A manifest needs at least {REQUIRED}; "
            f"the full schema is {COLUMNS} (see helpers.data.manifest)."
        )
    df = normalise(df)
    problems: list[str] = []

    def report(mask: pd.Series, what: str) -> None:
        if mask.any():
            rows = (df.index[mask] + 2).tolist()  # +2: header line and 1-based lines
            sample = ", ".join(f"line {r}: {df.loc[r - 2, 'path']}" for r in rows[:5])
            more = f" (and {len(rows) - 5} more)" if len(rows) > 5 else ""
            problems.append(f"{int(mask.sum())} row(s) {what}: {sample}{more}")

    report(~df["split_role"].isin(ROLES), f"with split_role not in {ROLES}")
    cls = df["split_role"] == "classify"
    report(cls & ~df["label"].isin(LABELS), f"classify rows with label not in {LABELS}")
    report(df["path"] == "", "with an empty path")
    report(df["patient_id"] == "", "with an empty patient_id (splits group by patient)")
    seg = df["split_role"] == "segment"
    report(seg & (df["mask_path"] == ""), "segment rows without mask_path")
    report(df["path"].duplicated(keep="first"), "duplicating an earlier path")
    if check_files and root is not None:
        exists = df["path"].map(lambda p: (root / p).is_file() if p else False)
        report(~exists, f"whose image file does not exist under {root}")
        mexists = df["mask_path"].map(lambda p: (root / p).is_file() if p else True)
        report(~mexists, f"whose mask file does not exist under {root}")
    if problems:
        raise ManifestError(f"{where}: " + "; ".join(problems) + ". Fix or remove these rows.")
    return df


def read_manifest(folder: str | Path, check_files: bool = True) -> pd.DataFrame:
    """Read and validate ``<folder>/manifest.csv``."""
    folder = Path(folder)
    f = folder / "manifest.csv"
    if not f.is_file():
        raise ManifestError(
            f"{f} not found. A manifest folder holds manifest.csv plus the image files it lists "
            f"(columns {COLUMNS}); point DATA_DIR at such a folder or at a public source in its "
            "original layout (docs/data.md)."
        )
    try:
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises several parser errors
        raise ManifestError(f"{f}: not a readable CSV ({exc})") from exc
    return validate(df, where=str(f), root=folder, check_files=check_files)


def write_manifest(df: pd.DataFrame, folder: str | Path, overwrite: bool = False) -> Path:
    """Write ``<folder>/manifest.csv``; refuses to replace an existing file unless ``overwrite``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "manifest.csv"
    if f.exists() and not overwrite:
        raise FileExistsError(f"{f} exists; refusing to overwrite it (pass overwrite=True)")
    normalise(df).to_csv(f, index=False)
    return f
