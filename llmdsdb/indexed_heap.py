"""Indexed heap: a priority queue whose entries can be re-scored or removed by key.

It is a 4-ary heap (half the levels of a binary heap; in CPython the fewer loop iterations
win over the extra comparisons: pops measured ~40% faster than binary at 100k entries).
The heap is stored as two flat parallel lists, ``scores`` and ``keys``, plus a dict
``key -> position``. There is no node object per entry: a sift step is two list stores and
one dict store, which is why this beats ``pqdict`` (one NamedTuple per node and a
comparison callback) -- see tools/bench/results/bench_structures.md for the same-run ratios.
A max-heap stores negated scores so both modes share the same min-heap code.

Invariant (checked by :meth:`IndexedHeap._check`): ``len(scores) == len(keys) ==
len(pos)``; ``pos[keys[i]] == i`` for every ``i``; and for every ``i > 0``,
``scores[(i - 1) // 4] <= scores[i]`` (internal, possibly negated, scores).

Equivalent to (the reference model of the tests): a ``dict`` of key -> score where
``pop()`` removes the key of ``min(d.values())`` (``max`` for ``max_heap=True``); ties are
broken arbitrarily.

>>> h = IndexedHeap()
>>> h.push(1, 5.0); h.push(2, 3.0); h.push(3, 4.0)
>>> h.decrease_key(1, 1.0)
>>> h.pop(), h.pop(), len(h)
((1.0, 1), (3.0, 2), 1)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from numbers import Real
from typing import Any

from llmdsdb.errors import (
    DuplicateIdError,
    EmptyError,
    InvalidArgumentError,
    InvalidTypeError,
    LlmdsdbError,
    NonFiniteError,
    NotFoundError,
)

__all__ = ["IndexedHeap"]


def _score(score: object) -> float:
    """Validate a score that is not a plain int/float (the hot paths check those inline)."""
    if isinstance(score, bool) or not isinstance(score, Real):
        raise InvalidTypeError(f"score must be a real number, not {type(score).__name__}")
    value = float(score)
    if value != value:
        raise NonFiniteError("score must not be NaN")
    return value


def _unknown(key: object) -> LlmdsdbError:
    try:
        hash(key)
    except TypeError:
        return InvalidTypeError(f"key must be hashable, not {type(key).__name__}")
    return NotFoundError(f"key {key!r} is not in the heap")


class IndexedHeap:
    """4-ary min-heap (or max-heap) of ``(score, key)`` with O(log n) re-keying by key.

    :param max_heap: pop the largest score first instead of the smallest.

    Scores are ints or floats (``±inf`` allowed, NaN rejected); keys are any hashable value
    (usually an int id). ``decrease_key``/``increase_key`` move the score in the named
    direction in both modes; ``update`` moves it either way.

    Not thread-safe: guard every call with one lock when several threads share a heap.

    Memory: two list slots and one dict entry per entry (about 150 bytes per entry with int
    keys and float scores); no per-entry objects besides the keys and scores themselves.
    """

    __slots__ = ("_keys", "_max", "_pos", "_scores")

    def __init__(self, max_heap: bool = False) -> None:
        if not isinstance(max_heap, bool):
            raise InvalidTypeError(f"max_heap must be a bool, not {type(max_heap).__name__}")
        self._max = max_heap
        self._scores: list[Any] = []
        self._keys: list[Any] = []
        self._pos: dict[Any, int] = {}

    @property
    def max_heap(self) -> bool:
        """Whether the largest score pops first."""
        return self._max

    def __len__(self) -> int:
        """Number of entries. Complexity: O(1)."""
        return len(self._scores)

    def __bool__(self) -> bool:
        return bool(self._scores)

    def __contains__(self, key_id: object) -> bool:
        """Whether ``key_id`` is in the heap (False for unhashable keys).

        Complexity: O(1).
        """
        try:
            return key_id in self._pos
        except TypeError:
            return False

    def __iter__(self) -> Iterator[Hashable]:
        """Iterate over the keys in heap (array) order, not in score order.

        Complexity: O(n) for the whole iteration.
        """
        return iter(list(self._keys))

    def __repr__(self) -> str:
        kind = "max" if self._max else "min"
        return f"IndexedHeap({kind}, {len(self._scores)} entries)"

    def clear(self) -> None:
        """Remove every entry. Complexity: O(n)."""
        self._scores.clear()
        self._keys.clear()
        self._pos.clear()

    # --- sifting (internal scores) ----------------------------------------------------------

    def _sift_up(self, i: int, s: Any, k: Any) -> None:
        scores = self._scores
        keys = self._keys
        pos = self._pos
        while i:
            parent = (i - 1) >> 2
            ps = scores[parent]
            if s < ps:
                scores[i] = ps
                pk = keys[parent]
                keys[i] = pk
                pos[pk] = i
                i = parent
            else:
                break
        scores[i] = s
        keys[i] = k
        pos[k] = i

    def _sift_down(self, i: int, s: Any, k: Any) -> None:
        scores = self._scores
        keys = self._keys
        pos = self._pos
        end = len(scores)
        c = 4 * i + 1
        while c < end:
            cs = scores[c]
            m = c
            for j in range(c + 1, min(c + 4, end)):
                x = scores[j]
                if x < cs:
                    cs = x
                    m = j
            if cs < s:
                scores[i] = cs
                mk = keys[m]
                keys[i] = mk
                pos[mk] = i
                i = m
                c = 4 * i + 1
            else:
                break
        scores[i] = s
        keys[i] = k
        pos[k] = i

    # --- public operations ------------------------------------------------------------------

    def push(self, key_id: Hashable, score: float) -> None:
        """Insert ``key_id`` with ``score``.

        :raises DuplicateIdError: when ``key_id`` is already in the heap.
        :raises InvalidTypeError: when the key is unhashable or the score not a number.
        :raises NonFiniteError: when the score is NaN.

        Complexity: O(log n).
        """
        t = type(score)
        if t is float:
            if score != score:
                raise NonFiniteError("score must not be NaN")
        elif t is not int:
            score = _score(score)
        pos = self._pos
        try:
            present = key_id in pos
        except TypeError:
            raise InvalidTypeError(f"key must be hashable, not {type(key_id).__name__}") from None
        if present:
            raise DuplicateIdError(f"key {key_id!r} is already in the heap")
        if self._max:
            score = -score
        scores = self._scores
        keys = self._keys
        i = len(scores)
        scores.append(score)
        keys.append(key_id)
        # sift up, inlined: push is the hottest call
        while i:
            parent = (i - 1) >> 2
            ps = scores[parent]
            if score < ps:
                scores[i] = ps
                pk = keys[parent]
                keys[i] = pk
                pos[pk] = i
                i = parent
            else:
                break
        scores[i] = score
        keys[i] = key_id
        pos[key_id] = i

    def pop(self) -> tuple[float, Hashable]:
        """Remove and return ``(score, key_id)`` of the smallest score (largest for a
        max-heap).

        :raises EmptyError: when the heap is empty.

        Complexity: O(log n).
        """
        scores = self._scores
        if not scores:
            raise EmptyError("pop from an empty IndexedHeap")
        keys = self._keys
        pos = self._pos
        top_s = scores[0]
        top_k = keys[0]
        s = scores.pop()
        k = keys.pop()
        del pos[top_k]
        end = len(scores)
        if end:
            # sift down, inlined: pop is the slowest call
            i = 0
            c = 1
            while c < end:
                cs = scores[c]
                m = c
                if c + 4 <= end:
                    x = scores[c + 1]
                    if x < cs:
                        cs = x
                        m = c + 1
                    x = scores[c + 2]
                    if x < cs:
                        cs = x
                        m = c + 2
                    x = scores[c + 3]
                    if x < cs:
                        cs = x
                        m = c + 3
                else:
                    for j in range(c + 1, end):
                        x = scores[j]
                        if x < cs:
                            cs = x
                            m = j
                if cs < s:
                    scores[i] = cs
                    mk = keys[m]
                    keys[i] = mk
                    pos[mk] = i
                    i = m
                    c = 4 * i + 1
                else:
                    break
            scores[i] = s
            keys[i] = k
            pos[k] = i
        return (-top_s if self._max else top_s), top_k

    def peek(self) -> tuple[float, Hashable]:
        """Return ``(score, key_id)`` of the entry :meth:`pop` would remove, leaving it.

        :raises EmptyError: when the heap is empty.

        Complexity: O(1).
        """
        if not self._scores:
            raise EmptyError("peek at an empty IndexedHeap")
        s = self._scores[0]
        return (-s if self._max else s), self._keys[0]

    def get_score(self, key_id: Hashable) -> float | None:
        """The score of ``key_id``, or None when it is not in the heap.

        Complexity: O(1).
        """
        try:
            i = self._pos.get(key_id)
        except TypeError:
            return None
        if i is None:
            return None
        s = self._scores[i]
        return -s if self._max else s

    def _locate(self, key_id: Hashable, new_score: object) -> tuple[int, Any, Any]:
        """Validate; return (position, old internal score, new internal score)."""
        t = type(new_score)
        if t is float:
            if new_score != new_score:
                raise NonFiniteError("score must not be NaN")
        elif t is not int:
            new_score = _score(new_score)
        try:
            i = self._pos[key_id]
        except (KeyError, TypeError):
            raise _unknown(key_id) from None
        new = -new_score if self._max else new_score  # type: ignore[operator]
        return i, self._scores[i], new

    def decrease_key(self, key_id: Hashable, new_score: float) -> None:
        """Lower the score of ``key_id`` to ``new_score`` (equal is a no-op).

        :raises NotFoundError: when ``key_id`` is not in the heap.
        :raises InvalidArgumentError: when ``new_score`` is larger than the current score.
        :raises NonFiniteError: when ``new_score`` is NaN.

        Complexity: O(log n).
        """
        i, old, new = self._locate(key_id, new_score)
        if self._max:
            if new < old:  # internal scores are negated: a lower score is a larger -score
                raise InvalidArgumentError(
                    f"decrease_key: new score {new_score} is larger than {-old}"
                )
            self._sift_down(i, new, key_id)
        else:
            if new > old:
                raise InvalidArgumentError(
                    f"decrease_key: new score {new_score} is larger than {old}"
                )
            self._sift_up(i, new, key_id)

    def increase_key(self, key_id: Hashable, new_score: float) -> None:
        """Raise the score of ``key_id`` to ``new_score`` (equal is a no-op).

        :raises NotFoundError: when ``key_id`` is not in the heap.
        :raises InvalidArgumentError: when ``new_score`` is smaller than the current score.
        :raises NonFiniteError: when ``new_score`` is NaN.

        Complexity: O(log n).
        """
        i, old, new = self._locate(key_id, new_score)
        if self._max:
            if new > old:
                raise InvalidArgumentError(
                    f"increase_key: new score {new_score} is smaller than {-old}"
                )
            self._sift_up(i, new, key_id)
        else:
            if new < old:
                raise InvalidArgumentError(
                    f"increase_key: new score {new_score} is smaller than {old}"
                )
            self._sift_down(i, new, key_id)

    def update(self, key_id: Hashable, new_score: float) -> None:
        """Set the score of ``key_id`` in either direction.

        :raises NotFoundError: when ``key_id`` is not in the heap.
        :raises NonFiniteError: when ``new_score`` is NaN.

        Complexity: O(log n).

        >>> h = IndexedHeap(max_heap=True)
        >>> h.push("a", 1); h.push("b", 2)
        >>> h.update("a", 3); h.peek()
        (3, 'a')
        """
        i, old, new = self._locate(key_id, new_score)
        if new < old:
            self._sift_up(i, new, key_id)
        else:
            self._sift_down(i, new, key_id)

    def push_or_update(self, key_id: Hashable, score: float) -> None:
        """:meth:`push` when ``key_id`` is absent, else :meth:`update`.

        Complexity: O(log n).
        """
        if key_id in self:
            self.update(key_id, score)
        else:
            self.push(key_id, score)

    def delete(self, key_id: Hashable) -> tuple[float, Hashable]:
        """Remove ``key_id`` and return its ``(score, key_id)``.

        :raises NotFoundError: when ``key_id`` is not in the heap.

        Complexity: O(log n).

        >>> h = IndexedHeap(); h.push(7, 2.5); h.push(8, 1.0)
        >>> h.delete(7), len(h)
        ((2.5, 7), 1)
        """
        pos = self._pos
        try:
            i = pos.pop(key_id)
        except (KeyError, TypeError):
            raise _unknown(key_id) from None
        scores = self._scores
        keys = self._keys
        old = scores[i]
        s = scores.pop()
        k = keys.pop()
        if i < len(scores):
            # the last entry fills the hole, then moves whichever way restores order
            if s < old:
                self._sift_up(i, s, k)
            else:
                self._sift_down(i, s, k)
        return (-old if self._max else old), key_id

    def _check(self) -> None:
        """Assert the invariant of the module docstring. Complexity: O(n)."""
        scores, keys, pos = self._scores, self._keys, self._pos
        assert len(scores) == len(keys) == len(pos)
        for i, k in enumerate(keys):
            assert pos[k] == i
        for i in range(1, len(scores)):
            assert not scores[i] < scores[(i - 1) >> 2], i
            assert scores[i] == scores[i]
