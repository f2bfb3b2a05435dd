"""The readers-writer guard that keeps LMDB's map from being resized under a live transaction.

Invariant: ``mdb_env_set_mapsize`` runs only under the exclusive side of :class:`_MapGuard`,
every transaction of the process holds the shared side for its whole life (see the class).
Used by :class:`llmdsdb.storage.Environment`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from llmdsdb.errors import StorageError

__all__ = ["_MapGuard"]


class _MapGuard:
    """The readers-writer guard of one environment's memory map.

    LMDB's rule (``mdb_env_set_mapsize``): the map may be resized only while no transaction
    of the environment is live in this process, and LMDB does not check it; py-lmdb then
    remaps, so a value buffer a reader still holds points at unmapped memory (SIGBUS) and
    its transaction is dead ("closed/deleted/dropped object", "Invalid argument"). Every
    transaction therefore holds the *shared* side for its whole life, and every
    ``set_mapsize`` (growing the map, or adopting another process's size with
    ``set_mapsize(0)``) runs under the *exclusive* side.

    Invariants: ``_live`` is the number of live transactions in this process; the
    exclusive side is entered only when it is 0 and by one thread at a time; a thread that
    holds no transaction waits while a resize is pending (so a resize is not starved), a
    thread that already holds one begins more without waiting (so it cannot deadlock
    against the pending resize it blocks); a thread that holds a transaction never enters
    the exclusive side (:meth:`exclusive` raises instead of waiting for itself).

    Thread-safe. Readers run concurrently with each other.
    """

    __slots__ = ("_cond", "_live", "_pending", "_resizing", "_tls")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._live = 0
        self._pending = 0
        self._resizing = False
        self._tls = threading.local()

    def depth(self) -> int:
        """Transactions the calling thread holds."""
        return getattr(self._tls, "depth", 0)

    def acquire_shared(self) -> None:
        depth = self.depth()
        with self._cond:
            if not depth:
                while self._pending or self._resizing:
                    self._cond.wait()
            self._live += 1
        self._tls.depth = depth + 1

    def release_shared(self) -> None:
        self._tls.depth = self.depth() - 1
        with self._cond:
            self._live -= 1
            if not self._live:
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Run the block while no transaction of the environment is live in the process.

        :raises StorageError: when the calling thread itself holds a transaction.
        """
        if self.depth():
            raise StorageError(f"{what}: this thread holds a transaction of the database; "
                               f"the map cannot be resized until it ends: end it and retry")
        with self._cond:
            self._pending += 1
            try:
                while self._resizing or self._live:
                    self._cond.wait()
            finally:
                self._pending -= 1
            self._resizing = True
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()
