"""Hybrid fusion: one ranked list out of a BM25 list and a vector list.

Pure functions over small numpy arrays (no I/O, no state), used by both
:class:`~llmdsdb.retrieval_pipeline.RetrievalPipeline` and the database engine. Having no
shared state, they are safe to call from any number of threads at once (the ``fill_missing``
hook runs in the caller's thread).

Conventions (fixed for the whole project, see ``docs/fusion.md``):

* ``fusion_weight`` is the weight of the **vector** side: ``0.0`` is pure BM25, ``1.0`` pure
  vector (Weaviate's ``alpha``). At exactly 0.0 (1.0) the other side is not consulted, so the
  result is the BM25 (vector) list itself, in its own order.
* BM25 scores are "higher is better". Vector values are *distances* as
  :class:`~llmdsdb.hnsw.HNSW` returns them unless ``higher_is_better=True``; they are turned
  into similarities per metric: cosine ``1 - d`` (= cos), ip ``-d`` (= dot), l2 ``-d``
  (= minus the squared L2 distance; on unit vectors this is ``2 cos - 2``, an affine map of
  cosine, so l2 and cosine fuse identically there).
* ``method="convex"``: ``score = w * norm(vector) + (1 - w) * norm(bm25)``, with ``norm``
  one of

  - ``"minmax"`` — ``(s - min) / (max - min)`` over the side's candidates, in [0, 1];
  - ``"zscore"`` — ``(s - mean) / std`` (population std) over the side's candidates;
  - ``"theoretical"`` — Bruch et al.'s theoretical-min-max: ``(s - lo) / (max - lo)`` where
    ``lo`` is the lowest score the function can produce (0 for BM25, -1 for cosine), the
    observed minimum where there is no such bound (ip, l2).

* ``method="rrf"``: reciprocal rank fusion, ``score = w / (k + rank_v) + (1 - w) / (k +
  rank_b)`` with 1-based ranks and ``k = 60`` (Cormack et al. 2009). At ``w = 0.5`` this is
  half the classic unweighted RRF sum: the same order.

Degenerate and missing cases (the invariant every path keeps):

* A candidate found by one side only gets the **worst score seen** on the other side: its
  normalised value is that side's minimum (0.0 for min-max and theoretical; the lowest z for
  z-score) and its RRF term is 0. A caller that can compute the real score (an exact BM25
  score, an exact distance) for such candidates passes ``fill_missing``; filled values join
  the side's candidates before normalising (ranks are still those of the retrieved lists).
* A degenerate side — a single candidate, or all scores equal — carries no spread; it is
  used as a binary signal: present 1.0, missing 0.0 (for every normalisation).
* ``None`` for a side means "not queried" (no query text, no query vector): the side present
  gets the whole weight, whatever ``fusion_weight`` says. An empty list means "queried, found
  nothing": the other side's hits score ``w * norm`` (their BM25 part is 0).
* Ties in the fused score go to the better of a candidate's two ranks, then to the better
  of the other rank, then to key order (first appearance when keys are not mutually
  comparable). So the output does not depend on the order of the inputs, neither side is
  favoured, and a single side keeps its own order even where normalising collapses nearly
  equal scores.

>>> bm25 = [(1, 12.0), (2, 7.0), (4, 2.0)]          # (doc, BM25 score)
>>> dense = [(2, 0.1), (1, 0.3), (3, 0.4)]          # (doc, cosine distance)
>>> [(h.key, round(h.score, 3)) for h in fuse(bm25, dense, fusion_weight=0.5)]
[(2, 0.75), (1, 0.667), (3, 0.0), (4, 0.0)]
>>> fuse(bm25, dense)[0]
FusedHit(key=2, score=0.75, bm25_score=7.0, vector_distance=0.1, bm25_rank=2, vector_rank=1, bm25_norm=0.5, vector_norm=1.0)
>>> [h.key for h in fuse([(1, 12.0), (2, 7.0)], [(2, 0.1), (3, 0.4)], fusion_weight=0.0)]
[1, 2]
>>> [h.key for h in fuse(None, [(2, 0.1), (3, 0.4)], fusion_weight=0.0)]  # no text: fall back
[2, 3]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from llmdsdb._validate import (
    FUSION_METHODS,
    METRICS,
    NORMALIZATIONS,
    FusionMethod,
    Metric,
    Normalization,
    check_choice,
)
from llmdsdb._validate import fusion_weight as _weight
from llmdsdb.errors import (
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    QueryError,
)

__all__ = [
    "DEFAULT_CANDIDATE_DEPTH",
    "DEFAULT_FUSION",
    "DEFAULT_FUSION_WEIGHT",
    "DEFAULT_NORMALIZATION",
    "DEFAULT_RRF_K",
    "FUSION_METHODS",
    "METRICS",
    "NORMALIZATIONS",
    "Explain",
    "FillMissing",
    "FusedHit",
    "FusionMethod",
    "FusionSpec",
    "Metric",
    "Normalization",
    "bm25_own_hits",
    "candidate_depth",
    "distance_to_similarity",
    "fuse",
    "fuse_one_side",
    "fused_pairs",
    "minmax_normalize",
    "rrf_terms",
    "theoretical_normalize",
    "validate_fusion_args",
    "zscore_normalize",
]

Side = Literal["bm25", "vector"]

#: Defaults of the database and the pipeline; docs/fusion.md gives the evidence.
DEFAULT_FUSION: FusionMethod = "convex"
DEFAULT_NORMALIZATION: Normalization = "minmax"
DEFAULT_FUSION_WEIGHT = 0.5
DEFAULT_RRF_K = 60
#: How many candidates to take from each side by default (at least ``top_k``).
DEFAULT_CANDIDATE_DEPTH = 100

#: ``fill_missing(side, keys) -> values``: real scores for candidates the side did not
#: retrieve. ``side`` is ``"bm25"`` (return BM25 scores; 0.0 for a document matching no query
#: term) or ``"vector"`` (return values in the same convention as the ``dense`` input, i.e.
#: distances unless ``higher_is_better``). Return ``None`` for a key that has no value on that
#: side (a document without an embedding); it then stays "missing".
FillMissing = Callable[[str, Sequence[Hashable]], Sequence[float | None]]


class Explain(NamedTuple):
    """How a fused score came about. Side fields are ``None`` when that side has nothing
    to say.

    ``bm25_score`` / ``vector_distance`` are the raw values as given (or as filled in by
    ``fill_missing``; ``vector_distance`` is a similarity when the caller passed
    ``higher_is_better=True``); ``bm25_rank`` / ``vector_rank`` are 1-based ranks in the
    retrieved lists (``None`` when not retrieved by that side; equal scores share a rank);
    ``bm25_norm`` / ``vector_norm`` are the per-side parts before weighting (the normalised
    score for convex fusion, ``1 / (k + rank)`` for RRF).

    Immutable, so it may be shared between threads.
    """

    bm25_score: float | None
    vector_distance: float | None
    bm25_rank: int | None
    vector_rank: int | None
    bm25_norm: float | None
    vector_norm: float | None


FusedHit = NamedTuple(  # type: ignore[misc]  # the key and score, then Explain's fields
    "FusedHit", [("key", Hashable), ("score", float), *Explain.__annotations__.items()])
FusedHit.__doc__ = """One fused result: ``key``, ``score``, then the fields of :class:`Explain`
(``hit[2:]`` is the explain record).

Memory: a tuple of eight fields, about 140 bytes plus the key. Immutable, so it may be
shared between threads.
"""
FusedHit.__module__ = __name__


# --- validation ----------------------------------------------------------------------------


def _choice(name: str, value: object, valid: tuple[str, ...]) -> str:
    return check_choice(name, value, valid)


def _top_k(top_k: object) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise QueryError(f"top_k must be a positive integer; got {top_k!r}")
    if top_k <= 0:
        raise QueryError(f"top_k must be a positive integer; got {top_k!r}")
    return int(top_k)


def validate_fusion_args(
    *,
    fusion_weight: object = DEFAULT_FUSION_WEIGHT,
    method: object = DEFAULT_FUSION,
    normalization: object = DEFAULT_NORMALIZATION,
    metric: object = "cosine",
    rrf_k: object = DEFAULT_RRF_K,
    top_k: object = None,
) -> tuple[float, str, str, str, float, int | None]:
    """Validate the fusion options once (callers do it before touching any index).

    Returns ``(fusion_weight, method, normalization, metric, rrf_k, top_k)`` normalised to
    plain Python types.

    Complexity: O(1).

    :raises InvalidArgumentError: for a weight outside [0, 1] or NaN, an unknown method,
        normalisation or metric (the message lists the valid choices), a negative ``rrf_k``.
    :raises InvalidTypeError: for a weight that is not a number.
    :raises QueryError: for a ``top_k`` that is not a positive integer.

    >>> validate_fusion_args(fusion_weight=1)
    (1.0, 'convex', 'minmax', 'cosine', 60.0, None)
    >>> validate_fusion_args(method="sum")
    Traceback (most recent call last):
    ...
    llmdsdb.errors.InvalidArgumentError: method must be one of 'convex', 'rrf'; got 'sum'
    """
    w = _weight(fusion_weight)
    m = _choice("method", method, FUSION_METHODS)
    n = _choice("normalization", normalization, NORMALIZATIONS)
    mt = _choice("metric", metric, METRICS)
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float, np.number)):
        raise InvalidTypeError(f"rrf_k must be a number >= 0; got {rrf_k!r}")
    k = float(rrf_k)  # type: ignore[arg-type]
    if not math.isfinite(k) or k < 0:
        raise InvalidArgumentError(f"rrf_k must be a finite number >= 0; got {rrf_k!r}")
    return w, m, n, mt, k, _top_k(top_k)


def candidate_depth(top_k: int, depth: int | None = None) -> int:
    """How many candidates to ask each side for: ``max(top_k, depth)``, where ``depth``
    defaults to :data:`DEFAULT_CANDIDATE_DEPTH` (see docs/fusion.md for the measurements).

    Complexity: O(1).

    >>> candidate_depth(10), candidate_depth(500), candidate_depth(10, 20)
    (100, 500, 20)
    """
    return max(int(top_k), DEFAULT_CANDIDATE_DEPTH if depth is None else int(depth))


# --- per-side normalisations ---------------------------------------------------------------


def distance_to_similarity(values: np.ndarray, metric: str) -> np.ndarray:
    """Turn distances as :class:`~llmdsdb.hnsw.HNSW` returns them into similarities.

    cosine: ``1 - d`` (the cosine); ip: ``-d`` (the dot product); l2: ``-d`` (minus the
    squared distance). Float64 array in, float64 array of the same shape out.

    Complexity: O(n).

    >>> distance_to_similarity(np.array([0.0, 0.5, 2.0]), "cosine").tolist()
    [1.0, 0.5, -1.0]
    """
    metric = _choice("metric", metric, METRICS)
    v = np.asarray(values, dtype=np.float64)
    return 1.0 - v if metric == "cosine" else -v


def minmax_normalize(scores: np.ndarray) -> np.ndarray:
    """``(s - min) / (max - min)``; a degenerate input (one value, or all equal) maps to 1.0.

    Complexity: O(n).

    >>> minmax_normalize(np.array([3.0, 1.0, 2.0])).tolist()
    [1.0, 0.0, 0.5]
    >>> minmax_normalize(np.array([4.0, 4.0])).tolist()
    [1.0, 1.0]
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.copy()
    lo, hi = float(s.min()), float(s.max())
    span = hi - lo
    if not span > 0.0 or not math.isfinite(span):
        return np.ones_like(s)
    return np.clip((s - lo) / span, 0.0, 1.0)


def zscore_normalize(scores: np.ndarray) -> np.ndarray:
    """``(s - mean) / std`` (population std); a degenerate input maps to 1.0.

    Complexity: O(n).

    >>> zscore_normalize(np.array([1.0, 3.0])).tolist()
    [-1.0, 1.0]
    >>> zscore_normalize(np.array([5.0])).tolist()
    [1.0]
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.copy()
    if float(s.max()) == float(s.min()):
        return np.ones_like(s)
    # Sorting first makes the float sums independent of the input order.
    srt = np.sort(s)
    mean = float(srt.mean())
    std = float(np.sqrt(np.mean((srt - mean) ** 2)))
    if not std > 0.0 or not math.isfinite(std):
        return np.ones_like(s)
    return (s - mean) / std


def theoretical_normalize(scores: np.ndarray, lowest: float | None) -> np.ndarray:
    """``(s - lowest) / (max - lowest)`` where ``lowest`` is the smallest score the scoring
    function can produce (Bruch et al. 2023, "TMM"); ``None`` uses the observed minimum
    (plain min-max). A degenerate input (``max <= lowest``) maps to 1.0.

    Complexity: O(n).

    >>> theoretical_normalize(np.array([4.0, 2.0]), 0.0).tolist()
    [1.0, 0.5]
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return s.copy()
    lo = float(s.min()) if lowest is None else min(float(lowest), float(s.min()))
    span = float(s.max()) - lo
    if not span > 0.0 or not math.isfinite(span):
        return np.ones_like(s)
    return np.clip((s - lo) / span, 0.0, 1.0)


def rrf_terms(ranks: np.ndarray, k: float = DEFAULT_RRF_K) -> np.ndarray:
    """``1 / (k + rank)`` for 1-based ranks.

    Complexity: O(n).

    >>> rrf_terms(np.array([1, 2]), 60).round(5).tolist()
    [0.01639, 0.01613]
    """
    return 1.0 / (float(k) + np.asarray(ranks, dtype=np.float64))


# --- the fusion ----------------------------------------------------------------------------


class _SideData(NamedTuple):
    keys: list[Hashable]  # as given
    raw: np.ndarray  # float64 values as given, same order
    sim: np.ndarray  # higher is better
    ranks: np.ndarray  # int64 1-based competition ranks ("1224"), independent of input order


def _key_ranks(keys: list[Hashable]) -> np.ndarray:
    """Rank of each key in key order (a tie-breaker); first appearance when keys are not
    mutually comparable. int64 array of shape (len(keys),)."""
    n = len(keys)
    out = np.empty(n, dtype=np.int64)
    arr = np.asarray(keys) if n else np.zeros(0)
    kind = arr.dtype.kind if arr.ndim == 1 and arr.shape[0] == n else ""
    # numpy turns [1, "a"] into strings: take the fast path only when the dtype is faithful.
    if kind in ("i", "u") or (kind == "U" and all(type(k) is str for k in keys)):
        out[np.argsort(arr, kind="stable")] = np.arange(n)
        return out
    try:
        out[sorted(range(n), key=keys.__getitem__)] = np.arange(n)  # type: ignore[arg-type]
    except TypeError:
        out[:] = np.arange(n)
    return out


def _read_side(
    pairs: Iterable[tuple[Hashable, float]], name: str, to_sim: Callable[[np.ndarray], np.ndarray]
) -> _SideData:
    if isinstance(pairs, (str, bytes, dict)):
        raise InvalidTypeError(f"{name} must be a list of (key, score) pairs or None")
    try:
        items = list(pairs)
    except TypeError as exc:
        raise InvalidTypeError(
            f"{name} must be a list of (key, score) pairs or None; got {type(pairs).__name__}"
        ) from exc
    if not items:
        empty = np.zeros(0)
        return _SideData([], empty, empty, np.zeros(0, dtype=np.int64))
    try:
        keys, vals = zip(*items)
        if len(keys) != len(items):
            raise ValueError
    except (TypeError, ValueError) as exc:
        bad = next((it for it in items if not (isinstance(it, Sequence) and len(it) == 2)), None)
        raise InvalidTypeError(f"{name} items must be (key, score) pairs; got {bad!r}") from exc
    keys_l = list(keys)
    try:
        if len(set(keys_l)) != len(keys_l):
            seen: set[Hashable] = set()
            dup = next(k for k in keys_l if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise InvalidArgumentError(f"{name} lists key {dup!r} twice")
    except TypeError as exc:
        raise InvalidTypeError(f"{name} keys must be hashable") from exc
    try:
        arr = np.asarray(vals)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(f"{name} scores must be numbers") from exc
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        bad_v = next(
            (v for v in vals if isinstance(v, (str, bytes, bool)) or v is None), vals[0]
        )
        raise InvalidTypeError(f"{name} scores must be numbers; got {bad_v!r}")
    raw = arr.astype(np.float64)
    finite = np.isfinite(raw)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise NonFiniteError(f"{name} score of key {keys_l[i]!r} is not finite: {raw[i]!r}")
    sim = to_sim(raw)
    return _SideData(keys_l, raw, sim, _competition_ranks(sim))


def _competition_ranks(sim: np.ndarray) -> np.ndarray:
    """1 + the number of strictly better values, for each value (higher is better)."""
    neg_sorted = np.sort(-sim)
    return (np.searchsorted(neg_sorted, -sim, side="left") + 1).astype(np.int64)


def _normalize(sim: np.ndarray, how: str, lowest: float | None) -> np.ndarray:
    if how == "minmax":
        return minmax_normalize(sim)
    if how == "zscore":
        return zscore_normalize(sim)
    return theoretical_normalize(sim, lowest)


def _missing_value(norm_present: np.ndarray) -> float:
    """Normalised value given to a candidate the side did not score: the worst seen, or 0.0
    below a degenerate (binary) side."""
    if norm_present.size == 0:
        return 0.0
    lo, hi = float(norm_present.min()), float(norm_present.max())
    if lo == hi:  # degenerate side: present 1.0 / missing 0.0
        return 0.0
    return lo


def fuse(
    bm25: Iterable[tuple[Hashable, float]] | None,
    dense: Iterable[tuple[Hashable, float]] | None,
    *,
    fusion_weight: float = DEFAULT_FUSION_WEIGHT,
    method: FusionMethod = DEFAULT_FUSION,
    normalization: Normalization = DEFAULT_NORMALIZATION,
    top_k: int | None = None,
    metric: Metric = "cosine",
    higher_is_better: bool = False,
    rrf_k: float = DEFAULT_RRF_K,
    fill_missing: FillMissing | None = None,
    explain: bool = False,
) -> list[FusedHit]:
    """Fuse a BM25 result list and a vector result list into one ranking, best first.

    :param bm25: ``(key, bm25_score)`` pairs (higher is better), or ``None`` when there was
        no text query. Order does not matter; keys must be unique and hashable.
    :param dense: ``(key, distance)`` pairs as HNSW returns them (``metric`` says which
        distance), or similarities with ``higher_is_better=True``; ``None`` when there was
        no query vector.
    :param fusion_weight: weight of the vector side in [0, 1]; 0 = BM25 only, 1 = vector only.
    :param method: ``"convex"`` (weighted sum of normalised scores) or ``"rrf"``.
    :param normalization: ``"minmax"``, ``"zscore"`` or ``"theoretical"`` (convex only).
    :param top_k: keep the best ``top_k`` (all candidates when ``None``).
    :param metric: the vector metric: ``"cosine"`` (1 - cos), ``"ip"`` (-dot) or ``"l2"``
        (squared distance).
    :param rrf_k: the RRF constant (60).
    :param fill_missing: optional hook giving real scores for candidates one side did not
        retrieve (see :data:`FillMissing`); convex fusion only (RRF uses ranks).
    :param explain: accepted for the engine's interface; every :class:`FusedHit` field is
        always filled, since it costs nothing extra.
    :returns: :class:`FusedHit` records, highest ``score`` first (ties: see the module
        docstring).

    Complexity: O(n log n) for n = total number of candidates.

    :raises InvalidArgumentError: bad weight, method, normalisation or metric (listing the
        valid choices), a key listed twice on one side.
    :raises InvalidTypeError: a side that is not a list of (key, number) pairs.
    :raises NonFiniteError: a NaN or infinite score.
    :raises QueryError: ``top_k`` not a positive integer.
    """
    del explain  # all fields are always filled
    w, method, normalization, metric, k, top = validate_fusion_args(
        fusion_weight=fusion_weight,
        method=method,
        normalization=normalization,
        metric=metric,
        rrf_k=rrf_k,
        top_k=top_k,
    )
    if fill_missing is not None and not callable(fill_missing):
        raise InvalidTypeError("fill_missing must be callable or None")
    return _fuse(bm25, dense, FusionSpec._trusted(w, method, normalization, k), top, metric,
                 higher_is_better, fill_missing)


class _Placed(NamedTuple):
    """One side's values placed on the union of candidates (NaN / rank 0: not retrieved)."""

    side: _SideData | None
    raw: np.ndarray
    sim: np.ndarray
    rank: np.ndarray
    at: np.ndarray  # union rows the side retrieved
    rows: np.ndarray  # the matching rows of the side's own list


def _union(b: _SideData | None, d: _SideData | None, use_b: bool, use_d: bool
           ) -> tuple[list[Hashable], dict[Hashable, int]]:
    """Candidates retrieved by a side that is used (BM25's first). Explain data of the other
    side is still attached where that side retrieved the key."""
    first = b if use_b and b is not None else d
    assert first is not None
    keys = list(first.keys)
    index = {key: i for i, key in enumerate(keys)}
    if first is b and use_d and d is not None:
        for key in d.keys:
            if key not in index:
                index[key] = len(keys)
                keys.append(key)
    return keys, index


def _place(side: _SideData | None, n: int, index: dict[Hashable, int], first: bool) -> _Placed:
    raw, sim, rank = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, np.int64)
    if side is None or not side.keys:
        empty = np.zeros(0, np.int64)
        return _Placed(side, raw, sim, rank, empty, empty)
    if first:
        pos = np.arange(len(side.keys))  # the union starts with this side's keys
    else:
        get = index.get
        pos = np.array([get(key, -1) for key in side.keys], dtype=np.int64)
    rows = np.flatnonzero(pos >= 0)
    at = pos[rows]
    raw[at], sim[at], rank[at] = side.raw[rows], side.sim[rows], side.ranks[rows]
    return _Placed(side, raw, sim, rank, at, rows)


def _convex_part(name: str, p: _Placed, used: bool, lowest: float | None, normalization: str,
                 keys: list[Hashable], fill_missing: FillMissing | None,
                 to_sim: Callable[[np.ndarray], np.ndarray] | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(normalised values with NaN where missing, the side's part of the score)."""
    n = len(keys)
    norm = np.full(n, np.nan)
    if p.side is not None and used and fill_missing is not None and _fill(
            name, fill_missing, keys, p.raw, p.sim, to_sim):
        # Filled values join the side's candidates before normalising.
        present = ~np.isnan(p.sim)
        norm[present] = _normalize(p.sim[present], normalization, lowest)
        side_norm = norm[present]
    elif p.side is not None and p.side.keys:
        # Normalise over the side's whole list (an unused side too, for explain).
        side_norm = _normalize(p.side.sim, normalization, lowest)
        norm[p.at] = side_norm[p.rows]
    else:
        side_norm = np.zeros(0)
    return norm, np.where(np.isnan(norm), _missing_value(side_norm), norm)


def _ordered(keys: list[Hashable], score: np.ndarray, pb: _Placed, pd: _Placed,
             b_norm: np.ndarray, d_norm: np.ndarray, use_b: bool, use_d: bool,
             top: int | None) -> list[FusedHit]:
    """The hits best first. Ties (exact, or made by normalising values closer than float
    resolution) go to the better of the two ranks, then the better worse rank, then key
    order. Neutral between the sides: at w = 0.5, RRF ties "BM25 rank r only" with "vector
    rank r only" often."""
    n = len(keys)
    big = np.iinfo(np.int64).max
    rb = np.where(pb.rank > 0, pb.rank, big) if use_b else np.full(n, big)
    rv = np.where(pd.rank > 0, pd.rank, big) if use_d else np.full(n, big)
    best, worst = np.minimum(rb, rv), np.maximum(rb, rv)
    order = np.lexsort((_key_ranks(keys), worst, best, -score))
    if top is not None:
        order = order[:top]
    # One conversion per column, then plain Python (NaN and rank 0 mean "no value").
    isnan = math.isnan
    cols = [a[order].tolist() for a in (score, pb.raw, pd.raw, pb.rank, pd.rank, b_norm, d_norm)]
    return [
        FusedHit(
            keys[i], sc,
            None if isnan(br) else br, None if isnan(dr) else dr,
            bk or None, dk or None,
            None if isnan(bn) else bn, None if isnan(dn) else dn,
        )
        for i, sc, br, dr, bk, dk, bn, dn in zip(order.tolist(), *cols)
    ]


def _fuse(
    bm25: Iterable[tuple[Hashable, float]] | None,
    dense: Iterable[tuple[Hashable, float]] | None,
    spec: FusionSpec,
    top: int | None,
    metric: str,
    higher_is_better: bool,
    fill_missing: FillMissing | None,
) -> list[FusedHit]:
    """:func:`fuse` with validated options."""

    # Internally a distance d becomes -d for every metric: min-max, z-score and ranks are
    # unchanged by the affine map to the metric's similarity (1 - d for cosine), and -d keeps
    # the full float resolution of tiny distances (1 - 1e-38 == 1.0). Only the theoretical
    # bound depends on the metric: cos >= -1, i.e. -d >= -2.
    def dense_to_sim(v: np.ndarray) -> np.ndarray:
        return v.astype(np.float64) if higher_is_better else -v.astype(np.float64)

    b = _read_side(bm25, "bm25", lambda v: v) if bm25 is not None else None
    d = _read_side(dense, "dense", dense_to_sim) if dense is not None else None
    if b is None and d is None:
        return []
    # Which sides decide the ranking. None = not queried: the other side takes all weight.
    wv = 1.0 if b is None else (0.0 if d is None else spec.weight)
    use_b, use_d = b is not None and wv < 1.0, d is not None and wv > 0.0
    keys, index = _union(b, d, use_b, use_d)
    n = len(keys)
    if n == 0:
        return []
    pb = _place(b, n, index, use_b)
    pd = _place(d, n, index, False)
    if spec.method == "rrf":
        k = spec.rrf_k
        b_part = np.where(pb.rank > 0, rrf_terms(np.maximum(pb.rank, 1), k), 0.0)
        d_part = np.where(pd.rank > 0, rrf_terms(np.maximum(pd.rank, 1), k), 0.0)
        b_norm = np.where(pb.rank > 0, b_part, np.nan)
        d_norm = np.where(pd.rank > 0, d_part, np.nan)
    else:
        # ip and l2 similarities have no lower bound
        lowest_d = None if metric != "cosine" else (-1.0 if higher_is_better else -2.0)
        b_norm, b_part = _convex_part("bm25", pb, use_b, 0.0, spec.normalization, keys,
                                      fill_missing, None)
        d_norm, d_part = _convex_part("vector", pd, use_d, lowest_d, spec.normalization, keys,
                                      fill_missing, dense_to_sim)
    if use_b and use_d:
        score = wv * d_part + (1.0 - wv) * b_part
    else:
        score = (b_part if use_b else d_part).copy()
    return _ordered(keys, score, pb, pd, b_norm, d_norm, use_b, use_d, top)


def _fill(
    side: str,
    fill_missing: FillMissing,
    keys: list[Hashable],
    raw: np.ndarray,
    sim: np.ndarray,
    to_sim: Callable[[np.ndarray], np.ndarray] | None,
) -> bool:
    """Fill NaN entries of ``raw``/``sim`` from the hook; True when any value was filled."""
    missing = np.flatnonzero(np.isnan(raw))
    if missing.size == 0:
        return False
    mkeys = [keys[i] for i in missing.tolist()]
    got = list(fill_missing(side, mkeys))
    if len(got) != len(mkeys):
        raise InvalidArgumentError(
            f"fill_missing({side!r}, ...) returned {len(got)} values for {len(mkeys)} keys"
        )
    filled = False
    for i, key, v in zip(missing.tolist(), mkeys, got):
        if v is None:
            continue
        if isinstance(v, (str, bytes, bool)) or not isinstance(v, (int, float, np.number)):
            raise InvalidTypeError(
                f"fill_missing({side!r}) gave {v!r} for {key!r}; expected a number or None"
            )
        fv = float(v)
        if not math.isfinite(fv):
            raise NonFiniteError(f"fill_missing({side!r}) gave a non-finite value for {key!r}")
        raw[i] = fv
        sim[i] = fv if to_sim is None else float(to_sim(np.array([fv]))[0])
        filled = True
    return filled


@dataclass(frozen=True)
class FusionSpec:
    """How two result lists are fused: a small value validated once, where it is made (the
    CLI, the Python call), and passed down to every query it applies to.

    :param weight: weight of the vector side in [0, 1] (0 = BM25 only, 1 = vector only).
    :param method: ``"convex"`` or ``"rrf"``.
    :param normalization: ``"minmax"``, ``"zscore"`` or ``"theoretical"`` (convex only).
    :param rrf_k: the RRF constant.
    :raises InvalidArgumentError, InvalidTypeError: as :func:`validate_fusion_args`.

    >>> FusionSpec(weight=1).weight
    1.0

    Frozen, so safe to share between threads.
    """

    weight: float = DEFAULT_FUSION_WEIGHT
    method: FusionMethod = DEFAULT_FUSION
    normalization: Normalization = DEFAULT_NORMALIZATION
    rrf_k: float = DEFAULT_RRF_K

    def __post_init__(self) -> None:
        w, m, n, _mt, k, _top = validate_fusion_args(
            fusion_weight=self.weight, method=self.method, normalization=self.normalization,
            rrf_k=self.rrf_k)
        for name, value in (("weight", w), ("method", m), ("normalization", n), ("rrf_k", k)):
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, weight: object, method: object, normalization: object) -> FusionSpec:
        """``FusionSpec(weight, method, normalization)``, the same value for the same
        arguments (a query's spec is made per call; validating it once per distinct value
        keeps that off the per-query cost).

        Complexity: O(1).
        """
        try:
            return _spec_of(weight, method, normalization)
        except TypeError:  # unhashable arguments: let the constructor say what is wrong
            return cls(weight, method, normalization)  # type: ignore[arg-type]

    @classmethod
    def _trusted(cls, weight: float, method: str, normalization: str, rrf_k: float
                 ) -> FusionSpec:
        """A spec from values :func:`validate_fusion_args` returned (no second check)."""
        spec = object.__new__(cls)
        for name, value in (("weight", weight), ("method", method),
                            ("normalization", normalization), ("rrf_k", rrf_k)):
            object.__setattr__(spec, name, value)
        return spec

    def fuse(self, bm25: Sequence[tuple[Hashable, float]] | None,
             dense: Sequence[tuple[Hashable, float]] | None, *, top_k: int, metric: str
             ) -> list[FusedHit]:
        """Fuse an index's BM25 list and vector list (distances); ``None`` for a side that
        did not run. A single side skips the fusion machinery (:func:`fuse_one_side`) and
        returns exactly what :func:`fuse` would.

        Complexity: O(n log n) for n candidates.
        """
        if bm25 is None or dense is None:
            if bm25 is None and dense is None:
                return []
            return fuse_one_side(bm25 if dense is None else dense,  # type: ignore[arg-type]
                                 "bm25" if dense is None else "vector", self,
                                 top_k=top_k, metric=metric)
        return _fuse(bm25, dense, self, top_k, metric, False, None)


@functools.lru_cache(maxsize=64, typed=True)
def _spec_of(weight: object, method: object, normalization: object) -> FusionSpec:
    return FusionSpec(weight, method, normalization)  # type: ignore[arg-type]


def fuse_one_side(pairs: Sequence[tuple[Hashable, float]], side: Side, spec: FusionSpec, *,
                  top_k: int | None, metric: str = "cosine") -> list[FusedHit]:
    """``fuse(pairs, None)`` (``side="bm25"``) or ``fuse(None, pairs)`` (``side="vector"``,
    distances) for an index's own result list - unique keys, finite scores, as the indexes
    return them - without the two-sided union: the same hits, scores and order.

    Complexity: O(n log n).

    >>> spec = FusionSpec()
    >>> fuse_one_side([(1, 3.0), (2, 1.0)], "bm25", spec, top_k=2) == fuse([(1, 3.0), (2, 1.0)], None)
    True
    """
    n = len(pairs)
    if not n:
        return []
    fast = _one_side_sorted(pairs, side, spec, top_k)
    if fast is not None:
        return fast
    keys = [p[0] for p in pairs]
    raw = np.fromiter((p[1] for p in pairs), np.float64, n)
    sim = raw if side == "bm25" else -raw
    ranks = _competition_ranks(sim)
    if spec.method == "rrf":
        norm = rrf_terms(ranks, spec.rrf_k)
    else:
        lowest = 0.0 if side == "bm25" else (-2.0 if metric == "cosine" else None)
        norm = _normalize(sim, spec.normalization, lowest)
    order = np.lexsort((_key_ranks(keys), ranks, -norm))
    if top_k is not None:
        order = order[:top_k]
    o = order.tolist()
    cols = [a[order].tolist() for a in (norm, raw, ranks)]
    if side == "bm25":
        return [FusedHit(keys[i], sc, r, None, rk, None, sc, None)
                for i, sc, r, rk in zip(o, *cols)]
    return [FusedHit(keys[i], sc, None, r, None, rk, None, sc) for i, sc, r, rk in zip(o, *cols)]


def _sorted_head(pairs: Sequence[tuple[Hashable, float]], sims: list[float],
                 top_k: int | None) -> tuple[list[int], list[int]] | None:
    """The positions of the best ``top_k`` of a list whose similarities ``sims`` are best
    first (ties ordered by key), and the competition rank of every position up to the last
    tie of the ``top_k``-th; None when the list is not best first (or holds NaN) or its tied
    keys do not compare."""
    n = len(sims)
    for i in range(1, n):
        if not sims[i - 1] >= sims[i]:  # also refuses NaN
            return None
    k = n if top_k is None else min(top_k, n)
    end = k
    while end < n and sims[end] == sims[k - 1]:  # ties with the k-th: order them by key
        end += 1
    try:
        head = sorted(range(end), key=lambda i: (-sims[i], pairs[i][0]))[:k]  # type: ignore[operator]
    except TypeError:
        return None  # keys not mutually comparable
    ranks = [0] * end
    for i in range(end):
        ranks[i] = ranks[i - 1] if i and sims[i] == sims[i - 1] else i + 1
    return head, ranks


def _one_side_sorted(pairs: Sequence[tuple[Hashable, float]], side: Side, spec: FusionSpec,
                     top_k: int | None) -> list[FusedHit] | None:
    """:func:`fuse_one_side` in plain Python for the common case - a list already best
    first, as the indexes return it, min-max / theoretical (BM25) / RRF - with the same
    float operations as the numpy path, so the same scores; None when it does not apply."""
    if spec.method != "rrf" and (spec.normalization == "zscore" or (
            spec.normalization == "theoretical" and side == "vector")):
        return None
    sims = [float(p[1]) for p in pairs] if side == "bm25" else [-float(p[1]) for p in pairs]
    got = _sorted_head(pairs, sims, top_k)
    if got is None:
        return None
    head, ranks = got
    if spec.method == "rrf":
        kk = float(spec.rrf_k)
        norm = [1.0 / (kk + ranks[i]) for i in head]
    else:
        lo, hi = sims[-1], sims[0]
        if spec.normalization == "theoretical":
            lo = min(0.0, lo)  # BM25's lowest possible score
        span = hi - lo
        if not span > 0.0 or not math.isfinite(span):
            norm = [1.0] * len(head)
        else:
            norm = [min(1.0, max(0.0, (sims[i] - lo) / span)) for i in head]
    out = []
    for i, sc in zip(head, norm):
        key, raw = pairs[i][0], float(pairs[i][1])
        out.append(FusedHit(key, sc, raw, None, ranks[i], None, sc, None) if side == "bm25"
                   else FusedHit(key, sc, None, raw, None, ranks[i], None, sc))
    return out


def bm25_own_hits(pairs: Sequence[tuple[Hashable, float]], top_k: int
                  ) -> list[FusedHit] | None:
    """The hits of a BM25-only query with BM25's own scores, straight from the index's list
    (best first): what the fusion of that one side, its normalised score then replaced by
    the raw one, gives - under every spec, since one side's order is its score order, ties
    by key - without the normalisation; None when the list is not best first.

    Complexity: O(n + k log k).
    """
    sims = [float(p[1]) for p in pairs]
    got = _sorted_head(pairs, sims, top_k)
    if got is None:
        return None
    head, ranks = got
    return [FusedHit(pairs[i][0], sims[i], sims[i], None, ranks[i], None, None, None)
            for i in head]


def fused_pairs(hits: Sequence[FusedHit]) -> list[tuple[Hashable, float]]:
    """``[(key, score), ...]`` of fused hits (the seed API's tuple shape).

    Complexity: O(n).
    """
    return [(h.key, h.score) for h in hits]
