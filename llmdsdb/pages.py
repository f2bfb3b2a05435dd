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
on :class:`MemoryPageStore` (this module) and on the LMDB store of the database engine.
"""

from __future__ import annotations

import operator
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple, Protocol, TypeVar, runtime_checkable

from llmdsdb.cmsketch import CountMinSketch
from llmdsdb.errors import (
    ClosedError,
    CorruptionError,
    DoubleFreeError,
    InvalidArgumentError,
    InvalidTypeError,
    LlmdsdbError,
    PageNotFoundError,
    ReadOnlyError,
)
from llmdsdb.paged_allocator import PagedAllocator
from llmdsdb.storage import (
    KIND_PAGE,
    Environment,
    Txn,
    decode_value,
    from_u64key,
    meta_key,
    u64key,
)
from llmdsdb.token_lru import TokenLRU

__all__ = ["CacheStats", "LmdbPageStore", "MemoryPageStore", "PageCache", "PageStore",
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

    def put_meta(self, name: str, data: bytes) -> None:
        """Write the named record."""
        ...


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

    def put_meta(self, name: str, data: bytes) -> None:
        """Write the named record.

        :raises InvalidTypeError: when ``name`` is not a str or ``data`` not bytes-like.
        :raises InvalidArgumentError: when ``name`` is empty.

        Complexity: O(len(data)).
        """
        self._meta[_meta_name(name)] = _meta_data(data)

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
# The LMDB page store and its decoded-page cache (used by llmdsdb.db)
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


def _weak_hook(obj: object, method: str, hooks: list[Any]) -> Any:
    """A hook calling ``obj.method`` while ``obj`` lives, removing itself afterwards."""
    ref = weakref.ref(obj)

    def hook(*args: Any) -> None:
        target = ref()
        if target is None:
            try:
                hooks.remove(hook)
            except ValueError:
                pass
            return
        getattr(target, method)(*args)

    hook.__llmdsdb_owner__ = ref  # type: ignore[attr-defined]
    return hook


class LmdbPageStore:
    """A :class:`PageStore` over the ``pages`` and ``idxmeta`` named databases of an
    :class:`~llmdsdb.storage.Environment`.

    The store works inside the transaction it is bound to (``with store.bound(txn):`` or
    ``store.txn = txn``; per thread): reads in any transaction, writes only in a write
    transaction. Pages are values in ``pages`` keyed by ``u64key(page_id)``, each in the
    checksummed envelope, so a corrupt page raises
    :class:`~llmdsdb.errors.CorruptionError` naming its id. Page ids come from a
    :class:`~llmdsdb.paged_allocator.PagedAllocator` whose state is the ``meta`` record
    ``allocator``: loaded when first needed in a write transaction, written back in the same
    transaction (by :meth:`save_allocator` or automatically just before the commit), and
    dropped when the transaction aborts.

    Decoded pages are served from a shared :class:`PageCache`. Pages written in an open write
    transaction are decoded into a private map until it commits; the commit then drops their
    old versions from the cache (:meth:`PageCache.advance_epoch`); a commit by another process
    is noticed at the next bind (the generation moved past the cache's) and empties the cache.

    Named records are keys ``name_prefix + name`` in ``idxmeta``. Use one store per
    environment (the allocator is shared by every page in it).

    Thread-safe for readers in several threads (each binds its own transaction); one writer.

    Memory: the cache budget, plus the allocator (one byte per page id below its high-water
    mark) and the pages decoded in the current write transaction.
    """

    def __init__(self, env: Environment, cache: PageCache | None = None, name_prefix: str = "",
                 *, compress_pages: bool | None = None, allocator_key: str = "allocator",
                 page_size: int = DEFAULT_PAGE_SIZE, max_pages: int = DEFAULT_MAX_PAGES) -> None:
        if not isinstance(name_prefix, str):
            raise InvalidTypeError("name_prefix must be a str")
        self.env = env
        self.cache = cache if cache is not None else PageCache(64 << 20)
        self.name_prefix = name_prefix
        self._compress = compress_pages
        self._alloc_key = allocator_key.encode("utf-8")
        self._page_size = page_size
        self._max_pages = max_pages
        self._tls = threading.local()
        self._alloc: PagedAllocator | None = None
        self._alloc_gen = -1
        self._alloc_dirty = False
        self._write_txn: Txn | None = None
        self._dirty: set[int] = set()
        self._local: dict[int, object] = {}
        self._hooks = [
            (env.before_commit, _weak_hook(self, "_before_commit", env.before_commit)),
            (env.on_commit, _weak_hook(self, "_on_commit", env.on_commit)),
            (env.on_abort, _weak_hook(self, "_on_abort", env.on_abort)),
        ]
        for lst, hook in self._hooks:
            lst.append(hook)

    # -- binding ---------------------------------------------------------------------------

    @property
    def txn(self) -> Txn | None:
        """The transaction this thread's calls run in (None when unbound)."""
        return getattr(self._tls, "txn", None)

    @txn.setter
    def txn(self, txn: Txn | None) -> None:
        self._tls.txn = txn
        if txn is None:
            return
        g = txn.start_generation
        if g > self.cache.epoch:
            self.cache.advance_epoch(g, None)  # someone committed since: drop everything
        if txn.write and self._write_txn is not txn:
            self._write_txn = txn
            self._dirty = set()
            self._local = {}
            if self._alloc_gen != g or self._alloc_dirty:
                self._alloc = None

    @contextmanager
    def bound(self, txn: Txn) -> Iterator[LmdbPageStore]:
        """Bind this thread's calls to ``txn`` for the ``with`` block (nests; the previous
        binding comes back afterwards).

        Complexity: O(1).
        """
        prev = self.txn
        self.txn = txn
        try:
            yield self
        finally:
            self._tls.txn = prev

    def _current(self) -> Txn:
        txn = getattr(self._tls, "txn", None)
        if txn is None:
            raise ClosedError("LmdbPageStore used outside a transaction; use "
                              "`with store.bound(txn):`")
        return txn

    def _writing(self) -> Txn:
        txn = self._current()
        if not txn.write:
            raise ReadOnlyError("the page store is bound to a read transaction; pages can "
                                "only change inside env.write() / env.run_write()")
        if self._write_txn is not txn:  # bound before another write began on this store
            self.txn = txn
        return txn

    # -- the allocator ---------------------------------------------------------------------

    def _load_allocator(self, txn: Txn) -> PagedAllocator:
        raw = txn.get("meta", self._alloc_key)
        if raw is None:
            return PagedAllocator(self._page_size, self._max_pages)
        try:
            return PagedAllocator.from_bytes(raw)
        except CorruptionError as exc:
            raise CorruptionError(f"meta/allocator: {exc}") from exc

    def _allocator(self, txn: Txn) -> PagedAllocator:
        if self._alloc is None:
            self._alloc = self._load_allocator(txn)
            self._alloc_gen = txn.start_generation
            self._alloc_dirty = False
        return self._alloc

    @property
    def allocator(self) -> PagedAllocator:
        """The allocator as of the bound transaction (read-only use outside a write).

        :raises ClosedError: when unbound.
        """
        txn = self._current()
        if txn.write:
            return self._allocator(self._writing())
        if self._alloc is not None and self._alloc_gen == txn.start_generation \
                and not self._alloc_dirty:
            return self._alloc
        return self._load_allocator(txn)

    def save_allocator(self, txn: Txn | None = None) -> None:
        """Write the allocator state into ``txn`` (default: the bound write transaction) if
        it changed. Also done automatically just before the commit.

        Complexity: O(free slabs).
        """
        txn = txn or self._writing()
        if self._alloc is not None and self._alloc_dirty and txn is self._write_txn:
            txn.put("meta", self._alloc_key, self._alloc.to_bytes())
            self._alloc_dirty = False

    # -- env hooks -------------------------------------------------------------------------

    def _before_commit(self, txn: Txn) -> None:
        if txn is self._write_txn:
            self.save_allocator(txn)

    def _on_commit(self, generation: int) -> None:
        if self._write_txn is None:
            return  # not involved: the next bind sees the new generation and drops all
        self.cache.advance_epoch(generation, self._dirty)
        if self._alloc is not None and self._alloc_gen == generation - 1 \
                and not self._alloc_dirty:
            self._alloc_gen = generation
        else:
            self._alloc = None
        self._reset_write()

    def _on_abort(self) -> None:
        if self._write_txn is None:
            return
        self._alloc = None  # its changes died with the transaction
        self._alloc_dirty = False
        self._reset_write()

    def _reset_write(self) -> None:
        self._write_txn = None
        self._dirty = set()
        self._local = {}

    # -- PageStore -------------------------------------------------------------------------

    def alloc(self, n: int = 1) -> list[int]:
        """Reserve ``n`` page ids (contiguous where possible).

        Complexity: O(n).
        """
        txn = self._writing()
        ids = self._allocator(txn).alloc(n)
        self._alloc_dirty = True
        return ids

    def put(self, page_id: int, data: bytes) -> None:
        """Write the page ``page_id`` (allocated) in the bound write transaction.

        Complexity: O(len(data)) (plus zstd when compressing pays).

        :raises PageNotFoundError: when the id is not allocated.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidTypeError(f"page data must be bytes, not {type(data).__name__}")
        txn = self._writing()
        key = u64key(page_id)
        if not self._allocator(txn).is_allocated(page_id):
            raise PageNotFoundError(f"page id {page_id} was not allocated")
        txn.put("pages", key, data, compress=self._compress)
        self._dirty.add(page_id)
        self._local.pop(page_id, None)

    def get(self, page_id: int) -> bytes:
        """The verified bytes of a page.

        Complexity: O(log n + page length).

        :raises PageNotFoundError: when the id holds no page.
        :raises CorruptionError: when the page fails its checksum (the message names it).
        """
        data = self._current().get("pages", u64key(page_id))
        if data is None:
            raise PageNotFoundError(f"no page with id {page_id}")
        return data

    def load(self, page_id: int, decode: Callable[[bytes], T]) -> T:
        """``decode(get(page_id))``, from the cache when it is there (treat it read-only).

        Complexity: O(1) on a hit; a miss costs a get and a decode.
        """
        txn = self._current()
        if txn.write and page_id in self._dirty and txn is self._write_txn:
            obj = self._local.get(page_id, _MISS)
            if obj is _MISS:
                obj = self._local[page_id] = decode(self.get(page_id))
            return obj  # type: ignore[no-any-return]
        g = txn.start_generation
        obj = self.cache.get(page_id, _MISS, epoch=g)
        if obj is not _MISS:
            return obj  # type: ignore[no-any-return]
        raw = self.get(page_id)
        obj = decode(raw)
        self.cache.put(page_id, obj, sizeof_decoded(obj, len(raw)), epoch=g)
        return obj

    def free(self, page_ids: Iterable[int]) -> None:
        """Delete the pages and return their ids to the allocator (all or nothing).

        Complexity: O(len(page_ids) * log n).

        :raises PageNotFoundError: when an id is not allocated.
        :raises DoubleFreeError: when an id repeats.
        """
        ids = list(page_ids)
        txn = self._writing()
        keys = [u64key(p) for p in ids]
        if len(set(ids)) != len(ids):
            raise DoubleFreeError("a page id appears twice in one free() call")
        alloc = self._allocator(txn)
        missing = [p for p in ids if not alloc.is_allocated(p)]
        if missing:
            raise PageNotFoundError(f"cannot free unknown page ids {missing[:5]}")
        alloc.free(ids)
        self._alloc_dirty = True
        for p, k in zip(ids, keys):
            txn.delete("pages", k)
            self._dirty.add(p)
            self._local.pop(p, None)

    def get_meta(self, name: str) -> bytes | None:
        """The named record ``name_prefix + name`` from ``idxmeta``, or None.

        Complexity: O(log n + length).
        """
        return self._current().get("idxmeta", meta_key(self.name_prefix + _meta_name(name)))

    def put_meta(self, name: str, data: bytes) -> None:
        """Write the named record (in the bound write transaction).

        Complexity: O(log n + length).
        """
        key = meta_key(self.name_prefix + _meta_name(name))
        _meta_data(data)
        self._writing().put("idxmeta", key, data)

    def delete_meta(self, name: str) -> bool:
        """Delete a named record; True when it existed.

        Complexity: O(log n).
        """
        return self._writing().delete("idxmeta", meta_key(self.name_prefix + _meta_name(name)))

    def meta_names(self, prefix: str = "") -> list[str]:
        """Names of the records under ``name_prefix + prefix`` (without ``name_prefix``).

        Complexity: O(log n + k).
        """
        full = (self.name_prefix + prefix).encode("utf-8")
        cut = len(self.name_prefix.encode("utf-8"))
        return [k[cut:].decode("utf-8") for k in self._current().keys("idxmeta", full)]

    def page_ids(self) -> Iterator[int]:
        """Ids of the stored pages, ascending (consume inside the transaction).

        Complexity: O(log n + k).
        """
        return (from_u64key(k) for k in self._current().keys("pages"))

    def __len__(self) -> int:
        """Number of stored pages in the bound transaction's snapshot."""
        return self._current().count("pages")

    def check(self) -> list[str]:
        """Verify every page in the bound transaction: envelope checksum, key shape, and
        agreement with the allocator. Returns the problems (empty when healthy).

        Complexity: O(total page bytes).
        """
        txn = self._current()
        problems: list[str] = []
        try:
            alloc = self._load_allocator(txn)
        except LlmdsdbError as exc:
            return [f"meta/allocator: {exc}"]
        n = 0
        for k, raw in txn.raw_items("pages"):
            n += 1
            try:
                pid = from_u64key(k)
            except CorruptionError:
                problems.append(f"pages: malformed key {k[:16]!r}")
                continue
            try:
                decode_value(raw, key_desc=f"pages/page {pid}", kind=KIND_PAGE)
            except CorruptionError as exc:
                problems.append(str(exc))
            if not alloc.is_allocated(pid):
                problems.append(f"pages/page {pid}: stored but free in the allocator")
        used = alloc.stats().used
        if used != n:
            problems.append(f"allocator: {used} page ids allocated but {n} pages stored")
        return problems

    def close(self) -> None:
        """Unregister from the environment's hooks (also happens when the store is
        garbage-collected).

        Complexity: O(hooks).
        """
        for lst, hook in self._hooks:
            try:
                lst.remove(hook)
            except ValueError:
                pass
        self._hooks = []

    def _check(self) -> None:
        """Invariants: the cache's and the allocator's; dirty pages only inside a write."""
        self.cache._check()
        if self._alloc is not None:
            self._alloc._check()
        if self._write_txn is None:
            assert not self._dirty and not self._local
