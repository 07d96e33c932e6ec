"""``hrnet-cxr``: export a finished run as a bundle, and predict new radiographs with it (issue 11).

    hrnet-cxr export RUN_DIR BUNDLE_DIR [--model hrnet ...]
    hrnet-cxr predict INPUT... (--bundle BUNDLE_DIR | --run RUN_DIR) --out OUT [--folds 0 1] [--no-heatmaps]

Also ``python -m helpers.deploy.cli ...`` (both commands).
Exit codes of ``predict``: 0 every input got a probability; 1 at least one input did not (its row
says why: ``unreadable``, ``rejected`` or ``no_lung_mask``); 2 nothing ran (bad bundle, checksum
mismatch, output folder refused, bad arguments).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hrnet-cxr", description="Export and apply the trained models "
                                 "of an hrnet-cxr run. Research use only; not for diagnosis.")
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a self-contained bundle from a finished run")
    e.add_argument("run_dir", help="OUT_DIR of a finished run (e.g. outputs/cpu)")
    e.add_argument("bundle_dir", help="new (or empty) folder for the bundle")
    e.add_argument("--model", action="append", default=None,
                   help="classifier to include (repeatable; first is the default for prediction): "
                        "hrnet (default), hrnet_unsegmented, or a baseline whose weights were saved")
    p = sub.add_parser("predict", help="predict radiographs (files, folders, DICOM) with a bundle")
    p.add_argument("inputs", nargs="+", help="image files (PNG, JPEG, DICOM, ...) and/or folders")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", help="bundle folder written by `hrnet-cxr export`")
    src.add_argument("--run", help="a finished run folder (exported to a temporary bundle first)")
    p.add_argument("--out", required=True, help="new or empty folder for predictions.csv/.jsonl and PNGs")
    p.add_argument("--model", default=None, help="classifier of the bundle (default: its first)")
    p.add_argument("--folds", type=int, nargs="+", default=None,
                   help="use only these fold classifiers (ids from 0); default: all, averaged")
    p.add_argument("--no-heatmaps", action="store_true", help="skip Grad-CAM (faster)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return ap


def _export(a) -> int:
    from helpers.deploy.bundle import BundleError, export

    try:
        out = export(a.run_dir, a.bundle_dir, tuple(a.model or ["hrnet"]))
    except (BundleError, FileNotFoundError, ValueError) as exc:
        print(f"hrnet-cxr export: {exc}", file=sys.stderr)
        return 2
    print(f"bundle written to {out} (model card: {out / 'MODEL_CARD.md'})")
    return 0


def _predict(a) -> int:
    from helpers.deploy.bundle import BundleError, export
    from helpers.deploy.predict import Predictor, expand_inputs, prepare_out

    inputs = expand_inputs(a.inputs)
    if not inputs:
        print("hrnet-cxr predict: no image files found in the inputs given", file=sys.stderr)
        return 2
    try:
        out = prepare_out(a.out, inputs)
    except (FileExistsError, ValueError) as exc:
        print(f"hrnet-cxr predict: {exc}", file=sys.stderr)
        return 2
    tmp = None
    try:
        bundle = a.bundle
        if a.run:
            tmp = tempfile.TemporaryDirectory(prefix="hrnet-cxr-bundle-")
            bundle = export(a.run, Path(tmp.name) / "bundle", (a.model or "hrnet",), card=False)
        t0 = time.time()
        pred = Predictor.from_bundle(bundle, model=a.model, folds=a.folds, device=a.device,
                                     heatmaps=not a.no_heatmaps)
        t1 = time.time()
        df = pred.predict_many(inputs, out=out)
        t2 = time.time()
    except (BundleError, FileNotFoundError, ValueError) as exc:
        print(f"hrnet-cxr predict: {exc}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            tmp.cleanup()
    counts = df["status"].value_counts()
    print(f"{len(df)} input(s): " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f"; models loaded in {t1 - t0:.1f} s, predicted in {t2 - t1:.1f} s "
          f"({len(df) / max(t2 - t1, 1e-9):.1f} images/s); results in {out / 'predictions.csv'}")
    bad = df[df["status"] != "ok"]
    for r in bad.head(10).itertuples(index=False):
        print(f"  {r.status}: {r.input}: {r.reason}", file=sys.stderr)
    if len(bad) > 10:
        print(f"  ... and {len(bad) - 10} more (see predictions.csv)", file=sys.stderr)
    return 0 if bad.empty else 1


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    return _export(a) if a.command == "export" else _predict(a)


if __name__ == "__main__":
    raise SystemExit(main())
