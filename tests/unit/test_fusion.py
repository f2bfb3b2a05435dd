"""Examples and bad input for llmdsdb.fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmdsdb.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    LlmdsdbError,
    NonFiniteError,
    QueryError,
)
from llmdsdb.fusion import (
    DEFAULT_RRF_K,
    FusedHit,
    candidate_depth,
    distance_to_similarity,
    fuse,
    fused_pairs,
    minmax_normalize,
    theoretical_normalize,
    validate_fusion_args,
    zscore_normalize,
)

BM25 = [(1, 12.0), (2, 7.0), (4, 2.0)]
DENSE = [(2, 0.1), (1, 0.3), (3, 0.4)]  # cosine distances


def keys(hits: list[FusedHit]) -> list:
    return [h.key for h in hits]


# --- normalisations ----------------------------------------------------------------------


def test_minmax_degenerate_cases() -> None:
    assert minmax_normalize(np.array([5.0])).tolist() == [1.0]
    assert minmax_normalize(np.array([2.0, 2.0, 2.0])).tolist() == [1.0, 1.0, 1.0]
    assert minmax_normalize(np.array([])).tolist() == []
    assert minmax_normalize(np.array([0.0, 10.0, 5.0])).tolist() == [0.0, 1.0, 0.5]


def test_zscore_degenerate_and_regular() -> None:
    assert zscore_normalize(np.array([3.0])).tolist() == [1.0]
    assert zscore_normalize(np.array([3.0, 3.0])).tolist() == [1.0, 1.0]
    z = zscore_normalize(np.array([1.0, 2.0, 3.0, 10.0]))
    assert math.isclose(z.mean(), 0.0, abs_tol=1e-12) and math.isclose(z.std(), 1.0)


def test_theoretical_uses_the_bound_and_falls_back_to_observed_min() -> None:
    assert theoretical_normalize(np.array([4.0, 1.0]), 0.0).tolist() == [1.0, 0.25]
    assert theoretical_normalize(np.array([4.0, 1.0]), None).tolist() == [1.0, 0.0]
    assert theoretical_normalize(np.array([0.0]), 0.0).tolist() == [1.0]


@pytest.mark.parametrize(
    ("metric", "dist", "sim"),
    [("cosine", [0.0, 1.0, 2.0], [1.0, 0.0, -1.0]), ("ip", [-3.0, 2.0], [3.0, -2.0]),
     ("l2", [0.0, 4.0], [-0.0, -4.0])],
)
def test_distance_to_similarity(metric: str, dist: list, sim: list) -> None:
    assert distance_to_similarity(np.array(dist), metric).tolist() == sim


def test_l2_on_unit_vectors_fuses_like_cosine() -> None:
    rng = np.random.default_rng(3)
    docs = rng.normal(size=(30, 8))
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    q = docs[0] + 0.3 * rng.normal(size=8)
    q /= np.linalg.norm(q)
    cos_d = [(i, float(1 - docs[i] @ q)) for i in range(30)]
    l2_d = [(i, float(((docs[i] - q) ** 2).sum())) for i in range(30)]
    ip_d = [(i, float(-(docs[i] @ q))) for i in range(30)]
    bm25 = [(i, float(s)) for i, s in enumerate(rng.random(20) * 9)]
    a = fuse(bm25, cos_d, metric="cosine", top_k=10)
    b = fuse(bm25, l2_d, metric="l2", top_k=10)
    c = fuse(bm25, ip_d, metric="ip", top_k=10)
    assert keys(a) == keys(b) == keys(c)
    assert np.allclose([h.score for h in a], [h.score for h in b])


# --- fuse: examples ----------------------------------------------------------------------


def test_convex_minmax_example_with_explain_fields() -> None:
    hits = fuse(BM25, DENSE, fusion_weight=0.5)
    assert keys(hits) == [2, 1, 3, 4]
    top = hits[0]
    assert top == FusedHit(2, 0.75, 7.0, 0.1, 2, 1, 0.5, 1.0)
    # Found by one side only: the other side's fields are None, its part counts as 0.
    h3 = hits[2]
    assert (h3.bm25_score, h3.bm25_rank, h3.bm25_norm) == (None, None, None)
    assert h3.vector_norm == 0.0 and h3.score == 0.0


def test_weight_zero_and_one_are_the_single_side_orders() -> None:
    assert keys(fuse(BM25, DENSE, fusion_weight=0.0)) == [1, 2, 4]
    assert keys(fuse(BM25, DENSE, fusion_weight=1.0)) == [2, 1, 3]
    # Explain data of the unused side is still attached.
    assert fuse(BM25, DENSE, fusion_weight=0.0)[0].vector_rank == 2


def test_weight_moves_the_ranking_towards_the_vector_side() -> None:
    bm25 = [(1, 10.0), (2, 1.0)]
    dense = [(2, 0.0), (1, 1.0)]
    assert keys(fuse(bm25, dense, fusion_weight=0.3)) == [1, 2]
    assert keys(fuse(bm25, dense, fusion_weight=0.7)) == [2, 1]


def test_none_side_falls_back_to_the_other_whatever_the_weight() -> None:
    for w in (0.0, 0.5, 1.0):
        hits = fuse(None, DENSE, fusion_weight=w)
        assert keys(hits) == [2, 1, 3]
        assert hits[0].score == 1.0  # the present side takes the whole weight
        assert keys(fuse(BM25, None, fusion_weight=w)) == [1, 2, 4]
    assert fuse(None, None) == []


def test_empty_side_means_queried_and_found_nothing() -> None:
    hits = fuse([], DENSE, fusion_weight=0.4)
    assert keys(hits) == [2, 1, 3]
    assert math.isclose(hits[0].score, 0.4)  # w * 1.0 + (1 - w) * 0
    assert fuse([], DENSE, fusion_weight=0.0) == []
    assert fuse([], [], fusion_weight=0.5) == []


def test_degenerate_side_is_binary() -> None:
    # One BM25 hit: it is "present" (1.0); vector-only candidates get 0 from BM25.
    hits = fuse([(7, 3.3)], [(7, 0.5), (8, 0.2)], fusion_weight=0.5)
    h = {x.key: x for x in hits}
    assert h[7].bm25_norm == 1.0 and h[8].bm25_norm is None
    assert math.isclose(h[7].score, 0.5) and math.isclose(h[8].score, 0.5)
    for norm in ("zscore", "theoretical"):
        hz = {x.key: x for x in fuse([(7, 3.3)], [(8, 0.2), (9, 0.3)], normalization=norm)}
        assert hz[7].bm25_norm == 1.0


def test_zscore_missing_gets_the_lowest_z_seen() -> None:
    hits = fuse([(1, 3.0), (2, 1.0)], [(3, 0.1), (1, 0.5)], normalization="zscore")
    h = {x.key: x for x in hits}
    assert h[1].bm25_norm == 1.0 and h[2].bm25_norm == -1.0
    assert math.isclose(h[3].score, 0.5 * 1.0 + 0.5 * -1.0, abs_tol=1e-12)


def test_rrf_scores_and_ties_share_a_rank() -> None:
    hits = fuse([(1, 5.0), (2, 5.0), (3, 1.0)], [(3, 0.1)], method="rrf", fusion_weight=0.5)
    h = {x.key: x for x in hits}
    assert h[1].bm25_rank == h[2].bm25_rank == 1 and h[3].bm25_rank == 3
    assert math.isclose(h[3].score, 0.5 / (DEFAULT_RRF_K + 3) + 0.5 / (DEFAULT_RRF_K + 1))
    assert math.isclose(h[1].score, 0.5 / (DEFAULT_RRF_K + 1))
    assert keys(hits) == [3, 1, 2]
    custom = fuse([(1, 5.0)], [(2, 0.1)], method="rrf", rrf_k=0)
    assert [x.score for x in custom] == [0.5, 0.5]


def test_top_k_truncates_and_ties_break_by_key() -> None:
    hits = fuse([(9, 1.0), (3, 1.0), (5, 1.0)], None, top_k=2)
    assert keys(hits) == [3, 5]
    # Keys that cannot be compared fall back to first appearance, without an error.
    mixed = fuse([("a", 1.0), (2, 1.0)], None)
    assert keys(mixed) == ["a", 2]


def test_string_keys_and_numpy_scores() -> None:
    bm25 = [("x", np.float32(2.0)), ("y", np.int64(1)), ("z", 0.5)]
    hits = fuse(bm25, [("y", np.float64(0.0)), ("x", 0.5)])
    assert keys(hits) == ["y", "x", "z"]


def test_higher_is_better_dense_values() -> None:
    sims = [(2, 0.9), (1, 0.7), (3, 0.6)]  # similarities, not distances
    assert keys(fuse(BM25, sims, higher_is_better=True)) == keys(fuse(BM25, DENSE))


def test_fill_missing_gives_real_scores_to_one_side_candidates() -> None:
    calls = []

    def fill(side: str, ks: list) -> list:
        calls.append((side, sorted(ks)))
        return [0.0 if side == "bm25" else 1.5 for _ in ks]

    hits = fuse([(1, 4.0), (2, 2.0)], [(3, 0.2), (1, 0.6)], fill_missing=fill)
    assert sorted(calls) == [("bm25", [3]), ("vector", [2])]
    h = {x.key: x for x in hits}
    assert h[3].bm25_score == 0.0 and h[3].bm25_rank is None and h[3].bm25_norm == 0.0
    assert h[2].vector_distance == 1.5 and h[2].vector_rank is None
    # The filled distance 1.5 is the new worst: doc 1's 0.6 is now well above it.
    assert h[1].vector_norm is not None and h[1].vector_norm > 0.6
    # None = "no value on that side" (a document without an embedding): stays missing.
    hits = fuse([(1, 4.0), (2, 2.0)], [(1, 0.6), (3, 0.2)],
                fill_missing=lambda side, ks: [None] * len(ks))
    assert {x.key: x.vector_norm for x in hits}[2] is None


def test_fill_missing_is_ignored_by_rrf() -> None:
    def boom(side: str, ks: list) -> list:
        raise AssertionError("rrf must not call fill_missing")

    assert keys(fuse(BM25, DENSE, method="rrf", fill_missing=boom))


def test_fused_pairs_and_candidate_depth() -> None:
    assert fused_pairs(fuse(BM25, None)) == [(1, 1.0), (2, 0.5), (4, 0.0)]
    assert candidate_depth(10) >= 10 and candidate_depth(5000) == 5000


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"fusion_weight": float("nan")}, InvalidArgumentError, "fusion_weight"),
        ({"fusion_weight": -0.01}, InvalidArgumentError, "[0, 1]"),
        ({"fusion_weight": 1.5}, InvalidArgumentError, "[0, 1]"),
        ({"fusion_weight": "0.5"}, InvalidTypeError, "fusion_weight"),
        ({"fusion_weight": True}, InvalidTypeError, "fusion_weight"),
        ({"fusion_weight": None}, InvalidTypeError, "fusion_weight"),
        ({"method": "sum"}, InvalidArgumentError, "'convex', 'rrf'"),
        ({"method": None}, InvalidArgumentError, "'convex', 'rrf'"),
        ({"normalization": "l2"}, InvalidArgumentError, "'minmax', 'zscore', 'theoretical'"),
        ({"metric": "dot"}, InvalidArgumentError, "'cosine', 'ip', 'l2'"),
        ({"top_k": 0}, QueryError, "top_k"),
        ({"top_k": -3}, QueryError, "top_k"),
        ({"top_k": 2.5}, QueryError, "top_k"),
        ({"top_k": True}, QueryError, "top_k"),
        ({"rrf_k": -1}, InvalidArgumentError, "rrf_k"),
        ({"rrf_k": float("inf")}, InvalidArgumentError, "rrf_k"),
        ({"fill_missing": 3}, InvalidTypeError, "fill_missing"),
    ],
)
def test_bad_options(kwargs: dict, error: type, needle: str) -> None:
    with pytest.raises(error, match=None) as ei:
        fuse(BM25, DENSE, **kwargs)
    assert needle in str(ei.value)
    assert isinstance(ei.value, LlmdsdbError)


@pytest.mark.parametrize(
    ("bm25", "dense", "error"),
    [
        ([(1, float("nan"))], None, NonFiniteError),
        ([(1, 1.0)], [(2, float("inf"))], NonFiniteError),
        ([(1, 1.0), (1, 2.0)], None, InvalidArgumentError),  # a key twice
        ([(1, "3.0")], None, InvalidTypeError),
        ([(1, None)], None, InvalidTypeError),
        ([(1, True)], None, InvalidTypeError),
        ([(1, 2.0, 3)], None, InvalidTypeError),
        ([1, 2], None, InvalidTypeError),
        ([([1], 2.0)], None, InvalidTypeError),  # unhashable key
        (5, None, InvalidTypeError),
        ("ab", None, InvalidTypeError),
        ([(1, [1.0, 2.0])], None, InvalidTypeError),
    ],
)
def test_bad_sides(bm25: object, dense: object, error: type) -> None:
    with pytest.raises(error):
        fuse(bm25, dense)  # type: ignore[arg-type]


def test_bad_fill_missing_results() -> None:
    with pytest.raises(InvalidArgumentError, match="returned 0 values"):
        fuse(BM25, DENSE, fill_missing=lambda side, ks: [])
    with pytest.raises(NonFiniteError):
        fuse(BM25, DENSE, fill_missing=lambda side, ks: [float("nan")] * len(ks))
    for bad in ("1.5", "x", [1.0], True):  # were float()'s bare ValueError/TypeError, or 1.0
        with pytest.raises(InvalidTypeError, match="expected a number"):
            fuse(BM25, DENSE, fill_missing=lambda side, ks, bad=bad: [bad] * len(ks))


def test_validate_fusion_args_normalises_types() -> None:
    assert validate_fusion_args(fusion_weight=np.float32(0.25), top_k=np.int64(3)) == (
        0.25, "convex", "minmax", "cosine", 60.0, 3
    )


def test_inputs_are_not_mutated() -> None:
    bm25 = list(BM25)
    dense = list(DENSE)
    fuse(bm25, dense, fill_missing=lambda side, ks: [0.0] * len(ks))
    assert bm25 == BM25 and dense == DENSE


def test_accepts_iterators_and_tuples() -> None:
    assert keys(fuse(iter(BM25), tuple(DENSE))) == keys(fuse(BM25, DENSE))
