"""The claims ledger: can a reported (accuracy, sensitivity, specificity) triple be real?

Kept by hand: no library checks published rates against the confusion matrices they allow.

Paper section 4.3 defines accuracy (eq. 2), sensitivity (eq. 3) and specificity (eq. 4) of a
confusion matrix and reports them as percentages with two decimals, per test fold (Table 6),
as a mean over the 10 folds (Table 6 "Average", the abstract, Table 7 "Proposed Model") and for
three baselines (Table 7).

For ONE confusion matrix with P positives and N negatives,

    accuracy = (TP + TN) / (P + N) = w * sensitivity + (1 - w) * specificity,  w = P / (P + N),

so accuracy must lie between sensitivity and specificity (the "betweenness rule"), whatever the
class counts. A mean over folds need not obey it (each fold has its own weight w). Beyond that
rule the ledger searches for the smallest integer matrices (tp, fn, fp, tn) that reproduce all
three printed numbers, optionally at the known class counts.

Reported numbers are compared with the exact rational values under a rounding convention:
``"round"`` (half-up to ``decimals``), ``"truncate"`` (cut after ``decimals``; the paper's
numbers fit this convention, e.g. 50/51 = 98.039 % printed as 98.03) or ``"any"`` (either; a
matrix must reproduce all three numbers under one convention). Integer arithmetic throughout,
so no floating-point edge cases.

* :class:`Claim`, :func:`check_claim`, :func:`check_mean`, :func:`search_matrices`,
  :func:`alternative_readings` (e.g. "specificity" actually being NPV),
* :func:`paper_claims` (Tables 6 and 7, abstract, section 4.3 text), :func:`ledger_table`,
  :func:`claims_from_fold_table` (the companion's own tables, from
  :func:`helpers.evidence.metrics.fold_table`).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "Claim",
    "check_claim",
    "check_mean",
    "search_matrices",
    "alternative_readings",
    "paper_claims",
    "paper_text_facts",
    "ledger_table",
    "claims_from_fold_table",
]

_MODES = {"round": ("round",), "truncate": ("truncate",), "any": ("round", "truncate")}
_METRICS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy")


@dataclass
class Claim:
    """One reported triple, in percent.

    kind: ``"single"`` (one confusion matrix) or ``"mean_over_folds"``. n_pos / n_neg: known
    class counts (the search is then restricted to them). expected_pos / expected_neg: counts
    that are only approximately known (e.g. 41 + 50 per fold); they order the matrices and give
    an extra search at exactly those counts. group: claims sharing a group are the folds
    (``single``) and their means (``mean_over_folds``), which :func:`ledger_table` checks
    against each other. rounding: ``"round"``, ``"truncate"`` or ``"any"``.
    """

    name: str
    accuracy: float
    sensitivity: float
    specificity: float
    kind: str = "single"
    n_pos: int | None = None
    n_neg: int | None = None
    decimals: int = 2
    source: str = ""
    expected_pos: int | None = None
    expected_neg: int | None = None
    group: str | None = None
    rounding: str = "any"
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("single", "mean_over_folds"):
            raise ValueError(f"kind must be 'single' or 'mean_over_folds', got {self.kind!r}")
        if self.rounding not in _MODES:
            raise ValueError(f"rounding must be one of {sorted(_MODES)}, got {self.rounding!r}")

    def values(self) -> dict:
        return dict(accuracy=self.accuracy, sensitivity=self.sensitivity,
                    specificity=self.specificity)


# --------------------------------------------------------------------------------------------
# rounding intervals and the betweenness rule
# --------------------------------------------------------------------------------------------
def _units(value: float, decimals: int) -> int:
    """A printed percentage as an integer number of last-decimal units (98.03 -> 9803)."""
    return int(Decimal(repr(float(value))).scaleb(decimals).quantize(Decimal(1),
                                                                     rounding=ROUND_HALF_UP))


def _interval(value: float, decimals: int, mode: str) -> tuple[float, float]:
    """Exact values (percent) that print as ``value`` under ``mode``, clipped to [0, 100]."""
    u = 10.0 ** (-decimals)
    lo, hi = (value - u / 2, value + u / 2) if mode == "round" else (value, value + u)
    return max(0.0, lo), min(100.0, hi)


def _between(claim: Claim) -> tuple[bool, str]:
    """Could accuracy lie between sensitivity and specificity, given the printing convention?"""
    ok_modes = []
    for mode in _MODES[claim.rounding]:
        a = _interval(claim.accuracy, claim.decimals, mode)
        s = _interval(claim.sensitivity, claim.decimals, mode)
        p = _interval(claim.specificity, claim.decimals, mode)
        eps = 1e-9
        if a[0] <= max(s[1], p[1]) + eps and a[1] >= min(s[0], p[0]) - eps:
            ok_modes.append(mode)
    return bool(ok_modes), "+".join(ok_modes)


# --------------------------------------------------------------------------------------------
# exhaustive but cheap search for integer confusion matrices
# --------------------------------------------------------------------------------------------
def _num_den(metric: str, tp, fn, fp, tn):
    P, N = tp + fn, fp + tn
    if metric == "accuracy":
        return tp + tn, P + N
    if metric == "sensitivity":
        return tp, P
    if metric == "specificity":
        return tn, N
    if metric == "ppv":
        return tp, tp + fp
    if metric == "npv":
        return tn, tn + fn
    if metric == "balanced_accuracy":
        return tp * N + tn * P, 2 * P * N
    raise ValueError(f"unknown metric {metric!r}; choose from {_METRICS}")


def _printed(num, den, decimals: int, mode: str):
    """Integer printed units of num/den as a percentage; -1 where den == 0."""
    S = 100 * 10 ** decimals
    num = np.asarray(num, dtype=np.int64)
    den = np.asarray(den, dtype=np.int64)
    d = np.maximum(den, 1)
    if mode == "round":
        r = (2 * num * S + d) // (2 * d)
    else:
        r = (num * S) // d
    return np.where(den > 0, r, -1)


def _pairs(n_fixed: int | None, n_max: int):
    """All (count, k) with 1 <= count <= n_max (or count == n_fixed) and 0 <= k <= count."""
    counts = np.array([n_fixed]) if n_fixed is not None else np.arange(1, n_max + 1)
    counts = counts[counts >= 1]
    c = np.repeat(counts, counts + 1)
    k = np.concatenate([np.arange(v + 1) for v in counts]) if len(counts) else np.array([], int)
    return c.astype(np.int64), k.astype(np.int64)


def search_matrices(targets: dict, n_pos: int | None = None, n_neg: int | None = None,
                    max_n: int = 400, decimals: int = 2, rounding: str = "any", limit: int = 5,
                    expected: tuple[int, int] | None = None) -> tuple[list[dict], int]:
    """Integer confusion matrices whose printed metrics equal ``targets`` (percent values).

    targets: metric -> printed percentage, metrics from ``accuracy, sensitivity, specificity,
    ppv, npv, balanced_accuracy``; must include ``sensitivity`` or ``specificity`` (they
    restrict positives / negatives on their own, which keeps the search small). Both classes
    must be present. Class counts are fixed when given, else range up to a total of ``max_n``.
    A matrix matches when all targets print identically under one rounding mode.

    Returns (the first ``limit`` matrices ordered by total n, then distance to ``expected``
    (n_pos, n_neg), then tp; each a dict ``tp, fn, fp, tn, n_pos, n_neg, n, rounding``) and the
    total number of matches.
    """
    bad = set(targets) - set(_METRICS)
    if bad:
        raise ValueError(f"unknown metrics {sorted(bad)}; choose from {_METRICS}")
    if "sensitivity" not in targets and "specificity" not in targets:
        raise ValueError("targets must include sensitivity or specificity")
    modes = _MODES[rounding]
    want = {m: _units(v, decimals) for m, v in targets.items()}
    hi_pos = max_n - (n_neg if n_neg is not None else 1)
    hi_neg = max_n - (n_pos if n_pos is not None else 1)
    if n_pos is not None and n_neg is not None:
        hi_pos = hi_neg = max(max_n, n_pos + n_neg)
    P, tp = _pairs(n_pos, hi_pos)
    N, tn = _pairs(n_neg, hi_neg)
    for metric, cnt, k in (("sensitivity", P, tp), ("specificity", N, tn)):
        if metric in targets:
            keep = np.zeros(len(cnt), bool)
            for mode in modes:
                keep |= _printed(k, cnt, decimals, mode) == want[metric]
            if metric == "sensitivity":
                P, tp = P[keep], tp[keep]
            else:
                N, tn = N[keep], tn[keep]
    limit_total = max_n if (n_pos is None or n_neg is None) else n_pos + n_neg
    chunk = max(1, int(2_000_000 // max(len(N), 1)))
    hits = []  # arrays: tp, n_pos, tn, n_neg, mode bitmask
    for s in range(0, len(P), chunk):
        cp, ctp = P[s:s + chunk, None], tp[s:s + chunk, None]
        cn, ctn = N[None, :], tn[None, :]
        fn, fp = cp - ctp, cn - ctn
        valid = (cp + cn) <= limit_total
        mask = np.zeros(valid.shape, dtype=np.int64)
        for bit, mode in enumerate(modes):
            ok = valid.copy()
            for metric, w in want.items():
                num, den = _num_den(metric, ctp, fn, fp, ctn)
                ok &= _printed(num, den, decimals, mode) == w
            mask |= ok.astype(np.int64) << bit
        ii, jj = np.nonzero(mask)
        if len(ii):
            hits.append(np.stack([ctp[ii, 0], cp[ii, 0], ctn[0, jj], cn[0, jj], mask[ii, jj]], 1))
    if not hits:
        return [], 0
    H = np.concatenate(hits)
    n_tot = H[:, 1] + H[:, 3]
    if expected:
        dist = np.abs(H[:, 1] - expected[0]) + np.abs(H[:, 3] - expected[1])
    else:
        dist = np.zeros(len(H), dtype=np.int64)
    order = np.lexsort((-H[:, 2], -H[:, 0], H[:, 1], dist, n_tot))[:limit]
    found = []
    for a_tp, a_p, a_tn, a_n, bits in H[order].tolist():
        label = "+".join(m for b, m in enumerate(modes) if bits >> b & 1)
        found.append(dict(tp=a_tp, fn=a_p - a_tp, fp=a_n - a_tn, tn=a_tn, n_pos=a_p, n_neg=a_n,
                          n=a_p + a_n, rounding=label))
    return found, int(len(H))


def _fmt(m: dict | None) -> str:
    if not m:
        return ""
    return (f"tp={m['tp']}, fn={m['fn']}, fp={m['fp']}, tn={m['tn']} "
            f"(P={m['n_pos']}, N={m['n_neg']}; {m['rounding']})")


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------
def check_claim(claim: Claim, max_n: int = 400, fold_claims: Sequence[Claim] | None = None
                ) -> dict:
    """Check one reported triple.

    Returns a dict with ``name, source, kind, consistent`` (True / False / None = undecided),
    ``between`` (accuracy within [min(sens, spec), max(sens, spec)] for some exact values that
    print as reported; this allows half a unit of the last decimal on each number under
    rounding), ``between_modes``, ``matrices`` (up to 5 smallest reproducing matrices, see
    :func:`search_matrices`; searched at the known counts when given, else up to total
    ``max_n``), ``n_matrices``, ``matrices_at_expected`` (at ``expected_pos``/``expected_neg``),
    ``reason`` (a sentence) and, for means checked against folds, ``mean_check``.

    ``single`` claims: inconsistent when the betweenness rule fails (no matrix of any size can
    produce them) or when no matrix exists at the known class counts; consistent when a matrix
    is found; undecided when none is found up to ``max_n`` with unknown counts.
    ``mean_over_folds`` claims: the rule is reported but does not decide (a mean can fall
    outside); ``consistent`` is None unless ``fold_claims`` are given, then :func:`check_mean`.
    """
    between, between_modes = _between(claim)
    out = dict(name=claim.name, source=claim.source, kind=claim.kind, consistent=None,
               between=between, between_modes=between_modes, matrices=[], n_matrices=0,
               matrices_at_expected=[], reason="", mean_check=None)
    acc, se, sp = claim.accuracy, claim.sensitivity, claim.specificity
    rule = (f"accuracy {acc:.{claim.decimals}f} is "
            + ("within" if between else "outside")
            + f" [{min(se, sp):.{claim.decimals}f}, {max(se, sp):.{claim.decimals}f}]")
    if claim.kind == "mean_over_folds":
        if fold_claims:
            mc = check_mean(claim, fold_claims)
            out.update(consistent=mc["consistent"], mean_check=mc,
                       reason=mc["reason"] + f" (Betweenness, not applicable to a mean: {rule}.)")
        else:
            out["reason"] = (f"Mean over folds: {rule}, but a mean of per-fold rates can "
                             "legitimately fall outside that range, so the rule does not decide; "
                             "whether some set of fold matrices averages to it is not checked "
                             "without the per-fold rows (use check_mean).")
        return out

    expected = None
    if claim.expected_pos is not None and claim.expected_neg is not None:
        expected = (claim.expected_pos, claim.expected_neg)
    elif claim.n_pos is not None and claim.n_neg is not None:
        expected = (claim.n_pos, claim.n_neg)
    mats, total = search_matrices(claim.values(), n_pos=claim.n_pos, n_neg=claim.n_neg,
                                  max_n=max_n, decimals=claim.decimals, rounding=claim.rounding,
                                  expected=expected)
    out.update(matrices=mats, n_matrices=total)
    if expected and claim.n_pos is None and claim.n_neg is None:
        at, _ = search_matrices(claim.values(), n_pos=expected[0], n_neg=expected[1],
                                max_n=sum(expected), decimals=claim.decimals,
                                rounding=claim.rounding, expected=expected)
        out["matrices_at_expected"] = at
    known = claim.n_pos is not None or claim.n_neg is not None
    counts = f"P={claim.n_pos}, N={claim.n_neg}"
    if not between:
        out["consistent"] = False
        out["reason"] = (f"Impossible for one confusion matrix: {rule}, but accuracy = "
                         "w*sensitivity + (1-w)*specificity with w = P/(P+N) must lie between "
                         "them for any class counts.")
    elif mats:
        out["consistent"] = True
        where = f"at the known counts ({counts})" if known else f"with total n <= {max_n}"
        out["reason"] = (f"Reproduced by a single matrix {where}; smallest: {_fmt(mats[0])}.")
        if expected and not known:
            at = out["matrices_at_expected"]
            out["reason"] += (f" At the expected counts P={expected[0]}, N={expected[1]}: "
                              + (_fmt(at[0]) if at else "no matrix reproduces the numbers") + ".")
    elif known:
        out["consistent"] = False
        out["reason"] = (f"{rule}, but no integer matrix with {counts} reproduces all three "
                         f"numbers ({claim.rounding} rounding to {claim.decimals} decimals).")
    else:
        out["reason"] = (f"{rule}, but no matrix with total n <= {max_n} reproduces all three "
                         "numbers; undecided (raise max_n).")
    if out["consistent"] and claim.rounding == "any" and all(
            m["rounding"] == "truncate" for m in (out["matrices_at_expected"] or mats)):
        out["reason"] += " Only under truncation, not half-up rounding."
    return out


def check_mean(claim: Claim, fold_claims: Sequence[Claim]) -> dict:
    """Does the mean of the per-fold values reproduce a reported mean (Table 6 "Average")?

    For each metric two questions, per rounding mode: ``exact`` - the mean of the printed fold
    values prints as the reported mean; ``possible`` - some exact fold values that print as the
    fold rows have a mean that prints as the reported mean (allows for rounding of the folds).
    ``consistent`` is True when, under one mode, every metric is possible.
    Returns ``dict(consistent, exact_modes, possible_modes, per_metric (DataFrame), reason)``.
    """
    if not fold_claims:
        raise ValueError("need at least one fold claim")
    d = claim.decimals
    modes = _MODES[claim.rounding]
    rows = []
    for metric in ("accuracy", "sensitivity", "specificity"):
        vals = np.array([getattr(f, metric) for f in fold_claims], dtype=np.float64)
        mean = float(np.mean(vals))
        rep = getattr(claim, metric)
        row = dict(metric=metric, reported=rep, fold_mean=mean, difference=mean - rep)
        for mode in modes:
            # printed value of the fold mean, exactly: fold values as integer units of 10^-D
            D = max([d] + [f.decimals for f in fold_claims])
            F, k = 10 ** (D - d), len(vals)
            total = sum(_units(v, D) for v in vals)
            printed = (2 * total + k * F) // (2 * k * F) if mode == "round" else total // (k * F)
            row[f"exact_{mode}"] = printed == _units(rep, d)
            lo = np.mean([_interval(v, f.decimals, mode)[0] for v, f in zip(vals, fold_claims)])
            hi = np.mean([_interval(v, f.decimals, mode)[1] for v, f in zip(vals, fold_claims)])
            r_lo, r_hi = _interval(rep, d, mode)
            row[f"possible_{mode}"] = bool(lo <= r_hi + 1e-9 and hi >= r_lo - 1e-9)
        rows.append(row)
    per = pd.DataFrame(rows)
    exact_modes = [m for m in modes if per[f"exact_{m}"].all()]
    possible_modes = [m for m in modes if per[f"possible_{m}"].all()]
    consistent = bool(possible_modes)
    means = ", ".join(f"{r['metric']} {r['fold_mean']:.4f} vs {r['reported']:.{d}f}"
                      for r in rows)
    if consistent:
        how = (f"exactly under {'/'.join(exact_modes)}" if exact_modes else
               "only allowing for the rounding of the fold values")
        reason = (f"The mean of the {len(fold_claims)} fold rows reproduces the reported mean "
                  f"({how}; possible under {'/'.join(possible_modes)}): {means}.")
    else:
        off = [r["metric"] for r in rows if not any(r[f"possible_{m}"] for m in modes)]
        reason = (f"The mean of the {len(fold_claims)} fold rows does not reproduce the reported "
                  f"mean ({', '.join(off) or 'no single rounding convention fits all metrics'}): "
                  f"{means}.")
    return dict(consistent=consistent, exact_modes=exact_modes, possible_modes=possible_modes,
                per_metric=per, reason=reason)


_READINGS = {
    "as reported": ("accuracy", "sensitivity", "specificity"),
    "specificity is NPV": ("accuracy", "sensitivity", "npv"),
    "accuracy is balanced accuracy": ("balanced_accuracy", "sensitivity", "specificity"),
    "accuracy is balanced accuracy, specificity is NPV": ("balanced_accuracy", "sensitivity",
                                                          "npv"),
}


def alternative_readings(claim: Claim, max_n: int = 400) -> pd.DataFrame:
    """Try other readings of a triple (e.g. the third column actually being NPV = TN/(TN+FN)).

    Diagnostic only: one row per reading with the smallest matrix (``smallest``), the first
    matrix at the expected/known counts (``at_expected``) and the number of matches.
    """
    P = claim.n_pos if claim.n_pos is not None else claim.expected_pos
    N = claim.n_neg if claim.n_neg is not None else claim.expected_neg
    rows = []
    for label, (m_acc, m_sens, m_spec) in _READINGS.items():
        t = {m_acc: claim.accuracy, m_sens: claim.sensitivity, m_spec: claim.specificity}
        mats, total = search_matrices(t, n_pos=claim.n_pos, n_neg=claim.n_neg, max_n=max_n,
                                      decimals=claim.decimals, rounding=claim.rounding,
                                      expected=(P, N) if P is not None and N is not None else None)
        at = []
        if P is not None and N is not None:
            at, _ = search_matrices(t, n_pos=P, n_neg=N, max_n=P + N, decimals=claim.decimals,
                                    rounding=claim.rounding)
        rows.append(dict(name=claim.name, reading=label, n_matrices=total,
                         smallest=_fmt(mats[0]) if mats else "",
                         at_expected=_fmt(at[0]) if at else ""))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# the paper's numbers
# --------------------------------------------------------------------------------------------
#: Table 6 of the paper: (fold, accuracy, sensitivity, specificity) in %
TABLE6 = [
    (1, 98.78, 97.56, 98.03), (2, 100.0, 100.0, 100.0), (3, 98.78, 97.56, 98.03),
    (4, 98.78, 97.56, 98.03), (5, 100.0, 100.0, 100.0), (6, 100.0, 100.0, 100.0),
    (7, 100.0, 100.0, 100.0), (8, 98.78, 97.56, 98.03), (9, 100.0, 100.0, 100.0),
    (10, 97.80, 95.12, 96.15),
]


def paper_text_facts() -> dict:
    """Counts stated in the paper's text (section 4.3), for reference in notebooks and tests."""
    return dict(n_covid=410, n_non_covid=500, n_folds=10, per_fold_pos=41, per_fold_neg=50,
                fig13a_worst=dict(tp=39, tn=50, errors=2),
                fig13b_best="all test images correctly classified")


def paper_claims() -> list[Claim]:
    """The paper's reported triples: Table 6 folds and Average, abstract, text, Table 7.

    Table 6 fold rows and Table 7 baselines are single matrices (one test set each; fig. 14
    shows one confusion matrix per baseline), expected 41 COVID + 50 non-COVID images
    (410 + 500 in 10 folds). Table 6 "Average" (99.29/98.53/98.82), the abstract and Table 7
    "Proposed Model" (99.26/98.53/98.82) and the section 4.3 sentence (99.26/98.53/98.52) are
    means over the 10 folds, grouped with the fold rows so the ledger checks them against folds.
    """
    claims = []
    for fold, a, s, p in TABLE6:
        claims.append(Claim(f"Table 6 fold {fold}", a, s, p, kind="single",
                            source=f"Table 6 fold {fold}", expected_pos=41, expected_neg=50,
                            group="table6"))
    claims.append(Claim("Table 6 Average", 99.29, 98.53, 98.82, kind="mean_over_folds",
                        source="Table 6 Average row", group="table6"))
    claims.append(Claim("Abstract / Table 7 proposed model", 99.26, 98.53, 98.82,
                        kind="mean_over_folds", group="table6",
                        source="Abstract, Conclusion and Table 7 'Proposed Model'",
                        note="differs from Table 6 Average in accuracy (99.26 vs 99.29)"))
    claims.append(Claim("Section 4.3 text", 99.26, 98.53, 98.52, kind="mean_over_folds",
                        group="table6", source="Section 4.3 text ('98.52% of testing specificity')",
                        note="specificity 98.52 here vs 98.82 in Table 6/7 and the abstract"))
    for model, a, s, p in (("ResNet152", 94.50, 95.12, 94.00), ("DenseNet121", 93.40, 90.24, 96.00),
                           ("EfficientNetB4", 97.56, 95.12, 96.15)):
        claims.append(Claim(f"Table 7 {model}", a, s, p, kind="single",
                            source=f"Table 7 {model} (fig. 14: one confusion matrix)",
                            expected_pos=41, expected_neg=50,
                            note="rows match one test fold of 41 + 50 images"))
    return claims


def ledger_table(claims: Iterable[Claim], max_n: int = 400,
                 alternatives: bool = False) -> pd.DataFrame:
    """One row per claim: reported numbers, kind, between, consistent, smallest matrix, reason.

    ``mean_over_folds`` claims with a ``group`` are checked (:func:`check_mean`) against the
    ``single`` claims of the same group. Columns: ``name, source, kind, accuracy, sensitivity,
    specificity, n_pos, n_neg, between, consistent, smallest_matrix, matrix_at_expected,
    n_matrices, reason`` (+ ``alternative`` with ``alternatives=True``: the first other
    reading from :func:`alternative_readings` that reproduces the numbers at the expected counts).
    """
    claims = list(claims)
    groups: dict[str, list[Claim]] = {}
    for c in claims:
        if c.group and c.kind == "single":
            groups.setdefault(c.group, []).append(c)
    rows = []
    for c in claims:
        folds = groups.get(c.group) if (c.kind == "mean_over_folds" and c.group) else None
        r = check_claim(c, max_n=max_n, fold_claims=folds)
        row = dict(name=c.name, source=c.source, kind=c.kind, accuracy=c.accuracy,
                   sensitivity=c.sensitivity, specificity=c.specificity, n_pos=c.n_pos,
                   n_neg=c.n_neg, between=r["between"], consistent=r["consistent"],
                   smallest_matrix=_fmt(r["matrices"][0]) if r["matrices"] else "",
                   matrix_at_expected=(_fmt(r["matrices_at_expected"][0])
                                       if r["matrices_at_expected"] else ""),
                   n_matrices=r["n_matrices"], reason=r["reason"])
        if alternatives:
            alt = ""
            if c.kind == "single" and not r["consistent"]:
                a = alternative_readings(c, max_n=max_n)
                hit = a[(a["reading"] != "as reported") & (a["at_expected"] != "")]
                if len(hit):
                    alt = f"{hit['reading'].iloc[0]}: {hit['at_expected'].iloc[0]}"
            row["alternative"] = alt
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):  # keep True / False / None as Python objects (None = undecided)
        df["consistent"] = pd.Series([r["consistent"] for r in rows], dtype=object)
        df["between"] = df["between"].astype(bool)
    return df


def _pct(k: int, n: int, decimals: int) -> float:
    """k/n in percent, half-up rounded exactly (integer arithmetic)."""
    S = 100 * 10 ** decimals
    return ((2 * k * S + n) // (2 * n)) / 10 ** decimals


def _pct_float(x: float, decimals: int) -> float:
    q = Decimal(repr(float(x) * 100)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return float(q)


def _fold_number(fold) -> str:
    """0-based fold index -> the 1-based number printed in tables; other labels unchanged."""
    try:
        return str(int(fold) + 1)
    except (TypeError, ValueError):
        return str(fold)


def claims_from_fold_table(fold_table_df: pd.DataFrame, name: str, decimals: int = 2
                           ) -> list[Claim]:
    """Claims from :func:`helpers.evidence.metrics.fold_table` output, printed as the companion prints.

    Per-fold rows and the ``pooled`` row become ``single`` claims with known class counts
    (values recomputed from the integer counts, half-up to ``decimals``); the ``mean`` row
    becomes a ``mean_over_folds`` claim in the same group, so :func:`ledger_table` checks it
    against the fold rows. Rows lacking a class (rate undefined) are skipped. Folds are
    named from 1, as the paper's Table 6 and the summary's Table 6 number them.
    """
    claims = []
    for _, r in fold_table_df.iterrows():
        fold = r["fold"]
        tp, fn, fp, tn = (int(r[c]) for c in ("tp", "fn", "fp", "tn"))
        if fold == "mean":
            vals = [r["accuracy"], r["sensitivity"], r["specificity"]]
            if any(pd.isna(v) for v in vals):
                continue
            a, s, p = (_pct_float(v, decimals) for v in vals)
            claims.append(Claim(f"{name} mean", a, s, p, kind="mean_over_folds", decimals=decimals,
                                source=f"{name} fold mean", group=name, rounding="round"))
            continue
        if tp + fn == 0 or fp + tn == 0:
            continue
        a = _pct(tp + tn, tp + fn + fp + tn, decimals)
        s, p = _pct(tp, tp + fn, decimals), _pct(tn, tn + fp, decimals)
        label = "pooled" if fold == "pooled" else f"fold {_fold_number(fold)}"
        claims.append(Claim(f"{name} {label}", a, s, p, kind="single", n_pos=tp + fn,
                            n_neg=fp + tn, decimals=decimals, source=f"{name} {label}",
                            group=None if fold == "pooled" else name, rounding="round"))
    return claims
