"""A readers-writer lock: many readers at once, or one writer.

Fairness: a writer that waits holds back new readers, so a stream of overlapping searches
cannot starve it - but only for :data:`READER_PATIENCE_S`; a reader that has waited that
long enters beside the readers already inside. So a reader never waits for a queued writer
forever (two searches that wait for each other, or for anything else a reader holds, cannot
be blocked by a writer queued between them), and a writer gets the lock once the readers
inside when it queued have left, or after the patience of the readers that came later. The
writer's thread may take the lock again (read or write) while it holds it.

Invariant: ``writer`` is set exactly when one thread holds the write side; ``readers``
counts the read sides held by other threads; ``waiting`` counts the queued writers.

>>> lock = RWLock()
>>> with lock.read(), lock.read():
...     lock.readers
2
>>> with lock.write(), lock.read():
...     lock.readers
0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["READER_PATIENCE_S", "RWLock"]

#: How long a new reader lets a queued writer go first before it enters anyway.
READER_PATIENCE_S = 0.05


class RWLock:
    """See the module docstring. Thread-safe (it is the lock). Memory: O(1)."""

    def __init__(self, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self._cond = threading.Condition(threading.Lock())
        self._clock = clock
        self.readers = 0
        self.waiting = 0
        self.writer: int | None = None
        self._depth = 0

    def _enter_read(self) -> None:
        deadline = None
        while self.writer is not None or self.waiting:
            if self.writer is not None:
                self._cond.wait()
                continue
            now = self._clock()
            if deadline is None:
                deadline = now + READER_PATIENCE_S
            if now >= deadline:
                break  # a writer is queued, but not holding: enter beside the readers
            self._cond.wait(deadline - now)
        self.readers += 1

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the read side for the block. Complexity: O(1) plus the wait."""
        me = threading.get_ident()
        with self._cond:
            mine = self.writer == me  # the writer reads its own state
            if mine:
                self._depth += 1
            else:
                self._enter_read()
        try:
            yield
        finally:
            with self._cond:
                if mine:
                    self._depth -= 1
                else:
                    self.readers -= 1
                    if not self.readers:
                        self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the write side for the block. Complexity: O(1) plus the wait."""
        me = threading.get_ident()
        with self._cond:
            if self.writer != me:
                self.waiting += 1
                try:
                    while self.writer is not None or self.readers:
                        self._cond.wait()
                finally:
                    self.waiting -= 1
                self.writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self.writer = None
                    self._cond.notify_all()
