"""Hybrid retrieval: the one query path (BM25 + vector candidates, fused), and the in-memory
:class:`RetrievalPipeline` built on it.

:class:`HybridSearcher` is the hybrid query path of the whole project: a query
(:class:`HybridQuery`: text, vector, top_k, a :class:`~llmdsdb.fusion.FusionSpec` validated
where it was made) is planned once (:func:`plan`: which sides run, how many candidates each),
each side's index is asked for its candidates, and the lists are fused (a single side skips
the fusion machinery and gets the same scores). :class:`~llmdsdb.db.Database` runs it over
its LMDB-backed indexes, :class:`RetrievalPipeline` over indexes in memory, so the two give
the same ids and scores for the same documents, and ``search_many`` gives each query exactly
what ``search`` gives it.

:class:`RetrievalPipeline` keeps an :class:`~llmdsdb.inverted_index.InvertedIndex` over the
text of every document and a :class:`~llmdsdb.vector_segment.VectorSegment` (an
:class:`~llmdsdb.hnsw.HNSW` graph plus exactly searched fresh vectors) over the embeddings
of the documents that have one. A query takes up to ``max(top_k, candidates)`` candidates
from each side and fuses them (see ``docs/fusion.md`` for why min-max convex fusion at
weight 0.5 is the default); the fused list is cached in a
:class:`~llmdsdb.token_lru.TokenLRU` keyed by a stable digest of the query and its options.
Any write clears the cache.

Invariant (checked by :meth:`RetrievalPipeline._check`): the inverted index holds exactly
the pipeline's documents, the graph exactly those with an embedding, and the cache holds at
most ``token_budget`` tokens, none of them older than the last write.

>>> import numpy as np
>>> p = RetrievalPipeline(embedding_dim=3, seed=0)
>>> p.add_document(1, "the cat sat on the mat", np.array([1.0, 0.0, 0.0]))
>>> p.add_document(2, "dogs chase cats", np.array([0.0, 1.0, 0.0]))
>>> p.add_document(3, "a mat for the hall")
>>> [d for d, _ in p.search("cat mat", np.array([0.9, 0.1, 0.0]), top_k=3)]
[1, 3, 2]
>>> [(d, round(s, 3)) for d, s in p.search("cat mat", fusion_weight=0.0, top_k=1)]  # BM25
[(1, 0.894)]
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from llmdsdb._validate import INT64_MAX, INT64_MIN, METRICS, as_int, check_choice, check_int, utf8
from llmdsdb._validate import vector as _vector
from llmdsdb._validate import vectors as _vectors
from llmdsdb.errors import (
    DocumentNotFoundError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    QueryError,
)
from llmdsdb.fusion import (
    DEFAULT_CANDIDATE_DEPTH,
    DEFAULT_FUSION,
    DEFAULT_FUSION_WEIGHT,
    DEFAULT_NORMALIZATION,
    FusedHit,
    FusionMethod,
    FusionSpec,
    Normalization,
    bm25_own_hits,
)
from llmdsdb.hnsw import HNSW
from llmdsdb.inverted_index import InvertedIndex
from llmdsdb.token_lru import TokenLRU
from llmdsdb.vector_segment import VectorSegment

__all__ = ["HybridQuery", "HybridSearcher", "QueryPlan", "RetrievalPipeline", "make_query"]


# --- the one hybrid query path -------------------------------------------------------------


@dataclass(frozen=True)
class HybridQuery:
    """One validated query: text (None: no text side), vector (float32 of shape (dim,) or
    None), ``top_k``, the fusion spec (validated where it was made) and ``filter``: the
    :class:`~llmdsdb.allow.AllowSet` of the documents a metadata filter allows (None: no
    filter; see :mod:`llmdsdb.filtered_search`).

    Frozen, so safe to share between threads.
    """

    text: str | None
    vector: np.ndarray | None
    top_k: int
    fusion: FusionSpec
    filter: Any = None


def make_query(text: object, vector: object, top_k: object, fusion: FusionSpec, *,
               dim: int | None, metric: str, max_top_k: int | None = None,
               max_text_bytes: int | None = None) -> HybridQuery:
    """Validate one query's arguments (the fusion spec is validated already).

    Complexity: O(len(text) + dim).

    :raises InvalidTypeError: text not a str (or None), a non-numeric vector.
    :raises QueryError: ``top_k`` not an int in [1, ``max_top_k``], a text over
        ``max_text_bytes``.
    :raises DimensionError, NonFiniteError, ZeroVectorError: a bad vector (the one rule of
        :mod:`llmdsdb._validate`).
    """
    if text is not None:
        if not isinstance(text, str):
            raise InvalidTypeError(f"query must be a str or None, not {type(text).__name__}")
        if max_text_bytes is not None:
            nb = len(utf8(text, "query")) if len(text) <= max_text_bytes else 4 * len(text)
            if nb > max_text_bytes:
                raise QueryError(f"query is {nb} bytes; the limit is {max_text_bytes}")
    vec = None if vector is None else _vector(vector, dim=dim, metric=metric, what="vector")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1 \
            or (max_top_k is not None and top_k > max_top_k):
        bound = f"in [1, {max_top_k}]" if max_top_k is not None else "a positive int"
        raise QueryError(f"top_k must be {bound}, got {top_k!r}")
    return HybridQuery(text, vec, int(top_k), fusion)


class QueryPlan(NamedTuple):
    """What runs for a query: the text side (None: not run), the vector side (None: not
    run) and the candidates taken from each side."""

    text: str | None
    vector: np.ndarray | None
    depth: int


def plan(q: HybridQuery, candidates: int) -> QueryPlan:
    """Which sides run: a side runs when its input is present and its weight is not zero,
    or when the other side is absent (a blank text counts as absent).

    Complexity: O(len(text)).
    """
    w = q.fusion.weight
    has_text = q.text is not None and bool(q.text.strip())
    has_vec = q.vector is not None
    return QueryPlan(q.text if has_text and (w < 1.0 or not has_vec) else None,
                     q.vector if has_vec and (w > 0.0 or not has_text) else None,
                     max(q.top_k, candidates))


def own_scores(hits: Sequence[FusedHit], metric: str) -> list[FusedHit]:
    """The hits of a one-sided query with the side's own score instead of a normalised one:
    the BM25 score for text; for vectors the similarity - cosine similarity (``1 - d``) under
    cosine, the dot product under ip, minus the squared L2 distance under l2 (higher is better
    for all three). The explain keeps the raw side value and rank; the normalised parts are
    None (no fusion took place). The order is the side's own (fusion kept it).

    Complexity: O(len(hits)).
    """
    out = []
    for h in hits:
        if h.bm25_score is not None:
            out.append(FusedHit(h.key, float(h.bm25_score), h.bm25_score, None, h.bm25_rank,
                                None, None, None))
        else:
            d = float(h.vector_distance)
            sim = 1.0 - d if metric == "cosine" else -d
            out.append(FusedHit(h.key, sim, None, d, None, h.vector_rank, None, None))
    return out


def _text_only_depths(plans: list[QueryPlan], queries: Sequence[HybridQuery]
                      ) -> list[QueryPlan]:
    """The plans with a text-only query asking BM25 for ``top_k + 1`` candidates instead of
    the fusion depth: one side is not fused, so its hits are its own top ``top_k`` by score,
    ties by key - the same as from the full depth whenever the ``top_k + 1``-th score is
    below the ``top_k``-th (:func:`_tie_past` tells when it is not). BM25 is exact, so only
    the depth changes; the vector side is approximate and keeps its depth.

    Complexity: O(len(plans))."""
    return [p._replace(depth=min(p.depth, q.top_k + 1))
            if p.vector is None and p.text is not None else p
            for p, q in zip(plans, queries)]


def _tie_past(hits: list | None, top_k: int) -> bool:
    """Whether a ``top_k + 1``-deep list's last score ties with its ``top_k``-th: the tie may
    run on past the list, and the hits by key may lie beyond it."""
    return hits is not None and len(hits) > top_k and hits[top_k][1] == hits[top_k - 1][1]


class HybridSearcher:
    """The hybrid query path, shared by :class:`RetrievalPipeline` (indexes in memory) and
    :class:`~llmdsdb.db.Database` (indexes over LMDB): plans each query once, asks the text
    index (BM25) and the vector index (a :class:`~llmdsdb.vector_segment.VectorSegment` or
    anything with the :class:`~llmdsdb.hnsw.HNSW` search interface) for candidates, and fuses
    them with the query's spec (a single side skips the fusion). ``search_many`` returns
    exactly what ``search`` returns per query.

    Thread-safe while the indexes are not written (the indexes' own rule).
    Memory: O(1) (it holds references to the indexes).
    """

    def __init__(self, text_index: Any, vector_index: Any, *, metric: str,
                 candidates: int = DEFAULT_CANDIDATE_DEPTH) -> None:
        self.text_index = text_index
        self.vector_index = vector_index
        self.metric = metric
        self.candidates = candidates

    @staticmethod
    def _side(plans: list[QueryPlan], field: int, idx: Any, run_one: Callable,
              run_many: Callable) -> dict[int, list]:
        """Candidates of one side for the queries that run it, ``min(depth, len(idx))``
        each; the queries of one depth go to the index in one call (the indexes return
        exactly their per-query answers)."""
        rows = [i for i, p in enumerate(plans) if p[field] is not None]
        out: dict[int, list] = {i: [] for i in rows}
        if not rows:  # before len(): a lazily opened graph is read only when asked
            return out
        n = len(idx) if idx is not None else 0
        if not n:
            return out
        by_depth: dict[int, list[int]] = {}
        for i in rows:
            by_depth.setdefault(min(plans[i].depth, n), []).append(i)
        for depth, group in by_depth.items():
            if len(group) == 1:
                out[group[0]] = run_one(plans[group[0]][field], depth)
            else:
                out.update(zip(group, run_many([plans[i][field] for i in group], depth)))
        return out

    def search_many(self, queries: Sequence[HybridQuery]) -> list[list[FusedHit]]:
        """The fused hits of each query, best first.

        Complexity: per query, the text index's search + the vector index's search +
        O(c log c) to fuse c candidates.
        """
        return self.search_many_planned(queries)[0]

    def search_many_planned(self, queries: Sequence[HybridQuery], *, explain: bool = False
                            ) -> tuple[list[list[FusedHit]], list[Any] | None]:
        """:meth:`search_many`, plus each query's
        :class:`~llmdsdb.filtered_search.SearchPlan` when some query has a filter or
        ``explain`` is set (None otherwise).

        Complexity: as :meth:`search_many`.
        """
        plans = [plan(q, self.candidates) for q in queries]
        bm, vx = self.text_index, self.vector_index
        splans = None
        if explain or any(q.filter is not None for q in queries):
            from llmdsdb.filtered_search import search_sides

            sparse, dense, splans = search_sides(bm, vx, plans, [q.filter for q in queries])
        else:
            shallow = _text_only_depths(plans, queries)
            sparse = self._side(shallow, 0, bm, lambda t, k: bm.search(t, top_k=k),
                                lambda ts, k: bm.search_many(ts, top_k=k))
            deep = [i for i, p in enumerate(shallow) if p is not plans[i]
                    and _tie_past(sparse.get(i), queries[i].top_k)]
            if deep:  # the top_k-th score ties past the list: the full candidate depth
                sparse.update(self._side([plans[i] if i in deep else p._replace(text=None)
                                          for i, p in enumerate(plans)], 0, bm,
                                         lambda t, k: bm.search(t, top_k=k),
                                         lambda ts, k: bm.search_many(ts, top_k=k)))
            dense = self._side(plans, 1, vx, lambda v, k: vx.search(v, k),
                               lambda vs, k: vx.search_many(np.stack(vs), k))
        out: list[list[FusedHit]] = []
        for i, q in enumerate(queries):
            b, d = sparse.get(i), dense.get(i)
            if not b and not d:
                out.append([])
                continue
            hits = bm25_own_hits(b, q.top_k) if d is None and b else None
            if hits is None:
                hits = q.fusion.fuse(b, d, top_k=q.top_k, metric=self.metric)
                if b is None or d is None:  # one side ran: its own score, no fusion fields
                    hits = own_scores(hits, self.metric)
            out.append(hits)
        return out, splans

    def search(self, query: HybridQuery) -> list[FusedHit]:
        """:meth:`search_many` for one query. Complexity: as there."""
        return self.search_many([query])[0]


class RetrievalPipeline:
    """Hybrid (BM25 + vector) retrieval over documents held in memory.

    :param embedding_dim: dimension of the document and query embeddings.
    :param hnsw_M: HNSW links per node (layer 0 keeps ``2 * M``).
    :param hnsw_ef_construction: HNSW pool size while inserting.
    :param hnsw_ef_search: HNSW pool size of a query (raised to the candidate depth).
    :param token_budget: capacity of the query-result cache, in *result rows*: a cached query
        costs one token per returned ``(doc_id, score)`` row plus one for the entry itself,
        so the default 100,000 holds about 9,000 queries of ``top_k=10`` (roughly 100 bytes
        per token). Least recently used queries are evicted first; ``0`` disables the cache.
    :param tokenizer: the BM25 analyzer (an :class:`~llmdsdb.analysis.Analyzer` or any
        ``str -> list[str]``; default: English, stop words, Snowball stemming).
    :param seed: seed of the HNSW level generator (equal seeds and inputs, equal graphs).
    :param metric: vector metric, ``"cosine"`` (default), ``"ip"`` or ``"l2"``.
    :param candidates: candidates taken from each side per query (at least ``top_k``).

    Not thread-safe: searches update the result cache, so guard every call with one lock
    when threads share a pipeline.

    Memory: the inverted index (postings compressed, ~1-2 bytes per posting plus ~40 bytes
    per document) + the graph (``4 * dim + 8 * M + 14`` bytes per embedded document) + one
    id-set entry per document (~60 bytes) + the cache (about 100 bytes per token held).
    """

    def __init__(
        self,
        embedding_dim: int = 384,
        hnsw_M: int = 16,
        hnsw_ef_construction: int = 200,
        hnsw_ef_search: int = 50,
        token_budget: int = 100000,
        tokenizer: Any = None,
        seed: int | None = None,
        *,
        metric: str = "cosine",
        candidates: int = DEFAULT_CANDIDATE_DEPTH,
        fresh_max_vectors: int | None = None,
    ) -> None:
        dim = check_int("embedding_dim", embedding_dim, 1)
        budget = check_int("token_budget (0 disables the cache)", token_budget, 0)
        depth = check_int("candidates", candidates, 1)
        check_choice("metric", metric, METRICS)
        self.embedding_dim = dim
        self.metric = metric
        self.candidates = depth
        self.token_budget = budget
        # Both indexes validate their own arguments (M, ef, seed, tokenizer) here.
        self._bm25 = InvertedIndex(tokenizer=tokenizer)
        self._vectors = VectorSegment(HNSW(
            dim, M=hnsw_M, ef_construction=hnsw_ef_construction, ef_search=hnsw_ef_search,
            seed=seed, metric=metric,  # type: ignore[arg-type]
        ), fresh_max_vectors=None if fresh_max_vectors is None
            else check_int("fresh_max_vectors", fresh_max_vectors, 0))
        self._searcher = HybridSearcher(self._bm25, self._vectors, metric=metric,
                                        candidates=depth)
        self._docs: set[int] = set()
        self._cache: TokenLRU[bytes, tuple[FusedHit, ...]] | None = (
            TokenLRU(budget, _cost) if budget > 0 else None
        )
        self._generation = 0  # writes so far; a cache entry never outlives one
        self._searches = 0

    # --- writing ---------------------------------------------------------------------------

    def add_document(self, doc_id: int, text: str, embedding: np.ndarray | None = None) -> None:
        """Index one document: its text for BM25 and, when given, its embedding for vector
        search. Nothing changes when any argument is rejected.

        :param embedding: a real vector of length ``embedding_dim`` (float32 stored), or
            ``None`` for a text-only document.
        :raises InvalidTypeError: ``doc_id`` not an int, ``text`` not a str, an embedding that
            is not a real-valued vector.
        :raises DuplicateIdError: the id is already indexed.
        :raises DimensionError: the embedding has the wrong shape.
        :raises NonFiniteError: the embedding holds NaN or an infinity, or (ip, l2) its norm
            is too large for float32 distances.
        :raises ZeroVectorError: an all-zero embedding under the cosine metric.

        Complexity: O(|doc|) for BM25 + O(dim) amortised for the vector segment (its fresh
        part moves into the graph in batches); clears the result cache.
        """
        self.add_documents([doc_id], [text], None if embedding is None else [embedding])

    def add_documents(
        self,
        doc_ids: Sequence[int],
        texts: Sequence[str],
        embeddings: Sequence[np.ndarray | None] | np.ndarray | None = None,
    ) -> None:
        """Index a batch of documents, all or nothing (every argument is checked first).

        :param embeddings: ``None`` (text only), a float array of shape (n, embedding_dim),
            or a sequence of n vectors or ``None`` (for documents without one).
        :raises InvalidArgumentError: lengths differ, or an id is outside the int64 range.
        :raises DuplicateIdError: an id is already indexed or repeats in the batch.
        :raises: the errors of :meth:`add_document` for each item.

        Complexity: O(total text + n·dim) amortised, vectorised per batch.
        """
        if isinstance(doc_ids, (str, bytes)) or isinstance(texts, (str, bytes)):
            raise InvalidTypeError("doc_ids and texts must be sequences, not a single string")
        ids = list(doc_ids)
        txts = list(texts)
        if len(ids) != len(txts):
            raise InvalidArgumentError(f"{len(ids)} doc ids but {len(txts)} texts")
        for i, (d, t) in enumerate(zip(ids, txts)):
            ids[i] = check_int(f"doc_ids[{i}]", d, INT64_MIN, INT64_MAX)
            if not isinstance(t, str):
                raise InvalidTypeError(f"texts[{i}] must be str, not {type(t).__name__}")
        seen: set[int] = set()
        for d in ids:
            if d in self._docs:
                raise DuplicateIdError(f"doc id {d} is already in the pipeline")
            if d in seen:
                raise DuplicateIdError(f"doc id {d} appears twice in the batch")
            seen.add(d)
        vec_ids, vecs = self._check_embeddings(embeddings, ids)
        if not ids:
            return
        self._bm25.add_documents(ids, txts)
        if vec_ids:
            try:
                self._vectors.add_many(vecs, np.array(vec_ids, np.int64))
            except BaseException:
                for d in ids:  # keep the two indexes in step
                    self._bm25.remove_document(d)
                raise
        self._docs.update(ids)
        self._written()

    def remove_document(self, doc_id: int) -> None:
        """Remove a document from both indexes.

        :raises DocumentNotFoundError: when ``doc_id`` is not in the pipeline.

        Complexity: O(terms of the document) + O(1) for the vector segment (a tombstone).
        """
        d = as_int(doc_id, "doc_id")
        if d not in self._docs:
            raise DocumentNotFoundError(f"no document with id {d}")
        self._bm25.remove_document(d)
        if d in self._vectors:
            self._vectors.delete(d)
        self._docs.discard(d)
        self._written()

    def _written(self) -> None:
        self._generation += 1
        if self._cache is not None:
            self._cache.clear()

    def _check_embeddings(
        self, embeddings: Sequence[np.ndarray | None] | np.ndarray | None, ids: list[int]
    ) -> tuple[list[int], np.ndarray]:
        """Validate the embeddings of a batch; returns (ids that have one, (m, dim) array)."""
        n, dim, metric = len(ids), self.embedding_dim, self.metric
        if embeddings is None:
            return [], np.zeros((0, dim), np.float32)
        if isinstance(embeddings, np.ndarray):
            if embeddings.ndim == 2 and embeddings.shape[0] != n:
                raise InvalidArgumentError(f"{n} documents but {embeddings.shape[0]} embeddings")
            return list(ids), _vectors(embeddings, dim=dim, metric=metric, what="embeddings")
        if isinstance(embeddings, (str, bytes)) or not isinstance(embeddings, Iterable):
            raise InvalidTypeError("embeddings must be an array, a sequence of vectors or None")
        rows = list(embeddings)
        if len(rows) != n:
            raise InvalidArgumentError(f"{n} documents but {len(rows)} embeddings")
        pairs = [(d, _vector(row, dim=dim, metric=metric, what=f"embedding of doc {d}"))
                 for d, row in zip(ids, rows) if row is not None]
        if not pairs:
            return [], np.zeros((0, dim), np.float32)
        return [d for d, _ in pairs], np.stack([v for _, v in pairs])

    # --- searching -------------------------------------------------------------------------

    def search(
        self,
        query: str | None,
        query_embedding: np.ndarray | None = None,
        top_k: int = 10,
        fusion_weight: float = DEFAULT_FUSION_WEIGHT,
        *,
        fusion: FusionMethod = DEFAULT_FUSION,
        normalization: Normalization = DEFAULT_NORMALIZATION,
    ) -> list[tuple[int, float]]:
        """The ``top_k`` best documents as ``(doc_id, score)``, best first: the fused score when
        both sides ran, else the side's own score (BM25 score; cosine similarity, dot
        product or minus the squared L2 distance - see :func:`own_scores`).

        ``fusion_weight`` weighs the vector side: 0.0 is pure BM25, 1.0 pure vector. An empty
        (or whitespace) query, or no ``query_embedding``, falls back to the side present;
        with neither, the result is empty. Repeated queries are answered from the cache
        until the next write.

        :param fusion: ``"convex"`` (default) or ``"rrf"`` (reciprocal rank fusion, k=60).
        :param normalization: ``"minmax"`` (default), ``"zscore"`` or ``"theoretical"``.
        :raises InvalidTypeError: ``query`` not a str (or None), a non-numeric embedding.
        :raises InvalidArgumentError: a weight outside [0, 1] or NaN, an unknown fusion or
            normalisation (the message lists the choices).
        :raises QueryError: ``top_k`` not a positive int, a query the index refuses (too
            long, too many terms).
        :raises DimensionError / NonFiniteError / ZeroVectorError: a bad query embedding.

        Complexity: O(log n) expected for HNSW + O(|query| x avg_doc_freq) for BM25 +
        O(c log c) for fusing c candidates; O(|query| + dim) on a cache hit (the key digest).
        """
        return [(h.key, h.score) for h in self.search_hits(
            query, query_embedding, top_k, fusion_weight,
            fusion=fusion, normalization=normalization,
        )]  # type: ignore[misc]

    def search_hits(
        self,
        query: str | None,
        query_embedding: np.ndarray | None = None,
        top_k: int = 10,
        fusion_weight: float = DEFAULT_FUSION_WEIGHT,
        *,
        fusion: FusionMethod = DEFAULT_FUSION,
        normalization: Normalization = DEFAULT_NORMALIZATION,
    ) -> list[FusedHit]:
        """Like :meth:`search`, but returns :class:`~llmdsdb.fusion.FusedHit` records that
        explain each score (BM25 score, vector distance, ranks, normalised parts).

        Complexity: as :meth:`search`.
        """
        spec = FusionSpec(fusion_weight, fusion, normalization)
        q = make_query(query, query_embedding, top_k, spec, dim=self.embedding_dim,
                       metric=self.metric)
        self._searches += 1
        key = _cache_key(q, self.candidates)
        cache = self._cache
        if cache is not None:
            got = cache.get(key)
            if got is not None:
                return list(got)
        hits = self._searcher.search(q)
        if cache is not None and _cost(hits) <= cache.token_budget:  # else too big to cache
            cache.put(key, tuple(hits))
        return hits

    # --- introspection ---------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of documents. Complexity: O(1)."""
        return len(self._docs)

    def __contains__(self, doc_id: object) -> bool:
        """Whether ``doc_id`` is in the pipeline. Complexity: O(1)."""
        return isinstance(doc_id, (int, np.integer)) and not isinstance(doc_id, bool) and (
            int(doc_id) in self._docs
        )

    def stats(self) -> dict[str, Any]:
        """Documents, index statistics and result-cache figures.

        Complexity: O(terms) (the inverted index's stats).
        """
        bm = self._bm25.stats()
        cache: dict[str, Any]
        if self._cache is not None:
            cs = self._cache.stats()
            cache = {
                "entries": cs.entries, "tokens": cs.tokens, "token_budget": cs.token_budget,
                "hits": cs.hits, "misses": cs.misses, "evictions": cs.evictions,
            }
        else:
            cache = {"entries": 0, "tokens": 0, "token_budget": 0, "hits": 0, "misses": 0,
                     "evictions": 0}
        return {
            "documents": len(self._docs),
            "documents_with_embedding": len(self._vectors),
            "embedding_dim": self.embedding_dim,
            "metric": self.metric,
            "candidates": self.candidates,
            "searches": self._searches,
            "writes": self._generation,
            "cache": cache,
            "bm25": bm._asdict() if hasattr(bm, "_asdict") else dict(bm),
            "hnsw": self._vectors.stats(),
        }

    def _check(self) -> None:
        """Assert the invariants (module docstring) and those of both indexes."""
        assert len(self._bm25) == len(self._docs)
        for d in self._docs:
            assert d in self._bm25
        assert len(self._vectors) <= len(self._docs)
        if self._cache is not None:
            assert self._cache.total_tokens() <= self.token_budget
            self._cache._check()
        for idx in (self._bm25, self._vectors):
            chk: Callable[[], None] | None = getattr(idx, "_check", None)
            if chk is not None:
                chk()


def _cost(hits: Sequence[FusedHit]) -> int:
    return 1 + len(hits)


def _cache_key(q: HybridQuery, depth: int) -> bytes:
    """A stable 16-byte digest of everything that determines a result (never Python's
    salted ``hash``); a blank text is the same query as no text."""
    text = q.text if q.text is not None and q.text.strip() else None
    f = q.fusion
    h = hashlib.blake2b(digest_size=16)
    h.update(struct.pack("<qdqd", q.top_k, f.weight, depth, f.rrf_k))
    h.update(f.method.encode() + b"\0" + f.normalization.encode() + b"\0")
    if text is None:
        h.update(b"\0")
    else:
        h.update(b"\1" + text.encode("utf-8", "surrogatepass") + b"\0")
    if q.vector is None:
        h.update(b"\0")
    else:
        h.update(b"\1" + np.ascontiguousarray(q.vector, dtype="<f4").tobytes())
    return h.digest()
