"""Every item of the bad-input corpus (tests/badinputs.py) through the app's API (gradio_client) and the CLIs:
each gets a one-line message that names the problem, the app still answers a good request afterwards, no
code in a weights file runs, and nothing is written outside the app's data folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from badinputs import Corpus, crop, make_images, make_logs, make_weights, make_zips, tree
from conftest import make_tiny_weights, serve
from gradio_client import Client, handle_file

import app
from reid_core import api
from reid_core.cli import main as cli
from reid_core.data.limits import Limits, ServerLimits

ROOT = Path(__file__).resolve().parent.parent
LIMITS = Limits(max_upload_mb=16, max_zip_mb=16, max_image_mb=4)  # small enough to test cheaply
IMAGES = ("truncated.jpg", "truncated.png", "corrupt.png", "bomb.png", "large.png", "text.jpg", "empty.jpg",
          "one_pixel.png", "rgba.png", "cmyk.jpg", "gray16.png", "palette.png", "gray.jpg", "wide.png", "strip.png",
          "tall.png")
ZIPS = ("traversal.zip", "bomb.zip", "many.zip", "notazip.zip")
LOGS = ("torn.csv", "ragged.csv", "empty.csv", "noepoch.csv", "binary.csv")
WEIGHTS = ("truncated.safetensors", "header.safetensors", "nan.safetensors", "other.safetensors",
           "nojson.safetensors", "random.safetensors", "model.pth", "evil.pth")
SKIP = (".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "store", "store_w", "store_p")  # data dirs


@dataclass
class Bad:
    root: Path
    token: str
    good: Path  # a plain crop
    weights: Path  # tiny resnet18
    images: Corpus
    zips: Corpus
    logs: Corpus
    bad_weights: Corpus
    before: dict[str, tuple[int, int]]  # every file outside the data folder, before the app ran

    @property
    def marker(self) -> Path:
        return self.root / f"pwned_{self.token}"


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Bad:
    root = tmp_path_factory.mktemp("badinputs")
    token = uuid.uuid4().hex[:10]
    weights = make_tiny_weights(root / "weights" / "model.safetensors")
    good = root / "good.png"
    crop(2, 1).save(good)
    for pid in (1, 3, 4):  # the gallery the server starts with
        crop(pid, 2).save(root / f"p{pid}.png")
    corpus = Bad(root, token, good, weights, make_images(root / "images"),
                 make_zips(root / "zips", token, LIMITS.max_zip_mb, LIMITS.max_files), make_logs(root / "logs"),
                 make_weights(root / "bad_weights", weights, root / f"pwned_{token}"), {})
    assert set(corpus.images) == set(IMAGES) and set(corpus.zips) == set(ZIPS) and set(corpus.logs) == set(LOGS)
    assert set(corpus.bad_weights) == set(WEIGHTS)
    corpus.before = tree(root, ROOT, skip=SKIP)
    return corpus


@pytest.fixture(scope="module")
def client(bad: Bad) -> Iterator[Client]:
    with serve(app.Settings(bad.weights, bad.root / "store", bad.root / "runs", LIMITS)) as (url, _):
        c = Client(url, verbose=False)
        people = sorted(bad.root.glob("p[0-9].png"))
        assert c.predict([handle_file(p) for p in people], api_name="/add_to_gallery").startswith("Added 3 images")
        yield c


def one_line_error(e: pytest.ExceptionInfo, expected: str) -> None:
    msg = str(e.value)
    assert re.search(expected, msg) and "\n" not in msg.strip() and "Traceback" not in msg, msg


def still_answers(client: Client, bad: Bad) -> None:
    _, verdict, cos, _ = client.predict(handle_file(bad.good), handle_file(bad.good), api_name="/compare")
    assert cos == pytest.approx(1.0, abs=1e-3) and verdict.startswith("Same person")


# --- images ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", IMAGES)
def test_image_through_app(client: Client, bad: Bad, name: str) -> None:
    path, expected = bad.images[name]
    status = client.predict([handle_file(path)], api_name="/add_to_gallery")
    if expected:
        for call in ((handle_file(path), handle_file(bad.good), "/compare"), (handle_file(path), 3, "/search")):
            with pytest.raises(Exception) as e:  # noqa: PT011 - gradio_client's AppError carries the message
                client.predict(*call[:2], api_name=call[2])
            one_line_error(e, expected)
        assert status.startswith("Added 0 images") and re.search(f"- skipped {expected}", status), status
    else:  # odd but usable: a normal answer
        p, verdict, cos, _ = client.predict(handle_file(path), handle_file(bad.good), api_name="/compare")
        assert 0 <= p <= 1 and -1 <= cos <= 1 and verdict.startswith(("Same person", "Different people"))
        _, table, _ = client.predict(handle_file(path), 3, api_name="/search")
        assert len(table["data"]) == 3
        assert status.startswith("Added 1 image"), status
    still_answers(client, bad)


@pytest.mark.parametrize("name", IMAGES)
def test_image_through_cli(bad: Bad, name: str, capsys: pytest.CaptureFixture) -> None:
    path, expected = bad.images[name]
    rc = cli(["compare", str(path), str(bad.good), "--weights", str(bad.weights)])
    out, err = capsys.readouterr()
    if expected:
        assert rc == 2 and re.fullmatch(f"error: \\S*{expected}.*\n", err), err
    else:
        said = r"(Same person|Different people): pair score 0\.\d{3} .*; cosine -?[01]\.\d{4}\n"
        assert rc == 0 and re.fullmatch(said, out), out
    rc = cli(["uploads", str(path)])
    out, err = capsys.readouterr()
    assert (rc, bool(re.search(f"skipped {expected}", err)) if expected else "1 usable image(s)" in out) == (
        (2, True) if expected else (0, True)), (out, err)


@pytest.mark.slow
def test_cli_process_exit_code_and_one_line(bad: Bad) -> None:
    path, _ = bad.images["text.jpg"]
    r = subprocess.run([sys.executable, "-m", "reid_core", "compare", str(path), str(bad.good), "--weights",
                        str(bad.weights)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"error: {path}: not a readable image")


# --- uploads and zips -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZIPS)
def test_zip_through_app_and_cli(client: Client, bad: Bad, name: str, capsys: pytest.CaptureFixture,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path, expected = bad.zips[name]
    for key in ("max_zip_mb", "max_image_mb"):  # the CLI reads its limits from the environment
        monkeypatch.setenv(f"REID_{key.upper()}", str(getattr(LIMITS, key)))
    status = client.predict([handle_file(path)], api_name="/add_to_gallery")
    assert re.search(expected, status), status
    assert status.startswith("Added 1 image" if name == "traversal.zip" else "Added 0 images"), status
    if name == "traversal.zip":
        assert status.count("unsafe path") == 5
    still_answers(client, bad)
    cli(["uploads", str(path)])
    assert re.search(expected, capsys.readouterr().err)


def test_upload_over_size_limit(client: Client, bad: Bad) -> None:
    huge = bad.root / "huge.png"
    huge.write_bytes(crop().tobytes() * (LIMITS.max_upload_mb * 2**20 // len(crop().tobytes()) + 2))
    with pytest.raises(Exception) as e:  # noqa: PT011 - refused by Gradio before it reaches a handler
        client.predict(handle_file(huge), handle_file(bad.good), api_name="/compare")
    assert re.search(r"(?i)exceeds the maximum file size|too large|413", str(e.value)), str(e.value)
    huge.unlink()
    still_answers(client, bad)


def test_gallery_size_limit(tmp_path: Path, bad: Bad) -> None:
    handlers = app.ReIDApp(app.Settings(bad.weights, tmp_path / "store", tmp_path, Limits(max_gallery=4)))
    files = []
    for pid in range(1, 7):
        crop(pid, 1).save(tmp_path / f"{pid}.png")
        files.append(str(tmp_path / f"{pid}.png"))
    status = handlers.search.add_to_gallery(files[:3])
    assert status.startswith("Added 3 images")
    status = handlers.search.add_to_gallery(files[3:])
    assert status.startswith("Added 1 image.") and "5.png and any later files: the gallery is full (4-image" in status
    assert len(handlers.search.own_gallery()) == 4


def test_limits_from_env_and_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_MAX_UPLOAD_MB", "7")
    monkeypatch.setenv("REID_MAX_GALLERY", "123")
    args = app.parse_args(["--max-gallery", "50", "--max-pixels", "1000000"])
    settings = app.Settings.resolve(**{k: getattr(args, k) for k in ("max_gallery", "max_pixels")})
    assert settings.limits == Limits(max_upload_mb=7, max_gallery=50, max_pixels=1_000_000)
    monkeypatch.setenv("REID_MAX_FILES", "lots")
    with pytest.raises(ValueError, match="REID_MAX_FILES='lots': expected a whole number"):
        Limits.from_env(os.environ)
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        ServerLimits.from_env({}, concurrency=0)


# --- training logs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LOGS)
def test_log_through_app_and_cli(client: Client, bad: Bad, name: str, capsys: pytest.CaptureFixture) -> None:
    path, expected = bad.logs[name]
    *_, status = client.predict([], handle_file(path), api_name="/log_curves")
    if expected:
        assert "Showing 0 of 1" in status and re.search(f"⚠️ upload: {expected}", status), status
    else:
        assert status == "Showing 1 of 1 log(s)."
    rc = cli(["plots", str(path)])
    out, err = capsys.readouterr()
    if expected:
        assert rc == 2 and re.fullmatch(f"error: \\S*{expected}.*\n", err), err
    else:  # the torn or ragged row is dropped, the others are read
        n = 5 if name == "torn.csv" else 6
        assert rc == 0 and re.search(rf": {n} epoch\(s\), last epoch {n}: loss \d", out), out


# --- weights --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", WEIGHTS)
def test_weights_through_app_and_cli(bad: Bad, market: Path, name: str, capsys: pytest.CaptureFixture) -> None:
    path, expected = bad.bad_weights[name]
    with serve(app.Settings(path, bad.root / "store_w", bad.root / "runs", LIMITS)) as (url, demo):
        assert re.search(expected, demo.reid_app.host.error) and "\n" not in demo.reid_app.host.error
        with pytest.raises(Exception) as e:  # noqa: PT011
            Client(url, verbose=False).predict(handle_file(bad.good), handle_file(bad.good), api_name="/compare")
        one_line_error(e, expected)
    capsys.readouterr()  # the server's own log
    assert cli(["compare", str(bad.good), str(bad.good), "--weights", str(path)]) == 2
    assert cli(["evaluate", "--weights", str(path), "--data", str(market), "--threads", "1"]) == 2
    errs = capsys.readouterr().err.splitlines()
    assert len(errs) == 2 and all(re.search(expected, e) for e in errs), errs
    assert not bad.marker.exists()  # no code in any weights file ran


def test_allow_pickle_flag(bad: Bad, capsys: pytest.CaptureFixture) -> None:
    """With the flag a plain state-dict .pth loads (and gives the safetensors model's answer); a hostile
    pickle is still refused, because the flag reads tensors only (weights_only=True)."""
    pth, _ = bad.bad_weights["model.pth"]
    args = ["compare", str(bad.good), str(bad.images["rgba.png"][0])]
    assert cli([*args, "--weights", str(bad.weights)]) == 0
    assert cli([*args, "--weights", str(pth), "--allow-pickle"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0] == out[1]
    a = api.ReID.load(pth, "cpu", allow_pickle=True).embed(bad.good)
    np.testing.assert_allclose(a, api.ReID.load(bad.weights, "cpu").embed(bad.good), atol=1e-6)
    evil, _ = bad.bad_weights["evil.pth"]
    assert cli(["compare", str(bad.good), str(bad.good), "--weights", str(evil), "--allow-pickle"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: \S*evil\.pth: not a plain tensor file \(UnpicklingError: .*unsupported GLOBAL "
                        r"posix\.system.*\n", err), err
    assert not bad.marker.exists()
    handlers = app.ReIDApp(app.Settings(pth, bad.root / "store_p", bad.root, allow_pickle=True))
    assert handlers.host.reid is not None and handlers.host.error == ""


# --- last: the app wrote only into its data folder ------------------------------------------------------------
def test_nothing_written_outside_data_folder(client: Client, bad: Bad) -> None:
    after = tree(bad.root, ROOT, skip=SKIP)
    changed = sorted(p for p in set(after) | set(bad.before) if after.get(p) != bad.before.get(p))
    assert changed == [], changed
    escaped = [p for p in (Path("/") / f"abs_{bad.token}.png", bad.root.parent / f"escape_{bad.token}.png",
                           bad.root.parent / f"deep_{bad.token}.png", ROOT.parent / f"escape_{bad.token}.png")
               if p.exists()]
    assert escaped == [] and not list(Path("/tmp").glob(f"*{bad.token}*"))
    assert len(list((bad.root / "store").glob("session-*.sqlite"))) == 1  # the API client's private gallery
