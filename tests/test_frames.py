"""Decoding videos and folders of frames; every bad one refused in one line naming it, before decoding it all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_core.video import frames
from reid_core.video.frames import Frame, VideoError, VideoLimits, probe, read_frames

cv2 = pytest.importorskip("cv2")
MOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mot15"


def picture(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    """Frame i as BGR: a red (in RGB) left half, a grey level that counts frames on the right."""
    bgr = np.zeros((h, w, 3), np.uint8)
    bgr[:, : w // 2, 2] = 255
    bgr[:, w // 2:] = 8 * i % 256
    return bgr


def make_video(path: Path, n: int = 12, fourcc: str = "mp4v", fps: float = 25.0, size: tuple[int, int] = (64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(picture(i, *size))
    writer.release()
    return path


@pytest.mark.parametrize("fourcc,suffix", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_probe_and_read_a_small_video(tmp_path: Path, fourcc: str, suffix: str) -> None:
    path = make_video(tmp_path / f"clip{suffix}", n=12, fourcc=fourcc, fps=20.0)
    info = probe(path)
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, 20.0, 12)
    assert info.duration_s == pytest.approx(0.6) and info.path == str(path)
    got = list(read_frames(path))
    assert [f.index for f in got] == list(range(12))
    assert got[3].time_s == pytest.approx(3 / 20)
    first = got[0].rgb
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8
    assert first[:, :28, 0].mean() > 200 and first[:, :28, 2].mean() < 50  # RGB order, not OpenCV's BGR
    greys = [f.rgb[:, 40:].mean() for f in got]
    assert greys == sorted(greys) and greys[-1] - greys[0] > 60  # frames in order
    strided = list(read_frames(path, stride=5))
    assert [f.index for f in strided] == [0, 5, 10]
    np.testing.assert_array_equal(strided[1].rgb, got[5].rgb)


def write_sequence(folder: Path, n: int, fps: int | None, suffix: str = ".jpg") -> Path:
    (folder / "img1").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(picture(i)[:, :, ::-1].copy()).save(folder / "img1" / f"{i + 1:06d}{suffix}")
    if fps is not None:
        (folder / "seqinfo.ini").write_text(f"[Sequence]\nname=x\nimDir=img1\nframeRate={fps}\nseqLength={n}\n")
    return folder


def test_a_motchallenge_folder_is_a_video(tmp_path: Path) -> None:
    seq = write_sequence(tmp_path / "seq", 7, fps=14)
    info = probe(seq)
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, 14.0, 7)
    assert info.path == str(seq / "img1") and probe(seq / "img1") == info  # the sequence or its img1/
    got = list(read_frames(seq, stride=3))
    assert [(f.index, round(f.time_s, 3)) for f in got] == [(0, 0.0), (3, 0.214), (6, 0.429)]
    assert got[0].rgb[:, :28, 0].mean() > 200
    plain = write_sequence(tmp_path / "plain", 3, fps=None, suffix=".png")
    assert probe(plain).fps == frames.DEFAULT_FPS
    np.testing.assert_array_equal(next(iter(read_frames(plain))).rgb, picture(0)[:, :, ::-1])  # PNG: lossless


class Counting:
    """A VideoCapture that counts the frames decoded through it."""

    reads = 0

    def __init__(self, cap):
        self.cap = cap

    def read(self):
        Counting.reads += 1
        return self.cap.read()

    def __getattr__(self, name):
        return getattr(self.cap, name)


def test_probe_decodes_two_frames_and_limits_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_video(tmp_path / "clip.mp4", n=30)
    real_open = frames._open
    monkeypatch.setattr(frames, "_open", lambda p: Counting(real_open(p)))
    probe(path)
    assert Counting.reads == 2  # the first and the last frame
    Counting.reads = 0
    with pytest.raises(VideoError, match="over the limit"):
        probe(path, VideoLimits(max_frames=10))
    with pytest.raises(VideoError, match="over the limit"):
        read_frames(path, limits=VideoLimits(max_seconds=0.5))  # refused at the call, not at the first frame
    assert Counting.reads == 0


def one_line(err: pytest.ExceptionInfo, name: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{name}: "), msg
    return msg


def test_bad_files_are_one_line_naming_the_file(tmp_path: Path) -> None:
    good = make_video(tmp_path / "good.mp4", n=20).read_bytes()
    avi = make_video(tmp_path / "good.avi", n=20, fourcc="MJPG").read_bytes()
    mkv = make_video(tmp_path / "good.mkv", n=20, fourcc="MJPG").read_bytes()
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file renamed to .mp4\n" * 20)
    cases = {
        "notes.mp4": "not a video (text)",
        "cut.mp4": (good[: len(good) * 7 // 10], "truncated"),
        "cut_end.mp4": (good[:-40], "truncated"),
        "cut.avi": (avi[: len(avi) * 9 // 10], "truncated"),
        "cut.mkv": (mkv[: len(mkv) * 9 // 10], "truncated or damaged (its last frame, 20, does not decode)"),
        "empty.mp4": (b"", "empty file"),
        "picture.mp4": (b"\xff\xd8\xff\xe0" + bytes(200), "not a video (a JPEG image)"),
        "codec.avi": (avi.replace(b"MJPG", b"ZZZZ"), "codec 'ZZZZ' is not supported"),
    }
    for name, case in cases.items():
        if isinstance(case, tuple):
            (tmp_path / name).write_bytes(case[0])
            case = case[1]
        with pytest.raises(VideoError) as err:
            probe(tmp_path / name, name=name)
        assert case in one_line(err, name)
    nothing = tmp_path / "nothing.avi"
    cv2.VideoWriter(str(nothing), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48)).release()
    no_track = tmp_path / "nothing.mp4"
    cv2.VideoWriter(str(no_track), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48)).release()
    for path in (nothing, no_track):
        with pytest.raises(VideoError) as err:
            probe(path)
        assert "zero frames" in one_line(err, str(path))
    with pytest.raises(VideoError) as err:
        probe(tmp_path / "missing.mp4")
    assert "no such file" in one_line(err, str(tmp_path / "missing.mp4"))


def test_limits_name_what_is_over(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.avi", n=6, fourcc="MJPG", fps=60.0)
    long = make_video(tmp_path / "long.avi", n=72, fourcc="MJPG", fps=0.01)  # 72 tiny frames, 2 hours
    big = make_video(tmp_path / "big.avi", n=2, fourcc="MJPG", size=(3840, 2160))
    for path, limits, words in [
        (clip, VideoLimits(max_fps=30), "60 frames per second, over the limit of 30"),
        (clip, VideoLimits(max_bytes=1000), "bytes, over the limit of 1,000"),
        (clip, VideoLimits(max_frames=5), "6 frames, over the limit of 5"),
        (long, VideoLimits(), "7,200 s long, over the limit of 3,600 s"),  # 2 h: the defaults say no
        (big, VideoLimits(), "frames are 3840x2160 (8,294,400 pixels), over the limit"),  # 4K: the defaults say no
    ]:
        with pytest.raises(VideoError) as err:
            probe(path, limits)
        assert words in one_line(err, str(path))
    assert probe(long, VideoLimits(max_seconds=7200)).duration_s == pytest.approx(7200)


def test_bad_folders_name_the_frame(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoError, match="zero frames"):
        probe(empty)
    seq = write_sequence(tmp_path / "seq", 4, fps=25)
    Image.new("RGB", (32, 48)).save(seq / "img1" / "000003.jpg")
    with pytest.raises(VideoError, match=r"frame 000003.jpg is 32x48, not 64x48") as err:
        list(read_frames(seq))
    one_line(err, str(seq))
    last = seq / "img1" / "000004.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(last)
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # its header whole, its pixels cut
    with pytest.raises(VideoError, match="000004.jpg is truncated or damaged"):
        probe(seq)
    last.write_text("not a picture")
    with pytest.raises(VideoError, match="000004.jpg is not a JPEG or PNG"):
        probe(seq)
    (seq / "seqinfo.ini").write_text("[Sequence]\nframeRate=fast\n")
    with pytest.raises(VideoError, match="seqinfo.ini has no readable"):
        probe(seq)
    with pytest.raises(ValueError, match="stride"):
        read_frames(seq, stride=0)


@pytest.mark.skipif(not MOT.is_dir(), reason="needs ../shared/data/mot15")
def test_the_real_sequences_probe_as_their_seqinfo_says() -> None:
    for seq, n in [("TUD-Campus", 71), ("TUD-Stadtmitte", 179)]:
        info = probe(MOT / seq / f"{seq}.mp4")
        assert (info.width, info.height, info.fps, info.frame_count) == (640, 480, 25.0, n)
    got = list(read_frames(MOT / "TUD-Campus" / "TUD-Campus.mp4", stride=35))
    assert [f.index for f in got] == [0, 35, 70] and isinstance(got[0], Frame)
