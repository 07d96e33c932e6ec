"""Carve a patient-disjoint external set out of a manifest folder, without copying any image.

Used to test external validation with the shared data: whole sources (e.g. ``figure1``,
``montgomery``) and/or a fraction of the remaining patients go to the external set. Both output
folders get a ``manifest.csv`` whose paths point (absolutely) at the original files.

    python -m helpers.data.holdout SRC OUT_INTERNAL OUT_EXTERNAL --sources figure1 montgomery \\
        --patient-fraction 0.1 --seed 0
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.data import manifest as mf


def split(src: str | Path, sources: list[str] = (), patient_fraction: float = 0.0, seed: int = 0
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(internal, external) manifests with absolute paths; no patient is in both."""
    src = Path(src).resolve()
    df = mf.read_manifest(src)
    unknown = sorted(set(sources) - set(df["source"]))
    if unknown:
        raise ValueError(f"{src}/manifest.csv has no source(s) {unknown}; "
                         f"it has {sorted(df.source.unique())}")
    ext_pat = set(df.loc[df["source"].isin(sources), "patient_id"])
    rest = sorted(set(df["patient_id"]) - ext_pat)
    if patient_fraction > 0:
        rng = np.random.default_rng(seed)
        # stratify the fraction by (role, label) of each patient's first row
        first = df[df["patient_id"].isin(rest)].groupby("patient_id")[["split_role", "label"]].first()
        for _, part in first.groupby(["split_role", "label"]):
            pats = np.array(sorted(part.index), dtype=object)
            k = int(round(patient_fraction * len(pats)))
            ext_pat |= set(rng.choice(pats, size=k, replace=False)) if k else set()
    for col in ("path", "mask_path"):
        df[col] = [str(src / p) if p else "" for p in df[col]]
    ext = df[df["patient_id"].isin(ext_pat)].reset_index(drop=True)
    internal = df[~df["patient_id"].isin(ext_pat)].reset_index(drop=True)
    assert not set(ext["patient_id"]) & set(internal["patient_id"])
    return internal, ext


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out_internal")
    ap.add_argument("out_external")
    ap.add_argument("--sources", nargs="*", default=[])
    ap.add_argument("--patient-fraction", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    internal, ext = split(a.src, a.sources, a.patient_fraction, a.seed)
    for df, out in ((internal, a.out_internal), (ext, a.out_external)):
        f = mf.write_manifest(df, out)
        counts = df.groupby(["split_role", "label", "source"]).size().to_dict()
        print(f"{f}: {len(df)} rows {counts}")


if __name__ == "__main__":
    main()
