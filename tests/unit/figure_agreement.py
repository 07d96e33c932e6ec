"""Does a figures folder tell one story? ``SUMMARY.md``, the evidence tables (CSV) and the figure
captions (``index.csv``) written by notebook 06 must show the same numbers.

``run_figures_stage`` does what notebook 06's evidence and save cells do (compute the evidence
tables once, save them, draw every figure and write the summary); ``check_agreement`` reads the
folder back and asserts, number by number, that each copy agrees with the saved table it came
from. Used by tests/unit/test_figure_agreement.py (a synthetic run) and by the papermill smoke
chain (tests/notebooks).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import config
from helpers.evidence import recomputed
from helpers.report import figures
from helpers.report.formats import fmt_auc, fmt_pct


def run_figures_stage(out_dir: Path, dest: Path, seed: int, n_boot: int = 1000,
                      builders=None) -> pd.DataFrame:
    """Notebook 06 on a finished run, without ``pipeline.require``: the evidence tables, saved
    in ``dest``, then every figure, ``index.csv`` and ``SUMMARY.md`` into ``dest``."""
    cfg = config.resolve("smoke", out_dir=out_dir, seed=seed)
    tables = recomputed.evidence_tables(cfg.out_dir, n_boot=n_boot, seed=cfg.seed)
    dest.mkdir(parents=True, exist_ok=True)
    recomputed.save_tables(tables, dest)
    index = figures.write_all(cfg, dest, builders=builders)
    figures.plots.plt.close("all")
    return index


def _section(text: str, heading: str) -> str:
    """The body under ``heading`` (a ``##`` or ``###`` line) up to the next heading of that level."""
    level = heading.split(" ", 1)[0]
    m = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^{re.escape(level)} |\Z)", text, flags=re.S | re.M)
    assert m, f"SUMMARY.md has no section {heading!r}"
    return m.group(1)


def _rows(text: str) -> list[list[str]]:
    """Every markdown table row of ``text`` as a list of cells (header rows included)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ")]


def _row(text: str, *first: str) -> list[str]:
    hits = [r for r in _rows(text) if r[:len(first)] == list(first)]
    assert len(hits) == 1, f"expected one table row starting {first!r}, found {len(hits)}"
    return hits[0]


def _col(text: str, header_first: str, name: str) -> int:
    return _row(text, header_first).index(name)


def _csv(dest: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(dest / recomputed.TABLES[name], dtype={"fold": str, "label": str})


def check_agreement(dest: Path, seed: int) -> None:
    """Assert that SUMMARY.md, the evidence CSVs and the captions in ``index.csv`` agree."""
    text = (dest / "SUMMARY.md").read_text()
    index = pd.read_csv(dest / "index.csv", keep_default_na=False)

    # the run the summary describes, and the files it links
    assert f"- Seed: {seed};" in _section(text, "## What was run"), \
        f"SUMMARY.md is not of the run with seed {seed}"
    pngs = {p.name for p in dest.glob("*.png")}
    assert set(index["file"]) == pngs, "index.csv and the PNG files differ"
    linked = _section(text, "## Figures")
    for f in index["file"]:
        assert f"](./{f})" in linked, f"SUMMARY.md does not link {f}"
    for r in index.itertuples(index=False):  # every caption states the data of this run
        if r.caption.startswith("profile "):
            assert r.caption.startswith(r.data), (r.file, r.caption)

    # saliency: each pooled interval of heat_share_ci.csv, as the summary prints it
    hs = _csv(dest, "heat_share_ci")
    sal = _section(text, "## Saliency")
    pooled = hs[hs["fold"] == "pooled"]
    share_col = _col(sal, "model", "share of heat in lungs [95 % CI]")
    for r in pooled[pooled["quantity"] == "share_lung"].itertuples(index=False):
        row = _row(sal, r.model, r.label)
        assert row[share_col] == fmt_auc(r.mean, r.lo, r.hi), (r.model, r.label, row)
        assert row[share_col + 1] == fmt_auc(r.chance)
    for r in pooled[pooled["quantity"] == "difference"].itertuples(index=False):
        assert _row(sal, r.label, str(r.n_images))[2] == fmt_auc(r.mean, r.lo, r.hi), r.label

    # the heat-share figure's caption: the pooled mean share per model
    cap = index.set_index("file")["caption"].get("fig09_12_heat_share.png")
    if cap is not None:
        means = {m.strip(): v for m, v in
                 re.findall(r"([\w ()]+?) (\d\.\d\d)(?:,|;)", cap.split("means: ", 1)[1])}
        allrows = pooled[(pooled["quantity"] == "share_lung") & (pooled["label"] == "all")]
        assert set(means) == set(allrows["model"]), cap
        for r in allrows.itertuples(index=False):
            assert means[r.model] == f"{r.mean:.2f}", (r.model, cap)

    cls = _section(text, "## Classification")
    # Table 6: the pooled AUC of the caption is the summary's
    cap6 = index.set_index("file")["caption"].get("table6_hrnet_folds.png")
    if cap6 is not None:
        t6 = _section(cls, "### Table 6: HRNet per test fold")
        pooled_auc = _row(t6, "pooled")[_col(t6, "fold", "AUC")]
        assert f"Pooled AUC {pooled_auc} " in cap6, (pooled_auc, cap6)

    # paired comparisons
    comp = _csv(dest, "comparisons")
    sec = _section(cls, "### Paired comparisons with HRNet")
    diff_col = _col(sec, "model", "difference (hrnet - model)")
    for r in comp.itertuples(index=False):
        if math.isfinite(float(r.n)):
            row = _row(sec, r.model)
            assert row[diff_col] == fmt_auc(r.auc_diff, r.auc_diff_lo, r.auc_diff_hi), (r.model, row)
            assert row[_col(sec, "model", "AUC model")] == fmt_auc(r.auc_model)

    # calibration
    cal = _csv(dest, "calibration")
    sec = _section(cls, "### Calibration")
    for r in cal.itertuples(index=False):
        row = _row(sec, r.model)
        assert row[_col(sec, "model", "Brier")] == fmt_auc(r.brier), r.model
        assert row[_col(sec, "model", "ECE (10 bins)")] == fmt_auc(r.ece), r.model

    # predictive values at 1, 5 and 20 %
    prev = _csv(dest, "ppv_npv")
    sec = _section(cls, "### Predictive values at other prevalences")
    for m in dict.fromkeys(prev["model"]):
        row = _row(sec, m)
        for what in ("ppv", "npv"):
            for p in (0.01, 0.05, 0.20):
                r = prev[(prev["model"] == m) & np.isclose(prev["prevalence"], p)].iloc[0]
                col = _col(sec, "model", f"{what.upper()} at {100 * p:g} %")
                assert row[col] == fmt_pct(r[what], r[f"{what}_lo"], r[f"{what}_hi"]), (m, what, p)

    # claims ledger: the counts the summary states
    led = _section(text, "## Claims ledger")
    comp_l = pd.read_csv(dest / recomputed.TABLES["ledger_companion"], keep_default_na=False)
    n_ok = int((comp_l["consistent"].astype(str) == "True").sum())
    assert f"{n_ok} of {len(comp_l)} consistent" in led
    paper = pd.read_csv(dest / recomputed.TABLES["ledger_paper"], keep_default_na=False)
    n_flag = int((paper["consistent"].astype(str) == "False").sum())
    assert f"**Paper**: {n_flag} of {len(paper)} reported triples are flagged" in led


def formatted_intervals(dest: Path) -> list[str]:
    """The heat-share intervals as the summary prints them (to see that a seed changes them)."""
    hs = _csv(dest, "heat_share_ci")
    return [fmt_auc(r.mean, r.lo, r.hi) for r in hs.itertuples(index=False)]
