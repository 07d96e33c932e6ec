"""helpers.report.render and the templates of SUMMARY.md and MODEL_CARD.md (helpers/report/templates):
every template renders under StrictUndefined for the synthetic runs of test_evidence, the fixture
documents have no section that failed, a failing part is isolated, the number formatters of
helpers.report.formats, and the templates ship as package data."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jinja2
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_evidence as te  # noqa: E402

from helpers.evidence import recomputed as E  # noqa: E402
from helpers.report import formats as F  # noqa: E402
from helpers.report import model_card as MC  # noqa: E402
from helpers.report import render  # noqa: E402
from helpers.report import summary as S  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FRAMES = {"summary.md.j2", "model_card.md.j2", "macros.md.j2", "failed.md.j2"}


def bundle_meta(run: Path) -> dict:
    """A ``bundle.json`` as :func:`helpers.deploy.bundle.export` writes it, for a run without weights."""
    idx = pd.read_csv(run / "curation/cls_index.csv")
    sources = [{"source": s, "label": lab, "license": "CC BY 4.0", "registry_licence": "", "homepage": "",
                "images": len(d), "images_used": len(d), "patients": d.patient_id.nunique()}
               for (s, lab), d in idx.groupby(["source", "label"])]
    fold = {"architecture": "hrnet_w18_small", "input": "segmented", "decision_rule": "median",
            "folds": [{"fold": 0, "threshold": 0.4}, {"fold": 1, "threshold": 0.55}],
            "decision_threshold": 0.475}
    return {"format": "hrnet-cxr-bundle/1", "created_utc": "2026-01-01T00:00:00Z", "default_model": "hrnet",
            "profile": {"name": "smoke", "cls_size": 64, "seg_size": 64, "unet_arch": "unet",
                        "unet_base_channels": 8},
            "classifiers": {"hrnet": fold}, "weights": {"unet": [{"fold": 0}]},
            "refinement": {"dilate_iters": 1, "close_iters": 1, "dilate_iters_at_512": 8,
                           "close_iters_at_512": 2, "area_threshold_px": 781, "area_threshold_512": 50000},
            "provenance": {"export_git_revision": "abc", "stage_git_revisions": {"hrnet": "abc"},
                           "data_sources": sources, "run_config": None},
            "preprocessing": {"reader": "read_image", "geometry": "square", "seg_size": 64, "cls_size": 64,
                              "classifier_input": "uint8 / 255"},
            "ood": {"features": {"mean": {"what": "mean grey", "lo": 0.1, "hi": 0.9, "median": 0.5}},
                    "n_images": 86, "share_flagged": 0.02}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    out = []
    for name, kw in (("synth", {}), ("real_ext", dict(data="real", with_external=True))):
        run = te.make_run(tmp_path_factory.mktemp(name), **kw)
        E.save_tables(E.evidence_tables(run, n_boot=50, seed=0), run / "figures")
        out.append(run)
    return out


def test_environment_is_strict_and_writes_markdown():
    env = render.environment()
    assert env.undefined is jinja2.StrictUndefined and not env.autoescape
    assert env.trim_blocks and env.lstrip_blocks and env.keep_trailing_newline
    with pytest.raises(jinja2.UndefinedError):  # a context without the part's rows
        render.render("summary/table7.md.j2", figures_rel=None)


def test_every_part_has_its_template_and_no_template_is_orphaned():
    parts = {f"summary/{n}.md.j2" for n in S.PARTS} | {f"model_card/{n}.md.j2" for n in MC.PARTS}
    assert set(render.environment().list_templates()) == parts | FRAMES
    assert {n.removeprefix("summary/") for _, names in MC.SECTIONS for n in names if "/" in n} <= set(S.PARTS)


def test_every_template_renders_for_the_fixture_runs(runs):
    """No isolation here: a name a template uses and its context lacks raises."""
    for run_dir in runs:
        run = S.Run(run_dir, None, "figs")
        for name, context in S.PARTS.items():
            text = render.render(f"summary/{name}.md.j2", figures_rel=run.figures_rel, **context(run))
            assert text.endswith("\n") or text == "", name
        meta = bundle_meta(run_dir)
        for name, context in MC.PARTS.items():
            assert render.render(f"model_card/{name}.md.j2", **context(run, meta)).endswith("\n"), name
    failed = render.isolated(lambda: 1 / 0)
    assert failed == "_This section could not be built: ZeroDivisionError: division by zero_\n"


def test_no_section_of_the_fixture_documents_fails(runs):
    for run_dir in runs:
        for text in (S.summary_markdown(run_dir), S.summary_markdown(run_dir, figures_rel="figs"),
                     MC.model_card_markdown(run_dir, bundle_meta(run_dir))):
            assert "could not be built" not in text and "\n\n\n" not in text
        card = MC.model_card_markdown(run_dir, bundle_meta(run_dir))
        assert [h for h in card.splitlines() if h.startswith("## ")] == [f"## {t}" for t, _ in MC.SECTIONS]


def test_the_card_scores_the_shipped_rule_on_the_held_out_films(runs):
    """The card's shipped-rule section: the bundle's own rule (mean of the fold probabilities at
    its one threshold) on the run's held-out films, recomputed here from the stored predictions;
    a run without held-out films says that the rule has no measured performance."""
    from helpers.evidence import heldout

    def section(run_dir):
        card = MC.model_card_markdown(run_dir, bundle_meta(run_dir))
        return card.split("## Performance of the shipped decision rule\n")[1].split("\n## ")[0]

    synth, real_ext = runs
    assert "no measured performance" in section(synth)
    sec = section(real_ext)
    assert "no measured performance" not in sec
    preds = pd.read_csv(real_ext / "baselines/external_preds.csv")
    threshold = bundle_meta(real_ext)["classifiers"]["hrnet"]["decision_threshold"]
    t = heldout.shipped_rule(preds, "hrnet", threshold, n_boot=1000, seed=0).set_index("source")
    row = t.loc["all"]
    assert f"| all | {F.counts(row['n'], row['n_pos'], row['n_neg'])} | " \
           f"{F.fmt_auc(row['auc'], row['auc_lo'], row['auc_hi'])} |" in sec
    assert len(t) > 1 and all(f"| {src} |" in sec for src in t.index)
    card = MC.model_card_markdown(real_ext, bundle_meta(real_ext))
    caveats = card.split("## Key caveats\n")[1].split("\n## ")[0]
    for src, r in t[(t.index != "all") & (t["n_neg"] > 0)].iterrows():  # the rule's share per site
        share = F.fmt_pct(1 - r["specificity"], 1 - r["specificity_hi"], 1 - r["specificity_lo"])
        assert f"{share} ({F.num(r['fp'])} of {F.num(r['n_neg'])}) of {src}'s non-COVID films" in caveats


def test_a_failing_part_is_isolated(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs[0], run)
    ft = pd.read_csv(run / "hrnet/fold_table.csv")
    ft.drop(columns=["tp"]).to_csv(run / "hrnet/fold_table.csv", index=False)
    text = S.summary_markdown(run)
    failed = [s for s in S.SECTIONS if "could not be built" in text.split(f"## {s}\n")[1].split("\n## ")[0]]
    assert failed == ["Classification"]
    card = MC.model_card_markdown(run, bundle_meta(run))
    internal = card.split("## Internal performance (per-fold, out-of-fold)\n")[1].split("\n## ")[0]
    # Table 6 alone fails
    assert "_This section could not be built: " in internal and "### Table 7" in internal
    assert card.count("could not be built") == 1


def test_formats():
    assert F.fmt_pct(0.83, 0.745, 0.891) == "83.0 % [74.5, 89.1]" and F.fmt_pct(0.5, unit="") == "50.0"
    assert F.fmt_pct(0.5, 0.4, float("nan")) == "50.0 %" and F.fmt_auc(None) == "n/a"
    assert F.fmt_p(0.0004) == "< 0.001" and F.fmt_p(0.02) == "0.020" and F.fmt_p("x") == "n/a"
    assert F.num(12.0) == "12" and F.counts(86, 41, 45.0) == "86 (41/45)" and F.fixed(0.41234) == "0.412"
    assert F.fixed(float("inf"), 2) == "n/a" and F.thousands(50000) == "50,000"
    assert F.setting([]) == "none" and F.setting([30, 60]) == "30, 60" and F.setting(True) == "True"
    df = pd.DataFrame({"a": ["x|y", None], "b": [0.5, float("nan")], "c": [3, 4]})
    assert F.md_table(df) == "| a | b | c |\n|---|---|---|\n| x\\|y | 0.5 | 3 |\n|  |  | 4 |"
    assert F.md_table(pd.DataFrame()) == F.md_table([]) == "_(no rows)_"
    assert [F.figure_cell(v) for v in (0.5, 0.0004567, 12.3456, float("nan"), "a")] == [
        "0.5", "0.000457", "12.346", "", "a"]


def test_templates_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setuptools["package-data"]["helpers"]
    pkg = ROOT / "src" / "helpers"
    shipped = {p for g in globs for p in pkg.glob(g)}
    assert set((pkg / "report" / "templates").rglob("*.j2")) <= shipped
