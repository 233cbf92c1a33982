"""A track becomes a tracklet: a few chosen crops, one embedding, a camera and a time span.

Every box of a track is kept (for annotation), but crops are sampled: at most one every `sample_every_s`, their
count bounded per track (the interval doubles when a track's candidates fill up), so a long video costs memory in
proportion to its people, not its frames. At the end each tracklet keeps `crops` crops spread over its time span
(the best of each stretch): whole-body, sharp, large and not overlapped by another person's box score higher. Its
embedding is the quality-weighted mean of those crops' embeddings (each flip-averaged where the ReID flips), the
multi-query idea of Market-1501 applied to a track. Fragments of one person that the tracker split (occlusion,
leaving and coming back) are then joined within the video by appearance, never two that are seen at one time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .tracker import box_iou

CROP_SIZE = (128, 256)  # (w, h): crops are stored at most this big (the model's input); thumbnails are these
MAX_CANDIDATES = 48  # per track; past it the track's sampling interval doubles and every other candidate goes


@dataclass
class Candidate:
    frame: int
    time_s: float
    quality: float
    crop: Image.Image


@dataclass
class Tracklet:
    """One person's passage through one camera (video)."""

    camera: str
    track: int  # the tracker's id (after joining fragments: the earliest fragment's)
    boxes: np.ndarray  # (n, 6): frame, x1, y1, x2, y2, time_s for every frame the track had a box
    crops: list[Image.Image]
    weights: np.ndarray  # each crop's quality: its weight in the embedding
    embedding: np.ndarray | None = None  # unit (D,), set by embed_tracklets
    fragments: list[int] = field(default_factory=list)  # the tracker ids joined into this one

    @property
    def start_s(self) -> float:
        return float(self.boxes[0, 5])

    @property
    def end_s(self) -> float:
        return float(self.boxes[-1, 5])

    @property
    def frames(self) -> set[int]:
        return set(self.boxes[:, 0].astype(int).tolist())

    @property
    def thumbnail(self) -> Image.Image:
        return self.crops[int(np.argmax(self.weights))]


def sharpness(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low for a blurred (moving, out of focus) crop."""
    g = gray.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var()) if lap.size else 0.0


def crop_quality(rgb: np.ndarray, box: np.ndarray, others: np.ndarray) -> tuple[float, Image.Image]:
    """How good a re-id crop the box gives (0..1), and the crop (at most CROP_SIZE). Whole body: not cut by the
    frame's edge, a person's proportions; large; sharp; not overlapped by `others` (the frame's other boxes)."""
    h_img, w_img = rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w_img), min(y2, h_img)
    if x2 - x1 < 4 or y2 - y1 < 8:
        return 0.0, Image.new("RGB", CROP_SIZE)
    patch = rgb[y1:y2, x1:x2]
    img = Image.fromarray(patch)
    if img.height > CROP_SIZE[1] or img.width > CROP_SIZE[0]:
        img.thumbnail(CROP_SIZE)
    if not 1.0 <= (y2 - y1) / (x2 - x1) <= 6.0:  # a sliver where the frame cuts a box, or a lying shape: no person
        return 0.0, img
    edge = 3
    cut = box[0] < edge or box[1] < edge or box[2] > w_img - edge or box[3] > h_img - edge
    aspect = (y2 - y1) / max(x2 - x1, 1)
    whole = (0.4 if cut else 1.0) * (1.0 if 1.6 <= aspect <= 4.5 else 0.5)
    size = min(1.0, (y2 - y1) / 128)
    sharp = sharpness(np.asarray(img.convert("L")))
    sharp = sharp / (sharp + 50.0)
    covered = float(box_iou(box[None, :4], others[:, :4]).max()) if len(others) else 0.0
    return whole * size * sharp * (1.0 - covered) ** 2, img


class TrackletBuilder:
    """Collects one video's tracked boxes, frame by frame, into tracklets."""

    def __init__(self, camera: str, crops: int = 8, sample_every_s: float = 0.2, min_frames: int = 8):
        self.camera, self.n_crops, self.min_frames = camera, crops, min_frames
        self.sample_every_s = sample_every_s
        self.boxes: dict[int, list[list[float]]] = {}
        self.candidates: dict[int, list[Candidate]] = {}
        self.interval: dict[int, float] = {}

    def add(self, index: int, time_s: float, rgb: np.ndarray, tracks: np.ndarray) -> None:
        """One frame's tracks (M, 5+): x1, y1, x2, y2, track_id."""
        for k, t in enumerate(tracks):
            tid = int(t[4])
            self.boxes.setdefault(tid, []).append([index, *map(float, t[:4]), time_s])
            cands = self.candidates.setdefault(tid, [])
            gap = self.interval.setdefault(tid, self.sample_every_s)
            if cands and time_s - cands[-1].time_s < gap - 1e-9:
                continue
            quality, crop = crop_quality(rgb, t[:4], np.delete(tracks, k, axis=0))
            cands.append(Candidate(index, time_s, quality, crop))
            if len(cands) > MAX_CANDIDATES:  # bounded memory: sample this track half as often from now on
                self.candidates[tid] = cands[::2]
                self.interval[tid] = gap * 2

    def finish(self) -> list[Tracklet]:
        """The tracklets of tracks seen in at least `min_frames` frames, each with its chosen crops."""
        out = []
        for tid, rows in self.boxes.items():
            if len(rows) < self.min_frames:
                continue
            crops, weights = choose_crops(self.candidates[tid], self.n_crops)
            if crops:
                out.append(Tracklet(self.camera, tid, np.array(rows, np.float64), crops, weights, fragments=[tid]))
        return sorted(out, key=lambda t: (t.start_s, t.track))


def choose_crops(cands: Sequence[Candidate], n: int) -> tuple[list[Image.Image], np.ndarray]:
    """The best candidate of each of n equal stretches of the track's time (spread over time); unusable ones
    (quality 0: slivers, blanks) never (a track with none usable gives no tracklet)."""
    good = [c for c in cands if c.quality > 0]
    if not good:
        return [], np.zeros(0)
    bins = np.array_split(np.arange(len(good)), min(n, len(good)))
    chosen = [max((good[i] for i in b), key=lambda c: c.quality) for b in bins if len(b)]
    return [c.crop for c in chosen], np.array([max(c.quality, 1e-3) for c in chosen])


def embed_tracklets(tracklets: Sequence[Tracklet], embed: Callable[[list[Image.Image]], np.ndarray]) -> None:
    """Set each tracklet's embedding: the quality-weighted mean of its crops' unit embeddings, re-normalised.
    `embed`: crops -> (N, D) unit rows (ReID.embed, which flips where the ReID does); one call for all crops."""
    crops = [c for t in tracklets for c in t.crops]
    if not crops:
        return
    emb = embed(crops)
    s = 0
    for t in tracklets:
        e = emb[s:s + len(t.crops)]
        s += len(t.crops)
        t.embedding = unit(np.average(e, axis=0, weights=t.weights))


def unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def in_domain_cut(sim: np.ndarray, different: np.ndarray, floor: float) -> float:
    """The cosine at which two tracklets are taken for one person: `floor` (chosen on Market-1501's training
    identities, BENCHMARKS §25.3), raised to the most alike pair known to be two people (`different`: seen at one
    moment in one camera). Those pairs are free negatives from the footage itself: under a camera network the model
    never saw, every cosine runs higher, and a cut that held on Market would merge strangers."""
    known = sim[different]
    return max(floor, float(known.max())) if known.size else floor


def join_fragments(tracklets: Sequence[Tracklet], threshold: float, crops: int = 8) -> list[Tracklet]:
    """Join one video's tracklets that are one person by appearance, most alike first, never two groups that
    share a frame (one person is never in two boxes of one frame); the cut: in_domain_cut(threshold)."""
    if len(tracklets) > 1:
        emb = np.stack([t.embedding for t in tracklets])
        seen_together = np.array([[a is not b and bool(a.frames & b.frames) for b in tracklets] for a in tracklets])
        threshold = in_domain_cut(emb @ emb.T, seen_together, threshold)
    groups = [[t] for t in tracklets]
    while len(groups) > 1:
        emb = np.stack([_group_embedding(g) for g in groups])
        sim = emb @ emb.T
        np.fill_diagonal(sim, -np.inf)
        frames = [set().union(*(t.frames for t in g)) for g in groups]
        for flat in np.argsort(-sim, axis=None):
            i, j = divmod(int(flat), len(groups))
            if sim[i, j] < threshold:
                return [_merged(g, crops) for g in groups]
            if i < j and not frames[i] & frames[j]:
                groups[i] += groups.pop(j)
                break
        else:
            break
    return [_merged(g, crops) for g in groups]


def _group_embedding(group: Sequence[Tracklet]) -> np.ndarray:
    w = np.array([t.weights.sum() for t in group])
    return unit(np.average(np.stack([t.embedding for t in group]), axis=0, weights=w))


def _merged(group: Sequence[Tracklet], n_crops: int) -> Tracklet:
    if len(group) == 1:
        return group[0]
    group = sorted(group, key=lambda t: t.start_s)
    boxes = np.concatenate([t.boxes for t in group])
    boxes = boxes[np.argsort(boxes[:, 0], kind="stable")]
    cands = [Candidate(0, 0.0, float(w), c) for t in group for c, w in zip(t.crops, t.weights, strict=True)]
    crops, weights = choose_crops(cands, n_crops)
    return Tracklet(group[0].camera, group[0].track, boxes, crops, weights, _group_embedding(group),
                    [f for t in group for f in t.fragments])
