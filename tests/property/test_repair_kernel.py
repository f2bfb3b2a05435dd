"""Compaction's HNSW repair kernel (``_core.hnsw_repair``, llmdsdb/_native/repair.c) against
a plain-Python reference model of the same repair.

The model (:func:`ref_repair`): for each row that names a removed ("gone") node, in order,
the row of a deleted node keeps its entries that are not gone; the row of a live node ``u``
is chosen again from those entries plus the gone nodes' rows' entries that are neither
deleted, gone nor ``u``, ordered by (distance to ``u``, id), all of them when at most ``W``,
else with the HNSW selection heuristic (Malkov & Yashunin, Algorithm 4: keep a candidate when
no kept one is closer to it than ``u`` is). Distances come from the kernels' own distance
function (``dist_rows(..., "auto")``), so the comparison is exact. Random graphs with
duplicate vectors (ties), every metric, layer 0 (row = node) and an upper layer (a node ->
row map); corrupt ids raise CorruptionError, never crash.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmdsdb._native import _core
from llmdsdb.errors import CorruptionError, InvalidArgumentError

CODE = {"cosine": 0, "l2": 1, "ip": 2}


def kdist(vecs: np.ndarray, metric: str, a: int, ids: list[int]) -> list[float]:
    """dist(vecs[i], vecs[a]) for i in ids, by the kernels' distance function."""
    if not ids:
        return []
    A = np.ascontiguousarray(vecs[ids])
    B = np.ascontiguousarray(np.repeat(vecs[a][None, :], len(ids), axis=0))
    out = np.empty(len(ids), np.float32)
    _core.dist_rows(A, B, CODE[metric], "auto", out)
    return out.tolist()


def ref_repair(vecs, metric, A, rownode, node2row, gone, dead, rows) -> np.ndarray:
    A = A.copy()
    W = A.shape[1]
    for r in rows:
        u = int(rownode[r])
        row = [int(e) for e in A[r] if e >= 0]
        base = []
        for e in row:
            if not gone[e] and e != u and e not in base:
                base.append(e)
        if dead[u]:
            keep = base
        else:
            cand = list(base)
            for d in row:
                if not gone[d]:
                    continue
                dr = int(node2row[d]) if node2row is not None else d
                if dr < 0:
                    continue
                for x in A[dr]:
                    x = int(x)
                    if x >= 0 and not dead[x] and not gone[x] and x != u and x not in cand:
                        cand.append(x)
            du = kdist(vecs, metric, u, cand)
            order = sorted(range(len(cand)), key=lambda i: (du[i], cand[i]))
            cand = [cand[i] for i in order]
            du = [du[i] for i in order]
            if len(cand) <= W:
                keep = cand
            else:
                keep = []
                for i, c in enumerate(cand):
                    if all(kdist(vecs, metric, s, [c])[0] >= du[i] for s in keep):
                        keep.append(c)
                        if len(keep) >= W:
                            break
        A[r] = -1
        A[r, : len(keep)] = keep
    return A


@st.composite
def layers(draw):
    n = draw(st.integers(2, 40))
    dim = draw(st.integers(1, 12))
    W = draw(st.integers(1, 8))
    metric = draw(st.sampled_from(["cosine", "l2", "ip"]))
    seed = draw(st.integers(0, 2**32 - 1))
    upper = draw(st.booleans())
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, size=(max(1, n // 3), dim)).astype(np.float32)
    vecs = base[rng.integers(0, len(base), n)] + (rng.random((n, dim)) < 0.3)  # duplicates
    vecs = vecs.astype(np.float32)
    vecs[np.linalg.norm(vecs, axis=1) == 0, 0] = 1.0
    if metric == "cosine":
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    members = np.sort(rng.choice(n, int(rng.integers(1, n + 1)), replace=False)) if upper \
        else np.arange(n)
    R = len(members)
    A = np.full((R + 1, W), -1, np.int32)  # a spare last row, as the graph's arrays have
    for r, u in enumerate(members):
        k = int(rng.integers(0, min(W, R - 1) + 1))
        nb = rng.choice(members[members != u], k, replace=False) if k else []
        A[r, :k] = nb
    dead = (rng.random(n) < 0.5).astype(np.uint8)
    gone = (dead.astype(bool) & (rng.random(n) < 0.7)).astype(np.uint8)
    node2row = None
    if upper:
        node2row = np.full(n, -1, np.int32)
        node2row[members] = np.arange(R, dtype=np.int32)
    rownode = np.zeros(R + 1, np.int64)
    rownode[:R] = members
    hit = [r for r in range(R) if any(e >= 0 and gone[e] for e in A[r])]
    return vecs, metric, A, rownode, node2row, gone, dead, np.asarray(hit, np.int64)


@settings(max_examples=300, deadline=None)
@given(layers())
def test_kernel_matches_reference(case) -> None:
    vecs, metric, A, rownode, node2row, gone, dead, rows = case
    want = ref_repair(vecs, metric, A, rownode, node2row, gone, dead, rows.tolist())
    got = A.copy()
    _core.hnsw_repair(vecs, CODE[metric], got, rownode, node2row, gone, dead, rows)
    assert np.array_equal(got, want)
    for r in rows.tolist():  # no repaired row names a gone node, its own node, or twice one
        ids = [int(e) for e in got[r] if e >= 0]
        assert not any(gone[e] for e in ids) and int(rownode[r]) not in ids
        assert len(ids) == len(set(ids))
        assert (got[r][len(ids):] == -1).all()


def test_bad_input_is_an_error_not_a_crash() -> None:
    vecs = np.eye(4, dtype=np.float32)
    A = np.array([[1, 2], [0, -1], [0, 9], [-1, -1]], np.int32)
    gone = np.array([0, 1, 0, 0], np.uint8)
    dead = gone.copy()
    rownode = np.arange(4, dtype=np.int64)
    with pytest.raises(CorruptionError):  # row 2 names node 9 of 4
        _core.hnsw_repair(vecs, 0, A.copy(), rownode, None, gone, dead,
                          np.array([2], np.int64))
    with pytest.raises(InvalidArgumentError):  # a row index out of range
        _core.hnsw_repair(vecs, 0, A.copy(), rownode, None, gone, dead,
                          np.array([7], np.int64))
    with pytest.raises(InvalidArgumentError):  # gone of the wrong length
        _core.hnsw_repair(vecs, 0, A.copy(), rownode, None, gone[:3], dead,
                          np.array([0], np.int64))
    with pytest.raises(InvalidArgumentError):  # rows as float64
        _core.hnsw_repair(vecs, 0, A.copy(), rownode, None, gone, dead, np.array([0.0]))
    with pytest.raises(InvalidArgumentError):  # unknown metric
        _core.hnsw_repair(vecs, 7, A.copy(), rownode, None, gone, dead,
                          np.array([0], np.int64))
    ok = A.copy()
    _core.hnsw_repair(vecs, 0, ok, rownode, None, gone, dead, np.array([0], np.int64))
    assert ok[0].tolist() == [2, -1]  # node 1 gone; its row's entry 0 is node 0 itself
