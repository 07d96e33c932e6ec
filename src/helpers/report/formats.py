"""Numbers as a reader sees them: the one module that turns a value into text.

Rates in percent with one decimal (``83.0 %``), AUCs, Dice, Brier and ECE with three decimals,
each optionally followed by its 95 % interval in brackets (``0.500 [0.400, 0.600]``); p-values
with three decimals or ``< 0.001``; counts as integers. A value that is missing or not a number
reads ``n/a``. Markdown tables (:func:`md_table`) and the cells of table figures
(:func:`figure_cell`) are formatted here too.

The summary, the model card, the reader tables and the figures use these functions; the report
templates get them as filters (:data:`helpers.report.render.FILTERS`).
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["to_float", "interval", "fmt_pct", "fmt_auc", "fmt_p", "num", "counts", "fixed", "thousands",
           "setting", "trimmed", "md_cell", "md_table", "figure_cell"]


def to_float(x) -> float:
    """``x`` as a float; NaN when it is not a number (None, text, ...)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def interval(x, lo=None, hi=None, *, scale: float = 1.0, decimals: int = 3, unit: str = "") -> str:
    """``x * scale`` with ``decimals`` and ``unit``, plus ``[lo, hi]`` when both are finite; ``n/a``
    when ``x`` is not a finite number."""
    v = to_float(x)
    if not math.isfinite(v):
        return "n/a"
    s = f"{scale * v:.{decimals}f}{unit}"
    lo, hi = to_float(lo), to_float(hi)
    if math.isfinite(lo) and math.isfinite(hi):
        s += f" [{scale * lo:.{decimals}f}, {scale * hi:.{decimals}f}]"
    return s


def fmt_pct(x, lo=None, hi=None, unit: str = " %") -> str:
    """A fraction as percent with one decimal, optionally with its interval: ``83.0 % [74.5, 89.1]``
    (``unit=""`` where a column header already says %)."""
    return interval(x, lo, hi, scale=100.0, decimals=1, unit=unit)


def fmt_auc(x, lo=None, hi=None) -> str:
    """An AUC (or Dice, Brier, ECE, share) with three decimals, optionally ``[lo, hi]``."""
    return interval(x, lo, hi)


def fmt_p(p) -> str:
    """A p-value: three decimals, ``< 0.001`` below that."""
    v = to_float(p)
    if not math.isfinite(v):
        return "n/a"
    return "< 0.001" if v < 0.001 else f"{v:.3f}"


def num(x) -> str:
    """A count as an integer (``12``)."""
    v = to_float(x)
    return str(int(v)) if math.isfinite(v) else "n/a"


def counts(n, n_pos, n_neg) -> str:
    """Images with the positives and negatives among them: ``86 (41/45)``."""
    return f"{num(n)} ({num(n_pos)}/{num(n_neg)})"


def fixed(x, decimals: int = 3) -> str:
    """A number with a fixed number of decimals (``0.412``)."""
    v = to_float(x)
    return f"{v:.{decimals}f}" if math.isfinite(v) else "n/a"


def thousands(x) -> str:
    """A number with thousands separators: ``50,000``."""
    return f"{x:,}"


def setting(v) -> str:
    """A profile setting: lists joined with commas (``none`` when empty), anything else as text."""
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) if len(v) else "none"
    return str(v)


def trimmed(v: float) -> str:
    """Three decimals without trailing zeros: ``0.5``, ``0.123``, ``12``."""
    return f"{v:.3f}".rstrip("0").rstrip(".")


def md_cell(v) -> str:
    """A value as a markdown table cell: ``|`` escaped, NaN empty, floats as :func:`trimmed`."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return trimmed(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(df, columns: Iterable[str] | None = None) -> str:
    """A DataFrame (or a list of row dicts) as a GitHub markdown table: cells as strings, ``|``
    escaped, NaN empty, floats with at most three decimals; ``_(no rows)_`` when empty."""
    if df is not None and not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    if df is None or df.empty:
        return "_(no rows)_"
    cols = list(columns) if columns is not None else list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df[cols].iterrows():
        lines.append("| " + " | ".join(md_cell(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def figure_cell(v) -> str:
    """A cell of a table figure: floats as :func:`trimmed`, below 0.001 with three significant
    digits; NaN empty; anything else as text."""
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.3g}" if abs(v) < 1e-3 else trimmed(v)
    return str(v)
