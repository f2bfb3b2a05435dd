"""Where this process maps ``data.mdb``: the bounds check of every LMDB value before it is read.

Invariant: a value of the database file is asked of LMDB (``cursor.value()``, which touches
every page of it) only after :meth:`MapSpan.check` found that it ends inside the file.
LMDB 0.9 trusts the value size and the overflow page number stored in a leaf node: a
damaged one (a bit flip, a hostile file) that sends the value past the end of the file
would kill the process with SIGBUS as py-lmdb returns the value. The check reads the
leaf node in front of the key the cursor stands on (``_core.lmdb_value_check``) and makes
that a CorruptionError. A key in no mapping of the file is on one of a write
transaction's own dirty pages (LMDB's heap) and is not checked.

The mappings come from ``/proc/self/maps`` (Linux; elsewhere nothing is checked). They are
read when first needed, after every resize of the environment's map, and again before a
value is reported (another process may have grown the file meanwhile), so a report never
comes from a stale view.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmdsdb._native import _core
from llmdsdb.errors import CorruptionError

if TYPE_CHECKING:
    import lmdb

__all__ = ["MapSpan", "file_mappings"]

_check = _core.lmdb_value_check


def file_mappings(dev: int, ino: int, maps_path: str = "/proc/self/maps"
                  ) -> tuple[tuple[int, int], ...]:
    """The ``(start, end)`` address ranges of this process's mappings of the file
    ``(dev, ino)``; empty when ``/proc`` is not available.

    Complexity: O(mappings of the process).
    """
    want_dev = f"{os.major(dev):02x}:{os.minor(dev):02x}"
    out = []
    try:
        with open(maps_path, "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return ()
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5 or parts[4] != str(ino) or parts[3] != want_dev:
            continue
        lo, _, hi = parts[0].partition("-")
        out.append((int(lo, 16), int(hi, 16)))
    return tuple(out)


class MapSpan:
    """The mappings of one ``data.mdb`` in this process, the file's length and page size.

    Thread-safe: the cached state is one tuple replaced whole.

    Memory: O(mappings of the file).
    """

    __slots__ = ("_path", "_psize", "_state")

    def __init__(self, data_path: str, page_size: int = 4096) -> None:
        self._path = data_path
        self._psize = page_size
        self._state: tuple[tuple[tuple[int, int], ...], int] | None = None

    def invalidate(self, page_size: int | None = None) -> None:
        """Forget the mappings (call after the map was resized or the file opened)."""
        if page_size is not None:
            self._psize = page_size
        self._state = None

    def _refresh(self) -> tuple[tuple[tuple[int, int], ...], int]:
        try:
            st = os.stat(self._path)
        except OSError:
            state: tuple[tuple[tuple[int, int], ...], int] = ((), 0)
        else:
            state = (file_mappings(st.st_dev, st.st_ino), st.st_size)
        self._state = state
        return state

    def check(self, key: memoryview, what: str | Callable[[], str]) -> None:
        """Raise unless the value of the leaf node whose key buffer is ``key`` (as an LMDB
        cursor returned it, before its value is asked for) ends inside the file. ``what``
        names the entry in the error (a callable is called only then).

        Complexity: O(1) (a read of ``/proc/self/maps`` after a resize or before a report).

        :raises CorruptionError: when the value's size or overflow page number sends it past
            the end of ``data.mdb``.
        """
        try:
            self._scan(self._state or self._refresh(), key)
        except CorruptionError:
            self._report(key, what)

    def _scan(self, state: tuple[tuple[tuple[int, int], ...], int], key: memoryview) -> None:
        """The check of ``key`` against the mapping that holds it (none: a write
        transaction's own page, not checked). Complexity: O(mappings of the file).

        :raises CorruptionError: when the value runs past the file length of ``state``.
        """
        for lo, hi in state[0]:
            if _check(key, lo, hi, state[1], self._psize):
                return

    def _report(self, key: memoryview, what: str | Callable[[], str]) -> None:
        """Check ``key`` again on fresh mappings and file length (another process may have
        grown the file since they were read); raise when it still fails."""
        state = self._refresh()
        try:
            self._scan(state, key)
        except CorruptionError as exc:
            name = what() if callable(what) else what
            raise CorruptionError(f"{name}: {exc} ({self._path}, {state[1]} bytes); restore "
                                  f"from a backup (reading the value would crash the "
                                  f"process)") from None

    def get(self, txn: lmdb.Transaction, key: bytes, what: str | Callable[[], str]
            ) -> memoryview | None:
        """``txn.get(key)`` (a buffers transaction), the value's extent checked first.

        Complexity: O(log n).

        :raises CorruptionError: see :meth:`check`.
        """
        cur = txn.cursor()
        if not cur.set_key(key):
            return None
        self.check(cur.key(), what)
        return cur.value()
