"""Tracklets in the gallery file: one image row each (its thumbnail and its embedding) plus a `tracklets` row
(camera, time span, every box, the chosen crops), written in the image row's own transaction.

So a tracklet is searched, limited, cleared and re-embedded like a crop: the gallery's limits count it as one
image, a trigger deletes its tracklet row with its image row, and a gallery opened with other weights re-embeds
each tracklet from its stored crops (not from the thumbnail alone). A video is one add: a kill mid-index leaves
the videos indexed before it, never half of one.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import struct
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.images import load_image
from ..search.gallery import STAGING, Gallery, GalleryError, unit_rows
from ..search.ingest import Turn
from .people import cluster_people
from .tracklets import Tracklet, unit

SCHEMA = """
CREATE TABLE IF NOT EXISTS tracklets (
    id TEXT PRIMARY KEY,        -- the id of the tracklet's row in images
    camera TEXT NOT NULL,       -- the video's camera name
    video TEXT NOT NULL,        -- the video's path as indexed (annotation reads it again)
    track INTEGER NOT NULL,     -- the tracker's id in that video
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    boxes BLOB NOT NULL,        -- float64 (n, 6): frame, x1, y1, x2, y2, time_s
    crops BLOB NOT NULL,        -- the chosen crops, length-prefixed PNGs
    weights BLOB NOT NULL,      -- float64 (k,): each crop's quality
    person INTEGER              -- the global identity, set by people()
);
CREATE TRIGGER IF NOT EXISTS tracklet_goes_with_its_image AFTER DELETE ON images
BEGIN DELETE FROM tracklets WHERE id = OLD.id; END;
"""
STAGING_TRACKLETS = """CREATE TEMP TABLE IF NOT EXISTS staged_tracklets (id TEXT PRIMARY KEY, camera TEXT, video TEXT,
    track INTEGER, start_s REAL, end_s REAL, boxes BLOB, crops BLOB, weights BLOB)"""
TRACKLET_COLUMNS = "id, camera, video, track, start_s, end_s, boxes, crops, weights"


@dataclass
class TrackletMatch:
    """A search hit: where and when the person was seen, and how alike."""

    score: float
    id: str
    camera: str
    track: int
    start_s: float
    end_s: float
    person: int | None
    thumbnail: Image.Image | None = None


@dataclass
class Person:
    """A global identity: its tracklets, camera by camera."""

    label: int
    tracklets: list[TrackletMatch]

    @property
    def cameras(self) -> list[str]:
        return sorted({t.camera for t in self.tracklets})


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pack_pngs(images: Sequence[Image.Image]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in map(png, images))


def unpack_pngs(blob: bytes) -> list[Image.Image]:
    out, s = [], 0
    while s < len(blob):
        (n,) = struct.unpack_from("<I", blob, s)
        out.append(load_image(blob[s + 4:s + 4 + n], name="stored crop"))
        s += 4 + n
    return out


def file_digest(path: str | Path) -> str:
    """What identifies a video's content (re-indexing the same file adds nothing)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class TrackletGallery(Gallery):
    """A Gallery whose rows may be tracklets (and crops alike)."""

    def __init__(self, path: str | Path, *args: Any, **kw: Any):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, timeout=60)
            try:
                from ..search.gallery import SCHEMA as IMAGES

                conn.executescript(IMAGES + SCHEMA)
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            raise GalleryError(f"{Path(path).name}: not a readable gallery ({e})") from e
        super().__init__(path, *args, **kw)

    # --- writing --------------------------------------------------------------------------------------------
    def add_tracklets(self, tracklets: Sequence[Tracklet], video: str | Path, video_id: str) -> int:
        """Store one video's embedded tracklets in one transaction; the number added (0 when the same video, by
        content, was indexed before)."""
        rows, meta = [], []
        for t in tracklets:
            if t.embedding is None:
                raise ValueError("add_tracklets: embed the tracklets first (embed_tracklets)")
            tid = hashlib.blake2b(f"{video_id}:{t.track}".encode(), digest_size=8).hexdigest()
            name = f"{t.camera} track {t.track} {t.start_s:.1f}-{t.end_s:.1f}s"
            rows.append((tid, name, png(t.thumbnail), None))
            meta.append((tid, t.camera, str(video), t.track, t.start_s, t.end_s, t.boxes.astype(np.float64).tobytes(),
                         pack_pngs(t.crops), np.asarray(t.weights, np.float64).tobytes()))
        if not rows:
            return 0

        def insert_tracklets(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT OR IGNORE INTO tracklets ({TRACKLET_COLUMNS}) SELECT {TRACKLET_COLUMNS} FROM "
                         "temp.staged_tracklets WHERE id IN (SELECT id FROM main.images)")

        with self._connect() as conn:
            conn.execute(STAGING)
            conn.execute(STAGING_TRACKLETS)
            conn.execute("DELETE FROM temp.staged_tracklets")
            conn.executemany(f"INSERT OR REPLACE INTO temp.staged_tracklets ({TRACKLET_COLUMNS}) VALUES "
                             "(?,?,?,?,?,?,?,?,?)", meta)
            have = self._names(conn)
            new = [k for k, r in enumerate(rows) if r[0] not in have]
            if not new:
                return 0
            self._stage(conn, [rows[k] for k in new], np.stack([tracklets[k].embedding for k in new]))
            added = self._commit_staged(conn, also=insert_tracklets)
            conn.execute("DELETE FROM temp.staged_tracklets")
        return added

    def _embed_rows(self, rows: list[tuple[int, str, bytes | None, str | None]], turn: Turn = nullcontext,
                    ) -> np.ndarray:
        """Re-embedding for other weights: a tracklet from its stored crops (quality-weighted), a crop as before;
        each embedding in a `turn` (the app's fair lane)."""
        with self._connect() as conn:
            stored = {seq: (crops, weights) for seq, crops, weights in conn.execute(
                "SELECT i.seq, t.crops, t.weights FROM images i JOIN tracklets t ON t.id = i.id").fetchall()}
        if not stored:
            return super()._embed_rows(rows, turn)
        out = []
        for r in rows:
            if r[0] in stored:
                crops, weights = stored[r[0]]
                with turn():
                    e = unit_rows(self.embed(unpack_pngs(crops)))
                out.append(unit(np.average(e, axis=0, weights=np.frombuffer(weights, np.float64)))[None])
            else:
                out.append(super()._embed_rows([r], turn))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    # --- reading --------------------------------------------------------------------------------------------
    def _tracklet_rows(self, conn: sqlite3.Connection, ids: Sequence[str] | None = None) -> dict[str, tuple]:
        sql = "SELECT id, camera, track, start_s, end_s, person FROM tracklets"
        if ids is None:
            return {r[0]: r for r in conn.execute(sql).fetchall()}
        return {r[0]: r for i in ids for r in conn.execute(sql + " WHERE id = ?", (i,)).fetchall()}

    def tracklet_count(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM tracklets").fetchone()[0]

    def search_tracklets(self, query: np.ndarray, k: int = 10, pictures: int = 0) -> list[TrackletMatch]:
        """The k tracklets most like a query embedding, best first (crop rows of the same file left out)."""
        matches = self.search(query)
        with self._connect() as conn:
            meta = self._tracklet_rows(conn)
        hits = [m for m in matches if m.id in meta][:k]
        out = [TrackletMatch(m.score, m.id, *meta[m.id][1:]) for m in hits]
        for t in out[:pictures]:
            t.thumbnail = self.picture(t.id)
        return out

    def tracklets(self) -> list[TrackletMatch]:
        """Every tracklet (score 0), camera by camera in time order."""
        with self._connect() as conn:
            rows = self._tracklet_rows(conn)
        return sorted((TrackletMatch(0.0, r[0], *r[1:]) for r in rows.values()),
                      key=lambda t: (t.camera, t.start_s, t.track))

    def crop_counts(self) -> dict[str, int]:
        """How many crops each tracklet stores, by its id (read without the crops)."""
        with self._connect() as conn:
            return dict(conn.execute("SELECT id, length(weights) / 8 FROM tracklets").fetchall())

    def tracklet_crops(self, ids: Sequence[str]) -> list[list[Image.Image]]:
        """Each tracklet's stored crops (self-training reads them as one person's: a track is free positives)."""
        if not ids:
            return []
        with self._connect() as conn:
            blobs = dict(conn.execute(f"SELECT id, crops FROM tracklets WHERE id IN ({','.join('?' * len(ids))})",
                                      list(ids)).fetchall())
        missing = [i for i in ids if i not in blobs]
        if missing:
            raise GalleryError(f"{self.path.name}: no tracklet {missing[0]!r}")
        return [unpack_pngs(blobs[i]) for i in ids]

    def boxes(self, camera: str) -> tuple[str, list[tuple[int | None, int, np.ndarray]]]:
        """A camera's video path and each of its tracklets' person label, track and boxes (for annotation)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT video, person, track, boxes FROM tracklets WHERE camera = ? ORDER BY "
                                "start_s", (camera,)).fetchall()
        if not rows:
            raise GalleryError(f"{self.path.name}: no tracklets of camera {camera!r}")
        return rows[0][0], [(p, t, np.frombuffer(b, np.float64).reshape(-1, 6)) for _, p, t, b in rows]

    def people(self, threshold: float) -> list[Person]:
        """Cluster every tracklet into global identities (cameras.people), store each one's label, and return
        the people, the most seen first."""
        entries = self.tracklets()
        if not entries:
            return []
        emb_by_id = dict(zip((e["id"] for e in self.entries()), self.embeddings(), strict=True))
        emb = np.stack([emb_by_id[t.id] for t in entries])
        labels = cluster_people(emb, [t.camera for t in entries], np.array([[t.start_s, t.end_s] for t in entries]),
                                threshold)
        with self._writer, self._connect() as conn, self._transaction(conn, write=True):
            conn.executemany("UPDATE tracklets SET person = ? WHERE id = ?",
                             [(int(p), t.id) for p, t in zip(labels, entries, strict=True)])
        people: dict[int, list[TrackletMatch]] = {}
        for p, t in zip(labels, entries, strict=True):
            t.person = int(p)
            people.setdefault(int(p), []).append(t)
        return sorted((Person(p, ts) for p, ts in people.items()),
                      key=lambda q: (-len(q.cameras), -sum(t.end_s - t.start_s for t in q.tracklets), q.label))
