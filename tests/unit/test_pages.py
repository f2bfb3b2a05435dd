"""MemoryPageStore: the in-memory PageStore the indexes run on by default."""

from __future__ import annotations

import pytest

from llmdsdb.errors import (
    DoubleFreeError,
    InvalidArgumentError,
    InvalidTypeError,
    PageNotFoundError,
)
from llmdsdb.pages import MemoryPageStore, PageStore


def test_pages_and_meta_round_trip() -> None:
    s = MemoryPageStore()
    assert isinstance(s, PageStore)
    a, b = s.alloc(2)
    s.put(a, b"alpha")
    s.put(b, bytearray(b"beta"))
    assert (s.get(a), s.get(b), len(s), s.nbytes()) == (b"alpha", b"beta", 2, 9)
    assert s.load(a, bytes.upper) == b"ALPHA"
    s.put(a, b"gamma")  # overwriting drops the decoded copy
    assert s.load(a, bytes.upper) == b"GAMMA"
    s.free([a])
    with pytest.raises(PageNotFoundError):
        s.get(a)
    s.put_meta("bm25/config", memoryview(b"{}"))
    assert s.get_meta("bm25/config") == b"{}"
    assert s.get_meta("missing") is None
    s._check()


def test_bad_meta_records_are_refused_unchanged() -> None:
    # bytes(5) used to store five NUL bytes silently; a str gave a bare TypeError.
    s = MemoryPageStore()
    s.put_meta("k", b"v")
    for name, data, err in [
        ("k", 5, InvalidTypeError),
        ("k", "text", InvalidTypeError),
        ("k", None, InvalidTypeError),
        (3, b"x", InvalidTypeError),
        ("", b"x", InvalidArgumentError),
    ]:
        with pytest.raises(err):
            s.put_meta(name, data)  # type: ignore[arg-type]
        assert s._meta == {"k": b"v"}
        s._check()
    with pytest.raises(InvalidTypeError):
        s.get_meta(None)  # type: ignore[arg-type]


def test_bad_pages_are_refused_unchanged() -> None:
    s = MemoryPageStore()
    (a,) = s.alloc(1)
    s.put(a, b"x")
    with pytest.raises(InvalidTypeError):
        s.put(a, "text")  # type: ignore[arg-type]
    with pytest.raises(PageNotFoundError):
        s.put(a + 1, b"never allocated")
    with pytest.raises(PageNotFoundError):
        s.free([a, a + 7])
    with pytest.raises(DoubleFreeError):
        s.free([a, a])
    assert s.get(a) == b"x" and s.allocator.is_allocated(a)
    s._check()
