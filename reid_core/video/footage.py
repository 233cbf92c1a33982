"""Footage in, people out: index videos (each one a camera) into a gallery file, search them with a crop, and
group their tracklets into people across cameras. The API of the CLI's `video` verbs and the app's Videos tab.

    from reid_core import ReID
    from reid_core.video.footage import Footage
    f = Footage(ReID.load(), "cams.sqlite")
    f.index(["cam1.mp4", "cam2.mp4"])             # decode -> detect -> track -> tracklets -> gallery
    f.search("crop.jpg", k=5)                    # [TrackletMatch(score, camera, start_s, end_s, ...)]
    f.people()                                   # [Person(label, tracklets)], across cameras

Per frame only detection and the tracker's association run; a crop is cut at most every `sample_every_s` per
track and embedded once, when the video is done (a few per person, not every box of every frame).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.images import ImageLike
from ..search.ingest import Turn
from .config import FootageConfig
from .detector import Detector, load_detector
from .frames import VideoLimits, probe, read_frames
from .store import Person, TrackletGallery, TrackletMatch, file_digest
from .tracker import ByteTrackConfig, ByteTracker
from .tracklets import Tracklet, TrackletBuilder, embed_tracklets, join_fragments

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class IndexReport:
    """What indexing one video did."""

    video: str
    camera: str
    frames: int
    seconds: float
    tracks: int
    tracklets: int
    added: int
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        same = "" if self.added == self.tracklets else f" ({self.tracklets - self.added} already in the gallery)"
        return (f"{self.video}: camera {self.camera}, {self.frames} frames ({self.seconds:.1f} s), {self.tracks} "
                f"tracks -> {self.tracklets} tracklets, {self.added} added{same}")


def camera_name(path: str | Path) -> str:
    """A video's camera: its file name without the suffix (a folder of frames: the sequence folder's name)."""
    p = Path(path)
    if p.is_dir():
        return (p.parent.name if p.name == "img1" else p.name) or "camera"
    return p.stem


def track_video(src: str | Path, camera: str, detector: Detector, cfg: FootageConfig,
                limits: VideoLimits | None = None, progress: Progress | None = None, turn: Turn = nullcontext,
                ) -> tuple[list[Tracklet], int, int, dict[str, float]]:
    """One video's tracklets (not yet embedded), its frame count, the number of tracks, seconds per stage.
    `turn()`: held around each frame's detection (a server's fair lane: other visitors' work goes between)."""
    info = probe(src, limits)
    tracker = ByteTracker(ByteTrackConfig(frame_rate=info.fps / cfg.detect_every,
                                          track_activation_threshold=cfg.track_start,
                                          high_conf_det_threshold=cfg.track_high))
    builder = TrackletBuilder(camera, cfg.crops, cfg.sample_every_s, cfg.min_frames)
    spent = {"decode": 0.0, "detect": 0.0, "track": 0.0, "crops": 0.0}
    n = 0
    t0 = time.perf_counter()
    for frame in read_frames(src):
        t1 = time.perf_counter()
        spent["decode"] += t1 - t0
        n += 1
        if frame.index % cfg.detect_every:
            t0 = time.perf_counter()
            continue
        with turn():
            dets = detector(frame.rgb)
        t2 = time.perf_counter()
        tracks = tracker.update(dets)
        t3 = time.perf_counter()
        builder.add(frame.index, frame.time_s, frame.rgb, tracks[:, :5])
        t0 = time.perf_counter()
        spent["detect"] += t2 - t1
        spent["track"] += t3 - t2
        spent["crops"] += t0 - t3
        if progress:
            progress("detect and track", n, info.frame_count)
    return builder.finish(), n, len(builder.boxes), spent


class Footage:
    """Videos -> tracklets in a gallery file -> search and people. One instance per gallery file."""

    def __init__(self, reid: Any, gallery: TrackletGallery | str | Path, detector: Detector | str | None = None,
                 cfg: FootageConfig | None = None, video_limits: VideoLimits | None = None, **gallery_kw: Any):
        """`reid`: a ReID (its embed and embedding_id); `gallery`: an open TrackletGallery or its file;
        `detector`: a Detector, an ONNX file, or None for the offline default (video.detector.load_detector);
        `video_limits`: what each video may cost (VideoLimits); `gallery_kw`: Gallery's (limits: what
        the gallery may hold, ...)."""
        self.reid, self.cfg, self.limits = reid, cfg or FootageConfig(), video_limits
        self._detector = detector
        self.gallery = gallery if isinstance(gallery, TrackletGallery) else \
            TrackletGallery(gallery, reid.embed, reid.embedding_id, **gallery_kw)

    @property
    def detector(self) -> Detector:
        if not callable(self._detector):
            self._detector = load_detector(self._detector)
        return self._detector

    def index(self, videos: Sequence[str | Path], cameras: Sequence[str] | None = None,
              progress: Progress | None = None, turn: Turn = nullcontext) -> list[IndexReport]:
        """Index each video as a camera (default names: camera_name); each video is checked (probe) before any
        is decoded, and stored in its own transaction."""
        cameras = list(cameras) if cameras else [camera_name(v) for v in videos]
        if len(cameras) != len(videos):
            raise ValueError(f"{len(videos)} videos but {len(cameras)} camera names")
        infos = [probe(v, self.limits) for v in videos]  # every refusal before any work
        reports = []
        for v, cam, info in zip(videos, cameras, infos, strict=True):
            tracklets, frames, tracks, spent = track_video(v, cam, self.detector, self.cfg, self.limits, progress,
                                                           turn)
            if progress:
                progress("embed", 0, len(tracklets))
            t0 = time.perf_counter()
            with turn():
                embed_tracklets(tracklets, self.gallery.embed)
            tracklets = join_fragments(tracklets, self.cfg.join_threshold, self.cfg.crops)
            spent["embed"] = time.perf_counter() - t0
            if progress:
                progress("embed", len(tracklets), len(tracklets))
            digest = file_digest(v) if Path(v).is_file() else f"{Path(v).resolve()}"
            added = self.gallery.add_tracklets(tracklets, Path(v).resolve(), f"{digest}:{cam}")
            reports.append(IndexReport(str(v), cam, frames, info.duration_s, tracks, len(tracklets), added, spent))
        return reports

    def search(self, crop: ImageLike, k: int = 10, pictures: int = 0) -> list[TrackletMatch]:
        """Where and when the person in `crop` appears: the k most alike tracklets."""
        return self.gallery.search_tracklets(self.gallery.embed([crop])[0], k, pictures)

    def people(self, threshold: float | None = None) -> list[Person]:
        """Every tracklet grouped into people across cameras (stored in the gallery for annotation)."""
        return self.gallery.people(self.cfg.people_threshold if threshold is None else threshold)
