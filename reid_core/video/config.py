"""How footage is cut into tracklets and grouped into people: the settings of `Footage` and the CLI's `video`
flags (each declared once, with its help), apart from the pipeline so that building the command line imports no
OpenCV or detector."""

from __future__ import annotations

from dataclasses import dataclass

from ..base.flag_fields import setting


@dataclass
class FootageConfig:
    crops: int = setting(8, "crops kept per tracklet, the best of each stretch of its time", "tracklets")
    sample_every_s: float = setting(0.2, "seconds between a track's candidate crops", "tracklets")
    min_frames: int = setting(8, "tracks seen in fewer frames are dropped (a false detection rarely lasts)",
                              "tracklets")
    detect_every: int = setting(1, "run the detector on every n-th frame (the tracker predicts between)", "tracklets")
    track_start: float = setting(0.6, "least detector score that starts a track (ByteTrack's activation threshold; "
                                 "chosen for the offline SSDLite on TUD-Campus, BENCHMARKS §25.2)", "tracklets")
    track_high: float = setting(0.3, "detections scoring at least this match tracks first; lower ones only keep "
                                "tracks alive (ByteTrack's high-score threshold)", "tracklets")
    join_threshold: float = setting(0.6, "cosine at which two fragments of one video are one person", "tracklets")
    people_threshold: float = setting(0.5, "average cosine at which tracklets across cameras are one person",
                                      "people")
