"""The metadata index against the reference semantics (``Filter.matches``) by brute force.

A stateful machine adds, removes and re-labels documents in a
:class:`~llmdsdb.metadata_index.MetadataIndex` over a memory page store (with tiny blocks,
so that lists spill to pages, split and shrink back inline), flushes and reopens it from the
store, and checks after each step that every filter evaluates to exactly the ids whose
metadata ``Filter.matches``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_filters import FIELDS, _filters

from llmdsdb import metadata_index as mi
from llmdsdb.filters import parse_filter
from llmdsdb.metadata_index import MetadataIndex, value_key
from llmdsdb.pages import MemoryPageStore

# few distinct values, so that stored values hit operands and bounds exactly; the edges of
# the number rules: 1 == 1.0, True != 1, -0.0 == 0, ints past float precision
EDGE_INTS = [2**53, 2**53 + 1, -(2**63), 2**63 - 1]
ints = st.one_of(st.integers(-2, 2), st.sampled_from(EDGE_INTS))
floats = st.sampled_from([0.5, 1.0, -0.0, 2.5, float(2**53), 1e300, -1e300, 9.3e18])
scalars = st.one_of(st.booleans(), ints, floats, st.sampled_from(["x", "1", ""]))
numbers = st.one_of(ints, floats)
meta_values = st.one_of(scalars, st.none(), st.lists(scalars, max_size=3),
                        st.just({"x": 1}), st.just([[1]]))
metadata = st.dictionaries(st.sampled_from(FIELDS), meta_values, max_size=3)


def filters() -> st.SearchStrategy[dict[str, Any]]:
    return _filters(scalars, numbers, max_leaves=5)


@pytest.fixture(autouse=True)
def _tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mi, "BLOCK_MAX", 4)
    monkeypatch.setattr(mi, "INLINE_MAX", 2)


class MetadataIndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        mi.BLOCK_MAX, mi.INLINE_MAX = 4, 2  # the machine runs outside the fixture's scope
        self.store = MemoryPageStore()
        self.ix = MetadataIndex(self.store)
        self.docs: dict[int, dict] = {}
        self.next = 0

    @rule(metas=st.lists(metadata, min_size=1, max_size=6))
    def add(self, metas: list[dict]) -> None:
        added = {}
        for m in metas:
            added[self.next] = m
            self.next += 1
        self.ix.update({}, added)
        self.docs.update(added)

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        if not self.docs:
            return
        gone = data.draw(st.lists(st.sampled_from(sorted(self.docs)), max_size=4, unique=True))
        self.ix.update({i: self.docs[i] for i in gone}, {})
        for i in gone:
            del self.docs[i]

    @rule(data=st.data(), m=metadata)
    def relabel(self, data: st.DataObject, m: dict) -> None:
        if not self.docs:
            return
        i = data.draw(st.sampled_from(sorted(self.docs)))
        self.ix.update({i: self.docs[i]}, {i: m})
        self.docs[i] = m

    @rule()
    def flush(self) -> None:
        self.ix.flush()

    @rule()
    def reopen(self) -> None:
        self.ix.flush()
        self.ix = MetadataIndex.open(self.store)
        assert self.ix.built

    @rule(spec=filters())
    def evaluate(self, spec: dict) -> None:
        f = parse_filter(spec)
        want = sorted(i for i, m in self.docs.items() if f.matches(m))
        got = self.ix.evaluate(f)
        assert got.tolist() == want, (spec, got.tolist(), want)

    @invariant()
    def consistent(self) -> None:
        assert self.ix.live_ids().tolist() == sorted(self.docs)
        self.ix._check()

    def teardown(self) -> None:
        mi.BLOCK_MAX, mi.INLINE_MAX = 4096, 32
        # every page the store holds belongs to the index once flushed
        self.ix.flush()
        held = set(MetadataIndex.open(self.store).page_ids())
        assert held == set(self.store._pages), (held, set(self.store._pages))


MetadataIndexMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25,
                                                  deadline=None)
TestMetadataIndex = MetadataIndexMachine.TestCase


@settings(max_examples=300, deadline=None)
@given(filters(), st.lists(metadata, min_size=0, max_size=12))
def test_evaluation_equals_brute_force(spec: dict, docs: list[dict]) -> None:
    ix = MetadataIndex(MemoryPageStore())
    ix.update({}, dict(enumerate(docs)))
    f = parse_filter(spec)
    assert ix.evaluate(f).tolist() == [i for i, m in enumerate(docs) if f.matches(m)]
    allow = ix.allow(f, len(docs))
    assert [i for i in range(len(docs)) if i in allow] == ix.evaluate(f).tolist()


def test_value_keys_follow_the_equality_rule() -> None:
    assert value_key(1) == value_key(1.0) == value_key(1.0 + 0.0)
    assert value_key(0) == value_key(-0.0)
    assert value_key(True) != value_key(1) and value_key("1") != value_key(1)
    assert value_key(2**53 + 1) != value_key(float(2**53 + 1))
    assert value_key(float(2**63)) != value_key(2**63 - 1)
    assert value_key(None) is None and value_key([1]) is None


def test_ranges_are_exact_past_float_precision() -> None:
    ix = MetadataIndex(MemoryPageStore())
    ix.update({}, {0: {"n": 2**53}, 1: {"n": 2**53 + 1}, 2: {"n": float(2**53)}})
    f = parse_filter({"n": {"$gt": 2**53}})
    assert ix.evaluate(f).tolist() == [1]
    f = parse_filter({"n": {"$lte": float(2**53)}})
    assert ix.evaluate(f).tolist() == [0, 2]


def test_large_lists_use_pages_and_shrink_inline() -> None:
    store = MemoryPageStore()
    ix = MetadataIndex(store)
    ix.update({}, {i: {"k": "v", "n": i % 10} for i in range(10_000)})
    ix.flush()
    assert len(store._pages) > 4
    again = MetadataIndex.open(store)
    assert len(again.evaluate(parse_filter({"k": "v"}))) == 10_000
    assert again.evaluate(parse_filter({"n": {"$gte": 9}})).tolist() == list(range(9, 10_000, 10))
    again.update({i: {"k": "v", "n": i % 10} for i in range(10, 10_000)}, {})
    again.flush()
    third = MetadataIndex.open(store)
    assert third.evaluate(parse_filter({"k": "v"})).tolist() == list(range(10))
    assert set(third.page_ids()) == set(store._pages)
    third._check()
    assert np.array_equal(third.live_ids(), np.arange(10))
