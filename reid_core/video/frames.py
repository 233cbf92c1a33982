"""Decode a video file, or a folder of frames, into RGB frames; refuse a bad one in one line before decoding it.

A video is a camera's footage: an MP4/MOV, AVI or Matroska/WebM file (decoded by OpenCV's bundled FFmpeg, from
`opencv-python-headless`), or a folder of .jpg/.png frames (a MOTChallenge sequence's `img1/`, whose
`seqinfo.ini` gives the frame rate). `probe` checks a source against `VideoLimits` from its container header and
two decoded frames (the first and the last), so a truncated file, one with no frames, a codec this build cannot
read or a 4K / 60 fps / 2 h file is refused before anything else is decoded. `read_frames` then yields `Frame`s
and still stops, with a `VideoError`, if the file holds more than its header declared.

Only the containers in `CONTAINERS` are handed to FFmpeg: it would otherwise follow an HLS playlist's links or
guess a format from any bytes, and every extra demuxer is attack surface on a public demo.
"""

from __future__ import annotations

import configparser
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONTAINERS = "MP4/MOV, AVI or Matroska/WebM"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_FPS = 25.0  # a folder of frames without a seqinfo.ini: MOTChallenge's most common rate
_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot", b"uuid", b"moof", b"mfra", b"meta",
              b"sidx", b"styp", b"pdin", b"emsg", b"prft"}
_MAX_TOP_BOXES = 100_000  # a fragmented MP4 has two per fragment; a hostile one could hold millions of tiny ones
_MAX_MOOV_BYTES = 64 * 2**20  # the index read to name a codec; real ones are KBs to a few MB


class VideoError(ValueError):
    """A video (file or folder of frames) that cannot be used; one line naming it and the problem."""


@dataclass(frozen=True)
class VideoLimits:
    """What one video may cost, checked from its header before decoding. The defaults fit an hour of 1080p
    footage at up to 60 fps; a public demo passes tighter ones."""

    max_bytes: int = 2**30  # the file, or all the frame files of a folder
    max_seconds: float = 3600.0
    max_pixels_per_frame: int = 1920 * 1088  # 1080p (encoders pad to 1088); a 4K frame is 4x that
    max_fps: float = 60.0
    max_frames: int = 108_000  # an hour at 30 fps: the bound on decoding work


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float


@dataclass
class Frame:
    index: int  # 0-based position in the video (MOTChallenge's frame number is index + 1)
    time_s: float  # index / fps
    rgb: np.ndarray  # (H, W, 3) uint8


def _label(src: str | Path, name: str | None) -> str:
    return name if name is not None else str(src)


# --- the container, from its bytes -------------------------------------------------------------------------------

def _container(head: bytes) -> str | None:
    """Which allowed container the first bytes announce, or None."""
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    return None


def _what_else(head: bytes) -> str:
    """A guess at what a file that is not a video is, for the message."""
    for magic, what in [(b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
                        (b"PK\x03\x04", "a zip archive"), (b"%PDF", "a PDF"), (b"#EXTM3U", "an HLS playlist")]:
        if head.startswith(magic):
            return what
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:512]):
        return "text"
    return "an unknown format"


def _mp4_boxes(f, size: int, label: str) -> dict[bytes, tuple[int, int]]:
    """Top-level boxes (type -> offset, length), checking that each fits in the file: a copy cut short ends
    inside one (cv2's writer puts the index, `moov`, last)."""
    boxes: dict[bytes, tuple[int, int]] = {}
    pos = 0
    for _ in range(_MAX_TOP_BOXES):
        if pos >= size:
            return boxes
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            raise VideoError(f"{label}: truncated (the file ends inside a box header at byte {pos:,})")
        n, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if n == 1 and len(head) == 16:
            n = int.from_bytes(head[8:16], "big")
        elif n == 0:
            n = size - pos
        if n < 8:
            raise VideoError(f"{label}: damaged MP4 (a box of {n} bytes at byte {pos:,})")
        if pos + n > size:
            raise VideoError(f"{label}: truncated (its '{kind.decode('latin-1')}' box needs {pos + n:,} bytes, "
                             f"the file has {size:,})")
        boxes.setdefault(kind, (pos, n))
        pos += n
    raise VideoError(f"{label}: damaged MP4 (over {_MAX_TOP_BOXES:,} top-level boxes)")


def _check_structure(path: Path, size: int, label: str) -> tuple[str, str | None]:
    """(container, codec tag if read from the header) after the checks a header allows: the container is one we
    open, it is not cut short, and an MP4 has an index with a video track."""
    with open(path, "rb") as f:
        head = f.read(512)
        kind = _container(head)
        if kind is None:
            raise VideoError(f"{label}: not a video ({_what_else(head)}); expected {CONTAINERS}")
        if kind == "avi":
            declared = int.from_bytes(head[4:8], "little") + 8
            if declared > size:
                raise VideoError(f"{label}: truncated (its header declares {declared:,} bytes, the file has {size:,})")
            i = head.find(b"strh")  # the stream header: 'strh', its length, 'vids', the codec's FourCC
            video = i >= 0 and head[i + 8:i + 12] == b"vids"
            return kind, (head[i + 12:i + 16].decode("latin-1") if video else None)
        if kind == "mp4":
            boxes = _mp4_boxes(f, size, label)
            if b"moov" not in boxes:
                raise VideoError(f"{label}: truncated or unfinished (no 'moov' index box)")
            pos, n = boxes[b"moov"]
            f.seek(pos)
            moov = f.read(min(n, _MAX_MOOV_BYTES))
            if b"vide" not in moov:
                raise VideoError(f"{label}: has no video track (zero frames)")
            i = moov.find(b"stsd")
            return kind, (moov[i + 16:i + 20].decode("latin-1") if i >= 0 else None)
    return kind, None


# --- a video file ----------------------------------------------------------------------------------------------

def _open(path: Path):
    import cv2  # heavy (~60 MB of libraries): loaded on the first video, not at package import

    # an absolute path: FFmpeg reads "name:..." as a protocol (concat:, subfile:, http:) but never "/name:..."
    return cv2.VideoCapture(str(path.resolve()), cv2.CAP_FFMPEG)


def _fourcc(cap) -> str:
    import cv2

    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    return code.to_bytes(4, "little").decode("latin-1").strip("\x00 ") or "?"


def _probe_file(path: Path, limits: VideoLimits, label: str) -> VideoInfo:
    import cv2

    size = path.stat().st_size
    if size == 0:
        raise VideoError(f"{label}: empty file")
    if size > limits.max_bytes:
        raise VideoError(f"{label}: {size:,} bytes, over the limit of {limits.max_bytes:,}")
    _, tag = _check_structure(path, size, label)
    cap = _open(path)
    try:
        if not cap.isOpened():
            codec = f"its codec '{tag}' is" if tag else "its codec or container is"
            raise VideoError(f"{label}: cannot be decoded ({codec} not supported here)")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps, count = float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count == 0:
            raise VideoError(f"{label}: has zero frames")
        if w < 1 or h < 1:
            raise VideoError(f"{label}: cannot be decoded (no picture size; codec '{_fourcc(cap)}')")
        info = _checked(label, str(path), w, h, fps, count, size, limits)
        if not cap.read()[0]:
            raise VideoError(f"{label}: its first frame does not decode (codec '{_fourcc(cap)}' not supported here, "
                             "or the file is damaged)")
        if count > 1:
            cap.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
            if not cap.read()[0]:
                raise VideoError(f"{label}: truncated or damaged (its last frame, {count:,}, does not decode)")
        return info
    finally:
        cap.release()


def _checked(label: str, path: str, w: int, h: int, fps: float, count: int, size: int,
             limits: VideoLimits) -> VideoInfo:
    """The limits, from numbers a header gave (nothing decoded yet)."""
    if count < 0:
        raise VideoError(f"{label}: its frame count is unknown (a stream without an index); re-encode it as MP4")
    if not math.isfinite(fps) or fps <= 0:
        raise VideoError(f"{label}: has no frame rate")
    if w * h > limits.max_pixels_per_frame:
        raise VideoError(f"{label}: frames are {w}x{h} ({w * h:,} pixels), over the limit of "
                         f"{limits.max_pixels_per_frame:,}")
    if fps > limits.max_fps:
        raise VideoError(f"{label}: {fps:g} frames per second, over the limit of {limits.max_fps:g}")
    duration = count / fps
    if duration > limits.max_seconds:
        raise VideoError(f"{label}: {duration:,.0f} s long, over the limit of {limits.max_seconds:,.0f} s")
    if count > limits.max_frames:
        raise VideoError(f"{label}: {count:,} frames, over the limit of {limits.max_frames:,}")
    if size > limits.max_bytes:
        raise VideoError(f"{label}: {size:,} bytes, over the limit of {limits.max_bytes:,}")
    return VideoInfo(path=path, width=w, height=h, fps=fps, frame_count=count, duration_s=duration)


def _read_file(path: Path, info: VideoInfo, stride: int, limits: VideoLimits, label: str) -> Iterator[Frame]:
    import cv2

    cap = _open(path)
    try:
        index = 0
        while True:
            if index % stride:
                ok = cap.grab()  # demuxed and decoded, but not converted to RGB
                bgr = None
            else:
                ok, bgr = cap.read()
            if not ok:
                break
            if index >= limits.max_frames or index >= info.frame_count + _slack(info.frame_count):
                raise VideoError(f"{label}: holds more frames than its header declares ({info.frame_count:,}) "
                                 f"or the limit allows ({limits.max_frames:,})")
            if bgr is not None:
                if bgr.shape[:2] != (info.height, info.width):
                    raise VideoError(f"{label}: frame {index + 1:,} is {bgr.shape[1]}x{bgr.shape[0]}, not "
                                     f"{info.width}x{info.height} like the first")
                yield Frame(index=index, time_s=index / info.fps, rgb=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
        if index < info.frame_count - _slack(info.frame_count):
            raise VideoError(f"{label}: truncated or damaged (decoding stopped at frame {index:,} of "
                             f"{info.frame_count:,})")
    finally:
        cap.release()


def _slack(count: int) -> int:
    """Frames a container's count may be off by (Matroska's is estimated from duration x rate)."""
    return max(2, count // 100)


# --- a folder of frames ----------------------------------------------------------------------------------------

def _frame_files(folder: Path) -> tuple[Path, list[Path]]:
    """The folder holding the frames (a MOTChallenge sequence's img1/ when given the sequence) and its frames,
    in name order."""
    if (folder / "img1").is_dir():
        folder = folder / "img1"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())
    return folder, files


def _seqinfo_fps(folder: Path, label: str) -> float:
    """frameRate from a MOTChallenge seqinfo.ini in the frames' folder or the one above, else DEFAULT_FPS."""
    for ini in (folder / "seqinfo.ini", folder.parent / "seqinfo.ini"):
        if ini.is_file():
            parser = configparser.ConfigParser()
            try:
                parser.read_string(ini.read_text(errors="replace")[:65536])
                return float(parser["Sequence"]["frameRate"])
            except (configparser.Error, KeyError, ValueError):
                raise VideoError(f"{label}: {ini.name} has no readable [Sequence] frameRate") from None
    return DEFAULT_FPS


def _frame_size(path: Path, label: str) -> tuple[int, int]:
    """A frame file's size from its header alone (JPEG or PNG only; nothing decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path, formats=("JPEG", "PNG")) as im:
            return im.size
    except UnidentifiedImageError:
        raise VideoError(f"{label}: frame {path.name} is not a JPEG or PNG image") from None
    except OSError:
        raise VideoError(f"{label}: frame {path.name} is truncated or damaged") from None


def _decode_frame(path: Path, size: tuple[int, int], label: str) -> np.ndarray:
    from PIL import Image

    if _frame_size(path, label) != size:
        raise VideoError(f"{label}: frame {path.name} is {'x'.join(map(str, _frame_size(path, label)))}, not "
                         f"{size[0]}x{size[1]} like the first")
    try:
        with Image.open(path, formats=("JPEG", "PNG")) as im:
            return np.asarray(im.convert("RGB"))
    except OSError:
        raise VideoError(f"{label}: frame {path.name} is truncated or damaged") from None


def _probe_folder(folder: Path, limits: VideoLimits, label: str) -> VideoInfo:
    frames_dir, files = _frame_files(folder)
    if not files:
        raise VideoError(f"{label}: has zero frames (no {'/'.join(FRAME_SUFFIXES)} files)")
    fps = _seqinfo_fps(frames_dir, label)
    if len(files) > limits.max_frames:  # before a stat per file
        raise VideoError(f"{label}: {len(files):,} frames, over the limit of {limits.max_frames:,}")
    size = sum(p.stat().st_size for p in files)
    w, h = _frame_size(files[0], label)
    info = _checked(label, str(frames_dir), w, h, fps, len(files), size, limits)
    for p in {files[0], files[-1]}:
        _decode_frame(p, (w, h), label)
    return info


def _read_folder(folder: Path, info: VideoInfo, stride: int, label: str) -> Iterator[Frame]:
    _, files = _frame_files(folder)
    if len(files) != info.frame_count:
        raise VideoError(f"{label}: changed while being read ({len(files):,} frames, {info.frame_count:,} probed)")
    for index in range(0, len(files), stride):
        rgb = _decode_frame(files[index], (info.width, info.height), label)
        yield Frame(index=index, time_s=index / info.fps, rgb=rgb)


# --- the public doors --------------------------------------------------------------------------------------------

def _source(src: str | Path, label: str) -> Path:
    path = Path(os.fspath(src))
    if not path.exists():
        raise VideoError(f"{label}: no such file or folder")
    if not (path.is_file() or path.is_dir()):
        raise VideoError(f"{label}: not a regular file or a folder of frames")
    return path


def probe(src: str | Path, limits: VideoLimits | None = None, name: str | None = None) -> VideoInfo:
    """Size, rate and length of a video file or folder of frames, checked against `limits` from its header and
    its first and last frames; raises VideoError (one line, naming `name` or else `src`) for anything unusable."""
    limits, label = limits or VideoLimits(), _label(src, name)
    path = _source(src, label)
    return _probe_folder(path, limits, label) if path.is_dir() else _probe_file(path, limits, label)


def read_frames(src: str | Path, stride: int = 1, limits: VideoLimits | None = None,
                name: str | None = None) -> Iterator[Frame]:
    """Every `stride`-th frame of a video file or folder of frames, after `probe` has accepted it. A file that
    turns out worse than its header said (cut short, more frames, a size change) raises VideoError at that
    frame: a caller that must not keep half a video collects first and writes after the iterator ends."""
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be a whole number of at least 1, not {stride!r}")
    limits, label = limits or VideoLimits(), _label(src, name)
    info = probe(src, limits, name=label)  # here, not at the first next(): a bad video fails at the call
    path = Path(os.fspath(src))
    return _read_folder(path, info, stride, label) if path.is_dir() else _read_file(path, info, stride, limits, label)
