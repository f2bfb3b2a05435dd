"""TokenLRU: eviction order, budget, mapping protocol, counters, bad input."""

from __future__ import annotations

import pytest

from llmdsdb.errors import (
    BudgetExceededError,
    EmptyError,
    InvalidArgumentError,
    InvalidTypeError,
    NotFoundError,
)
from llmdsdb.token_lru import TokenLRU


def _state(c: TokenLRU) -> tuple:
    return [(k, list(e)) for k, e in c._od.items()], c.total_tokens()


def test_put_evicts_least_recently_used_until_within_budget() -> None:
    evicted: list[tuple[str, str]] = []
    c: TokenLRU[str, str] = TokenLRU(10, len, on_evict=lambda k, v: evicted.append((k, v)))
    assert c.put("a", "aaa") == []
    assert c.put("b", "bbb") == []
    assert c.put("c", "ccc") == []
    assert c.get("a") == "aaa"  # a becomes most recent
    out = c.put("d", "dddd")  # 13 tokens: b (LRU) goes
    assert out == [("b", "bbb")] == evicted
    assert list(c) == ["c", "a", "d"] and c.total_tokens() == 10
    assert c.evictions == 1
    c._check()


def test_replacing_a_key_updates_cost_and_recency() -> None:
    c: TokenLRU[str, str] = TokenLRU(10, len)
    c.put("a", "aaaa")
    c.put("b", "bb")
    assert c.put("a", "a") == []
    assert list(c) == ["b", "a"] and c.total_tokens() == 3
    out = c.put("b", "b" * 10)  # only a must go; b itself is never evicted for itself
    assert out == [("a", "a")] and c.total_tokens() == 10
    c._check()


def test_item_larger_than_budget_raises_and_leaves_cache() -> None:
    c: TokenLRU[str, str] = TokenLRU(5, len)
    c.put("a", "aa")
    before = _state(c)
    with pytest.raises(BudgetExceededError):
        c.put("a", "x" * 6)
    with pytest.raises(BudgetExceededError):
        c.put("z", "x" * 6)
    assert _state(c) == before and c.get("a") == "aa"
    assert c.put("full", "x" * 5) == [("a", "aa")]  # exactly the budget fits


def test_zero_cost_entries() -> None:
    c: TokenLRU[int, str] = TokenLRU(1, len)
    for i in range(100):
        c.put(i, "")
    assert len(c) == 100 and c.total_tokens() == 0


def test_get_peek_hits_misses() -> None:
    c: TokenLRU[str, str] = TokenLRU(100, len)
    c.put("a", "x")
    c.put("b", "y")
    assert c.get("zz") is None and c.get("zz", "d") == "d"
    assert c.peek("a") == "x" and c.peek("q") is None
    assert list(c) == ["a", "b"]  # peek did not touch recency
    assert c["a"] == "x" and list(c) == ["b", "a"]
    with pytest.raises(NotFoundError):
        c["nope"]
    assert (c.hits, c.misses) == (1, 3)
    st = c.stats()
    assert st.hits == 1 and st.misses == 3 and st.entries == 2 and st.tokens == 2
    assert st.hit_rate == pytest.approx(0.25)
    assert c.get([1]) is None  # unhashable lookups are misses


def test_peek_lru_discard_pop_popitem_delitem_clear() -> None:
    c: TokenLRU[int, str] = TokenLRU(100, len)
    assert c.peek_lru() is None
    for i in range(5):
        c[i] = "v" * (i + 1)
    assert c.peek_lru() == (0, "v") and list(c)[0] == 0
    assert c.discard(0) is True and c.discard(0) is False
    assert c.pop(1) == "vv" and c.pop(1, None) is None
    with pytest.raises(NotFoundError):
        c.pop(1)
    del c[2]
    with pytest.raises(NotFoundError):
        del c[2]
    assert c.popitem() == (3, "vvvv")
    assert c.total_tokens() == 5 and len(c) == 1 and 4 in c and [] not in c
    c.clear()
    assert len(c) == 0 and c.total_tokens() == 0
    with pytest.raises(EmptyError):
        c.popitem()
    c._check()


def test_evict_until_budget_and_resize() -> None:
    c: TokenLRU[int, bytes] = TokenLRU(100, len)
    for i in range(10):
        c.put(i, bytes(10))
    out = c.evict_until_budget(35)
    assert [k for k, _ in out] == list(range(7)) and c.total_tokens() == 30
    assert c.evict_until_budget(1000) == []
    assert c.token_budget == 100 == c.maxsize and c.currsize == 30
    assert [k for k, _ in c.resize(10)] == [7, 8] and c.maxsize == 10
    assert c.evict_until_budget(0) == [(9, bytes(10))] and len(c) == 0
    c._check()


def test_mutable_mapping_protocol() -> None:
    c: TokenLRU[str, list[int]] = TokenLRU(10, len)
    c.update({"a": [1], "b": [1, 2]})
    assert dict(c.items()) == {"a": [1], "b": [1, 2]} and list(c.values()) == [[1], [1, 2]]
    assert ("a", [1]) in c.items() and ("a", [2]) not in c.items()
    assert c == {"a": [1], "b": [1, 2]} and (c.hits, c.misses) == (0, 0)
    assert c.setdefault("c", [0]) == [0] and c.getsizeof([1, 2, 3]) == 3
    assert set(c.keys()) == {"a", "b", "c"} and len(c) == 3
    assert "TokenLRU(3 entries" in repr(c)


@pytest.mark.parametrize(
    ("budget", "err"),
    [(0, InvalidArgumentError), (-3, InvalidArgumentError), (1.5, InvalidTypeError),
     ("9", InvalidTypeError), (True, InvalidTypeError)],
)
def test_constructor_rejects_bad_budgets(budget: object, err: type) -> None:
    with pytest.raises(err):
        TokenLRU(budget, len)  # type: ignore[arg-type]


def test_bad_input_leaves_cache_unchanged() -> None:
    c: TokenLRU[object, object] = TokenLRU(10, lambda v: v)  # the value is its own cost
    c.put("a", 3)
    before = _state(c)
    for fn, err in [
        (lambda: c.put("b", -1), InvalidArgumentError),
        (lambda: c.put("b", 2.0), InvalidTypeError),
        (lambda: c.put("b", "2"), InvalidTypeError),
        (lambda: c.put([1], 2), InvalidTypeError),
        (lambda: c.put("b", 11), BudgetExceededError),
        (lambda: c.evict_until_budget(-1), InvalidArgumentError),
        (lambda: c.evict_until_budget(1.0), InvalidTypeError),
        (lambda: c.resize(0), InvalidArgumentError),
    ]:
        with pytest.raises(err):
            fn()
        assert _state(c) == before
    with pytest.raises(InvalidTypeError):
        TokenLRU(10, "len")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        TokenLRU(10, len, on_evict=3)  # type: ignore[arg-type]
