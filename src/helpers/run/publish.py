"""Publish a finished run's figures, e.g. into the repository's ``figures/<name>/``::

    python -m helpers.run.publish RUN_DIR figures/NAME [--replace]
    ./run_all.sh cpu --publish figures/cpu          # the same, after notebook 06

Notebook 06 writes only into ``RUN_DIR/figures/``; nothing writes into the repository unless asked
to here. Publishing recomputes nothing: it copies the files that folder's ``index.csv`` lists,
``index.csv``, ``README.md``, ``SUMMARY.md`` and the evidence tables they were made from
(:data:`helpers.run.artefacts.EVIDENCE_TABLES`), and writes ``PROVENANCE.json`` beside them:
profile, seed, data and external data (each named relative to the repository, or by its folder name,
with the SHA-256 of its ``manifest.csv``; never a machine path), the overrides that change results
(not the execution-only settings of :data:`helpers.config.EXECUTION_FIELDS`), the run's git revision
and the files written.

A destination that holds figures of another provenance (profile, seed, data, external data or
overrides differ), or figures without ``PROVENANCE.json`` (unknown provenance), is refused unless
``replace`` is given. Figures of the same provenance are replaced quietly. Replacing removes only
files the earlier publication listed (its ``PROVENANCE.json``, else its ``index.csv``); any other
file in the destination (a model card, notes) is kept.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from helpers import paths
from helpers.run.artefacts import ART, EVIDENCE_TABLES

PROVENANCE = "PROVENANCE.json"
#: What makes two publications the same run's figures (the git revision and the files do not).
COMPARED = ("profile", "seed", "data", "extra_data", "external_data", "overrides")
#: Files of a figures folder copied besides those its index.csv lists (plus the evidence tables).
FIXED = ("index.csv", "README.md", "SUMMARY.md")


class PublishRefused(RuntimeError):
    """The destination holds figures of another (or an unknown) provenance."""


def data_record(folder: str | Path | None) -> dict[str, Any] | None:
    """How ``PROVENANCE.json`` names a data folder (None: generated phantoms, or no external set).

    ``folder`` is relative to the repository when the data lie inside it or in the shared folder
    beside it (``../shared/data/cxr``), else only the folder's name; ``manifest_sha256`` is the
    SHA-256 (16 hex digits) of its ``manifest.csv`` when that file can be read here, else None.
    Never a machine path.
    """
    if not folder:
        return None
    p = Path(folder).expanduser().resolve()
    root = paths.repo_root().resolve()
    near = p.is_relative_to(root) or p.is_relative_to(root.parent / "shared")
    name = os.path.relpath(p, root) if near else p.name
    manifest = p / "manifest.csv"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:16] if manifest.is_file() else None
    return {"folder": name, "manifest_sha256": digest}


def provenance(cfg_dict: dict[str, Any], git_revision: str | None = None,
               run: str | None = None) -> dict[str, Any]:
    """The provenance of a run's figures from its configuration (``RunConfig.to_dict()``).

    Overrides are those the run was given, with the values its profile holds, less the
    execution-only settings (:data:`helpers.config.EXECUTION_FIELDS`), which change no result.
    """
    from helpers.config import EXECUTION_FIELDS

    prof = cfg_dict.get("profile") or {}
    given = cfg_dict.get("overrides") or {}
    overrides = {k: prof.get(k, v) for k, v in sorted(given.items()) if k not in EXECUTION_FIELDS}
    return {
        "profile": prof.get("name"),
        "seed": int(cfg_dict.get("seed", 0)),
        "data": data_record(cfg_dict.get("data_dir")) if prof.get("data") == "real" else None,
        # more data folders of the same cohort (DATA_DIR given as several folders, extra_data)
        "extra_data": [data_record(d) for d in cfg_dict.get("extra_data_dirs") or []],
        "external_data": data_record(cfg_dict.get("external_data_dir")),
        "overrides": json.loads(json.dumps(overrides, default=str)),
        "git_revision": git_revision,
        "run": run,
    }


def _same_data(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a == b
    ha, hb = a.get("manifest_sha256"), b.get("manifest_sha256")
    if ha and hb:  # the same manifest is the same data, wherever it lies
        return ha == hb
    return a.get("folder") == b.get("folder")


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields of :data:`COMPARED` in which two provenances differ."""
    same = {k: old.get(k) == new.get(k) for k in COMPARED}
    for k in ("data", "external_data"):
        same[k] = _same_data(old.get(k), new.get(k))
    a, b = old.get("extra_data") or [], new.get("extra_data") or []
    same["extra_data"] = len(a) == len(b) and all(_same_data(x, y) for x, y in zip(a, b))
    return [k for k in COMPARED if not same[k]]


def _data_text(d: dict | None, none: str) -> str:
    if d is None:
        return none
    sha = d.get("manifest_sha256")
    return f"{d.get('folder')}" + (f" (manifest {sha})" if sha else "")


def describe(prov: dict[str, Any]) -> str:
    """One line: profile, seed, data, external data, overrides (and the git revision)."""
    ov = prov.get("overrides") or {}
    text = (f"profile {prov.get('profile')}, seed {prov.get('seed')}, "
            f"data {_data_text(prov.get('data'), 'generated phantoms')}"
            + "".join(f" + {_data_text(d, '?')}" for d in prov.get("extra_data") or []) + ", "
            f"external data {_data_text(prov.get('external_data'), 'none')}, "
            f"overrides {json.dumps(ov, sort_keys=True) if ov else 'none'}")
    rev = prov.get("git_revision")
    if rev:
        sha, _, state = rev.partition("+")
        text += f", revision {sha[:12]}" + (f"+{state}" if state else "")
    return text


def figures_folder(run_dir: str | Path) -> Path:
    """``RUN_DIR/figures`` (or ``RUN_DIR`` itself when it is a figures folder) of a finished run."""
    run_dir = Path(run_dir)
    for d in (run_dir / "figures", run_dir):
        if (d / "index.csv").is_file() and (d / "run_manifest.json").is_file():
            if not (d / "DONE.json").is_file():
                raise FileNotFoundError(f"{d} has no DONE.json: notebook 06 did not finish there; "
                                        "run it (./run_all.sh ... --from 6) before publishing")
            return d
    raise FileNotFoundError(f"{run_dir} holds no finished figures ({ART.figure_index.rel()} and "
                            f"{ART.figures_manifest.rel()}): run notebook 06 into it first")


def _listed(index_csv: Path) -> list[str]:
    """The ``file`` column of an ``index.csv``: plain file names only (nothing outside the folder)."""
    with open(index_csv, newline="") as fh:
        names = [row["file"] for row in csv.DictReader(fh) if row.get("file")]
    bad = [n for n in names if Path(n).name != n or n in ("", ".", "..")]
    if bad:
        raise ValueError(f"{index_csv} lists files outside its folder: {bad}")
    return names


def files_to_publish(src: Path) -> list[str]:
    """Every file a figures folder publishes: those its ``index.csv`` lists, ``index.csv``,
    ``README.md``, ``SUMMARY.md`` and the evidence tables. Raises when one is missing."""
    src = Path(src)
    evidence = [getattr(ART, name).file for name in EVIDENCE_TABLES]
    names = list(dict.fromkeys([*_listed(src / "index.csv"), *FIXED, *evidence]))
    missing = [n for n in names if not (src / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{src} lacks {missing}: run notebook 06 into it first")
    return names


def run_provenance(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """The figures folder of a finished run and its provenance (from its ``run_manifest.json``)."""
    src = figures_folder(run_dir)
    manifest = json.loads((src / "run_manifest.json").read_text())
    cfg_dict = manifest.get("config")
    if not cfg_dict:
        raise ValueError(f"{src / 'run_manifest.json'} records no configuration")
    return src, provenance(cfg_dict, manifest.get("git_revision"), paths.display_path(src.parent))


def recorded(dest: str | Path) -> dict[str, Any] | None:
    """The provenance recorded in ``dest`` (None when it has no ``PROVENANCE.json``)."""
    p = Path(dest) / PROVENANCE
    return json.loads(p.read_text()) if p.is_file() else None


def check(dest: str | Path, prov: dict[str, Any], replace: bool = False) -> dict[str, Any] | None:
    """Raise :class:`PublishRefused` when ``dest`` holds figures of another or an unknown provenance
    and ``replace`` is false; returns the provenance recorded there (None: none recorded)."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise PublishRefused(f"{dest} is a file, not a folder")
    if not dest.is_dir() or not any(dest.iterdir()):
        return None
    old = recorded(dest)
    if replace:
        return old
    if old is None:
        raise PublishRefused(
            f"{dest} holds files of unknown provenance (no {PROVENANCE}, e.g. figures published "
            f"before provenance was recorded); this run: {describe(prov)}. Pass --replace to replace "
            "them (only the files its index.csv lists are removed), or publish into another folder")
    diff = differences(old, prov)
    if diff:
        raise PublishRefused(
            f"{dest} holds figures of another run ({describe(old)}); this run: {describe(prov)}; "
            f"they differ in {', '.join(diff)}. Publish into another folder, or pass --replace to "
            "replace them")
    return old


def _write_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def publish(run_dir: str | Path, dest: str | Path, replace: bool = False) -> list[Path]:
    """Copy the finished figures of ``run_dir`` (a run folder or its ``figures/``) into ``dest``
    and record their provenance there; returns the paths written (``PROVENANCE.json`` last).

    Refused (:class:`PublishRefused`) over figures of another or unknown provenance unless
    ``replace``. Files the earlier publication listed and this one does not write are removed;
    nothing else in ``dest`` is touched.
    """
    src, prov = run_provenance(run_dir)
    names = files_to_publish(src)
    dest = Path(dest)
    if dest.resolve() == src.resolve():
        raise PublishRefused(f"{dest} is the run's own figures folder")
    old = check(dest, prov, replace)
    if old is not None:
        earlier = [n for n in old.get("files", []) if Path(n).name == n]
    elif (dest / "index.csv").is_file():
        earlier = _listed(dest / "index.csv")
    else:
        earlier = []
    for n in sorted(set(earlier) - set(names) - {PROVENANCE}):
        (dest / n).unlink(missing_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    written = [Path(shutil.copy2(src / n, dest / n)) for n in names]
    _write_json({**prov, "files": names}, dest / PROVENANCE)
    return [*written, dest / PROVENANCE]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m helpers.run.publish",
        description="Copy a finished run's figures (notebook 06's RUN_DIR/figures) into a folder such "
                    "as the repository's figures/NAME, with their provenance. Recomputes nothing.")
    ap.add_argument("run_dir", help="OUT_DIR of a finished run (e.g. outputs/cpu), or its figures/ folder")
    ap.add_argument("dest", help="destination folder, e.g. figures/cpu")
    ap.add_argument("--replace", action="store_true",
                    help="replace figures of another or unknown provenance in DEST")
    a = ap.parse_args(argv)
    try:
        written = publish(a.run_dir, a.dest, replace=a.replace)
    except (PublishRefused, FileNotFoundError, ValueError) as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 1
    print(f"published {len(written) - 1} files and {PROVENANCE} to {a.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
