"""Uploaded files and zips -> (name, bytes), within Limits, never extracting anything to disk.

A zip from the open web may hold `../` or absolute paths, declare gigabytes (a zip bomb), or hold 100k tiny
files. Members are read into memory only (no path is ever joined to a folder); the member count and declared
sizes are checked before anything is read, and each read is capped again in case a header lies.

    python -m reid_core uploads FILE_OR_ZIP...   # what the app's gallery would take from these files, and why not
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from PIL import Image

from .images import ImageError, PixelBudget, load_image
from .limits import MIB, Limits


def unsafe_member(name: str) -> bool:
    """Absolute paths, drive letters and `..` could escape any folder they were extracted to."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts


def too_big(name: str, size: int, limits: Limits) -> str | None:
    """The one per-image byte limit, in the same words wherever an image arrives."""
    if size > limits.max_image_bytes:
        return f"{name}: {size / MIB:,.1f} MiB, over the {limits.max_image_mb} MiB per-image limit"
    return None


def read_image(src: str | Path | bytes, name: str, limits: Limits | None = None,
               reduce: tuple[int, int] | None = None, budget: PixelBudget | None = None) -> Image.Image:
    """load_image within `limits`, with the upload's own name in the message, not a temp path (`reduce`,
    `budget`: see load_image)."""
    limits = limits or Limits()
    size = len(src) if isinstance(src, bytes) else Path(src).stat().st_size if Path(src).is_file() else 0
    if why := too_big(name, size, limits):
        raise ImageError(why)
    return load_image(src, limits, name, reduce, budget)


def _read_capped(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes | None:
    """The member's bytes, or None if it inflates past cap (whatever its header said)."""
    with zf.open(info) as f:
        data = f.read(cap + 1)
    return None if len(data) > cap else data


def _unreadable(e: BaseException) -> str:
    """Why a member could not be read, in words rather than a zlib/lzma code or a ZipInfo repr."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, RuntimeError) and "encrypted" in text:
        return "password-protected (encrypted zips are not supported)"
    if isinstance(e, NotImplementedError):
        return f"compressed with a method this server cannot read ({text})"
    if isinstance(e, zipfile.BadZipFile) and "CRC" in text:
        return "corrupt (its checksum does not match)"
    return f"corrupt ({type(e).__name__}: {text})"


def iter_zip(path: Path, skipped: list[str], limits: Limits, label: str | None = None,
             ) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of a zip's files; unsafe or unreadable entries are skipped and reported by name, hidden
    ones skipped silently, and a zip over the member-count or size limits is refused before anything is
    inflated. One bad member never stops the others."""
    label = label or path.name
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        skipped.append(f"{label}: not a valid zip file ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        return
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            skipped.append(f"{label}: {len(infos):,} entries, over the {limits.max_files:,}-file limit; "
                           "nothing read")
            return
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_zip_bytes:
            skipped.append(f"{label}: unpacks to {declared / MIB:,.0f} MiB, over the {limits.max_zip_mb:,} MiB "
                           "limit (a zip bomb?); nothing read")
            return
        budget = limits.max_zip_bytes
        for k, info in enumerate(infos, start=1):
            name = info.filename
            if not name.strip("/\\ "):
                skipped.append(f"{label}: entry #{k} has an empty name, skipped")
                continue
            if unsafe_member(name):
                skipped.append(f"{label}/{name}: unsafe path, skipped")
                continue
            if name.endswith(("/", "\\")) or any(p.startswith(".") or p == "__MACOSX"
                                                 for p in PurePosixPath(name).parts):
                continue
            if why := too_big(f"{label}/{name}", info.file_size, limits):
                skipped.append(why)
                continue
            try:
                data = _read_capped(zf, info, min(limits.max_image_bytes, budget))
            except Exception as e:  # noqa: BLE001 - zlib.error, lzma.LZMAError, RuntimeError...: one bad member
                skipped.append(f"{label}/{name}: {_unreadable(e)}, skipped")
                continue
            if data is None:
                skipped.append(f"{label}/{name}: inflates past its declared size and the limits; stopped")
                return
            budget -= len(data)
            yield PurePosixPath(name.replace("\\", "/")).name, data


def iter_uploads(paths: list[Path], skipped: list[str], limits: Limits, names: list[str] | None = None,
                 ) -> Iterator[tuple[str, bytes]]:
    """Uploaded files and the contents of uploaded .zip files, as (name, bytes), at most limits.max_files.
    `names`: what to call each path in messages (an upload's own name, not the server's temp path)."""
    n = 0
    for k, p in enumerate(paths):
        label = names[k] if names else p.name
        if p.suffix.lower() == ".zip":
            items: Iterator[tuple[str, bytes]] = iter_zip(p, skipped, limits, label)
        elif not p.is_file():
            skipped.append(f"{names[k] if names else p}: file not found")  # as typed, folder and all
            continue
        elif why := too_big(label, p.stat().st_size, limits):
            skipped.append(why)
            continue
        else:
            items = iter([(label, p.read_bytes())])
        for name, data in items:
            if n == limits.max_files:
                skipped.append(f"{name} and any later files: over the {limits.max_files:,}-file limit per upload")
                return
            n += 1
            yield name, data


def count_uploads(paths: list[Path], limits: Limits) -> int:
    """How many files iter_uploads will look at (zip members counted from the directory, nothing inflated),
    so progress can say "312 / 500 images"."""
    n = 0
    for p in paths:
        if p.suffix.lower() != ".zip":
            n += 1
            continue
        try:
            with zipfile.ZipFile(p) as zf:
                n += sum(not i.filename.endswith("/") for i in zf.infolist())
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            n += 1
    return min(n, limits.max_files)
