"""FairLane: units of model work (a decode, a batch, a compare) taken in turn across clients.

Gradio's queue is one FIFO: a client that queues 60 requests, or one add of 20 huge images, made everyone
behind it wait. Here each request first takes one of its session's `per_session` places and one of its client's
(address's) `per_client` places (more are refused at once, freeing the worker), then each unit of its work waits
for a slot; a freed slot goes to the waiting client served longest ago, and within one client to its oldest
unit. So a hostile add costs another visitor one unit's wait, not the whole add.

    with lane.request(client, session) as turn:   # refused (Busy) past the session's or the client's places
        with turn():                        # waits for its turn; one unit of model work
            ...
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any


class Busy(RuntimeError):
    """This client already has its share of requests running or waiting; one line for the visitor."""


class FairLane:
    def __init__(self, slots: int = 1, per_session: int = 2, per_client: int = 8):
        self.slots, self.per_session, self.per_client = slots, per_session, per_client
        self._cv = threading.Condition()
        self._running = 0
        self._requests: dict[tuple[str, str], int] = {}  # ("s", session) or ("c", client) -> requests admitted
        self._waiting: dict[str, list[int]] = {}  # client -> its waiting tickets, oldest first
        self._served: dict[str, int] = {}  # client -> when it last got a slot (a counter, not a clock)
        self._tickets = itertools.count()
        self._granted: set[int] = set()

    @contextmanager
    def request(self, client: str, session: str) -> Iterator[Callable[[], AbstractContextManager[Any]]]:
        places = (("s", session), ("c", client))
        with self._cv:
            if self._requests.get(places[0], 0) >= self.per_session:
                raise Busy(f"You already have {self.per_session} requests running or waiting; wait for them to "
                           "finish, then try again.")
            if self._requests.get(places[1], 0) >= self.per_client:
                raise Busy(f"Your network address already has {self.per_client} requests running or waiting; try "
                           "again in a moment.")
            for p in places:
                self._requests[p] = self._requests.get(p, 0) + 1
        try:
            yield lambda: self.turn(client)
        finally:
            with self._cv:
                for p in places:
                    self._requests[p] -= 1
                    if not self._requests[p]:
                        del self._requests[p]

    @contextmanager
    def turn(self, client: str) -> Iterator[None]:
        """One unit of work: wait until this client's oldest unit is chosen, run, hand the slot on."""
        with self._cv:
            ticket = next(self._tickets)
            self._waiting.setdefault(client, []).append(ticket)
            self._grant()
            while ticket not in self._granted:
                self._cv.wait()
            self._granted.discard(ticket)
        try:
            yield
        finally:
            with self._cv:
                self._running -= 1
                self._grant()

    def _grant(self) -> None:
        """Give free slots to the waiting clients served longest ago (never served: first), oldest unit first."""
        while self._running < self.slots and self._waiting:
            client = min(self._waiting, key=lambda c: (self._served.get(c, -1), self._waiting[c][0]))
            ticket = self._waiting[client].pop(0)
            if not self._waiting[client]:
                del self._waiting[client]
            self._served[client] = next(self._tickets)
            self._running += 1
            self._granted.add(ticket)
            self._cv.notify_all()
        if len(self._served) > 10_000:  # forget clients with nothing waiting: bounded memory
            self._served = {c: t for c, t in self._served.items() if c in self._waiting}
