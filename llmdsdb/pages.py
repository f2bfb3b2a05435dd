"""Page stores: where the indexes keep their postings blocks, graph rows and vectors.

A *page* is an immutable byte string addressed by a page id (an unsigned 64-bit integer)
that a :class:`~llmdsdb.paged_allocator.PagedAllocator` hands out. An index writes a page
with :meth:`PageStore.put`, reads it back with :meth:`PageStore.get` (raw bytes) or
:meth:`PageStore.load` (decoded and cached), and returns it with :meth:`PageStore.free`.
Small named records that describe an index (its term dictionary, its graph entry point) are
kept beside the pages with :meth:`PageStore.put_meta` / :meth:`PageStore.get_meta`.

Invariant: a page id is either free in the allocator or holds exactly one page; ``get`` of a
free id raises :class:`~llmdsdb.errors.PageNotFoundError`.

The indexes are written against the :class:`PageStore` protocol only, so the same code runs
on :class:`MemoryPageStore` (this module) and on the LMDB store of the database engine
(:class:`~llmdsdb.lmdb_pages.LmdbPageStore`, also reachable as ``llmdsdb.pages.LmdbPageStore``
but imported only when asked for: this module loads no lmdb).
"""

from __future__ import annotations

import operator
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple, Protocol, TypeVar, runtime_checkable

from llmdsdb.cmsketch import CountMinSketch
from llmdsdb.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    PageNotFoundError,
)
from llmdsdb.paged_allocator import PagedAllocator
from llmdsdb.token_lru import TokenLRU

__all__ = ["CacheStats", "MemoryPageStore", "PageCache", "PageStore", "put_pages",
           "sizeof_decoded"]

T = TypeVar("T")

#: Nominal page size handed to the allocator. Pages are variable-length values; the
#: allocator only numbers them, so this is bookkeeping, not a limit on a page's length.
DEFAULT_PAGE_SIZE = 64 * 1024
#: Page ids are u64 on disk; 2**40 ids is far more than any store will use.
DEFAULT_MAX_PAGES = 2**40


@runtime_checkable
class PageStore(Protocol):
    """What an index needs from storage: numbered pages plus a few named records."""

    def alloc(self, n: int = 1) -> list[int]:
        """Reserve ``n`` new page ids (contiguous where possible).

        Complexity: O(n).
        """
        ...

    def put(self, page_id: int, data: bytes) -> None:
        """Write (or overwrite) the page ``page_id``; drops any cached decoded copy."""
        ...

    def get(self, page_id: int) -> bytes:
        """Return the raw bytes of a page.

        :raises PageNotFoundError: when the id holds no page.
        """
        ...

    def load(self, page_id: int, decode: Callable[[bytes], T]) -> T:
        """Return ``decode(get(page_id))``, served from the decoded-page cache when it is
        there. Decoded objects must be treated as read-only by the caller."""
        ...

    def free(self, page_ids: Iterable[int]) -> None:
        """Delete the pages and return their ids to the allocator."""
        ...

    def get_meta(self, name: str) -> bytes | None:
        """Return the named record, or None when it was never written."""
        ...

    def put_meta(self, name: str, data: bytes, *, compress: bool | None = None) -> None:
        """Write the named record (``compress=False``: the data does not compress)."""
        ...

    def delete_meta(self, name: str) -> bool:
        """Delete the named record; True when it existed."""
        ...


def put_pages(store: PageStore, page_ids: list[int], datas: list[bytes], *,
              compress: bool | None = None) -> None:
    """Write many pages: the store's ``put_many`` when it has one (one storage call), else
    :meth:`PageStore.put` page by page. Complexity: O(k) puts."""
    many = getattr(store, "put_many", None)
    if many is not None:
        many(page_ids, datas, compress=compress)
    else:
        for p, data in zip(page_ids, datas):
            store.put(p, data)


def _meta_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidTypeError(f"a meta record name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidArgumentError("meta record name must be non-empty")
    return name


def _meta_data(data: object) -> bytes:
    # bytes(5) would silently be five NUL bytes, bytes("x") a bare TypeError
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidTypeError(f"meta record must be bytes, not {type(data).__name__}")
    return bytes(data)


class MemoryPageStore:
    """A :class:`PageStore` held in a dict: for in-memory indexes and for tests.

    Decoded pages are cached without a bound (everything is in memory anyway).
    Not thread-safe: one writer at a time, no readers during writes.

    Memory: the pages' bytes, plus one decoded object per page that was loaded.
    """

    def __init__(self, allocator: PagedAllocator | None = None) -> None:
        self.allocator = allocator or PagedAllocator(DEFAULT_PAGE_SIZE, DEFAULT_MAX_PAGES)
        self._pages: dict[int, bytes] = {}
        self._decoded: dict[int, object] = {}
        self._meta: dict[str, bytes] = {}

    def alloc(self, n: int = 1) -> list[int]:
        """Reserve ``n`` new page ids (contiguous where possible).

        Complexity: O(n).
        """
        return self.allocator.alloc(n)

    def put(self, page_id: int, data: bytes) -> None:
        """Write (or overwrite) an allocated page; drops its decoded copy.

        :raises InvalidTypeError: when ``data`` is not bytes-like or the id not an int.
        :raises PageNotFoundError: when the id is not allocated.

        Complexity: O(len(data)).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidTypeError(f"page data must be bytes, not {type(data).__name__}")
        if not self.allocator.is_allocated(page_id):
            raise PageNotFoundError(f"page id {page_id} was not allocated")
        self._pages[page_id] = bytes(data)
        self._decoded.pop(page_id, None)

    def put_many(self, page_ids: list[int], datas: list[bytes], *,
                 compress: bool | None = None) -> None:
        """:meth:`put` of each page (``compress`` is accepted and has no effect here).

        Complexity: O(total length).
        """
        ids, datas = list(page_ids), list(datas)
        if len(ids) != len(datas):
            raise InvalidTypeError(f"{len(ids)} page ids but {len(datas)} pages")
        for p, data in zip(ids, datas):
            self.put(p, data)

    def get(self, page_id: int) -> bytes:
        """The bytes of a page.

        :raises PageNotFoundError: when the id holds no page.

        Complexity: O(1).
        """
        try:
            return self._pages[page_id]
        except KeyError:
            raise PageNotFoundError(f"no page with id {page_id}") from None

    def load(self, page_id: int, decode: Callable[[bytes], T]) -> T:
        """``decode(get(page_id))``, decoded once and then served from memory (treat the
        result as read-only).

        Complexity: O(1) after the first load of the page.
        """
        try:
            return self._decoded[page_id]  # type: ignore[return-value]
        except KeyError:
            obj = decode(self.get(page_id))
            self._decoded[page_id] = obj
            return obj

    def free(self, page_ids: Iterable[int]) -> None:
        """Delete the pages and return their ids to the allocator (all or nothing: the
        allocator validates the whole list first).

        :raises PageNotFoundError: when an id is not allocated.
        :raises DoubleFreeError: when an id repeats.

        Complexity: O(len(page_ids)).
        """
        ids = list(page_ids)
        self.allocator.free(ids)
        for p in ids:
            self._pages.pop(p, None)
            self._decoded.pop(p, None)

    def get_meta(self, name: str) -> bytes | None:
        """The named record, or None when it was never written.

        Complexity: O(1).
        """
        return self._meta.get(_meta_name(name))

    def delete_meta(self, name: str) -> bool:
        """Delete a named record; True when it existed.

        Complexity: O(1).
        """
        return self._meta.pop(_meta_name(name), None) is not None

    def put_meta(self, name: str, data: bytes, *, compress: bool | None = None) -> None:
        """Write the named record (``compress`` is accepted for the protocol; nothing is
        compressed in memory).

        :raises InvalidTypeError: when ``name`` is not a str or ``data`` not bytes-like.
        :raises InvalidArgumentError: when ``name`` is empty.

        Complexity: O(len(data)).
        """
        self._meta[_meta_name(name)] = _meta_data(data)

    def meta_names(self, prefix: str = "") -> list[str]:
        """Names of the records that start with ``prefix``, sorted. Complexity: O(records)."""
        return sorted(n for n in self._meta if n.startswith(prefix))

    def __len__(self) -> int:
        """Number of pages held. Complexity: O(1)."""
        return len(self._pages)

    def nbytes(self) -> int:
        """Total bytes of all pages. Complexity: O(pages)."""
        return sum(len(v) for v in self._pages.values())

    def _check(self) -> None:
        """Invariants: every stored page is allocated, every decoded page is stored."""
        self.allocator._check()
        assert all(self.allocator.is_allocated(p) for p in self._pages)
        assert self._decoded.keys() <= self._pages.keys()
        assert all(type(v) is bytes for v in self._pages.values())
        assert all(type(k) is str and k and type(v) is bytes for k, v in self._meta.items())


# ============================================================================================
# The decoded-page cache (the LMDB store that uses it is in llmdsdb.lmdb_pages)
# ============================================================================================

_MISS: Any = object()
_COUNT_BATCH = 256
CachePolicy = Literal["tinylfu", "lru"]


def sizeof_decoded(obj: object, raw_len: int = 0) -> int:
    """Approximate bytes held by a decoded page: numpy arrays by ``nbytes``, bytes by length,
    tuples/lists/dicts by their items (two levels deep), anything else by ``sys.getsizeof``;
    never less than ``raw_len`` (the page's stored size).

    Complexity: O(number of items, two levels deep).
    """

    def size(o: object, depth: int) -> int:
        nb = getattr(o, "nbytes", None)
        if isinstance(nb, int):
            return nb + 112
        if isinstance(o, (bytes, bytearray, str)):
            return sys.getsizeof(o)
        if depth < 2 and isinstance(o, (tuple, list)):
            return sys.getsizeof(o) + sum(size(x, depth + 1) for x in o)
        if depth < 2 and isinstance(o, dict):
            return sys.getsizeof(o) + sum(size(k, depth + 1) + size(v, depth + 1)
                                          for k, v in o.items())
        return sys.getsizeof(o)

    return max(size(obj, 0), raw_len)


class CacheStats(NamedTuple):
    """Counters of a :class:`PageCache`."""

    hits: int
    misses: int
    rejected: int  #: admissions refused (TinyLFU said the victim is hotter, or too large)
    evictions: int
    resident_bytes: int
    resident_pages: int
    budget_bytes: int
    policy: str
    bypassed: int  #: lookups from an older snapshot that skipped the cache

    @property
    def hit_ratio(self) -> float:
        """hits / (hits + misses), 0.0 before the first lookup."""
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


class PageCache:
    """Decoded-page cache under a byte budget, with W-TinyLFU admission.

    :class:`~llmdsdb.token_lru.TokenLRU` segments (bytes as tokens) hold the decoded pages and
    a :class:`~llmdsdb.cmsketch.CountMinSketch` counts every lookup. With ``policy="tinylfu"``
    (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission Policy", 2017):

    * a new page enters a small *window* LRU (``window`` of the budget, 1% by default) that
      admits everything, so a burst of re-reads of a fresh page still hits;
    * a page pushed out of the window (or one too large for it) is a *candidate* for the main
      LRU: the least recently used main entries it would push out are its *victims*, and it
      is admitted only if its estimated access count is higher than every victim's;
      otherwise it is dropped (counted in ``rejected``). One-off pages from a scan therefore
      cannot flush the hot set;
    * every ``sample`` lookups (default 10x the resident pages, at least 1,024) the sketch is
      halved, so that popularity fades.

    ``policy="lru"`` is one plain LRU that admits everything (the baseline of
    ``tools/bench/bench_cache.py``).

    Snapshot safety: entries belong to one *epoch* (the database generation they were read
    at). Lookups and inserts tagged with another epoch bypass the cache, so a reader on an
    older snapshot never sees, nor leaves behind, a page of another generation;
    :meth:`advance_epoch` moves the cache to a newer generation, dropping the pages that
    changed (or everything, when it cannot know which).

    Thread-safe: one internal lock around every method.

    Memory: the budget (``cache_bytes``) of decoded pages plus ~170 bytes per entry, plus the
    sketch: ``8 * width * depth`` bytes (``width = cache_bytes / 2048`` clamped to
    [1,024, 2**20], depth 4: 4 MiB for a 256 MiB cache).

    >>> c = PageCache(1000)
    >>> c.put(1, "one", 400), c.get(1), c.get(2)
    (True, 'one', None)
    >>> c.stats().hits, c.stats().misses
    (1, 1)
    """

    def __init__(self, cache_bytes: int, *, policy: CachePolicy = "tinylfu",
                 window: float = 0.01, sketch_width: int | None = None, sketch_depth: int = 4,
                 sample: int | None = None) -> None:
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int):
            raise InvalidTypeError(f"cache_bytes must be an int, not "
                                   f"{type(cache_bytes).__name__}")
        if cache_bytes <= 0:
            raise InvalidArgumentError(f"cache_bytes must be > 0, got {cache_bytes}")
        if policy not in ("tinylfu", "lru"):
            raise InvalidArgumentError(f"policy must be 'tinylfu' or 'lru', got {policy!r}")
        if not isinstance(window, (int, float)) or not 0.0 <= window < 1.0:
            raise InvalidArgumentError(f"window must be a fraction in [0, 1), got {window!r}")
        if sample is not None and (not isinstance(sample, int) or sample < 1):
            raise InvalidArgumentError(f"sample must be a positive int, got {sample!r}")
        width = sketch_width or min(max(cache_bytes // 2048, 1024), 1 << 20)
        wb = int(cache_bytes * window) if policy == "tinylfu" else 0
        self._budget = cache_bytes
        self._policy = policy
        cost = operator.itemgetter(1)
        self._win: TokenLRU[int, tuple[object, int]] | None = (
            TokenLRU(wb, cost) if wb > 0 else None)
        self._main: TokenLRU[int, tuple[object, int]] = TokenLRU(cache_bytes - wb, cost)
        self._wb = wb
        self._mb = cache_bytes - wb
        self._sketch = CountMinSketch(width, sketch_depth)
        self._sample = sample
        self._counted = 0
        self._pending: dict[int, int] = {}  # accesses not yet added to the sketch
        self._npending = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._rejected = self._evictions = self._bypassed = 0
        self._epoch = -1

    # -- properties ------------------------------------------------------------------------

    @property
    def policy(self) -> str:
        """``"tinylfu"`` or ``"lru"``."""
        return self._policy

    @property
    def budget_bytes(self) -> int:
        """The byte budget."""
        return self._budget

    @property
    def epoch(self) -> int:
        """The generation the cached pages belong to (-1 before the first use)."""
        return self._epoch

    def _segments(self) -> list[TokenLRU[int, tuple[object, int]]]:
        return [self._main] if self._win is None else [self._win, self._main]

    def __len__(self) -> int:
        return sum(len(s) for s in self._segments())

    def __contains__(self, page_id: object) -> bool:
        return any(page_id in s for s in self._segments())

    def page_ids(self) -> list[int]:
        """The cached page ids (window first, each segment least recently used first).

        Complexity: O(resident pages).
        """
        with self._lock:
            return [k for s in self._segments() for k in s]

    def resident_bytes(self) -> int:
        """Bytes currently cached.

        Complexity: O(1).
        """
        return sum(s.total_tokens() for s in self._segments())

    # -- lookups ---------------------------------------------------------------------------

    def _count(self, page_id: int) -> None:
        # Accesses are buffered and added to the sketch in vectorised batches: one
        # CountMinSketch.add costs ~3-10 us here, a batched one well under 1 us.
        if self._policy == "lru":
            return  # plain LRU needs no counts
        pending = self._pending
        pending[page_id] = pending.get(page_id, 0) + 1
        self._npending += 1
        if self._npending >= _COUNT_BATCH:
            self._flush_counts()

    def _flush_counts(self) -> None:
        pending = self._pending
        if pending:
            self._sketch.add_many(list(pending), list(pending.values()))
        self._counted += self._npending
        pending.clear()
        self._npending = 0
        sample = self._sample or max(1024, 10 * len(self))
        if self._counted >= sample:
            self._sketch.age()
            self._counted = 0

    def _estimate(self, page_id: int) -> int:
        return self._sketch.estimate(page_id) + self._pending.get(page_id, 0)

    def get(self, page_id: int, default: Any = None, *, epoch: int | None = None) -> Any:
        """The cached decoded page, or ``default``. Counts the access for admission.

        Complexity: O(sketch depth); O(width * depth) once every ``sample`` lookups (aging).

        :param epoch: the generation of the caller's snapshot; a mismatch bypasses the cache.
        """
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                self._bypassed += 1
                return default
            self._count(page_id)
            e = None
            if self._win is not None:
                e = self._win.peek(page_id)
                if e is not None:
                    self._win.get(page_id)
            if e is None:
                e = self._main.get(page_id)
            if e is None:
                self._misses += 1
                return default
            self._hits += 1
            return e[0]

    def peek(self, page_id: int, default: Any = None) -> Any:
        """The cached page or ``default``, touching neither recency, counts nor stats.

        Complexity: O(1).
        """
        with self._lock:
            for s in self._segments():
                e = s.peek(page_id)
                if e is not None:
                    return e[0]
            return default

    def put(self, page_id: int, obj: object, nbytes: int, *, epoch: int | None = None) -> bool:
        """Offer a decoded page of ``nbytes`` bytes; True when it is resident afterwards.

        A page larger than the main segment is refused; with TinyLFU a page too large for the
        window goes straight to the admission test. Replacing a cached page always succeeds.
        Refusals are counted in ``rejected``.

        Complexity: O(v * depth) for v victims compared (amortised O(depth) per admission).
        """
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise InvalidArgumentError(f"nbytes must be an int >= 0, got {nbytes!r}")
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                self._bypassed += 1
                return False
            entry = (obj, nbytes)
            win, main = self._win, self._main
            if win is not None and page_id in win:
                if nbytes <= self._wb:
                    for k, e in win.put(page_id, entry):
                        self._offer_main(k, e)
                    return True
                win.discard(page_id)
                return self._offer_main(page_id, entry)
            if page_id in main:
                if nbytes <= self._mb:
                    self._evictions += len(main.put(page_id, entry))
                    return True
                main.discard(page_id)
                self._rejected += 1
                return False
            if win is not None and nbytes <= self._wb:
                for k, e in win.put(page_id, entry):
                    self._offer_main(k, e)
                return True
            return self._offer_main(page_id, entry)

    def _offer_main(self, page_id: int, entry: tuple[object, int]) -> bool:
        main = self._main
        nbytes = entry[1]
        if nbytes > self._mb:
            self._rejected += 1
            return False
        need = nbytes - (self._mb - main.total_tokens())
        if need > 0 and self._policy == "tinylfu":
            est = self._estimate
            cand = est(page_id)
            for k in main:  # least recently used first
                if est(k) >= cand:
                    self._rejected += 1
                    return False
                need -= main.peek(k)[1]  # type: ignore[index]
                if need <= 0:
                    break
        self._evictions += len(main.put(page_id, entry))
        return True

    # -- invalidation ----------------------------------------------------------------------

    def invalidate(self, page_ids: Iterable[int]) -> int:
        """Drop these pages if cached; returns how many were.

        Complexity: O(len(page_ids)).
        """
        with self._lock:
            segs = self._segments()
            return sum(any(s.discard(p) for s in segs) for p in page_ids)

    def clear(self) -> None:
        """Drop every cached page (the access counts stay).

        Complexity: O(resident pages).
        """
        with self._lock:
            for s in self._segments():
                s.clear()

    def advance_epoch(self, epoch: int, changed: Iterable[int] | None = None) -> None:
        """Move the cache to generation ``epoch``.

        If the cache is at ``epoch - 1`` and ``changed`` lists every page the commit to
        ``epoch`` wrote or freed, only those are dropped; otherwise (another process
        committed in between, or ``changed`` is None) everything is dropped. A cache already
        at ``epoch`` or later just drops ``changed``.

        Complexity: O(len(changed)), or O(resident pages) when clearing.
        """
        with self._lock:
            segs = self._segments()
            if epoch > self._epoch and (changed is None or epoch != self._epoch + 1):
                for s in segs:
                    s.clear()
            elif changed is not None:
                for p in changed:
                    for s in segs:
                        s.discard(p)
            self._epoch = max(self._epoch, epoch)

    # -- statistics ------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """Hits, misses, rejected admissions, evictions, resident bytes and pages.

        Complexity: O(1).
        """
        with self._lock:
            return CacheStats(self._hits, self._misses, self._rejected, self._evictions,
                              self.resident_bytes(), len(self), self._budget, self._policy,
                              self._bypassed)

    def reset_stats(self) -> None:
        """Zero the counters (not the contents).

        Complexity: O(1).
        """
        with self._lock:
            self._hits = self._misses = self._rejected = self._evictions = self._bypassed = 0

    def __repr__(self) -> str:
        return (f"PageCache(policy={self._policy!r}, {self.resident_bytes()}/"
                f"{self._budget} bytes, {len(self)} pages)")

    def _check(self) -> None:
        """Invariants: each segment's own, no page in two segments, bytes within budget."""
        with self._lock:
            segs = self._segments()
            for s in segs:
                s._check()
                assert sum(e[1] for e in s.values()) == s.total_tokens()
            if self._win is not None:
                assert not set(self._win) & set(self._main)
                assert self._win.total_tokens() <= self._wb
            assert self._main.total_tokens() <= self._mb
            assert self.resident_bytes() <= self._budget
            assert min(self._hits, self._misses, self._rejected, self._evictions) >= 0


def __getattr__(name: str) -> Any:
    # LmdbPageStore lives in llmdsdb.lmdb_pages (it needs lmdb); still importable from here
    if name == "LmdbPageStore":
        from llmdsdb.lmdb_pages import LmdbPageStore

        return LmdbPageStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
