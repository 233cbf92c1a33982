"""ByteTrack association: who is who from one frame's person boxes to the next, by motion and overlap alone.

Each track carries a constant-velocity Kalman filter on its box corners (x1, y1, x2, y2 and their velocities).
Per frame: predict every track; match the confident detections (score >= `high_conf_det_threshold`) to all tracks
by IoU (Hungarian, at least `minimum_iou_threshold`); match the low-score detections to the tracks left over
(ByteTrack's idea: an occluded person's weak box keeps their track alive); start a track from each confident
detection left (score >= `track_activation_threshold`); a track gets an id once it was matched in
`minimum_consecutive_frames` consecutive frames, and is dropped after `lost_track_buffer` frames (counted at
30 fps, scaled by `frame_rate`) without a match.

It is a re-implementation of Roboflow `trackers`' `ByteTrackTracker` (2.6.1, Apache-2.0): the same defaults,
filter noise and order of operations, so on identical detections it gives the same ids frame by frame
(tests/test_tracker.py checks it against outputs that library recorded). That library is not a run-time
dependency because it pulls GUI OpenCV (libGL), PyAV and matplotlib, and its `opencv-python` overwrites the
`opencv-python-headless` this package decodes with (BENCHMARKS.md section 23).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..base.flag_fields import setting

_DIM = 8  # x1, y1, x2, y2, vx1, vy1, vx2, vy2
_F = np.eye(_DIM) + np.eye(_DIM, k=4)  # one frame of constant velocity
_H = np.eye(4, _DIM)  # we observe the corners
_R = np.eye(4) * 0.1  # ByteTrack's tuning in that library: measurement noise 0.1, process noise 0.01, P0 = I
_Q = np.eye(_DIM) * 0.01
_EYE = np.eye(_DIM)
TRACKING = "tracking (ByteTrack)"


@dataclass(frozen=True)
class ByteTrackConfig:
    """The association's settings (each field carries its flag's help: cli.setting_flags); the defaults are the
    reference library's."""

    lost_track_buffer: int = setting(30, "frames (at 30 fps; scaled by the frame rate) a lost track is kept for",
                                     TRACKING)
    frame_rate: float = setting(30.0, "the video's frames per second (pass VideoInfo.fps)", TRACKING)
    track_activation_threshold: float = setting(0.7, "least score of a detection that starts a track", TRACKING)
    minimum_consecutive_frames: int = setting(2, "frames in a row a track is matched before it gets an id", TRACKING)
    minimum_iou_threshold: float = setting(0.1, "least IoU of a track and a detection that match", TRACKING)
    high_conf_det_threshold: float = setting(0.6, "detections scoring at least this match first; the rest only "
                                                  "keep tracks alive", TRACKING)

    def __post_init__(self) -> None:
        if not isinstance(self.lost_track_buffer, int) or self.lost_track_buffer < 0:
            raise ValueError(f"lost_track_buffer must be a whole number >= 0, not {self.lost_track_buffer!r}")
        if not isinstance(self.minimum_consecutive_frames, int) or self.minimum_consecutive_frames < 1:
            raise ValueError(f"minimum_consecutive_frames must be a whole number >= 1, not "
                             f"{self.minimum_consecutive_frames!r}")
        if not (math.isfinite(self.frame_rate) and self.frame_rate > 0):
            raise ValueError(f"frame_rate must be a positive number, not {self.frame_rate!r}")
        for name in ("track_activation_threshold", "minimum_iou_threshold", "high_conf_det_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")

    @property
    def max_frames_lost(self) -> int:
        """The buffer in this video's frames: 0 stays 0, else at least 1."""
        if self.lost_track_buffer == 0:
            return 0
        return max(1, math.ceil(self.frame_rate / 30.0 * self.lost_track_buffer))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes, in float32 as the reference computes it (ties then break the same way)."""
    out = np.zeros((len(a), len(b)), np.float32)
    if len(a) == 0 or len(b) == 0:
        return out
    a, b = a.astype(np.float64), b.astype(np.float64)
    w = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    h = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(0)
    inter = w * h
    union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None]
    union = union - inter
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _match(iou: np.ndarray, least: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Hungarian assignment maximising IoU, pairs under `least` dropped: (pairs, free rows, free columns)."""
    pairs: list[tuple[int, int]] = []
    if iou.size:
        rows, cols = linear_sum_assignment(iou, maximize=True)
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= least]
    used_r, used_c = {r for r, _ in pairs}, {c for _, c in pairs}
    return pairs, [r for r in range(iou.shape[0]) if r not in used_r], [c for c in range(iou.shape[1])
                                                                         if c not in used_c]


def check_detections(dets: np.ndarray) -> np.ndarray:
    """(N, 5) x1, y1, x2, y2, score as float64, or a one-line ValueError: a detector's NaN or inverted box
    would otherwise poison a track's filter for the rest of the video."""
    arr = np.asarray(dets, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 5))
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise ValueError(f"detections must be an (N, 5) array of x1, y1, x2, y2, score; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("detections hold NaN or infinite values")
    if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
        raise ValueError("detections hold an inverted box (x2 < x1 or y2 < y1)")
    return arr


class ByteTracker:
    """Track ids across one video's frames; `update` once per frame, in order (a new video: a new tracker)."""

    def __init__(self, config: ByteTrackConfig | None = None, include_lost: bool = False):
        """`include_lost`: also report confirmed tracks missed in this frame but still kept, at their predicted
        box (det_index -1); off, every row is a detection of this frame."""
        self.config = config or ByteTrackConfig()
        self.include_lost = include_lost
        self._x = np.zeros((0, _DIM))  # per track, in creation order (the reference's list order)
        self._p = np.zeros((0, _DIM, _DIM))
        self._id = np.zeros(0, np.int64)  # -1 until confirmed
        self._run = np.zeros(0, np.int64)  # matched frames in a row
        self._lost = np.zeros(0, np.int64)  # frames since the last match
        self._next_id = 0

    def __len__(self) -> int:
        """Tracks held (confirmed or not)."""
        return len(self._id)

    def update(self, dets: np.ndarray) -> np.ndarray:
        """One frame's detections (N, 5) -> (M, 6) float: x1, y1, x2, y2, track_id, det_index for the confirmed
        tracks in this frame, by track id. A matched track's box is its detection's box."""
        dets = check_detections(dets)
        cfg = self.config
        # predict: a track missed last frame restarts its run of matches
        self._run[self._lost > 0] = 0
        self._x = self._x @ _F.T
        self._p = _F @ self._p @ _F.T + _Q
        self._lost += 1
        predicted = self._x[:, :4].copy()

        scores = dets[:, 4]
        is_high = scores >= cfg.high_conf_det_threshold
        high, low = np.flatnonzero(is_high), np.flatnonzero(~is_high)
        matches: list[tuple[int, int]] = []  # (track row, detection row)
        pairs, free_tracks, free_high = _match(box_iou(predicted, dets[high, :4]), cfg.minimum_iou_threshold)
        matches += [(t, int(high[d])) for t, d in pairs]
        pairs, _, _ = _match(box_iou(predicted[free_tracks], dets[low, :4]), cfg.minimum_iou_threshold)
        matches += [(free_tracks[t], int(low[d])) for t, d in pairs]

        det_of = np.full(len(self), -1, np.int64)
        if matches:
            rows = np.array([t for t, _ in matches])
            det_of[rows] = [d for _, d in matches]
            self._correct(rows, dets[det_of[rows], :4])
            self._lost[rows] = 0
            self._run[rows] += 1
            for t in rows:  # in match order, as the reference hands out ids
                if self._id[t] == -1 and self._run[t] >= cfg.minimum_consecutive_frames:
                    self._id[t], self._next_id = self._next_id, self._next_id + 1

        born = [int(high[d]) for d in free_high if scores[high[d]] >= cfg.track_activation_threshold]
        if born:
            n = len(born)
            x = np.zeros((n, _DIM))
            x[:, :4] = dets[born, :4]
            self._x = np.concatenate([self._x, x])
            self._p = np.concatenate([self._p, np.broadcast_to(_EYE, (n, _DIM, _DIM))])
            self._id = np.concatenate([self._id, np.full(n, -1)])
            self._run = np.concatenate([self._run, np.ones(n, np.int64)])
            self._lost = np.concatenate([self._lost, np.zeros(n, np.int64)])
            det_of = np.concatenate([det_of, np.full(n, -1)])

        out = self._report(dets, det_of)
        # kept: within the buffer, and confirmed, or matched enough frames in a row, or matched in this frame
        mature = (self._id != -1) | (self._run >= cfg.minimum_consecutive_frames)
        keep = (self._lost <= cfg.max_frames_lost) & (mature | (self._lost == 0))
        state = (self._x, self._p, self._id, self._run, self._lost)
        self._x, self._p, self._id, self._run, self._lost = (a[keep] for a in state)
        return out

    def confirmed(self) -> np.ndarray:
        """(K, 5) x1, y1, x2, y2, track_id: every confirmed track kept after the last update, at its Kalman box
        (the filtered one where matched, the predicted one where lost), in creation order."""
        rows = np.flatnonzero(self._id != -1)
        return np.concatenate([self._x[rows, :4], self._id[rows, None].astype(np.float64)], axis=1)

    def _correct(self, rows: np.ndarray, z: np.ndarray) -> None:
        """The Kalman update of the matched tracks with their detections' corners (Joseph form, as the
        reference)."""
        x, p = self._x[rows], self._p[rows]
        pht = p[:, :, :4]  # P H^T
        k = pht @ np.linalg.inv(p[:, :4, :4] + _R)
        x = x + (k @ (z - x[:, :4])[:, :, None])[:, :, 0]
        i_kh = _EYE - k @ _H
        self._x[rows] = x
        self._p[rows] = i_kh @ p @ i_kh.transpose(0, 2, 1) + k @ _R @ k.transpose(0, 2, 1)

    def _report(self, dets: np.ndarray, det_of: np.ndarray) -> np.ndarray:
        """Rows for confirmed tracks: matched ones at their detection, lost ones (if asked) where predicted."""
        show = (self._id != -1) & ((det_of >= 0) | (self.include_lost & (self._lost <= self.config.max_frames_lost)))
        rows = np.flatnonzero(show)
        out = np.zeros((len(rows), 6))
        if len(rows):
            d = det_of[rows]
            out[:, :4] = np.where((d >= 0)[:, None], dets[np.maximum(d, 0), :4] if len(dets) else 0,
                                  self._x[rows, :4])
            out[:, 4], out[:, 5] = self._id[rows], d
            out = out[np.argsort(out[:, 4], kind="stable")]
        return out
