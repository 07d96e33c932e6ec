"""The markdown reports' templates (``helpers/report/templates/``) and how they are rendered.

The wording of ``SUMMARY.md`` and ``MODEL_CARD.md`` lives in jinja2 templates; Python builds a
plain dict per part (rows already selected, numbers raw or formatted) and the templates format
the raw numbers with the filters of :data:`FILTERS` (:mod:`helpers.report.formats`). Undefined
names raise (``StrictUndefined``); block tags leave no blank lines behind (``trim_blocks``,
``lstrip_blocks``); no escaping (the output is markdown).

Every rendered part ends with a newline, and a blank line after it where the template ends with
one, so parts are joined by plain concatenation. :func:`isolated` turns a part that raises into
the one-line failure note (``templates/failed.md.j2``), so one broken part does not stop a
document; :func:`document` collapses runs of blank lines.
"""
from __future__ import annotations

import functools
from typing import Callable

import jinja2

from helpers.report import formats

#: template filters: ``{{ x|pct(lo, hi) }}``, ``{{ x|auc }}``, ``{{ df|table }}`` (a whole markdown
#: table), ``{{ name|cell }}`` (one cell of a table written in the template), ...
FILTERS: dict[str, Callable] = {
    "pct": formats.fmt_pct, "auc": formats.fmt_auc, "p": formats.fmt_p, "num": formats.num,
    "counts": formats.counts, "fixed": formats.fixed, "thousands": formats.thousands,
    "setting": formats.setting, "table": formats.md_table, "cell": formats.md_cell,
}


@functools.cache
def environment() -> jinja2.Environment:
    """The templates of ``helpers/report/templates`` with :data:`FILTERS`."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("helpers.report", "templates"),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, autoescape=False)
    env.filters.update(FILTERS)
    return env


def render(name: str, **context) -> str:
    """Template ``name`` (a path under ``templates/``) rendered with ``context``."""
    return environment().get_template(name).render(**context)


def isolated(fn: Callable[..., str], *args) -> str:
    """``fn(*args)``, or the failure note (``_This section could not be built: Type: message_``)
    when it raises."""
    try:
        return fn(*args)
    except Exception as exc:  # a broken part must not hide the others
        return render("failed.md.j2", error=f"{type(exc).__name__}: {exc}")


def document(name: str, **context) -> str:
    """Template ``name`` rendered as a whole markdown file: at most one blank line in a row, one
    newline at the end."""
    text = render(name, **context)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"
