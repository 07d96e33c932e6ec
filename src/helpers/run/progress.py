"""Progress lines that end in their final state.

Inside a Jupyter kernel (JupyterLab, papermill, nbval) a loop shows *one* line that is updated in
place through an IPython display handle; the saved notebook keeps only the last state of that
line ("unet fold 2/3: 25/25 epochs in 31 s · val loss 0.061"), never a frozen 0 % bar. In a
terminal the same loop draws a tqdm bar and ends with the same final line; when output goes to a
file or a log (CI), only the final line is written.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
MIN_INTERVAL_S = 1.0  # seconds between two live updates of a line

#: Where a line's text goes besides the screen: ``reporter(text)`` after every step and at the
#: end. :mod:`helpers.run.executor` sets it inside fold tasks that run in other processes, so
#: the driver can show their epochs; None (the default) reports nowhere.
reporter: Callable[[str], None] | None = None


def in_kernel() -> bool:
    """True inside a Jupyter kernel (not a plain IPython terminal)."""
    mod = sys.modules.get("IPython")
    if mod is None:
        return False
    ip = mod.get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Line:
    """One progress line for ``total`` units of work.

    ``step(note)`` after each unit, ``done(note)`` at the end (called by the context manager if
    not before; an exception leaves the line saying where it stopped).
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "step"):
        self.desc, self.total, self.unit = desc, total, unit
        self.n, self.note, self.t0, self._last = 0, "", time.time(), 0.0
        self._closed = False
        self._handle = self._bar = None
        if in_kernel():
            from IPython.display import display

            self._handle = display(Text(self._text()), display_id=True)
        elif sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def _text(self, final: bool = False) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        took = time.time() - self.t0
        when = f"in {took:.0f} s" if final else f"{took:.0f} s"
        units = {"batch": "batches"}.get(self.unit, self.unit + "s")
        return f"{self.desc}: {count} {units} {when}" + (f" · {self.note}" if self.note else "")

    def step(self, note: str = "", n: int = 1) -> None:
        self.n += n
        if note:
            self.note = note
        if reporter is not None:
            reporter(self._text())
        if self._bar is not None:
            self._bar.update(n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
        elif self._handle is not None and time.time() - self._last >= MIN_INTERVAL_S:
            self._last = time.time()
            self._handle.update(Text(self._text()))

    def done(self, note: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        if note:
            self.note = note
        if reporter is not None:
            reporter(self._text(final=True))
        if self._bar is not None:
            self._bar.close()
        if self._handle is not None:
            self._handle.update(Text(self._text(final=True)))
        else:
            print(self._text(final=True), flush=True)

    def __enter__(self) -> "Line":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and exc_type is not GeneratorExit and not self._closed:
            self.note = f"stopped by {exc_type.__name__}" + (f" after: {self.note}" if self.note else "")
        self.done()


def iterate(items: Iterable[T], desc: str, total: int | None = None, unit: str = "item") -> Iterator[T]:
    """Yield ``items`` while one :class:`Line` counts them."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Line(desc, total, unit) as line:
        for item in items:
            yield item
            line.step()


class Text:
    """A display object whose only representation is one line of plain text."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text
