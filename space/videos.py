"""The Videos tab: a visitor's short clips (each one a camera) -> people found in them -> where else each appears.

Each visitor's tracklets live in a private gallery file of their own (the Sessions rules: created on the first
add, bounded per address and in total, deleted when idle). A clip is checked from its header against the
server's VideoLimits before anything is decoded; every frame's detection and the embedding of a clip's crops
take turns in the fair lane, so one visitor's minute of footage never holds the model for the others.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from reid_core import (
    Detector,
    Footage,
    FootageConfig,
    ImageError,
    Person,
    TrackletGallery,
    TrackletMatch,
    VideoError,
    VideoLimits,
    load_detector,
    probe_video,
)

from .host import Host
from .params import ParamError, text
from .requests import RAW, client_of, session_key, upload, uploads, user_error
from .sessions import Sessions

MAX_VIDEOS = 4  # clips per request
APP_VIDEO_LIMITS = VideoLimits(max_bytes=50 * 2**20, max_seconds=60.0, max_pixels_per_frame=1280 * 720, max_fps=30.0,
                               max_frames=1800)
STAGES = {"detect and track": "Finding and following people", "embed": "Describing each person"}


def camera_of(name: str) -> str:
    """A camera's name from the visitor's file name: its stem, shortened (shown as text, never markup)."""
    return (Path(name).stem or "camera")[:40]


def named(e: Exception, got: list[tuple[str, str]]) -> str:
    """A library error about an upload, naming the visitor's file, not the server's temporary path."""
    said = str(e)
    for path, name in got:
        said = said.replace(path, name)
    return said


def people_count(n: int, bold: str = "") -> str:
    return f"{bold}{n}{bold} {'person' if n == 1 else 'people'}"


def span(t: TrackletMatch) -> str:
    return f"{t.start_s:.1f}–{t.end_s:.1f} s"


class Videos:
    """The tab's handlers (layout: build_videos_tab)."""

    def __init__(self, host: Host, limits: VideoLimits = APP_VIDEO_LIMITS, detector: Detector | None = None):
        """Each visitor's tracklets in a private gallery file under `data_dir/videos`, within the Videos tab's own
        share of the server (ServerLimits.for_videos: places, memory and disk beside Search's).
        `detector`: None for the offline one, loaded on the first Find people."""
        self.host, self.limits = host, limits
        reid, settings = host.reid, host.settings
        self.sessions = None if reid is None else Sessions(
            settings.data_dir / "videos",
            lambda path: TrackletGallery(path, reid.embed, reid.embedding_id, settings.limits),
            settings.server.for_videos())
        self._detector = detector
        self._detector_lock = threading.Lock()

    def detector(self) -> Detector:
        """The offline detector, loaded once for every visitor (its ONNX export is made on first use)."""
        with self._detector_lock:
            if self._detector is None:
                try:
                    self._detector = load_detector(None, cache_dir=os.environ.get("REID_CACHE_DIR"))
                except (OSError, ValueError) as e:  # DetectorError is a ValueError
                    raise user_error(f"The person detector is not available on this server: {e}") from e
            return self._detector

    def _use(self, request: gr.Request | None, create: bool = False) -> Any:
        return self.sessions.use(session_key(request), client_of(request, self.host.settings.behind_proxy), create)

    def find_people(self, files: Any, request: gr.Request | None = None, progress: gr.Progress = gr.Progress(),
                    ) -> tuple[list[tuple[str, str]], str, list[int]]:
        """Index the clips, then group everything this visitor indexed into people: (tiles, summary, labels)."""
        reid = self.host.require_model()
        try:
            got = uploads(files, MAX_VIDEOS)
        except ParamError as e:
            raise user_error(str(e)) from e
        if not got:
            raise user_error(f"Choose one to {MAX_VIDEOS} short videos (each one a camera).")
        for path, name in got:  # every clip checked from its header before any is decoded
            try:
                probe_video(path, self.limits, name=name)
            except VideoError as e:
                raise user_error(named(e, got)) from e
        try:
            self.sessions.make_room_on_disk(session_key(request))
        except ValueError as e:
            raise user_error(str(e)) from e

        def report(stage: str, done: int, total: int) -> None:
            progress((done, max(total, 1)), desc=STAGES.get(stage, stage), unit="frames" if "track" in stage else "")

        detector = self.detector()
        with self.host.work(request) as turn, self._use(request, create=True) as gallery:
            footage = Footage(reid, gallery, detector, FootageConfig(), self.limits)
            try:  # each clip is stored in one transaction: a clip that fails midway leaves nothing of itself
                reports = footage.index([p for p, _ in got], [camera_of(n) for _, n in got], report, turn)
            except (VideoError, ImageError) as e:
                raise user_error(named(e, got)) from e
            with turn():
                people = footage.people()
                tiles = self._tiles(people, gallery)
        lines = [f"**{text(r.camera)}**: {r.frames} frames, {people_count(r.tracklets)} tracked" for r in reports]
        return tiles, self._summary(people, lines), [p.label for p in people]

    def _summary(self, people: list[Person], lines: list[str]) -> str:
        many = sum(len(p.cameras) > 1 for p in people)
        head = (f"{people_count(len(people), '**')} found, **{many}** of them in more than one camera. Click a "
                "person to see where else they appear." if people else "Nobody was found in these videos.")
        return "\n\n".join([head, *lines])

    def _tiles(self, people: list[Person], gallery: TrackletGallery) -> list[tuple[str, str]]:
        """One tile per person: the thumbnail of their longest tracklet, their cameras and its time."""
        out = []
        for p in people:
            best = max(p.tracklets, key=lambda t: t.end_s - t.start_s)
            cams = ", ".join(p.cameras)
            out.append((self.host.picture_file(gallery.picture(best.id)), f"P{p.label} · {cams} · {span(best)}"))
        return out

    def person(self, labels: Any, evt: gr.SelectData, request: gr.Request | None = None,
               ) -> tuple[list[tuple[str, str]], str]:
        """Where else the clicked person appears: each of their tracklets, camera and time."""
        self.host.require_model()
        try:
            if not isinstance(labels, list) or not all(isinstance(x, int) for x in labels):
                raise ParamError("no people listed: find people in your videos first")
            index = evt.index if isinstance(evt.index, int) else -1
            if not 0 <= index < len(labels):
                raise ParamError("that person is no longer listed: find people again")
        except ParamError as e:
            raise user_error(str(e)) from e
        with self.host.work(request) as turn, self._use(request) as gallery, turn():
            if gallery is None:
                return [], "Your videos were removed (idle or for room): add them again."
            mine = [t for t in gallery.tracklets() if t.person == labels[index]]
            tiles = [(self.host.picture_file(gallery.picture(t.id)), f"{t.camera} · {span(t)}") for t in mine]
        where = "; ".join(f"{text(t.camera)} {span(t)}" for t in mine)
        return tiles, f"**P{labels[index]}** appears {len(mine)} time(s): {where}" if mine else "Nobody."

    def search(self, crop: Any, request: gr.Request | None = None) -> tuple[list[tuple[str, str]], str]:
        """The visitor's tracklets most like a crop of a person."""
        self.host.require_model()
        try:
            upload(crop)  # a parameter that is no upload is refused before anything else
        except ParamError as e:
            raise user_error(str(e)) from e
        with self.host.work(request) as turn, self._use(request) as gallery:
            if gallery is None or not gallery.tracklet_count():
                return [], "No videos indexed yet: add some first."
            img, _ = self.host.image(crop, "a crop of the person to look for")
            with turn():
                hits = gallery.search_tracklets(gallery.embed([img])[0], k=10, pictures=10)
        tiles = [(self.host.picture_file(h.thumbnail), f"#{k} {h.score:.3f} · {h.camera} · {span(h)}")
                 for k, h in enumerate(hits, start=1)]
        return tiles, (f"Best match: **{text(hits[0].camera)}** at {span(hits[0])} (cosine {hits[0].score:.3f})"
                       if hits else "No tracklets.")


def build_videos_tab(videos: Videos) -> None:
    """The tab's layout, inside the app's gr.Tabs."""
    model = videos.host.model_events
    with gr.Tab("Videos"):
        gr.Markdown(f"Upload up to {MAX_VIDEOS} short clips, each one a camera (MP4, MOV, AVI, MKV or WebM; at most "
                    f"{videos.limits.max_seconds:.0f} s, {videos.limits.max_bytes // 2**20} MB, 720p). People are "
                    "detected, tracked and matched across the clips; your videos stay private to this session.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                clips = gr.File(label="Videos, one a camera", file_count="multiple",  # formats: the text above
                                elem_id="video-files", height=160)
                find_btn = gr.Button("Find people", variant="primary", elem_id="find-people-btn")
                crop = gr.Image(label="Look for a person (a crop)", type="filepath", image_mode=None, height=220,
                                elem_id="video-query", min_width=140)
                look_btn = gr.Button("Search the videos", elem_id="video-search-btn")
            with gr.Column(scale=2, min_width=280):
                summary = gr.Markdown(elem_id="video-summary")
                # no labels over the first tiles: the summary and "where" say what each grid shows
                people = gr.Gallery(label="People", show_label=False, columns=6, height="auto", object_fit="contain",
                                    elem_id="video-people", buttons=[], allow_preview=False)  # a click selects
                where = gr.Markdown(elem_id="video-where")
                seen = gr.Gallery(label="Where this person appears", show_label=False, columns=6, height="auto",
                                  object_fit="contain", elem_id="video-seen", buttons=[])
        labels = gr.State([])
        find_btn.click(videos.find_people, clips, [people, summary, labels], api_name="find_people",
                       **model, **RAW)
        people.select(videos.person, labels, [seen, where], api_visibility="private", **model)
        look_btn.click(videos.search, crop, [seen, where], api_name="search_videos", **model, **RAW)
