"""Uploaded files and zips -> (name, bytes), within Limits, never extracting anything to disk.

A zip from the open web may hold `../` or absolute paths, declare gigabytes (a zip bomb), or hold 100k tiny
files. Members are read into memory only (no path is ever joined to a folder); the member count and declared
sizes are checked before anything is read, and each read is capped again in case a header lies.

    python -m reid_core.uploads FILE_OR_ZIP...   # what the app's gallery would take from these files, and why not
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from PIL import Image

from .data import ImageError, load_image
from .limits import MIB, Limits


def unsafe_member(name: str) -> bool:
    """Absolute paths, drive letters and `..` could escape any folder they were extracted to."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts


def read_image(src: str | Path | bytes, name: str) -> Image.Image:
    """load_image with the upload's own name in the message, not a temp path."""
    try:
        return load_image(src)
    except ImageError as e:
        msg = str(e)
        if isinstance(src, (str, Path)):
            msg = msg.replace(str(src), Path(src).name)
        elif not msg.startswith(name):
            msg = f"{name}: {msg.split(': ', 1)[-1]}"
        raise ImageError(msg) from e


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes | None:
    """The member's bytes, or None if it inflates past cap (whatever its header said)."""
    with zf.open(info) as f:
        data = f.read(cap + 1)
    return None if len(data) > cap else data


def iter_zip(path: Path, skipped: list[str], limits: Limits) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of a zip's files; unsafe entries are skipped and reported, hidden ones skipped silently,
    and a zip over the member-count or size limits is refused before anything is inflated."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        skipped.append(f"{path.name}: not a valid zip file ({e})")
        return
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            skipped.append(f"{path.name}: {len(infos):,} entries, over the {limits.max_files:,}-file limit; "
                           "nothing read")
            return
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_zip_bytes:
            skipped.append(f"{path.name}: unpacks to {declared / MIB:,.0f} MiB, over the {limits.max_zip_mb:,} MiB "
                           "limit (a zip bomb?); nothing read")
            return
        budget = limits.max_zip_bytes
        for info in infos:
            name = info.filename
            if unsafe_member(name):
                skipped.append(f"{path.name}/{name}: unsafe path, skipped")
                continue
            if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(name).parts):
                continue
            if info.file_size > limits.max_entry_bytes:
                skipped.append(f"{path.name}/{name}: {info.file_size / MIB:,.0f} MiB, over the "
                               f"{limits.max_entry_mb} MiB per-file limit")
                continue
            try:
                data = _read_capped(zf, info, min(limits.max_entry_bytes, budget))
            except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError) as e:  # corrupt, encrypted
                skipped.append(f"{path.name}/{name}: unreadable ({e})")
                continue
            if data is None:
                skipped.append(f"{path.name}/{name}: inflates past its declared size and the limits; stopped")
                return
            budget -= len(data)
            yield PurePosixPath(name).name, data


def iter_uploads(paths: list[Path], skipped: list[str], limits: Limits) -> Iterator[tuple[str, bytes]]:
    """Uploaded files and the contents of uploaded .zip files, as (name, bytes), at most limits.max_files."""
    n = 0
    for p in paths:
        if p.suffix.lower() == ".zip":
            items: Iterator[tuple[str, bytes]] = iter_zip(p, skipped, limits)
        elif p.stat().st_size > limits.max_entry_bytes:
            skipped.append(f"{p.name}: {p.stat().st_size / MIB:,.0f} MiB, over the {limits.max_entry_mb} MiB "
                           "per-file limit")
            continue
        else:
            items = iter([(p.name, p.read_bytes())])
        for name, data in items:
            if n == limits.max_files:
                skipped.append(f"{name} and any later files: over the {limits.max_files:,}-file limit per upload")
                return
            n += 1
            yield name, data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path, help="images and/or .zip files of images")
    args = ap.parse_args(argv)
    try:
        limits = Limits.from_env()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skipped: list[str] = []
    ok = 0
    for name, data in iter_uploads([p for p in args.files if p.is_file()], skipped, limits):
        try:
            img = read_image(data, name)
        except ImageError as e:
            skipped.append(str(e))
            continue
        ok += 1
        print(f"ok {name} {img.width}x{img.height}")
    skipped += [f"{p}: file not found" for p in args.files if not p.is_file()]
    for s in skipped:
        print(f"skipped: {s}", file=sys.stderr)
    print(f"{ok} usable image(s), {len(skipped)} skipped")
    return 0 if ok and not skipped else 1 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
