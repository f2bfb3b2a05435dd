"""Scheduler against a plain-list reference scheduler replayed on a fake clock.

Ties between equal keys are broken arbitrarily by the scheduler, so the model checks that
each released batch is *a* valid greedy choice: every request taken had the smallest
(class, key) among those still waiting, the budget stop was forced by a smallest candidate,
and the release decision (due or not) is the model's.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from llmdsdb.errors import NotFoundError
from llmdsdb.scheduler import Scheduler

EPS = 1e-9  # the scheduler's tolerance for float rounding of times
PRIORITY_FNS = {"default": None, "largest_first": lambda t: -t, "mod7": lambda t: t % 7}


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class RefScheduler:
    def __init__(self, size, wait_ms, fn, budget, aging_ms, margin_ms, starve_ms, t0) -> None:
        self.size, self.budget, self.fn = size, budget, fn
        self.wait_s, self.aging_s = wait_ms / 1000.0, aging_ms / 1000.0
        self.margin_s, self.starve_s, self.t0 = margin_ms / 1000.0, starve_ms / 1000.0, t0
        self.queue: dict[int, list] = {}  # id -> [tokens, arrival, deadline, slo]
        self.flight: dict[int, list] = {}
        self.next_id = 0
        self.batches = 0
        self.latencies: list[float] = []
        self.slo_completed = self.slo_met = 0

    def prio(self, tokens):
        return float(tokens) if self.fn is None else float(self.fn(tokens))

    def key(self, rid, now):
        tokens, arrival, deadline, _ = self.queue[rid]
        if arrival <= now - self.starve_s + EPS:
            return (0, rid)
        if deadline is not None:
            return (1, deadline)
        return (2, self.prio(tokens) + (arrival - self.t0) / self.aging_s)

    def due(self, now) -> bool:
        q = self.queue
        if len(q) >= self.size:
            return True
        if self.budget is not None and sum(r[0] for r in q.values()) >= self.budget:
            return True
        deadlines = [r[2] for r in q.values() if r[2] is not None]
        if deadlines and now + EPS >= min(deadlines) - self.margin_s:
            return True
        return now - q[min(q)][1] + EPS >= self.wait_s

    def check_batch(self, batch, now) -> None:
        taken = 0
        for rid in batch:
            assert rid in self.queue, rid
            best = min(self.key(r, now) for r in self.queue)
            assert self.key(rid, now) == best, (rid, self.key(rid, now), best)
            taken += self.queue[rid][0]
            self.flight[rid] = self.queue.pop(rid)
        assert 1 <= len(batch) <= self.size
        if self.budget is not None:
            assert taken <= self.budget
        if len(batch) < self.size and self.queue:
            # the scheduler stopped early: a smallest remaining request must not fit
            assert self.budget is not None
            best = min(self.key(r, now) for r in self.queue)
            assert any(
                self.key(r, now) == best and taken + self.queue[r][0] > self.budget
                for r in self.queue
            )
        self.batches += 1


class SchedulerMachine(RuleBasedStateMachine):
    @initialize(
        size=st.integers(1, 5),
        wait_ms=st.sampled_from([0.0, 5.0, 20.0]),
        fn=st.sampled_from(sorted(PRIORITY_FNS)),
        budget=st.one_of(st.none(), st.integers(10, 40)),
        aging_ms=st.sampled_from([0.5, 1.0, 10.0]),
        margin_ms=st.sampled_from([0.0, 2.0]),
        starve_ms=st.sampled_from([None, 30.0]),
    )
    def setup(self, size, wait_ms, fn, budget, aging_ms, margin_ms, starve_ms) -> None:
        self.clock = Clock()
        self.s = Scheduler(
            size, wait_ms, PRIORITY_FNS[fn], max_batch_tokens=budget, aging_ms=aging_ms,
            slo_margin_ms=margin_ms, starvation_ms=starve_ms, clock=self.clock,
        )
        starve = max(1.0, 20.0 * wait_ms) if starve_ms is None else starve_ms
        self.m = RefScheduler(
            size, wait_ms, PRIORITY_FNS[fn], budget, aging_ms, margin_ms, starve, self.clock.now
        )
        self.max_tokens = 10 if budget is None else budget

    @rule(ms=st.integers(0, 25))
    def advance(self, ms: int) -> None:
        self.clock.now += ms / 1000.0

    @rule(data=st.data(), slo=st.one_of(st.none(), st.sampled_from([1.0, 8.0, 30.0])))
    def submit(self, data, slo) -> None:
        tokens = data.draw(st.integers(0, self.max_tokens))
        rid = self.s.submit(tokens, slo)
        assert rid == self.m.next_id
        self.m.next_id += 1
        now = self.clock.now
        deadline = None if slo is None else now + slo / 1000.0
        self.m.queue[rid] = [tokens, now, deadline, slo]

    @rule(force=st.booleans())
    def get_batch(self, force: bool) -> None:
        now = self.clock.now
        expect = bool(self.m.queue) and (force or self.m.due(now))
        nxt = self.s.next_release_in_s()
        if not self.m.queue:
            assert nxt is None
        else:
            assert (nxt == 0.0) == self.m.due(now)
        batch = self.s.get_batch(force=force)
        assert (batch is not None) == expect
        if batch is not None:
            self.m.check_batch(batch, now)

    @precondition(lambda self: self.m.flight)
    @rule(data=st.data())
    def complete(self, data) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.m.flight)), min_size=1, unique=True))
        self.s.complete_batch(ids)
        for rid in ids:
            _tokens, arrival, _deadline, slo = self.m.flight.pop(rid)
            lat = self.clock.now - arrival
            self.m.latencies.append(lat)
            if slo is not None:
                self.m.slo_completed += 1
                self.m.slo_met += lat * 1000.0 <= slo

    @precondition(lambda self: self.m.queue)
    @rule(data=st.data())
    def update_priority(self, data) -> None:
        rid = data.draw(st.sampled_from(sorted(self.m.queue)))
        tokens = data.draw(st.integers(0, self.max_tokens))
        self.s.update_priority(rid, tokens)
        self.m.queue[rid][0] = tokens

    @precondition(lambda self: self.m.queue)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        rid = data.draw(st.sampled_from(sorted(self.m.queue)))
        self.s.cancel(rid)
        del self.m.queue[rid]

    @rule(rid=st.integers(-2, 40))
    def unknown_ids_raise_and_change_nothing(self, rid: int) -> None:
        before = self.s.stats()
        if rid not in self.m.queue:
            with pytest.raises(NotFoundError):
                self.s.update_priority(rid, 1)
            with pytest.raises(NotFoundError):
                self.s.cancel(rid)
        if rid not in self.m.flight:
            with pytest.raises(NotFoundError):
                self.s.complete_batch([rid])
        assert self.s.stats() == before

    @invariant()
    def matches_model(self) -> None:
        self.s._check()
        st_ = self.s.stats()
        m = self.m
        assert st_["queue_depth"] == len(m.queue) == len(self.s)
        assert st_["queued_tokens"] == sum(r[0] for r in m.queue.values())
        assert st_["in_flight"] == len(m.flight)
        assert st_["batches"] == m.batches
        assert st_["completed"] == len(m.latencies)
        assert st_["slo_completed"] == m.slo_completed and st_["slo_met"] == m.slo_met
        if m.latencies:
            lat = sorted(m.latencies)
            p99 = lat[max(1, math.ceil(0.99 * len(lat))) - 1]
            assert st_["latency_ms"]["p99"] == p99 * 1e3
            assert st_["latency_ms"]["max"] == lat[-1] * 1e3
        else:
            assert st_["latency_ms"] is None


TestSchedulerMachine = SchedulerMachine.TestCase
