"""Filtered retrieval: each side of a hybrid query restricted to the documents a metadata
filter allows (an :class:`~llmdsdb.allow.AllowSet`), and the record of how it ran.

A filter never post-filters a top-k list: each side returns the best ``depth`` *allowed*
documents, so a query returns ``top_k`` hits whenever at least ``top_k`` allowed documents
match it (contain a query term, or have a vector).

* Text: :meth:`InvertedIndex.search_many(..., allow=) <llmdsdb.inverted_index.InvertedIndex.search_many>`,
  exact (its :meth:`~llmdsdb.inverted_index.InvertedIndex.filter_plan` names the plan:
  ``bitmap`` or ``candidates``).
* Vectors: :meth:`VectorSegment.search_many(..., allow=)
  <llmdsdb.vector_segment.VectorSegment.search_many>`, the plan named by its
  ``filter_plan(allow)``: an exact scan of the allowed vectors when they are few, else a
  filtered graph walk (approximate; ``exact`` False).

Every query's :class:`SearchPlan` says which strategy each side ran and whether the hits are
exact; ``Database.search(..., explain=True)`` puts it on each hit (``hit.plan``).

Thread-safe while the indexes are not written (the indexes' own rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from llmdsdb.allow import AllowSet

__all__ = ["SearchPlan", "search_sides", "vector_side"]


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


def vector_side(seg: Any, Q: np.ndarray, k: int, allow: AllowSet
                ) -> tuple[list[list[tuple[int, float]]], list[tuple[str, bool]]]:
    """The ``k`` nearest allowed vectors of each query, and per query the strategy that
    answered and whether exact: the segment's filtered search
    (:meth:`VectorSegment.search_allowed <llmdsdb.vector_segment.VectorSegment.search_allowed>`),
    which reports a planned walk that handed over to the exact scan as such.

    Complexity: that of the strategy chosen.
    """
    if not len(allow):
        return [[] for _ in range(len(Q))], [("empty", True)] * len(Q)
    got, plans = seg.search_allowed(Q, k, allow)
    return got, [(str(p.strategy), bool(p.exact)) for p in plans]


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
            got, ran = vector_side(vx, Q, depth, a)
            vstrat.update(zip(rows, ran))
        dense.update(zip(rows, got))
    out = []
    for i, _p in enumerate(plans):
        a = allows[i]
        v = vstrat.get(i)
        out.append(SearchPlan(None if a is None else len(a), tstrat.get(i),
                              v[0] if v else None, v[1] if v else True))
    return sparse, dense, out
