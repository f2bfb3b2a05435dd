"""Fuzz of the HNSW kernels: random adjacency rows, row maps, levels, vectors (NaN and inf
included), entry points and scalars go straight to ``_core.HnswGraph``. Every call either
raises an ``llmdsdb.errors`` class (CorruptionError for a bad id inside the arrays,
InvalidArgumentError for a bad argument) or returns a well-formed answer; none crashes or
reads out of bounds (tools/sanitize runs this file under ASan/UBSan).

Bounded: a few hundred small cases, a couple of seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmdsdb._native import _core
from llmdsdb.errors import CorruptionError, DimensionError, InvalidArgumentError
from llmdsdb.hnsw import HNSW, NODES_PER_PAGE
from llmdsdb.pages import MemoryPageStore

EXPECTED = (CorruptionError, InvalidArgumentError)


@st.composite
def graphs(draw: st.DrawFn) -> dict:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cap = draw(st.integers(0, 40))
    dim = draw(st.integers(1, 6))
    M = draw(st.integers(1, 4))
    nl = draw(st.integers(0, 3))
    hostile = draw(st.booleans())  # ids far out of range, or only slightly
    lo, hi = (-(2**31), 2**31 - 1) if hostile else (-3, cap + 3)
    vecs = rng.normal(size=(cap + 1, dim)).astype(np.float32)
    if draw(st.booleans()):
        vecs.ravel()[rng.integers(0, vecs.size, 3)] = [np.nan, np.inf, -np.inf]
    n = draw(st.integers(0, cap))
    # a plausible hierarchy (each layer a subset of the one below, row maps consistent)
    # that the corruption rate then damages, or rows and maps at random
    levels = np.minimum(rng.geometric(0.5, cap) - 1, nl).astype(np.int8)
    rate = draw(st.sampled_from([0.0, 0.02, 0.3, 1.0]))
    upper = []
    for lv in range(1, nl + 1):
        members = np.flatnonzero(levels[:n] >= lv)
        rows = max(1, members.size)
        rowmap = np.full(cap + 1, -1, np.int32)
        rowmap[members] = np.arange(members.size, dtype=np.int32)
        adj = (members[rng.integers(0, members.size, (rows, M))] if members.size else
               np.full((rows, M), -1)).astype(np.int32)
        for arr, hi_ in ((rowmap, rows + 2), (adj, hi)):
            bad = rng.random(arr.shape) < rate
            arr[bad] = rng.integers(lo if arr is adj else -2, hi_, int(bad.sum()), endpoint=True)
        upper.append((rowmap, adj, members.size))
    if rate == 1.0:
        levels = rng.integers(-2, nl + 2, cap).astype(np.int8)
    adj0 = rng.integers(-1, max(n, 1), (cap + 1, 2 * M)).astype(np.int32)
    bad = rng.random(adj0.shape) < rate
    adj0[bad] = rng.integers(lo, hi, int(bad.sum()), endpoint=True)
    top = int(levels[:n].max()) if n else -1
    entry, maxl = (int(np.flatnonzero(levels[:n] == top)[0]), top) if n and top >= 0 else (-1, -1)
    if draw(st.integers(0, 3)) == 0:
        entry, maxl = draw(st.integers(-2, n + 1)), draw(st.integers(-2, nl + 1))
    return {
        "metric": draw(st.integers(0, 2)), "vecs": vecs, "adj0": adj0,
        "deleted": rng.random(cap) < 0.3, "ext": np.arange(cap, dtype=np.int64) * 3,
        "levels": levels, "upper": upper, "n": n,
        "entry": entry, "maxl": maxl,
        "live": draw(st.integers(0, n)), "k": draw(st.integers(1, 8)), "ef": draw(st.integers(1, 12)),
        "q": rng.normal(size=dim).astype(np.float32), "threads": draw(st.integers(1, 3)),
        "start": draw(st.integers(0, n)),
    }


def well_formed(res: list[tuple[int, float]], g: dict) -> None:
    ids = [i for i, _ in res]
    assert len(res) <= g["k"]
    assert all(i % 3 == 0 and 0 <= i // 3 < g["n"] for i in ids)
    assert len(set(ids)) == len(ids)
    ds = [d for _, d in res]
    if all(math.isfinite(d) for d in ds):
        assert ds == sorted(ds)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(g=graphs())
def test_random_graphs_give_an_answer_or_a_typed_error(g: dict) -> None:
    graph = _core.HnswGraph(g["metric"], NODES_PER_PAGE, g["vecs"], g["adj0"], g["deleted"], g["ext"],
                            g["levels"], g["upper"])
    args = (g["n"], g["entry"], g["maxl"], g["live"], g["k"], g["ef"])
    for exact in (0, 1):
        try:
            well_formed(graph.search(g["q"], 0, *args, exact), g)
        except EXPECTED:
            pass
        Q = np.stack([g["q"], -g["q"]])
        ids = np.empty((2, g["k"]), np.int64)
        ds = np.empty((2, g["k"]), np.float32)
        try:
            graph.search_many(Q, *args, exact, g["threads"], ids, ds)
            for r in range(2):
                well_formed([(i, d) for i, d in zip(ids[r].tolist(), ds[r].tolist()) if d != math.inf], g)
        except EXPECTED:
            pass
    dirty = np.zeros(-(-g["n"] // NODES_PER_PAGE) + 1, np.uint8)
    try:
        entry, maxl = graph.insert(g["start"], g["n"], g["entry"], g["maxl"], 8, g["threads"], dirty)
        assert -1 <= entry < max(g["n"], 1) and -1 <= maxl <= len(g["upper"])
    except EXPECTED:
        pass
    try:  # whatever insert left behind is searched safely too
        well_formed(graph.search(g["q"], 0, *args, 0), g)
    except EXPECTED:
        pass


def test_mismatched_arrays_are_refused() -> None:
    v = np.zeros((5, 3), np.float32)
    a = np.full((5, 4), -1, np.int32)
    d = np.zeros(4, bool)
    e = np.arange(4, dtype=np.int64)
    lv = np.zeros(4, np.int8)
    _core.HnswGraph(0, 256, v, a, d, e, lv, [])
    bad_calls = [
        (0, 256, v.astype(np.float64), a, d, e, lv, []),  # dtype
        (0, 256, v, a[:, :3], d, e, lv, []),  # odd row width
        (0, 256, v, a[:4], d, e, lv, []),  # rows disagree
        (0, 256, v[:, ::2], a, d, e, lv, []),  # not contiguous
        (0, 256, v, a, d[:2], e, lv, []),  # too short
        (0, 256, v, a, d, e.astype(np.int32), lv, []),
        (7, 256, v, a, d, e, lv, []),  # metric
        (0, 256, v, a, d, e, lv, [(np.zeros(5, np.int32), np.zeros((2, 2), np.int32), 3)]),  # count > rows
        (0, 256, v, a, d, e, lv, [(np.zeros(5, np.int32), np.zeros((2, 3), np.int32), 1)]),  # width != M
    ]
    for call in bad_calls:
        with pytest.raises(InvalidArgumentError):
            _core.HnswGraph(*call)
    g = _core.HnswGraph(0, 256, v, a, d, e, lv, [])
    with pytest.raises(InvalidArgumentError):
        g.search(np.ones(3, np.float32), 0, 5, 0, 0, 1, 1, 1, 0)  # n beyond capacity
    with pytest.raises(DimensionError):
        g.search(np.ones(2, np.float32), 0, 4, 0, 0, 1, 1, 1, 0)
    with pytest.raises(InvalidArgumentError):
        g.search_many(np.ones((1, 3), np.float32), 4, 0, 0, 1, 2, 2, 0, 1,
                      np.empty((1, 3), np.int64), np.empty((1, 2), np.float32))


def test_forged_neighbour_id_in_a_page_is_a_corruption_error() -> None:
    """A row page whose checksum was recomputed after a neighbour id was forged opens (the
    page is well-formed) but the first search that reaches the id raises."""
    import struct
    import zlib

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    st_ = MemoryPageStore()
    h = HNSW(8, M=4, ef_construction=16, seed=1, ml=1e-3, store=st_)  # layer 0 only
    h.add_many(X, np.arange(300), threads=1)
    h.flush()
    page = h._node_pages[0]
    raw = bytearray(st_.get(page))
    head = struct.Struct("<4sIII")
    payload = bytearray(raw[head.size :])
    rows = np.frombuffer(bytes(payload[: 256 * 8 * 4]), "<i4").reshape(256, 8).copy()
    rows[:, 0] = 10**9  # every node's first neighbour
    payload[: rows.nbytes] = rows.astype("<i4").tobytes()
    mg, blk, cnt, _ = head.unpack_from(raw)
    st_.put(page, head.pack(mg, blk, cnt, zlib.crc32(bytes(payload))) + bytes(payload))
    g = HNSW.open(st_)
    with pytest.raises(CorruptionError):
        g.search(X[0], 5, exact=False)
    with pytest.raises(CorruptionError):
        g.search_many(X[:4], 5, exact=False, threads=2)
    with pytest.raises(CorruptionError):
        g.add(X[0] + 1, 10_000)
    assert g.search(X[0], 1, exact=True)[0][0] == 0  # the exact scan reads no ids
