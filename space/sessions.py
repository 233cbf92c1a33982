"""Sessions: each visitor's private gallery, within the server's bounds per client and in total.

A gallery is created on a visitor's first add (opening the page, searching or clearing creates nothing), so
crawlers and page loads cost no place. Bounds, each with its own plain message to whoever loses out:
- places: `client_sessions` per client (address) and `max_sessions` in all; a new gallery past either bound
  takes the place of the least recently used idle one (the client's own first), whose owner is told on return;
- memory: index caches and adapted models of all sessions within `memory_mb` (caches of idle galleries are
  dropped first, least recently used first, and rebuilt from the file when needed; then adapted sessions go);
- disk: gallery files within `disk_mb` (least recently used idle galleries go before an add is refused);
- time: a gallery idle for `session_minutes` is deleted.
A gallery in use (a request holds it) is never evicted. With `shared`, one gallery for everybody, kept.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reid_core import Gallery, GalleryError, ServerLimits

MIB = 2**20
SHARED = "shared"


@dataclass
class Entry:
    gallery: Gallery
    client: str
    used: float  # monotonic
    busy: int = 0  # requests holding it now
    model_bytes: int = 0  # an adapted model private to this session (0: the shared model)
    reserved: bool = False  # an adapted-model place held for a model still being made (self-training)
    reopening: bool = False  # its file is being opened again with another model (reopen)


class Sessions:
    def __init__(self, folder: str | Path, open_gallery: Callable[[Path], Gallery], limits: ServerLimits,
                 shared: bool = False, clock: Callable[[], float] = time.monotonic):
        self.folder, self.open_gallery, self.limits, self.shared = Path(folder), open_gallery, limits, shared
        self.clock = clock
        self._open: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._gone: OrderedDict[str, str] = OrderedDict()  # key -> why its gallery went (told once, on return)
        self._lock = threading.Lock()
        self._swept = -1e9
        self.folder.mkdir(parents=True, exist_ok=True)

    def key(self, session: str | None) -> str:
        """A file-name-safe key: a hash of the session id (never the id itself, which is the client's)."""
        if self.shared:
            return SHARED
        if not session:
            raise GalleryError("no browser session: private galleries need one (or start the app with a shared "
                               "gallery)")
        return "session-" + hashlib.blake2b(session.encode(), digest_size=12).hexdigest()

    # --- finding and opening ------------------------------------------------------------------------------------
    @contextmanager
    def use(self, session: str | None, client: str = "", create: bool = False) -> Iterator[Gallery | None]:
        """This session's gallery while the block runs (never evicted meanwhile), or None when it has none and
        `create` is off. Creating one may evict others (see the module docstring)."""
        key = self.key(session)
        with self._lock:
            self._sweep()
            entry = self._open.get(key)
            existed = self._file(key).exists()  # a file with no entry: kept by a restart
            opening = entry is None and (create or self.shared or existed)
            if entry is not None:
                self._hold(key, entry)
        if opening:  # outside the lock every session needs: opening may re-embed a whole gallery for new weights
            gallery = self.open_gallery(self._file(key))
            with self._lock:
                entry = self._open.get(key)
                if entry is None:
                    try:
                        entry = self._admit(key, client, gallery)
                    except GalleryError:
                        gallery.close() if existed else gallery.delete()
                        raise
                else:
                    gallery.close()  # another request opened it meanwhile: use theirs
                self._hold(key, entry)
        try:
            yield None if entry is None else entry.gallery
        finally:
            if entry is not None:
                with self._lock:
                    entry.busy -= 1
                    entry.used = self.clock()
                    self._fit_memory()

    def _file(self, key: str) -> Path:
        return self.folder / f"{key}.sqlite"

    def notice(self, session: str | None) -> str:
        """Why this session's gallery is gone (evicted for room, or expired), once; '' when nothing happened."""
        with self._lock:
            return self._gone.pop(self.key(session), "")

    def _hold(self, key: str, entry: Entry) -> None:
        entry.busy += 1
        entry.used = self.clock()
        self._open.move_to_end(key)

    def _admit(self, key: str, client: str, gallery: Gallery) -> Entry:
        """A newly opened gallery takes its place; past a bound, the least recently used idle one goes (this
        client's own first)."""
        if not self.shared:
            mine = [k for k, e in self._open.items() if e.client == client]
            if len(mine) >= self.limits.client_sessions:
                self._evict(self._idle(mine), f"you opened more than {self.limits.client_sessions} private "
                                              "galleries from one address; the oldest went to make room")
            if len(self._open) >= self.limits.max_sessions:
                self._evict(self._idle(list(self._open)), f"the server keeps {self.limits.max_sessions} private "
                                                          "galleries and yours was the least recently used")
        self._gone.pop(key, None)
        entry = Entry(gallery, client, self.clock())
        self._open[key] = entry
        return entry

    def _idle(self, keys: list[str]) -> str:
        idle = [k for k in keys if not self._open[k].busy]  # keys are least recently used first
        if not idle:
            raise GalleryError("every private gallery is in use right now; try again in a minute")
        return idle[0]

    def _evict(self, key: str, why: str) -> None:
        self._open.pop(key).gallery.delete()
        self._gone[key] = f"Your gallery was removed: {why}. Add your images again to start a new one."
        while len(self._gone) > 4 * self.limits.max_sessions + 1000:
            self._gone.popitem(last=False)

    # --- adapted models -----------------------------------------------------------------------------------------
    def reopen(self, session: str | None, open_gallery: Callable[[Path], Gallery], model_bytes: int = 0) -> Gallery:
        """Open this session's gallery file again through `open_gallery` (another model, `model_bytes` of memory:
        its rows are re-embedded for it); the old handle is closed, so a request still holding it fails in one
        line instead of mixing two models' embeddings. Re-embedding runs outside the lock every session needs.
        An adapted model (`model_bytes` > 0) takes its place first, within `max_adapted` and `client_adapted`
        (GalleryError past either), so two requests cannot both take the last one."""
        key = self.key(session)
        with self._lock:
            entry = self._open.get(key)
            if entry is None:
                raise GalleryError("your gallery is empty: add images first")
            if entry.reopening:  # two re-embeddings at once: whichever ended last would win, its place uncounted
                raise GalleryError("your gallery is being re-embedded with another model; try again when it is done")
            if model_bytes and (why := self._adapt_refusal(key)):
                raise GalleryError(why)
            before, entry.model_bytes = entry.model_bytes, model_bytes  # the place is taken from here on
            entry.reopening = True
        try:
            entry.gallery.close()  # an add in flight on the old handle finishes first
            try:
                gallery = open_gallery(self._file(key))
            except BaseException:
                entry.model_bytes = before
                raise
            with self._lock:
                entry.gallery, entry.used = gallery, self.clock()
                self._fit_memory()
        finally:
            entry.reopening = False
        return gallery

    def adapted(self, client: str | None = None) -> int:
        """Sessions holding an adapted model (of one client, when given)."""
        with self._lock:
            return sum(e.model_bytes > 0 and client in (None, e.client) for e in self._open.values())

    def adapt_refusal(self, session: str | None) -> str:
        """Why this session may not take an adapted model now ('' when it may): asked before any work, and again
        by reopen, which takes the place."""
        with self._lock:
            return self._adapt_refusal(self.key(session))

    def _adapt_refusal(self, key: str) -> str:
        entry = self._open.get(key)
        if entry is None or entry.model_bytes or entry.reserved:
            return ""  # no gallery (reopen says so), adapted already or its place held: no new place
        held = [e for e in self._open.values() if e.model_bytes or e.reserved]
        if len(held) >= self.limits.max_adapted:
            return (f"{self.limits.max_adapted} visitors hold adapted models, the most this server keeps; try again "
                    "later.")
        mine = sum(e.client == entry.client for e in held)
        if mine >= self.limits.client_adapted:
            return (f"Your network address already holds {mine} adapted models, the most one address may; go back "
                    "to the shared model in another browser tab first.")
        return ""

    def reserve_adapted(self, session: str | None) -> str:
        """Hold an adapted-model place for this session while a long job makes its model (reopen then takes it
        without asking again): '' when held, else why not. release_adapted gives it back."""
        key = self.key(session)
        with self._lock:
            if why := self._adapt_refusal(key):
                return why
            if (entry := self._open.get(key)) is not None:
                entry.reserved = True
            return ""

    def release_adapted(self, session: str | None) -> None:
        with self._lock:
            if (entry := self._open.get(self.key(session))) is not None:
                entry.reserved = False

    # --- budgets ------------------------------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Index caches plus adapted models of every open session: what `memory_mb` bounds."""
        return sum(e.gallery.cache_bytes() + e.model_bytes for e in self._open.values())

    def _fit_memory(self) -> None:
        """Within memory_mb: drop idle caches (least recently used first), then idle adapted sessions."""
        budget = self.limits.memory_mb * MIB
        total = self.memory_bytes()
        for e in list(self._open.values()):
            if total <= budget:
                return
            if not e.busy and (c := e.gallery.cache_bytes()):
                e.gallery.drop_cache()
                total -= c
        for key, e in list(self._open.items()):
            if total <= budget:
                return
            if not e.busy and e.model_bytes:
                total -= e.model_bytes
                self._evict(key, f"the server's memory for adapted models ({self.limits.memory_mb} MB) was needed "
                                 "by others")

    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.glob("*.sqlite*") if f.is_file())

    def make_room_on_disk(self, session: str | None) -> None:
        """Before an add: least recently used idle galleries of others go until the files are within disk_mb;
        refused in one line when even that is not enough."""
        budget, mine = self.limits.disk_mb * MIB, self.key(session)
        with self._lock:
            total = self.disk_bytes()
            for key, e in list(self._open.items()):
                if total < budget:
                    return
                if key != mine and not e.busy and key != SHARED:
                    total -= e.gallery.disk_bytes()
                    self._evict(key, f"the server's disk for galleries ({self.limits.disk_mb:,} MB) was needed by "
                                     "others")
            if total >= budget:
                raise GalleryError(f"the server's disk for galleries ({self.limits.disk_mb:,} MB) is full; clear "
                                   "your gallery or try again later")

    # --- time -----------------------------------------------------------------------------------------------------
    def _sweep(self) -> None:
        """Delete private galleries idle past their time (at most once a minute), open ones and files left by
        an earlier run of the server alike."""
        now = self.clock()
        if self.shared or now - self._swept < 60:
            return
        self._swept = now
        ttl = 60 * self.limits.session_minutes
        for key, e in list(self._open.items()):
            if not e.busy and now - e.used > ttl:
                self._evict(key, f"it was idle for more than {self.limits.session_minutes} minutes")
        for f in self.folder.glob("session-*.sqlite"):
            if f.stem not in self._open and time.time() - f.stat().st_mtime > ttl:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{f}{suffix}").unlink(missing_ok=True)
