"""Token-aware LRU cache: entries cost ``token_of(value)`` tokens, and the cache evicts the
least-recently-used entries to keep the total within a token budget.

The entries live in one :class:`collections.OrderedDict` (C linked list: ``move_to_end`` and
``popitem(last=False)`` are O(1)) ordered from least to most recently used, mapping each key
to a two-slot list ``[value, cost]``. One dict and a mutable slot make a replacing ``put``
one lookup plus two list stores (measured ~110 ns against ~170 ns with a separate cost
dict). Tokens can be any integer cost: the database uses bytes for its decoded-page cache.

Invariant (checked by :meth:`TokenLRU._check`): ``total_tokens() == sum(cost of every
entry) <= token_budget``; every cost is an int in ``[0, token_budget]``.

Equivalent to (the reference model of the tests): an ``OrderedDict`` where ``get`` moves
the key to the end and ``put`` appends it, then pops from the front while the summed cost
exceeds the budget.

>>> c = TokenLRU(token_budget=10, token_of=len)
>>> c.put("a", "xxxx"); c.put("b", "yyyy")
[]
[]
>>> c.get("a")
'xxxx'
>>> c.put("c", "zzzz")  # 12 tokens > 10: the least recently used ("b") goes
[('b', 'yyyy')]
>>> list(c), c.total_tokens(), c.hits, c.misses
(['a', 'c'], 8, 1, 0)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, ItemsView, Iterator, MutableMapping, ValuesView
from typing import Any, Generic, NamedTuple, TypeVar

from llmdsdb._validate import as_int as _as_int
from llmdsdb.errors import (
    BudgetExceededError,
    EmptyError,
    InvalidArgumentError,
    InvalidTypeError,
    NotFoundError,
)

__all__ = ["TokenLRU", "TokenLRUStats"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING: Any = object()


class TokenLRUStats(NamedTuple):
    """Counters of a :class:`TokenLRU`."""

    entries: int
    tokens: int
    token_budget: int
    hits: int
    misses: int
    evictions: int

    @property
    def hit_rate(self) -> float:
        """``hits / (hits + misses)``, 0.0 before any lookup."""
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


class _ItemsView(ItemsView):  # type: ignore[type-arg]
    """Items without touching recency or counters (the default view goes through
    ``__getitem__``, which would reorder the cache while iterating it)."""

    __slots__ = ()

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for k, e in self._mapping._od.items():  # type: ignore[attr-defined]
            yield k, e[0]

    def __contains__(self, item: object) -> bool:
        k, v = item  # type: ignore[misc]
        e = self._mapping._od.get(k)  # type: ignore[attr-defined]
        return e is not None and (e[0] is v or e[0] == v)


class _ValuesView(ValuesView):  # type: ignore[type-arg]
    """Values without touching recency or counters."""

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        for e in self._mapping._od.values():  # type: ignore[attr-defined]
            yield e[0]


class TokenLRU(MutableMapping[K, V], Generic[K, V]):
    """LRU cache bounded by a token budget, speaking the mapping protocol.

    :param token_budget: most tokens the cache holds at once (int > 0); also ``maxsize``.
    :param token_of: cost of a value in tokens (an int >= 0); also ``getsizeof``.
    :param on_evict: called as ``on_evict(key, value)`` for every entry evicted to make room
        (not for explicit deletes, replacements or ``clear``).

    Lookups through :meth:`get` and ``cache[key]`` count hits and misses and make the entry
    most recently used; :meth:`peek`, ``in``, iteration and :meth:`pop` do neither.
    Iteration runs from least to most recently used.

    Not thread-safe: even ``get`` reorders entries, so guard every call with one lock when
    several threads share a cache.

    Memory: the keys and values, plus about 170 bytes per entry (an OrderedDict node and
    a two-slot list).
    """

    __slots__ = (
        "__weakref__", "_budget", "_evictions", "_hits", "_misses", "_od", "_on_evict",
        "_token_of", "_total",
    )

    def __init__(
        self,
        token_budget: int,
        token_of: Callable[[V], int],
        *,
        on_evict: Callable[[K, V], object] | None = None,
    ) -> None:
        budget = _as_int(token_budget, "token_budget")
        if budget <= 0:
            raise InvalidArgumentError(f"token_budget must be > 0, got {budget}")
        if not callable(token_of):
            raise InvalidTypeError("token_of must be callable")
        if on_evict is not None and not callable(on_evict):
            raise InvalidTypeError("on_evict must be callable or None")
        self._budget = budget
        self._token_of = token_of
        self._on_evict = on_evict
        self._od: OrderedDict[K, list[Any]] = OrderedDict()  # key -> [value, cost]
        self._total = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    # --- properties -----------------------------------------------------------------------

    @property
    def token_budget(self) -> int:
        """The budget in tokens (see :meth:`resize` to change it)."""
        return self._budget

    @property
    def maxsize(self) -> int:
        """The budget in tokens (cachetools' name)."""
        return self._budget

    @property
    def currsize(self) -> int:
        """Tokens held now (cachetools' name). Complexity: O(1)."""
        return self._total

    @property
    def hits(self) -> int:
        """Lookups that found their key."""
        return self._hits

    @property
    def misses(self) -> int:
        """Lookups that did not find their key."""
        return self._misses

    @property
    def evictions(self) -> int:
        """Entries evicted to respect the budget."""
        return self._evictions

    def getsizeof(self, value: V) -> int:
        """Cost of ``value`` in tokens (cachetools' name for ``token_of``).

        Complexity: O(1) plus the cost of ``token_of``.
        """
        return self._check_cost(self._token_of(value))

    def total_tokens(self) -> int:
        """Tokens held now.

        Complexity: O(1).
        """
        return self._total

    def stats(self) -> TokenLRUStats:
        """Counters and sizes. Complexity: O(1)."""
        return TokenLRUStats(
            len(self._od), self._total, self._budget, self._hits, self._misses,
            self._evictions,
        )

    def __repr__(self) -> str:
        return (
            f"TokenLRU({len(self._od)} entries, {self._total}/{self._budget} tokens, "
            f"hits={self._hits}, misses={self._misses})"
        )

    # --- core -----------------------------------------------------------------------------

    def _check_cost(self, t: object) -> int:
        if type(t) is not int:
            t = _as_int(t, "token_of(value)")
        if t < 0:  # type: ignore[operator]
            raise InvalidArgumentError(f"token_of(value) must be >= 0, got {t}")
        return t  # type: ignore[return-value]

    def put(self, key: K, value: V) -> list[tuple[K, V]]:
        """Insert or replace ``key``, make it most recently used, then evict least recently
        used entries until the total fits the budget.

        :returns: the evicted ``(key, value)`` pairs, least recently used first (the old
            value of a replaced key is not counted as evicted).
        :raises BudgetExceededError: when the value alone costs more than the budget; the
            cache is unchanged (an old value under ``key`` stays).
        :raises InvalidTypeError: when ``key`` is unhashable or ``token_of`` does not
            return an int.
        :raises InvalidArgumentError: when ``token_of`` returns a negative number.

        Complexity: O(1) amortised (each entry is evicted at most once).
        """
        t = self._token_of(value)
        budget = self._budget
        if type(t) is not int or not 0 <= t <= budget:
            t = self._check_cost(t)
            if t > budget:
                raise BudgetExceededError(
                    f"an entry of {t} tokens cannot fit a budget of {budget} tokens"
                )
        od = self._od
        try:
            e = od.get(key)
        except TypeError:
            raise InvalidTypeError(f"key must be hashable, not {type(key).__name__}") from None
        if e is None:
            od[key] = [value, t]
            total = self._total + t
        else:
            od.move_to_end(key)
            total = self._total + t - e[1]
            e[0] = value
            e[1] = t
        if total <= budget:
            self._total = total
            return []
        # evict inline (no helper call): puts into a full cache are the common case
        popitem = od.popitem
        out: list[tuple[K, V]] = []
        while total > budget:
            k, e = popitem(False)  # positional: a keyword argument costs ~40 ns more
            total -= e[1]
            out.append((k, e[0]))
        self._total = total
        self._evictions += len(out)
        if self._on_evict is not None:
            for k, v in out:
                self._on_evict(k, v)
        return out

    def _evict_to(self, target: int) -> list[tuple[K, V]]:
        popitem = self._od.popitem
        out: list[tuple[K, V]] = []
        total = self._total
        while total > target:
            k, e = popitem(False)
            total -= e[1]
            out.append((k, e[0]))
        self._total = total
        self._evictions += len(out)
        on_evict = self._on_evict
        if on_evict is not None:
            for k, v in out:
                on_evict(k, v)
        return out

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        """The value of ``key`` (made most recently used; a hit), else ``default`` (a miss).

        Complexity: O(1).
        """
        od = self._od
        try:
            e = od.get(key)  # not od[key]: a raised KeyError costs more than a whole hit
        except TypeError:
            e = None
        if e is None:
            self._misses += 1
            return default
        od.move_to_end(key)
        self._hits += 1
        return e[0]

    def peek(self, key: K, default: V | None = None) -> V | None:
        """The value of ``key`` or ``default``, without touching recency or counters.

        Complexity: O(1).
        """
        try:
            e = self._od.get(key)
        except TypeError:
            return default
        return default if e is None else e[0]

    def peek_lru(self) -> tuple[K, V] | None:
        """The ``(key, value)`` the next eviction would remove, or None when empty; the
        entry stays where it is (for admission policies such as TinyLFU).

        Complexity: O(1).

        >>> c = TokenLRU(100, len); _ = c.put(1, "a"); _ = c.put(2, "b")
        >>> c.peek_lru()
        (1, 'a')
        """
        od = self._od
        if not od:
            return None
        k = next(iter(od))
        return k, od[k][0]

    def discard(self, key: K) -> bool:
        """Remove ``key`` if present (no error when absent, no ``on_evict``).

        :returns: whether an entry was removed.

        Complexity: O(1).
        """
        try:
            e = self._od.pop(key, None)
        except TypeError:
            return False
        if e is None:
            return False
        self._total -= e[1]
        return True

    def evict_until_budget(self, target_budget: int) -> list[tuple[K, V]]:
        """Evict least recently used entries until at most ``target_budget`` tokens remain.
        The budget itself does not change (see :meth:`resize`).

        :returns: the evicted ``(key, value)`` pairs, least recently used first.
        :raises InvalidArgumentError: when ``target_budget`` is negative.

        Complexity: O(number evicted), at most O(n).

        >>> c = TokenLRU(10, len); _ = c.put("a", "xx"); _ = c.put("b", "yyy")
        >>> c.evict_until_budget(3), c.total_tokens()
        ([('a', 'xx')], 3)
        """
        target = _as_int(target_budget, "target_budget")
        if target < 0:
            raise InvalidArgumentError(f"target_budget must be >= 0, got {target}")
        if self._total <= target:
            return []
        return self._evict_to(target)

    def resize(self, token_budget: int) -> list[tuple[K, V]]:
        """Change the budget, evicting least recently used entries to fit it.

        :returns: the evicted pairs.
        :raises InvalidArgumentError: when ``token_budget`` is not positive.

        Complexity: O(number evicted).
        """
        budget = _as_int(token_budget, "token_budget")
        if budget <= 0:
            raise InvalidArgumentError(f"token_budget must be > 0, got {budget}")
        self._budget = budget
        return self.evict_until_budget(budget)

    # --- mapping protocol -----------------------------------------------------------------

    def __len__(self) -> int:
        """Number of entries. Complexity: O(1)."""
        return len(self._od)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is cached (no recency change, not counted). Complexity: O(1)."""
        try:
            return key in self._od
        except TypeError:
            return False

    def __iter__(self) -> Iterator[K]:
        """Keys from least to most recently used. Complexity: O(n) for the iteration."""
        return iter(self._od)

    def items(self) -> ItemsView[K, V]:  # type: ignore[override]
        """``(key, value)`` pairs from least to most recently used, touching neither recency
        nor counters. Complexity: O(1) to create, O(n) to iterate."""
        return _ItemsView(self)

    def values(self) -> ValuesView[V]:  # type: ignore[override]
        """Values from least to most recently used, touching neither recency nor counters.
        Complexity: O(1) to create, O(n) to iterate."""
        return _ValuesView(self)

    def __getitem__(self, key: K) -> V:
        """Like :meth:`get`, but a miss raises.

        :raises NotFoundError: (a ``KeyError``) when ``key`` is not cached.

        Complexity: O(1).
        """
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise NotFoundError(f"key {key!r} is not in the cache")
        return value  # type: ignore[return-value]

    def __setitem__(self, key: K, value: V) -> None:
        """Same as :meth:`put`. Complexity: O(1) amortised."""
        self.put(key, value)

    def __delitem__(self, key: K) -> None:
        """Remove ``key``.

        :raises NotFoundError: when ``key`` is not cached.

        Complexity: O(1).
        """
        if not self.discard(key):
            raise NotFoundError(f"key {key!r} is not in the cache")

    def pop(self, key: K, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (no counters touched).

        :raises NotFoundError: when ``key`` is absent and no ``default`` is given.

        Complexity: O(1).
        """
        try:
            e = self._od.pop(key)
        except (KeyError, TypeError):
            if default is _MISSING:
                raise NotFoundError(f"key {key!r} is not in the cache") from None
            return default
        self._total -= e[1]
        return e[0]

    def popitem(self) -> tuple[K, V]:
        """Remove and return the least recently used ``(key, value)``.

        :raises EmptyError: when the cache is empty.

        Complexity: O(1).
        """
        if not self._od:
            raise EmptyError("popitem from an empty TokenLRU")
        k, e = self._od.popitem(last=False)
        self._total -= e[1]
        return k, e[0]

    def clear(self) -> None:
        """Remove every entry (no ``on_evict``); counters are kept. Complexity: O(n)."""
        self._od.clear()
        self._total = 0

    # --- invariant ------------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the invariant of the module docstring. Complexity: O(n)."""
        total = 0
        for e in self._od.values():
            assert type(e) is list and len(e) == 2
            t = e[1]
            assert type(t) is int and 0 <= t <= self._budget
            total += t
        assert total == self._total
        assert 0 <= self._total <= self._budget
