"""Property tests of llmdsdb.hnsw.HNSW against a brute-force model (a dict of vectors)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from llmdsdb.errors import LlmdsdbError
from llmdsdb.hnsw import HNSW
from llmdsdb.pages import MemoryPageStore

DIM = 6


def brute_dist(vecs: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    V = vecs.astype(np.float64)
    q = q.astype(np.float64)
    if metric == "cosine":
        return 1 - (V / np.linalg.norm(V, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    if metric == "ip":
        return -(V @ q)
    return ((V - q) ** 2).sum(axis=1)


def clustered(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    c = rng.normal(size=(max(2, n // 40), dim))
    return (c[rng.integers(0, len(c), n)] + 0.35 * rng.normal(size=(n, dim))).astype(np.float32)


def state_of(h: HNSW) -> tuple:
    n = h._n
    return (len(h), n, h._entry, h._adj0[:n].tobytes(), h._vecs[:n].tobytes(), dict(h._id_map),
            tuple(a[: h._lcount[i]].tobytes() for i, a in enumerate(h._ladj)))


finite = st.floats(-10, 10, allow_nan=False, width=32).filter(lambda x: abs(x) > 1e-3 or x == 0)
vectors = st.lists(finite, min_size=DIM, max_size=DIM).map(lambda v: np.array(v, np.float32)).filter(
    lambda v: float(np.linalg.norm(v)) > 1e-2
)


class HNSWMachine(RuleBasedStateMachine):
    """Random adds, batches, deletes, searches, bad input, flush/reopen and compaction."""

    ids = Bundle("ids")

    @initialize(metric=st.sampled_from(["cosine", "l2", "ip"]), seed=st.integers(0, 2**16))
    def setup(self, metric: str, seed: int) -> None:
        self.metric = metric
        self.store = MemoryPageStore()
        self.h = HNSW(DIM, M=4, ef_construction=24, ef_search=16, seed=seed, metric=metric, store=self.store)
        self.model: dict[int, np.ndarray] = {}
        self.next_id = 0

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id * 7 - 3  # sparse, not internal-id-like

    @rule(target=ids, v=vectors)
    def add(self, v: np.ndarray) -> int:
        i = self._new_id()
        self.h.add(v, i)
        self.model[i] = v
        return i

    @rule(vs=st.lists(vectors, min_size=1, max_size=12))
    def add_many(self, vs: list[np.ndarray]) -> None:
        ids = [self._new_id() for _ in vs]
        self.h.add_many(np.stack(vs), ids)
        self.model.update(zip(ids, vs))

    @rule(i=ids)
    def delete(self, i: int) -> None:
        if i in self.model:
            self.h.delete(i)
            del self.model[i]
        else:
            with pytest.raises(LlmdsdbError):
                self.h.delete(i)

    @rule(i=ids, v=vectors)
    def duplicate_or_readd(self, i: int, v: np.ndarray) -> None:
        before = state_of(self.h)
        if i in self.model:
            with pytest.raises(LlmdsdbError):
                self.h.add(v, i)
            assert state_of(self.h) == before
        else:  # a deleted id may be used again
            self.h.add(v, i)
            self.model[i] = v

    @rule(v=vectors, kind=st.sampled_from(["nan", "inf", "dim", "zero", "object", "dup_in_batch"]),
          pos=st.integers(0, DIM - 1))
    def bad_input(self, v: np.ndarray, kind: str, pos: int) -> None:
        before = state_of(self.h)
        good = np.ones(DIM, np.float32)
        bad: object
        if kind == "nan":
            bad = v.copy()
            bad[pos] = np.nan
        elif kind == "inf":
            bad = v.copy()
            bad[pos] = -np.inf
        elif kind == "dim":
            bad = np.append(v, 1.0)
        elif kind == "zero":
            if self.metric != "cosine":
                return
            bad = np.zeros(DIM, np.float32)
        elif kind == "object":
            bad = np.array(list(v), dtype=object)
        else:
            with pytest.raises(LlmdsdbError):
                self.h.add_many(np.stack([good, v]), [10**9, 10**9])
            assert state_of(self.h) == before
            return
        with pytest.raises(LlmdsdbError):
            self.h.add(bad, 10**9)
        if kind != "dim":
            with pytest.raises(LlmdsdbError):
                self.h.add_many(np.stack([good, np.asarray(bad, dtype=object if kind == "object" else np.float32)]), [10**9, 10**9 + 1])
        assert state_of(self.h) == before

    @rule(q=vectors, k=st.integers(1, 8))
    def exact_search_matches_model(self, q: np.ndarray, k: int) -> None:
        got = self.h.search(q, k=k, exact=True)
        if not self.model:
            assert got == []
            return
        keys = list(self.model)
        d = np.sort(brute_dist(np.stack([self.model[i] for i in keys]), q, self.metric))[:k]
        assert len(got) == min(k, len(keys))
        assert all(i in self.model for i, _ in got)
        np.testing.assert_allclose([x for _, x in got], d, rtol=1e-3, atol=1e-3)
        # the batched exact path ranks (ties included) exactly like the single one
        many = self.h.search_many(np.stack([q, q]), k=k, exact=True)
        assert [[i for i, _ in r] for r in many] == [[i for i, _ in got]] * 2
        np.testing.assert_allclose([x for _, x in many[0]], [x for _, x in got], rtol=1e-5, atol=1e-6)

    @rule(q=vectors, k=st.integers(1, 8), ef=st.integers(1, 40))
    def graph_search_returns_live_sorted(self, q: np.ndarray, k: int, ef: int) -> None:
        got = self.h.search(q, k=k, ef=ef, exact=False)
        many = self.h.search_many(q[None, :], k=k, ef=ef, exact=False)[0]
        for res in (got, many):
            ids = [i for i, _ in res]
            assert len(res) == min(k, len(self.model))
            assert len(set(ids)) == len(ids)
            assert all(i in self.model for i in ids), "deleted or unknown id returned"
            ds = [x for _, x in res]
            assert ds == sorted(ds)

    @rule()
    def flush_and_reopen(self) -> None:
        qs = np.stack([np.linspace(-1, 1, DIM, dtype=np.float32) + 0.1 * j for j in range(3)])
        before = self.h.search_many(qs, k=5, exact=False)
        before1 = [self.h.search(q, k=5, exact=False) for q in qs]
        self.h.flush()
        self.h = HNSW.open(self.store)
        assert self.h.search_many(qs, k=5, exact=False) == before
        assert [self.h.search(q, k=5, exact=False) for q in qs] == before1

    @rule()
    def compact(self) -> None:
        self.h.compact()
        assert self.h._n == len(self.model)

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "h"):
            return
        self.h._check()
        assert len(self.h) == len(self.model)
        for i in list(self.model)[:5]:
            assert i in self.h


HNSWMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestHNSWMachine = HNSWMachine.TestCase


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(200, 400), dim=st.sampled_from([8, 16]),
       metric=st.sampled_from(["cosine", "l2", "ip"]))
def test_recall_against_brute_force(seed: int, n: int, dim: int, metric: str) -> None:
    rng = np.random.default_rng(seed)
    X = clustered(rng, n, dim)
    Q = clustered(rng, 30, dim)
    h = HNSW(dim, M=8, ef_construction=64, seed=seed, metric=metric)
    h.add_many(X, np.arange(n))
    truth = np.array([np.argsort(brute_dist(X, q, metric), kind="stable")[:10] for q in Q])
    # compare by distance, so ties in the data cannot fail the test
    kth = np.array([np.sort(brute_dist(X, q, metric))[9] for q in Q])
    for found in (h.search_many_arrays(Q, k=10, ef=64, exact=False)[0],
                  np.array([[i for i, _ in h.search(q, 10, ef=64, exact=False)] for q in Q])):
        hits = sum(int((brute_dist(X[f], q, metric) <= kth_q + 1e-5).sum()) for f, q, kth_q in zip(found, Q, kth))
        recall = hits / truth.size
        # inner product is not a metric: graph search on clustered data with varied norms is
        # weaker (hnswlib, same M/ef, scored 0.77 on the example seed=0, n=339, dim=16 where
        # this index scored 0.81), so its bound is lower
        assert recall >= (0.7 if metric == "ip" else 0.9), recall


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), data_seed=st.integers(0, 2**16), split=st.integers(1, 150))
def test_determinism_for_a_seed(seed: int, data_seed: int, split: int) -> None:
    X = clustered(np.random.default_rng(data_seed), 200, 8)

    def build() -> HNSW:
        h = HNSW(8, M=6, ef_construction=32, seed=seed)
        h.add_many(X[:split], np.arange(split), threads=1)
        h.add(X[split], split)
        h.add_many(X[split + 1 :], np.arange(split + 1, 200), threads=1)
        return h

    a, b = build(), build()
    assert state_of(a) == state_of(b)
    assert a.search_many(X[:10], k=5, exact=False) == b.search_many(X[:10], k=5, exact=False)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), n=st.integers(1, 700), deletes=st.integers(0, 50),
       metric=st.sampled_from(["cosine", "l2"]))
def test_pages_round_trip(seed: int, n: int, deletes: int, metric: str) -> None:
    rng = np.random.default_rng(seed)
    X = clustered(rng, n, 8)
    assume(np.linalg.norm(X, axis=1).min() > 0)
    store = MemoryPageStore()
    h = HNSW(8, M=6, ef_construction=32, seed=seed, metric=metric, store=store)
    h.add_many(X, rng.permutation(10 * n)[:n])
    for i in list(h._id_map)[:deletes]:
        h.delete(i)
    h.flush()
    g = HNSW.open(store)
    g._check()
    assert state_of(g) == state_of(h)
    Q = clustered(rng, 10, 8)
    for exact in (True, False):
        assert g.search_many(Q, k=7, exact=exact) == h.search_many(Q, k=7, exact=exact)
        assert [g.search(q, 7, exact=exact) for q in Q] == [h.search(q, 7, exact=exact) for q in Q]
