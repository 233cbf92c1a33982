"""The Videos tab: a visitor's short clips (each one a camera) -> people found in them -> where else each appears.

Each visitor's tracklets live in a private gallery file of their own (the Sessions rules: created on the first
add, bounded per address and in total, deleted when idle). *Self-train on my videos* (where the server allows it)
learns from the visitor's own tracklets in the background, each tracklet one person's crops (self_train.py); the
model it makes is theirs until *Use the shared model*. A clip is checked from its header against the
server's VideoLimits before anything is decoded; every frame's detection and the embedding of a clip's crops
take turns in the fair lane, so one visitor's minute of footage never holds the model for the others.
"""

from __future__ import annotations

import os
import random
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import gradio as gr

from reid_core import (
    Detector,
    Footage,
    FootageConfig,
    GalleryError,
    ImageError,
    Person,
    ReID,
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
from .self_train import MIN_SELF_TRAIN_IMAGES, Crops, SelfTraining, Source, Turn, too_few
from .self_train_controls import SelfTrainControls, panel, wire
from .sessions import Sessions

MAX_VIDEOS = 4  # clips per request
APP_VIDEO_LIMITS = VideoLimits(max_bytes=50 * 2**20, max_seconds=60.0, max_pixels_per_frame=1280 * 720, max_fps=30.0,
                               max_frames=1800)
STAGES = {"detect and track": "Finding and following people", "embed": "Describing each person"}
TRACKLETS_READ = 8  # tracklets whose crops a self-training job reads per turn of the fair lane


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


def tracklet_crops(gallery: TrackletGallery, n: int, turn: Turn) -> Crops:
    """What self-training reads of a visitor's videos: whole tracklets (a seeded sample, up to n crops), each crop
    with its clip (camera) and its tracklet, whose crops are one person's (adapt.clustering.tracklet_labels)."""
    entries, counts = gallery.tracklets(), gallery.crop_counts()
    chosen, held = [], 0
    for t in random.Random(0).sample(entries, len(entries)):
        if held + counts[t.id] <= n:
            chosen.append(t)
            held += counts[t.id]
    if held < MIN_SELF_TRAIN_IMAGES:
        raise too_few(f"your videos' {len(entries)} tracklet{'s' * (len(entries) != 1)} give {held}")
    cameras = {c: i for i, c in enumerate(sorted({t.camera for t in entries}))}
    pictures: list = []
    cams: list[int] = []
    tracks: list[int] = []
    for s in range(0, len(chosen), TRACKLETS_READ):
        batch = chosen[s:s + TRACKLETS_READ]
        with turn():
            crops = gallery.tracklet_crops([t.id for t in batch])
        for k, (t, some) in enumerate(zip(batch, crops, strict=True)):
            pictures += some
            cams += [cameras[t.camera]] * len(some)
            tracks += [s + k] * len(some)
    return pictures, cams, tracks


class Videos:
    """The tab's handlers (layout: build_videos_tab)."""

    def __init__(self, host: Host, limits: VideoLimits = APP_VIDEO_LIMITS, detector: Detector | None = None,
                 training: SelfTraining | None = None):
        """Each visitor's tracklets in a private gallery file under `data_dir/videos`, within the Videos tab's own
        share of the server (ServerLimits.for_videos: places, memory, disk and adapted models beside Search's).
        `detector`: None for the offline one, loaded on the first Find people; `training`: the server's
        self-training jobs (shared with Search; a new one when None)."""
        self.host, self.limits = host, limits
        reid, settings = host.reid, host.settings
        self.sessions = None if reid is None else Sessions(
            settings.data_dir / "videos", lambda path: self.opened(reid, path), settings.server.for_videos())
        self._detector = detector
        self._detector_lock = threading.Lock()
        self.source = Source("videos", self.sessions, tracklet_crops, self.opened, "Your videos use",
                             "*Use the shared model* goes back.")
        self.self_training = SelfTrainControls(host, training or SelfTraining(host), self.source, self._use,
                                               self._regrouped, 5, empty="Find people in your videos first.")

    def opened(self, reid: ReID, path: Any, turn: Turn = nullcontext) -> TrackletGallery:
        """A visitor's gallery file opened with `reid` (tracklets made with other weights re-embedded, each in a
        `turn`)."""
        return TrackletGallery(path, reid.embed, reid.embedding_id, self.host.settings.limits, turn=turn)

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

    def _regrouped(self, request: gr.Request | None, job: Any = None) -> tuple[Any, ...]:
        """Everyone in this visitor's videos grouped again after their model changed (a job that did not change
        it changes nothing on the page): (people tiles, summary, labels, appearances, where) — a person's
        appearances shown before were found by the old model, so they go."""
        if job is not None and job.state != "done":
            return (gr.skip(),) * 5
        with self.host.work(request) as turn, self._use(request) as gallery, turn():
            if gallery is None:
                return [], "Your videos were removed (idle or for room): add them again.", [], [], ""
            people = gallery.people(FootageConfig().people_threshold)
            tiles = self._tiles(people, gallery)
        return tiles, self._summary(people, []), [p.label for p in people], [], ""

    def shared_model(self, request: gr.Request | None = None) -> tuple[Any, ...]:
        """Back to the shared model: a self-training job stops, the tracklets are re-embedded, people regrouped."""
        reid = self.host.require_model()
        self.self_training.stop(request)
        with self.host.work(request) as turn, self._use(request) as gallery:
            if gallery is None:
                return [], "No videos indexed yet: add some first.", [], [], ""
            if gallery.weights_id != reid.embedding_id:
                try:
                    self.sessions.reopen(session_key(request), lambda path: self.opened(reid, path, turn))
                except GalleryError as e:
                    raise user_error(str(e)) from e
        return self._regrouped(request)

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
                can_train = videos.host.settings.server.self_train_jobs > 0
                training = panel("my videos", "*Self-train* learns from your own tracklets in the background "
                                 "(minutes; each tracklet is one person's crops, the clips tell the cameras apart).",
                                 can_train, "video-")
                shared_btn = gr.Button("Use the shared model", elem_id="video-shared-model-btn", size="sm",
                                       visible=can_train)
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
        regrouped = [people, summary, labels, seen, where]
        wire(training, videos.self_training, regrouped, "self_train_videos", model)
        shared_btn.click(videos.shared_model, None, regrouped, api_name="videos_shared_model", **model)
