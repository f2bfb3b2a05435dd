"""Paged allocator: hands out page ids from ``[0, max_pages)`` and takes them back.

The id space is split in three parts:

* the *live* pages, allocated and not yet freed;
* the *free slabs*: maximal runs of contiguous free ids below the high-water mark;
* the *tail* ``[high_water, max_pages)``: ids that were never handed out (or were returned
  and merged back). The tail is never materialised, so ``max_pages`` may be ``2**40``.

Free slabs are kept on segregated free lists by size class (class ``c`` holds slabs of
``2**c`` to ``2**(c+1) - 1`` pages), with a bit mask of non-empty classes, so finding a slab
of at least ``n`` pages is a couple of integer operations. A multi-page ``alloc`` therefore
prefers one contiguous run: a free slab that fits, else the tail, and only when neither fits
does it gather pieces. ``free`` coalesces a freed id with its neighbouring slabs in O(1)
through two boundary maps, and lowers the high-water mark when the merged slab touches it.

Invariant (checked by :meth:`PagedAllocator._check`): every id below the high-water mark is
either live (its byte in the bitmap is 1) or inside exactly one free slab; free slabs are
maximal (no two touch) and none ends at the high-water mark; the size-class lists and their
mask agree with the slabs; ``used`` equals the number of live ids.

>>> a = PagedAllocator(page_size=4096, max_pages=8)
>>> a.alloc(3)
[0, 1, 2]
>>> a.free([1])
>>> a.alloc(1)
[1]
>>> a.free([0, 1, 2]); a.stats().used
0
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Container, Iterable
from typing import NamedTuple

from llmdsdb._validate import as_int as _as_int
from llmdsdb.errors import (
    CorruptionError,
    DoubleFreeError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidTypeError,
    OutOfPagesError,
    PageNotFoundError,
)

__all__ = ["PageStats", "PagedAllocator"]

_MAGIC = b"LDPA"
_VERSION = 1
# magic, version, page_size, max_pages, high_water, used, number of free slabs
_HEADER = struct.Struct("<4sBQQQQQ")
_CRC = struct.Struct("<I")
_ONE = b"\x01"
_ZERO = b"\x00"


class PageStats(NamedTuple):
    """Allocation statistics of a :class:`PagedAllocator`."""

    total: int
    """``max_pages``: the size of the id space."""
    used: int
    """Live (allocated) pages."""
    free: int
    """``total - used``."""
    slabs: int
    """Free slabs (holes) below the high-water mark; the never-used tail is not counted."""
    fragmentation: float
    """Share of the ids below the high-water mark that are free: ``(high_water - used) /
    high_water`` (0.0 when nothing was ever allocated). :meth:`PagedAllocator.defragment`
    brings it to 0."""
    high_water: int
    """One past the highest id that is live or inside a free slab."""
    page_size: int
    """Nominal bytes per page (bookkeeping for ``used_bytes``)."""

    @property
    def used_bytes(self) -> int:
        """``used * page_size``."""
        return self.used * self.page_size


class PagedAllocator:
    """Allocator of page ids with free lists per slab (run of contiguous ids).

    :param page_size: nominal bytes per page (> 0); only used for statistics.
    :param max_pages: size of the id space (> 0); ids are ``0 .. max_pages - 1``.
    :raises InvalidTypeError: when a size is not an int.
    :raises InvalidArgumentError: when a size is not positive.

    Not thread-safe: guard every call with one lock when several threads share an allocator.

    Memory: one byte per id below the high-water mark (a bitmap of live ids) plus about
    200 bytes per free slab; never proportional to ``max_pages``.
    """

    __slots__ = (
        "_bits", "_buckets", "_ends", "_mask", "_max", "_page_size", "_starts", "_used",
    )

    def __init__(self, page_size: int, max_pages: int) -> None:
        page_size = _as_int(page_size, "page_size")
        max_pages = _as_int(max_pages, "max_pages")
        if page_size <= 0:
            raise InvalidArgumentError(f"page_size must be > 0, got {page_size}")
        if max_pages <= 0:
            raise InvalidArgumentError(f"max_pages must be > 0, got {max_pages}")
        if max_pages >= 2**64:
            raise InvalidArgumentError(f"max_pages must be < 2**64, got {max_pages}")
        self._page_size = page_size
        self._max = max_pages
        self._used = 0
        # bitmap of ids [0, high_water): 1 = live, 0 = inside a free slab
        self._bits = bytearray()
        self._starts: dict[int, int] = {}  # free slab start -> end (exclusive)
        self._ends: dict[int, int] = {}  # free slab end -> start
        # size class c -> {start: None}; an insertion-ordered set of slab starts
        self._buckets: list[dict[int, None]] = [{} for _ in range(65)]
        self._mask = 0  # bit c set <=> bucket c non-empty

    # --- properties -----------------------------------------------------------------------

    @property
    def page_size(self) -> int:
        """Nominal bytes per page."""
        return self._page_size

    @property
    def max_pages(self) -> int:
        """Size of the id space."""
        return self._max

    @property
    def used(self) -> int:
        """Number of live pages. Complexity: O(1)."""
        return self._used

    @property
    def high_water(self) -> int:
        """One past the highest id ever handed out and not merged back. Complexity: O(1)."""
        return len(self._bits)

    def __len__(self) -> int:
        """Number of live pages.

        Complexity: O(1).
        """
        return self._used

    def __contains__(self, page_id: object) -> bool:
        """Same as :meth:`is_allocated`, but False for non-int ids.

        Complexity: O(1).
        """
        try:
            return self.is_allocated(page_id)  # type: ignore[arg-type]
        except InvalidTypeError:
            return False

    def __repr__(self) -> str:
        return (
            f"PagedAllocator(page_size={self._page_size}, max_pages={self._max}, "
            f"used={self._used}, high_water={len(self._bits)}, slabs={len(self._starts)})"
        )

    # --- free slab bookkeeping --------------------------------------------------------------

    def _add_slab(self, s: int, e: int) -> None:
        self._starts[s] = e
        self._ends[e] = s
        c = (e - s).bit_length() - 1
        self._buckets[c][s] = None
        self._mask |= 1 << c

    def _remove_slab(self, s: int, e: int) -> None:
        del self._starts[s]
        del self._ends[e]
        c = (e - s).bit_length() - 1
        b = self._buckets[c]
        del b[s]
        if not b:
            self._mask &= ~(1 << c)

    # --- allocation -----------------------------------------------------------------------

    def alloc(self, num_pages: int = 1) -> list[int]:
        """Allocate ``num_pages`` page ids, contiguous whenever a free slab or the tail has
        room for all of them (lowest ids first).

        :param num_pages: how many ids (>= 0; 0 returns an empty list).
        :returns: the ids, ascending within each contiguous piece.
        :raises InvalidTypeError: when ``num_pages`` is not an int.
        :raises InvalidArgumentError: when ``num_pages`` is negative.
        :raises OutOfPagesError: when fewer than ``num_pages`` ids are free; nothing is
            allocated then.

        Complexity: O(num_pages) -- O(1) per page; the slab search is a bit-mask lookup.

        >>> a = PagedAllocator(4096, 10)
        >>> a.alloc(4), a.alloc(2)
        ([0, 1, 2, 3], [4, 5])
        >>> a.free([1, 2]); a.alloc(2)
        [1, 2]
        """
        n = num_pages if type(num_pages) is int else _as_int(num_pages, "num_pages")
        if n <= 0:
            if n == 0:
                return []
            raise InvalidArgumentError(f"num_pages must be >= 0, got {n}")
        if n > self._max - self._used:
            raise OutOfPagesError(
                f"cannot allocate {n} pages: only {self._max - self._used} of "
                f"{self._max} are free (free pages or use a larger max_pages)"
            )
        mask = self._mask
        bits = self._bits
        if mask:
            # smallest size class whose every slab has >= n pages
            want = (n - 1).bit_length()
            m = mask >> want
            if m:
                c = want + (m & -m).bit_length() - 1
                s = next(iter(self._buckets[c]))
                e = self._starts[s]
                return self._take(s, e, n)
            if want:
                # class want-1 holds slabs of 2**(want-1) .. 2**want - 1 pages: some may fit
                b = self._buckets[want - 1]
                for i, s in enumerate(b):
                    e = self._starts[s]
                    if e - s >= n:
                        return self._take(s, e, n)
                    if i >= 8:  # bounded scan keeps alloc O(1)
                        break
        hw = len(bits)
        if hw + n <= self._max:
            if n == 1:
                bits.append(1)
            else:
                bits += _ONE * n
            self._used += n
            return list(range(hw, hw + n))
        return self._gather(n)

    def _take(self, s: int, e: int, n: int) -> list[int]:
        self._remove_slab(s, e)
        if s + n < e:
            self._add_slab(s + n, e)
        self._bits[s : s + n] = _ONE * n
        self._used += n
        return list(range(s, s + n))

    def _gather(self, n: int) -> list[int]:
        """No single run fits: take whole slabs, largest class first, then the tail."""
        out: list[int] = []
        need = n
        while need and self._mask:
            c = self._mask.bit_length() - 1
            s = next(iter(self._buckets[c]))
            e = self._starts[s]
            k = min(need, e - s)
            out += self._take(s, e, k)
            need -= k
        if need:
            hw = len(self._bits)
            self._bits += _ONE * need
            self._used += need
            out += range(hw, hw + need)
        return out

    def free(self, page_ids: Iterable[int]) -> None:
        """Return page ids to the allocator.

        The whole list is validated before anything changes.

        :raises InvalidTypeError: when an id is not an int.
        :raises PageNotFoundError: when an id is outside ``[0, max_pages)`` or was never
            handed out.
        :raises DoubleFreeError: when an id is already free or appears twice in the list.

        Complexity: O(len(page_ids)) -- O(1) per page, coalescing with neighbours.

        >>> a = PagedAllocator(4096, 10)
        >>> ids = a.alloc(3)
        >>> a.free(ids); a.stats().high_water
        0
        """
        ids = page_ids if isinstance(page_ids, list) else list(page_ids)
        bits = self._bits
        hw = len(bits)
        if len(ids) == 1:
            p = ids[0]
            if type(p) is not int:
                p = _as_int(p, "page id")
            if not 0 <= p < hw:
                self._raise_unknown(p)
            if not bits[p]:
                raise DoubleFreeError(f"page {p} is already free")
            self._free_one(p)
            return
        clean: list[int] = []
        for p in ids:
            if type(p) is not int:
                p = _as_int(p, "page id")
            if not 0 <= p < hw:
                self._raise_unknown(p)
            if not bits[p]:
                raise DoubleFreeError(f"page {p} is already free")
            clean.append(p)
        if len(set(clean)) != len(clean):
            seen: set[int] = set()
            for p in clean:
                if p in seen:
                    raise DoubleFreeError(f"page {p} appears twice in one free() call")
                seen.add(p)
        for p in clean:
            self._free_one(p)

    def _raise_unknown(self, p: int) -> None:
        if 0 <= p < self._max:
            raise PageNotFoundError(f"page {p} was never allocated")
        raise PageNotFoundError(f"page id {p} is outside [0, {self._max})")

    def _free_one(self, p: int) -> None:
        bits = self._bits
        bits[p] = 0
        self._used -= 1
        s, e = p, p + 1
        s0 = self._ends.get(p)
        if s0 is not None:
            self._remove_slab(s0, p)
            s = s0
        e0 = self._starts.get(e)
        if e0 is not None:
            self._remove_slab(e, e0)
            e = e0
        if e == len(bits):
            del bits[s:]  # the slab touches the tail: merge it back (amortised O(1) per id)
        else:
            self._add_slab(s, e)

    def is_allocated(self, page_id: int) -> bool:
        """Whether ``page_id`` is live (allocated and not freed).

        :raises InvalidTypeError: when ``page_id`` is not an int.

        Complexity: O(1).
        """
        p = page_id if type(page_id) is int else _as_int(page_id, "page id")
        return 0 <= p < len(self._bits) and self._bits[p] == 1

    # --- statistics and maintenance -------------------------------------------------------

    def allocated_ids(self, start: int = 0) -> list[int]:
        """The live ids at or above ``start``, ascending.

        Complexity: O(high_water - start) at C speed (bitmap scans) + O(ids returned).
        """
        bits = self._bits
        out: list[int] = []
        i = bits.find(_ONE, max(0, start))
        while i >= 0:
            j = bits.find(_ZERO, i)
            j = len(bits) if j < 0 else j
            out.extend(range(i, j))
            i = bits.find(_ONE, j)
        return out

    def stats(self) -> PageStats:
        """Allocation statistics.

        Complexity: O(1).

        >>> a = PagedAllocator(4096, 100)
        >>> ids = a.alloc(10); a.free(ids[2:4])
        >>> s = a.stats(); (s.used, s.free, s.slabs, s.fragmentation)
        (8, 92, 1, 0.2)
        """
        hw = len(self._bits)
        return PageStats(
            total=self._max,
            used=self._used,
            free=self._max - self._used,
            slabs=len(self._starts),
            fragmentation=(hw - self._used) / hw if hw else 0.0,
            high_water=hw,
            page_size=self._page_size,
        )

    def defragment(self, callback: Callable[[int, int], object] | None = None, *,
                   max_moves: int | None = None,
                   pinned: Container[int] = ()) -> dict[int, int]:
        """Renumber the live pages into ``[0, used)``, moving as few as possible.

        Every live page at or above ``used`` moves into a free id below ``used`` (pages
        already below ``used`` keep their id). No destination is also a source, so the
        caller may relocate the moves in any order.

        :param callback: called as ``callback(old_id, new_id)`` for each move, in ascending
            order of ``old_id``, before the allocator changes; if it raises, the allocator is
            left unchanged.
        :param max_moves: move at most this many pages (the highest ids, into the lowest
            holes), so that a caller can spread a large defragmentation over several
            transactions; the calls that follow move the rest. None: all of them.
        :param pinned: ids that must keep their place (pages whose owner cannot be told
            of a move); the other pages above ``used`` move as far as the holes allow.
        :returns: the moves, ``{old_id: new_id}`` (empty when nothing moved).

        Complexity: O(high_water), the scans running at C speed over the bitmap.

        >>> a = PagedAllocator(4096, 100)
        >>> ids = a.alloc(6); a.free([0, 2])
        >>> a.defragment()
        {4: 0, 5: 2}
        >>> a.stats().fragmentation, a.alloc(1)
        (0.0, [4])
        """
        bits = self._bits
        used = self._used
        moves: dict[int, int] = {}
        hole = bits.find(_ZERO, 0, used)
        src = bits.find(_ONE, used) if hole >= 0 else -1
        while hole >= 0 and src >= 0:
            if src in pinned:
                src = bits.find(_ONE, src + 1)
                continue
            moves[src] = hole
            hole = bits.find(_ZERO, hole + 1, used)
            src = bits.find(_ONE, src + 1)
        if pinned or (max_moves is not None and len(moves) > _as_int(max_moves, "max_moves")):
            k = len(moves) if max_moves is None else min(len(moves), max(0, int(max_moves)))
            return self._defragment_part(moves, k, callback)
        if callback is not None:
            for old, new in moves.items():
                callback(old, new)
        self._bits = bytearray(_ONE * used)
        self._starts.clear()
        self._ends.clear()
        for b in self._buckets:
            b.clear()
        self._mask = 0
        return moves

    def _defragment_part(self, moves: dict[int, int], k: int,
                         callback: Callable[[int, int], object] | None) -> dict[int, int]:
        """The ``k`` highest sources of ``moves`` into its ``k`` lowest holes; the free
        slabs are rebuilt from the bitmap. Complexity: O(high_water)."""
        srcs = sorted(moves)[len(moves) - k:]
        holes = sorted(moves.values())[:k]
        part = dict(zip(srcs, holes))
        if callback is not None:
            for old, new in part.items():
                callback(old, new)
        bits = self._bits
        for old, new in part.items():
            bits[new] = 1
            bits[old] = 0
        top = bits.rfind(_ONE) + 1
        del bits[top:]
        self._starts.clear()
        self._ends.clear()
        for b in self._buckets:
            b.clear()
        self._mask = 0
        s = bits.find(_ZERO)
        while s >= 0:
            e = bits.find(_ONE, s)
            e = len(bits) if e < 0 else e
            self._add_slab(s, e)
            s = bits.find(_ZERO, e)
        return part

    # --- persistence ------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise the state: a versioned header, the free slabs as ``(start, length)``
        u64 pairs, and a CRC-32. Live ids are implied (everything below the high-water mark
        that is not in a slab), so the size is O(slabs), not O(pages).

        Complexity: O(s log s) for s free slabs.

        >>> a = PagedAllocator(4096, 2**40)
        >>> ids = a.alloc(5); a.free([1])
        >>> b = PagedAllocator.from_bytes(a.to_bytes())
        >>> [b.is_allocated(i) for i in range(6)]
        [True, False, True, True, True, False]
        """
        slabs = sorted(self._starts.items())
        head = _HEADER.pack(
            _MAGIC, _VERSION, self._page_size, self._max, len(self._bits), self._used,
            len(slabs),
        )
        body = struct.pack(f"<{2 * len(slabs)}Q", *[x for s, e in slabs for x in (s, e - s)])
        payload = head + body
        return payload + _CRC.pack(zlib.crc32(payload))

    @classmethod
    def from_bytes(cls, data: bytes) -> PagedAllocator:
        """Rebuild an allocator from :meth:`to_bytes` output, validating everything.

        :raises InvalidTypeError: when ``data`` is not bytes-like.
        :raises FormatVersionError: when written by an unknown format version.
        :raises CorruptionError: when the bytes are truncated, fail the checksum, or
            describe an impossible state.

        Complexity: O(high_water + s) for s free slabs.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidTypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size + _CRC.size:
            raise CorruptionError(f"allocator state too short ({len(data)} bytes)")
        magic, version, page_size, max_pages, hw, used, n = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise CorruptionError(f"not an allocator state (magic {magic!r})")
        if version != _VERSION:
            raise FormatVersionError(
                f"allocator state format version {version} is not supported (expected "
                f"{_VERSION}); upgrade llmdsdb"
            )
        expect = _HEADER.size + 16 * n + _CRC.size
        if len(data) != expect:
            raise CorruptionError(f"allocator state is {len(data)} bytes, expected {expect}")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(data[: -_CRC.size]) != crc:
            raise CorruptionError("allocator state failed its checksum")
        if page_size <= 0 or max_pages <= 0 or hw > max_pages or used > hw:
            raise CorruptionError(
                f"allocator state is inconsistent (page_size={page_size}, "
                f"max_pages={max_pages}, high_water={hw}, used={used})"
            )
        flat = struct.unpack_from(f"<{2 * n}Q", data, _HEADER.size)
        self = cls(page_size, max_pages)
        try:
            bits = bytearray(_ONE * hw)
        except (MemoryError, OverflowError):
            raise CorruptionError(f"allocator state declares high_water={hw} pages, more than "
                                  f"this process can hold; restore from a backup") from None
        prev_end = -1
        free_total = 0
        for i in range(n):
            s, length = flat[2 * i], flat[2 * i + 1]
            e = s + length
            # slabs must be sorted, non-empty, maximal (not touching), below high water
            if length == 0 or s <= prev_end or e >= hw:
                raise CorruptionError(f"allocator state has an invalid free slab ({s}, {length})")
            prev_end = e
            bits[s:e] = _ZERO * length
            self._add_slab(s, e)
            free_total += length
        if hw - free_total != used:
            raise CorruptionError(
                f"allocator state says {used} pages are used but its slabs imply "
                f"{hw - free_total}"
            )
        self._bits = bits
        self._used = used
        return self

    # --- invariant ------------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the invariant of the module docstring. Complexity: O(high_water)."""
        bits = self._bits
        hw = len(bits)
        assert 0 <= self._used <= hw <= self._max
        assert bits.count(_ONE) == self._used
        assert bits.count(_ZERO) + self._used == hw
        # free slabs are exactly the maximal runs of zero bytes
        runs: dict[int, int] = {}
        i = bits.find(_ZERO)
        while i >= 0:
            j = bits.find(_ONE, i)
            j = hw if j < 0 else j
            runs[i] = j
            i = bits.find(_ZERO, j)
        assert runs == self._starts, (runs, self._starts)
        assert all(e < hw for e in self._starts.values())
        assert {e: s for s, e in self._starts.items()} == self._ends
        mask = 0
        seen = 0
        for c, b in enumerate(self._buckets):
            if b:
                mask |= 1 << c
            for s in b:
                assert (self._starts[s] - s).bit_length() - 1 == c
                seen += 1
        assert seen == len(self._starts)
        assert mask == self._mask
