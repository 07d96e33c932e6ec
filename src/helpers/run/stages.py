"""Stages: resuming, archiving, and the stage object every notebook opens.

Each notebook is one stage and writes ``OUT_DIR/<stage>/``. A stage folder records the
configuration it was made with (``stage.json``). A stage that finds results of a *different*
configuration moves them aside to ``<stage>.old-<time>`` instead of overwriting them, and a
stage whose earlier work matches (same configuration and same upstream results) resumes
from it (finished folds are not trained again).

:func:`require` lets every notebook run on its own: when an upstream stage has not been run for this
``OUT_DIR``, it executes the upstream notebooks with papermill first (same parameters).
:func:`start` is the stage object a notebook opens first: it seeds, runs missing upstream stages,
opens the stage folder and owns its run log and ``DONE.json``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from helpers.run import store
from helpers.run.artefacts import STAGES, UPSTREAM, artefact, migrate
from helpers.run.notebooks import notebook_parameters, run_notebook


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_key(cfg, stage: str | None = None) -> str:
    """What makes two runs of ``stage`` comparable.

    The profile settings that stage reads (:data:`helpers.config.STAGE_FIELDS`), the seed and the
    external data folder; curation also the data folder (later stages see the data through
    curation's results). Without ``stage``: the whole configuration.
    """
    from helpers.config import stage_settings

    if stage is None:
        d = cfg.to_dict()
        d.pop("out_dir", None)
        return _key(d)
    d = {"stage": stage, "settings": stage_settings(cfg.profile, stage), "seed": cfg.seed,
         "external_data_dir": str(cfg.external_data_dir) if cfg.external_data_dir else None}
    if stage in ("curation", "figures"):
        d["data_dir"] = str(cfg.data_dir) if cfg.data_dir else None
        if cfg.extra_data_dirs:  # only then, so a one-folder run's key stays what it was
            d["extra_data_dirs"] = [str(x) for x in cfg.extra_data_dirs]
    return _key(d)


def done_file(cfg, stage: str) -> Path:
    return cfg.out_dir / stage / "DONE.json"


def is_done(cfg, stage: str) -> bool:
    f = done_file(cfg, stage)
    if not f.is_file():
        return False
    return store.load_json(f).get("config_key") == config_key(cfg, stage)


HASHED = (".csv", ".npy", ".pt")  # deterministic artefacts; zips, PNGs and logs carry timestamps


def outputs_hash(stage_dir: Path) -> str:
    """SHA-256 over the names and bytes of a stage's data files (csv, npy, pt).

    Re-running a stage that reproduces the same results gives the same hash, so later stages can
    resume; any change in the results changes it and moves later results aside.
    """
    h = hashlib.sha256()
    for f in sorted(p for p in Path(stage_dir).rglob("*") if p.is_file() and p.suffix in HASHED):
        h.update(str(f.relative_to(stage_dir)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def upstream_key(cfg, stage: str) -> str:
    keys = {}
    for up in UPSTREAM[stage]:
        f = done_file(cfg, up)
        keys[up] = store.load_json(f).get("outputs_hash") if f.is_file() else None
    return _key(keys)


def open_stage(cfg, stage: str) -> Path:
    """Return ``OUT_DIR/<stage>``, ready for this configuration.

    Existing contents made with another configuration or other upstream results are moved to
    ``<stage>.old-<YYYYmmdd-HHMMSS>`` (never deleted); matching contents are kept for resuming.
    """
    migrate(cfg)
    d = cfg.out_dir / stage
    want = {"config_key": config_key(cfg, stage), "upstream_key": upstream_key(cfg, stage)}
    meta = d / "stage.json"
    if d.exists() and any(d.iterdir()):
        have = store.load_json(meta) if meta.is_file() else {}
        if {k: have.get(k) for k in want} != want:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            dest = d.with_name(f"{stage}.old-{stamp}")
            n = 1
            while dest.exists():
                dest, n = d.with_name(f"{stage}.old-{stamp}-{n}"), n + 1
            shutil.move(str(d), str(dest))
            print(f"[{stage}] earlier results were made with another configuration or other "
                  f"upstream results; moved them to {dest}")
        else:
            print(f"[{stage}] resuming in {d} (finished parts are reused)")
    d.mkdir(parents=True, exist_ok=True)
    store.save_json({**want, "stage": stage, "notebook": STAGES[stage]}, meta)
    return d


def mark_done(cfg, stage: str, **summary: Any) -> None:
    """Write ``DONE.json`` (later stages and ``require`` look for it) and say so in one line."""
    f = store.save_json({"config_key": config_key(cfg, stage), "stage": stage,
                      "outputs_hash": outputs_hash(cfg.out_dir / stage),
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary},
                     done_file(cfg, stage))
    print(f"[{stage}] finished: results in {f.parent}")


class Stage:
    """A notebook's stage, opened by :func:`start`: ``cfg`` (the resolved run), ``profile``,
    ``out`` (``OUT_DIR/<stage>/``), ``device`` and ``log`` (its :class:`helpers.run.repro.RunLog`)."""

    def __init__(self, name: str, cfg, run_upstream: bool = True):
        from helpers.run import repro

        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
        self.name, self.cfg, self.profile = name, cfg, cfg.profile
        repro.seed_everything(cfg.seed)
        self.device = repro.setup_torch(cfg.profile)
        if run_upstream:  # runs earlier notebooks first where their results are missing
            require(cfg, *UPSTREAM[name])
        self.out = open_stage(cfg, name)
        self.log = repro.RunLog(cfg, name, notebook_parameters(cfg))

    @property
    def timings(self) -> dict[str, float]:
        """The stage's timed parts in seconds (``timings_s`` of its ``run_manifest.json``); helpers
        that time their own parts add to it (``train.cross_validate_many(..., timings=...)``)."""
        return self.log.timings

    def timed(self, part: str):
        """``with stage.timed("train"): ...``: the part's seconds go into ``run_manifest.json``."""
        return self.log.timed(part)

    def save(self, **artefacts: Any) -> list[Path]:
        """Write this stage's artefacts by registry name: ``stage.save(table7=df, ...)``.

        Each name must be an artefact of :data:`helpers.run.artefacts.ART` that this stage writes
        (a name of another stage, or none, raises KeyError before anything is written); the value
        is written by :meth:`helpers.run.artefacts.Artefact.write`. Returns the paths."""
        arts = {name: artefact(name) for name in artefacts}
        foreign = sorted(f"{n} ({a.rel()})" for n, a in arts.items() if a.stage != self.name)
        if foreign:
            raise KeyError(f"stage {self.name!r} does not write {', '.join(foreign)}")
        return [arts[name].write(self.cfg, value) for name, value in artefacts.items()]

    def done(self, **summary: Any) -> None:
        """Write ``run_manifest.json`` and ``DONE.json`` (with ``summary``): the stage is finished."""
        self.log.write(**summary)
        mark_done(self.cfg, self.name, **summary)


def start(stage: str, profile: str, data_dir: str = "", out_dir: str = "", seed: int = 0,
          external_data_dir: str = "", overrides: dict | None = None) -> Stage:
    """Open ``stage`` for a notebook's parameters: resolve the profile, seed, set torch up, run
    missing upstream stages, open the stage folder, and print what runs where."""
    from helpers.config import resolve

    cfg = resolve(profile, data_dir, out_dir, seed, external_data_dir, overrides or {})
    st = Stage(stage, cfg)
    print(cfg.summary(), "\ndevice       ", st.device)
    return st


def require(cfg, *stages: str) -> None:
    """Make sure the given upstream stages are finished for this configuration, running them if not."""
    migrate(cfg)
    for stage in STAGES:  # in pipeline order
        if stage in stages and not is_done(cfg, stage):
            require(cfg, *UPSTREAM[stage])
            print(f"[{stage}] not finished for {cfg.out_dir}; running {STAGES[stage]} first")
            run_notebook(cfg, stage)
            if not is_done(cfg, stage):
                raise RuntimeError(f"{STAGES[stage]} ran but did not finish stage {stage!r}")
