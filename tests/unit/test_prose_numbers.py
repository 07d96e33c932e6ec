"""Every interval README.md and docs/evidence.md quote about a committed run is in that run's tables.

The prose around the generated verdict table is written by hand; when a run is republished its
numbers move and the prose can go stale without anyone noticing. Here each paragraph that links
``figures/<run>`` has every ``value [lo, hi]`` it quotes (an AUC, a difference, a share in %)
looked up in the runs it links: some row of their CSV files must hold three consecutive numbers that
round to the quoted ones (percentages divided by 100 first), or their generated ``SUMMARY.md`` must
print it as quoted (the audit table is published only there).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "evidence.md"]

_NUM = r"-?\d+(?:\.\d+)?"
INTERVAL = re.compile(rf"(?<![\w.])({_NUM})( %)? \[({_NUM}), ({_NUM})\]")
RUN_LINK = re.compile(r"figures/([\w-]+)/")


def quoted_intervals(paragraph: str) -> list[tuple[str, str, str, bool]]:
    """``(value, lo, hi, percent)`` as written, for each ``value [lo, hi]`` in ``paragraph``."""
    return [(m.group(1), m.group(3), m.group(4), bool(m.group(2))) for m in INTERVAL.finditer(paragraph)]


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, generated verdict blocks left out (test_verdict holds those)."""
    text = re.sub(r"<!-- verdict: .*?<!-- /verdict -->", "", text, flags=re.S)
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def _decimals(s: str) -> int:
    return len(s.split(".")[1]) if "." in s else 0


def triples(folder: Path) -> list[tuple[float, float, float]]:
    """Every run of three consecutive numeric cells in the run's CSV files."""
    out = []
    for csv in sorted(folder.glob("*.csv")):
        try:
            t = pd.read_csv(csv)
        except pd.errors.EmptyDataError:
            continue
        num = t.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        for row in num:
            out.extend((row[i], row[i + 1], row[i + 2]) for i in range(len(row) - 2))
    return out


def found(q: tuple[str, str, str, bool], table: list[tuple[float, float, float]]) -> bool:
    scale = 100.0 if q[3] else 1.0
    want = [float(s) for s in q[:3]]
    digits = [_decimals(s) for s in q[:3]]
    for t in table:
        if all(round(v * scale, d) == w for v, d, w in zip(t, digits, want)):
            return True
    return False


def test_the_parser_reads_the_prose_forms():
    text = ("HRNet 0.519 [0.436, 0.603] inside, a difference of -0.089 [-0.119, -0.058], "
            "NIH normals 70.9 % [65.8, 75.5] (31.2 % when trained)")
    assert quoted_intervals(text) == [("0.519", "0.436", "0.603", False),
                                      ("-0.089", "-0.119", "-0.058", False),
                                      ("70.9", "65.8", "75.5", True)]
    table = [(0.5190583, 0.4355978, 0.6029446), (0.7090909, 0.6579055, 0.7554643)]
    assert found(("0.519", "0.436", "0.603", False), table)
    assert found(("70.9", "65.8", "75.5", True), table)
    assert not found(("0.502", "0.427", "0.581", False), table)   # a stale quote
    assert not found(("70.9", "65.8", "75.5", False), table)      # a share read as an AUC


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_quoted_intervals_are_in_the_linked_runs_tables(doc):
    text = doc.read_text()
    checked, missing = 0, []
    cache: dict[str, list] = {}
    for para in paragraphs(text):
        quotes = quoted_intervals(para)
        runs = sorted(set(RUN_LINK.findall(para)))
        if not quotes or not runs:
            continue
        table, summaries = [], ""
        for run in runs:
            if run not in cache:
                cache[run] = triples(ROOT / "figures" / run)
            table += cache[run]
            summary = ROOT / "figures" / run / "SUMMARY.md"
            summaries += summary.read_text() if summary.exists() else ""
        for q in quotes:
            checked += 1
            pct = " %" if q[3] else ""
            if f"{q[0]}{pct} [{q[1]}, {q[2]}]" in summaries:
                continue
            if not found(q, table):
                missing.append(f"{q[0]}{pct} [{q[1]}, {q[2]}] (paragraph citing {', '.join(runs)}: "
                               f"{para.strip()[:70]!r}...)")
    assert checked > 0, f"{doc.name}: no interval found next to a figures/<run> link; the parser broke"
    assert not missing, (f"{doc.name} quotes intervals that no table of the run it links holds "
                         "(republished run? update the prose from its tables):\n" + "\n".join(missing))
