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

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar, runtime_checkable

from llmdsdb.errors import InvalidArgumentError, InvalidTypeError, PageNotFoundError
from llmdsdb.paged_allocator import PagedAllocator

__all__ = ["MemoryPageStore", "PageStore"]

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
        return self.allocator.alloc(n)

    def put(self, page_id: int, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidTypeError(f"page data must be bytes, not {type(data).__name__}")
        if page_id not in self._pages and not self.allocator.is_allocated(page_id):
            raise PageNotFoundError(f"page id {page_id} was not allocated")
        self._pages[page_id] = bytes(data)
        self._decoded.pop(page_id, None)

    def get(self, page_id: int) -> bytes:
        try:
            return self._pages[page_id]
        except KeyError:
            raise PageNotFoundError(f"no page with id {page_id}") from None

    def load(self, page_id: int, decode: Callable[[bytes], T]) -> T:
        try:
            return self._decoded[page_id]  # type: ignore[return-value]
        except KeyError:
            obj = decode(self.get(page_id))
            self._decoded[page_id] = obj
            return obj

    def free(self, page_ids: Iterable[int]) -> None:
        ids = list(page_ids)
        missing = [p for p in ids if p not in self._pages and not self.allocator.is_allocated(p)]
        if missing:
            raise PageNotFoundError(f"cannot free unknown page ids {missing[:5]}")
        self.allocator.free(ids)
        for p in ids:
            self._pages.pop(p, None)
            self._decoded.pop(p, None)

    def get_meta(self, name: str) -> bytes | None:
        return self._meta.get(name)

    def put_meta(self, name: str, data: bytes) -> None:
        if not name:
            raise InvalidArgumentError("meta record name must be non-empty")
        self._meta[name] = bytes(data)

    def __len__(self) -> int:
        """Number of pages held."""
        return len(self._pages)

    def nbytes(self) -> int:
        """Total bytes of all pages."""
        return sum(len(v) for v in self._pages.values())
