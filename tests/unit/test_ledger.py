"""Tests for helpers.evidence.ledger: the paper's reported triples (Tables 6 and 7) under eqs. 2-4."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from helpers.evidence import ledger as L
from helpers.evidence.metrics import fold_table


def _paper():
    return {c.name: c for c in L.paper_claims()}


def _mat(m):
    return (m["tp"], m["fn"], m["fp"], m["tn"])


# ---------------------------------------------------------------- the paper's inconsistent rows
@pytest.mark.parametrize("fold", [1, 3, 4, 8, 10])
def test_table6_imperfect_folds_are_inconsistent(fold):
    c = _paper()[f"Table 6 fold {fold}"]
    assert c.kind == "single"
    r = L.check_claim(c)
    assert r["between"] is False
    assert r["consistent"] is False
    assert r["matrices"] == [] and r["n_matrices"] == 0
    assert "outside" in r["reason"]


def test_table6_fold_values_are_transcribed():
    p = _paper()
    assert (p["Table 6 fold 1"].accuracy, p["Table 6 fold 1"].sensitivity,
            p["Table 6 fold 1"].specificity) == (98.78, 97.56, 98.03)
    assert (p["Table 6 fold 10"].accuracy, p["Table 6 fold 10"].sensitivity,
            p["Table 6 fold 10"].specificity) == (97.80, 95.12, 96.15)
    assert sum(1 for n in p if n.startswith("Table 6 fold")) == 10


def test_efficientnet_row_is_inconsistent():
    c = _paper()["Table 7 EfficientNetB4"]
    assert (c.accuracy, c.sensitivity, c.specificity, c.kind) == (97.56, 95.12, 96.15, "single")
    r = L.check_claim(c)
    assert r["consistent"] is False and r["between"] is False


def test_inconsistency_does_not_depend_on_search_bound():
    # the betweenness rule is a proof for every n, so a bigger search cannot help
    c = L.Claim("x", 98.78, 97.56, 98.03)
    r = L.check_claim(c, max_n=2000)
    assert r["consistent"] is False and r["n_matrices"] == 0


# ---------------------------------------------------------------- the reproducible rows
def test_resnet152_reproduced_at_41_50():
    c = _paper()["Table 7 ResNet152"]
    r = L.check_claim(c)
    assert r["consistent"] is True and r["between"] is True
    assert _mat(r["matrices_at_expected"][0]) == (39, 2, 3, 47)
    assert r["matrices_at_expected"][0]["n_pos"] == 41 and r["matrices_at_expected"][0]["n_neg"] == 50
    # exact values: 39/41 = 95.12 %, 47/50 = 94.00 %, 86/91 = 94.505 % -> printed 94.50 only when
    # truncated (half-up rounding gives 94.51)
    assert r["matrices_at_expected"][0]["rounding"] == "truncate"
    assert 100 * 86 / 91 == pytest.approx(94.5055, abs=1e-4)
    strict = L.check_claim(L.Claim("r", 94.50, 95.12, 94.00, n_pos=41, n_neg=50, rounding="round"))
    assert strict["consistent"] is False and strict["matrices"] == []
    known = L.check_claim(L.Claim("r", 94.50, 95.12, 94.00, n_pos=41, n_neg=50))
    assert [_mat(m) for m in known["matrices"]] == [(39, 2, 3, 47)]


def test_densenet121_reproduced_at_41_50():
    c = _paper()["Table 7 DenseNet121"]
    r = L.check_claim(c)
    assert r["consistent"] is True
    assert _mat(r["matrices_at_expected"][0]) == (37, 4, 2, 48)
    # 37/41 = 90.2439 %, 48/50 = 96 %, 85/91 = 93.4066 % -> 93.40 truncated (93.41 rounded)
    assert r["matrices_at_expected"][0]["rounding"] == "truncate"
    assert r["matrices"][0]["n"] == 91  # nothing smaller reproduces the row


def test_perfect_folds_are_consistent():
    for f in (2, 5, 6, 7, 9):
        r = L.check_claim(_paper()[f"Table 6 fold {f}"])
        assert r["consistent"] is True and r["between"] is True
        assert _mat(r["matrices"][0]) == (1, 0, 0, 1)
        assert _mat(r["matrices_at_expected"][0]) == (41, 0, 0, 50)
        assert len(r["matrices"]) == 5


def test_matrix_ordering_and_limit():
    r = L.check_claim(L.Claim("x", 90.0, 80.0, 100.0))
    ns = [m["n"] for m in r["matrices"]]
    assert ns == sorted(ns) and len(ns) <= 5
    assert _mat(r["matrices"][0]) == (4, 1, 0, 5)  # (4+5)/10 = 90 %, 4/5 = 80 %, 5/5 = 100 %


def test_known_counts_restrict_search():
    r = L.check_claim(L.Claim("x", 90.0, 80.0, 100.0, n_pos=10, n_neg=10))
    assert [_mat(m) for m in r["matrices"]] == [(8, 2, 0, 10)]
    r = L.check_claim(L.Claim("x", 90.0, 80.0, 100.0, n_pos=7, n_neg=10))
    assert r["consistent"] is False and "P=7, N=10" in r["reason"]


def test_search_is_fast():
    t0 = time.perf_counter()
    for c in (L.Claim("p", 100.0, 100.0, 100.0), L.Claim("r", 94.50, 95.12, 94.00),
              L.Claim("q", 50.0, 50.0, 50.0)):
        L.check_claim(c, max_n=400)
    assert time.perf_counter() - t0 < 1.0


def test_undecided_when_bound_too_small():
    r = L.check_claim(L.Claim("r", 94.50, 95.12, 94.00), max_n=60)
    assert r["between"] is True and r["consistent"] is None and "undecided" in r["reason"]


# ---------------------------------------------------------------- means over folds
def test_mean_over_folds_not_judged_by_betweenness():
    c = _paper()["Table 6 Average"]
    assert c.kind == "mean_over_folds"
    r = L.check_claim(c)
    assert r["between"] is False  # 99.29 > max(98.53, 98.82) ...
    assert r["consistent"] is None  # ... but that does not make a mean inconsistent
    assert "legitimately" in r["reason"]


def test_check_mean_on_table6():
    p = _paper()
    folds = [p[f"Table 6 fold {i}"] for i in range(1, 11)]
    r = L.check_mean(p["Table 6 Average"], folds)
    per = r["per_metric"].set_index("metric")
    # mean of the ten printed fold values (4 x 98.78, 5 x 100, 97.80) is 99.292, not 99.09
    assert per.loc["accuracy", "fold_mean"] == pytest.approx(99.292, abs=1e-9)
    assert per.loc["sensitivity", "fold_mean"] == pytest.approx(98.536, abs=1e-9)
    assert per.loc["specificity", "fold_mean"] == pytest.approx(98.827, abs=1e-9)
    assert bool(per.loc["accuracy", "exact_round"]) is True
    # 98.536 -> 98.54 and 98.827 -> 98.83 when rounded: the paper truncates
    assert bool(per.loc["sensitivity", "exact_round"]) is False
    assert bool(per.loc["specificity", "exact_round"]) is False
    assert r["exact_modes"] == ["truncate"]
    assert r["consistent"] is True
    # the abstract / Table 7 value 99.26 is not the mean of Table 6
    ab = L.check_mean(p["Abstract / Table 7 proposed model"], folds)
    assert ab["consistent"] is False and "accuracy" in ab["reason"]
    assert ab["per_metric"].set_index("metric").loc["accuracy", "difference"] == pytest.approx(
        0.032, abs=1e-9)
    txt = L.check_mean(p["Section 4.3 text"], folds)
    assert txt["consistent"] is False


def test_ledger_table_paper():
    df = L.ledger_table(L.paper_claims())
    assert len(df) == len(L.paper_claims()) == 16
    s = df.set_index("name")
    for f in (1, 3, 4, 8, 10):
        assert s.loc[f"Table 6 fold {f}", "consistent"] is False
    for f in (2, 5, 6, 7, 9):
        assert s.loc[f"Table 6 fold {f}", "consistent"] is True
    assert s.loc["Table 6 Average", "consistent"] is True  # checked against the folds
    assert s.loc["Abstract / Table 7 proposed model", "consistent"] is False
    assert s.loc["Table 7 EfficientNetB4", "consistent"] is False
    assert s.loc["Table 7 ResNet152", "matrix_at_expected"].startswith("tp=39, fn=2, fp=3, tn=47")
    assert s.loc["Table 7 DenseNet121", "matrix_at_expected"].startswith("tp=37, fn=4, fp=2, tn=48")
    for col in ("accuracy", "sensitivity", "specificity", "kind", "between", "smallest_matrix",
                "reason"):
        assert col in df.columns
    assert (df["reason"].str.len() > 20).all()


def test_alternative_readings_explain_paper_rows():
    p = _paper()
    # fold 10: 'specificity' = NPV 50/52 gives Fig. 13a's matrix (39 + 50 correct, 2 errors)
    a = L.alternative_readings(p["Table 6 fold 10"]).set_index("reading")
    assert a.loc["as reported", "n_matrices"] == 0
    assert a.loc["specificity is NPV", "at_expected"].startswith("tp=39, fn=2, fp=0, tn=50")
    a = L.alternative_readings(p["Table 6 fold 1"]).set_index("reading")
    assert a.loc["accuracy is balanced accuracy, specificity is NPV", "at_expected"].startswith(
        "tp=40, fn=1, fp=0, tn=50")
    facts = L.paper_text_facts()
    assert facts["fig13a_worst"] == dict(tp=39, tn=50, errors=2)
    assert facts["n_covid"] + facts["n_non_covid"] == 910


# ---------------------------------------------------------------- the companion's own tables
def test_claims_from_fold_table_roundtrip():
    rng = np.random.default_rng(3)
    rows = []
    for f in range(5):
        n_pos, n_neg = 41 - f, 50 + f
        y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
        prob = np.clip(0.75 * y + rng.normal(0.12, 0.2, len(y)), 0, 1)
        rows.append(pd.DataFrame(dict(image_id=[f"{f}_{i}" for i in range(len(y))],
                                      patient_id=[f"p{f}_{i}" for i in range(len(y))],
                                      fold=f, y=y, prob=prob, model="m")))
    ft = fold_table(pd.concat(rows, ignore_index=True))
    claims = L.claims_from_fold_table(ft, "mine")
    assert [c.kind for c in claims] == ["single"] * 6 + ["mean_over_folds"]
    pooled = [c for c in claims if c.name == "mine pooled"][0]
    # folds are numbered from 1 as in Table 6 (fold index 0 -> "fold 1")
    assert [c.name for c in claims if c.name.startswith("mine fold")] == [
        f"mine fold {k}" for k in range(1, 6)]
    assert pooled.n_pos == int(ft.loc[ft["fold"] == "pooled", "n_pos"].iloc[0])
    df = L.ledger_table(claims).set_index("name")
    assert (df["consistent"] == True).all()  # noqa: E712 - own tables must pass their own ledger
    r = L.check_claim(pooled)
    m = r["matrices"][0]
    row = ft[ft["fold"] == "pooled"].iloc[0]
    assert _mat(m) == (row["tp"], row["fn"], row["fp"], row["tn"])


def test_claim_validation():
    with pytest.raises(ValueError):
        L.Claim("x", 1, 2, 3, kind="average")
    with pytest.raises(ValueError):
        L.Claim("x", 1, 2, 3, rounding="ceil")
    with pytest.raises(ValueError):
        L.search_matrices({"accuracy": 90.0})
