"""Every command README.md, BENCHMARKS.md and weights/README.md show runs as written from the repository root:
each bench script answers --help without PYTHONPATH (as in a fresh clone after the README's install), and every
flag a documented command uses exists in that command's parser (a renamed flag fails here, not for a reader), and
README.md's commands run on the venv its set-up made."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "DESIGN.md", ROOT / "weights" / "README.md"]
COMMAND = re.compile(r"python (-m reid_core|bench/[\w.]+\.py|train\.py)([^`\n]*)")
# a program typed bare ("python train.py") rather than from the venv the README's set-up made (".venv/bin/python"):
# after set-up a bare `python` is the system's, without torch
BARE_PROGRAM = re.compile(r"(?:^|[\s`(])(?<!-m )((?:python|torchrun|pytest) \S+)", re.M)


def documented() -> list[tuple[str, list[str], str]]:
    """(program, words after it, where) for each command in the docs; a line ending in \\ continues."""
    out = []
    for doc in DOCS:
        text = doc.read_text().replace("\\\n", " ")
        for m in COMMAND.finditer(text):
            out.append((m.group(1), m.group(2).split(), f"{doc.name}: {m.group(0)[:80]}"))
    return out


def flags(words: list[str]) -> set[str]:
    return {f for w in words for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", w)}


def test_the_docs_show_commands() -> None:
    programs = {p for p, _, _ in documented()}
    for doc in DOCS:  # the module-style commands of before (python -m reid_core.evaluate) are gone
        assert not re.search(r"python -m reid_core\.\w", doc.read_text()), doc.name
    assert {"-m reid_core", "train.py"} <= programs and len([p for p in programs if p.startswith("bench/")]) >= 6


def test_readme_commands_run_on_the_venvs_python() -> None:
    """What a new user types after the README's set-up names the venv's programs (or the README says to activate
    the venv first): a bare `python train.py` runs the system's Python and fails on "No module named 'torch'"."""
    text = (ROOT / "README.md").read_text()
    assert BARE_PROGRAM.findall(text) == []
    assert "source .venv/bin/activate" in text
    shown = re.findall(r"\.venv/bin/(?:python|torchrun) (-m reid_core|train\.py|app\.py|--nproc)", text)
    assert {"-m reid_core", "train.py", "app.py", "--nproc"} <= set(shown) and len(shown) >= 20


def test_reid_core_commands_use_real_verbs_and_flags() -> None:
    from reid_core.cli import build_parser

    root = build_parser()
    verbs = root._subparsers._group_actions[0].choices
    for program, words, where in documented():
        if program != "-m reid_core" or not words or not re.fullmatch(r"[a-z|]+", words[0]):
            continue  # prose about the program ("`python -m reid_core <verb>`"), not a command
        for verb in words[0].split("|"):
            assert verb in verbs, where
            parser, rest = verbs[verb], words[1:]
            if verb == "gallery" and rest and not rest[0].startswith("-"):
                actions = parser._subparsers._group_actions[0].choices
                assert set(rest[0].split("|")) <= set(actions), where
                for action in rest[0].split("|"):
                    assert flags(rest[1:]) <= set(actions[action]._option_string_actions), where
            else:
                assert flags(rest) <= set(parser._option_string_actions), where


def test_train_commands_use_real_flags() -> None:
    sys.path.insert(0, str(ROOT))
    import train

    known = set(train.build_parser()._option_string_actions)
    for program, words, where in documented():
        if program == "train.py":
            assert flags(words) <= known, (where, flags(words) - known)


@pytest.mark.slow
def test_bench_scripts_run_as_written() -> None:
    """From the repository root, no PYTHONPATH: what a reader of BENCHMARKS.md types."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    scripts = sorted(p for p in (ROOT / "bench").glob("*.py") if "__main__" in p.read_text())
    mentioned: dict[str, set[str]] = {}
    for program, words, _ in documented():
        if program.startswith("bench/"):
            mentioned.setdefault(program, set()).update(flags(words))
    assert set(mentioned) <= {f"bench/{p.name}" for p in scripts}, "a documented bench script that does not exist"

    def helps(script: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, f"bench/{script.name}", "--help"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(scripts, pool.map(helps, scripts), strict=True))
    for script, r in results.items():
        assert r.returncode == 0 and "usage:" in r.stdout, (script.name, r.stderr[-2000:])
        missing = {f for f in mentioned.get(f"bench/{script.name}", set()) if f not in r.stdout}
        assert not missing, (script.name, missing)

