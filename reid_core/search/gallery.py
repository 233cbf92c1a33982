"""Gallery: a search gallery kept in one SQLite file, the only source of truth; the GalleryIndex is a cache.

Why SQLite (stdlib `sqlite3`, WAL): add, remove and clear must each be all-or-nothing when the process is
killed at any instant. Each image's stored picture (or the path of the user's own file), its name, its ids
and its embedding live in one row, and every change is one transaction, so after a kill -9 a restart sees the
state before or after it: never an entry without its image, never an image without its entry, no file beside
the database to leave behind. A search reads one snapshot (a read transaction) for both the ranking and the
pictures, so a concurrent clear, in this process or another, cannot pull an image from under it.

Work before the lock: an add decodes and embeds (ingest.py) into this connection's private TEMP table, then
copies the rows in with one short write transaction; re-embedding for other weights reads a snapshot, embeds,
and writes only if nothing changed meanwhile. So other writers wait for inserts, never for a model.

The weights' identity (`weights_id`, a hash) is stored: a gallery embedded by other weights is re-embedded
from its stored pictures when it is opened, or refused in one line; embeddings of two models are never mixed.

    g = reid.gallery("people.sqlite")          # or Gallery(path, embed_fn, weights_id)
    report = g.add(uploads.iter_uploads(paths, skipped, limits))
    matches = g.search(reid.embed(query), k=10, pictures=10)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.datasets import parse_identity
from ..data.images import ImageError, load_image
from ..data.limits import Limits
from ..data.uploads import count_uploads, iter_uploads
from .index import RERANK_POOL, GalleryIndex
from .ingest import AddReport, Embed, Turn, ingest

FORMAT_VERSION = 1
COLUMNS = "id, name, pid, camid, picture, path, embedding"
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
STAGING = """CREATE TEMP TABLE IF NOT EXISTS staged (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
    name TEXT NOT NULL, pid INTEGER, camid INTEGER, picture BLOB, path TEXT, embedding BLOB NOT NULL)"""


class GalleryError(ValueError):
    """A gallery that cannot be opened or changed; one line naming the file and the reason."""


@dataclass
class Match:
    score: float
    id: str
    name: str
    pid: int | None
    camid: int | None
    path: str | None = None
    picture: Image.Image | None = None  # filled for the first `pictures` matches of a search


def _ids(name: str) -> tuple[int | None, int | None]:
    return parse_identity(name) or (None, None)


def _load(picture: bytes | None, path: str | None) -> Image.Image:
    """A row's image: its stored picture, else the user's file it points at."""
    return load_image(picture if picture is not None else path)


def unit_rows(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb, np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)


class Gallery:
    """One gallery file. Thread-safe; other processes may use the same file (SQLite locks it)."""

    def __init__(self, path: str | Path, embed: Embed, weights_id: str, limits: Limits | None = None,
                 batch_size: int = 32, approx: str | None = None, nlist: int | None = None,
                 nprobe: int | None = None, turn: Turn = nullcontext):
        """`approx="ivf"` (with nlist/nprobe) makes the cache a FAISS IVF index and is stored with the
        gallery; without it, what the gallery stored is used (exact search by default). `turn`: each batch of
        a re-embedding for other weights waits for it (see ingest), so re-embedding takes turns as adds do."""
        self.path, self.embed, self.weights_id = Path(path), embed, weights_id
        self.limits, self.batch_size = limits or Limits(), batch_size
        self._writer = threading.Lock()  # one add/remove/clear at a time in this process
        self._state = threading.Lock()  # guards the cache
        self._cache: tuple[int, GalleryIndex] | None = None  # (generation, index)
        self.closed = False
        self.longest_write = 0.0  # seconds: the longest this handle held the write lock
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
        self._adopt_weights(turn)

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
        held = time.perf_counter()
        try:
            if same_weights and self._meta(conn, "weights") not in ("", self.weights_id):
                raise GalleryError(f"{self.path.name}: re-embedded for another model since it was opened here; "
                                   "reload the page")
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        if write:  # how long other writers had to wait, at most: measured, not assumed (bench/gallery_lock.py)
            self.longest_write = max(self.longest_write, time.perf_counter() - held)

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
    def _adopt_weights(self, turn: Turn = nullcontext) -> None:
        """Re-embed every row for this gallery's weights if it was built with others: embed a snapshot (no lock
        held), then write the embeddings in one transaction if no other writer changed the rows meanwhile."""
        for _ in range(3):
            with self._connect() as conn:
                with self._transaction(conn, write=False, same_weights=False):
                    if self._meta(conn, "weights") == self.weights_id:
                        return
                    gen = self._meta(conn, "generation", "0")
                    rows = conn.execute("SELECT seq, name, picture, path FROM images ORDER BY seq").fetchall()
                emb = self._embed_rows(rows, turn)
                with self._writer, self._transaction(conn, write=True, same_weights=False):
                    if self._meta(conn, "generation", "0") != gen:
                        continue  # another writer changed the rows while these were embedded: again
                    conn.executemany("UPDATE images SET embedding = ? WHERE seq = ?",
                                     [(e.tobytes(), r[0]) for e, r in zip(emb, rows, strict=True)])
                    # the stored width follows the new embeddings (0, none yet, for an empty gallery): a later
                    # add of this model's embeddings must not be refused for the old model's width
                    self._set(conn, weights=self.weights_id, dim=emb.shape[1] if rows else 0)
                    self._bump(conn)
                    if rows:
                        self.message = f"Gallery re-embedded for the current weights ({len(rows)} images)."
                    return
        raise GalleryError(f"{self.path.name}: changed by other writers while being re-embedded; open it again")

    def _embed_rows(self, rows: list[tuple[int, str, bytes | None, str | None]], turn: Turn = nullcontext,
                    ) -> np.ndarray:
        out = []
        for s in range(0, len(rows), self.batch_size):
            chunk = rows[s:s + self.batch_size]
            try:
                imgs = [_load(r[2], r[3]) for r in chunk]
            except ImageError as e:
                raise GalleryError(f"{self.path.name}: embedded by other weights and cannot be re-embedded ({e}); "
                                   "clear it or open it with the weights that built it") from e
            with turn():
                out.append(unit_rows(self.embed(imgs)))
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

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
            turn: Turn = nullcontext) -> AddReport:
        """Decode, check, store and embed (name, bytes) uploads (ingest.py), then copy them in with ONE short
        transaction: a failure or a kill leaves the gallery as it was. Each bad upload is skipped with a line
        naming it. `turn`: see ingest."""
        with self._connect() as conn:
            conn.execute(STAGING)
            have = self._names(conn)
            report = ingest(uploads, have, self.limits.max_gallery - len(have), self.embed, self.limits,
                            lambda rows, emb: self._stage(conn, [(i, n, pic, None) for i, n, pic in rows], emb),
                            self.batch_size, progress, turn)
            report.added = self._commit_staged(conn)
        return report

    def add_files(self, paths: Sequence[str | Path], names: Sequence[str] | None = None,
                  progress: Callable[[int, int], None] | None = None, turn: Turn = nullcontext) -> AddReport:
        """Uploaded images and zips of images (`names`: what messages call each path, e.g. the user's own
        file name); `progress(done, total)` counts images, zip members included."""
        paths = [Path(p) for p in paths]
        total = count_uploads(paths, self.limits)
        skipped: list[str] = []
        if progress:
            progress(0, total)
        report = self.add(iter_uploads(paths, skipped, self.limits, list(names) if names else None),
                          (lambda done: progress(done, total)) if progress else None, turn)
        report.skipped[:0] = skipped
        return report

    def add_paths(self, paths: Sequence[str | Path], embeddings: np.ndarray | None = None) -> int:
        """Rows that point at files instead of holding pictures (a CLI gallery over the user's own folder),
        embedded here unless `embeddings` (from `python -m reid_core embed`) are given. One transaction."""
        paths = [str(Path(p).resolve()) for p in paths]
        with self._connect() as conn:
            conn.execute(STAGING)
            have = self._names(conn)
            new = [(k, p) for k, p in enumerate(paths) if self._path_id(p) not in have]
            for s in range(0, len(new), self.batch_size):
                chunk = new[s:s + self.batch_size]
                emb = (embeddings[[k for k, _ in chunk]] if embeddings is not None
                       else self.embed([load_image(p) for _, p in chunk]))
                self._stage(conn, [(self._path_id(p), Path(p).name, None, p) for _, p in chunk], emb)
            return self._commit_staged(conn)

    @staticmethod
    def _names(conn: sqlite3.Connection) -> dict[str, str]:
        """id -> name of every row: what an add checks for duplicates and room (no index, no embeddings read)."""
        return dict(conn.execute("SELECT id, name FROM images").fetchall())

    @staticmethod
    def _path_id(path: str) -> str:
        return hashlib.blake2b(path.encode(), digest_size=8).hexdigest()

    def _stage(self, conn: sqlite3.Connection, rows: list[tuple[str, str, bytes | None, str | None]],
               emb: np.ndarray) -> None:
        """Finished rows into this connection's TEMP table: no lock on the gallery is taken."""
        emb = unit_rows(emb)
        conn.executemany(f"INSERT INTO temp.staged ({COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                         [(i, n, *_ids(n), pic, path, e.tobytes())
                          for (i, n, pic, path), e in zip(rows, emb, strict=True)])

    def _commit_staged(self, conn: sqlite3.Connection,
                       also: Callable[[sqlite3.Connection], None] | None = None) -> int:
        """The staged rows into the gallery in one write transaction: the only time an add holds the lock.
        Rows another writer added meanwhile are left out, and at most the room left is taken. `also(conn)` runs
        in the same transaction after the insert (a tracklet's own row beside its image row)."""
        staged = conn.execute("SELECT embedding FROM temp.staged LIMIT 1").fetchone()
        if staged is None:
            return 0
        with self._writer, self._transaction(conn, write=True):
            dim = int(self._meta(conn, "dim", "0"))
            if dim and len(staged[0]) // 4 != dim:
                raise GalleryError(f"{self.path.name}: holds {dim}-d embeddings, not {len(staged[0]) // 4}-d")
            room = self.limits.max_gallery - conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            added = conn.execute(f"INSERT INTO images ({COLUMNS}) SELECT {COLUMNS} FROM temp.staged "
                                 "WHERE id NOT IN (SELECT id FROM main.images) ORDER BY seq LIMIT ?",
                                 (max(room, 0),)).rowcount
            if added:
                self._set(conn, dim=len(staged[0]) // 4)
                self._bump(conn)
            if also is not None:
                also(conn)
        conn.execute("DELETE FROM temp.staged")
        return added

    def remove(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        with self._writer, self._connect() as conn, self._transaction(conn, write=True):
            gone = sum(conn.execute("DELETE FROM images WHERE id = ?", (i,)).rowcount for i in ids)
            if gone:
                if not conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]:
                    self._set(conn, dim=0)  # emptied: no width held, as after clear()
                self._bump(conn)
        return gone

    def clear(self) -> int:
        with self._writer, self._connect() as conn, self._transaction(conn, write=True):
            gone = conn.execute("DELETE FROM images").rowcount
            self._set(conn, dim=0)  # an empty gallery holds no width: the next add sets it
            self._bump(conn)
        return gone

    def close(self) -> None:
        """Later calls on this handle say it has expired (another handle took over the file); an add in flight
        finishes first."""
        with self._writer, self._state:
            self.closed = True
            self._cache = None

    def delete(self) -> None:
        """Close, then remove the file (an expired private gallery)."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def disk_bytes(self) -> int:
        return sum(Path(f"{self.path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{self.path}{s}").exists())

    def cache_bytes(self) -> int:
        """Memory the in-memory index holds (0 when not built): what a server's memory budget charges."""
        with self._state:
            return 0 if self._cache is None else self._cache[1].nbytes

    def drop_cache(self) -> None:
        """Free the in-memory index; the next read rebuilds it from the file."""
        with self._state:
            self._cache = None
