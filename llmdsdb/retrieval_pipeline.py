"""End-to-end hybrid retrieval in memory: BM25 + HNSW candidates, fused, with a result cache.

:class:`RetrievalPipeline` keeps an :class:`~llmdsdb.inverted_index.InvertedIndex` over the
text of every document and an :class:`~llmdsdb.hnsw.HNSW` graph over the embeddings of the
documents that have one. A query takes up to ``max(top_k, candidates)`` candidates from each
side, fuses them with :func:`llmdsdb.fusion.fuse` (the same code the database uses; see
``docs/fusion.md`` for why min-max convex fusion at weight 0.5 is the default), and caches
the fused list in a :class:`~llmdsdb.token_lru.TokenLRU` keyed by a stable digest of the
query and its options. Any write clears the cache.

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
>>> p.search("cat mat", fusion_weight=0.0, top_k=1)  # BM25 only
[(1, 1.0)]
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from llmdsdb.errors import (
    DimensionError,
    DocumentNotFoundError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    ZeroVectorError,
)
from llmdsdb.fusion import (
    DEFAULT_CANDIDATE_DEPTH,
    DEFAULT_FUSION,
    DEFAULT_FUSION_WEIGHT,
    DEFAULT_NORMALIZATION,
    FusedHit,
    FusionMethod,
    Normalization,
    fuse,
    validate_fusion_args,
)
from llmdsdb.hnsw import HNSW
from llmdsdb.inverted_index import InvertedIndex
from llmdsdb.token_lru import TokenLRU

__all__ = ["RetrievalPipeline"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_METRICS = ("cosine", "ip", "l2")
_MAX_NORM = float(np.sqrt(np.finfo(np.float32).max)) / 4


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{what} must be an int, not {type(value).__name__}")
    return int(value)


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
    ) -> None:
        dim = _as_int(embedding_dim, "embedding_dim")
        if dim < 1:
            raise InvalidArgumentError(f"embedding_dim must be >= 1, got {dim}")
        budget = _as_int(token_budget, "token_budget")
        if budget < 0:
            raise InvalidArgumentError(f"token_budget must be >= 0 (0 disables the cache), got {budget}")
        depth = _as_int(candidates, "candidates")
        if depth < 1:
            raise InvalidArgumentError(f"candidates must be >= 1, got {depth}")
        if metric not in _METRICS:
            raise InvalidArgumentError(
                f"metric must be one of {', '.join(repr(m) for m in _METRICS)}; got {metric!r}"
            )
        self.embedding_dim = dim
        self.metric = metric
        self.candidates = depth
        self.token_budget = budget
        # Both indexes validate their own arguments (M, ef, seed, tokenizer) here.
        self._bm25 = InvertedIndex(tokenizer=tokenizer)
        self._hnsw = HNSW(
            dim, M=hnsw_M, ef_construction=hnsw_ef_construction, ef_search=hnsw_ef_search,
            seed=seed, metric=metric,  # type: ignore[arg-type]
        )
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
        :raises NonFiniteError: the embedding holds NaN or an infinity.
        :raises ZeroVectorError: an all-zero embedding under the cosine metric.

        Complexity: O(|doc|) for BM25 + O(log n x ef_construction) expected for HNSW; clears
        the result cache.
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

        Complexity: O(total text + n log n x ef_construction) expected, vectorised per batch.
        """
        if isinstance(doc_ids, (str, bytes)) or isinstance(texts, (str, bytes)):
            raise InvalidTypeError("doc_ids and texts must be sequences, not a single string")
        ids = list(doc_ids)
        txts = list(texts)
        if len(ids) != len(txts):
            raise InvalidArgumentError(f"{len(ids)} doc ids but {len(txts)} texts")
        for i, (d, t) in enumerate(zip(ids, txts)):
            v = _as_int(d, f"doc_ids[{i}]")
            if not _INT64_MIN <= v <= _INT64_MAX:
                raise InvalidArgumentError(f"doc_ids[{i}] = {v} is outside the int64 range")
            ids[i] = v
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
                self._hnsw.add_many(vecs, vec_ids)
            except BaseException:
                for d in ids:  # keep the two indexes in step
                    self._bm25.remove_document(d)
                raise
        self._docs.update(ids)
        self._written()

    def remove_document(self, doc_id: int) -> None:
        """Remove a document from both indexes.

        :raises DocumentNotFoundError: when ``doc_id`` is not in the pipeline.

        Complexity: O(terms of the document) + O(1) for the graph (a tombstone).
        """
        d = _as_int(doc_id, "doc_id")
        if d not in self._docs:
            raise DocumentNotFoundError(f"no document with id {d}")
        self._bm25.remove_document(d)
        if d in self._hnsw:
            self._hnsw.delete(d)
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
        n, dim = len(ids), self.embedding_dim
        if embeddings is None:
            return [], np.zeros((0, dim), np.float32)
        if isinstance(embeddings, np.ndarray):
            if embeddings.ndim != 2 or embeddings.shape != (n, dim):
                raise DimensionError(
                    f"embeddings must have shape ({n}, {dim}), got {embeddings.shape}"
                )
            rows: list[object] = list(embeddings)
        elif isinstance(embeddings, (str, bytes)) or not isinstance(embeddings, Iterable):
            raise InvalidTypeError("embeddings must be an array, a sequence of vectors or None")
        else:
            rows = list(embeddings)
            if len(rows) != n:
                raise InvalidArgumentError(f"{n} documents but {len(rows)} embeddings")
        vec_ids: list[int] = []
        out: list[np.ndarray] = []
        for d, row in zip(ids, rows):
            if row is None:
                continue
            out.append(self._vector(row, f"embedding of doc {d}"))
            vec_ids.append(d)
        arr = np.stack(out) if out else np.zeros((0, dim), np.float32)
        return vec_ids, arr

    def _vector(self, value: object, what: str) -> np.ndarray:
        """A validated float64 vector of shape (dim,)."""
        try:
            a = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise InvalidTypeError(f"{what} must be a numeric vector: {exc}") from None
        if a.dtype.kind not in "fiu":
            raise InvalidTypeError(f"{what} must hold real numbers, not dtype {a.dtype}")
        if a.ndim != 1 or a.shape[0] != self.embedding_dim:
            raise DimensionError(
                f"{what}: expected dim {self.embedding_dim}, got shape {a.shape}"
            )
        a64 = a.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(a64))
        if bad.size:
            raise NonFiniteError(f"{what}: non-finite value at index {int(bad[0])}")
        scale = float(np.abs(a64).max()) if a64.size else 0.0
        if self.metric == "cosine":
            if scale == 0.0:
                raise ZeroVectorError(f"{what}: zero-norm vector has no direction under cosine")
        elif scale > 0.0:
            # The graph computes ip / l2 distances in float32: squared norms must stay finite
            # (the same limit HNSW applies, checked here so that nothing changes on failure).
            norm = scale * float(np.linalg.norm(a64 / scale))
            if norm > _MAX_NORM:
                raise NonFiniteError(
                    f"{what}: norm {norm:.3g} is too large for float32 distances "
                    f"(limit {_MAX_NORM:.3g}); rescale the vectors"
                )
        return a64

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
        """The ``top_k`` best documents as ``(doc_id, fused_score)``, best first.

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
        w, method, norm, _m, _k, top = validate_fusion_args(
            fusion_weight=fusion_weight, method=fusion, normalization=normalization,
            top_k=top_k,
        )
        assert top is not None
        if query is not None and not isinstance(query, str):
            raise InvalidTypeError(f"query must be str or None, not {type(query).__name__}")
        qvec = None if query_embedding is None else self._vector(query_embedding, "query_embedding")
        text = query if query is not None and query.strip() else None
        self._searches += 1

        key = _cache_key(text, qvec, top, w, method, norm, self.candidates)
        cache = self._cache
        if cache is not None:
            got = cache.get(key)
            if got is not None:
                return list(got)

        n_docs = len(self._docs)
        use_b = text is not None and (w < 1.0 or qvec is None)
        use_d = qvec is not None and (w > 0.0 or text is None)
        depth = max(top, self.candidates)
        bm25 = None
        dense = None
        if use_b and n_docs:
            bm25 = self._bm25.search(text, top_k=min(depth, n_docs))  # type: ignore[arg-type]
        elif use_b:
            bm25 = []
        if use_d and len(self._hnsw):
            dense = self._hnsw.search(qvec, k=min(depth, len(self._hnsw)))
        elif use_d:
            dense = []
        hits = fuse(
            bm25, dense, fusion_weight=w, method=method,  # type: ignore[arg-type]
            normalization=norm, top_k=top, metric=self.metric,  # type: ignore[arg-type]
        ) if (bm25 is not None or dense is not None) else []
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
            "documents_with_embedding": len(self._hnsw),
            "embedding_dim": self.embedding_dim,
            "metric": self.metric,
            "candidates": self.candidates,
            "searches": self._searches,
            "writes": self._generation,
            "cache": cache,
            "bm25": bm._asdict() if hasattr(bm, "_asdict") else dict(bm),
            "hnsw": self._hnsw.stats(),
        }

    def _check(self) -> None:
        """Assert the invariants (module docstring) and those of both indexes."""
        assert len(self._bm25) == len(self._docs)
        for d in self._docs:
            assert d in self._bm25
        assert len(self._hnsw) <= len(self._docs)
        if self._cache is not None:
            assert self._cache.total_tokens() <= self.token_budget
            self._cache._check()
        for idx in (self._bm25, self._hnsw):
            chk: Callable[[], None] | None = getattr(idx, "_check", None)
            if chk is not None:
                chk()


def _cost(hits: Sequence[FusedHit]) -> int:
    return 1 + len(hits)


def _cache_key(
    text: str | None, qvec: np.ndarray | None, top_k: int, w: float, method: str, norm: str,
    depth: int,
) -> bytes:
    """A stable 16-byte digest of everything that determines a result (never Python's
    salted ``hash``)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(struct.pack("<qdq", top_k, w, depth))
    h.update(method.encode() + b"\0" + norm.encode() + b"\0")
    if text is None:
        h.update(b"\0")
    else:
        h.update(b"\1" + text.encode("utf-8", "surrogatepass") + b"\0")
    if qvec is None:
        h.update(b"\0")
    else:
        h.update(b"\1" + np.ascontiguousarray(qvec, dtype="<f8").tobytes())
    return h.digest()

