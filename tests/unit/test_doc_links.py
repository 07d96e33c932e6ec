"""Every relative link in README.md, docs/ and the committed figure folders' Markdown names a file
or folder that exists (a link written for README and moved into docs/ points one level too low)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "figures").glob("*/*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def broken_links(doc: Path) -> list[str]:
    """Relative link targets in ``doc`` (Markdown ``](target)``) that do not exist."""
    out = []
    for m in LINK.finditer(doc.read_text()):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        if not (doc.parent / target).exists():
            out.append(target)
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    assert broken_links(doc) == [], f"{doc.relative_to(ROOT)}: links to missing files"


def test_the_check_finds_a_link_one_level_too_low(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "figures").mkdir()
    doc = tmp_path / "docs" / "x.md"
    doc.write_text("[a](figures) [b](../figures) [c](https://example.org/none) [d](x.md#top)\n")
    assert broken_links(doc) == ["figures"]
