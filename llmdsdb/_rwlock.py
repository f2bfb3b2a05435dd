"""A readers-writer lock: many readers at once, or one writer.

Readers are preferred: a reader enters whenever no writer holds the lock, even while a
writer waits, so two searches that wait for each other (or for anything else a reader
holds) can never be blocked by a queued writer. A writer enters when no reader and no other
writer holds the lock. The writer's thread may take the lock again (read or write) while
it holds it.

Invariant: ``writer`` is set exactly when one thread holds the write side (``depth`` times);
``readers`` counts the read sides held by other threads.

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
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RWLock"]


class RWLock:
    """See the module docstring. Thread-safe (it is the lock). Memory: O(1)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self.readers = 0
        self.writer: int | None = None
        self._depth = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the read side for the block. Complexity: O(1) plus the wait."""
        me = threading.get_ident()
        with self._cond:
            if self.writer == me:  # the writer reads its own state
                self._depth += 1
                mine = True
            else:
                while self.writer is not None:
                    self._cond.wait()
                self.readers += 1
                mine = False
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
                while self.writer is not None or self.readers:
                    self._cond.wait()
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
