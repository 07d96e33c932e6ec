"""The verdict on the paper: one row per claim, what the paper says, what this run measured with
its interval, and a verdict by one rule.

The rule (:func:`rule`), written once for every claim: a claim names a quantity, the side it says
the quantity lies on, and the value it must pass (for a paper's percentage: that value; for
"A beats B": a difference of 0; for "looks at the lungs": the share uniform heat would give).

* **supported**: the 95 % interval lies wholly on the claimed side (or, for the paper's own
  percentages, holds the paper's value or lies above it);
* **refuted**: the interval lies wholly on the other side;
* **not supported**: the interval reaches both sides (the run cannot tell);
* **not testable at this protocol**: the run has no such number (the model did not train, the
  data hold no such source, the stage did not run).

A model flagged "did not learn" (:func:`helpers.evidence.dynamics.learning`) makes every claim
about it not testable. Everything is read from the run's saved tables; nothing is computed here
but the selection and the rule.
"""
from __future__ import annotations

import math

import pandas as pd

from helpers.evidence import ledger

__all__ = ["COLUMNS", "VERDICTS", "rule", "claims", "markdown", "NOTEBOOK_CLAIMS", "reading"]

COLUMNS = ["claim", "paper", "measured", "value", "lo", "hi", "threshold", "side", "verdict", "source"]
VERDICTS = ("supported", "refuted", "not supported", "not testable at this protocol")
NOT_TESTABLE = VERDICTS[3]

#: the paper's abstract / Table 6 average for the proposed model, in %
PAPER_HRNET = {"accuracy": 99.26, "sensitivity": 98.53, "specificity": 98.82}
#: a source enters the "unbiased" claim with at least this many films of each class (a handful of
#: films gives an interval that says nothing)
MIN_PER_CLASS = 10
#: Table 6's lowest fold accuracy, in % (helpers.evidence.ledger holds the table)
PAPER_WORST_FOLD = min(a for _, a, _, _ in ledger.TABLE6)


def _f(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def rule(lo, hi, threshold, side: str = "above", reach: bool = False) -> str:
    """The verdict of an interval ``[lo, hi]`` on a claim that the quantity lies ``side``
    ("above" or "below") ``threshold``. ``reach``: the claim is a reported value, so an interval
    that holds it supports it too (the run reproduces the number)."""
    lo, hi, t = _f(lo), _f(hi), _f(threshold)
    if not all(math.isfinite(v) for v in (lo, hi, t)):
        return NOT_TESTABLE
    if side not in ("above", "below"):
        raise ValueError(f"side must be 'above' or 'below', got {side!r}")
    if side == "below":
        lo, hi, t = -hi, -lo, -t
    if lo > t or (reach and lo <= t <= hi):
        return "supported"
    if hi < t:
        return "refuted"
    return "not supported"


def _row(claim, paper, measured, value, lo, hi, threshold, side, source, reach=False, testable=True):
    v = rule(lo, hi, threshold, side, reach) if testable else NOT_TESTABLE
    return {"claim": claim, "paper": paper, "measured": measured, "value": _f(value), "lo": _f(lo),
            "hi": _f(hi), "threshold": _f(threshold), "side": side, "verdict": v, "source": source}


def _ci(v, lo, hi, pct: bool = False) -> str:
    if not math.isfinite(_f(v)):
        return "n/a"
    if pct:
        return f"{100 * _f(v):.1f} % [{100 * _f(lo):.1f}, {100 * _f(hi):.1f}]"
    return f"{_f(v):.3f} [{_f(lo):.3f}, {_f(hi):.3f}]"


def claims(table7: pd.DataFrame | None, fold_table: pd.DataFrame | None,
           comparisons: pd.DataFrame | None, heat: pd.DataFrame | None,
           within: pd.DataFrame | None, learning: pd.DataFrame | None,
           reference: str = "hrnet") -> pd.DataFrame:
    """The verdict table of one run from its saved tables (any of them may be None)."""
    learned = {} if learning is None or learning.empty else {
        str(m): (ok is not False) for m, ok in zip(learning["model"], learning["learned"])}
    ok = learned.get(reference, True)
    rows = []
    t7 = None if table7 is None or table7.empty else table7.set_index(table7["model"].astype(str))
    for m, paper in PAPER_HRNET.items():
        r = t7.loc[reference] if t7 is not None and reference in t7.index else None
        rows.append(_row(f"HRNet {m} (abstract, Table 6 average)", f"{paper:.2f} %",
                         _ci(r[m], r[f"{m}_lo"], r[f"{m}_hi"], pct=True) if r is not None else "n/a",
                         *(r[[m, f"{m}_lo", f"{m}_hi"]] if r is not None else (None,) * 3),
                         paper / 100, "above", "table7.csv", reach=True, testable=ok and r is not None))
    ft = None if fold_table is None or fold_table.empty else fold_table[
        ~fold_table["fold"].astype(str).isin(["pooled", "mean"])]
    folds_claim = f"every test fold at least {PAPER_WORST_FOLD:.2f} % accurate (Table 6)"
    folds_paper = f"{PAPER_WORST_FOLD:.2f}-100 %"
    if ft is not None and len(ft):
        worst = ft.loc[pd.to_numeric(ft["accuracy"]).idxmin()]
        lowest = _ci(worst["accuracy"], worst["accuracy_lo"], worst["accuracy_hi"], True)
        rows.append(_row(folds_claim, folds_paper, f"lowest fold: {lowest}", worst["accuracy"],
                         worst["accuracy_lo"], worst["accuracy_hi"], PAPER_WORST_FOLD / 100, "above",
                         "fold_table.csv", reach=True, testable=ok))
    else:
        rows.append(_row(folds_claim, folds_paper, "n/a", None, None, None, PAPER_WORST_FOLD / 100, "above",
                         "fold_table.csv", testable=False))
    comp = None if comparisons is None or comparisons.empty else comparisons.set_index(
        comparisons["model"].astype(str))
    for m, name in (("resnet152", "ResNet152"), ("densenet121", "DenseNet121"),
                    ("efficientnet_b4", "EfficientNet-B4")):
        r = comp.loc[m] if comp is not None and m in comp.index else None
        rows.append(_row(f"HRNet beats {name} (Table 7)", "higher accuracy",
                         ("ROC-AUC difference " + _ci(r["auc_diff"], r["auc_diff_lo"], r["auc_diff_hi"]))
                         if r is not None else "n/a",
                         *(r[["auc_diff", "auc_diff_lo", "auc_diff_hi"]] if r is not None else (None,) * 3),
                         0.0, "above", "comparisons.csv",
                         testable=ok and r is not None and learned.get(m, True)))
    u = f"{reference}_unsegmented"
    r = comp.loc[u] if comp is not None and u in comp.index else None
    rows.append(_row("segmentation helps (Fig. 9)", "segmented better than full image",
                     ("ROC-AUC difference " + _ci(r["auc_diff"], r["auc_diff_lo"], r["auc_diff_hi"]))
                     if r is not None else "n/a",
                     *(r[["auc_diff", "auc_diff_lo", "auc_diff_hi"]] if r is not None else (None,) * 3),
                     0.0, "above", "comparisons.csv", testable=ok and r is not None and learned.get(u, True)))
    h = None
    if heat is not None and len(heat):
        # the proposed model's maps on its own (segmented) inputs (recomputed.heat_share_ci)
        h = heat[(heat["quantity"].astype(str) == "share_lung")
                 & heat["model"].astype(str).isin([reference, f"{reference} (segmented)"])
                 & (heat["fold"].astype(str) == "pooled") & (heat["label"].astype(str) == "all")]
        h = h.iloc[0] if len(h) else None
    rows.append(_row("the model looks at the lungs (Figs. 9, 12)", "heat on the lungs",
                     (f"share of Grad-CAM heat in the lungs {_ci(h['mean'], h['lo'], h['hi'])} "
                      f"(uniform heat: {_f(h['chance']):.3f})") if h is not None else "n/a",
                     *(h[["mean", "lo", "hi", "chance"]] if h is not None else (None,) * 4), "above",
                     "heat_share_ci.csv", testable=ok and h is not None))
    w = None if within is None or within.empty else within[
        (within["model"].astype(str) == reference) & (pd.to_numeric(within["n_pos"]) >= MIN_PER_CLASS)
        & (pd.to_numeric(within["n_neg"]) >= MIN_PER_CLASS)]
    if w is not None and len(w):
        worst = w.loc[pd.to_numeric(w["auc_lo"]).idxmin()]
        text = "; ".join(f"{s} {_ci(a, lo, hi)} ({int(p)}/{int(n)})" for s, a, lo, hi, p, n in
                         zip(w["source"], w["auc"], w["auc_lo"], w["auc_hi"], w["n_pos"], w["n_neg"]))
        rows.append(_row("unbiased: detects COVID-19 within one hospital", "no bias",
                         f"ROC-AUC within a source (COVID/non-COVID films): {text}",
                         worst["auc"], worst["auc_lo"], worst["auc_hi"], 0.5, "above", "within_source.csv",
                         testable=ok))
    else:
        rows.append(_row("unbiased: detects COVID-19 within one hospital", "no bias",
                         f"no source gave at least {MIN_PER_CLASS} films of each class", None, None, None,
                         0.5, "above",
                         "within_source.csv", testable=False))
    return pd.DataFrame(rows, columns=COLUMNS)


def markdown(table: pd.DataFrame) -> str:
    """The verdict table as markdown (claim, paper, measured, verdict)."""
    lines = ["| claim of the paper | paper | measured (95 % intervals) | verdict |", "|---|---|---|---|"]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.claim} | {r.paper} | {r.measured} | **{r.verdict}** |")
    return "\n".join(lines) + "\n"


#: the paper's claims each notebook bears on (the start of the claim's text in the verdict table)
NOTEBOOK_CLAIMS: dict[str, tuple[str, ...]] = {
    "01": ("unbiased",),
    "02": ("segmentation helps",),
    "03": ("segmentation helps", "the model looks at the lungs"),
    "04": ("HRNet accuracy", "HRNet sensitivity", "HRNet specificity", "every test fold"),
    "05": ("HRNet beats", "segmentation helps"),
    "05a": ("unbiased", "the model looks at the lungs"),
    "05b": ("unbiased",),
    "05c": ("unbiased",),
    "06": (),                                  # every claim
}


def reading(out_dir, notebook: str) -> str:
    """The verdict rows of the claims ``notebook`` (e.g. "04") bears on, read from the run's saved
    verdict table (``figures/verdict.csv``, written by notebook 06), as lines a reader can scan;
    a note saying where it comes from when the run has none yet."""
    from helpers.run.artefacts import ART

    if notebook not in NOTEBOOK_CLAIMS:
        raise ValueError(f"unknown notebook {notebook!r}; choose from {sorted(NOTEBOOK_CLAIMS)}")
    t = ART.verdict.find(out_dir)
    if t is None or t.empty:
        return (f"No verdict in this run yet ({ART.verdict.rel()}): notebook 06 builds it from every "
                "stage's saved tables, and ./run_all.sh runs it last. Re-run this cell afterwards.")
    keys = NOTEBOOK_CLAIMS[notebook]
    rows = t[[not keys or str(c).startswith(keys) for c in t["claim"]]]
    lines = [f"The paper's claims this notebook bears on ({ART.verdict.rel()}, one rule for every claim):"]
    lines += [f"- {r.claim}: paper {r.paper}; measured {r.measured} -> {str(r.verdict).upper()}"
              for r in rows.itertuples()]
    return "\n".join(lines)
