"""Filtered retrieval: each side of a hybrid query restricted to the documents a metadata
filter allows (an :class:`~llmdsdb.allow.AllowSet`), and the record of how it ran.

A filter never post-filters a top-k list: each side returns the best ``depth`` *allowed*
documents, so a query returns ``top_k`` hits whenever at least ``top_k`` allowed documents
match it (contain a query term, or have a vector).

* Text: :meth:`InvertedIndex.search_many(..., allow=) <llmdsdb.inverted_index.InvertedIndex.search_many>`,
  exact (its :meth:`~llmdsdb.inverted_index.InvertedIndex.filter_plan` names the plan:
  ``bitmap`` or ``candidates``).
* Vectors: when the vector segment offers filtered kernels (``filter_plan(allow) ->
  (strategy, exact)`` and ``search_many(..., allow=)``), they run; otherwise
  :func:`exact_vectors` scores exactly the allowed vectors (graph and fresh part) with the
  exact-scan kernel - recall 1.0, cost O(allowed · dim) per query when the allowed vectors
  are few, O(n · dim) (a masked scan) when they are many.

Every query's :class:`SearchPlan` says which strategy each side ran and whether the hits are
exact; ``Database.search(..., explain=True)`` puts it on each hit (``hit.plan``).

Thread-safe while the indexes are not written (the indexes' own rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from llmdsdb._native import _core
from llmdsdb.allow import AllowSet

__all__ = ["SearchPlan", "allowed_mask", "exact_vectors", "text_side", "vector_side"]

_METRIC_CODE = {"cosine": 0, "l2": 1, "ip": 2}  # as llmdsdb/_native/native.h numbers them
#: Above this fraction of the graph allowed, the exact scan masks rows in place instead of
#: gathering the allowed rows (a gather copies allowed · dim floats per call).
GATHER_MAX_FRACTION = 0.125


class SearchPlan(NamedTuple):
    """How one query ran. ``allowed``: documents the filter allows (None: no filter);
    ``text`` / ``vector``: the strategy of each side (None: the side did not run;
    ``"unfiltered"`` without a filter); ``exact``: whether every side that ran returned
    exactly its filtered top candidates (False only for an approximate vector side: a graph
    walk, filtered or not).
    """

    allowed: int | None
    text: str | None
    vector: str | None
    exact: bool


def allowed_mask(allow: AllowSet, ids: np.ndarray) -> np.ndarray:
    """Bool array: whether each id (int64 array) is in ``allow``. Complexity: O(len(ids))."""
    bits = allow.bits
    ids = np.asarray(ids, dtype=np.int64)
    ok = (ids >= 0) & (ids < 8 * len(bits))
    out = np.zeros(len(ids), bool)
    sel = ids[ok]
    out[ok] = ((bits[sel >> 3] >> (sel & 7).astype(np.uint8)) & 1).astype(bool)
    return out


def _topk(vecs: np.ndarray, Qp: np.ndarray, code: int, skip: np.ndarray | None, k: int,
          labels: np.ndarray) -> list[list[tuple[int, float]]]:
    out_i = np.empty((len(Qp), k), np.int64)
    out_d = np.empty((len(Qp), k), np.float32)
    _core.exact_topk(vecs, Qp, code, skip, out_i, out_d)
    ids = labels[out_i]
    return [list(zip(r, d)) for r, d in zip(ids.tolist(), out_d.tolist())]


def exact_vectors(seg: Any, Q: np.ndarray, k: int, allow: AllowSet
                  ) -> list[list[tuple[int, float]]]:
    """The exact ``k`` nearest allowed live vectors of a
    :class:`~llmdsdb.vector_segment.VectorSegment` for each query (float32 (nq, dim),
    validated), distances as the segment reports them; ties to the earlier insert, the
    graph's before the fresh part's (as the segment merges them).

    Complexity: O(nq · allowed · dim) plus O(n) to find the allowed rows.
    """
    graph, fresh = seg.graph, seg.fresh
    code = _METRIC_CODE[seg.metric]
    Qp = fresh._prep(Q)
    nq = len(Qp)
    parts: list[list[list[tuple[int, float]]]] = []
    n = graph._n
    if n and len(graph):
        labels = graph._ext[:n]
        ok = allowed_mask(allow, labels) & ~graph._deleted[:n]
        m = int(ok.sum())
        if m:
            kk = min(k, m)
            if m <= GATHER_MAX_FRACTION * n:
                rows = np.flatnonzero(ok)
                parts.append(_topk(np.ascontiguousarray(graph._vecs[rows]), Qp, code, None,
                                   kk, labels[rows]))
            else:
                parts.append(_topk(graph._vecs[:n], Qp, code, (~ok).view(np.uint8), kk,
                                   labels))
    nf = fresh.n
    if nf and len(fresh):
        labels = fresh.ids[:nf]
        ok = allowed_mask(allow, labels) & fresh.alive[:nf]
        m = int(ok.sum())
        if m:
            parts.append(_topk(fresh.vecs[:nf], Qp, code, (~ok).view(np.uint8),
                               min(k, m), labels))
    if not parts:
        return [[] for _ in range(nq)]
    if len(parts) == 1:
        return parts[0]
    out = []
    for g, f in zip(*parts):
        both = g + f
        both.sort(key=lambda p: p[1])  # stable: the graph's hit first on a tie
        out.append(both[:k])
    return out


def vector_side(seg: Any, Q: np.ndarray, k: int, allow: AllowSet
                ) -> tuple[list[list[tuple[int, float]]], str, bool]:
    """The ``k`` nearest allowed vectors of each query, the strategy and whether exact:
    the segment's filtered kernels when it has them, else :func:`exact_vectors`.

    Complexity: that of the strategy chosen.
    """
    if not len(allow):
        return [[] for _ in range(len(Q))], "empty", True
    plan = getattr(seg, "filter_plan", None)
    if plan is not None:
        strategy, exact = plan(allow)
        return seg.search_many(Q, k, allow=allow), str(strategy), bool(exact)
    return exact_vectors(seg, Q, k, allow), "exact", True


def text_side(bm: Any, texts: Sequence[str], k: int, allows: Sequence[AllowSet]
              ) -> tuple[list[list[tuple[int, float]]], list[str]]:
    """BM25 top ``k`` of each text among its allowed documents (exact), and each query's
    plan (:meth:`~llmdsdb.inverted_index.InvertedIndex.filter_plan`).

    Complexity: that of :meth:`InvertedIndex.search_many` with ``allow``.
    """
    hits = bm.search_many(list(texts), top_k=k, allow=list(allows))
    return hits, [bm.filter_plan(a, t).strategy for t, a in zip(texts, allows)]


def _vector_exact(vx: Any) -> bool:
    """Whether an unfiltered vector search is exact (the graph scans exactly when small)."""
    graph = getattr(vx, "graph", vx)
    use = getattr(graph, "_use_exact", None)
    return len(graph) == 0 or (use is not None and bool(use(None)))


def search_sides(bm: Any, vx: Any, plans: Sequence[Any], allows: Sequence[AllowSet | None]
                 ) -> tuple[dict[int, list], dict[int, list], list[SearchPlan]]:
    """Candidates of both sides for queries with filters (``allows[i]``: the allowed set of
    query ``i``, or None) - ``plans[i]`` is the query's
    :class:`~llmdsdb.retrieval_pipeline.QueryPlan` (text, vector, depth) - and each query's
    :class:`SearchPlan`. Queries of one depth and one allowed set go to an index together.

    Complexity: per query, that of each side's filtered search.
    """
    sparse: dict[int, list] = {}
    dense: dict[int, list] = {}
    tstrat: dict[int, str] = {}
    vstrat: dict[int, tuple[str, bool]] = {}
    nb = len(bm) if bm is not None else 0
    nv = len(vx) if vx is not None else 0
    groups: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(plans):
        if p.text is not None:
            sparse[i] = []
            tstrat[i] = "unfiltered" if allows[i] is None else "empty"
            if nb:
                groups.setdefault((min(p.depth, nb), 0), []).append(i)
    for (depth, _), rows in groups.items():
        texts = [plans[i].text for i in rows]
        al = [allows[i] for i in rows]
        if all(a is None for a in al):
            got = bm.search_many(texts, top_k=depth)
        else:
            got = bm.search_many(texts, top_k=depth, allow=al)
            for i, t, a in zip(rows, texts, al):
                if a is not None:
                    tstrat[i] = bm.filter_plan(a, t).strategy
        sparse.update(zip(rows, got))
    vgroups: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(plans):
        if p.vector is not None:
            dense[i] = []
            vstrat[i] = ("unfiltered", _vector_exact(vx)) if allows[i] is None \
                else ("empty", True)
            if nv:
                vgroups.setdefault((min(p.depth, nv), id(allows[i])), []).append(i)
    for (depth, _), rows in vgroups.items():
        Q = np.stack([plans[i].vector for i in rows])
        a = allows[rows[0]]
        if a is None:
            got = vx.search_many(Q, depth)
        else:
            got, strategy, exact = vector_side(vx, Q, depth, a)
            for i in rows:
                vstrat[i] = (strategy, exact)
        dense.update(zip(rows, got))
    out = []
    for i, _p in enumerate(plans):
        a = allows[i]
        v = vstrat.get(i)
        out.append(SearchPlan(None if a is None else len(a), tstrat.get(i),
                              v[0] if v else None, v[1] if v else True))
    return sparse, dense, out
