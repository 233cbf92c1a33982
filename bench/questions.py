"""A bench script of several questions: each question a subcommand with its own flags and its own run
(bench/recipes.py, bench/engine_speed.py). Not a script."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Question = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None], str]


def ask(doc: str, questions: dict[str, Question]) -> None:
    """Parse `QUESTION --flags` (each question's flags from its own function) and run that question."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="question", required=True, metavar="QUESTION")
    for name, (flags, _, help) in questions.items():
        flags(sub.add_parser(name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter))
    args = ap.parse_args()
    questions[args.question][1](args)
