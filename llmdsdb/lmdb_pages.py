"""The LMDB page store: pages and named index records in an LMDB environment.

:class:`LmdbPageStore` implements the :class:`~llmdsdb.pages.PageStore` protocol over the
``pages`` and ``idxmeta`` named databases of an :class:`~llmdsdb.storage.Environment`, with
decoded pages served from a shared :class:`~llmdsdb.pages.PageCache`. It lives apart from
:mod:`llmdsdb.pages` so that the in-memory indexes (and whoever imports them) never load
lmdb.

Invariant: a page id is either free in the allocator (the ``meta`` record ``allocator``,
written in the same transaction as the pages it describes) or holds exactly one page; a
cached decoded page is never older than the generation of the transaction that reads it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from llmdsdb.errors import (
    ClosedError,
    CorruptionError,
    DoubleFreeError,
    InvalidTypeError,
    LlmdsdbError,
    PageNotFoundError,
    ReadOnlyError,
)
from llmdsdb.paged_allocator import PagedAllocator
from llmdsdb.pages import (
    _MISS,
    DEFAULT_MAX_PAGES,
    DEFAULT_PAGE_SIZE,
    PageCache,
    _meta_data,
    _meta_name,
    sizeof_decoded,
)
from llmdsdb.storage import (
    KIND_PAGE,
    Environment,
    Txn,
    decode_value,
    from_u64key,
    meta_key,
    u64key,
)

__all__ = ["LmdbPageStore"]

T = TypeVar("T")


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

    def put_many(self, page_ids: list[int], datas: list[bytes], *,
                 compress: bool | None = None) -> None:
        """:meth:`put` of each page, in one storage call; all are checked first.
        ``compress=False`` skips the envelope's zstd attempt (for data that does not
        compress) unless the store was opened with ``compress_pages=True``.

        Complexity: O(k log n) + O(total length).

        :raises PageNotFoundError: when an id is not allocated.
        """
        ids, datas = list(page_ids), list(datas)
        if len(ids) != len(datas):
            raise InvalidTypeError(f"{len(ids)} page ids but {len(datas)} pages")
        for data in datas:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InvalidTypeError(f"page data must be bytes, not {type(data).__name__}")
        txn = self._writing()
        alloc = self._allocator(txn)
        missing = [p for p in ids if not alloc.is_allocated(p)]
        if missing:
            raise PageNotFoundError(f"page ids {missing[:5]} were not allocated")
        comp = self._compress if self._compress is not None else compress
        txn.put_many("pages", [u64key(p) for p in ids], datas, compress=comp)
        self._dirty.update(ids)
        local = self._local
        if local:
            for p in ids:
                local.pop(p, None)

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

    def defragment(self, max_moves: int | None = None,
                   pinned: Container[int] = ()) -> dict[int, int]:
        """:meth:`PagedAllocator.defragment` of the bound write transaction's allocator,
        with each moved page's stored bytes copied to its new id and deleted at the old
        one (the caller tells the pages' owners the moves, in the same transaction).

        :param max_moves: move at most this many pages (see ``PagedAllocator.defragment``).
        :param pinned: page ids that keep their place.
        :returns: the moves ``{old_id: new_id}``.

        Complexity: O(high_water) plus O(log n + page length) per move.
        """
        txn = self._writing()
        alloc = self._allocator(txn)

        def move(old: int, new: int) -> None:
            raw = txn.raw_get("pages", u64key(old))
            if raw is None:
                raise PageNotFoundError(f"no page with id {old} to move")
            txn.raw_put("pages", u64key(new), raw)
            txn.delete("pages", u64key(old))
            for p in (old, new):
                self._dirty.add(p)
                self._local.pop(p, None)

        moves = alloc.defragment(move, max_moves=max_moves, pinned=pinned)
        if moves:
            self._alloc_dirty = True
        return moves

    def get_meta(self, name: str) -> bytes | None:
        """The named record ``name_prefix + name`` from ``idxmeta``, or None.

        Complexity: O(log n + length).
        """
        return self._current().get("idxmeta", meta_key(self.name_prefix + _meta_name(name)))

    def put_meta(self, name: str, data: bytes, *, compress: bool | None = None) -> None:
        """Write the named record (in the bound write transaction); ``compress=False`` skips
        the envelope's zstd attempt (for data that does not compress, e.g. float rows).

        Complexity: O(log n + length).
        """
        key = meta_key(self.name_prefix + _meta_name(name))
        _meta_data(data)
        self._writing().put("idxmeta", key, data, compress=compress)

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
