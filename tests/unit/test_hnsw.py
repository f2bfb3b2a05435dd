"""Unit tests of llmdsdb.hnsw: API shape, distances, validation, deletion, persistence."""

from __future__ import annotations

import math

import numpy as np
import pytest

import llmdsdb.hnsw as hnsw_mod
from llmdsdb.errors import (
    ConfigConflictError,
    CorruptionError,
    DimensionError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    NotFoundError,
    QueryError,
    ZeroVectorError,
)
from llmdsdb.hnsw import HNSW
from llmdsdb.pages import MemoryPageStore


def clustered(n: int, dim: int, seed: int = 0, centers: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centers, dim))
    return (c[rng.integers(0, centers, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def brute(X: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    X64 = X.astype(np.float64)
    q64 = q.astype(np.float64)
    if metric == "cosine":
        d = 1 - (X64 / np.linalg.norm(X64, axis=1, keepdims=True)) @ (q64 / np.linalg.norm(q64))
    elif metric == "ip":
        d = -(X64 @ q64)
    else:
        d = ((X64 - q64) ** 2).sum(axis=1)
    o = np.argsort(d, kind="stable")[:k]
    return o, d[o]


def snapshot(h: HNSW) -> tuple:
    n = h._n
    return (
        len(h),
        h._n,
        h._entry,
        h._max_level,
        h._adj0[:n].tobytes(),
        h._vecs[:n].tobytes(),
        tuple(a[: h._lcount[i]].tobytes() for i, a in enumerate(h._ladj)),
        dict(h._id_map),
        h._rng.bit_generator.state["state"]["state"],
    )


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(1200, 16, seed=1)


@pytest.fixture(scope="module")
def built(data: np.ndarray) -> HNSW:
    h = HNSW(16, M=8, ef_construction=64, seed=7)
    h.add_many(data, np.arange(1000, 1000 + len(data)))
    return h


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_distances_match_brute_force(metric: str, data: np.ndarray) -> None:
    h = HNSW(16, M=8, ef_construction=64, seed=1, metric=metric)
    h.add_many(data[:600], np.arange(600))
    h._check()
    q = data[700]
    ids, ds = brute(data[:600], q, 5, metric)
    for exact in (True, False):
        got = h.search(q, k=5, ef=200, exact=exact)
        assert [i for i, _ in got] == ids.tolist()
        np.testing.assert_allclose([d for _, d in got], ds, rtol=1e-4, atol=1e-4)
    many = h.search_many(data[700:703], k=5, ef=200, exact=False)
    assert [i for i, _ in many[0]] == ids.tolist()


def test_graph_recall_against_exact(built: HNSW, data: np.ndarray) -> None:
    Q = clustered(100, 16, seed=99)
    approx, _ = built.search_many_arrays(Q, k=10, exact=False)
    exact, _ = built.search_many_arrays(Q, k=10, exact=True)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95
    singles = np.array([[i for i, _ in built.search(q, 10, exact=False)] for q in Q])
    recall1 = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(singles, exact)])
    assert recall1 >= 0.95


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("ml", [1e-3, 1 / math.log(16), 1 / math.log(2)])
def test_every_layer_count_finds_the_neighbours(metric: str, ml: float, data: np.ndarray) -> None:
    """No upper layer (ml ~ 0: the search starts at the entry point of layer 0), a few, and
    many: single and batched graph search find the exact neighbours."""
    h = HNSW(16, M=8, ef_construction=64, seed=3, metric=metric, ml=ml)
    h.add_many(data[:600], np.arange(600), threads=1)
    assert (h._max_level == 0) == (ml == 1e-3)
    Q = data[700:760]
    exact, _ = h.search_many_arrays(Q, k=10, exact=True)
    batch, _ = h.search_many_arrays(Q, k=10, ef=40, exact=False)
    singles = [h.search(q, 10, ef=40, exact=False) for q in Q]
    for got in (batch, np.array([[i for i, _ in r] for r in singles])):
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(got, exact)])
        assert recall >= 0.9
    for r in singles:
        assert len({i for i, _ in r}) == 10
        assert [d for _, d in r] == sorted(d for _, d in r)


def test_results_sorted_and_sized(built: HNSW, data: np.ndarray) -> None:
    res = built.search(data[3], k=7, exact=False)
    assert len(res) == 7
    assert [d for _, d in res] == sorted(d for _, d in res)
    assert res[0][0] == 1003 and res[0][1] == pytest.approx(0.0, abs=1e-5)
    ids, ds = built.search_many_arrays(data[:4], k=3)
    assert ids.shape == (4, 3) and ds.shape == (4, 3) and ids.dtype == np.int64
    assert ids[:, 0].tolist() == [1000, 1001, 1002, 1003]


def test_empty_and_small_indexes() -> None:
    h = HNSW(3, seed=0)
    assert h.search(np.ones(3), k=5) == []
    assert h.search_many(np.ones((2, 3)), k=5) == [[], []]
    h.add(np.array([1.0, 0, 0]), 5)
    h.add(np.array([0, 1.0, 0]), 6)
    assert [i for i, _ in h.search(np.array([1.0, 0.1, 0]), k=5, exact=False)] == [5, 6]
    ids, ds = h.search_many_arrays(np.array([[1.0, 0.1, 0]]), k=4, exact=False)
    assert ids[0, :2].tolist() == [5, 6] and np.isinf(ds[0, 2:]).all()
    h._check()


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_exact_ties_deletions_and_short_indexes(metric: str) -> None:
    """Exact search, single and batched: equal distances go to the earlier insert, deleted
    vectors never appear, k beyond the live count pads (batch) or shortens (single)."""
    rng = np.random.default_rng(3)
    h = HNSW(4, seed=0, metric=metric)
    same = np.array([1.0, 2.0, 0.5, -1.0], np.float32)
    others = (-3 * same + rng.normal(size=(30, 4))).astype(np.float32)  # far under every metric
    h.add_many(np.vstack([others[:10], np.tile(same, (5, 1)), others[10:]]), [*range(100, 110), 50, 40, 30, 20, 10, *range(110, 130)])
    q = same * 1.0
    for k in (1, 3, 5):
        single = [i for i, _ in h.search(q, k=k, exact=True)]
        assert single == [50, 40, 30, 20, 10][:k]
        ids, ds = h.search_many_arrays(np.stack([q, q]), k=k, exact=True)
        assert ids.tolist() == [single, single]
    h.delete(40)
    h.delete(10)
    assert [i for i, _ in h.search(q, k=3, exact=True)] == [50, 30, 20]
    ids, ds = h.search_many_arrays(q[None, :], k=3, exact=True)
    assert ids[0].tolist() == [50, 30, 20]
    live = len(h)
    res = h.search(q, k=live + 3, exact=True)
    assert len(res) == live and 40 not in [i for i, _ in res]
    assert [d for _, d in res] == sorted(d for _, d in res)
    ids, ds = h.search_many_arrays(q[None, :], k=live + 3, exact=True)
    assert ids[0, :live].tolist() == [i for i, _ in res]
    assert (ids[0, live:] == -1).all() and np.isinf(ds[0, live:]).all()
    np.testing.assert_allclose(ds[0, :live], [d for _, d in res], rtol=1e-5, atol=1e-5)


def test_len_contains_get_vector(built: HNSW, data: np.ndarray) -> None:
    assert len(built) == len(data)
    assert 1000 in built and 999 not in built and "x" not in built
    v = built.get_vector(1005)
    np.testing.assert_allclose(v, data[5], rtol=1e-5, atol=1e-5)
    with pytest.raises(NotFoundError):
        built.get_vector(5)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (np.ones(4), DimensionError),
        (np.ones((1, 3)), DimensionError),
        (np.array([1.0, np.nan, 0]), NonFiniteError),
        (np.array([1.0, np.inf, 0]), NonFiniteError),
        (np.array([1.0, -np.inf, 0]), NonFiniteError),
        (np.zeros(3), ZeroVectorError),
        (np.array([1, 2, 3], dtype=object), InvalidTypeError),
        (np.array([1 + 1j, 0, 0]), InvalidTypeError),
        (np.array(["a", "b", "c"]), InvalidTypeError),
        (np.array([True, False, True]), InvalidTypeError),
        ([[1, 2], [3]], InvalidTypeError),
    ],
)
def test_add_rejects_bad_vectors_and_leaves_index_unchanged(bad: object, error: type) -> None:
    h = HNSW(3, seed=0)
    h.add_many(np.eye(3) + 0.1, [1, 2, 3])
    before = snapshot(h)
    with pytest.raises(error):
        h.add(bad, 10)
    assert snapshot(h) == before
    h._check()


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        (np.ones((2, 4)), DimensionError),
        (np.ones(3), DimensionError),
        (np.array([[1.0, 1, 1], [1.0, np.nan, 0]]), NonFiniteError),
        (np.array([[1.0, 1, 1], [0.0, 0, 0]]), ZeroVectorError),
        (np.array([[1.0, 1, 1], [1, 2, "x"]], dtype=object), InvalidTypeError),
        (np.ones((2, 3), dtype=np.complex64), InvalidTypeError),
    ],
)
def test_add_many_rejects_the_whole_batch(batch: np.ndarray, error: type) -> None:
    h = HNSW(3, seed=0)
    h.add_many(np.eye(3) + 0.1, [1, 2, 3])
    before = snapshot(h)
    with pytest.raises(error):
        h.add_many(batch, [11, 12][: len(batch) if np.ndim(batch) == 2 else 2])
    assert snapshot(h) == before
    h._check()


@pytest.mark.parametrize(
    ("bad", "error"),
    [(np.ones(2), DimensionError), (np.zeros(3), ZeroVectorError), (np.array([np.nan, 1, 1]), NonFiniteError),
     (np.array([1, 1, 1], dtype=object), InvalidTypeError)],
)
def test_query_validation(bad: np.ndarray, error: type) -> None:
    h = HNSW(3, seed=0)
    h.add_many(np.eye(3) + 0.1, [1, 2, 3])
    with pytest.raises(error):
        h.search(bad)
    with pytest.raises(error):
        h.search_many(bad[None, :])


def test_k_and_ef_validation() -> None:
    h = HNSW(3, seed=0)
    h.add_many(np.eye(3) + 0.1, [1, 2, 3])
    with pytest.raises(QueryError):
        h.search(np.ones(3), k=0)
    with pytest.raises(QueryError):
        h.search(np.ones(3), k=2, ef=0)
    with pytest.raises(InvalidTypeError):
        h.search(np.ones(3), k=2.5)  # type: ignore[arg-type]


def test_duplicate_ids_rejected_atomically() -> None:
    h = HNSW(3, seed=0)
    h.add_many(np.eye(3) + 0.1, [1, 2, 3])
    before = snapshot(h)
    with pytest.raises(DuplicateIdError):
        h.add(np.ones(3), 2)
    with pytest.raises(DuplicateIdError):
        h.add_many(np.ones((2, 3)), [7, 7])
    with pytest.raises(DuplicateIdError):
        h.add_many(np.ones((2, 3)), [8, 3])
    with pytest.raises(InvalidArgumentError):
        h.add_many(np.ones((2, 3)), [8])
    with pytest.raises(InvalidTypeError):
        h.add_many(np.ones((2, 3)), ["a", "b"])
    with pytest.raises(InvalidTypeError):
        h.add(np.ones(3), True)  # type: ignore[arg-type]
    assert snapshot(h) == before


def test_huge_values_do_not_overflow_silently() -> None:
    h = HNSW(3, seed=0)
    h.add(np.array([1e38, 1e38, 0], dtype=np.float32), 1)  # norm overflows float32, not float64
    h.add(np.array([1e200, 0, 1e200]), 2)
    assert h.search(np.array([1.0, 1.0, 0]), k=1)[0][0] == 1
    assert np.isfinite(h.get_vector(1)).all()
    l2 = HNSW(3, seed=0, metric="l2")
    with pytest.raises(NonFiniteError):
        l2.add(np.array([1e38, 1e38, 0], dtype=np.float32), 1)
    with pytest.raises(NonFiniteError):
        l2.add(np.array([1e300, 0, 0]), 1)  # beyond float32
    assert len(l2) == 0
    l2.add(np.array([1e-30, 0, 0]), 3)  # tiny is fine (no zero check under l2)
    h.add(np.array([1e-30, 1e-30, 0]), 3)  # tiny but non-zero is a direction under cosine
    assert h.search(np.array([1.0, 1.0, 0]), k=2)[1][1] == pytest.approx(0.0, abs=1e-6)


def test_constructor_validation() -> None:
    for kwargs in ({"dim": 0}, {"dim": 3, "M": 1}, {"dim": 3, "M": hnsw_mod._M_MAX + 1}, {"dim": 3, "ef_search": 0}, {"dim": 3, "ml": 0.0}, {"dim": 3, "metric": "hamming"}):
        with pytest.raises(InvalidArgumentError):
            HNSW(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        HNSW("3")  # type: ignore[arg-type]


def test_visited_epochs_wrap_and_threads_do_not_change_results(built: HNSW, data: np.ndarray) -> None:
    """Searches across the wrap of the visited stamps' 16-bit epoch, and batches spread over
    several threads, return what a fresh one-thread run returns."""
    Q = data[:40] + 0.01
    ref_single = [built.search(q, 10, ef=32, exact=False) for q in Q[:8]]
    ref_ids, ref_d = built.search_many_arrays(Q, 10, ef=32, exact=False, threads=1)
    g = built._graph()
    g._set_epoch(65535 - 3)  # the next few searches wrap
    for _ in range(3):
        assert [built.search(q, 10, ef=32, exact=False) for q in Q[:8]] == ref_single
        ids, d = built.search_many_arrays(Q, 10, ef=32, exact=False, threads=1)
        assert np.array_equal(ids, ref_ids) and np.array_equal(d, ref_d)
    assert min(g._epochs()) < 65535 - 3  # the scratch these searches took did wrap
    for threads in (2, 3, 7):
        ids, d = built.search_many_arrays(Q, 10, ef=32, exact=False, threads=threads)
        assert np.array_equal(ids, ref_ids) and np.array_equal(d, ref_d)
    assert built.search_many(Q[:8], 10, ef=32, exact=False, threads=2) == ref_single


def test_delete_never_returned_and_compact(data: np.ndarray) -> None:
    h = HNSW(16, M=8, ef_construction=48, seed=3)
    h.add_many(data[:500], np.arange(500))
    gone = set(range(0, 500, 3))
    for i in gone:
        h.delete(i)
    h._check()
    assert len(h) == 500 - len(gone)
    assert 3 not in h
    with pytest.raises(NotFoundError):
        h.delete(3)
    with pytest.raises(NotFoundError):
        h.get_vector(3)
    for q in data[:60]:
        for exact in (True, False):
            ids = [i for i, _ in h.search(q, k=10, exact=exact)]
            assert len(ids) == 10 and not gone & set(ids)
    ids, _ = h.search_many_arrays(data[:60], k=10, exact=False)
    assert not gone & set(ids.ravel().tolist())
    h.add(data[0], 0)  # a deleted id can be used again
    assert h.search(data[0], k=1, exact=False)[0][0] == 0
    removed = h.compact()
    assert removed == len(gone) and h._n == len(h)
    h._check()
    ids, _ = h.search_many_arrays(data[:60], k=10, exact=False)
    assert not (gone - {0}) & set(ids.ravel().tolist())


def test_delete_everything() -> None:
    h = HNSW(4, seed=0)
    h.add_many(np.eye(4) + 0.01, [1, 2, 3, 4])
    for i in (1, 2, 3, 4):
        h.delete(i)
    assert len(h) == 0 and h.search(np.ones(4), k=3, exact=False) == []
    h._check()


def test_determinism_for_a_seed(data: np.ndarray) -> None:
    def build(seed: int) -> HNSW:
        h = HNSW(16, M=8, ef_construction=40, seed=seed)
        h.add_many(data[:300], np.arange(300), threads=1)
        h.add(data[300], 300)
        h.add_many(data[301:400], np.arange(301, 400), threads=1)
        return h

    a, b = build(5), build(5)
    assert snapshot(a) == snapshot(b)
    assert a.search_many(data[:20], k=5, exact=False) == b.search_many(data[:20], k=5, exact=False)


class CountingStore(MemoryPageStore):
    def __init__(self) -> None:
        super().__init__()
        self.puts: list[int] = []

    def put(self, page_id: int, data: bytes) -> None:
        self.puts.append(page_id)
        super().put(page_id, data)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_flush_open_round_trip_and_dirty_pages(metric: str, data: np.ndarray) -> None:
    st = CountingStore()
    h = HNSW(16, M=8, ef_construction=48, seed=3, metric=metric, store=st)
    h.add_many(data, np.arange(len(data)))
    h.delete(17)
    h.flush()
    assert h.stats()["dirty_pages"] == 0
    h2 = HNSW.open(st)
    h2._check()
    assert snapshot(h2)[:8] == snapshot(h)[:8]
    Q = data[:50] + 0.01
    assert h2.search_many(Q, k=10, exact=False) == h.search_many(Q, k=10, exact=False)
    assert [h2.search(q, 5, exact=False) for q in Q[:5]] == [h.search(q, 5, exact=False) for q in Q[:5]]
    assert 17 not in h2 and len(h2) == len(h)
    # one more vector dirties only a few pages, not the whole index
    st.puts.clear()
    h2.add(data[0] + 0.5, 99999)
    h2.flush()
    total_pages = 2 * math.ceil((len(data) + 1) / 256)
    assert 0 < len(st.puts) < total_pages
    h3 = HNSW.open(st, ef_search=80)
    assert h3.ef_search == 80 and 99999 in h3
    assert h3.search(data[0] + 0.5, 1, exact=False)[0][0] == 99999
    # a later add after reopen continues the level sequence deterministically
    h2.add(data[1] + 0.5, 100000)
    h3.add(data[1] + 0.5, 100000)
    assert snapshot(h2) == snapshot(h3)


def test_open_errors(data: np.ndarray) -> None:
    st = MemoryPageStore()
    with pytest.raises(NotFoundError):
        HNSW.open(st)
    h = HNSW(16, seed=1, store=st)
    h.add_many(data[:300], np.arange(300))
    h.flush()
    with pytest.raises(ConfigConflictError):
        HNSW.open(st, dim=8)
    with pytest.raises(ConfigConflictError):
        HNSW.open(st, metric="l2")
    assert HNSW.open(st, metric="cosine", dim=16).dim == 16
    # flip one byte of a vector page: the checksum catches it
    page = h._vec_pages[0]
    raw = bytearray(st.get(page))
    raw[-1] ^= 0xFF
    st.put(page, bytes(raw))
    with pytest.raises(CorruptionError):
        HNSW.open(st)


def test_compact_then_flush_frees_pages(data: np.ndarray) -> None:
    st = MemoryPageStore()
    h = HNSW(16, M=8, ef_construction=32, seed=2, store=st)
    h.add_many(data[:600], np.arange(600))
    h.flush()
    pages_before = len(st)
    for i in range(300):
        h.delete(i)
    h.compact()
    h.flush()
    assert len(st) < pages_before
    h2 = HNSW.open(st)
    h2._check()
    assert h2.search_many(data[300:320], k=5, exact=False) == h.search_many(data[300:320], k=5, exact=False)


def test_stats(built: HNSW) -> None:
    s = built.stats()
    assert s["count"] == len(built) and s["dim"] == 16 and s["metric"] == "cosine"
    assert s["layer_sizes"][0] == len(built) and s["memory_bytes"] > 0
    assert 0 < s["mean_degree_layer0"] <= 16


def test_scifact_recall_at_default_ef(data_dir) -> None:  # type: ignore[no-untyped-def]
    X = np.load(data_dir / "scifact" / "corpus_emb.npy")[:1200]
    Q = np.load(data_dir / "scifact" / "queries_emb.npy")[:100]
    h = HNSW(384, ef_construction=64, seed=1, ml=1 / math.log(16))
    h.add_many(X, np.arange(len(X)))
    approx, _ = h.search_many_arrays(Q, k=10, exact=False)
    exact, _ = h.search_many_arrays(Q, k=10, exact=True)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.95


def test_constructor_refuses_a_store_that_holds_an_index() -> None:
    st = MemoryPageStore()
    h = HNSW(3, seed=0, store=st)
    h.add(np.ones(3), 1)
    h.flush()
    with pytest.raises(ConfigConflictError):
        HNSW(3, store=st)
    assert 1 in HNSW.open(st)


def test_version_and_stats_name_the_kernels_instruction_set() -> None:
    from click.testing import CliRunner

    import llmdsdb._native as native
    from llmdsdb.cli import cli

    isa = native.kernel_info()["isa"]
    out = CliRunner().invoke(cli, ["--version"]).output
    assert f"compiled kernels: {isa};" in out and "HnswGraph" in out
    assert HNSW(3).stats()["kernel_isa"] in {"avx512", "avx2", "scalar"}


def test_python_threads_search_one_index_concurrently(built: HNSW, data: np.ndarray) -> None:
    """The kernels release the GIL and take per-thread scratch from a pool: Python threads
    searching at once get what one thread gets."""
    import concurrent.futures

    Q = data[:64] + 0.02
    want = [built.search(q, 10, ef=40, exact=False) for q in Q]
    want_many = built.search_many(Q, 10, ef=40, exact=False, threads=1)

    def job(i: int) -> tuple[list, list]:
        return [built.search(q, 10, ef=40, exact=False) for q in Q], built.search_many(Q, 10, ef=40, exact=False, threads=2)

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for singles, many in ex.map(job, range(8)):
            assert singles == want and many == want_many == want


def test_single_adds_keep_the_kernel_handle(data: np.ndarray) -> None:
    """An add that replaces no array keeps the kernels' handle (and its scratch): a stream
    of single adds does not rebuild per-index state each time."""
    h = HNSW(16, M=8, ef_construction=32, seed=4)
    h.add_many(data[:200], np.arange(200), threads=1)

    def arrays() -> list[int]:
        return [h._vecs.ctypes.data, *(a.ctypes.data for a in h._ladj)]

    kept = 0
    for i in range(200, 250):
        g, before = h._graph(), arrays()
        h.add(data[i], i)
        if arrays() == before:
            assert h._g is g
            kept += 1
    assert kept >= 40
    h._check()
    ids, _ = h.search_many_arrays(data[200:250], 1, ef=32, exact=False)
    assert ids[:, 0].tolist() == list(range(200, 250))


def test_first_node_after_compacting_to_empty_reaches_its_page() -> None:
    """The entry node of an empty graph gets no row from the kernel, but its rows page (ids,
    flags) must still be written: found by the state machine (stale page after reopen)."""
    st = MemoryPageStore()
    h = HNSW(6, M=4, ef_construction=24, seed=0, store=st)
    v = np.array([0, 0, 0, 0, 0, 1.0], np.float32)
    h.add(v, 4)
    h.delete(4)
    h.flush()
    h = HNSW.open(st)
    assert h.compact() == 1 and len(h) == 0
    h.add_many(v[None, :], [11])
    h.flush()
    g = HNSW.open(st)
    g._check()
    assert len(g) == 1 and g.search(v, 5, exact=False) == h.search(v, 5, exact=False) == [(11, 0.0)]
