"""helpers.evidence.recomputed on a tiny synthetic OUT_DIR (real column schemas, predictions from a known
generator), checked against direct computations; and the evidence figures of helpers.report.plots drawn
from its tables. The same checks on the smoke chain's own run: tests/notebooks/test_smoke_chain.py."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from helpers.evidence import audits, heldout, metrics
from helpers.evidence import recomputed as E
from helpers.report import figures, plots

MODELS = {"hrnet": 1.0, "hrnet_unsegmented": 1.4, "densenet121": 0.6, "resnet18": 0.0}
EVIDENCE_FIGURES = ["ev_calibration.png", "ev_ppv_npv.png", "ev_auc_forest.png", "ev_heat_share.png",
                    "ev_audits.png"]
PAPER_FLAGGED = {"Table 6 fold 1", "Table 6 fold 3", "Table 6 fold 4", "Table 6 fold 8",
                 "Table 6 fold 10", "Table 7 EfficientNetB4"}


# --------------------------------------------------------------------------------------------
# a synthetic run
# --------------------------------------------------------------------------------------------
def _profile(data: str) -> dict:
    return {"name": "smoke" if data == "synthetic" else "cpu", "data": data, "seg_size": 64,
            "seg_folds": 3, "unet_epochs": 25, "unet_base_channels": 8, "cls_size": 64, "n_folds": 3,
            "hrnet": "hrnet_w18_small", "cls_epochs": 8, "cls_batch": 16, "lr_milestones": [],
            "cls_augment": False, "baselines": ["resnet18", "densenet121"],
            "shortcut_strength": 0.9, "finding_contrast": 4.0}


def _index(n_patients: int, seed: int, prefix: str = "p") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        y = i % 2
        if y:
            src = "src-a" if rng.random() < 0.9 else "src-b"
        else:
            src = "src-b" if rng.random() < 0.9 else "src-a"
        for j in range(int(rng.integers(1, 3))):
            rows.append(dict(image_id=f"{'covid' if y else 'normal'}/{prefix}{i:03d}_{j}",
                             patient_id=f"{prefix}{i:03d}", label="covid" if y else "normal", y=y,
                             source=src, view=str(rng.choice(["AP", "PA"])), fold=i % 3))
    return pd.DataFrame(rows)


def _preds(idx: pd.DataFrame, seed: int, set_name: str = "oof", fold_models=None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    parts = []
    for k, (m, s) in enumerate(MODELS.items()):
        for fm in (fold_models if fold_models is not None else [None]):
            z = s * (2 * idx["y"].to_numpy() - 1) + rng.normal(size=len(idx))
            p = idx[["image_id", "patient_id", "source", "view", "label", "fold"]].copy()
            if fm is not None:
                p["fold"] = fm
            p["set"] = set_name
            p["y"] = idx["y"].to_numpy()
            p["prob"] = 1 / (1 + np.exp(-z))
            p["threshold"] = 0.5 if m != "hrnet" else np.where(p["fold"] == 0, 0.4, 0.55)
            p["pred"] = (p["prob"] >= p["threshold"]).astype(int)
            p["model"] = m
            parts.append(p)
    return pd.concat(parts, ignore_index=True)


def _manifest(stage: str, data: str, **extra) -> dict:
    return {"stage": stage, "git_revision": "abc123", "profile": _profile(data)["name"],
            "config": {"profile": _profile(data), "data_dir": None if data == "synthetic" else "/data/cxr",
                       "out_dir": "/x", "seed": 0, "external_data_dir": None, "overrides": {}},
            "seed": 0, "packages": {"numpy": "2.0", "torch": "2.14.1"},
            "device": {"cpu_count": 2, "cuda": False, "platform": "Linux", "python": "3.11",
                       "torch_threads": 2},
            "timings_s": {"train": 10.0, "total": 12.5}, "finished_utc": "2026-01-01T00:00:00Z", **extra}


def make_run(root: Path, data: str = "synthetic", with_external: bool = False, seed: int = 0) -> Path:
    """A complete OUT_DIR with every artefact the evidence and summary modules read."""
    out = Path(root)
    for s in ("curation", "unet", "refine", "hrnet/folds", "baselines", "audits", "figures"):
        (out / s).mkdir(parents=True, exist_ok=True)
    idx = _index(60, seed)
    cls = idx.assign(group_id=idx["patient_id"], split_role="classify", file="x.png")
    cls.to_csv(out / "curation/cls_index.csv", index=False)
    co = (cls.groupby(["label", "source"])
          .agg(images=("image_id", "size"), patients=("patient_id", "nunique"))
          .reset_index())
    co.insert(0, "role", "classify")
    co["views"], co["female_%"], co["age_median"], co["age_known"] = "AP 1", 50.0, 40.0, co["images"]
    co.to_csv(out / "curation/cohort.csv", index=False)
    pd.DataFrame([dict(source="src", step="decode", n_in=len(cls) + 3, n_kept=len(cls), n_removed=3,
                       reason="unreadable")]).to_csv(out / "curation/flow.csv", index=False)
    pd.DataFrame([dict(source="src", row_id=i, source_path=f"bad{i}.png", step="decode",
                       reason="unreadable") for i in range(3)]).to_csv(out / "curation/excluded.csv",
                                                                       index=False)
    pd.DataFrame([dict(path_a="a.png", path_b="b.png", source_a="src-a", source_b="src-b", patient_a="p1",
                       patient_b="p2", label_a="covid", label_b="covid", hamming=2, dhash_hamming=3,
                       corr=0.99, detail_corr=0.98, same_patient=False, cross_source=True,
                       conflicting_label=False)]
                 ).to_csv(out / "curation/duplicates.csv", index=False)
    fs = cls.groupby("fold").apply(lambda d: pd.Series(dict(images_covid=int(d.y.sum()),
                                                            images_normal=int((1 - d.y).sum()),
                                                            patients=d.patient_id.nunique())),
                                   include_groups=False).reset_index()
    fs.to_csv(out / "curation/folds_summary.csv", index=False)
    dice = pd.DataFrame(dict(image_id=[f"seg{i}" for i in range(12)], patient_id=[f"s{i}" for i in range(12)],
                             source="seg", fold=[i % 3 for i in range(12)], dice=np.linspace(0.8, 0.95, 12)))
    dice.to_csv(out / "unet/dice.csv", index=False)
    pd.DataFrame([dict(group="all", name="all", n=12, dice_mean=dice.dice.mean(), dice_sd=dice.dice.std(),
                       dice_min=dice.dice.min())]).to_csv(out / "unet/dice_table.csv", index=False)
    (out / "unet/external_dice.csv").write_text("\n")
    ri = cls[["image_id", "patient_id", "label", "source", "fold"]].assign(area=1000, passed=True)
    ri.to_csv(out / "refine/refine_index.csv", index=False)
    pd.DataFrame([dict(label="all", total=len(ri), passed=len(ri), failed=0, **{"kept_%": 100.0})]).to_csv(
        out / "refine/pass_counts.csv", index=False)

    allp = _preds(idx, seed + 1)
    allp.to_csv(out / "baselines/all_preds.csv", index=False)
    hr = allp[allp.model == "hrnet"]
    hr.to_csv(out / "hrnet/folds/preds.csv", index=False)
    metrics.fold_table(hr).to_csv(out / "hrnet/fold_table.csv", index=False)
    t7 = metrics.summarise_models(allp, n_boot=200, seed=0)
    t7.to_csv(out / "baselines/table7.csv", index=False)
    if with_external:
        ext_idx = _index(24, seed + 5, prefix="e")
        ext = _preds(ext_idx, seed + 2, set_name="external", fold_models=[0, 1, 2])
        ext.to_csv(out / "baselines/external_preds.csv", index=False)
        heldout.table(pd.concat([allp, ext]), n_boot=100).to_csv(out / "figures/external_table.csv",
                                                                  index=False)
    else:
        pd.DataFrame(columns=allp.columns).to_csv(out / "baselines/external_preds.csv", index=False)
        (out / "figures/external_table.csv").write_text("\n")

    rng = np.random.default_rng(seed + 3)
    area = rng.uniform(0.15, 0.25, len(idx))
    base = idx[["image_id", "patient_id", "fold", "label", "source"]]
    seg = base.assign(model="hrnet (segmented)",
                      share_lung=np.clip(area + 0.2 + rng.normal(0, 0.03, len(idx)), 0, 1),
                      area_lung=area)
    seg.loc[3, "share_lung"] = np.nan
    unseg = base.assign(model="hrnet (unsegmented)", share_lung=np.clip(area + rng.normal(0, 0.03, len(idx)),
                                                                        0, 1),
                        area_lung=area)
    seg.to_csv(out / "hrnet/heat_share.csv", index=False)
    unseg.to_csv(out / "baselines/heat_share.csv", index=False)
    pd.DataFrame(dict(image_id=idx.image_id[:10], label=idx.label[:10],
                      spearman_trained_vs_random=np.r_[np.linspace(0.0, 0.4, 9), np.nan])).to_csv(
        out / "hrnet/randomisation_check.csv", index=False)

    ap = {}
    for key, s in (("source", 3.0), ("lowlevel", 2.0), ("permuted_labels", 0.0)):
        p = _preds(idx, seed + 7)
        p = p[p.model == "resnet18"].copy()
        z = s * (2 * p["y"].to_numpy() - 1) + np.random.default_rng(seed + 11).normal(size=len(p))
        p["prob"], p["model"] = 1 / (1 + np.exp(-z)), f"audit_{key}"
        ap[key] = p
    at = audits.audit_table(ap, n_boot=200)
    at.to_csv(out / "audits/audit_table.csv", index=False)
    pd.concat(ap.values()).to_csv(out / "audits/audit_preds.csv", index=False)
    audits.stratified_table(allp).to_csv(out / "audits/stratified.csv", index=False)
    (out / "audits/permutation_null.json").write_text(json.dumps(dict(
        n_perm=50, null_aucs=list(np.linspace(0.4, 0.6, 50)), null_mean=0.5, null_q95=0.59,
        observed_auc=0.93, p_value=1 / 51)))
    pd.DataFrame([dict(file="table7_models.png", paper="Table 7", notebook="05", profile="smoke", data="x",
                       git_revision="abc123", caption="c")]).to_csv(out / "figures/index.csv", index=False)
    for s in ("curation", "unet", "refine", "hrnet", "baselines", "audits"):
        (out / s / "run_manifest.json").write_text(json.dumps(_manifest(s, data)))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def run_ext(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run_ext"), with_external=True)


@pytest.fixture(scope="module")
def preds(run_dir) -> pd.DataFrame:
    return E.load_predictions(run_dir)


# --------------------------------------------------------------------------------------------
# 1. loading
# --------------------------------------------------------------------------------------------
def test_load_predictions_without_and_with_external(run_dir, run_ext):
    p = E.load_predictions(run_dir)
    allp = pd.read_csv(run_dir / "baselines/all_preds.csv")
    assert len(p) == len(allp) and set(p["set"]) == {"oof"}
    q = E.load_predictions(run_ext)
    ext = pd.read_csv(run_ext / "baselines/external_preds.csv")
    assert len(q) == len(allp) + len(ext)
    assert set(q["set"]) == {"oof", "external"}
    with pytest.raises(FileNotFoundError, match="05_baseline_comparison"):
        E.load_predictions(run_dir / "nowhere")


# --------------------------------------------------------------------------------------------
# 2. calibration
# --------------------------------------------------------------------------------------------
def test_calibration_matches_sklearn_and_a_direct_ece(preds):
    table = E.calibration(preds, n_bins=10)
    assert isinstance(plots.calibration_plot(table, E.reliability(preds)), matplotlib.figure.Figure)
    assert list(table["model"]) == ["hrnet", "hrnet_unsegmented", "densenet121", "resnet18"]
    for r in table.itertuples(index=False):
        d = preds[(preds.model == r.model) & (preds.set == "oof")]
        assert r.brier == pytest.approx(brier_score_loss(d.y, d.prob), abs=1e-12)
        b = np.minimum((d.prob.to_numpy() * 10).astype(int), 9)
        yy, pp = d.y.to_numpy(), d.prob.to_numpy()
        ece = sum((b == k).sum() / len(d) * abs(yy[b == k].mean() - pp[b == k].mean())
                  for k in range(10) if (b == k).any())
        assert r.ece == pytest.approx(ece, abs=1e-12)
        assert r.mean_prob == pytest.approx(d.prob.mean())
    rel = E.reliability(preds)
    assert rel.groupby("model")["n"].sum().eq(table.set_index("model")["n"]).all()


def test_calibration_drops_nan_probabilities(preds):
    p = preds.copy()
    p.loc[p.index[:3], "prob"] = np.nan
    table = E.calibration(p)
    row = table[table.model == p.loc[p.index[0], "model"]].iloc[0]
    assert row.n_missing == 3 and "NaN" in row.note


# --------------------------------------------------------------------------------------------
# 3. PPV / NPV at prevalence
# --------------------------------------------------------------------------------------------
def test_prevalence_table_is_bayes_rule_on_the_pooled_matrix(preds):
    prev = np.linspace(0.01, 0.20, 20)
    table = E.prevalence_table(preds, prev)
    assert isinstance(plots.prevalence_plot(table), matplotlib.figure.Figure)
    assert len(table) == 20 * len(MODELS)
    for m in MODELS:
        d = preds[(preds.model == m) & (preds.set == "oof")]
        pred = (d.prob >= d.threshold).to_numpy()
        y = d.y.to_numpy() == 1
        se, sp = (pred & y).sum() / y.sum(), (~pred & ~y).sum() / (~y).sum()
        t = table[table.model == m]
        for p, ppv, npv in zip(t.prevalence, t.ppv, t.npv):
            assert ppv == pytest.approx(se * p / (se * p + (1 - sp) * (1 - p)))
            assert npv == pytest.approx(sp * (1 - p) / (sp * (1 - p) + (1 - se) * p))
        assert (t.ppv_lo <= t.ppv + 1e-12).all() and (t.ppv <= t.ppv_hi + 1e-12).all()
        assert (t.npv_lo <= t.npv + 1e-12).all() and (t.npv <= t.npv_hi + 1e-12).all()
        assert t.study_prevalence.iloc[0] == pytest.approx(y.mean())
    h = table[table.model == "hrnet"]
    assert 0 < h.specificity.iloc[0] < 1 and (h.ppv.diff().dropna() > 0).all()  # PPV rises with prevalence


# --------------------------------------------------------------------------------------------
# 4. comparisons
# --------------------------------------------------------------------------------------------
def test_comparisons_against_sklearn(preds):
    c = E.comparisons(preds, reference="hrnet", n_boot=200)
    assert list(c["model"]) == ["hrnet_unsegmented", "densenet121", "resnet18"]
    d = preds[preds.set == "oof"]
    auc = {m: roc_auc_score(g.y, g.prob) for m, g in d.groupby("model")}
    for r in c.itertuples(index=False):
        assert r.auc_reference == pytest.approx(auc["hrnet"])
        assert r.auc_model == pytest.approx(auc[r.model])
        assert r.auc_diff == pytest.approx(auc["hrnet"] - auc[r.model])
        assert r.auc_diff_lo <= r.auc_diff <= r.auc_diff_hi
    # the known generator: hrnet (signal 1.0) beats resnet18 (no signal) clearly
    assert c.set_index("model").loc["resnet18", "auc_p"] < 0.01
    boot = E.comparisons(preds, method="bootstrap", n_boot=200, seed=1)
    assert boot["auc_diff"].to_numpy() == pytest.approx(c["auc_diff"].to_numpy())


def test_comparisons_missing_reference_and_misaligned_model(preds):
    assert E.comparisons(preds[preds.model != "hrnet"]).empty
    p = preds.drop(preds[(preds.model == "resnet18")].index[:5])
    c = E.comparisons(p, n_boot=50).set_index("model")
    assert c.loc["resnet18", "note"].startswith("skipped")
    assert np.isfinite(c.loc["densenet121", "auc_diff"])


# --------------------------------------------------------------------------------------------
# 5. forest
# --------------------------------------------------------------------------------------------
def test_auc_forest_internal_and_external(run_dir, run_ext):
    t7 = pd.read_csv(run_dir / "baselines/table7.csv")
    fig = plots.auc_forest(t7, order=E.model_order(t7["model"]))
    assert len(fig.axes[0].containers) == len(t7)
    labels = [t.get_text().split()[0] for t in fig.axes[0].get_yticklabels()]
    assert labels == E.model_order(t7["model"])  # drawn top to bottom in the given order
    ext = pd.read_csv(run_ext / "figures/external_table.csv")
    fig2 = plots.auc_forest(pd.read_csv(run_ext / "baselines/table7.csv"), ext)
    mixed = ext[(ext["fold"].astype(str) == "mean") & (ext["source"] != "all")
                & (ext["n_pos"] > 0) & (ext["n_neg"] > 0)]  # one row per model and held-out source
    assert len(fig2.axes[0].containers) == 2 * len(t7) + len(mixed)
    assert isinstance(plots.auc_forest(t7, pd.DataFrame()), matplotlib.figure.Figure)


def test_auc_forest_gives_each_mixed_held_out_source_a_row(run_ext):
    """Every held-out source that gave both classes, however few films, gets a row per model,
    labelled with the share of its non-COVID films called COVID; a source of one class gets none."""
    t7 = pd.read_csv(run_ext / "baselines/table7.csv")
    ext = pd.read_csv(run_ext / "figures/external_table.csv")
    mean = ext[(ext["fold"].astype(str) == "mean") & (ext["source"] != "all")]
    both = mean[(mean["n_pos"] > 0) & (mean["n_neg"] > 0)]
    assert len(both) and (both["n_neg"] < plots.FOREST_MIN_PER_CLASS).any()  # src-a: 4 negatives
    fig = plots.auc_forest(t7, ext)
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels() if " · held-out " in t.get_text()]
    assert len(rows) == len(both)
    hr = both[(both["source"] == "src-a") & (both["model"] == "hrnet")].iloc[0]
    called = 1 - hr["specificity"]
    assert any(r.startswith("hrnet · held-out src-a") and f"non-COVID called COVID {called:.0%}" in r
               for r in rows)
    one_class = ext.copy()
    one_class.loc[one_class["source"] == "src-a", "n_neg"] = 0
    fig0 = plots.auc_forest(t7, one_class)
    rows0 = [t.get_text() for t in fig0.axes[0].get_yticklabels() if " · held-out " in t.get_text()]
    assert not any("src-a" in r for r in rows0)
    assert len(fig.axes[0].containers) == len(fig0.axes[0].containers) + len(rows) - len(rows0)


# --------------------------------------------------------------------------------------------
# 6. ledger
# --------------------------------------------------------------------------------------------
def test_ledger_paper_flags_and_companion_consistent(run_dir):
    lt = E.ledger_tables(run_dir)
    paper, comp = lt["paper"], lt["companion"]
    flagged_single = {n for n, k, v in zip(paper.name, paper.kind, paper.consistent)
                      if v is False and k == "single"}
    assert flagged_single == PAPER_FLAGGED
    assert len(comp) == 3 + 1 + 1 + len(MODELS)  # 3 folds, pooled, mean, Table 7 rows
    assert all(v is True for v in comp["consistent"]), comp[["name", "reason"]]
    t7 = pd.read_csv(run_dir / "baselines/table7.csv").set_index("model")
    row = comp[comp.name == "companion Table 7 hrnet pooled"].iloc[0]
    assert row.accuracy == pytest.approx(round(100 * t7.loc["hrnet", "accuracy"], 2))
    assert row.n_pos == t7.loc["hrnet", "n_pos"]


def test_ledger_with_a_one_class_fold(tmp_path):
    out = make_run(tmp_path)
    p = pd.read_csv(out / "hrnet/folds/preds.csv")
    p = p[~((p.fold == 2) & (p.y == 0))]  # fold index 2 (printed "fold 3") now has positives only
    metrics.fold_table(p).to_csv(out / "hrnet/fold_table.csv", index=False)
    comp = E.ledger_tables(out)["companion"]
    assert not comp.name.str.contains("fold 3").any()
    assert comp.name.str.contains("HRNet fold 1").any() and comp.name.str.contains("HRNet fold 2").any()
    assert not comp.name.str.contains("mean").any()
    assert all(v is True for v in comp["consistent"])


# --------------------------------------------------------------------------------------------
# 7. heat share
# --------------------------------------------------------------------------------------------
def test_heat_share_ci_numbers(run_dir):
    t = E.heat_share_ci(run_dir, n_boot=300, seed=0)
    assert list(t.columns) == E.HEAT_COLUMNS
    seg = pd.read_csv(run_dir / "hrnet/heat_share.csv")
    uns = pd.read_csv(run_dir / "baselines/heat_share.csv")
    r = t[(t.quantity == "share_lung") & (t.model == "hrnet (segmented)") & (t.label == "all")
          & (t.fold == "pooled")].iloc[0]
    assert r["mean"] == pytest.approx(seg.share_lung.mean())  # pandas skips the NaN
    assert r.n_missing == 1 and r.n_images == len(seg) - 1
    assert r.chance == pytest.approx(seg.area_lung[seg.share_lung.notna()].mean())
    assert r.lo < r["mean"] < r.hi and r.n_patients == seg.patient_id[seg.share_lung.notna()].nunique()
    c = t[(t.quantity == "share_lung") & (t.model == "hrnet (unsegmented)") & (t.label == "covid")
          & (t.fold == "1")].iloc[0]
    sel = uns[(uns.label == "covid") & (uns.fold == 1)]
    assert c["mean"] == pytest.approx(sel.share_lung.mean()) and c.n_images == len(sel)
    d = t[(t.quantity == "difference") & (t.label == "all") & (t.fold == "pooled")].iloc[0]
    m = seg.merge(uns, on="image_id")
    assert d["mean"] == pytest.approx((m.share_lung_x - m.share_lung_y).mean())
    assert 0.15 < d.lo < d["mean"] < d.hi < 0.25  # generator: +0.2 inside the lungs when segmented
    assert isinstance(plots.heat_share_plot(t), matplotlib.figure.Figure)


def test_heat_share_missing_tables(tmp_path):
    assert E.heat_share_ci(tmp_path).empty
    assert isinstance(plots.heat_share_plot(E.heat_share_ci(tmp_path)), matplotlib.figure.Figure)


# --------------------------------------------------------------------------------------------
# 8-9. audits and everything
# --------------------------------------------------------------------------------------------
def test_audit_figure(run_dir):
    at = pd.read_csv(run_dir / "audits/audit_table.csv")
    null = json.loads((run_dir / "audits/permutation_null.json").read_text())
    fig = plots.audit_plot(at, null, descriptions=audits.short_descriptions())
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert any(lab.startswith("source") for lab in labels) and len(labels) == len(at)
    assert audits.short_descriptions()["source"] in [t.get_text() for t in fig.axes[0].texts]
    assert isinstance(plots.audit_plot(pd.DataFrame()), matplotlib.figure.Figure)


def _cfg(out: Path) -> SimpleNamespace:
    """The two things the figure builders ask of a RunConfig (the profile comes from the manifests)."""
    return SimpleNamespace(out_dir=out, to_dict=lambda: None)


def test_evidence_tables_saved_and_read_back_unchanged(run_dir, tmp_path):
    tables = E.evidence_tables(run_dir, n_boot=100, seed=3)
    assert list(tables) == list(E.TABLES)
    paths = E.save_tables(tables, tmp_path)
    assert sorted(p.name for p in paths) == sorted(E.TABLES.values())
    back = E.read_tables(tmp_path)
    for name, df in tables.items():
        got = back[name]
        assert list(got.columns) == list(df.columns) and len(got) == len(df), name
        for c in df.columns:
            a, b = df[c].tolist(), got[c].tolist()
            if any(isinstance(v, str) for v in a):  # text: None / NaN come back as ""
                assert b == ["" if v is None or v != v else v for v in a], (name, c)
            elif any(isinstance(v, (bool, np.bool_)) for v in a):  # the ledger's True / False / None
                assert b == [None if v is None else bool(v) for v in a], (name, c)
            else:  # numbers, bit for bit (NaN where they were missing)
                np.testing.assert_array_equal(pd.to_numeric(got[c]).to_numpy(float),
                                              pd.to_numeric(df[c]).to_numpy(float), err_msg=f"{name}.{c}")
    led = back["ledger_paper"]
    assert {type(v) for v in led["consistent"]} <= {bool, type(None)}  # `is False` works after a round trip
    assert set(back["heat_share_ci"]["fold"]) == set(tables["heat_share_ci"]["fold"])
    assert E.read_table(tmp_path / "nowhere", "calibration") is None
    with pytest.raises(KeyError, match="unknown evidence tables"):
        E.save_tables({"calibrations": tables["calibration"]}, tmp_path)


def test_evidence_figures_from_saved_tables(run_dir, run_ext, tmp_path):
    for out in (run_dir, run_ext):
        E.save_tables(E.evidence_tables(out, n_boot=100), tmp_path / out.name)
        recs = figures.evidence_records(_cfg(out), E.read_tables(tmp_path / out.name))
        assert [r.file for r in recs] == EVIDENCE_FIGURES
        assert all("generated phantoms" in r.caption for r in recs)
        assert all(isinstance(r.fig, matplotlib.figure.Figure) for r in recs)
    # without saved tables only the figures of stage tables remain (Table 7, the audits)
    none = figures.evidence_records(_cfg(run_dir), E.read_tables(tmp_path / "nowhere"))
    assert [r.file for r in none] == ["ev_auc_forest.png", "ev_audits.png"]
    plots.plt.close("all")


def test_evidence_with_missing_pieces(tmp_path):
    out = make_run(tmp_path)
    allp = pd.read_csv(out / "baselines/all_preds.csv")
    allp[allp.model != "hrnet"].to_csv(out / "baselines/all_preds.csv", index=False)  # reference missing
    (out / "audits/audit_table.csv").unlink()
    (out / "baselines/heat_share.csv").unlink()
    tables = E.evidence_tables(out, n_boot=50)
    names = [r.file for r in figures.evidence_records(_cfg(out), tables)]
    assert "ev_audits.png" not in names and "ev_calibration.png" in names
    # no difference without the unsegmented table
    assert set(tables["heat_share_ci"].quantity) == {"share_lung"}
    assert tables["comparisons"].empty
    (out / "baselines/all_preds.csv").unlink()
    with pytest.raises(FileNotFoundError, match="05_baseline_comparison"):
        E.evidence_tables(out)
