"""Filtered vector search (``allow=``) against a brute-force reference.

* the exact strategy (``allowed-scan``) gives exactly the reference's ids and distances:
  the k nearest allowed live vectors by (distance, insertion order), distances computed by
  the kernels' own distance function so the comparison is exact;
* the graph strategy (``filtered-graph``, both walk modes) returns only allowed live ids,
  nearest first, exactly ``min(k, allowed live)`` of them, with the true distances;
* the same holds through :class:`~llmdsdb.vector_segment.VectorSegment` (graph + fresh part)
  and for ``search`` vs ``search_many``;
* recall@10 of the planned search is >= 0.95 of exact at selectivities 50%, 10%, 1%, 0.1%;
* a malformed allowed set is a clear error, never a crash.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmdsdb._native import _core
from llmdsdb.allow import AllowSet
from llmdsdb.errors import InvalidArgumentError, InvalidTypeError
from llmdsdb.hnsw import HNSW
from llmdsdb.vector_segment import VectorSegment

CODE = {"cosine": 0, "l2": 1, "ip": 2}


def reference(h: HNSW, query: np.ndarray, k: int, allow: AllowSet) -> list[tuple[int, float]]:
    """The k nearest live nodes whose vec_id is allowed, ties to the earlier node."""
    q = h._prepare(query, matrix=False, what="query")[0][0]
    n = h._n
    nodes = [i for i in range(n) if not h._deleted[i] and int(h._ext[i]) in allow]
    if not nodes:
        return []
    d = np.empty(len(nodes), np.float32)
    _core.dist_rows(np.repeat(q[None, :], len(nodes), 0), h._vecs[nodes], CODE[h.metric], "auto", d)
    order = sorted(zip(d.tolist(), nodes))[:k]
    return [(int(h._ext[i]), dd) for dd, i in order]


def build(n: int, dim: int, metric: str, seed: int, ties: bool, base: int) -> tuple[HNSW, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = (rng.integers(-2, 3, size=(n, dim)) if ties else rng.normal(size=(n, dim))).astype(np.float64)
    X[np.abs(X).sum(axis=1) == 0, 0] = 1.0  # no zero vectors (cosine refuses them)
    h = HNSW(dim, M=4, ef_construction=16, ef_search=8, seed=seed, metric=metric)  # type: ignore[arg-type]
    ids = base + np.arange(n, dtype=np.int64) * 3  # vec_ids are not node numbers
    h.add_many(X, ids, threads=1)
    return h, ids


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 120),
    dim=st.integers(1, 6),
    k=st.integers(1, 15),
    metric=st.sampled_from(["cosine", "l2", "ip"]),
    seed=st.integers(0, 2**32 - 1),
    ties=st.booleans(),
    kind=st.sampled_from(["random", "empty", "one", "all", "beyond", "dense-dead"]),
    frac=st.floats(0.0, 1.0),
    delete_frac=st.floats(0.0, 0.6),
    reinsert=st.booleans(),
)
def test_filtered_search_matches_brute_force(n, dim, k, metric, seed, ties, kind, frac,
                                             delete_frac, reinsert) -> None:
    rng = np.random.default_rng(seed ^ 0x5EED)
    h, ids = build(n, dim, metric, seed, ties, base=2)
    dead = ids[rng.random(n) < delete_frac]
    for v in dead.tolist():
        h.delete(v)
    if reinsert and dead.size:  # a deleted vec_id comes back on a new node
        h.add_many(rng.normal(size=(1, dim)) + 0.5, dead[:1], threads=1)
    universe = int(ids.max(initial=0)) + 40
    if kind == "empty":
        allowed = np.zeros(0, np.int64)
    elif kind == "one":
        allowed = ids[rng.integers(0, n, 1)] if n else np.zeros(0, np.int64)
    elif kind == "all":
        allowed = np.arange(universe)
    elif kind == "beyond":  # ids no vector has, past the graph's ids, and some real ones
        allowed = np.concatenate([ids[rng.random(n) < frac], universe - 1 - np.arange(5)])
    elif kind == "dense-dead":  # mostly deleted ids
        allowed = np.concatenate([dead, ids[: min(n, 3)]])
    else:
        allowed = ids[rng.random(n) < frac]
    allow = AllowSet.from_ids(allowed, universe)
    queries = rng.normal(size=(3, dim)) + 0.1
    for query in queries:
        want = reference(h, query, k, allow)
        assert h.search(query, k, allow=allow, exact=True) == want
        for mode in ("traverse", "two-hop"):
            h._filter_mode = mode
            got = h.search(query, k, allow=allow, exact=False)
            assert len(got) == len(want)  # exactly min(k, allowed live)
            allowed_live = {v for v, _ in reference(h, query, 10**6, allow)}
            assert {v for v, _ in got} <= allowed_live and len({v for v, _ in got}) == len(got)
            ds = [d for _, d in got]
            assert ds == sorted(ds)
            if want:  # the walk's first hit is never closer than the true nearest
                assert ds[0] >= want[0][1]
        h._filter_mode = None
    many = h.search_many(queries, k, allow=allow, exact=True, threads=2)
    assert many == [h.search(q, k, allow=allow, exact=True) for q in queries]
    planned = h.search_many(queries, k, allow=allow, threads=2)
    assert planned == [h.search(q, k, allow=allow) for q in queries]
    ids_a, ds_a = h.search_many_arrays(queries, k, allow=allow, exact=True)
    for row_i, row_d, row in zip(ids_a, ds_a, many):
        m = len(row)
        assert [(int(i), float(d)) for i, d in zip(row_i[:m], row_d[:m])] == row
        assert (row_i[m:] == -1).all() and np.isinf(row_d[m:]).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_graph=st.integers(0, 60),
    n_fresh=st.integers(0, 40),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    frac=st.floats(0.0, 1.0),
)
def test_segment_filters_graph_and_fresh_alike(n_graph, n_fresh, k, seed, frac) -> None:
    rng = np.random.default_rng(seed)
    dim = 4
    h = HNSW(dim, M=4, ef_construction=16, seed=seed)
    seg = VectorSegment(h, fresh_max_vectors=10**6)
    X = rng.normal(size=(n_graph + n_fresh, dim)).astype(np.float32) + 0.01
    ids = np.arange(n_graph + n_fresh, dtype=np.int64)
    if n_graph:
        h.add_many(X[:n_graph], ids[:n_graph], threads=1)
    seg.add_many(X[n_graph:], ids[n_graph:])
    for v in ids[rng.random(ids.size) < 0.2].tolist():
        seg.delete(v)
    allow = AllowSet.from_ids(ids[rng.random(ids.size) < frac], ids.size + 8)
    live = [int(v) for v in ids if v in seg and int(v) in allow]
    Q = rng.normal(size=(2, dim)).astype(np.float32)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    res = seg.search_many(Q, k, allow=allow)
    assert res == [seg.search(q, k, allow=allow) for q in Q]
    assert seg.filter_plan(allow) == h.filter_plan(allow)
    for qi, hits in enumerate(res):
        assert len(hits) == min(k, len(live))
        assert {v for v, _ in hits} <= set(live)
        if live:  # exact at this size: the true top k by distance (float32 tolerance)
            d = 1 - Xn[live] @ Qn[qi]
            kth = np.sort(d)[len(hits) - 1]
            assert max(dd for _, dd in hits) <= kth + 1e-5


def test_bad_allow_sets_are_errors_not_crashes() -> None:
    h, ids = build(300, 4, "l2", 1, False, base=0)
    q = np.ones(4)
    with pytest.raises(InvalidTypeError):
        h.search(q, 5, allow={1, 2, 3})  # type: ignore[arg-type]
    good = AllowSet.from_ids(ids[:50], 2000)
    bad_bits = [good.bits.astype(np.int32), good.bits.reshape(-1, 1), good.bits.astype(np.float32)]
    for bits in bad_bits:
        for exact in (True, False):
            with pytest.raises(InvalidArgumentError):
                h.search(q, 5, allow=AllowSet(good.ids, bits, 2000), exact=exact)
    with pytest.raises(InvalidArgumentError):  # ids must be int64 and strictly increasing
        h.search(q, 5, allow=AllowSet(good.ids[::-1].copy(), good.bits, 2000))
    with pytest.raises(InvalidArgumentError):
        h.search(q, 5, allow=AllowSet(good.ids.astype(np.int32), good.bits, 2000))
    # a bitmap shorter than the ids: the ids past it are not allowed, on either path
    short = AllowSet(good.ids, good.bits[:2].copy(), 2000)
    for exact in (True, False):
        assert {v for v, _ in h.search(q, 5, allow=short, exact=exact)} <= set(range(16))


def test_plan_follows_the_allowed_count(monkeypatch) -> None:
    import llmdsdb.hnsw as hnsw_mod

    monkeypatch.setattr(hnsw_mod, "FILTER_EXACT_MAX", 100)
    monkeypatch.setattr(hnsw_mod, "FILTER_EXACT_FRACTION", 0.01)
    h, ids = build(3000, 200, "cosine", 3, False, base=0)  # 600k floats: above exact size
    assert h.filter_plan() == ("graph", False)
    assert h.filter_plan(AllowSet.from_ids(ids[:10], 4 * 3000)) == ("allowed-scan", True)
    assert h.filter_plan(AllowSet.from_ids(ids, 4 * 3000)) == ("filtered-graph", False)
    assert h.filter_plan(AllowSet.from_ids(ids, 4 * 3000), exact=True) == ("allowed-scan", True)
    small = HNSW(4)
    assert small.filter_plan(AllowSet.from_ids(range(100), 100)) == ("allowed-scan", True)


@pytest.fixture(scope="module")
def clustered() -> tuple[HNSW, np.ndarray, np.ndarray]:
    """20k x 32 vectors in 50 gaussian clusters, and 30 queries near the data."""
    rng = np.random.default_rng(7)
    n, dim = 20_000, 32
    centers = rng.normal(size=(50, dim)) * 3
    X = (centers[rng.integers(0, 50, n)] + rng.normal(size=(n, dim))).astype(np.float32)
    h = HNSW(dim, M=12, ef_construction=64, seed=7, metric="l2")
    h.add_many(X, np.arange(n), threads=1)  # one thread: the same graph on every run
    Q = (centers[rng.integers(0, 50, 30)] + rng.normal(size=(30, dim))).astype(np.float32)
    return h, X, Q


@pytest.mark.parametrize("selectivity", [0.5, 0.1, 0.01, 0.001])
@pytest.mark.parametrize("correlated", [False, True])
def test_recall_at_10_at_every_selectivity(clustered, selectivity, correlated) -> None:
    """Acceptance: recall@10 >= 0.95 of exact filtered search, exactly k hits when >= k
    match; for the planned strategy and for the graph walk forced at every selectivity."""
    h, X, Q = clustered
    n = X.shape[0]
    rng = np.random.default_rng(int(selectivity * 1e4) + correlated)
    if correlated:  # the allowed ids are the nearest to one random point: a region
        c = X[rng.integers(0, n)]
        allowed = np.argsort(((X - c) ** 2).sum(axis=1))[: max(1, int(selectivity * n))]
    else:
        allowed = np.flatnonzero(rng.random(n) < selectivity)
    allow = AllowSet.from_ids(allowed, n)
    exact_ids, _ = h.search_many_arrays(Q, 10, allow=allow, exact=True)
    want = min(10, allowed.size)
    for forced in (None, False):
        got, ds = h.search_many_arrays(Q, 10, allow=allow, exact=forced)
        assert np.isfinite(ds[:, :want]).all() and (got[:, want:] == -1).all()
        assert np.isin(got[:, :want], allowed).all()
        recall = np.mean([len(set(g[:want]) & set(e[:want])) / want for g, e in zip(got, exact_ids)])
        assert recall >= 0.95, (forced, recall)


def _planned_walk(monkeypatch) -> None:
    """Plan a filtered walk for any allowed set (no exact scan chosen up front)."""
    import llmdsdb.hnsw as hnsw_mod

    monkeypatch.setattr(hnsw_mod, "FILTER_EXACT_MAX", 0)
    monkeypatch.setattr(hnsw_mod, "FILTER_EXACT_FRACTION", 0.0)
    monkeypatch.setattr(hnsw_mod, "EXACT_COMPONENTS", 0)


@pytest.fixture(scope="module")
def unstructured() -> tuple[HNSW, np.ndarray, np.ndarray]:
    """3,000 i.i.d. gaussian 48-d vectors (no neighbourhood structure: a small pool walks
    badly) and 20 queries."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(3000, 48)).astype(np.float32)
    h = HNSW(48, M=4, ef_construction=16, seed=11, metric="l2")
    h.add_many(X, np.arange(3000), threads=1)
    return h, X, rng.normal(size=(20, 48)).astype(np.float32)


def test_walk_past_its_budget_hands_over_to_the_exact_scan(unstructured, monkeypatch) -> None:
    """A planned walk that computes more than FILTER_WALK_BUDGET * m distances stops and the
    exact scan answers: the plan says so and the hits are the exact ones."""
    import llmdsdb.hnsw as hnsw_mod

    h, X, Q = unstructured
    _planned_walk(monkeypatch)
    allow = AllowSet.from_ids(np.arange(0, 3000, 3), 3000)
    exact_ids, exact_d = h.search_many_arrays(Q, 10, allow=allow, exact=True)
    monkeypatch.setattr(hnsw_mod, "FILTER_WALK_BUDGET", 0.01)  # 10 distances
    ids, ds, plans = h.search_allowed_arrays(Q, 10, allow=allow)
    assert plans == [("walk-budget-scan", True)] * len(Q)
    assert (ids == exact_ids).all() and (ds == exact_d).all()
    # forced walk (exact=False): no budget, no check, the walk answers
    _, _, forced = h.search_allowed_arrays(Q, 10, allow=allow, exact=False)
    assert {p.strategy for p in forced} <= {"filtered-graph", "walk-short-scan"}
    _, _, planned_exact = h.search_allowed_arrays(Q, 10, allow=allow, exact=True)
    assert planned_exact == [("allowed-scan", True)] * len(Q)


def test_the_check_catches_a_walk_that_missed_its_top_k(unstructured, monkeypatch) -> None:
    """With the check's sample covering every allowed vector, a walk is accepted only when
    fewer than HNSW_VERIFY_HITS (2) allowed vectors nearer than its k-th hit were missed;
    otherwise the exact scan answers. On unstructured data some walks fail and are caught."""
    import llmdsdb.hnsw as hnsw_mod

    h, X, Q = unstructured
    _planned_walk(monkeypatch)
    monkeypatch.setattr(hnsw_mod, "FILTER_WALK_BUDGET", 1e9)  # the check alone decides
    k = 10
    for sel, seed in ((0.5, 1), (0.15, 2)):
        allowed = np.flatnonzero(np.random.default_rng(seed).random(3000) < sel)
        allow = AllowSet.from_ids(allowed, 3000)
        exact_ids, exact_d = h.search_many_arrays(Q, k, allow=allow, exact=True)
        walk_ids, _ = h.search_many_arrays(Q, k, 4, allow=allow, exact=False)
        walk_recall = np.mean([len(set(w) & set(e)) / k for w, e in zip(walk_ids, exact_ids)])
        monkeypatch.setattr(hnsw_mod, "FILTER_VERIFY_SAMPLE", len(allowed))
        ids, ds, plans = h.search_allowed_arrays(Q, k, 4, allow=allow)
        strategies = {p.strategy for p in plans}
        assert strategies <= {"filtered-graph", "walk-check-scan", "walk-short-scan"}
        assert "walk-check-scan" in strategies, walk_recall  # the small pool misses here
        for row, drow, erow, edrow, plan in zip(ids, ds, exact_ids, exact_d, plans):
            if plan.exact:
                assert (row == erow).all() and (drow == edrow).all()
            else:  # accepted: at most one allowed vector nearer than its k-th was missed
                nearer = set(erow[edrow < drow[-1]].tolist())
                assert len(nearer - set(row.tolist())) <= 1
        recall = np.mean([len(set(g) & set(e)) / k for g, e in zip(ids, exact_ids)])
        assert recall >= walk_recall and recall >= (k - 1) / k
        monkeypatch.setattr(hnsw_mod, "FILTER_VERIFY_SAMPLE", 256)


def test_search_allowed_reports_what_answered(clustered) -> None:
    """search_allowed_arrays: the same hits as search_many_arrays, one plan per query that
    agrees with filter_plan when the plan is exact."""
    h, X, Q = clustered
    small = AllowSet.from_ids(np.arange(0, 20_000, 200), 20_000)  # 100: the exact scan
    ids, ds, plans = h.search_allowed_arrays(Q, 10, allow=small)
    want_ids, want_d = h.search_many_arrays(Q, 10, allow=small)
    assert (ids == want_ids).all() and (ds == want_d).all()
    assert plans == [h.filter_plan(small)] * len(Q) == [("allowed-scan", True)] * len(Q)
    big = AllowSet.from_ids(np.arange(0, 20_000, 2), 20_000)
    ids, ds, plans = h.search_allowed_arrays(Q, 10, allow=big)
    want_ids, _ = h.search_many_arrays(Q, 10, allow=big)
    assert (ids == want_ids).all()
    assert all(p.strategy in {"filtered-graph", "walk-budget-scan", "walk-check-scan",
                              "walk-short-scan"} for p in plans)
