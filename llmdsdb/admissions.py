"""Admission control: two token buckets, one for requests per second, one for tokens per second.

A server asks :meth:`AdmissionController.should_admit` before it accepts a request. The
controller keeps two buckets that refill continuously from an injectable clock:

* the *request* bucket refills at ``qps_target`` per second and holds at most
  ``qps_target * window_size`` requests (the burst a quiet period earns);
* the *token* bucket refills at ``token_rate_limit`` per second and holds at most
  ``token_rate_limit * window_size`` tokens.

Admitting a request takes one request and ``estimated_tokens`` tokens out of the buckets. When
the real count is known, :meth:`AdmissionController.record_request` charges (or refunds) the
difference, so the token bucket may go below zero: that debt blocks further admissions until
it is repaid by the refill. Both buckets start full.

Decisions carry a machine-readable reason (the constants below) and a retry-after in seconds:
the time after which the same request would be admitted if nothing else happened.

========================= ====================================================================
reason                    meaning
========================= ====================================================================
``"admitted"``            admitted; the estimate was taken from the token bucket
``"rate_limited_qps"``    the request bucket holds less than one request
``"rate_limited_tokens"`` the token bucket holds less than ``estimated_tokens``
``"tokens_exceed_burst"`` ``estimated_tokens`` is larger than the token bucket's capacity: it
                          can never be admitted (retry-after is ``inf``); split the request
========================= ====================================================================

When both buckets are short, the request limit is reported (it is checked first).

Invariant (checked by :meth:`AdmissionController._check`): ``0 <= request level <= request
capacity``; ``token level <= token capacity`` (it may be negative: debt); the window slots
(one per tenth of ``window_size``, whose sums are the current rates) are in time order and
none is negative; and ``admitted + rejected == decisions``.

>>> from llmdsdb.admissions import AdmissionController
>>> now = [0.0]
>>> ac = AdmissionController(qps_target=2.0, token_rate_limit=100, window_size=1,
...                          clock=lambda: now[0])
>>> ac.should_admit(50), ac.should_admit(50), ac.should_admit(50)
((True, 'admitted'), (True, 'admitted'), (False, 'rate_limited_qps'))
>>> ac.last_retry_after_s
0.5
>>> now[0] = 0.5
>>> ac.decide(80)
Decision(admitted=False, reason='rate_limited_tokens', retry_after_s=0.3)
>>> ac.record_request(10)  # the first request used 10 tokens, not 50: 40 are refunded
>>> ac.decide(80).admitted
True
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from llmdsdb.errors import InvalidArgumentError, InvalidTypeError, NonFiniteError

__all__ = [
    "ADMITTED",
    "RATE_LIMITED_QPS",
    "RATE_LIMITED_TOKENS",
    "REASONS",
    "TOKENS_EXCEED_BURST",
    "AdmissionController",
    "Decision",
]

ADMITTED = "admitted"
RATE_LIMITED_QPS = "rate_limited_qps"
RATE_LIMITED_TOKENS = "rate_limited_tokens"
TOKENS_EXCEED_BURST = "tokens_exceed_burst"
REASONS = (ADMITTED, RATE_LIMITED_QPS, RATE_LIMITED_TOKENS, TOKENS_EXCEED_BURST)


class Decision(NamedTuple):
    """The outcome of one admission check."""

    admitted: bool
    reason: str
    """One of :data:`REASONS`."""
    retry_after_s: float
    """0.0 when admitted; else seconds until the same request would be admitted if nothing
    else happened (``inf`` for ``"tokens_exceed_burst"``)."""


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"{what} must be a number, not {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise NonFiniteError(f"{what} must be finite, got {value!r}")
    if v <= 0:
        raise InvalidArgumentError(f"{what} must be > 0, got {value!r}")
    return v


def _tokens(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float):
            raise InvalidTypeError(f"{what} must be an int, not float ({value!r})")
        raise InvalidTypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidArgumentError(f"{what} must be >= 0, got {value}")
    return int(value)


class AdmissionController:
    """Rate limiter for requests/s and tokens/s with bursts over ``window_size`` seconds.

    :param qps_target: sustained requests per second (> 0).
    :param token_rate_limit: sustained tokens per second (> 0).
    :param window_size: burst window in seconds (> 0): each bucket holds ``rate *
        window_size``; the current rates in :meth:`stats` are measured over the same window.
    :param clock: seconds as a float, non-decreasing (``time.monotonic`` by default); a clock
        that steps back is treated as not having moved.
    :raises InvalidTypeError: when an argument is not a number.
    :raises InvalidArgumentError: when an argument is not positive (``NonFiniteError`` for
        NaN or infinity).

    Not thread-safe: guard the controller with one lock when several threads share it.

    Memory: O(1) for the buckets plus 11 counters (one per tenth of the window)
    for the current rates, plus two ints per admitted request whose tokens are not recorded
    yet.
    """

    __slots__ = (
        "_admitted",
        "_clock",
        "_decisions",
        "_last",
        "_outstanding",
        "_q_cap",
        "_q_level",
        "_q_rate",
        "_rejected",
        "_slot",
        "_t_cap",
        "_t_level",
        "_t_rate",
        "_tokens_estimated",
        "_tokens_recorded",
        "_win",
        "_window",
        "last_decision",
    )

    def __init__(
        self,
        qps_target: float = 10.0,
        token_rate_limit: int = 10000,
        window_size: int = 10,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        q = _positive(qps_target, "qps_target")
        t = _positive(token_rate_limit, "token_rate_limit")
        w = _positive(window_size, "window_size")
        if not callable(clock):
            raise InvalidTypeError("clock must be a callable returning seconds")
        self._q_rate = q
        self._t_rate = t
        self._window = w
        self._q_cap = q * w
        self._t_cap = t * w
        self._q_level = self._q_cap
        self._t_level = self._t_cap
        self._clock = clock
        self._last = float(clock())
        self._admitted = 0
        self._decisions = 0
        self._rejected = {r: 0 for r in REASONS if r != ADMITTED}
        self._tokens_estimated = 0
        self._tokens_recorded = 0
        # estimates not yet settled: (estimate, window slot of the admission)
        self._outstanding: deque[tuple[int, int]] = deque()
        # counters per slot of window/10 seconds over the last window: [slot, requests, tokens]
        self._slot = w / 10.0
        self._win: deque[list[int]] = deque()
        self.last_decision = Decision(True, ADMITTED, 0.0)

    # --- properties --------------------------------------------------------------------------

    @property
    def qps_target(self) -> float:
        """Sustained requests per second."""
        return self._q_rate

    @property
    def token_rate_limit(self) -> float:
        """Sustained tokens per second."""
        return self._t_rate

    @property
    def window_size(self) -> float:
        """Burst window in seconds."""
        return self._window

    @property
    def last_retry_after_s(self) -> float:
        """Retry-after of the last decision (0.0 when it admitted)."""
        return self.last_decision.retry_after_s

    # --- internals -----------------------------------------------------------------------------

    def _refill(self) -> float:
        now = float(self._clock())
        dt = now - self._last
        if dt > 0:
            self._q_level = min(self._q_cap, self._q_level + dt * self._q_rate)
            self._t_level = min(self._t_cap, self._t_level + dt * self._t_rate)
            self._last = now
        return self._last

    def _window_add(self, now: float, requests: int, tokens: int) -> int:
        """Count in the slot of ``now``; returns that slot."""
        sec = math.floor(now / self._slot)
        win = self._win
        if win and win[-1][0] == sec:
            win[-1][1] += requests
            win[-1][2] += tokens
        else:
            win.append([sec, requests, tokens])
        self._window_prune(now)
        return sec

    def _window_correct(self, sec: int, tokens: int) -> None:
        """Add a correction to the (still kept) slot ``sec`` of the admission it settles; a
        slot already out of the window is not counted any more, nor is its correction."""
        for entry in reversed(self._win):
            if entry[0] == sec:
                entry[2] += tokens
                return
            if entry[0] < sec:
                return

    def _window_prune(self, now: float) -> None:
        # keep the slots that overlap (now - window, now]
        oldest = math.floor((now - self._window) / self._slot) + 1
        win = self._win
        while win and win[0][0] < oldest:
            win.popleft()

    # --- public API ----------------------------------------------------------------------------

    def decide(self, estimated_tokens: int = 0) -> Decision:
        """Decide whether to admit a request that will use about ``estimated_tokens`` tokens;
        when it is admitted, take one request and the estimate out of the buckets.

        :param estimated_tokens: the expected token count (int >= 0).
        :returns: a :class:`Decision`; also kept as :attr:`last_decision`.
        :raises InvalidTypeError: when ``estimated_tokens`` is not an int.
        :raises InvalidArgumentError: when it is negative. Nothing changes then.

        Complexity: O(1) amortised.
        """
        est = _tokens(estimated_tokens, "estimated_tokens")
        now = self._refill()
        self._decisions += 1
        if self._q_level < 1.0:
            d = Decision(False, RATE_LIMITED_QPS, (1.0 - self._q_level) / self._q_rate)
        elif est > self._t_cap:
            d = Decision(False, TOKENS_EXCEED_BURST, math.inf)
        elif self._t_level < est:
            d = Decision(False, RATE_LIMITED_TOKENS, (est - self._t_level) / self._t_rate)
        else:
            self._q_level -= 1.0
            self._t_level -= est
            self._admitted += 1
            self._tokens_estimated += est
            self._outstanding.append((est, self._window_add(now, 1, est)))
            d = Decision(True, ADMITTED, 0.0)
        if not d.admitted:
            self._rejected[d.reason] += 1
        self.last_decision = d
        return d

    def should_admit(self, estimated_tokens: int = 0) -> tuple[bool, str]:
        """``(admitted, reason)`` of :meth:`decide`; the retry-after of that decision is
        :attr:`last_retry_after_s`.

        Equivalent to: ``d = self.decide(estimated_tokens); return d.admitted, d.reason``.

        Complexity: O(1) amortised.

        >>> ac = AdmissionController(qps_target=1, token_rate_limit=10, window_size=1,
        ...                          clock=lambda: 0.0)
        >>> ac.should_admit(11)
        (False, 'tokens_exceed_burst')
        """
        d = self.decide(estimated_tokens)
        return d.admitted, d.reason

    def record_request(self, tokens: int, *, estimated_tokens: int | None = None) -> None:
        """Record the tokens an admitted request really used and settle its estimate: the
        difference ``tokens - estimate`` is taken from the token bucket (a refund when
        negative; the bucket never grows above its capacity).

        Estimates are matched first-in first-out: without ``estimated_tokens`` the oldest
        admitted request not yet recorded is settled; with it, that value is the estimate
        being settled (and the oldest outstanding one is dropped if there is one). With no
        outstanding estimate, the whole ``tokens`` are charged (a request admitted
        elsewhere).

        :param tokens: the real token count (int >= 0).
        :param estimated_tokens: the estimate this request was admitted with (int >= 0).
        :raises InvalidTypeError: when a count is not an int.
        :raises InvalidArgumentError: when a count is negative. Nothing changes then.

        Complexity: O(1) amortised.
        """
        actual = _tokens(tokens, "tokens")
        given = None if estimated_tokens is None else _tokens(estimated_tokens, "estimated_tokens")
        now = self._refill()
        settled = self._outstanding.popleft() if self._outstanding else None
        if given is not None:
            est = given
        else:
            est = 0 if settled is None else settled[0]
        self._t_level = min(self._t_cap, self._t_level - (actual - est))
        self._tokens_recorded += actual
        self._window_prune(now)
        if settled is None:  # admitted elsewhere: its tokens count now
            self._window_add(now, 0, actual)
        else:  # the real count replaces the estimate in the admission's slot, if still kept
            self._window_correct(settled[1], actual - settled[0])

    def stats(self) -> dict[str, object]:
        """Counters and current state.

        Keys: ``admitted``, ``rejected`` (total), ``rejected_by_reason`` (reason -> count),
        ``decisions``, ``current_qps`` and ``current_tokens_per_s`` (requests admitted and
        their tokens -- the estimate until :meth:`record_request` gives the real count, which
        then replaces it where it was counted; a request recorded without an outstanding
        admission counts when recorded -- over the last
        ``window_size`` seconds, divided by ``window_size``), ``requests_available`` and
        ``tokens_available`` (bucket levels now), ``outstanding_estimates``,
        ``tokens_estimated``, ``tokens_recorded``, and the configuration ``qps_target``,
        ``token_rate_limit``, ``window_size``.

        Complexity: O(1) amortised.
        """
        now = self._refill()
        self._window_prune(now)
        rejected = dict(self._rejected)
        return {
            "admitted": self._admitted,
            "rejected": sum(rejected.values()),
            "rejected_by_reason": rejected,
            "decisions": self._decisions,
            "current_qps": sum(r for _, r, _ in self._win) / self._window,
            "current_tokens_per_s": sum(t for _, _, t in self._win) / self._window,
            "requests_available": self._q_level,
            "tokens_available": self._t_level,
            "outstanding_estimates": len(self._outstanding),
            "tokens_estimated": self._tokens_estimated,
            "tokens_recorded": self._tokens_recorded,
            "qps_target": self._q_rate,
            "token_rate_limit": self._t_rate,
            "window_size": self._window,
        }

    def _check(self) -> None:
        """Assert the invariants of the module docstring."""
        assert 0.0 <= self._q_level <= self._q_cap, (self._q_level, self._q_cap)
        assert self._t_level <= self._t_cap, (self._t_level, self._t_cap)
        assert not math.isnan(self._t_level)
        assert all(r >= 0 and t >= 0 for _, r, t in self._win)  # counts of real requests
        assert self._admitted + sum(self._rejected.values()) == self._decisions
        assert len(self._outstanding) <= self._admitted
        secs = [s for s, _, _ in self._win]
        assert secs == sorted(set(secs))

    def __repr__(self) -> str:
        return (
            f"AdmissionController(qps_target={self._q_rate:g}, "
            f"token_rate_limit={self._t_rate:g}, window_size={self._window:g})"
        )
