"""Examples and bad input for llmdsdb.scheduler.Scheduler."""

from __future__ import annotations

import math

import pytest

from llmdsdb.errors import (
    BudgetExceededError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    LlmdsdbError,
    NonFiniteError,
    NotFoundError,
)
from llmdsdb.scheduler import Scheduler


def make(clock, **kw) -> Scheduler:
    kw.setdefault("max_batch_size", 4)
    kw.setdefault("max_wait_ms", 10.0)
    return Scheduler(clock=clock, **kw)


def test_full_batch_fewest_tokens_first(clock) -> None:
    s = make(clock)
    ids = [s.submit(t) for t in (50, 10, 40, 20, 30)]
    assert ids == [0, 1, 2, 3, 4]
    assert s.get_batch() == [1, 3, 4, 2]
    assert s.stats()["released_by_reason"]["full"] == 1
    assert s.get_batch() is None and len(s) == 1 and 0 in s
    s._check()


def test_max_wait_releases_partial_batch(clock) -> None:
    s = make(clock)
    s.submit(50)
    clock.advance(0.004)
    s.submit(1)
    assert s.get_batch() is None
    assert s.next_release_in_s() == pytest.approx(0.006)
    clock.advance(0.006)
    assert s.next_release_in_s() == 0.0
    assert s.get_batch() == [1, 0]
    assert s.stats()["released_by_reason"]["max_wait"] == 1
    assert s.next_release_in_s() is None and s.get_batch() is None


def test_force_releases_and_empty_queue_returns_none(clock) -> None:
    s = make(clock)
    assert s.get_batch(force=True) is None
    s.submit(3)
    assert s.get_batch() is None
    assert s.get_batch(force=True) == [0]
    assert s.stats()["released_by_reason"]["forced"] == 1


def test_slo_requests_go_first_and_are_released_before_deadline(clock) -> None:
    s = make(clock, max_wait_ms=100.0, slo_margin_ms=2.0)
    a = s.submit(1)
    b = s.submit(500, slo_ms=20.0)
    c = s.submit(500, slo_ms=10.0)
    clock.advance(0.007)
    assert s.get_batch() is None
    assert s.next_release_in_s() == pytest.approx(0.001)
    clock.advance(0.001)  # 8 ms: c's deadline (10 ms) minus the 2 ms margin
    assert s.get_batch() == [c, b, a]
    assert s.stats()["released_by_reason"]["slo"] == 1
    clock.advance(0.001)
    s.complete_batch([a, b, c])
    st = s.stats()
    assert st["slo_completed"] == 2 and st["slo_met"] == 2 and st["slo_attainment"] == 1.0
    assert st["latency_ms"]["max"] == pytest.approx(9.0)


def test_slo_attainment_counts_misses(clock) -> None:
    s = make(clock)
    r = s.submit(1, slo_ms=5.0)
    clock.advance(0.003)
    assert s.get_batch() == [r]
    clock.advance(0.010)
    s.complete_batch([r])
    assert s.stats()["slo_attainment"] == 0.0


def test_token_budget_caps_batch_and_never_skips(clock) -> None:
    s = make(clock, max_batch_size=10, max_batch_tokens=100)
    ids = [s.submit(t) for t in (30, 30, 60, 10)]
    assert s.stats()["queued_tokens"] == 130
    # fewest tokens first: 10, 30, 30 = 70; 60 does not fit and is not skipped over
    assert s.get_batch() == [ids[3], ids[0], ids[1]]
    clock.advance(0.010)
    assert s.get_batch() == [ids[2]]
    with pytest.raises(BudgetExceededError):
        s.submit(101)
    assert s.stats()["submitted"] == 4


def test_aging_lets_a_large_request_overtake(clock) -> None:
    s = make(clock, max_batch_size=1, aging_ms=1.0, starvation_ms=10_000.0)
    big = s.submit(100)
    clock.advance(0.050)  # big has aged 50 units: key 100 vs 50 + 60 for a newcomer
    small = s.submit(60)
    assert s.get_batch() == [big]
    assert s.get_batch(force=True) == [small]


def test_starving_request_beats_slo_flood(clock) -> None:
    s = make(clock, max_batch_size=2, max_wait_ms=1.0, starvation_ms=30.0)
    old = s.submit(1000)
    for _ in range(2):
        clock.advance(0.010)
        s.submit(1, slo_ms=5.0)
        s.submit(1, slo_ms=5.0)
        batch = s.get_batch()
        assert batch is not None and old not in batch
    clock.advance(0.010)  # old has now waited 30 ms
    s.submit(1, slo_ms=5.0)
    assert s.get_batch()[0] == old


def test_custom_priority_fn_and_update_priority(clock) -> None:
    s = make(clock, max_batch_size=2, priority_fn=lambda t: -t)  # largest first
    a, b, c = s.submit(5), s.submit(50), s.submit(20)
    s.update_priority(a, 500)
    assert s.stats()["queued_tokens"] == 570
    assert s.get_batch() == [a, b]
    s.update_priority(c, 1)  # re-key downwards works too
    assert s.stats()["queued_tokens"] == 1
    s._check()


def test_cancel(clock) -> None:
    s = make(clock)
    s.submit(1)
    b = s.submit(2, slo_ms=50)
    s.cancel(b)
    assert b not in s and len(s) == 1
    with pytest.raises(NotFoundError):
        s.cancel(b)
    s._check()


def test_complete_batch_errors_leave_state_unchanged(clock) -> None:
    s = make(clock)
    a, b, c = s.submit(1), s.submit(2), s.submit(3)
    clock.advance(0.010)
    batch = s.get_batch()
    assert sorted(batch) == [a, b, c]
    before = s.stats()
    with pytest.raises(DuplicateIdError):
        s.complete_batch([a, a])
    with pytest.raises(NotFoundError):
        s.complete_batch([a, 99])
    with pytest.raises(InvalidTypeError):
        s.complete_batch([[1]])
    with pytest.raises(InvalidTypeError):  # True == 1: used to complete request 1
        s.complete_batch([True])
    assert s.stats() == before
    s.complete_batch([a, b])
    with pytest.raises(NotFoundError):
        s.complete_batch([a])
    s.complete_batch([c])
    st = s.stats()
    assert st["completed"] == 3 and st["in_flight"] == 0 and st["slo_attainment"] is None
    assert st["mean_batch_size"] == 3.0 and st["mean_wait_ms"] == pytest.approx(10.0)


def test_complete_queued_request_is_not_found(clock) -> None:
    s = make(clock)
    r = s.submit(1)
    with pytest.raises(NotFoundError, match="still queued"):
        s.complete_batch([r])


@pytest.mark.parametrize(
    "kw, err",
    [
        ({"max_batch_size": 0}, InvalidArgumentError),
        ({"max_batch_size": 2.5}, InvalidTypeError),
        ({"max_wait_ms": -1.0}, InvalidArgumentError),
        ({"max_wait_ms": math.nan}, NonFiniteError),
        ({"priority_fn": 3}, InvalidTypeError),
        ({"max_batch_tokens": 0}, InvalidArgumentError),
        ({"aging_ms": 0.0}, InvalidArgumentError),
        ({"slo_margin_ms": -1.0}, InvalidArgumentError),
        ({"starvation_ms": 0}, InvalidArgumentError),
        ({"latency_samples": 0}, InvalidArgumentError),
        ({"clock": "now"}, InvalidTypeError),
    ],
)
def test_bad_constructor_arguments(kw, err) -> None:
    with pytest.raises(err) as exc:
        Scheduler(**kw)
    assert isinstance(exc.value, LlmdsdbError)


@pytest.mark.parametrize(
    "args, err",
    [
        ((-1,), InvalidArgumentError),
        ((1.5,), InvalidTypeError),
        (("3",), InvalidTypeError),
        ((True,), InvalidTypeError),
        ((3, 0.0), InvalidArgumentError),
        ((3, -5.0), InvalidArgumentError),
        ((3, math.nan), NonFiniteError),
        ((3, "10"), InvalidTypeError),
    ],
)
def test_bad_submit_leaves_state_unchanged(clock, args, err) -> None:
    s = make(clock)
    s.submit(7)
    before = s.stats()
    with pytest.raises(err):
        s.submit(*args)
    assert s.stats() == before
    assert s.submit(1) == 1  # no id was consumed
    s._check()


def test_bad_priority_fn_result_leaves_state_unchanged(clock) -> None:
    s = make(clock, priority_fn=lambda t: math.nan if t == 13 else t)
    r = s.submit(1)
    with pytest.raises(NonFiniteError):
        s.submit(13)
    with pytest.raises(NonFiniteError):
        s.update_priority(r, 13)
    assert s.stats()["queued_tokens"] == 1
    s._check()


def test_bad_update_priority(clock) -> None:
    s = make(clock, max_batch_tokens=10)
    r = s.submit(1)
    for bad, err in ((-1, InvalidArgumentError), (2.0, InvalidTypeError),
                     (11, BudgetExceededError)):
        with pytest.raises(err):
            s.update_priority(r, bad)
    with pytest.raises(NotFoundError):
        s.update_priority(42, 1)
    with pytest.raises(InvalidTypeError):
        s.update_priority([1], 1)
    r1 = s.submit(2)
    assert r1 == 1
    with pytest.raises(InvalidTypeError):  # True == 1: used to re-key / cancel request 1
        s.update_priority(True, 5)
    with pytest.raises(InvalidTypeError):
        s.cancel(True)
    s.cancel(r1)
    assert s.stats()["queued_tokens"] == 1
    s._check()


def test_latency_percentiles_and_default_clock() -> None:
    s = Scheduler()
    ids = [s.submit(i) for i in range(40)]
    batch = s.get_batch()
    assert batch is not None and len(batch) == 32
    s.complete_batch(batch)
    lat = s.stats()["latency_ms"]
    assert 0.0 <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert len(ids) == 40 and "Scheduler(" in repr(s)
