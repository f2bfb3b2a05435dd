"""IndexedHeap: examples of every method in both modes, bad input leaves it unchanged."""

from __future__ import annotations

import math
import random

import pytest

from llmdsdb.errors import (
    DuplicateIdError,
    EmptyError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    NotFoundError,
)
from llmdsdb.indexed_heap import IndexedHeap


def _state(h: IndexedHeap) -> tuple:
    return list(h._scores), list(h._keys), dict(h._pos)


def test_min_heap_pops_in_ascending_order() -> None:
    rng = random.Random(7)
    h = IndexedHeap()
    items = {i: rng.uniform(-100, 100) for i in range(500)}
    for k, s in items.items():
        h.push(k, s)
    h._check()
    out = [h.pop() for _ in range(len(items))]
    assert [s for s, _ in out] == sorted(items.values())
    assert all(items[k] == s for s, k in out)
    assert len(h) == 0 and not h


def test_max_heap_pops_in_descending_order() -> None:
    h = IndexedHeap(max_heap=True)
    for k, s in enumerate([3, 1, 4, 1, 5, 9, 2, 6]):
        h.push(k, s)
    assert [h.pop()[0] for _ in range(8)] == [9, 6, 5, 4, 3, 2, 1, 1]
    assert h.max_heap


def test_decrease_and_increase_key_in_both_modes() -> None:
    for max_heap in (False, True):
        h = IndexedHeap(max_heap=max_heap)
        for k in range(10):
            h.push(k, float(k))
        h.decrease_key(9, -1.0)
        h.increase_key(0, 100.0)
        h.decrease_key(5, 5.0)  # equal is a no-op
        h._check()
        assert h.get_score(9) == -1.0 and h.get_score(0) == 100.0
        assert h.peek() == ((100.0, 0) if max_heap else (-1.0, 9))
        with pytest.raises(InvalidArgumentError):
            h.decrease_key(3, 4.0)
        with pytest.raises(InvalidArgumentError):
            h.increase_key(3, 2.0)
        assert h.get_score(3) == 3.0
        h._check()


def test_update_delete_peek_get_score_contains_iter() -> None:
    h = IndexedHeap()
    for k, s in [("a", 5), ("b", 2), ("c", 8)]:
        h.push(k, s)
    h.update("c", 1)
    assert h.peek() == (1, "c")
    h.update("c", 10)
    assert h.peek() == (2, "b")
    assert h.delete("b") == (2, "b")
    assert "b" not in h and "a" in h and [] not in h
    assert h.get_score("b") is None and h.get_score("a") == 5
    assert sorted(h) == ["a", "c"]
    h.push_or_update("a", 0)
    h.push_or_update("z", -1)
    assert h.pop() == (-1, "z") and h.pop() == (0, "a")
    h.clear()
    assert len(h) == 0
    assert "IndexedHeap(min" in repr(h)


def test_delete_of_every_position_keeps_heap_order() -> None:
    rng = random.Random(3)
    for n in (1, 2, 5, 17, 64):
        for victim in range(n):
            h = IndexedHeap()
            for k in range(n):
                h.push(k, rng.random())
            h.delete(victim)
            h._check()
            assert victim not in h and len(h) == n - 1


def test_infinities_are_allowed() -> None:
    h = IndexedHeap()
    h.push(1, math.inf)
    h.push(2, -math.inf)
    h.push(3, 0)
    assert h.pop() == (-math.inf, 2)
    h.decrease_key(1, 5)
    assert h.pop() == (0, 3)


def test_numeric_types() -> None:
    np = pytest.importorskip("numpy")
    h = IndexedHeap()
    h.push(1, np.float32(2.5))
    h.push(2, np.int64(1))
    assert h.pop() == (1.0, 2)
    assert h.get_score(1) == 2.5


def test_errors_leave_heap_unchanged() -> None:
    h = IndexedHeap()
    for k in range(5):
        h.push(k, k)
    before = _state(h)
    cases = [
        (lambda: h.push(1, 0.0), DuplicateIdError),
        (lambda: h.push(9, math.nan), NonFiniteError),
        (lambda: h.push(9, "3"), InvalidTypeError),
        (lambda: h.push(9, None), InvalidTypeError),
        (lambda: h.push(9, True), InvalidTypeError),
        (lambda: h.push([1], 1.0), InvalidTypeError),
        (lambda: h.decrease_key(1, math.nan), NonFiniteError),
        (lambda: h.decrease_key(42, 0.0), NotFoundError),
        (lambda: h.decrease_key([1], 0.0), InvalidTypeError),
        (lambda: h.increase_key(42, 0.0), NotFoundError),
        (lambda: h.update(42, 0.0), NotFoundError),
        (lambda: h.update(2, math.nan), NonFiniteError),
        (lambda: h.delete(42), NotFoundError),
        (lambda: h.decrease_key(2, 3), InvalidArgumentError),
        (lambda: h.increase_key(2, 1), InvalidArgumentError),
    ]
    for fn, err in cases:
        with pytest.raises(err):
            fn()
        assert _state(h) == before
    assert isinstance(NotFoundError("x"), KeyError)
    with pytest.raises(InvalidTypeError):
        IndexedHeap(max_heap=1)  # type: ignore[arg-type]


def test_empty_heap() -> None:
    h = IndexedHeap()
    with pytest.raises(EmptyError):
        h.pop()
    with pytest.raises(EmptyError):
        h.peek()
    assert isinstance(EmptyError("x"), IndexError)
