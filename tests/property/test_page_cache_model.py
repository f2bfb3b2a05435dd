"""PageCache against reference models: with policy="lru" it is exactly an OrderedDict LRU
under a byte budget; with TinyLFU a hit returns what was last put, the budget is never
exceeded, and the counters add up."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from llmdsdb.errors import InvalidArgumentError, InvalidTypeError
from llmdsdb.pages import PageCache, sizeof_decoded

BUDGET = 1000
keys = st.integers(0, 30)
sizes = st.integers(0, 400)


class LruModelMachine(RuleBasedStateMachine):
    """policy="lru": the reference is an OrderedDict evicting from the front."""

    @initialize()
    def setup(self):
        self.cache = PageCache(BUDGET, policy="lru")
        self.model: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self.hits = self.misses = 0

    @rule(k=keys, n=sizes, tag=st.integers(0, 3))
    def put(self, k, n, tag):
        value = f"{k}:{tag}"
        assert self.cache.put(k, value, n) is True
        self.model[k] = (value, n)
        self.model.move_to_end(k)
        while sum(v[1] for v in self.model.values()) > BUDGET:
            self.model.popitem(last=False)

    @rule(k=keys)
    def get(self, k):
        got = self.cache.get(k)
        if k in self.model:
            self.model.move_to_end(k)
            assert got == self.model[k][0]
            self.hits += 1
        else:
            assert got is None
            self.misses += 1

    @rule(ks=st.lists(keys, max_size=4))
    def invalidate(self, ks):
        expected = len({k for k in ks if k in self.model})
        assert self.cache.invalidate(set(ks)) == expected
        for k in ks:
            self.model.pop(k, None)

    @rule()
    def clear(self):
        self.cache.clear()
        self.model.clear()

    @invariant()
    def same_as_model(self):
        assert self.cache.page_ids() == list(self.model)
        s = self.cache.stats()
        assert s.resident_bytes == sum(v[1] for v in self.model.values()) <= BUDGET
        assert (s.hits, s.misses, s.rejected) == (self.hits, self.misses, 0)
        self.cache._check()


class TinyLfuMachine(RuleBasedStateMachine):
    """policy="tinylfu": admission may refuse, but never returns a stale or foreign value."""

    @initialize(sample=st.sampled_from([None, 7]))
    def setup(self, sample):
        self.cache = PageCache(BUDGET, sample=sample)
        self.latest: dict[int, str] = {}  # what was last offered under each key
        self.gets = 0
        self.version = 0

    @rule(k=keys, n=sizes)
    def put(self, k, n):
        self.version += 1
        value = f"{k}:{self.version}"
        admitted = self.cache.put(k, value, n)
        if admitted:
            self.latest[k] = value
        else:
            assert self.cache.peek(k) is None  # a refused page is not resident...
            self.latest.pop(k, None)

    @rule(k=keys)
    def get(self, k):
        got = self.cache.get(k)
        self.gets += 1
        if got is not None:
            assert got == self.latest[k]

    @rule(ks=st.lists(keys, max_size=4))
    def invalidate(self, ks):
        self.cache.invalidate(ks)
        for k in ks:
            self.latest.pop(k, None)

    @rule(changed=st.one_of(st.none(), st.lists(keys, max_size=3)))
    def advance_epoch(self, changed):
        self.cache.advance_epoch(self.cache.epoch + 1, changed)
        if changed is None:
            self.latest.clear()
        for k in changed or ():
            self.latest.pop(k, None)

    @rule(k=keys)
    def stale_epoch_bypasses(self, k):
        before = self.cache.stats()
        assert self.cache.get(k, "miss", epoch=self.cache.epoch - 1) == "miss"
        assert self.cache.put(k, "stale", 1, epoch=self.cache.epoch - 1) is False
        after = self.cache.stats()
        assert after.bypassed == before.bypassed + 2 and after.hits == before.hits

    @invariant()
    def within_budget_and_counted(self):
        s = self.cache.stats()
        assert s.resident_bytes <= BUDGET
        assert s.hits + s.misses == self.gets
        for k in self.cache.page_ids():
            assert self.cache.peek(k) == self.latest[k]
        self.cache._check()


TestLruModel = LruModelMachine.TestCase
TestLruModel.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)
TestTinyLfu = TinyLfuMachine.TestCase
TestTinyLfu.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)


def test_tinylfu_keeps_hot_pages_through_a_scan():
    cache = PageCache(2000, sample=10_000)  # main segment: 1,980 bytes, 19 pages of 100
    for _ in range(5):
        for k in range(10):  # a hot working set
            if cache.get(k) is None:
                cache.put(k, k, 100)
    for k in range(1000, 1200):  # a one-off scan
        if cache.get(k) is None:
            cache.put(k, k, 100)
    assert all(k in cache for k in range(10))
    assert cache.stats().rejected >= 190
    lru = PageCache(2000, policy="lru")
    for k in list(range(10)) * 5 + list(range(1000, 1200)):
        if lru.get(k) is None:
            lru.put(k, k, 100)
    assert not any(k in lru for k in range(10))


def test_oversized_and_bad_arguments():
    cache = PageCache(100)
    assert cache.put(1, "big", 101) is False and cache.stats().rejected == 1
    with pytest.raises(InvalidArgumentError):
        cache.put(1, "x", -1)
    with pytest.raises(InvalidArgumentError):
        PageCache(0)
    with pytest.raises(InvalidTypeError):
        PageCache(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="tinylfu"):
        PageCache(100, policy="arc")  # type: ignore[arg-type]
    cache.reset_stats()
    assert cache.stats().rejected == 0 and "PageCache" in repr(cache)


def test_sizeof_decoded():
    import numpy as np

    arr = np.zeros(1000, dtype=np.float32)
    assert sizeof_decoded(arr) >= 4000
    assert sizeof_decoded((arr, arr)) >= 8000
    assert sizeof_decoded(b"x" * 10, raw_len=500) == 500
    assert sizeof_decoded({"a": arr}) >= 4000
