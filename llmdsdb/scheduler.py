"""Dynamic micro-batching scheduler: queue requests, release them in batches.

A server calls :meth:`Scheduler.submit` for each request and :meth:`Scheduler.get_batch` in its
serving loop. ``get_batch`` releases a batch when one of these holds (checked in this order;
the first that holds is recorded as the release reason):

1. ``"full"``: at least ``max_batch_size`` requests are queued, or (with
   ``max_batch_tokens``) the queued requests hold at least ``max_batch_tokens`` tokens;
2. ``"slo"``: the earliest SLO deadline is within ``slo_margin_ms`` (waiting longer would
   miss it);
3. ``"max_wait"``: the oldest queued request has waited ``max_wait_ms``;
4. ``"forced"``: ``get_batch(force=True)`` and the queue is not empty.

Otherwise it returns None; :meth:`Scheduler.next_release_in_s` says when to call again.

A released batch takes requests in this order, at most ``max_batch_size`` of them and, with
``max_batch_tokens``, only while the next request still fits the token budget (the order is
never skipped, so a large request is not overtaken forever):

1. *starving* requests, which have waited ``starvation_ms`` or longer, oldest first;
2. requests with an SLO, earliest deadline (``submit time + slo_ms``) first;
3. the others by ``priority_fn(tokens)`` (smaller first; default: fewest tokens first) with
   aging: the effective priority is ``priority_fn(tokens) - waited_ms / aging_ms``, so each
   ``aging_ms`` of waiting is worth one unit of priority and nothing starves. Because every
   queued request ages at the same rate, the heap key ``priority_fn(tokens) +
   (submit_time - t0) / aging_s`` orders them the same way and never needs re-keying.

Ties are broken arbitrarily. Time comes only from the injectable ``clock`` (seconds).

Invariant (checked by :meth:`Scheduler._check`): every queued request is in the arrival heap
and in exactly one of the SLO heap (when it has an SLO) or the priority heap, with the key
above; queued and in-flight requests are disjoint; ``queued_tokens`` is the sum of the
queued requests' tokens.

>>> now = [0.0]
>>> s = Scheduler(max_batch_size=2, max_wait_ms=10.0, clock=lambda: now[0])
>>> a, b, c = s.submit(300), s.submit(100), s.submit(200)
>>> s.get_batch()          # full: the two smallest requests first
[1, 2]
>>> s.get_batch() is None  # one request left, it has not waited 10 ms yet
True
>>> now[0] = 0.010
>>> s.get_batch()
[0]
>>> s.complete_batch([0, 1, 2]); s.stats()["completed"]
3
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from numbers import Real

from llmdsdb.errors import (
    BudgetExceededError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    NotFoundError,
)
from llmdsdb.indexed_heap import IndexedHeap

__all__ = ["RELEASE_REASONS", "Scheduler"]

RELEASE_REASONS = ("full", "slo", "max_wait", "forced")

# Time comparisons allow one nanosecond of float rounding: at monotonic-clock magnitudes
# (1e3..1e6 s) "submitted at t, now is t + 0.010" can compute a wait of 0.00999999999.
_EPS_S = 1e-9


def _number(value: object, what: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidTypeError(f"{what} must be a number, not {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise NonFiniteError(f"{what} must be finite, got {value!r}")
    if v < minimum or (strict and v == minimum):
        op = ">" if strict else ">="
        raise InvalidArgumentError(f"{what} must be {op} {minimum:g}, got {value!r}")
    return v


def _count(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise InvalidArgumentError(f"{what} must be >= {minimum}, got {value}")
    return int(value)


def _request_id(value: object) -> None:
    """Refuse a bool request id (True == 1 as a dict key would act on request 1)."""
    if isinstance(value, bool):
        raise InvalidTypeError("request id must be an int, not bool")


def _percentile(sorted_samples: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_samples)))
    return sorted_samples[rank - 1]


class Scheduler:
    """Micro-batching queue on :class:`~llmdsdb.indexed_heap.IndexedHeap` s.

    :param max_batch_size: most requests per batch (int >= 1).
    :param max_wait_ms: release once the oldest request has waited this long (>= 0).
    :param priority_fn: ``priority_fn(tokens) -> number``, smaller is served first; default
        the token count (fewest tokens first).
    :param max_batch_tokens: optional token budget per batch (int >= 1); a request with more
        tokens is refused at submit.
    :param aging_ms: each ``aging_ms`` of waiting lowers the effective priority by one (> 0).
    :param slo_margin_ms: release an SLO request this long before its deadline (>= 0).
    :param starvation_ms: a request that has waited this long goes first (> 0; default
        ``20 * max_wait_ms``, at least 1 ms); this bounds the wait of ordinary requests even
        under a flood of SLO requests.
    :param latency_samples: how many recent latencies :meth:`stats` keeps for percentiles.
    :param clock: seconds as a float (``time.monotonic`` by default).
    :raises InvalidTypeError: when an argument has the wrong type.
    :raises InvalidArgumentError: when an argument is out of range.

    Not thread-safe: guard the scheduler with one lock when several threads share it.

    Memory: per queued request one dict entry and two heap entries (about 400 bytes); per
    in-flight request one dict entry; plus ``latency_samples`` floats.
    """

    __slots__ = (
        "_aging_s",
        "_arrival",
        "_batch_tokens",
        "_batches",
        "_clock",
        "_completed",
        "_flight",
        "_latencies",
        "_latency_sum",
        "_margin_s",
        "_max_batch",
        "_max_wait_s",
        "_next_id",
        "_prio",
        "_priority_fn",
        "_queued_tokens",
        "_reasons",
        "_released",
        "_reqs",
        "_slo",
        "_slo_completed",
        "_slo_met",
        "_starve_s",
        "_t0",
        "_wait_sum",
    )

    def __init__(
        self,
        max_batch_size: int = 32,
        max_wait_ms: float = 50.0,
        priority_fn: Callable[[int], float] | None = None,
        *,
        max_batch_tokens: int | None = None,
        aging_ms: float = 1.0,
        slo_margin_ms: float = 5.0,
        starvation_ms: float | None = None,
        latency_samples: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_batch = _count(max_batch_size, "max_batch_size", 1)
        max_wait = _number(max_wait_ms, "max_wait_ms")
        if priority_fn is not None and not callable(priority_fn):
            raise InvalidTypeError("priority_fn must be callable (tokens -> number) or None")
        self._batch_tokens = (
            None if max_batch_tokens is None else _count(max_batch_tokens, "max_batch_tokens", 1)
        )
        aging = _number(aging_ms, "aging_ms", strict=True)
        margin = _number(slo_margin_ms, "slo_margin_ms")
        starve = (
            max(1.0, 20.0 * max_wait)
            if starvation_ms is None
            else _number(starvation_ms, "starvation_ms", strict=True)
        )
        n_samples = _count(latency_samples, "latency_samples", 1)
        if not callable(clock):
            raise InvalidTypeError("clock must be a callable returning seconds")
        self._max_wait_s = max_wait / 1000.0
        self._aging_s = aging / 1000.0
        self._margin_s = margin / 1000.0
        self._starve_s = starve / 1000.0
        self._priority_fn = priority_fn
        self._clock = clock
        self._t0 = float(clock())
        # request id -> [tokens, submit time, deadline or None, slo_ms or None]
        self._reqs: dict[int, list] = {}
        self._arrival = IndexedHeap()  # queued id -> id (ids grow with submit order)
        self._slo = IndexedHeap()  # queued SLO id -> deadline
        self._prio = IndexedHeap()  # queued other id -> aged priority key
        self._flight: dict[int, list] = {}  # released, not completed: id -> record
        self._queued_tokens = 0
        self._next_id = 0
        self._batches = 0
        self._released = 0
        self._wait_sum = 0.0
        self._reasons = {r: 0 for r in RELEASE_REASONS}
        self._completed = 0
        self._slo_completed = 0
        self._slo_met = 0
        self._latency_sum = 0.0
        self._latencies: deque[float] = deque(maxlen=n_samples)

    # --- helpers ---------------------------------------------------------------------------

    def _priority(self, tokens: int) -> float:
        fn = self._priority_fn
        if fn is None:
            return float(tokens)
        p = fn(tokens)
        if isinstance(p, bool) or not isinstance(p, Real):
            raise InvalidTypeError(f"priority_fn returned {type(p).__name__}, not a number")
        p = float(p)
        if math.isnan(p) or math.isinf(p):
            raise NonFiniteError(f"priority_fn({tokens}) returned {p!r}")
        return p

    def _tokens(self, tokens: object) -> int:
        t = _count(tokens, "tokens", 0)
        if self._batch_tokens is not None and t > self._batch_tokens:
            raise BudgetExceededError(
                f"a request of {t} tokens can never fit max_batch_tokens="
                f"{self._batch_tokens}; split it or raise the budget"
            )
        return t

    def _prio_key(self, priority: float, arrival: float) -> float:
        return priority + (arrival - self._t0) / self._aging_s

    def _reason(self, now: float) -> str | None:
        """Why a batch would be released now (None: not due). The queue is not empty."""
        if len(self._arrival) >= self._max_batch or (
            self._batch_tokens is not None and self._queued_tokens >= self._batch_tokens
        ):
            return "full"
        if self._slo and now + _EPS_S >= self._slo.peek()[0] - self._margin_s:
            return "slo"
        oldest = self._reqs[self._arrival.peek()[1]][1]
        if now - oldest + _EPS_S >= self._max_wait_s:
            return "max_wait"
        return None

    def _remove_queued(self, rid: int) -> list:
        rec = self._reqs.pop(rid)
        self._arrival.delete(rid)
        if rec[2] is not None:
            self._slo.delete(rid)
        else:
            self._prio.delete(rid)
        self._queued_tokens -= rec[0]
        return rec

    # --- public API ------------------------------------------------------------------------

    def submit(self, tokens: int, slo_ms: float | None = None) -> int:
        """Queue a request of ``tokens`` tokens, optionally with a latency SLO.

        :param tokens: the request's token count (int >= 0).
        :param slo_ms: the latency objective in milliseconds (> 0): the deadline is the
            submit time plus ``slo_ms``.
        :returns: the request id (0, 1, 2, ... in submit order).
        :raises InvalidTypeError: when an argument has the wrong type.
        :raises InvalidArgumentError: when ``tokens`` is negative or ``slo_ms`` not positive.
        :raises BudgetExceededError: when ``tokens`` exceeds ``max_batch_tokens``.
        :raises NonFiniteError: when ``slo_ms`` or the priority is NaN or infinite.

        Complexity: O(log n) for n queued requests.
        """
        t = self._tokens(tokens)
        slo = None if slo_ms is None else _number(slo_ms, "slo_ms", strict=True)
        prio = None if slo is not None else self._priority(t)
        now = float(self._clock())
        rid = self._next_id
        self._next_id += 1
        deadline = None if slo is None else now + slo / 1000.0
        self._reqs[rid] = [t, now, deadline, slo]
        self._arrival.push(rid, rid)
        if deadline is not None:
            self._slo.push(rid, deadline)
        else:
            self._prio.push(rid, self._prio_key(prio, now))  # type: ignore[arg-type]
        self._queued_tokens += t
        return rid

    def get_batch(self, force: bool = False) -> list[int] | None:
        """Release the next batch when one is due (see the module docstring).

        :param force: release whatever is queued (up to the batch limits) even if not due.
        :returns: the request ids in service order, or None when nothing is due or the
            queue is empty. Released requests are in flight until :meth:`complete_batch`.

        Complexity: O(k log n) for a batch of k out of n queued requests.
        """
        if not self._arrival:
            return None
        now = float(self._clock())
        reason = self._reason(now)
        if reason is None:
            if not force:
                return None
            reason = "forced"
        budget = self._batch_tokens
        taken = 0
        batch: list[int] = []
        reqs = self._reqs
        limit = self._max_batch
        starve_before = now - self._starve_s + _EPS_S
        # Strict service order: starving (oldest first), then SLO (EDF), then priority.
        # The budget check stops the whole batch, it never skips ahead.
        for source in (self._arrival, self._slo, self._prio):
            blocked = False
            while len(batch) < limit and source:
                rid = source.peek()[1]
                rec = reqs[rid]
                if source is self._arrival and rec[1] > starve_before:
                    break  # no more starving requests: go on to the next source
                if budget is not None and taken + rec[0] > budget:
                    blocked = True
                    break
                self._remove_queued(rid)
                self._flight[rid] = rec
                self._wait_sum += now - rec[1]
                taken += rec[0]
                batch.append(rid)
            if blocked or len(batch) >= limit:
                break
        self._batches += 1
        self._released += len(batch)
        self._reasons[reason] += 1
        return batch

    def complete_batch(self, request_ids: Iterable[int]) -> None:
        """Mark released requests as done and record their latency (submit to now).

        :raises NotFoundError: when an id is not in flight (unknown, still queued, or
            already completed).
        :raises DuplicateIdError: when an id appears twice. Nothing changes on an error.

        Complexity: O(m) for m ids.
        """
        ids = list(request_ids)
        seen: set[int] = set()
        for rid in ids:
            _request_id(rid)
            try:
                in_flight = rid in self._flight
            except TypeError:
                raise InvalidTypeError(
                    f"request id must be an int, not {type(rid).__name__}"
                ) from None
            if not in_flight:
                where = "still queued" if rid in self._reqs else "not in flight"
                raise NotFoundError(f"request {rid!r} is {where}")
            if rid in seen:
                raise DuplicateIdError(f"request {rid} appears twice")
            seen.add(rid)
        now = float(self._clock())
        for rid in ids:
            _tokens, arrival, _deadline, slo = self._flight.pop(rid)
            latency = now - arrival
            self._completed += 1
            self._latency_sum += latency
            self._latencies.append(latency)
            if slo is not None:
                self._slo_completed += 1
                if latency * 1000.0 <= slo:
                    self._slo_met += 1

    def update_priority(self, request_id: int, new_tokens: int) -> None:
        """Change the token count of a queued request and re-key it (its aging credit is
        kept; an SLO request keeps its deadline).

        :raises NotFoundError: when the request is not queued.
        :raises InvalidTypeError: when the id is a bool or unhashable.
        :raises InvalidArgumentError: when ``new_tokens`` is negative
            (:class:`BudgetExceededError` when over ``max_batch_tokens``).

        Complexity: O(log n).
        """
        _request_id(request_id)
        try:
            rec = self._reqs.get(request_id)
        except TypeError:
            raise InvalidTypeError("request id must be an int") from None
        if rec is None:
            raise NotFoundError(f"request {request_id!r} is not queued")
        t = self._tokens(new_tokens)
        if rec[2] is None:
            key = self._prio_key(self._priority(t), rec[1])
            self._prio.update(request_id, key)
        self._queued_tokens += t - rec[0]
        rec[0] = t

    def cancel(self, request_id: int) -> None:
        """Remove a queued request without serving it.

        :raises NotFoundError: when the request is not queued.
        :raises InvalidTypeError: when the id is a bool or unhashable.

        Complexity: O(log n).
        """
        _request_id(request_id)
        try:
            queued = request_id in self._reqs
        except TypeError:
            raise InvalidTypeError("request id must be an int") from None
        if not queued:
            raise NotFoundError(f"request {request_id!r} is not queued")
        self._remove_queued(request_id)

    def next_release_in_s(self) -> float | None:
        """Seconds until :meth:`get_batch` would release a batch without ``force`` (0.0 when
        one is due now), or None when the queue is empty.

        Complexity: O(1).
        """
        if not self._arrival:
            return None
        now = float(self._clock())
        if self._reason(now) is not None:
            return 0.0
        due = self._reqs[self._arrival.peek()[1]][1] + self._max_wait_s
        if self._slo:
            due = min(due, self._slo.peek()[0] - self._margin_s)
        return max(0.0, due - now - _EPS_S)

    def __len__(self) -> int:
        """Queued requests. Complexity: O(1)."""
        return len(self._arrival)

    def __contains__(self, request_id: object) -> bool:
        """Whether ``request_id`` is queued. Complexity: O(1)."""
        try:
            return request_id in self._reqs
        except TypeError:
            return False

    def stats(self) -> dict[str, object]:
        """Queue and service statistics.

        Keys: ``queue_depth``, ``queued_tokens``, ``in_flight``, ``submitted``,
        ``batches`` (released), ``released_by_reason``, ``mean_batch_size``,
        ``mean_wait_ms`` (submit to release), ``completed``, ``slo_completed``,
        ``slo_met``, ``slo_attainment`` (share of completed SLO requests whose latency was
        within their SLO; None before the first), ``mean_latency_ms`` and
        ``latency_ms`` (p50/p90/p99/max, nearest rank, over the last ``latency_samples``
        completions; None before the first).

        Complexity: O(s log s) for the s kept latency samples.
        """
        lat = sorted(self._latencies)
        latency = (
            {
                "p50": _percentile(lat, 50) * 1e3,
                "p90": _percentile(lat, 90) * 1e3,
                "p99": _percentile(lat, 99) * 1e3,
                "max": lat[-1] * 1e3,
            }
            if lat
            else None
        )
        return {
            "queue_depth": len(self._arrival),
            "queued_tokens": self._queued_tokens,
            "in_flight": len(self._flight),
            "submitted": self._next_id,
            "batches": self._batches,
            "released_by_reason": dict(self._reasons),
            "mean_batch_size": self._released / self._batches if self._batches else 0.0,
            "mean_wait_ms": self._wait_sum / self._released * 1e3 if self._released else 0.0,
            "completed": self._completed,
            "slo_completed": self._slo_completed,
            "slo_met": self._slo_met,
            "slo_attainment": (
                self._slo_met / self._slo_completed if self._slo_completed else None
            ),
            "mean_latency_ms": (
                self._latency_sum / self._completed * 1e3 if self._completed else None
            ),
            "latency_ms": latency,
        }

    def _check(self) -> None:
        """Assert the invariant of the module docstring. Complexity: O(n)."""
        self._arrival._check()
        self._slo._check()
        self._prio._check()
        assert len(self._arrival) == len(self._reqs) == len(self._slo) + len(self._prio)
        assert not (self._reqs.keys() & self._flight.keys())
        total = 0
        for rid, (tokens, arrival, deadline, _slo) in self._reqs.items():
            total += tokens
            assert self._arrival.get_score(rid) == rid
            if deadline is not None:
                assert self._slo.get_score(rid) == deadline and rid not in self._prio
            else:
                key = self._prio_key(self._priority(tokens), arrival)
                assert self._prio.get_score(rid) == key and rid not in self._slo
        assert total == self._queued_tokens
        assert self._completed + len(self._flight) == self._released
        assert self._released + len(self._reqs) <= self._next_id
        assert sum(self._reasons.values()) == self._batches

    def __repr__(self) -> str:
        return (
            f"Scheduler(max_batch_size={self._max_batch}, "
            f"max_wait_ms={self._max_wait_s * 1e3:g}, queued={len(self)})"
        )
