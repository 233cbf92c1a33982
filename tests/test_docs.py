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
    for doc in DOCS:  # the module-style commands of before (python -m reid_core.evaluation.evaluate) are gone
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
            if verb in ("gallery", "video") and rest and not rest[0].startswith("-"):
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
    subcommands: dict[tuple[str, str], set[str]] = {}  # (script, question) -> its flags
    for program, words, _ in documented():
        if program.startswith("bench/"):
            if words and re.fullmatch(r"[a-z][a-z-]*", words[0]):
                subcommands.setdefault((program, words[0]), set()).update(flags(words[1:]))
            else:
                mentioned.setdefault(program, set()).update(flags(words))
    documented_scripts = set(mentioned) | {script for script, _ in subcommands}
    assert documented_scripts <= {f"bench/{p.name}" for p in scripts}, "a documented bench script that does not exist"

    def helps(script: Path | str, *sub: str) -> subprocess.CompletedProcess:
        name = script if isinstance(script, str) else f"bench/{script.name}"
        return subprocess.run([sys.executable, name, *sub, "--help"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(4) as pool:
        results = dict(zip(scripts, pool.map(helps, scripts), strict=True))
        asked = sorted(subcommands)  # a script of several questions: each question's own --help
        sub_results = dict(zip(asked, pool.map(lambda k: helps(k[0], k[1]), asked), strict=True))
    for script, r in results.items():
        assert r.returncode == 0 and "usage:" in r.stdout, (script.name, r.stderr[-2000:])
        missing = {f for f in mentioned.get(f"bench/{script.name}", set()) if f not in r.stdout}
        assert not missing, (script.name, missing)
    for (script, sub), r in sub_results.items():
        assert r.returncode == 0 and "usage:" in r.stdout, (script, sub, r.stderr[-2000:])
        missing = {f for f in subcommands[script, sub] if f not in r.stdout}
        assert not missing, (script, sub, missing)


def test_every_bench_script_is_in_benchmarks_and_every_one_named_there_exists() -> None:
    """One script per question, each quoted by the BENCHMARKS.md section whose figures it measured: a script no
    section names is dead weight, a name with no script a command that fails (helpers without __main__ aside)."""
    text = (ROOT / "BENCHMARKS.md").read_text()
    scripts = {p.name for p in (ROOT / "bench").glob("*.py") if "__main__" in p.read_text()}
    named = set(re.findall(r"bench/(\w+\.py)", text))
    run = {p.split("/")[1] for p, _, where in documented() if p.startswith("bench/") and where.startswith("BENCHMARKS")}
    assert scripts == named == run, (scripts ^ named, scripts ^ run)
    for section in re.split(r"^## ", text, flags=re.M)[1:]:  # a superseded section points at a newer one
        if "Superseded" in section.split("\n\n", 2)[1]:
            assert re.search(r"Superseded by \[§(\d+)\]", section), section[:80]



def readme_command_lines() -> list[str]:
    """Each command line of README.md's bash blocks, as a reader pastes it (a line ending in \\ continued)."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.strip() for b in blocks for line in b.replace("\\\n", " ").splitlines()
            if line.strip() and not line.strip().startswith("#")]


def shell_words(line: str) -> list[list[str]]:
    """The commands of one line (split at && and ;), each as the shell's words, comments dropped."""
    import shlex

    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split, lex.commenters = True, "#"
    commands: list[list[str]] = [[]]
    for word in lex:
        if word in ("&&", ";"):
            commands.append([])
        else:
            commands[-1].append(word)
    return commands


def test_every_readme_command_runs_as_printed() -> None:
    """No `[--flag]`, no `a|b` (the shell reads a pipe: `gallery info|clear` ran the terminal's `clear`), and each
    command of ours parses with its own parser exactly as printed: what argparse would refuse fails here."""
    sys.path.insert(0, str(ROOT))
    import app
    import train
    from reid_core.cli import build_parser

    parsers = {"-m reid_core": build_parser().parse_args, "train.py": train.build_parser().parse_args,
               "app.py": app.parse_args}
    lines = readme_command_lines()
    checked = 0
    for line in lines:
        for words in shell_words(line):
            where = f"README.md: {line}"
            assert not any(w in ("|", "||", "&", ">", "<") or w.startswith("[") for w in words), where
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # REID_WEIGHTS=... before the program
                words = words[1:]
            if words[:1] == [".venv/bin/torchrun"]:
                words = [".venv/bin/python", *words[words.index("train.py"):]]
            if words[:1] == ["bash"]:
                assert (ROOT / words[1]).is_file(), where
            if words[:1] == [".venv/bin/pip"]:
                files = [words[i + 1] for i, w in enumerate(words) if w == "-r"]
                assert files and all((ROOT / f).is_file() for f in files), where
            if words[:1] != [".venv/bin/python"]:
                continue
            program, rest = (" ".join(words[1:3]), words[3:]) if words[1] == "-m" else (words[1], words[2:])
            try:
                parsers[program](rest)
            except SystemExit as e:
                raise AssertionError(f"{where}: argparse refused it (status {e.code})") from None
            checked += 1
    assert checked >= 20, checked


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """.ci/run's last line is README's command 2 (install, the package included, then the tests)."""
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command in readme_command_lines() and "-e ." in command
    assert any(line.endswith(".venv/bin/python app.py") and "-e ." in line for line in readme_command_lines())


def test_readme_quotes_the_thresholds_in_use() -> None:
    """README's cuts are the shipped weights' own: the flip ones (what the app and CLI use by default) and the plain
    ones, each read as ReID reads them (it quoted 0.19 while the app used 0.277)."""
    import json

    from reid_core.evaluation.thresholds import Thresholds

    text = (ROOT / "README.md").read_text()
    t = Thresholds.from_extra(json.loads((ROOT / "weights" / "model.json").read_text())["extra"])
    flip_cos = t.flip_cos if t.flip_cos is not None else t.cos
    assert (f"with test-time flip on, the default of the app and the CLI, the shipped weights' pair-score cut is "
            f"{t.pair_for(True):.3f} (cosine {flip_cos:.3f})") in " ".join(text.split())
    assert f"it is {t.pair_for(False):.3f} (cosine {t.cos:.3f})" in " ".join(text.split())


def test_readme_adaptation_time_names_machine_and_load() -> None:
    """The adaptation time README quotes is BENCHMARKS' (§24.8, the default's 4 rounds on CUHK03), with the
    machine and its load beside it, and README says what a run prints after each round."""
    text = " ".join((ROOT / "README.md").read_text().split())
    bench = " ".join((ROOT / "BENCHMARKS.md").read_text().split())
    rounds = re.search(r"the rounds took ([\d.]+), ([\d.]+), ([\d.]+) and ([\d.]+) min, [\d.]+ min wall", bench)
    assert rounds, "BENCHMARKS §24.8 lost the new default's round times"
    minutes = round(sum(float(m) for m in rounds.groups()))
    assert f"the rounds taking {minutes} minutes on one thread of a 2-core Xeon, another run beside it" in text
    assert "2 busy cores" in text and "about 6.2 min left for 2 more rounds" in text
