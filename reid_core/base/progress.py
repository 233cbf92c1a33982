"""Progress bars that keep out of the results: on stderr, and never on a line that stdout then writes onto."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, **kw: Any) -> tqdm:
    """tqdm on stderr. On a terminal the bar is cleared when done; piped (`2>&1 | tee log`) it ends with a newline
    instead, since a cleared bar ends in a bare carriage return and the next result printed would join its line."""
    return tqdm(iterable, file=sys.stderr, leave=not sys.stderr.isatty(), **kw)
