"""Endpoint parameters checked before any work, and user strings made text.

Every endpoint is reachable by a script with any JSON: NaN, Infinity, strings, None, lists, 1e9. Each
parameter is checked for type, range and finiteness and refused in one line (`ParamError`); a file name or a
CSV header shown on the page is escaped, so it reads as the characters it is, never as markup.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

# what can start markup mid-line (links, emphasis, code, maths); an underscore inside a word never does
_MARKDOWN = re.compile(r"([\\`*\[\]~$]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")  # a newline in a name could start a heading or a list


class ParamError(ValueError):
    """A parameter an endpoint cannot take; one line naming it and what it takes."""


def whole(value: Any, name: str, low: int, high: int) -> int:
    """A whole number in [low, high]: bools, strings, None, lists, NaN, infinities and fractions refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(f"{name} must be a whole number from {low} to {high}, not {type(value).__name__}")
    if not math.isfinite(value) or value != int(value) or not low <= value <= high:
        raise ParamError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return int(value)


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ParamError(f"{name} must be true or false, not {type(value).__name__}")
    return value


def short_text(value: Any, name: str, most: int = 256) -> str:
    """A string (None: empty) of at most `most` characters."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > most:
        raise ParamError(f"{name} must be a text of at most {most} characters")
    return value


def strings(value: Any, name: str, most: int = 16) -> list[str]:
    """A list (None: empty; one string: a list of it) of at most `most` strings of at most 256 characters."""
    value = [] if value is None else [value] if isinstance(value, str) else value
    if (not isinstance(value, list) or len(value) > most
            or not all(isinstance(v, str) and len(v) <= 256 for v in value)):
        raise ParamError(f"{name} must be a list of at most {most} names")
    return value


def text(s: str) -> str:
    """A user string (file name, CSV header) for Markdown: shown as the characters it is, never as markup."""
    return _MARKDOWN.sub(r"\\\1", html.escape(_CONTROL.sub(" ", str(s)), quote=False))
