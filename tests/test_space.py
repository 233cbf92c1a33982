"""The repository deploys as a Hugging Face Space from a plain clone: the front matter names a Gradio version
the requirements allow (and the one these tests run), pre-requirements.txt pins the same torch as
requirements.txt (its CPU build), and every tracked file fits a Space (under 10 MB, or an LFS rule)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path

import gradio
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
SPACE_FILE_LIMIT = 10 * 10**6  # a Space refuses plain-git files over 10 MB


def front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md has no front matter"
    return {k.strip(): v.strip().strip('"') for k, v in (line.split(":", 1) for line in m.group(1).splitlines())}


def requirements(name: str) -> dict[str, Requirement]:
    reqs = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            r = Requirement(line)
            reqs[r.name.lower()] = r
    return reqs


def test_front_matter_matches_requirements_and_installed_gradio() -> None:
    fm = front_matter()
    assert fm["sdk"] == "gradio" and (ROOT / fm["app_file"]).is_file()
    sdk = Version(fm["sdk_version"])
    spec = requirements("requirements.txt")["gradio"].specifier
    assert sdk in spec, (sdk, spec)
    assert all(Version(f"{sdk.major + d}.0") not in spec for d in (-1, 1))  # one major version only
    assert Version(gradio.__version__).major == sdk.major  # the tests ran the Space's major version
    assert re.fullmatch(r"3\.\d+", fm["python_version"])


def test_space_installs_cpu_torch_first_and_local_installs_do_not() -> None:
    pre, req = requirements("pre-requirements.txt"), requirements("requirements.txt")
    for name in ("torch", "torchvision"):
        pinned = Version(next(iter(req[name].specifier)).version)
        cpu = Version(next(iter(pre[name].specifier)).version)
        assert cpu.local == "cpu" and cpu.public == pinned.public and cpu in req[name].specifier
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (ROOT / "pre-requirements.txt").read_text()
    for local in ("requirements.txt", "requirements-dev.txt", ".ci/run", "scripts/test.sh"):
        assert "download.pytorch.org" not in (ROOT / local).read_text(), local


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but the usual build output
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "gallery_store"}
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def test_every_tracked_file_fits_a_space() -> None:
    attributes = ROOT / ".gitattributes"
    lfs = [line.split()[0] for line in attributes.read_text().splitlines()
           if "filter=lfs" in line] if attributes.exists() else []
    big = [(f, (ROOT / f).stat().st_size) for f in tracked_files() if (ROOT / f).is_file()
           and (ROOT / f).stat().st_size >= SPACE_FILE_LIMIT and not any(fnmatch.fnmatch(f, p) for p in lfs)]
    assert big == []
    assert (ROOT / "weights" / "model.safetensors").stat().st_size < SPACE_FILE_LIMIT
