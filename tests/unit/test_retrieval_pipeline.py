"""RetrievalPipeline: seed API examples, fusion options, the result cache, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmdsdb.errors import (
    DimensionError,
    DocumentNotFoundError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    QueryError,
    ZeroVectorError,
)
from llmdsdb.fusion import FusedHit
from llmdsdb.retrieval_pipeline import RetrievalPipeline

DIM = 8
TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a fast brown fox leaps over sleeping dogs",
    "cats sleep all day long in the sun",
    "stock markets fell sharply on monday",
    "the central bank raised interest rates again",
    "dogs and cats can live together peacefully",
    "interest in foxes has grown among biologists",
    "a lazy afternoon in the sun with a good book",
]


def _emb(i: int) -> np.ndarray:
    rng = np.random.default_rng(100 + i)
    v = rng.normal(size=DIM)
    return v / np.linalg.norm(v)


@pytest.fixture
def pipe() -> RetrievalPipeline:
    p = RetrievalPipeline(embedding_dim=DIM, seed=7, token_budget=1000)
    for i, t in enumerate(TEXTS):
        p.add_document(i, t, _emb(i))
    return p


def exact_dense_order(query_vec: np.ndarray, ids: list[int]) -> list[int]:
    sims = {i: float(_emb(i) @ query_vec / np.linalg.norm(query_vec)) for i in ids}
    return sorted(ids, key=lambda i: (-sims[i], i))


def test_seed_api_shapes(pipe: RetrievalPipeline) -> None:
    res = pipe.search("brown fox", _emb(0), top_k=3)
    assert len(res) == 3
    assert all(isinstance(d, int) and isinstance(s, float) for d, s in res)
    scores = [s for _, s in res]
    assert scores == sorted(scores, reverse=True)
    assert res[0][0] == 0  # best on both sides
    assert all(0.0 <= s <= 1.0 for s in scores)  # min-max convex stays in [0, 1]


def test_weight_extremes_match_single_sides(pipe: RetrievalPipeline) -> None:
    q = _emb(3) + 0.1 * _emb(4)
    bm25_only = pipe.search("dogs cats sun", q, top_k=8, fusion_weight=0.0)
    text_only = pipe.search("dogs cats sun", None, top_k=8)
    assert [d for d, _ in bm25_only] == [d for d, _ in text_only]
    assert {d for d, _ in bm25_only} == {1, 2, 5, 7, 0}  # documents matching a query term
    vec_only = pipe.search("dogs cats sun", q, top_k=8, fusion_weight=1.0)
    # 8 documents are below the exact-search threshold of the graph: exact order.
    assert [d for d, _ in vec_only] == exact_dense_order(q, list(range(8)))
    assert [d for d, _ in pipe.search("", q, top_k=8)] == [d for d, _ in vec_only]


def test_empty_query_and_no_embedding_gives_nothing(pipe: RetrievalPipeline) -> None:
    assert pipe.search("", None) == []
    assert pipe.search("   ", None) == []
    assert pipe.search(None, None) == []
    assert pipe.search("zebra unicorn", None) == []  # no indexed term


def test_text_only_documents_and_vector_queries() -> None:
    p = RetrievalPipeline(embedding_dim=DIM, seed=1)
    p.add_document(10, "apples and pears")
    p.add_document(11, "pears only", _emb(1))
    assert [d for d, _ in p.search("apples pears", None)] == [10, 11]
    assert [d for d, _ in p.search(None, _emb(1))] == [11]
    hits = p.search_hits("apples", _emb(1), top_k=5)
    by = {h.key: h for h in hits}
    assert by[10].vector_distance is None and by[10].bm25_rank == 1
    assert by[11].bm25_rank is None and math.isclose(by[11].vector_distance, 0.0, abs_tol=1e-6)


def test_rrf_and_normalization_options(pipe: RetrievalPipeline) -> None:
    q = _emb(6)
    rrf = pipe.search_hits("interest fox", q, top_k=5, fusion="rrf")
    assert all(isinstance(h, FusedHit) for h in rrf)
    for h in rrf:
        want = 0.0
        if h.bm25_rank is not None:
            want += 0.5 / (60 + h.bm25_rank)
        if h.vector_rank is not None:
            want += 0.5 / (60 + h.vector_rank)
        assert math.isclose(h.score, want)
    z = pipe.search("interest fox", q, top_k=5, normalization="zscore")
    t = pipe.search("interest fox", q, top_k=5, normalization="theoretical")
    assert len(z) == len(t) == 5
    assert rrf[0].key == 6


def test_cache_hits_and_invalidation_on_add(pipe: RetrievalPipeline) -> None:
    q = _emb(2)
    first = pipe.search("sun", q, top_k=4)
    assert pipe.stats()["cache"]["misses"] == 1
    again = pipe.search("sun", q.copy(), top_k=4)  # equal content, another array: a hit
    assert again == first and pipe.stats()["cache"]["hits"] == 1
    assert pipe.stats()["cache"]["tokens"] == 1 + len(first)
    # Other options are other keys.
    pipe.search("sun", q, top_k=4, fusion_weight=0.3)
    assert pipe.stats()["cache"]["misses"] == 2
    # A write empties the cache, and the new document can appear at once.
    pipe.add_document(99, "sun sun sun", q)
    assert pipe.stats()["cache"]["entries"] == 0
    assert pipe.search("sun", q, top_k=4)[0][0] == 99
    pipe._check()


def test_cache_respects_the_token_budget() -> None:
    p = RetrievalPipeline(embedding_dim=DIM, token_budget=12)
    for i, t in enumerate(TEXTS):
        p.add_document(i, t)
    for word in ("fox", "dog", "sun", "interest", "lazy", "cats"):
        p.search(word, top_k=5)
        p._check()
    st = p.stats()["cache"]
    assert st["tokens"] <= 12 and st["evictions"] > 0


def test_result_larger_than_the_cache_budget_is_served_uncached() -> None:
    # top_k=8 results cost 9 tokens > 5: cache.put raised BudgetExceededError and the
    # search failed.
    p = RetrievalPipeline(embedding_dim=DIM, token_budget=5)
    for i in range(10):
        p.add_document(i, f"cat number {i}")
    big = p.search("cat", top_k=8)
    assert len(big) == 8 and p.search("cat", top_k=8) == big
    assert p.stats()["cache"]["entries"] == 0
    assert len(p.search("cat", top_k=2)) == 2 and p.stats()["cache"]["entries"] == 1
    p._check()


def test_cache_disabled_with_zero_budget() -> None:
    p = RetrievalPipeline(embedding_dim=DIM, token_budget=0)
    p.add_document(1, "hello world")
    got = p.search("hello")
    assert got == p.search("hello") and [d for d, _ in got] == [1]
    assert got[0][1] > 0.0  # the BM25 score itself, not a normalised 1.0
    assert p.stats()["cache"]["entries"] == 0


def test_batch_add_with_mixed_embeddings_and_remove() -> None:
    p = RetrievalPipeline(embedding_dim=DIM, seed=3)
    p.add_documents([1, 2, 3], ["alpha beta", "beta gamma", "gamma delta"],
                    [_emb(1), None, _emb(3)])
    st = p.stats()
    assert st["documents"] == 3 and st["documents_with_embedding"] == 2
    p.add_documents([4, 5], ["x y", "y z"], np.stack([_emb(4), _emb(5)]))
    assert len(p) == 5 and 4 in p and 6 not in p and True not in p
    p.remove_document(3)
    assert 3 not in p and p.stats()["documents_with_embedding"] == 3
    assert 3 not in [d for d, _ in p.search("gamma delta", _emb(3), top_k=5)]
    with pytest.raises(DocumentNotFoundError):
        p.remove_document(3)
    p._check()


def test_stats_shape(pipe: RetrievalPipeline) -> None:
    st = pipe.stats()
    assert st["documents"] == 8 and st["embedding_dim"] == DIM and st["metric"] == "cosine"
    assert st["bm25"]["num_docs"] == 8 and st["hnsw"]["count"] == 8
    assert set(st["cache"]) >= {"entries", "tokens", "token_budget", "hits", "misses"}


def test_constructor_defaults_follow_api_md() -> None:
    p = RetrievalPipeline()
    assert p.embedding_dim == 384 and p.token_budget == 100000
    h = p.stats()["hnsw"]
    assert (h["M"], h["ef_construction"], h["ef_search"]) == (16, 200, 50)


# --- bad input: clear errors, nothing changed ---------------------------------------------


def _snapshot(p: RetrievalPipeline) -> tuple:
    st = p.stats()
    return st["documents"], st["documents_with_embedding"], st["bm25"]["num_terms"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, "dup id"), DuplicateIdError),
        (("7", "text"), InvalidTypeError),
        ((True, "text"), InvalidTypeError),
        ((2**63, "text"), InvalidArgumentError),
        ((50, b"bytes"), InvalidTypeError),
        ((50, None), InvalidTypeError),
        ((50, "text", np.ones(DIM + 1)), DimensionError),
        ((50, "text", np.ones((1, DIM))), DimensionError),
        ((50, "text", np.full(DIM, np.nan)), NonFiniteError),
        ((50, "text", np.r_[np.ones(DIM - 1), np.inf]), NonFiniteError),
        ((50, "text", np.zeros(DIM)), ZeroVectorError),
        ((50, "text", np.array(["a"] * DIM)), InvalidTypeError),
        ((50, "text", np.ones(DIM, dtype=complex)), InvalidTypeError),
        ((50, "text", "not a vector"), InvalidTypeError),
    ],
)
def test_bad_add_document_changes_nothing(pipe: RetrievalPipeline, args: tuple, error: type) -> None:
    before = _snapshot(pipe)
    pipe.search("fox", None)
    with pytest.raises(error):
        pipe.add_document(*args)
    assert _snapshot(pipe) == before
    assert pipe.stats()["cache"]["entries"] == 1  # not even the cache was touched
    pipe._check()


@pytest.mark.parametrize(
    ("ids", "texts", "embs", "error"),
    [
        ([60, 60], ["a", "b"], None, DuplicateIdError),
        ([60, 61], ["a"], None, InvalidArgumentError),
        ([60, 61], ["a", "b"], [_emb(0)], InvalidArgumentError),
        ([60, 61], ["a", "b"], np.ones((2, DIM + 1)), DimensionError),
        ([60, 61], ["a", "b"], [_emb(0), np.zeros(DIM)], ZeroVectorError),
        ("ab", "cd", None, InvalidTypeError),
        ([60, 61], ["a", "b"], 5, InvalidTypeError),
    ],
)
def test_bad_batches_change_nothing(pipe: RetrievalPipeline, ids, texts, embs, error) -> None:
    before = _snapshot(pipe)
    with pytest.raises(error):
        pipe.add_documents(ids, texts, embs)
    assert _snapshot(pipe) == before
    assert 60 not in pipe


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"top_k": 0}, QueryError),
        ({"top_k": -1}, QueryError),
        ({"top_k": 1.5}, QueryError),
        ({"fusion_weight": float("nan")}, InvalidArgumentError),
        ({"fusion_weight": 2.0}, InvalidArgumentError),
        ({"fusion_weight": "0.5"}, InvalidTypeError),
        ({"fusion": "max"}, InvalidArgumentError),
        ({"normalization": "softmax"}, InvalidArgumentError),
        ({"query_embedding": np.ones(3)}, DimensionError),
        ({"query_embedding": np.zeros(DIM)}, ZeroVectorError),
        ({"query_embedding": np.full(DIM, np.inf)}, NonFiniteError),
        ({"query": 42}, InvalidTypeError),
        ({"query": b"fox"}, InvalidTypeError),
    ],
)
def test_bad_search_arguments(pipe: RetrievalPipeline, kwargs: dict, error: type) -> None:
    args = {"query": "fox", **kwargs}
    with pytest.raises(error) as ei:
        pipe.search(**args)
    if "fusion" in kwargs or "normalization" in kwargs:
        assert "one of" in str(ei.value)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"embedding_dim": 0}, InvalidArgumentError),
        ({"embedding_dim": "8"}, InvalidTypeError),
        ({"token_budget": -1}, InvalidArgumentError),
        ({"metric": "manhattan"}, InvalidArgumentError),
        ({"candidates": 0}, InvalidArgumentError),
        ({"hnsw_M": 1}, InvalidArgumentError),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        RetrievalPipeline(**kwargs)


def test_large_values_cosine_accepted_l2_rejected_before_any_change() -> None:
    p = RetrievalPipeline(embedding_dim=DIM)
    p.add_document(1, "big", np.full(DIM, 1e35))  # cosine keeps only the direction
    assert [d for d, _ in p.search(None, np.ones(DIM))] == [1]
    q = RetrievalPipeline(embedding_dim=DIM, metric="l2")
    with pytest.raises(NonFiniteError):
        q.add_document(1, "big", np.full(DIM, 1e35))
    assert len(q) == 0 and q.stats()["bm25"]["num_docs"] == 0
    q.add_document(1, "small", np.ones(DIM))
    assert q.search("small", np.ones(DIM)) == [(1, 1.0)]


def test_huge_top_k_is_clamped_to_the_collection(pipe: RetrievalPipeline) -> None:
    res = pipe.search("fox", _emb(0), top_k=10**9)
    assert len(res) == 8
