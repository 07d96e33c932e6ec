"""Tests for helpers.evidence.metrics (paper section 4.3, eqs. 2-4, and the added uncertainty measures)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, brier_score_loss, confusion_matrix, roc_auc_score

from helpers import decision
from helpers.evidence import metrics as M


def _data(n=300, seed=0, ties=True, sep=0.6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    prob = np.clip(rng.random(n) * (1 - sep) + sep * y * rng.random(n), 0, 1)
    if ties:
        prob = np.round(prob, 2)
    return y, prob


def _preds(n_folds=4, seed=0, models=("hrnet",)):
    rng = np.random.default_rng(seed)
    rows = []
    for f in range(n_folds):
        n = 40 + 3 * f
        y = rng.integers(0, 2, n)
        pid = [f"p{f}_{i // 2}" for i in range(n)]
        for mi, m in enumerate(models):
            prob = np.clip(0.55 * y + rng.normal(0.22 - 0.04 * mi, 0.2, n), 0, 1)
            rows.append(pd.DataFrame(dict(image_id=[f"img{f}_{i}" for i in range(n)],
                                          patient_id=pid, fold=f, y=y, prob=prob, model=m,
                                          view=np.where(np.arange(n) % 3 == 0, "AP", "PA"),
                                          source=np.where(np.arange(n) % 2 == 0, "a", "b"))))
    return pd.concat(rows, ignore_index=True)


# ------------------------------------------------------------------ confusion / Wilson / rates
def test_confusion_matches_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(20):
        y, pred = rng.integers(0, 2, 57), rng.integers(0, 2, 57)
        tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
        assert M.confusion(y, pred) == dict(tp=tp, fn=fn, fp=fp, tn=tn)


def test_confusion_one_class_and_bad_labels():
    assert M.confusion([1, 1, 1], [1, 0, 1]) == dict(tp=2, fn=1, fp=0, tn=0)
    assert M.confusion([], []) == dict(tp=0, fn=0, fp=0, tn=0)
    with pytest.raises(ValueError):
        M.confusion([0, 2], [0, 1])


def test_wilson_known_values():
    lo, hi = M.wilson_ci(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = M.wilson_ci(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = M.wilson_ci(10, 10)
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == 1.0
    lo, hi = M.wilson_ci(39, 41)  # Table 6 fold 10 sensitivity
    assert lo == pytest.approx(0.8386, abs=1e-3) and hi == pytest.approx(0.9865, abs=1e-3)
    assert all(math.isnan(v) for v in M.wilson_ci(0, 0))


def _wilson_formula(k, n, alpha):
    """The Wilson score interval written out (the formula wilson_ci used before scipy's)."""
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    p, z2 = k / n, z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if k == 0 else lo, 1.0 if k == n else hi)


def test_wilson_agrees_with_formula_on_a_grid():
    for alpha in (0.05, 0.1, 0.01):
        for n in list(range(1, 60)) + [91, 137, 500, 1000, 4321]:
            for k in sorted({0, 1, 2, n // 3, n // 2, n - 2, n - 1, n} & set(range(n + 1))):
                lo, hi = M.wilson_ci(k, n, alpha)
                elo, ehi = _wilson_formula(k, n, alpha)
                assert abs(lo - elo) <= 1e-12 and abs(hi - ehi) <= 1e-12, (k, n, alpha)
                assert type(lo) is float and type(hi) is float
    assert M.wilson_ci(np.int64(3), np.int64(7)) == M.wilson_ci(3, 7)
    with pytest.raises(ValueError):
        M.wilson_ci(8, 7)


def test_rates_values_and_zero_denominators():
    r = M.rates(tp=39, fn=2, fp=3, tn=47)  # ResNet152 in Table 7, 41 + 50 images
    assert r["accuracy"] == pytest.approx(86 / 91)
    assert r["sensitivity"] == pytest.approx(39 / 41)
    assert r["specificity"] == pytest.approx(47 / 50)
    assert r["ppv"] == pytest.approx(39 / 42) and r["npv"] == pytest.approx(47 / 49)
    assert (r["accuracy_k"], r["accuracy_n"]) == (86, 91)
    assert r["sensitivity_lo"] < r["sensitivity"] < r["sensitivity_hi"]
    z = M.rates(tp=5, fn=0, fp=0, tn=0)
    assert math.isnan(z["specificity"]) and math.isnan(z["specificity_lo"])
    assert math.isnan(z["npv"]) and z["sensitivity"] == 1.0


# ------------------------------------------------------------------ AUCs
def test_auc_and_ap_match_sklearn():
    for seed in range(10):
        y, p = _data(n=150 + 10 * seed, seed=seed, ties=seed % 2 == 0)
        assert M.auc_ci(y, p, n_boot=0)["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert M.pr_auc_ci(y, p, n_boot=0)["pr_auc"] == pytest.approx(
            average_precision_score(y, p), abs=1e-12)


def test_auc_or_nan_is_the_rank_sum_auc_and_nan_for_one_class():
    for seed in range(6):
        y, p = _data(n=60 + 7 * seed, seed=seed, ties=seed % 2 == 0)
        n1, n0 = int(y.sum()), int(len(y) - y.sum())
        r = stats.rankdata(p)
        mann_whitney = (r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0)
        assert decision.auc_or_nan(y, p) == pytest.approx(mann_whitney, abs=1e-12)
        assert decision.auc_or_nan(y, p) == pytest.approx(M.auc_ci(y, p, n_boot=0)["auc"], abs=1e-12)
        assert type(decision.auc_or_nan(y, p)) is float
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(decision.auc_or_nan([1, 1, 1], [0.2, 0.5, 0.9]))
        assert math.isnan(decision.auc_or_nan([0, 0], [0.2, 0.5]))
        assert math.isnan(decision.auc_or_nan([], []))

def test_weighted_statistics_equal_explicit_resample():
    y, p = _data(n=80, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        w = rng.integers(0, 4, len(y))
        if y[w > 0].min() == y[w > 0].max():
            continue
        yy, pp = np.repeat(y, w), np.repeat(p, w)
        W = w[None, :].astype(float)
        assert M._weighted_roc_auc(y, p, W)[0] == pytest.approx(roc_auc_score(yy, pp), abs=1e-12)
        assert M._weighted_ap(y, p, W)[0] == pytest.approx(average_precision_score(yy, pp),
                                                           abs=1e-12)


def test_auc_bootstrap_ci_properties():
    y, p = _data(n=200, seed=2)
    a = M.auc_ci(y, p, n_boot=500, seed=7)
    assert a["lo"] < a["auc"] < a["hi"] and a["n_boot_valid"] == 500
    assert a["hi"] - a["lo"] < 0.2
    assert M.auc_ci(y, p, n_boot=500, seed=7) == a  # reproducible
    b = M.pr_auc_ci(y, p, n_boot=500, seed=7)
    assert b["lo"] < b["pr_auc"] < b["hi"]


def test_cluster_bootstrap_resamples_patients():
    y, p = _data(n=150, seed=3)
    # every patient has 3 identical images: image bootstrap is too narrow, cluster is not
    yy, pp = np.repeat(y, 3), np.repeat(p, 3)
    g = np.repeat(np.arange(150), 3)
    img = M.auc_ci(yy, pp, n_boot=1000, seed=1)
    clu = M.auc_ci(yy, pp, n_boot=1000, seed=1, groups=g)
    ref = M.auc_ci(y, p, n_boot=1000, seed=1)
    w_img, w_clu, w_ref = (d["hi"] - d["lo"] for d in (img, clu, ref))
    assert clu["resample"] == "patients" and clu["n_clusters"] == 150
    assert w_clu > 1.4 * w_img
    assert w_clu == pytest.approx(w_ref, rel=0.2)


def test_one_class_auc_is_nan_with_reason():
    r = M.auc_ci([1, 1, 1], [0.2, 0.5, 0.9], n_boot=100)
    assert math.isnan(r["auc"]) and "one class" in r["reason"]
    r = M.pr_auc_ci([0, 0], [0.2, 0.5], n_boot=100)
    assert math.isnan(r["pr_auc"]) and r["n_pos"] == 0
    # tiny data: some resamples have one class; they are skipped and counted
    r = M.auc_ci([0, 1, 0, 1], [0.1, 0.9, 0.4, 0.3], n_boot=300, seed=0)
    assert 0 < r["n_boot_valid"] < 300 and "skipped" in r["reason"]


# ------------------------------------------------------------------ calibration
def test_brier_ece_reliability():
    y, p = _data(n=400, seed=5, ties=False)
    assert M.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    t = M.reliability_table(y, p, n_bins=10)
    assert list(t.columns) == ["bin_lo", "bin_hi", "n", "mean_prob", "frac_pos"]
    assert t["n"].sum() == 400 and len(t) == 10
    # manual ECE
    b = np.minimum((p * 10).astype(int), 9)
    e = sum(np.mean(b == i) * abs(y[b == i].mean() - p[b == i].mean())
            for i in range(10) if np.any(b == i))
    assert M.ece(y, p) == pytest.approx(e, abs=1e-12)
    # prob exactly 1.0 goes to the last bin; a perfectly calibrated toy has ECE 0
    assert M.reliability_table([1], [1.0])["n"].iloc[-1] == 1
    assert M.ece([0, 1, 0, 1], [0.25, 0.25, 0.75, 0.75], n_bins=2) == pytest.approx(0.25)
    assert M.ece([0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0]) == 0.0
    assert math.isnan(M.brier([], [])) and math.isnan(M.ece([], []))


def test_ppv_npv_at_prevalence():
    d = M.ppv_npv_at_prevalence(0.9, 0.9, prevalences=[0.1, 0.5])
    assert d["ppv"].tolist() == pytest.approx([0.5, 0.9])
    assert d["npv"].iloc[0] == pytest.approx(0.81 / 0.82)
    d = M.ppv_npv_at_prevalence(0.95, 0.98, sens_lo=0.9, sens_hi=0.99, spec_lo=0.96,
                                spec_hi=0.995)
    assert len(d) == 20 and d["prevalence"].iloc[0] == pytest.approx(0.01)
    assert (d["ppv_lo"] <= d["ppv"]).all() and (d["ppv"] <= d["ppv_hi"]).all()
    assert (d["npv_lo"] <= d["npv"]).all() and (d["npv"] <= d["npv_hi"]).all()
    assert d["ppv"].is_monotonic_increasing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = M.ppv_npv_at_prevalence(0.0, 1.0, prevalences=[0.1])
    assert math.isnan(z["ppv"].iloc[0])


# ------------------------------------------------------------------ tables
def test_fold_table_rows_and_values():
    preds = _preds()
    preds["threshold"] = 0.4
    ft = M.fold_table(preds)
    assert list(ft["fold"]) == [0, 1, 2, 3, "pooled", "mean"]
    assert list(ft["kind"]) == ["single matrix"] * 5 + ["mean over folds"]
    per = ft.iloc[:4]
    pooled = ft[ft["fold"] == "pooled"].iloc[0]
    mean = ft[ft["fold"] == "mean"].iloc[0]
    for c in ("tp", "fn", "fp", "tn", "n"):
        assert pooled[c] == per[c].sum()
    assert mean["accuracy"] == pytest.approx(per["accuracy"].mean())
    assert mean["sensitivity"] == pytest.approx(per["sensitivity"].mean())
    assert math.isnan(mean["accuracy_lo"])
    d0 = preds[preds["fold"] == 0]
    cm = confusion_matrix(d0["y"], (d0["prob"] >= 0.4).astype(int), labels=[0, 1]).ravel()
    assert tuple(per.iloc[0][["tn", "fp", "fn", "tp"]]) == tuple(cm)
    assert per.iloc[0]["auc"] == pytest.approx(roc_auc_score(d0["y"], d0["prob"]))
    assert pooled["auc"] == pytest.approx(roc_auc_score(preds["y"], preds["prob"]))
    assert pooled["threshold"] == 0.4
    # default threshold when the column is absent
    ft5 = M.fold_table(preds.drop(columns="threshold"))
    assert ft5["threshold"].iloc[0] == 0.5


def test_fold_table_one_class_fold_gives_nan_without_warnings():
    preds = _preds()
    preds.loc[preds["fold"] == 1, "y"] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ft = M.fold_table(preds)
    f1 = ft[ft["fold"] == 1].iloc[0]
    assert math.isnan(f1["auc"]) and math.isnan(f1["specificity"]) and f1["n_neg"] == 0
    assert "one class" in f1["note"]
    assert not math.isnan(ft[ft["fold"] == "mean"].iloc[0]["auc"])
    with pytest.raises(ValueError):
        M.fold_table(_preds(models=("a", "b")))


def test_summarise_models():
    preds = _preds(models=("hrnet", "resnet152"))
    s = M.summarise_models(preds, n_boot=200, seed=0)
    assert list(s["model"]) == ["hrnet", "resnet152"]
    for _, r in s.iterrows():
        d = preds[preds["model"] == r["model"]]
        assert r["roc_auc"] == pytest.approx(roc_auc_score(d["y"], d["prob"]))
        assert r["pr_auc"] == pytest.approx(average_precision_score(d["y"], d["prob"]))
        assert r["brier"] == pytest.approx(brier_score_loss(d["y"], d["prob"]))
        assert r["roc_auc_lo"] < r["roc_auc"] < r["roc_auc_hi"]
        assert r["tp"] + r["fn"] == d["y"].sum() and r["n_patients"] == d["patient_id"].nunique()
        assert r["accuracy_lo"] < r["accuracy"] < r["accuracy_hi"]
        assert 0 <= r["ece"] <= 1


def test_stratified():
    preds = _preds()
    st = M.stratified(preds, by="view")
    assert set(st["view"]) == {"AP", "PA"} and st["n"].sum() == len(preds)
    ap = preds[preds["view"] == "AP"]
    r = st[st["view"] == "AP"].iloc[0]
    assert r["auc"] == pytest.approx(roc_auc_score(ap["y"], ap["prob"]))
    # a stratum with one class: AUC nan with a note, no exception or warning
    preds.loc[preds["source"] == "a", "y"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st = M.stratified(preds, by="source")
    a = st[st["source"] == "a"].iloc[0]
    assert math.isnan(a["auc"]) and math.isnan(a["sensitivity"]) and a["note"]
    with pytest.raises(KeyError):
        M.stratified(preds, by="hospital")


# ------------------------------------------------------------------ paired tests
def _slow_delong(y, a, b):
    """O(n^2) DeLong (1988) directly from the kernel psi(x, y)."""
    out = []
    for s in (a, b):
        X, Y = s[y == 1], s[y == 0]
        psi = (X[:, None] > Y[None, :]) + 0.5 * (X[:, None] == Y[None, :])
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = (y == 1).sum(), (y == 0).sum()
    V10 = np.vstack([o[1] for o in out])
    V01 = np.vstack([o[2] for o in out])
    S = np.cov(V10) / m + np.cov(V01) / n
    var = S[0, 0] + S[1, 1] - 2 * S[0, 1]
    diff = out[0][0] - out[1][0]
    p = 2 * stats.norm.sf(abs(diff) / math.sqrt(var))
    return diff, var, p


def test_delong_matches_slow_reference():
    rng = np.random.default_rng(11)
    for trial in range(8):
        n = 30 + 7 * trial
        y = rng.integers(0, 2, n)
        a = np.round(0.5 * y + rng.random(n), 1 if trial % 2 else 3)
        b = np.round(a + rng.normal(0, 0.4, n), 2)
        diff, var, p = _slow_delong(y, a, b)
        r = M.paired_auc_test(y, a, b, method="delong")
        assert r["diff"] == pytest.approx(diff, abs=1e-12)
        assert r["var"] == pytest.approx(var, rel=1e-9)
        assert abs(r["p"] - p) < 1e-6
        assert r["auc_a"] == pytest.approx(roc_auc_score(y, a))
        assert r["lo"] < r["diff"] < r["hi"]


def test_delong_vs_bootstrap_and_clusters():
    y, a = _data(n=400, seed=8, ties=False)
    rng = np.random.default_rng(2)
    b = np.clip(a + rng.normal(0, 0.25, len(a)), 0, 1)
    d = M.paired_auc_test(y, a, b, method="delong")
    bs = M.paired_auc_test(y, a, b, method="bootstrap", n_boot=1000, seed=0)
    assert bs["diff"] == pytest.approx(d["diff"])
    assert bs["se"] == pytest.approx(d["se"], rel=0.25)
    # singleton clusters: the sandwich variance is close to DeLong's
    c = M.paired_auc_test(y, a, b, method="delong", groups=np.arange(len(y)))
    assert c["se"] == pytest.approx(d["se"], rel=0.05)
    # duplicated images in one patient: cluster-robust SE stays put, naive one shrinks
    yy, aa, bb = (np.repeat(v, 2) for v in (y, a, b))
    naive = M.paired_auc_test(yy, aa, bb, method="delong")
    clus = M.paired_auc_test(yy, aa, bb, method="delong", groups=np.repeat(np.arange(len(y)), 2))
    assert naive["se"] < 0.8 * clus["se"]
    assert clus["se"] == pytest.approx(d["se"], rel=0.05)
    # identical models: zero difference, p = 1
    same = M.paired_auc_test(y, a, a)
    assert same["diff"] == 0 and same["p"] == 1.0
    # one class: nan, not an error
    one = M.paired_auc_test(np.ones(10, int), a[:10], b[:10])
    assert math.isnan(one["p"]) and "one class" in one["reason"]
    with pytest.raises(ValueError):
        M.paired_auc_test(y, a, b, method="wilcoxon")


def test_mcnemar_branches():
    y = np.ones(12, int)
    a = np.r_[np.ones(10, int), np.zeros(2, int)]  # a right on 10, wrong on 2
    b = np.r_[np.zeros(10, int), np.ones(2, int)]  # b wrong on those 10, right on 2
    r = M.mcnemar(y, a, b)
    assert (r["b"], r["c"]) == (10, 2) and r["method"] == "exact binomial"
    assert r["p"] == pytest.approx(2 * (1 + 12 + 66) / 4096)
    y = np.ones(40, int)
    a = np.r_[np.ones(30, int), np.zeros(10, int)]
    b = 1 - a
    r = M.mcnemar(y, a, b)
    assert (r["b"], r["c"]) == (30, 10) and r["method"].startswith("chi-square")
    assert r["statistic"] == pytest.approx(19 ** 2 / 40)
    assert r["p"] == pytest.approx(stats.chi2.sf(9.025, 1))
    r = M.mcnemar([0, 1], [0, 1], [0, 1])
    assert r["p"] == 1.0 and r["b"] == r["c"] == 0


def test_compare_to_reference():
    preds = _preds(models=("hrnet", "resnet152", "densenet121"))
    preds["threshold"] = 0.45
    cmp = M.compare_to_reference(preds, reference="hrnet", method="delong")
    assert list(cmp["model"]) == ["densenet121", "resnet152"]
    h, r = preds[preds["model"] == "hrnet"], preds[preds["model"] == "resnet152"]
    row = cmp[cmp["model"] == "resnet152"].iloc[0]
    assert row["auc_reference"] == pytest.approx(roc_auc_score(h["y"], h["prob"]))
    assert row["auc_model"] == pytest.approx(roc_auc_score(r["y"], r["prob"]))
    assert row["auc_diff"] == pytest.approx(row["auc_reference"] - row["auc_model"])
    mc = M.mcnemar(h["y"].to_numpy(), (h["prob"] >= 0.45).astype(int).to_numpy(),
                   (r["prob"] >= 0.45).astype(int).to_numpy())
    assert (row["mcnemar_b"], row["mcnemar_c"]) == (mc["b"], mc["c"])
    # order of rows must not matter (aligned by image_id)
    shuffled = preds.sample(frac=1.0, random_state=0)
    cmp2 = M.compare_to_reference(shuffled, reference="hrnet")
    assert cmp2["auc_p"].tolist() == pytest.approx(cmp["auc_p"].tolist())
    bad = preds.drop(index=preds[(preds["model"] == "resnet152")].index[:3])
    with pytest.raises(ValueError, match="same images"):
        M.compare_to_reference(bad, reference="hrnet")
    moved = preds.copy()
    idx = moved[(moved["model"] == "resnet152")].index[:2]
    moved.loc[idx, "fold"] = 99
    with pytest.raises(ValueError, match="same folds"):
        M.compare_to_reference(moved, reference="hrnet")
    with pytest.raises(ValueError):
        M.compare_to_reference(preds, reference="vit")


# ------------------------------------------------------------------ threshold
def test_choose_threshold():
    # separable: any threshold in (0.3, 0.7] is perfect; 0.5 is preferred
    assert decision.choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9]) == 0.5
    # separable above 0.5: the midpoint between the classes
    t = decision.choose_threshold([0, 0, 1, 1], [0.6, 0.7, 0.9, 0.95])
    assert t == pytest.approx(0.8)
    y, p = _data(n=300, seed=9, ties=False)
    t = decision.choose_threshold(y, p)
    pred = (p >= t).astype(int)
    j = M.rates(**M.confusion(y, pred))
    jbest = j["sensitivity"] + j["specificity"] - 1
    for c in np.linspace(0, 1, 201):
        rr = M.rates(**M.confusion(y, (p >= c).astype(int)))
        assert rr["sensitivity"] + rr["specificity"] - 1 <= jbest + 1e-12
    # never fails
    assert decision.choose_threshold([1, 1, 1], [0.2, 0.3, 0.9]) == 0.5
    assert decision.choose_threshold([], []) == 0.5
    assert decision.choose_threshold([0, 1], [np.nan, np.nan]) == 0.5
    assert decision.choose_threshold([0, 1], [0.5, 0.5]) == 0.5
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        t = decision.choose_threshold(rng.integers(0, 2, n), rng.random(n))
        assert 0.0 <= t <= 1.0
