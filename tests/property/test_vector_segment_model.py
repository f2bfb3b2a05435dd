"""VectorSegment (graph + fresh part) against brute force over a dict of live vectors: adds,
deletes, merges and a flush/reopen through a MemoryPageStore, with exact answers (the
collection stays below the graph's exact threshold)."""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from llmdsdb.hnsw import HNSW
from llmdsdb.pages import MemoryPageStore
from llmdsdb.vector_segment import FreshVectors, VectorSegment

DIM = 4
VEC = st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=DIM, max_size=DIM).filter(
    lambda v: sum(x * x for x in v) > 1e-2)


def _dist(metric: str, v: np.ndarray, q: np.ndarray) -> float:
    v64, q64 = v.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        return 1.0 - float(v64 @ q64 / np.linalg.norm(v64) / np.linalg.norm(q64))
    if metric == "ip":
        return -float(v64 @ q64)
    return float(((v64 - q64) ** 2).sum())


class SegmentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.metric = "l2"
        self.store = MemoryPageStore()
        self.seg = VectorSegment(HNSW(DIM, metric=self.metric, seed=1, store=self.store),
                                 fresh_max_vectors=5)
        self.model: dict[int, np.ndarray] = {}
        self.next = 0

    @rule(vecs=st.lists(VEC, min_size=1, max_size=4))
    def add(self, vecs) -> None:
        arr = np.array(vecs, np.float32)
        ids = np.arange(self.next, self.next + len(vecs))
        self.seg.add_many(arr, ids)
        self.model.update(zip(ids.tolist(), arr))
        self.next += len(vecs)

    @rule(pick=st.integers(0, 10**6))
    def delete(self, pick) -> None:
        if self.model:
            vid = sorted(self.model)[pick % len(self.model)]
            self.seg.delete(vid)
            del self.model[vid]

    @rule()
    def merge(self) -> None:
        self.seg.merge()

    @rule()
    def flush_and_reopen(self) -> None:
        self.seg.flush(self.store)
        self.seg = VectorSegment.open(self.store, fresh_max_vectors=5)

    @rule(q=VEC, k=st.integers(1, 8))
    def search(self, q, k) -> None:
        qv = np.array(q, np.float32)
        got = self.seg.search(qv, k)
        want = sorted((_dist(self.metric, v, qv), i) for i, v in self.model.items())[:k]
        assert len(got) == len(want)
        for (gi, gd), (wd, _wi) in zip(got, want):  # exact: the k nearest (ties aside)
            assert abs(gd - _dist(self.metric, self.model[gi], qv)) < 1e-4
            assert abs(gd - wd) < 1e-4
        assert self.seg.search_many(qv[None, :], k) == [got]

    @invariant()
    def consistent(self) -> None:
        assert len(self.seg) == len(self.model)
        assert all(i in self.seg for i in self.model)
        self.seg._check()


SegmentMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30,
                                            deadline=None)
TestSegmentMachine = SegmentMachine.TestCase


def test_fresh_rows_survive_a_flush_with_tombstones():
    store = MemoryPageStore()
    fresh = FreshVectors(DIM, "cosine")
    fresh.add(np.arange(3), np.eye(3, DIM, dtype=np.float32) + 0.1)
    fresh.delete(1)
    fresh.flush(store)
    back = FreshVectors.open(store, DIM, "cosine")
    assert sorted(back.pos) == [0, 2] and len(back) == 2
    back._check()
