"""A corpus of the bad and odd inputs a public demo and a training box get, generated into a folder.

Each item is (path, expected): `expected` is a regex the one-line message must match, or None for an input
that is odd but usable (the app answers it normally). Tests feed every item through the app's API
(gradio_client) and the CLIs.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from conftest import person, write_log
from PIL import Image
from safetensors.torch import load_file, save_file

Corpus = dict[str, tuple[Path, str | None]]


def crop(pid: int = 1, cam: int = 1) -> Image.Image:
    return person(pid, cam, 0).resize((64, 128))


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_header(w: int, h: int) -> bytes:
    """A PNG that declares w x h RGB pixels but holds a few rows: a decompression bomb's header costs nothing."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (3 * w + 1) * 4))
            + chunk(b"IEND", b""))


def make_images(folder: Path) -> Corpus:
    folder.mkdir(parents=True, exist_ok=True)
    img = crop()
    png, jpg = encoded(img, "PNG"), encoded(img, "JPEG")
    corrupt = bytearray(png)
    start = png.index(b"IDAT") + 20
    corrupt[start:start + 40] = bytes(b ^ 0x5A for b in corrupt[start:start + 40])
    gray16 = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)
    palette = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    items: dict[str, tuple[bytes, str | None]] = {
        "truncated.jpg": (jpg[: len(jpg) * 6 // 10], r"truncated\.jpg: not a readable image \(OSError: image file is "
                                                     r"truncated"),
        "truncated.png": (png[: len(png) // 2], r"truncated\.png: not a readable image \(OSError"),
        "corrupt.png": (bytes(corrupt), r"corrupt\.png: not a readable image \(OSError: broken data stream"),
        "bomb.png": (png_header(50_000, 50_000), r"bomb\.png: image too large \(over PIL's limit of"),
        "large.png": (png_header(7_000, 7_000), r"large\.png: image too large \(7000x7000 = 49,000,000 pixels"),
        "text.jpg": (b"this is not a JPEG\n" * 20, r"text\.jpg: not a readable image \(not an image file"),
        "empty.jpg": (b"", r"empty\.jpg: empty file"),
        "one_pixel.png": (encoded(Image.new("RGB", (1, 1)), "PNG"), r"one_pixel\.png: image is 1x1, too small"),
        "rgba.png": (encoded(img.convert("RGBA"), "PNG"), None),
        "cmyk.jpg": (encoded(img.convert("CMYK"), "JPEG"), None),
        "gray16.png": (encoded(gray16, "PNG"), None),
        "palette.png": (encoded(palette, "PNG"), None),
        "gray.jpg": (encoded(img.convert("L"), "JPEG"), None),
        "wide.png": (encoded(img.resize((10_000, 10)), "PNG"), r"wide\.png: 10000x10 is a strip, not a person crop"),
        "strip.png": (png_header(2, 19_000_000), r"strip\.png: 2x19000000 is a strip, not a person crop"),
        "tall.png": (encoded(img.resize((60, 500)), "PNG"), None),  # 1:8.3, within the 10:1 bound
    }
    out: Corpus = {}
    for name, (data, expected) in items.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, expected)
    return out


def make_zips(folder: Path, token: str, zip_mb: int, max_files: int) -> Corpus:
    """Zips, with `token` in the names of members that would escape any folder they were extracted to.
    For zips `expected` must appear in the add-to-gallery report."""
    folder.mkdir(parents=True, exist_ok=True)
    good = encoded(crop(), "PNG")
    with zipfile.ZipFile(folder / "traversal.zip", "w") as zf:
        zf.writestr("people/good.png", good)
        for name in (f"../escape_{token}.png", f"/abs_{token}.png", f"..\\win_{token}.png", f"C:/drive_{token}.png",
                     f"a/../../deep_{token}.png"):
            zf.writestr(name, good)
    with zipfile.ZipFile(folder / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.png", b"\0" * ((4 * zip_mb) << 20))  # compresses ~1000:1
    with zipfile.ZipFile(folder / "many.zip", "w") as zf:
        for k in range(100_000):
            zf.writestr(f"f{k}.png", b"x")
    (folder / "notazip.zip").write_bytes(b"PK\x03\x04 but not really a zip")
    return {"traversal.zip": (folder / "traversal.zip", r"traversal\.zip/\.\./escape_\w+\.png: unsafe path"),
            "bomb.zip": (folder / "bomb.zip", rf"bomb\.zip: unpacks to {4 * zip_mb} MiB, over the {zip_mb} MiB "
                                               r"limit \(a zip bomb\?\); nothing read"),
            "many.zip": (folder / "many.zip", rf"many\.zip: 100,000 entries, over the {max_files:,}-file limit"),
            "notazip.zip": (folder / "notazip.zip", r"notazip\.zip: not a valid zip file")}


def make_logs(folder: Path) -> Corpus:
    """Logs; None: readable (a torn or ragged line is dropped, the rest plots)."""
    folder.mkdir(parents=True, exist_ok=True)
    full = write_log(folder / "full.csv", epochs=6).read_text()
    lines = full.splitlines(keepends=True)
    files = {"torn.csv": (full[: len(full) - len(lines[-1]) // 2], None),  # killed mid-row
             "ragged.csv": ("".join(lines[:3]) + "1,2,3," * 30 + "\n" + "".join(lines[3:]), None),
             "empty.csv": ("", r"empty\.csv: empty file"),
             "noepoch.csv": ("name,score\nbob,1\n", r"noepoch\.csv: not a training log \(no 'epoch' column"),
             "binary.csv": (bytes(range(256)) * 8, r"binary\.csv: not a (CSV file|training log)")}
    out: Corpus = {}
    for name, (text, expected) in files.items():
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        out[name] = (path, expected)
    (folder / "full.csv").unlink()
    return out


class Payload:
    """Unpickling this runs os.system: what a hostile .pth does to torch.load(weights_only=False)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def make_weights(folder: Path, good: Path, marker: Path) -> Corpus:
    """Weights files (each with a JSON beside it unless that is the point); `good` is a tiny resnet18."""
    folder.mkdir(parents=True, exist_ok=True)
    data, cfg = good.read_bytes(), good.with_suffix(".json").read_text()
    sd = load_file(str(good))

    def put(name: str, payload: bytes, config: str | None = cfg) -> Path:
        (folder / name).write_bytes(payload)
        if config is not None:
            (folder / name).with_suffix(".json").write_text(config)
        return folder / name

    header = bytearray(data)
    header[8:40] = b"#" * 32  # inside the JSON header
    nan = dict(sd)
    key = next(k for k, v in sd.items() if v.is_floating_point())
    nan[key] = torch.full_like(sd[key], float("nan"))
    save_file(nan, str(folder / "nan.safetensors"))
    (folder / "nan.json").write_text(cfg)
    buf = io.BytesIO()
    torch.save(sd, buf)
    evil = pickle.dumps({"backbone.conv1.weight": Payload(marker)}, protocol=2)  # what torch.save writes
    return {
        "truncated.safetensors": (put("truncated.safetensors", data[: len(data) // 2]),
                                  r"truncated\.safetensors: not a valid safetensors file"),
        "header.safetensors": (put("header.safetensors", bytes(header)),
                               r"header\.safetensors: not a valid safetensors file"),
        "nan.safetensors": (folder / "nan.safetensors", r"nan\.safetensors: tensor \S+ holds NaN or infinite"),
        "other.safetensors": (put("other.safetensors", data, json.dumps(json.loads(cfg) | {"backbone": "resnet34"})),
                              r"other\.safetensors: does not fit a resnet34 model .* another backbone"),
        "nojson.safetensors": (put("nojson.safetensors", data, None), r"missing nojson\.json beside it"),
        "random.safetensors": (put("random.safetensors", os.urandom(4096)), r"not a valid safetensors file"),
        "model.pth": (put("model.pth", buf.getvalue()),
                      r"model\.pth: pickle-based weights are refused .*--allow-pickle"),
        "evil.pth": (put("evil.pth", evil), r"evil\.pth: pickle-based weights are refused .*--allow-pickle"),
    }


def tree(*roots: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file under roots, except under folders named in skip."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in skip]
            for f in filenames:
                p = Path(dirpath) / f
                try:
                    st = p.stat()
                except FileNotFoundError:  # a temp file that came and went
                    continue
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out
