"""A dataclass field that carries its command line (help, group, flags): the training script builds its parser
from these, so each setting is declared once, with its default and its help, in the dataclass that holds it."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def setting(default: Any, help: str, group: str, *flags: str, **argparse: Any) -> Any:
    """`help` says what the field is (for a bool: what True means; the flags are made from it: --field-name
    sets it, --no-field-name clears it). `flags` default to --field-name; for a bool they respell the switch away
    from the default. `argparse`: choices, metavar, required..., passed to add_argument as they are."""
    meta = {"help": help, "group": group, "flags": flags, **argparse}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)
