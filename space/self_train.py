"""Self-training a visitor's crops in the background (Search's and Videos' *Self-train*; issue #29's fifth point).

"Adapt to this gallery" re-estimates BatchNorm statistics in seconds; self-training (reid_core.adapt's
cluster-then-train rounds) takes minutes of CPU, so it runs in a thread of its own while the visitor goes on
searching with the model they have, and its result becomes their private model as Adapt's does. A tab says what
it trains on with a Source: Search a sample of its gallery's crops, Videos its tracklets' crops (each tracklet one
person's: free positives). What bounds it:
- jobs: `self_train_jobs` at once in all tabs (0: off, a public Space's default), one per client (address); a job
  whose page stopped asking for its status (closed, reloaded) for ABANDONED_S stops, so it frees its place;
- memory: at most `self_train_images` of the gallery's crops, read a batch per turn before the thread starts; the
  job holds its session's gallery (never evicted while it trains); the model it makes takes an adapted-model
  place (`max_adapted` / `client_adapted`), held from the job's start (Sessions.reserve_adapted), so nobody takes
  it while the job trains;
- CPU: every unit of its work (a batch of trunk maps, a training step, an embedding batch) takes a turn in the
  fair lane like an add's batch, so another visitor waits one unit, never the whole job.
Progress comes from the library's bars (reid_core.listening); Cancel (and Clear, Adapt or Undo on the same
gallery) stops the job at its next unit and changes nothing, until its last stage (the gallery re-embedded with
the new model), which is too near the end to stop. A job's status is kept until the session starts another (at
most `max_sessions` kept).
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reid_core import AdaptConfig, Gallery, GalleryError, ImageError, ReID, listening

from .fair import FairLane
from .host import Host
from .sessions import Sessions

log = logging.getLogger(__name__)
MIN_SELF_TRAIN_IMAGES = 100  # fewer crops cannot give DBSCAN clusters of a batch's 16 people x 4 crops
ABANDONED_S = 120.0  # a job nobody asked about for this long (its page polls every 2 s) stops
READ_BATCH = 64  # gallery pictures read per turn of the fair lane when a job starts
OFF = ("Self-training is off on this server: it takes minutes of CPU per visitor (the operator turns it on with "
       "REID_SELF_TRAIN_JOBS).")


Turn = Callable[[], AbstractContextManager[Any]]
Crops = tuple[list[Any], list[int], list[int] | None]  # pictures, each one's camera and tracklet (-1: unknown)


class Cancelled(Exception):
    """Raised into the job at its next unit of work after the visitor's Cancel."""


@dataclass(frozen=True)
class Source:
    """What one tab self-trains: its visitors' sessions; `read(gallery, n, turn)`, a seeded sample of at most n
    of a gallery's crops, a batch per turn (GalleryError when too few); `reopen(model, path, turn)`, the session's
    file opened with the model a job made; `outcome`, what the page says it changed ("Search uses"), and `undo`,
    how to go back."""

    tab: str
    sessions: Sessions
    read: Callable[[Gallery, int, Turn], Crops]
    reopen: Callable[[ReID, Path, Turn], Gallery]
    outcome: str
    undo: str


def too_few(held: str) -> GalleryError:
    return GalleryError(f"Self-training needs at least {MIN_SELF_TRAIN_IMAGES} crops ({held}): it learns from groups "
                        "of a person's crops.")


def gallery_crops(gallery: Gallery, n: int, turn: Turn) -> Crops:
    """Search's source: a seeded sample of n of the gallery's pictures with their cameras, a batch per turn."""
    rows = gallery.entries()
    if len(rows) < MIN_SELF_TRAIN_IMAGES:
        raise too_few(f"the gallery has {len(rows)}")
    chosen = sorted(random.Random(0).sample(range(len(rows)), min(len(rows), n)))
    pictures: list = []
    for s in range(0, len(chosen), READ_BATCH):
        with turn():
            pictures += [gallery.picture(rows[i]["id"]) for i in chosen[s:s + READ_BATCH]]
    return pictures, [-1 if rows[i]["camid"] is None else int(rows[i]["camid"]) for i in chosen], None


@dataclass
class Job:
    source: Source
    session: str  # the request's session key, for Sessions.reopen
    client: str
    crops: int
    started: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "running"  # running, done, cancelled, failed
    stage: str = "waiting for its first turn"
    done: int = 0
    total: int | None = None
    message: str = ""
    shown: bool = False  # its end has been shown to the visitor (the gallery's status refreshed once)
    final: bool = False  # in its last stage (re-embedding the gallery): too late to cancel
    seen: float = field(default_factory=time.monotonic)  # when its page last asked for its status
    thread: threading.Thread | None = None
    holding: threading.Event = field(default_factory=threading.Event)  # set once the thread holds the gallery

    def describe(self) -> str:
        """One paragraph for the page: where the job is, or how it ended."""
        minutes = (time.monotonic() - self.started) / 60
        if self.state != "running":
            return self.message
        if self.final:
            return (f"Self-training on {self.crops:,} of your crops: **{self.stage}** (too near the end to cancel; "
                    f"{minutes:.1f} min so far).")
        if self.cancel.is_set():
            return "Cancelling self-training: it stops at its next unit of work."
        if not self.crops:
            return f"Self-training: **{self.stage}**."
        where = f"{self.stage} {self.done}/{self.total}" if self.total else self.stage
        return (f"Self-training on {self.crops:,} of your crops: **{where}** ({minutes:.1f} min so far). Until it "
                "ends, you keep the model you had.")


class TurnTaker:
    """Holds one turn of the fair lane while the job computes and hands it back at each progress report, between
    two units of work, so waiting visitors go first; a cancelled job is stopped there."""

    def __init__(self, lane: FairLane, job: Job, stopped: Callable[[Job], bool]):
        self.lane, self.job, self.stopped = lane, job, stopped
        self._held: AbstractContextManager[Any] | None = None

    def __enter__(self) -> TurnTaker:
        self._take()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()

    def report(self, desc: str, done: int, total: int | None) -> None:
        self.job.stage, self.job.done, self.job.total = desc, done, total
        self._release()
        self._take()

    def _take(self) -> None:
        """Wait for a turn; a job cancelled (or abandoned) meanwhile gives it straight back and stops."""
        if self.stopped(self.job):
            raise Cancelled
        self._held = self.lane.turn(self.job.client)
        self._held.__enter__()
        if self.stopped(self.job):
            self._release()
            raise Cancelled

    def _release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            held.__exit__(None, None, None)


class SelfTraining:
    """The server's background self-training jobs, in every tab: one per tab and session at most (see the module's
    docstring)."""

    def __init__(self, host: Host, cfg: AdaptConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.host, self.limits, self.clock = host, host.settings.server, clock
        self.cfg = cfg or AdaptConfig()
        self._jobs: OrderedDict[tuple[str, str], Job] = OrderedDict()  # (tab, session) -> its last job, oldest first
        self._lock = threading.RLock()  # start asks refusal again while holding it

    def running(self, client: str | None = None) -> int:
        with self._lock:
            return sum(j.state == "running" and client in (None, j.client) for j in self._jobs.values())

    def refusal(self, source: Source, session: str, client: str) -> str:
        """Why this session may not start a job now ('' when it may): asked before any work."""
        if not self.limits.self_train_jobs:
            return OFF
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.state == "running"]
        if any(j.session == session and j.source.tab == source.tab for j in jobs):
            return "Self-training is running already: wait for it, or cancel it first."
        if any(j.client == client for j in jobs):
            return "Your network address has a self-training running already: one at a time."
        if len(jobs) >= self.limits.self_train_jobs:
            return (f"{len(jobs)} self-training job{'s are' if len(jobs) > 1 else ' is'} running, the most this server "
                    "runs at once; try again later.")
        return ""

    def start(self, source: Source, session: str, client: str, gallery: Gallery, reid: ReID, turn: Turn) -> Job:
        """Register the job and take its adapted-model place at once (so a second start is refused before any
        work), read the crops (source.read: at most `self_train_images`, a batch per `turn`; a Cancel, Clear or
        Undo meanwhile stops it there), then start its thread, which holds the session's gallery before this
        returns. GalleryError (one line) for everything that refuses, before any model work."""
        job = Job(source, session, client, 0, seen=self.clock(), stage="reading your crops")
        with self._lock:
            if why := self.refusal(source, session, client) or source.sessions.reserve_adapted(session):
                raise GalleryError(why)
            self._jobs.pop((source.tab, session), None)
            self._jobs[source.tab, session] = job
            while len(self._jobs) > self.limits.max_sessions:
                old = next((k for k, j in self._jobs.items() if j.state != "running"), None)
                if old is None:
                    break
                del self._jobs[old]
        try:
            pictures, cams, tracks = source.read(gallery, self.limits.self_train_images, turn)
            job.crops, job.stage = len(pictures), "waiting for its first turn"
            crops = [pictures, cams, tracks]  # the job takes them out, so they go when training is done with them
            job.thread = threading.Thread(target=self._run, args=(job, reid, crops), daemon=True,
                                          name="reid-self-train")
            job.thread.start()
        except BaseException:
            with self._lock:  # as if it never started
                if self._jobs.get((source.tab, session)) is job:
                    del self._jobs[source.tab, session]
            source.sessions.release_adapted(session)
            raise
        job.holding.wait()  # the gallery is held by the job from here: never an idle moment to evict it
        return job

    def job(self, source: Source, session: str) -> Job | None:
        with self._lock:
            return self._jobs.get((source.tab, session))

    def poll(self, source: Source, session: str) -> Job | None:
        """The session's job, as its page asks for it: a job asked about is not abandoned."""
        if (job := self.job(source, session)) is not None:
            job.seen = self.clock()
        return job

    def cancel(self, source: Source, session: str) -> Job | None:
        """Stop the session's job at its next unit (not in its last stage, which is too near the end)."""
        with self._lock:
            job = self._jobs.get((source.tab, session))
            if job is not None and job.state == "running" and not job.final:
                job.cancel.set()
        return job

    def cancel_said(self, source: Source, session: str) -> str:
        """Cancel, and what the page says of it."""
        job = self.cancel(source, session)
        return "No self-training is running." if job is None or job.state != "running" else job.describe()

    def stopped(self, job: Job) -> bool:
        return job.cancel.is_set() or self.clock() - job.seen > ABANDONED_S

    def _run(self, job: Job, reid: ReID, crops: list) -> None:
        state, message = "failed", ("Self-training failed (a fault of the server's; it is in the server's log). "
                                    "Nothing changed.")
        sessions = job.source.sessions
        try:
            with sessions.use(job.session, job.client) as gallery:  # never evicted while it trains
                job.holding.set()
                if gallery is None:
                    raise GalleryError("your crops are gone (idle or for room): add them again")
                with TurnTaker(self.host.lane, job, self.stopped) as taker, listening(taker.report):
                    pictures, cams, tracks = crops.pop(0), crops.pop(0), crops.pop(0)
                    adapted, report = reid.self_trained(pictures, cams, copy.deepcopy(self.cfg), engine="fp32",
                                                        tracks=tracks)
                    del pictures
                with self._lock:
                    if self.stopped(job):
                        raise Cancelled
                    job.final, job.stage, job.total = True, "re-embedding your crops with it", None
                size = sum(t.nbytes for t in adapted.model.state_dict().values())
                turn: Turn = lambda: self.host.lane.turn(job.client)  # noqa: E731
                sessions.reopen(job.session, lambda path: job.source.reopen(adapted, path, turn), size)
            rounds = len(report.rounds)
            state, message = "done", (
                f"{job.source.outcome} a model self-trained on {job.crops:,} of your crops, private to you: {rounds} "
                f"round{'s' * (rounds != 1)} in {report.seconds / 60:.1f} min; kept {report.kept} ({report.reason}). "
                f"{job.source.undo}")
        except Cancelled:
            state, message = "cancelled", ("Self-training cancelled: nothing changed." if job.cancel.is_set() else
                                           f"Self-training stopped: its page did not ask about it for "
                                           f"{ABANDONED_S / 60:.0f} min. Nothing changed.")
        except (GalleryError, ImageError, ValueError) as e:
            state, message = "failed", f"Self-training stopped: {e}"
        except Exception:
            log.exception("self-training failed")
        finally:
            job.holding.set()
            sessions.release_adapted(job.session)
            job.message, job.state = message, state
