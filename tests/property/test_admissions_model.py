"""AdmissionController against an event log replayed with exact arithmetic on a fake clock.

The clock moves in steps of 1/16 s and the rates are small integers, so the controller's
float arithmetic is exact and its decisions must match the model's exactly; retry-after
values (a division) are compared with a tolerance.
"""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from llmdsdb.admissions import AdmissionController


class Clock:
    def __init__(self) -> None:
        self.now = Fraction(1000)

    def __call__(self) -> float:
        return float(self.now)


class Model:
    """Replays the whole event log from scratch on every question."""

    def __init__(self, qps: int, tps: int, window: int) -> None:
        self.qps, self.tps, self.window = qps, tps, window
        self.log: list[tuple[Fraction, str, int, int]] = []  # (time, kind, a, b)
        self.start = Fraction(1000)

    def replay(self, now: Fraction):
        q, t = Fraction(self.qps * self.window), Fraction(self.tps * self.window)
        last = self.start
        outstanding: list[int] = []
        for when, kind, a, b in self.log:
            q = min(self.qps * self.window, q + (when - last) * self.qps)
            t = min(self.tps * self.window, t + (when - last) * self.tps)
            last = when
            if kind == "admit":
                q -= 1
                t -= a
                outstanding.append(a)
            elif kind == "record":
                est = outstanding.pop(0) if outstanding else 0
                if b >= 0:
                    est = b
                t = min(self.tps * self.window, t - (a - est))
        q = min(self.qps * self.window, q + (now - last) * self.qps)
        t = min(self.tps * self.window, t + (now - last) * self.tps)
        return q, t, outstanding

    def decide(self, now: Fraction, est: int) -> tuple[bool, str, float]:
        q, t, _ = self.replay(now)
        if q < 1:
            return False, "rate_limited_qps", float((1 - q) / self.qps)
        if est > self.tps * self.window:
            return False, "tokens_exceed_burst", math.inf
        if t < est:
            return False, "rate_limited_tokens", float((est - t) / self.tps)
        self.log.append((now, "admit", est, 0))
        return True, "admitted", 0.0

    def window_rates(self, now: Fraction) -> tuple[float, float]:
        slot = self.window / 10.0
        oldest = math.floor((float(now) - self.window) / slot) + 1
        reqs = toks = 0
        _, _, _ = self.replay(now)
        pending: list[tuple[int, Fraction]] = []  # (estimate, admission time)
        for when, kind, a, b in self.log:
            if kind == "admit":
                pending.append((a, when))
                d_req, d_tok, at = 1, a, when
            elif pending:  # the real count replaces the estimate where it was counted
                est, at = pending.pop(0)
                d_req, d_tok = 0, a - est
            else:  # nothing outstanding: counted when recorded
                d_req, d_tok, at = 0, a, when
            if math.floor(float(at) / slot) >= oldest:
                reqs += d_req
                toks += d_tok
        return reqs / self.window, toks / self.window


class AdmissionMachine(RuleBasedStateMachine):
    @initialize(
        qps=st.integers(1, 4), tps=st.integers(1, 50), window=st.integers(1, 4)
    )
    def setup(self, qps: int, tps: int, window: int) -> None:
        self.clock = Clock()
        self.ac = AdmissionController(qps, tps, window, clock=self.clock)
        self.model = Model(qps, tps, window)
        self.counts: dict[str, int] = {}

    @rule(sixteenths=st.integers(0, 40))
    def advance(self, sixteenths: int) -> None:
        self.clock.now += Fraction(sixteenths, 16)

    @rule(est=st.integers(0, 120))
    def decide(self, est: int) -> None:
        got = self.ac.decide(est)
        admitted, reason, retry = self.model.decide(self.clock.now, est)
        assert (got.admitted, got.reason) == (admitted, reason)
        assert got.retry_after_s == retry or math.isclose(got.retry_after_s, retry, rel_tol=1e-9)
        assert self.ac.last_retry_after_s == got.retry_after_s
        self.counts[reason] = self.counts.get(reason, 0) + 1

    @rule(tokens=st.integers(0, 150), explicit=st.one_of(st.none(), st.integers(0, 120)))
    def record(self, tokens: int, explicit: int | None) -> None:
        self.ac.record_request(tokens, estimated_tokens=explicit)
        given = -1 if explicit is None else explicit
        self.model.log.append((self.clock.now, "record", tokens, given))

    @invariant()
    def matches_model(self) -> None:
        s = self.ac.stats()
        q, t, outstanding = self.model.replay(self.clock.now)
        assert s["requests_available"] == float(q)
        assert s["tokens_available"] == float(t)
        assert s["outstanding_estimates"] == len(outstanding)
        assert s["admitted"] == self.counts.get("admitted", 0)
        for reason, n in s["rejected_by_reason"].items():
            assert n == self.counts.get(reason, 0)
        qps, tps = self.model.window_rates(self.clock.now)
        assert s["current_qps"] == qps and s["current_tokens_per_s"] == tps
        self.ac._check()


TestAdmissionMachine = AdmissionMachine.TestCase
