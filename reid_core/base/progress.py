"""Progress bars that keep out of the results: on stderr, and never on a line that stdout then writes onto.

A server reports a long job's progress elsewhere (the app's background self-training shows it on the page):
`listening(fn)` sends every bar this thread opens to `fn(desc, done, total)` after each unit, instead of stderr.
`fn` may raise to stop the work there (a cancel), or wait (a turn in a fair lane), between two units."""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

Listener = Callable[[str, int, "int | None"], None]
_local = threading.local()


class _Nowhere(io.TextIOBase):
    """Where a reported bar draws: nowhere (a long job's redraws would otherwise pile up in memory)."""

    def write(self, s: str) -> int:
        return len(s)


class _Reported(tqdm):
    """A bar that tells its listener after each unit (iteration or update)."""

    def __init__(self, *args: Any, listener: Listener, **kw: Any):
        self._listener = listener
        super().__init__(*args, **kw)

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        self._listener(self.desc.rstrip(": "), int(self.n), self.total)
        return shown


def progress_bar(iterable: Iterable | None = None, **kw: Any) -> tqdm:
    """tqdm on stderr. On a terminal the bar is cleared when done; piped (`2>&1 | tee log`) it ends with a newline
    instead, since a cleared bar ends in a bare carriage return and the next result printed would join its line.
    Under `listening`, the bar is reported to the listener instead, whether or not it was to be shown."""
    listener = getattr(_local, "listener", None)
    if listener is not None:
        kw.update(disable=False, file=_Nowhere(), mininterval=0, miniters=1)
        return _Reported(iterable, listener=listener, **kw)
    return tqdm(iterable, file=sys.stderr, leave=not sys.stderr.isatty(), **kw)


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Bars opened by this thread inside the block report to `listener` (see the module's docstring)."""
    before = getattr(_local, "listener", None)
    _local.listener = listener
    try:
        yield
    finally:
        _local.listener = before
