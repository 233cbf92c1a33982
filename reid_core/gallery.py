"""Gallery: a search gallery kept in one SQLite file, the only source of truth; the GalleryIndex is a cache.

Why SQLite (stdlib `sqlite3`, WAL): add, remove and clear must each be all-or-nothing when the process is
killed at any instant. Each image's stored picture (or the path of the user's own file), its name, its ids
and its embedding live in one row, and every change is one transaction, so after a kill -9 a restart sees the
state before or after it: never an entry without its image, never an image without its entry, no file beside
the database to leave behind. A search reads one snapshot (a read transaction) for both the ranking and the
pictures, so a concurrent clear, in this process or another, cannot pull an image from under it.

The weights' identity (`weights_id`, a hash) is stored: a gallery embedded by other weights is re-embedded
from its stored pictures when it is opened, in one transaction, or refused in one line; embeddings of two
models are never mixed.

    g = reid.gallery("people.sqlite")          # or Gallery(path, embed_fn, weights_id)
    report = g.add(uploads.iter_uploads(paths, skipped, limits))
    matches = g.search(reid.embed(query), k=10, pictures=10)
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .datasets import parse_identity
from .images import ImageError, load_image
from .index import RERANK_POOL, GalleryIndex
from .limits import Limits
from .metrics import market_rank
from .screen import person_warning
from .uploads import count_uploads, iter_uploads, read_image

FORMAT_VERSION = 1
STORE_SIZE = (128, 256)  # (w, h): stored pictures are at most this big, enough for any re-id input size
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order: search ties keep it
    id TEXT NOT NULL UNIQUE,                -- hash of the uploaded bytes (or of the path)
    name TEXT NOT NULL,
    pid INTEGER,
    camid INTEGER,
    picture BLOB,                           -- the stored PNG, or NULL when `path` names the user's own file
    path TEXT,
    embedding BLOB NOT NULL,                -- float32, unit length
    CHECK (picture IS NOT NULL OR path IS NOT NULL)
);
"""

Embed = Callable[[Sequence[Image.Image]], np.ndarray]


class GalleryError(ValueError):
    """A gallery that cannot be opened or changed; one line naming the file and the reason."""


@dataclass
class AddReport:
    added: int = 0
    skipped: list[str] = field(default_factory=list)  # one line per upload left out, naming it and why
    warnings: list[str] = field(default_factory=list)  # added, but worth a look (e.g. not a person crop)

    def describe(self, most: int = 50) -> str:
        """Skips and warnings as Markdown lines, at most `most` of each (for the app and the CLI)."""
        lines = [f"- skipped {s}" for s in self.skipped[:most]] + [f"- warning {w}" for w in self.warnings[:most]]
        more = len(self.skipped) + len(self.warnings) - len(lines)
        return "\n".join(lines + ([f"- … and {more} more"] if more > 0 else []))


@dataclass
class Match:
    score: float
    id: str
    name: str
    pid: int | None
    camid: int | None
    path: str | None = None
    picture: Image.Image | None = None  # filled for the first `pictures` matches of a search


def stored_picture(img: Image.Image) -> Image.Image:
    """Downsized to STORE_SIZE (the picture kept and embedded, so a re-embedding sees the same pixels)."""
    img = img.copy()
    img.thumbnail(STORE_SIZE, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return img


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")  # lossless
    return buf.getvalue()


def _ids(name: str) -> tuple[int | None, int | None]:
    return parse_identity(name) or (None, None)


def _load(picture: bytes | None, path: str | None) -> Image.Image:
    """A row's image: its stored picture, else the user's file it points at."""
    return load_image(picture if picture is not None else path)


def _counted(items: Iterable[Any], progress: Callable[[int], None] | None) -> Iterator[Any]:
    """The items, calling progress(n) once the n-th has been dealt with (added or skipped alike)."""
    for done, item in enumerate(items, start=1):
        yield item
        if progress:
            progress(done)


class Gallery:
    """One gallery file. Thread-safe; other processes may use the same file (SQLite locks it)."""

    def __init__(self, path: str | Path, embed: Embed, weights_id: str, limits: Limits | None = None,
                 batch_size: int = 32, approx: str | None = None, nlist: int | None = None,
                 nprobe: int | None = None):
        """`approx="ivf"` (with nlist/nprobe) makes the cache a FAISS IVF index and is stored with the
        gallery; without it, what the gallery stored is used (exact search by default)."""
        self.path, self.embed, self.weights_id = Path(path), embed, weights_id
        self.limits, self.batch_size = limits or Limits(), batch_size
        self._writer = threading.Lock()  # one add/remove/clear at a time in this process
        self._state = threading.Lock()  # guards the cache
        self._cache: tuple[int, GalleryIndex] | None = None  # (generation, index)
        self.closed = False
        self.message = ""  # what opening did (e.g. re-embedded for new weights), for the UI
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as conn:
                conn.executescript(SCHEMA)
                self._check_version(conn)
                if approx:
                    self._set(conn, index=json.dumps({"approx": approx, "nlist": nlist, "nprobe": nprobe}))
                self.index_settings = json.loads(self._meta(conn, "index", "{}"))
        except sqlite3.DatabaseError as e:
            raise GalleryError(f"{self.path.name}: not a readable gallery ({e})") from e
        self._adopt_weights()

    # --- plumbing -------------------------------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if self.closed:
            raise GalleryError(f"{self.path.name}: this gallery has expired or was deleted")
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a committed add survives a power cut too, not only a kill
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, write: bool, same_weights: bool = True) -> Iterator[None]:
        """BEGIN IMMEDIATE takes the write lock up front, so two writers never both read then fail to commit.
        `same_weights`: refuse a file that another handle has re-embedded for other weights since this one opened
        it (its rows and this handle's queries would come from two models)."""
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            if same_weights and self._meta(conn, "weights") not in ("", self.weights_id):
                raise GalleryError(f"{self.path.name}: re-embedded for another model since it was opened here; "
                                   "reload the page")
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _meta(conn: sqlite3.Connection, key: str, default: str = "") -> str:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    @staticmethod
    def _set(conn: sqlite3.Connection, **values: Any) -> None:
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in values.items()])

    def _bump(self, conn: sqlite3.Connection) -> int:
        gen = int(self._meta(conn, "generation", "0")) + 1
        self._set(conn, generation=gen)
        return gen

    def _check_version(self, conn: sqlite3.Connection) -> None:
        version = int(self._meta(conn, "version", "0"))
        if version > FORMAT_VERSION:
            raise GalleryError(f"{self.path.name}: gallery format {version} is newer than this code's "
                               f"{FORMAT_VERSION}; update reid")
        if not version:
            self._set(conn, version=FORMAT_VERSION)

    def _index(self, conn: sqlite3.Connection) -> GalleryIndex:
        """The cached index of this connection's snapshot, rebuilt when another writer changed the file."""
        gen = int(self._meta(conn, "generation", "0"))
        with self._state:
            if self._cache is not None and self._cache[0] == gen:
                return self._cache[1]
        index = GalleryIndex(**self.index_settings)
        rows = conn.execute("SELECT id, name, pid, camid, path, embedding FROM images ORDER BY seq").fetchall()
        if rows:
            emb = np.stack([np.frombuffer(r[5], np.float32) for r in rows])
            index.add(emb, [r[0] for r in rows], [{"name": r[1], "pid": r[2], "camid": r[3], "path": r[4]}
                                                  for r in rows])
            if index.approx and len(index) >= (index.nlist or 1):
                index.train()  # before it is shared: a search must never mutate an index another thread reads
        with self._state:
            if self._cache is None or self._cache[0] <= gen:
                self._cache = (gen, index)
        return index

    # --- weights --------------------------------------------------------------------------------------------
    def _adopt_weights(self) -> None:
        """Re-embed every row for this gallery's weights, in one transaction, if it was built with others."""
        with self._writer, self._connect() as conn, self._transaction(conn, write=True, same_weights=False):
            built = self._meta(conn, "weights")
            n = conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            if built == self.weights_id:
                return
            if n:
                rows = conn.execute("SELECT seq, name, picture, path FROM images ORDER BY seq").fetchall()
                for s in range(0, n, self.batch_size):
                    chunk = rows[s:s + self.batch_size]
                    try:
                        imgs = [_load(r[2], r[3]) for r in chunk]
                    except ImageError as e:
                        raise GalleryError(f"{self.path.name}: embedded by other weights and cannot be re-embedded "
                                           f"({e}); clear it or open it with the weights that built it") from e
                    emb = self.embed(imgs).astype(np.float32)
                    conn.executemany("UPDATE images SET embedding = ? WHERE seq = ?",
                                     [(e.tobytes(), r[0]) for e, r in zip(emb, chunk, strict=True)])
                self.message = f"Gallery re-embedded for the current weights ({n} images)."
            self._set(conn, weights=self.weights_id)
            self._bump(conn)

    # --- reading --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def entries(self) -> list[dict[str, Any]]:
        """Every row's id, name, ids and path (no pictures), in insertion order."""
        with self._connect() as conn, self._transaction(conn, write=False):
            return self._index(conn).metadata

    def embeddings(self) -> np.ndarray:
        with self._connect() as conn, self._transaction(conn, write=False):
            return self._index(conn).embeddings

    def picture(self, id_: str) -> Image.Image:
        with self._connect() as conn:
            row = conn.execute("SELECT picture, path FROM images WHERE id = ?", (id_,)).fetchone()
        if row is None:
            raise GalleryError(f"{self.path.name}: no image {id_!r}")
        return _load(*row)

    def search(self, query: np.ndarray, k: int | None = None, rerank: bool = False, pictures: int = 0,
               exact: bool = False) -> list[Match]:
        """The top k (default: the whole gallery) for one query embedding, best first; the first `pictures`
        matches carry their picture, read from the same snapshot as the ranking."""
        with self._connect() as conn, self._transaction(conn, write=False):
            index = self._index(conn)
            n = len(index)
            k = n if k is None else min(int(k), n)
            if rerank and n > RERANK_POOL and k == n:
                raise GalleryError(f"re-ranking needs a gallery of at most {RERANK_POOL:,} images; this one has "
                                   f"{n:,}")
            scores, rows = index.search(np.atleast_2d(query)[:1], k, rerank=rerank, exact=exact)
            out = [Match(float(s), r["id"], r["name"], r["pid"], r["camid"], r.get("path"))
                   for s, r in zip(scores[0], rows[0], strict=True)]
            for m in out[:pictures]:
                row = conn.execute("SELECT picture, path FROM images WHERE id = ?", (m.id,)).fetchone()
                m.picture = _load(*row)
        return out

    # --- writing --------------------------------------------------------------------------------------------
    def add(self, uploads: Iterable[tuple[str, bytes]], progress: Callable[[int], None] | None = None,
            ) -> AddReport:
        """Decode, check, store and embed (name, bytes) uploads batch by batch in ONE transaction: a failure
        or a kill leaves the gallery as it was. Each bad upload is skipped with a line naming it."""
        report = AddReport()
        with self._writer, self._connect() as conn, self._transaction(conn, write=True):
            have = self._names(conn)
            room = self.limits.max_gallery - len(have)
            batch: list[tuple[str, str, Image.Image]] = []  # (digest, name, the picture as stored)
            for name, data in _counted(uploads, progress):
                if report.added + len(batch) >= room:
                    report.skipped.append(f"{name} and any later files: the gallery is full "
                                          f"({self.limits.max_gallery:,}-image limit; clear it to add others)")
                    break
                digest = hashlib.blake2b(data, digest_size=8).hexdigest()
                if digest in have:
                    same = "" if have[digest] == name else f" (same picture as {have[digest]})"
                    report.skipped.append(f"{name}: already in the gallery{same}")
                    continue
                try:
                    img = read_image(data, name, self.limits)
                except ImageError as e:
                    report.skipped.append(str(e))
                    continue
                if why := person_warning(img):
                    report.warnings.append(f"{name}: {why}")
                have[digest] = name
                batch.append((digest, name, stored_picture(img)))
                if len(batch) == self.batch_size:
                    report.added += self._insert(conn, batch)
            if batch:
                report.added += self._insert(conn, batch)
            if report.added:
                self._bump(conn)
        return report

    def add_files(self, paths: Sequence[str | Path], names: Sequence[str] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> AddReport:
        """Uploaded images and zips of images (`names`: what messages call each path, e.g. the user's own
        file name); `progress(done, total)` counts images, zip members included."""
        paths = [Path(p) for p in paths]
        total = count_uploads(paths, self.limits)
        skipped: list[str] = []
        if progress:
            progress(0, total)
        report = self.add(iter_uploads(paths, skipped, self.limits, list(names) if names else None),
                          (lambda done: progress(done, total)) if progress else None)
        report.skipped[:0] = skipped
        return report

    def add_paths(self, paths: Sequence[str | Path], embeddings: np.ndarray | None = None) -> int:
        """Rows that point at files instead of holding pictures (a CLI gallery over the user's own folder),
        embedded here unless `embeddings` (from `python -m reid_core embed`) are given. One transaction."""
        paths = [str(Path(p).resolve()) for p in paths]
        with self._writer, self._connect() as conn, self._transaction(conn, write=True):
            have = self._names(conn)
            new = [(k, p) for k, p in enumerate(paths) if self._path_id(p) not in have]
            for s in range(0, len(new), self.batch_size):
                chunk = new[s:s + self.batch_size]
                emb = (embeddings[[k for k, _ in chunk]] if embeddings is not None
                       else self.embed([load_image(p) for _, p in chunk]))
                self._write_rows(conn, [(self._path_id(p), Path(p).name, None, p) for _, p in chunk], emb)
            if new:
                self._bump(conn)
        return len(new)

    @staticmethod
    def _names(conn: sqlite3.Connection) -> dict[str, str]:
        """id -> name of every row: what an add checks for duplicates and room (no index, no embeddings read)."""
        return dict(conn.execute("SELECT id, name FROM images").fetchall())

    @staticmethod
    def _path_id(path: str) -> str:
        return hashlib.blake2b(path.encode(), digest_size=8).hexdigest()

    def _insert(self, conn: sqlite3.Connection, batch: list[tuple[str, str, Image.Image]]) -> int:
        emb = self.embed([img for _, _, img in batch])
        self._write_rows(conn, [(d, n, png(img), None) for d, n, img in batch], emb)
        n = len(batch)
        batch.clear()
        return n

    def _write_rows(self, conn: sqlite3.Connection, rows: list[tuple[str, str, bytes | None, str | None]],
                    emb: np.ndarray) -> None:
        emb = np.asarray(emb, np.float32)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
        dim = int(self._meta(conn, "dim", "0"))
        if dim and emb.shape[1] != dim:
            raise GalleryError(f"{self.path.name}: holds {dim}-d embeddings, not {emb.shape[1]}-d")
        self._set(conn, dim=emb.shape[1])
        conn.executemany("INSERT INTO images (id, name, pid, camid, picture, path, embedding) VALUES (?,?,?,?,?,?,?)",
                         [(i, n, *_ids(n), pic, path, e.tobytes()) for (i, n, pic, path), e in zip(rows, emb,
                                                                                                   strict=True)])

    def remove(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        with self._writer, self._connect() as conn, self._transaction(conn, write=True):
            gone = sum(conn.execute("DELETE FROM images WHERE id = ?", (i,)).rowcount for i in ids)
            if gone:
                self._bump(conn)
        return gone

    def clear(self) -> int:
        with self._writer, self._connect() as conn, self._transaction(conn, write=True):
            gone = conn.execute("DELETE FROM images").rowcount
            self._bump(conn)
        return gone

    def delete(self) -> None:
        """Remove the file (an expired private gallery); later calls say it has expired."""
        with self._writer, self._state:
            self.closed = True
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class Galleries:
    """Who sees which gallery: by default every session its own private gallery, deleted after
    `limits.session_minutes` idle; with `shared`, one gallery for everybody, kept until cleared."""

    def __init__(self, folder: str | Path, open_gallery: Callable[[Path], Gallery], limits: Limits,
                 shared: bool = False):
        self.folder, self.open_gallery, self.limits, self.shared = Path(folder), open_gallery, limits, shared
        self._open: dict[str, tuple[Gallery, float]] = {}  # key -> (gallery, last used, monotonic)
        self._lock = threading.Lock()
        self._swept = 0.0

    def key(self, session: str | None) -> str:
        """A file-name-safe key: a hash of the session id (never the id itself, which is the client's)."""
        if self.shared:
            return "shared"
        if not session:
            raise GalleryError("no browser session: private galleries need one (or start the app with a shared "
                               "gallery)")
        return "session-" + hashlib.blake2b(session.encode(), digest_size=12).hexdigest()

    def get(self, session: str | None) -> Gallery:
        key = self.key(session)
        with self._lock:
            self._sweep()
            if key in self._open:
                gallery = self._open[key][0]
            else:
                if not self.shared and len(self._open) >= self.limits.max_sessions:
                    raise GalleryError(f"{len(self._open)} private galleries are in use, the most this server "
                                       "keeps; try again later")
                gallery = self.open_gallery(self.folder / f"{key}.sqlite")
            self._open[key] = (gallery, time.monotonic())
        return gallery

    def reopen(self, session: str | None, open_gallery: Callable[[Path], Gallery]) -> Gallery:
        """Open this session's gallery file again through `open_gallery` (another model: its rows are re-embedded
        for it, in one transaction); the old handle is closed, so a request still holding it fails in one line
        instead of mixing two models' embeddings."""
        key = self.key(session)
        with self._lock:
            old = self._open.get(key, (None, 0.0))[0]
        if old is not None:
            with old._writer:  # an add in flight on the old handle finishes first
                old.closed = True
        gallery = open_gallery(self.folder / f"{key}.sqlite")  # re-embeds: outside the lock every session needs
        with self._lock:
            self._open[key] = (gallery, time.monotonic())
        return gallery

    def count(self, keep: Callable[[Gallery], bool]) -> int:
        """How many open galleries `keep` holds for (e.g. those embedded by an adapted model)."""
        with self._lock:
            return sum(keep(g) for g, _ in self._open.values())

    def _sweep(self) -> None:
        """Delete private galleries idle past their time (at most once a minute), open ones and files left by
        an earlier run of the server alike."""
        now = time.monotonic()
        if self.shared or now - self._swept < 60:
            return
        self._swept = now
        ttl = 60 * self.limits.session_minutes
        for key, (gallery, used) in list(self._open.items()):
            if now - used > ttl:
                gallery.delete()
                del self._open[key]
        for f in self.folder.glob("session-*.sqlite"):
            if f.stem not in self._open and time.time() - f.stat().st_mtime > ttl:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{f}{suffix}").unlink(missing_ok=True)


def ranking_ap(pid: int, cam: int, ranked: Sequence[Match]) -> float | None:
    """A query's AP over a whole ranked gallery under the Market-1501 protocol (its own-camera copies and
    unknown ids ignored), or None when no image of its id from another camera is in the gallery."""
    g_pids = np.array([-1 if m.pid is None else m.pid for m in ranked])
    g_cams = np.array([-1 if m.camid is None else m.camid for m in ranked])
    dist = 1 - np.array([m.score for m in ranked], np.float32)
    try:
        return market_rank(dist[None], np.array([pid]), g_pids, np.array([cam]), g_cams).mAP
    except ValueError:
        return None



