"""helpers.report.summary: the markdown results summary of a run, on the synthetic OUT_DIR of
test_evidence (every number parsed back and compared with the artefacts). The summary of the smoke
chain's own run is checked in tests/notebooks/test_smoke_chain.py."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_evidence as te  # noqa: E402

from helpers.evidence import recomputed as E  # noqa: E402
from helpers.report import formats as F  # noqa: E402
from helpers.report import summary as S  # noqa: E402


def _finished(out: Path) -> Path:
    """A synthetic run whose evidence tables are saved as notebook 06 saves them."""
    E.save_tables(E.evidence_tables(out, n_boot=200, seed=0), out / "figures")
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, str]:
    out = _finished(te.make_run(tmp_path_factory.mktemp("sum_synth")))
    return out, S.summary_markdown(out)


@pytest.fixture(scope="module")
def real_ext(tmp_path_factory) -> tuple[Path, str]:
    out = _finished(te.make_run(tmp_path_factory.mktemp("sum_real"), data="real", with_external=True))
    return out, S.summary_markdown(out, figures_rel="../figures")


def _section(text: str, name: str) -> str:
    m = re.search(rf"^## {re.escape(name)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert m, f"section {name!r} missing"
    return m.group(1)


def _row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no table row starting with {first_cell!r}")


def _pct(cell: str) -> float:
    return float(re.match(r"([\d.]+) %", cell).group(1))


def test_every_section_heading(synth, real_ext):
    for _, text in (synth, real_ext):
        heads = re.findall(r"^## (.+)$", text, flags=re.M)
        assert heads[:len(S.SECTIONS)] == S.SECTIONS
        assert "could not be built" not in text
    assert re.findall(r"^## (.+)$", real_ext[1], flags=re.M)[-1] == "Figures"
    assert "## Figures" not in synth[1]


def test_phantom_banner_only_for_synthetic(synth, real_ext):
    assert S.PHANTOM_BANNER in synth[1] and "plumbing, not science" in synth[1]
    assert "plumbing, not science" not in real_ext[1]
    assert "**The data are generated phantoms.**" in _section(synth[1], "Limitations")
    assert "real chest X-rays" in _section(real_ext[1], "What was run")


def test_revisions_describe_finished_stages(real_ext):
    out, text = real_ext
    sec = _section(text, "What was run")
    # a stale manifest of an earlier figures run must not be counted among the stages
    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / "run_manifest.json").write_text('{"git_revision": "0ld"}')
    try:
        sec2 = _section(S.summary_markdown(out), "What was run")
    finally:
        (out / "figures" / "run_manifest.json").unlink()
    assert "0ld" not in sec2 and "differ between stages" not in sec2
    from helpers.run.repro import git_revision
    assert f"written at revision `{git_revision()}`" in sec and "written at revision" in sec2


def test_table7_numbers_match(synth):
    out, text = synth
    t7 = pd.read_csv(out / "baselines/table7.csv").set_index("model")
    sec = _section(text, "Classification")
    for m in te.MODELS:
        row = _row(sec, m)
        assert _pct(row[2]) == pytest.approx(round(100 * t7.loc[m, "accuracy"], 1))
        assert _pct(row[3]) == pytest.approx(round(100 * t7.loc[m, "sensitivity"], 1))
        auc, lo, hi = map(float, re.match(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", row[5]).groups())
        assert (auc, lo, hi) == pytest.approx(tuple(round(t7.loc[m, c], 3) for c in
                                                    ("roc_auc", "roc_auc_lo", "roc_auc_hi")))


def test_table6_and_prevalence_numbers_match(synth):
    out, text = synth
    sec = _section(text, "Classification")
    ft = pd.read_csv(out / "hrnet/fold_table.csv")
    pooled = ft[ft.fold.astype(str) == "pooled"].iloc[0]
    row = _row(sec, "pooled")
    assert row[2] == f"{pooled.tp}/{pooled.fn}/{pooled.fp}/{pooled.tn}"
    assert _pct(row[5]) == pytest.approx(round(100 * pooled.sensitivity, 1))
    assert _row(sec, "1")[0] == "1"  # folds numbered from 1 as in the paper
    pt = E.prevalence_table(E.load_predictions(out), [0.01, 0.05, 0.20])
    prev_sec = sec[sec.index("### Predictive values"):]
    hdr = _row(prev_sec, "model")
    r = _row(prev_sec, "hrnet")
    want = pt[(pt.model == "hrnet")].set_index("prevalence")
    assert _pct(r[hdr.index("PPV at 5 %")]) == pytest.approx(round(100 * want.loc[0.05, "ppv"], 1))
    assert _pct(r[hdr.index("NPV at 20 %")]) == pytest.approx(round(100 * want.loc[0.20, "npv"], 1))
    cal_sec = sec[sec.index("### Calibration"):]
    cal = E.calibration(E.load_predictions(out))
    brier = cal.set_index("model").loc["hrnet", "brier"]
    assert float(_row(cal_sec, "hrnet")[4]) == pytest.approx(round(brier, 3))


def test_ledger_section(synth):
    out, text = synth
    sec = _section(text, "Claims ledger")
    flagged = re.search(r"\*\*Paper\*\*: (\d+) of (\d+) reported triples are flagged: (.*)\.", sec)
    names = set(flagged.group(3).split(", "))
    assert te.PAPER_FLAGGED <= names
    for n in te.PAPER_FLAGGED:
        assert "INCONSISTENT" in _row(sec, n)[3]
    comp = E.ledger_tables(out)["companion"]
    assert f"{len(comp)} of {len(comp)} consistent" in sec


def test_audits_saliency_and_limitations(synth):
    out, text = synth
    sec = _section(text, "Shortcut audits")
    at = pd.read_csv(out / "audits/audit_table.csv").set_index("audit")
    assert _row(sec, "source")[3].startswith(f"{at.loc['source', 'auc']:.3f}")
    assert "p = 0.020" in sec and "50 permutations" in sec
    sal = _section(text, "Saliency")
    hs = E.heat_share_ci(out, n_boot=200, seed=0)
    r = hs[(hs.quantity == "difference") & (hs.label == "all") & (hs.fold == "pooled")].iloc[0]
    assert F.fmt_auc(r["mean"], r.lo, r.hi) in sal
    assert "median 0.20" in sal  # randomisation check: median of linspace(0, 0.4, 9)
    lim = _section(text, "Limitations")
    cohort = pd.read_csv(out / "curation/cohort.csv")
    n = int(cohort[(cohort.label == "covid") & (cohort.source == "src-a")].images.iloc[0])
    assert "COVID and normal images come from different sources" in lim and f"src-a {n}" in lim
    assert "from scratch" in lim and "No clinical validation" in lim and "NIH" in lim
    assert "thresholds were chosen on inner validation splits".lower() in lim.lower()
    assert "No external validation" in lim


def test_external_section(synth, real_ext):
    assert "Not run" in _section(synth[1], "Held-out validation")
    out, text = real_ext
    sec = _section(text, "Held-out validation")
    et = pd.read_csv(out / "figures/external_table.csv")
    e = et[(et.fold.astype(str) == "mean") & (et.source == "all") & (et.model == "hrnet")].iloc[0]
    assert F.fmt_auc(e.auc, e.auc_lo, e.auc_hi) in sec
    assert "Not run" not in sec
    # internal (pooled OOF, Table 7) and external AUC side by side on one row per model
    t7 = pd.read_csv(out / "baselines/table7.csv").set_index("model")
    i = t7.loc["hrnet"]
    row = [ln for ln in sec.splitlines() if ln.startswith("| hrnet |")][0]
    assert F.fmt_auc(i.roc_auc, i.roc_auc_lo, i.roc_auc_hi) in row
    assert F.fmt_auc(e.auc, e.auc_lo, e.auc_hi) in row
    folds = et[(et.fold.astype(str) != "mean") & (et.source == "all") & (et.model == "hrnet")]
    assert all(f"{a:.3f}" in row for a in folds.auc)


def test_figure_links(synth, real_ext):
    assert "](../figures/ev_calibration.png)" in real_ext[1]
    assert "](../figures/table7_models.png)" in real_ext[1]
    assert "ev_calibration.png" not in synth[1]


def test_write_summary(synth, tmp_path):
    out, _ = synth
    p = S.write_summary(out, tmp_path / "docs", figures_rel="figs")
    assert p == tmp_path / "docs" / "SUMMARY.md" and "## Limitations" in p.read_text()
    q = S.write_summary(out, tmp_path / "x" / "results.md",
                        cfg_dict={"profile": {"name": "cpu", "data": "real"}, "data_dir": "/d"})
    assert q.name == "results.md" and "plumbing, not science" not in q.read_text()


def test_formats():
    assert F.fmt_pct(0.83, 0.745, 0.891) == "83.0 % [74.5, 89.1]"
    assert F.fmt_pct(float("nan")) == "n/a"
    assert F.fmt_auc(0.78912) == "0.789"
    assert F.fmt_auc(0.5, 0.4, 0.6) == "0.500 [0.400, 0.600]"


def test_missing_artefacts_do_not_crash(tmp_path):
    text = S.summary_markdown(tmp_path)
    for name in S.SECTIONS:
        assert f"## {name}" in text
    assert "is missing" in text


def test_external_section_reports_refinement_failures_and_the_sensitivity_analysis(tmp_path):
    from helpers import refine
    from helpers.evidence import heldout

    out = te.make_run(tmp_path / "run", data="real", with_external=True)
    ext = pd.read_csv(out / "baselines/external_preds.csv")
    ids = ext.drop_duplicates("image_id")
    failed = ids["image_id"].iloc[:3].tolist()
    src = ids["source"] if "source" in ids else "ext"
    ri = pd.DataFrame({"image_id": ids["image_id"], "patient_id": ids["patient_id"],
                       "label": ["covid" if v == 1 else "normal" for v in ids["y"]], "source": src,
                       "area": 1000, "threshold": 500, "passed": ~ids["image_id"].isin(failed)})
    ri.to_csv(out / "refine/ext_refine_index.csv", index=False)
    # the sensitivity set: the same films plus the failed ones scored anyway
    extra = ext[ext["image_id"].isin(failed)].assign(set="external_all")
    allset = pd.concat([ext.assign(set="external_all"), extra.assign(image_id=extra["image_id"] + "_f")])
    ea = heldout.table(allset, n_boot=50, seed=0, set_name="external_all")
    ea.to_csv(out / "figures/external_table_all.csv", index=False)
    sec = _section(S.summary_markdown(out), "Held-out validation")
    assert f"3 of {len(ri)} held-out films failed the lung-area check" in sec
    rc = refine.refine_counts(ri)
    for r in rc[(rc["label"] != "all") & (rc["failed"] > 0)].itertuples():
        assert f"| {r.source} | {r.label} | {r.total} | {r.passed} | {r.failed} |" in sec
    e = ea[(ea.fold.astype(str) == "mean") & (ea.source == "all") & (ea.model == "hrnet")].iloc[0]
    assert "Sensitivity analysis" in sec and F.fmt_auc(e.auc, e.auc_lo, e.auc_hi) in sec


def test_settings_table_compares_the_data_with_the_papers(tmp_path):
    """The data rows: COVID and non-COVID films by source, curated and kept, and the mask pairs."""
    (tmp_path / "curation").mkdir()
    (tmp_path / "refine").mkdir()
    pd.DataFrame({"role": ["classify"] * 3 + ["segment"], "label": ["covid", "normal", "pneumonia", "-"],
                  "source": ["ieee8023", "nih-cxr8", "ieee8023", "jsrt-scr"], "images": [30, 20, 5, 12]}
                 ).to_csv(tmp_path / "curation/cohort.csv", index=False)
    pd.DataFrame({"label": ["covid"] * 30 + ["normal"] * 20 + ["pneumonia"] * 5,
                  "passed": [True] * 28 + [False] * 2 + [True] * 25}
                 ).to_csv(tmp_path / "refine/refine_index.csv", index=False)
    rows = {r["setting"]: r for r in S.data_rows(S.Run(tmp_path, None, None))}
    assert rows["COVID films (sources)"]["run"] == "ieee8023 30"
    assert rows["COVID films after refinement"]["run"] == "30 curated, 28 kept"
    assert rows["COVID films after refinement"]["paper"] == "410"
    assert rows["non-COVID films (sources)"]["run"] == "nih-cxr8 20, ieee8023 5"
    assert rows["non-COVID films after refinement"]["run"] == "25 curated, 25 kept"
    assert rows["lung-mask pairs (UNet)"]["run"] == "12 (jsrt-scr 12)"
    assert S.data_rows(S.Run(tmp_path / "missing", None, None)) == []
