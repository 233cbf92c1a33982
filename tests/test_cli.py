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
    assert len(list(parsers(build_parser(), "reid_core"))) == 1 + 11 + 5 + 3  # every verb, gallery and video action


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


def test_help_opens_for_the_tool_and_every_verb(capsys: pytest.CaptureFixture) -> None:
    """`--help` and `-h` print the verbs, one line each (a `%` in a help once crashed argparse's formatting);
    each verb's (and each gallery action's) help opens; no verb at all lists the verbs too, with status 2."""
    verbs = build_parser()._subparsers._group_actions[0].choices
    for flag in ("--help", "-h"):
        with pytest.raises(SystemExit) as done:
            cli([flag])
        out = capsys.readouterr().out
        assert done.value.code == 0 and all(re.search(rf"^ {{4}}{v}\b", out, re.M) for v in verbs), out
        assert "Platt scaling: 50 % is" in out
    for words in [[v] for v in verbs] + [["gallery", a] for a in ("add", "build", "query", "info", "clear")]:
        with pytest.raises(SystemExit) as done:
            cli([*words, "--help"])
        assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m reid_core " + words[0])
    assert cli([]) == 2
    err = capsys.readouterr().err
    assert all(re.search(rf"^ {{4}}{v}\b", err, re.M) for v in verbs), err


@pytest.mark.slow
def test_help_runs_as_a_process() -> None:
    """What a user types, in a fresh process: no traceback, the verbs listed."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "reid_core", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "calibrate" in r.stdout


def test_embed_names_what_it_leaves_out(crops: tuple[Path, Path], tiny_weights: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    """A .txt and an .avif beside the crops: `embed` names both with the line `uploads` and `gallery add` give
    (images.skipped_line over load_image's reason), and counts them as skipped."""
    folder = crops[0].parent
    (folder / "notes.txt").write_text("not a picture")
    (folder / "photo.avif").write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(64))
    (folder / ".DS_Store").write_bytes(b"\x00")  # hidden: left out silently, as in a zip
    weights = ["--weights", str(tiny_weights)]
    assert cli(["embed", str(folder), "--out", str(tmp_path / "e.safetensors"), *weights]) == 0
    out, err = capsys.readouterr()
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert "embedded 2 images (2 skipped)" in out
    assert skipped == [f"skipped {folder / 'notes.txt'}: not a readable image (not an image file, or not JPEG, PNG, "
                       "WebP, BMP, GIF or TIFF)",
                       f"skipped {folder / 'photo.avif'}: AVIF images are not supported (use JPEG, PNG, WebP, BMP, "
                       "GIF or TIFF)"]
    assert cli(["uploads", str(folder / "photo.avif"), str(crops[1])]) == 1
    assert capsys.readouterr().err.strip() == skipped[1].replace(str(folder / "photo.avif"), "photo.avif")
    assert cli(["gallery", "add", "--gallery", str(tmp_path / "g.sqlite"), *weights, str(folder / "photo.avif"),
                str(crops[1])]) == 0
    assert "- skipped photo.avif: AVIF images are not supported" in capsys.readouterr().err


def test_gallery_query_k_and_empty_gallery(crops: tuple[Path, Path], tiny_weights: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    """The app's rule for k (a whole number from 1 to 50) and an emptied gallery: one line each, status 2."""
    g = ["--gallery", str(tmp_path / "g.sqlite"), "--weights", str(tiny_weights)]
    assert cli(["gallery", "add", *g, str(crops[1])]) == 0
    capsys.readouterr()
    query = ["gallery", "query", *g, "--image", str(crops[1])]
    for k in ("0", "-3", "51"):
        assert cli([*query, "--k", k]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"error: --k {k}: k must be a whole number from 1 to 50\n"
    assert cli([*query, "--k", "50"]) == 0 and len(capsys.readouterr().out.splitlines()) == 1
    assert cli(["gallery", "clear", *g]) == 0
    capsys.readouterr()
    assert cli(query) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: {tmp_path / 'g.sqlite'}: the gallery is empty (add images with `add` or " \
                                "`build`)\n"


def test_gallery_add_names_the_path_as_typed_and_leaves_no_file(tiny_weights: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """A missing folder (the shell passes `missing/*.jpg` on as typed): that path in the line, no gallery file;
    an add that takes nothing leaves no file either."""
    path = tmp_path / "g.sqlite"
    typed = str(tmp_path / "missing" / "*.jpg")
    assert cli(["gallery", "add", "--gallery", str(path), "--weights", str(tiny_weights), typed]) == 2
    assert capsys.readouterr().err == f"error: {typed}: not found\n" and list(tmp_path.iterdir()) == []
    bad = tmp_path / "notes.txt"
    bad.write_text("text")
    assert cli(["gallery", "add", "--gallery", str(path), "--weights", str(tiny_weights), str(bad), typed]) == 1
    err = capsys.readouterr().err
    assert f"- skipped {bad.name}: not a readable image" in err and f"- skipped {typed}: file not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_missing_weights_are_named_as_missing(crops: tuple[Path, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    """Not "missing my_cameras.json beside it": the file the user named is not there."""
    missing = tmp_path / "weights" / "my_cameras.safetensors"
    assert cli(["compare", str(crops[0]), str(crops[1]), "--weights", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: not found\n"
    assert cli(["calibrate", "--data", str(tmp_path), "--weights", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: not found\n"


@pytest.mark.slow
def test_the_package_installs_with_a_reid_command(tmp_path: Path) -> None:
    """`pip install -e .` (README's commands) gives the console script `reid`, which runs from any folder. The
    throwaway venv sees this interpreter's packages through a .pth, so nothing is downloaded but the build
    backend (pip's build isolation; skipped when no index is reachable)."""
    import shutil
    import subprocess
    import sysconfig

    clone, venv = tmp_path / "clone", tmp_path / "venv"  # what the package is made of, as in the working tree
    shutil.copytree(ROOT / "reid_core", clone / "reid_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, clone / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e",
                        str(clone)], capture_output=True, text=True, timeout=600)
    if r.returncode and "setuptools" in r.stderr and "No module" in r.stderr:
        pytest.skip("no setuptools to build with: " + r.stderr.strip().splitlines()[-1])
    assert r.returncode == 0, r.stderr[-2000:]
    reid = venv / "bin" / "reid"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([str(reid), "--help"], cwd=elsewhere, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: reid ") and "calibrate" in r.stdout, r.stderr
    r = subprocess.run([str(reid), "uploads", "missing.jpg"], cwd=elsewhere, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "skipped missing.jpg: file not found" in r.stderr, r.stderr
