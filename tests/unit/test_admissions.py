"""Examples and bad input for llmdsdb.admissions.AdmissionController."""

from __future__ import annotations

import math

import pytest

from llmdsdb.admissions import REASONS, AdmissionController, Decision
from llmdsdb.errors import InvalidArgumentError, InvalidTypeError, LlmdsdbError, NonFiniteError


def make(clock, **kw) -> AdmissionController:
    kw.setdefault("qps_target", 2.0)
    kw.setdefault("token_rate_limit", 100)
    kw.setdefault("window_size", 1)
    return AdmissionController(clock=clock, **kw)


def test_burst_then_qps_limit_and_retry_after(clock) -> None:
    ac = make(clock, qps_target=5, window_size=2)  # bucket of 10 requests
    assert all(ac.should_admit() == (True, "admitted") for _ in range(10))
    assert ac.should_admit() == (False, "rate_limited_qps")
    assert ac.last_retry_after_s == pytest.approx(0.2)
    clock.advance(0.2)
    assert ac.should_admit() == (True, "admitted")
    assert ac.last_retry_after_s == 0.0
    ac._check()


def test_token_limit_retry_after_and_refill_cap(clock) -> None:
    ac = make(clock, qps_target=100, token_rate_limit=100, window_size=1)
    assert ac.decide(100).admitted
    d = ac.decide(30)
    assert d == Decision(False, "rate_limited_tokens", pytest.approx(0.3))
    clock.advance(100.0)  # the bucket never holds more than its capacity
    assert ac.stats()["tokens_available"] == 100
    assert ac.decide(100).admitted
    assert not ac.decide(1).admitted
    ac._check()


def test_estimate_larger_than_burst_is_never_admitted(clock) -> None:
    ac = make(clock, token_rate_limit=10, window_size=3)  # capacity 30
    d = ac.decide(31)
    assert d.reason == "tokens_exceed_burst" and math.isinf(d.retry_after_s)
    assert ac.decide(30).admitted
    assert ac.stats()["rejected_by_reason"]["tokens_exceed_burst"] == 1


def test_record_request_reconciles_fifo_and_debt_blocks(clock) -> None:
    ac = make(clock, qps_target=100, token_rate_limit=100, window_size=1)
    assert ac.decide(10).admitted and ac.decide(20).admitted  # 70 left
    ac.record_request(60)  # settles the first estimate (10): 50 more charged -> 20 left
    assert ac.stats()["tokens_available"] == 20
    assert ac.stats()["outstanding_estimates"] == 1
    ac.record_request(200)  # settles 20: 180 more -> -160 (debt)
    assert ac.stats()["tokens_available"] == -160
    d = ac.decide(0)
    assert d.reason == "rate_limited_tokens" and d.retry_after_s == pytest.approx(1.6)
    clock.advance(1.6)
    assert ac.decide(0).admitted
    ac._check()


def test_record_request_refund_and_explicit_estimate(clock) -> None:
    ac = make(clock, qps_target=100, token_rate_limit=100, window_size=1)
    assert ac.decide(80).admitted
    ac.record_request(0, estimated_tokens=80)
    assert ac.stats()["tokens_available"] == 100  # refunded, never above capacity
    ac.record_request(5)  # no outstanding estimate: charged in full
    s = ac.stats()
    assert s["tokens_available"] == 95 and s["tokens_recorded"] == 5
    assert s["tokens_estimated"] == 80


def test_stats_current_rates_over_window(clock) -> None:
    ac = make(clock, qps_target=100, token_rate_limit=1000, window_size=2)
    for _ in range(4):
        assert ac.decide(10).admitted
    s = ac.stats()
    assert s["admitted"] == 4 and s["rejected"] == 0
    assert s["current_qps"] == 2.0 and s["current_tokens_per_s"] == 20.0
    assert set(s["rejected_by_reason"]) == set(REASONS) - {"admitted"}
    clock.advance(5.0)
    s = ac.stats()
    assert s["current_qps"] == 0.0 and s["current_tokens_per_s"] == 0.0
    assert s["admitted"] == 4 and s["decisions"] == 4


def test_clock_stepping_back_is_ignored(clock) -> None:
    ac = make(clock, qps_target=1, window_size=1)
    assert ac.decide().admitted
    clock.now -= 10.0
    assert not ac.decide().admitted
    ac._check()


def test_default_constructor_uses_monotonic_clock() -> None:
    ac = AdmissionController()
    assert ac.should_admit(100) == (True, "admitted")
    assert (ac.qps_target, ac.token_rate_limit, ac.window_size) == (10.0, 10000, 10)
    assert "AdmissionController(" in repr(ac)


@pytest.mark.parametrize(
    "kw, err",
    [
        ({"qps_target": 0}, InvalidArgumentError),
        ({"qps_target": -1.0}, InvalidArgumentError),
        ({"qps_target": math.nan}, NonFiniteError),
        ({"qps_target": math.inf}, NonFiniteError),
        ({"qps_target": "10"}, InvalidTypeError),
        ({"qps_target": True}, InvalidTypeError),
        ({"token_rate_limit": 0}, InvalidArgumentError),
        ({"token_rate_limit": None}, InvalidTypeError),
        ({"window_size": 0}, InvalidArgumentError),
        ({"window_size": -3}, InvalidArgumentError),
        ({"window_size": math.nan}, NonFiniteError),
        ({"clock": 5}, InvalidTypeError),
    ],
)
def test_bad_constructor_arguments(kw, err) -> None:
    with pytest.raises(err) as exc:
        AdmissionController(**kw)
    assert isinstance(exc.value, LlmdsdbError)


@pytest.mark.parametrize("bad", [-1, 1.5, math.nan, "3", None, True, [1]])
def test_bad_token_counts_leave_state_unchanged(clock, bad) -> None:
    ac = make(clock)
    assert ac.decide(10).admitted
    before = ac.stats()
    with pytest.raises((InvalidArgumentError, InvalidTypeError)):
        ac.should_admit(bad)
    with pytest.raises((InvalidArgumentError, InvalidTypeError)):
        ac.record_request(bad)
    if bad is not None:  # None means "no estimate given"
        with pytest.raises((InvalidArgumentError, InvalidTypeError)):
            ac.record_request(5, estimated_tokens=bad)
    assert ac.stats() == before
    ac._check()


def test_window_rate_counts_the_real_tokens_and_is_never_negative(clock) -> None:
    # A refund used to be counted at record time, so settling an estimate whose admission
    # had left the window made current_tokens_per_s negative (-90 here).
    ac = make(clock, qps_target=100, token_rate_limit=1000, window_size=1)
    assert ac.decide(100).admitted
    clock.advance(5.0)
    ac.record_request(10)
    assert ac.stats()["current_tokens_per_s"] == 0.0
    assert ac.decide(100).admitted
    ac.record_request(30)  # replaces the estimate of the admission still in the window
    assert ac.stats()["current_tokens_per_s"] == 30.0
    ac.record_request(7)  # nothing outstanding: counted when recorded
    assert ac.stats()["current_tokens_per_s"] == 37.0
    ac._check()
