"""What a user meets at the command line beyond each verb's own job (issue #24): the app's person-crop warning,
help on every option, and output that a pipe keeps apart from the progress bars."""

from __future__ import annotations

import argparse
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import person
from PIL import Image

from reid_core.cli import build_parser
from reid_core.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent

BLANK_WARNING = "does not look like a person crop (nearly uniform: one flat colour)"


@pytest.fixture
def crops(tmp_path: Path) -> tuple[Path, Path]:
    """A blank white image and a person-like crop, in a folder of their own."""
    folder = tmp_path / "crops"
    folder.mkdir()
    blank, crop = folder / "blank_white.png", folder / "person.png"
    Image.new("RGB", (64, 128), "white").save(blank)
    person(1, 0, 0).resize((64, 128)).save(crop)
    return blank, crop


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "warning" in line]


def test_cli_warns_as_the_app_does(crops: tuple[Path, Path], tiny_weights: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    """A blank white image gets one warning line on stderr from every verb that takes an image, and its answer
    all the same on stdout; a person-like crop gets none."""
    blank, crop = crops
    weights = ["--weights", str(tiny_weights)]
    assert cli(["compare", str(blank), str(crop), *weights]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(("Same person: pair score ", "Different people: pair score ")) and warnings(err) == [
        f"warning: {blank}: {BLANK_WARNING}, so this verdict means little"]
    assert cli(["compare", str(crop), str(crop), *weights]) == 0
    assert warnings(capsys.readouterr().err) == []

    assert cli(["uploads", str(blank), str(crop)]) == 0
    out, err = capsys.readouterr()
    assert "2 usable image(s), 0 skipped" in out and warnings(err) == [f"warning: {blank.name}: {BLANK_WARNING}"]

    gallery = ["--gallery", str(tmp_path / "g.sqlite"), *weights]
    assert cli(["gallery", "add", *gallery, str(blank), str(crop)]) == 0
    out, err = capsys.readouterr()
    assert "added 2" in out and warnings(err) == [f"- warning {blank.name}: {BLANK_WARNING}"]

    assert cli(["embed", str(blank.parent), "--out", str(tmp_path / "e.safetensors"), *weights]) == 0
    out, err = capsys.readouterr()
    assert "embedded 2 images (0 skipped)" in out and warnings(err) == [f"warning: {blank}: {BLANK_WARNING}"]


def parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser and, below it, every verb's and sub-action's."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                yield from parsers(sub, f"{name} {verb}")


def test_every_option_has_help() -> None:
    sys.path.insert(0, str(ROOT))
    import train

    found = [(name, a.option_strings or a.dest) for root, prog in ((build_parser(), "reid_core"),
                                                                    (train.build_parser(), "train.py"))
             for name, p in parsers(root, prog) for a in p._actions
             if not isinstance(a, argparse._HelpAction) and not a.help]
    assert found == []
    assert len(list(parsers(build_parser(), "reid_core"))) == 1 + 10 + 5  # the walk reached every verb and action


def test_train_help_shows_defaults() -> None:
    """A flag with a value says its default; a bool flag (itself the change) and a required one do not."""
    sys.path.insert(0, str(ROOT))
    import train

    text = " ".join(train.build_parser().format_help().split())
    for shown in ("--lr LR peak learning rate (default: 0.00035)", "(default: resnet50)", "(default: 40 70)",
                  "--ids-per-batch P, --p P P: identities per PK batch (default: 16)", "(default: auto)"):
        assert shown in text, shown
    assert not re.search(r"--data DATA [^-]*\(default", text) and "(default: True)" not in text
    assert "(default: False)" not in text and "(default: )" not in text
    adapt = " ".join(build_parser()._subparsers._group_actions[0].choices["adapt"].format_help().split())
    assert "(default: " in adapt  # AdaptConfig's flags come from the same builder


def test_piped_output_keeps_results_off_the_progress_lines(market: Path, tiny_weights: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout and stderr into one pipe (`2>&1 | tee log`): every result line is a line of its own; the bars
    (on stderr, never stdout) end with a newline rather than a bare carriage return."""
    pipe = io.StringIO()  # not a terminal, like a pipe
    monkeypatch.setattr(sys, "stdout", pipe)
    monkeypatch.setattr(sys, "stderr", pipe)
    assert cli(["evaluate", "--weights", str(tiny_weights), "--data", str(market), "--threads", "1"]) == 0
    lines = pipe.getvalue().split("\n")
    bars = [line for line in lines if "batch" in line and "|" in line]
    results = [line for line in lines if re.match(r"R1 \d", line) or "queries x" in line]
    assert len(bars) == 2 and len(results) == 2  # query's and gallery's bars; metrics and sizes
    assert all("\r" not in line and "|" not in line for line in results), results


def test_each_verb_declares_its_flags_beside_its_handler() -> None:
    """A verb is its help, its flags (`<verb>_args`, just above its handler in cli.py) and its handler; the
    parser is only these put together."""
    import inspect

    from reid_core import cli as c

    sub = build_parser()._subparsers._group_actions[0].choices
    assert list(sub) == list(c.VERBS)
    for name, v in c.VERBS.items():
        assert (v.args.__name__, v.run.__name__) == (f"{name}_args", f"cmd_{name}")
        lines, start = inspect.getsourcelines(v.args)
        assert inspect.getsourcelines(v.run)[1] - (start + len(lines)) <= 4, name  # blank lines and the decorator
        alone = argparse.ArgumentParser()
        v.args(alone)
        assert [a.dest for a in alone._actions] == [a.dest for a in sub[name]._actions], name
