"""HNSW vector search (Malkov & Yashunin, 2016/2018): numpy arrays, C kernels, pages.

Layout. Every vector gets a dense *internal* id ``0 .. n-1`` in insertion order (the
caller's ``vec_id`` is mapped to it). Layer 0 -- the only large layer -- is one contiguous
``(capacity + 1, 2*M)`` int32 array of neighbour rows padded with ``-1``; vectors are one
``(capacity + 1, dim)`` float32 array (unit length under ``metric="cosine"``). The extra
last row of each array is a *sentinel* (no neighbours, zero vector). Upper layers (each
holds about ``1/exp(1/ml)`` of the one below) are smaller arrays of ``M``-wide rows with
their own row numbering (a node -> row map per layer). For persistence the layer-0 rows
and the vectors are cut into pages of :data:`NODES_PER_PAGE` nodes; upper layers, the
entry point and the page directory are meta records ``hnsw/...``. :meth:`HNSW.flush`
writes only the pages touched since the last flush.

Kernels. Search and insert run in C (``llmdsdb/_native/hnsw.c``) over these very arrays,
through one :class:`llmdsdb._native._core.HnswGraph` handle that holds views of them
(rebuilt whenever an array is replaced). A query descends greedily through the upper
layers and searches layer 0 best-first with a pool of ``ef`` (a candidate min-heap, a
result max-heap, an epoch-stamped visited table); deleted nodes are traversed but never
returned. An insert runs the same search with ``ef_construction`` on each of the new
node's layers, picks neighbours with the paper's heuristic (Algorithm 4) and adds
back-links, re-choosing an overflowing row with the same heuristic. ``threads=N`` runs
queries, or inserts with per-node locks (as hnswlib does), on N threads; with one thread
a build depends only on the seed and the call sequence. Small indexes (at most
:data:`EXACT_COMPONENTS` stored floats) are searched exactly by a C scan -- decided by the
index size alone, so :meth:`HNSW.search` and :meth:`HNSW.search_many` give identical
answers for the same query. There is no numpy search path: the tests keep a plain-Python
reference model of the kernels (``tests/property/test_hnsw_kernels.py``).

Filtered search (``allow=`` an :class:`~llmdsdb.allow.AllowSet` of vec_ids) returns only
allowed live vectors, exactly ``min(k, allowed live)`` of them: :meth:`HNSW.filter_plan`
picks an exact scan of the allowed vectors (a sorted vec_id -> node label map, rebuilt
after inserts) or a layer-0 walk that keeps only allowed nodes (ACORN-1's two-hop expansion
where the set is sparse, hnswlib's rule elsewhere); see ``docs/tuning.md``.

Invariant (checked by :meth:`HNSW._check`): every stored neighbour id names an existing
node of that layer, no row holds its own node or a duplicate, padding only follows the
real entries; a node appears in exactly the layers ``0 .. level``; the entry point has the
top level; the id map names exactly the live (non-deleted) nodes. Data read back from
pages is not trusted: the kernels check every id they follow and raise
:class:`~llmdsdb.errors.CorruptionError` on one out of range.

Distances: ``cosine`` -> ``1 - cos`` (vectors stored normalised), ``ip`` -> ``-dot``,
``l2`` -> squared Euclidean distance. Smaller is closer for all three; equal distances
rank the earlier insert first.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from llmdsdb._native import _core
from llmdsdb.allow import AllowSet
from llmdsdb._validate import MAX_VECTOR_NORM, Metric
from llmdsdb._validate import as_int as _as_int
from llmdsdb.errors import (
    ConfigConflictError,
    CorruptionError,
    DimensionError,
    DuplicateIdError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    NotFoundError,
    QueryError,
    ZeroVectorError,
)

if TYPE_CHECKING:
    from llmdsdb.pages import PageStore

__all__ = ["HNSW", "NODES_PER_PAGE", "FilterPlan", "Metric"]

# Metric: the one alias, from llmdsdb._validate (re-exported here)
_METRICS = ("cosine", "l2", "ip")
_METRIC_CODE = {"cosine": 0, "l2": 1, "ip": 2}  # as llmdsdb/_native/native.h numbers them

#: Nodes per page for vectors and layer-0 rows. 256 x 384-d float32 = 384 KiB per vector
#: page, 256 x 32 int32 = 32 KiB per row page: big enough that a 1M-vector index has only
#: ~4k pages of each kind, small enough that one added vector dirties little.
NODES_PER_PAGE = 256

#: Indexes of at most this many stored floats (``n * dim``) are searched exactly (a C scan
#: over every vector, recall 1.0); larger ones by the graph at ``ef_search``. Measured on
#: SciFact prefixes (384-d, default ef=50, single queries): exact 1.2x the graph's q/s at
#: 1,024 vectors (393k floats), 0.74x at 2,048 (786k) -- the scan is linear in n*dim, the
#: graph search at this ef visits most of a small graph anyway.
EXACT_COMPONENTS = 500_000

#: A filtered query scores its allowed vectors exactly (no graph walk) when at most this
#: many are allowed, or at most :data:`FILTER_EXACT_FRACTION` of the graph's live nodes.
#: Measured (tools/bench/results/filtered_sweep_100000.md: 100k x 384, ef 64, one thread):
#: the exact path's cost grows with the allowed count (1,412 q/s at 2,007 allowed, 213 at
#: 4,946), the two-hop walk's hardly does (440-470 q/s from 2% to 10%), but below ~3%
#: selectivity the walk's recall falls (0.85 at 2%, 0.73 at 1% without a wider pool).
FILTER_EXACT_MAX = 4096
FILTER_EXACT_FRACTION = 0.03
#: Below this selectivity the walk passes disallowed nodes by ACORN-1's two-hop expansion
#: (their neighbours stand in for them, and no distance is computed to them); above it,
#: hnswlib's rule (every node walked, only allowed ones kept). Same sweep: at 10% two-hop
#: 422 q/s (recall 0.981) against 118 q/s (0.998); at 30% two-hop 210 q/s (0.990) against
#: 388 q/s (0.985).
FILTER_TWOHOP_BELOW = 0.2
#: The two-hop walk widens its pool to ``ef * FILTER_TWOHOP_WIDEN_AT / selectivity``
#: (at most ``FILTER_EF_WIDEN_MAX`` times ``ef``): its recall without that was 0.91 at 3%
#: and 0.947 at 5%, with an 8x pool 0.996 and 0.999 (at a third of the speed); where the
#: allowed set is one region of the space (tests/property/test_hnsw_filtered.py,
#: correlated 10%) an unwidened pool gave 0.93-0.96.
FILTER_TWOHOP_WIDEN_AT = 0.2
FILTER_EF_WIDEN_MAX = 4
#: A planned filtered walk gives up once it has computed more than this many distances
#: per allowed vector (``budget = FILTER_WALK_BUDGET * m``), and the m allowed vectors are
#: scored exactly instead: scoring them costs m distances (plus the id lookups), so past
#: that the walk is dearer than the exact answer, and a walk never costs much more than
#: twice the scan it stands in for. Where the graph has no structure to follow (i.i.d.
#: random vectors) the walk wanders and this is what stops it.
FILTER_WALK_BUDGET = 1.0
#: After a planned filtered walk, ``max(FILTER_VERIFY_SAMPLE, distances walked / 8)``
#: allowed vectors, evenly spaced in the allowed ids, are checked against the walk's k-th
#: distance: two of them that the walk never reached yet are nearer than its k-th hit mean
#: it has demonstrably missed part of the top k (about ``2 * m / sample`` of the m allowed
#: vectors belong there and were not found), and the exact scan answers. A walk that
#: found its top k misses nothing the check can see, so it costs that walk about 1/8 more
#: distances and never changes its answer (``llmdsdb/_native/native.h``:
#: ``hnsw_filter_opts``).
FILTER_VERIFY_SAMPLE = 256
_FILTER_MODE = {"traverse": 0, "two-hop": 1}  # as llmdsdb/_native/native.h numbers them


class FilterPlan(NamedTuple):
    """How a vector query runs: ``strategy`` is ``"scan"`` (every vector, exactly),
    ``"graph"`` (a graph walk), ``"allowed-scan"`` (the allowed vectors only, exactly) or
    ``"filtered-graph"`` (a graph walk that keeps only allowed vectors); ``exact`` says
    whether the answer is the exact top k. What answered one filtered query
    (:meth:`HNSW.search_allowed_arrays`) may also be a walk that handed over to the exact
    scan: ``"walk-short-scan"`` (it reached fewer than k allowed vectors),
    ``"walk-budget-scan"`` (it ran past :data:`FILTER_WALK_BUDGET`) or ``"walk-check-scan"``
    (it failed the check of :data:`FILTER_VERIFY_SAMPLE`), all three exact."""

    strategy: str
    exact: bool


#: What answered a filtered query, by the kernel's HNSW_RAN_* code (native.h).
_RAN_PLAN = (FilterPlan("filtered-graph", False), FilterPlan("allowed-scan", True),
             FilterPlan("walk-short-scan", True), FilterPlan("walk-budget-scan", True),
             FilterPlan("walk-check-scan", True))


#: Largest M (layer-0 rows of 2*M ids; the kernels' bound is far above any useful M).
_M_MAX = 4096
_MAX_LEVEL = 30
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Vector norms above this are refused under l2 and ip: squared distances in float32 must
#: stay finite.
_NORM_LIMIT = MAX_VECTOR_NORM  # the one vector rule of llmdsdb._validate

_PAGE = struct.Struct("<4sIII")  # magic, block index, node count, crc32 of the payload
_VEC_MAGIC = b"HNV1"
_NODE_MAGIC = b"HNN1"
_FORMAT_VERSION = 1


def hit_lists(ids: np.ndarray, ds: np.ndarray) -> list[list[tuple[int, float]]]:
    """Result arrays (ids and distances, rows padded with distance inf) as one list of
    ``(vec_id, distance)`` per row, the padding left out. Complexity: O(ids.size)."""
    return [[(i, d) for i, d in zip(ri, rd) if d != math.inf]
            for ri, rd in zip(ids.tolist(), ds.tolist())]


def _threads(threads: object) -> int:
    """Threads of one call: ``None`` = the machine's cores."""
    if threads is None:
        return os.cpu_count() or 1
    t = _as_int(threads, "threads")
    if t < 1:
        raise InvalidArgumentError(f"threads must be >= 1, got {t}")
    return t


class HNSW:
    """Hierarchical navigable small-world graph for approximate nearest-neighbour search.

    :param dim: vector dimension (>= 1).
    :param M: links per node on the upper layers; layer 0 keeps up to ``2*M``.
    :param ef_construction: pool size of the search that finds a new node's neighbours.
    :param ef_search: default pool size of a query (raised to ``k`` when smaller).
    :param ml: level multiplier; a node's top layer is ``floor(-ln(U) * ml)``.
    :param seed: seed of the level generator; equal seeds and equal call sequences give
        identical graphs.
    :param metric: ``"cosine"`` (``1 - cos``), ``"l2"`` (squared distance) or ``"ip"``
        (``-dot``).
    :param store: the :class:`~llmdsdb.pages.PageStore` that :meth:`flush` writes to
        (default: a fresh :class:`~llmdsdb.pages.MemoryPageStore`).

    >>> import numpy as np
    >>> h = HNSW(4, seed=1)
    >>> h.add_many(np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]), [10, 11, 12, 13])
    >>> [(i, round(d, 3)) for i, d in h.search(np.array([1.0, 0, 0, 0]), k=2)]
    [(10, 0.0), (11, 0.006)]

    Single writer; searches from several threads (Python threads or ``threads=N``) run in
    parallel while nothing is written (each kernel thread takes its own scratch).

    Memory: about ``n * (4*dim + 8*M + 18 + 4*L)`` bytes (vectors, layer-0 rows, per-node
    fields, one row-map entry per upper layer ``L``) plus ``n * (4*M + 4) * p / (1 - p)``
    for the upper layers (``p = exp(-1/ml)``), plus ``2 * (n + 1)`` bytes of visited
    stamps per searching thread, plus the id map (a dict); see ``docs/tuning.md``.
    """

    def __init__(
        self,
        dim: int,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 50,
        ml: float = 1 / math.log(2),
        seed: int | None = None,
        metric: Metric = "cosine",
        *,
        store: PageStore | None = None,
    ) -> None:
        self.dim = _as_int(dim, "dim")
        self.M = _as_int(M, "M")
        self.ef_construction = _as_int(ef_construction, "ef_construction")
        self.ef_search = _as_int(ef_search, "ef_search")
        if self.dim < 1:
            raise InvalidArgumentError(f"dim must be >= 1, got {self.dim}")
        if not 2 <= self.M <= _M_MAX:
            raise InvalidArgumentError(f"M must be in 2..{_M_MAX}, got {self.M}")
        if self.ef_construction < 1 or self.ef_search < 1:
            raise InvalidArgumentError("ef_construction and ef_search must be >= 1")
        if isinstance(ml, bool) or not isinstance(ml, (int, float)) or not ml > 0 or not math.isfinite(ml):
            raise InvalidArgumentError(f"ml must be a positive finite number, got {ml!r}")
        self.ml = float(ml)
        if metric not in _METRICS:
            raise InvalidArgumentError(f"metric must be one of {', '.join(_METRICS)}; got {metric!r}")
        self.metric: Metric = metric
        if seed is not None:
            seed = _as_int(seed, "seed")
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        if store is None:
            from llmdsdb.pages import MemoryPageStore

            store = MemoryPageStore()
        elif store.get_meta("hnsw/config") is not None:
            raise ConfigConflictError(
                "the store already holds an HNSW index; use HNSW.open(store) to load it"
            )
        self._store = store
        self._filter_mode: str | None = None  # the filtered walk's mode: None = by selectivity
        self._init_empty()

    # ------------------------------------------------------------------ state

    def _init_empty(self) -> None:
        self._n = 0
        self._g: Any = None  # the kernels' HnswGraph over the arrays below (see _graph)
        self._cap = 0
        self._live = 0
        self._entry = -1
        self._max_level = -1
        self._vecs = np.zeros((1, self.dim), np.float32)
        self._adj0 = np.full((1, 2 * self.M), -1, np.int32)
        self._levels = np.zeros(0, np.int8)
        self._ext = np.zeros(0, np.int64)
        self._deleted = np.zeros(0, bool)
        self._norms = np.zeros(0, np.float64)
        # upper layers: _lrow[l-1] maps node -> row (cap+1, sentinel -1), _ladj[l-1] rows
        self._lrow: list[np.ndarray] = []
        self._ladj: list[np.ndarray] = []
        self._lnodes: list[np.ndarray] = []
        self._lcount: list[int] = []
        self._id_map: dict[int, int] = {}
        self._labels: tuple[np.ndarray, np.ndarray] | None = None  # see _label_map
        self._vec_pages: list[int] = []
        self._node_pages: list[int] = []
        self._dirty_vec: set[int] = set()
        self._dirty_node: set[int] = set()
        self._dirty_upper = True
        self._dirty_state = True
        self._config_written = False

    def _reserve(self, need: int) -> None:
        """Grow the per-node arrays to hold ``need`` nodes (amortised doubling)."""
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, 64)
        n = self._n
        vecs = np.zeros((cap + 1, self.dim), np.float32)
        vecs[:n] = self._vecs[:n]
        self._vecs = vecs
        adj = np.full((cap + 1, 2 * self.M), -1, np.int32)
        adj[:n] = self._adj0[:n]
        self._adj0 = adj
        for name, dt in (("_levels", np.int8), ("_ext", np.int64), ("_deleted", bool), ("_norms", np.float64)):
            a = np.zeros(cap, dt)
            a[:n] = getattr(self, name)[:n]
            setattr(self, name, a)
        for i, row in enumerate(self._lrow):
            r = np.full(cap + 1, -1, np.int32)
            r[:n] = row[:n]
            self._lrow[i] = r
        self._cap = cap
        self._g = None

    def _add_level(self) -> None:
        self._g = None
        self._lrow.append(np.full(self._cap + 1, -1, np.int32))
        self._ladj.append(np.full((17, self.M), -1, np.int32))
        self._lnodes.append(np.zeros(16, np.int32))
        self._lcount.append(0)

    def _register_upper(self, nodes: np.ndarray, levels: np.ndarray) -> None:
        """Give each node a row in every upper layer up to its level."""
        top = int(levels.max()) if levels.size else 0
        while len(self._ladj) < top:
            self._add_level()
        for lv in range(1, top + 1):
            sel = nodes[levels >= lv]
            if not sel.size:
                continue
            i = lv - 1
            c0 = self._lcount[i]
            c1 = c0 + sel.size
            if c1 + 1 > self._ladj[i].shape[0]:
                ncap = max(c1, 2 * (self._ladj[i].shape[0] - 1))
                self._g = None  # the kernels' views are of the old array
                adj = np.full((ncap + 1, self.M), -1, np.int32)
                adj[:c0] = self._ladj[i][:c0]
                self._ladj[i] = adj
                ln = np.zeros(ncap, np.int32)
                ln[:c0] = self._lnodes[i][:c0]
                self._lnodes[i] = ln
            self._lrow[i][sel] = np.arange(c0, c1, dtype=np.int32)
            self._lnodes[i][c0:c1] = sel
            self._lcount[i] = c1
        if self._g is not None:  # same arrays, more rows in use
            self._g.set_counts(self._lcount)

    def _graph(self) -> Any:
        """The kernels' handle on the current arrays (made again after any is replaced)."""
        if self._g is None:
            upper = [(self._lrow[i], self._ladj[i], self._lcount[i]) for i in range(len(self._ladj))]
            self._g = _core.HnswGraph(
                _METRIC_CODE[self.metric], NODES_PER_PAGE, self._vecs, self._adj0, self._deleted,
                self._ext, self._levels, upper,
            )
        return self._g

    # ------------------------------------------------------------------ validation

    def _prepare(self, x: object, *, matrix: bool, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Validate vectors and return (float32 rows ready to store, float64 norms)."""
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged nested lists
            raise InvalidTypeError(f"{what} must be a numeric array: {exc}") from None
        if a.dtype.kind not in "fiu":
            raise InvalidTypeError(
                f"{what} must hold real numbers (float or int), not dtype {a.dtype}"
            )
        if matrix:
            if a.ndim != 2:
                raise DimensionError(f"{what} must be a 2-D array (n, {self.dim}), got shape {a.shape}")
        elif a.ndim != 1:
            raise DimensionError(f"{what} must be a 1-D array of length {self.dim}, got shape {a.shape}")
        if a.shape[-1] != self.dim:
            raise DimensionError(f"expected dim {self.dim}, got {a.shape[-1]}")
        a64 = np.ascontiguousarray(a, dtype=np.float64).reshape(-1, self.dim)
        n = a64.shape[0]
        out = np.empty((n, self.dim), np.float32)
        norms = np.empty(n, np.float64)
        bad = np.empty(n, np.uint8)
        # the common case in C, row by row exactly as search() prepares one query (so a
        # query gives the same float32 vector either way); a NaN or inf, a norm that
        # overflows (1e200 squared) or underflows, or one too large is left to the
        # careful path below
        if _core.prep_rows(a64, _METRIC_CODE[self.metric], _NORM_LIMIT**2, out, norms, bad):
            rows = np.flatnonzero(bad)
            sub = a64[rows]
            finite = np.isfinite(sub)
            if not finite.all():
                r, c = np.argwhere(~finite)[0]
                raise NonFiniteError(f"{what}: non-finite value at index {(int(rows[r]), int(c))}")
            # norms in float64 with scaling, so 1e200 does not overflow when squared
            scale = np.abs(sub).max(axis=1)
            safe = np.where(scale > 0, scale, 1.0)
            sn = np.sqrt(np.einsum("ij,ij->i", sub / safe[:, None], sub / safe[:, None])) * safe
            if self.metric == "cosine":
                zero = np.flatnonzero(sn == 0)
                if zero.size:
                    raise ZeroVectorError(
                        f"{what}: zero-norm vector (row {int(rows[zero[0]])}) has no direction under cosine"
                    )
                out[rows] = (sub / sn[:, None]).astype(np.float32)
            else:
                # distances are computed in float32: squared norms must stay finite
                big = np.flatnonzero(sn > _NORM_LIMIT)
                if big.size:
                    raise NonFiniteError(
                        f"{what}: vector norm {sn[big[0]]:.3g} (row {int(rows[big[0]])}) is too large "
                        f"for float32 distances (limit {_NORM_LIMIT:.3g}); rescale the vectors"
                    )
                out[rows] = sub.astype(np.float32)
            norms[rows] = sn
        return out, norms

    def _prepare_ids(self, ids: object, n: int) -> np.ndarray:
        try:
            a = np.asarray(ids)
        except (ValueError, TypeError) as exc:
            raise InvalidTypeError(f"ids must be integers: {exc}") from None
        if a.ndim != 1 or a.shape[0] != n:
            raise InvalidArgumentError(f"expected {n} ids, got shape {a.shape}")
        if n and a.dtype.kind not in "iu":
            if a.dtype.kind == "O" and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in a
            ):
                try:
                    a = a.astype(np.int64)
                except OverflowError:
                    raise InvalidArgumentError("ids must fit in a signed 64-bit integer") from None
            else:
                raise InvalidTypeError(f"ids must be integers, not dtype {a.dtype}")
        if a.dtype.kind == "u" and n and int(a.max()) > np.iinfo(np.int64).max:
            raise InvalidArgumentError("ids must fit in a signed 64-bit integer")
        a = a.astype(np.int64)
        if n:
            u, cnt = np.unique(a, return_counts=True)
            if (cnt > 1).any():
                raise DuplicateIdError(f"vec_id {int(u[cnt > 1][0])} appears twice in the batch")
            for v in a.tolist():
                if v in self._id_map:
                    raise DuplicateIdError(f"vec_id {v} is already in the index")
        return a

    def _prepare_k(self, k: object, ef: object) -> tuple[int, int]:
        k = _as_int(k, "k")
        if k < 1:
            raise QueryError(f"k must be >= 1, got {k}")
        if ef is None:
            ef = self.ef_search
        ef = _as_int(ef, "ef")
        if ef < 1:
            raise QueryError(f"ef must be >= 1, got {ef}")
        return k, max(ef, k)

    # ------------------------------------------------------------------ insertion

    def _draw_levels(self, n: int) -> np.ndarray:
        u = 1.0 - self._rng.random(n)  # (0, 1]
        lv = np.floor(-np.log(u) * self.ml)
        return np.minimum(lv, _MAX_LEVEL).astype(np.int8)

    # ------------------------------------------------------------------ public API

    def add(self, vec: object, vec_id: int) -> None:
        """Insert one vector under ``vec_id``.

        :raises DimensionError: wrong length. :raises NonFiniteError: NaN or infinity.
        :raises ZeroVectorError: zero vector under cosine. :raises InvalidTypeError:
            non-numeric data. :raises DuplicateIdError: ``vec_id`` is already present.

        Complexity: O(log n * ef_construction * M * dim) expected.
        """
        x, norms = self._prepare(vec, matrix=False, what="vector")
        vid = _as_int(vec_id, "vec_id")
        ids = self._prepare_ids([vid], 1)
        self._insert_prepared(x, norms, ids, 1)

    def add_many(
        self,
        vecs: object,
        ids: Iterable[int] | np.ndarray,
        *,
        batch_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        """Insert many vectors (rows of ``vecs``, float array of shape (n, dim)).

        All rows and ids are validated before anything changes; then the rows are linked
        into the graph in order (one thread) or in parallel with per-node locks.

        :param batch_size: accepted for callers of the earlier batched insert; validated,
            no effect (every vector is inserted on its own).
        :param threads: threads linking the new vectors (default: the machine's cores).
            ``threads=1`` makes the graph a function of the seed and the call sequence.

        Complexity: O(n log n * ef_construction * M * dim) expected, over ``threads``.
        """
        X, norms = self._prepare(vecs, matrix=True, what="vectors")
        id_arr = self._prepare_ids(ids if isinstance(ids, np.ndarray) else list(ids), X.shape[0])
        if batch_size is not None and _as_int(batch_size, "batch_size") < 1:
            raise InvalidArgumentError("batch_size must be >= 1")
        self._insert_prepared(X, norms, id_arr, _threads(threads))

    def _insert_prepared(self, X: np.ndarray, norms: np.ndarray, ids: np.ndarray, threads: int) -> None:
        n = X.shape[0]
        if not n:
            return
        n0 = self._n
        self._reserve(n0 + n)
        new = np.arange(n0, n0 + n, dtype=np.int32)
        levels = self._draw_levels(n)
        self._vecs[new] = X
        self._levels[new] = levels
        self._ext[new] = ids
        self._norms[new] = norms
        self._deleted[new] = False
        self._register_upper(new, levels)
        self._n = n0 + n
        self._labels = None
        try:
            self._link(n0, self._n, threads)
        except CorruptionError:
            # the graph read back from pages is corrupt: the new nodes may already be
            # linked, so they stay as tombstones and their ids are not added
            self._deleted[new] = True
            self._dirty_node.update(range(n0 // NODES_PER_PAGE, (n0 + n - 1) // NODES_PER_PAGE + 1))
            raise
        for j, v in enumerate(ids.tolist()):
            self._id_map[v] = n0 + j
        self._live += n
        # the new nodes' pages: vectors, and rows pages (which also hold ids, norms, levels
        # and flags, so they change even where the kernel wrote no row)
        blocks = range(n0 // NODES_PER_PAGE, (n0 + n - 1) // NODES_PER_PAGE + 1)
        self._dirty_vec.update(blocks)
        self._dirty_node.update(blocks)

    def _link(self, start: int, stop: int, threads: int) -> None:
        """Link the stored nodes ``start .. stop-1`` into the graph (the C insert)."""
        dirty = np.zeros(-(-stop // NODES_PER_PAGE), np.uint8)
        self._entry, self._max_level = self._graph().insert(
            start, stop, self._entry, self._max_level, self.ef_construction, threads, dirty
        )
        self._dirty_node.update(np.flatnonzero(dirty).tolist())
        self._dirty_upper = True
        self._dirty_state = True

    def delete(self, vec_id: int) -> None:
        """Mark ``vec_id`` deleted: it is never returned again, but stays in the graph as a
        waypoint until :meth:`compact` rebuilds the links without it.

        :raises NotFoundError: when ``vec_id`` is not in the index.

        Complexity: O(1).
        """
        vid = _as_int(vec_id, "vec_id")
        node = self._id_map.pop(vid, None)
        if node is None:
            raise NotFoundError(f"vec_id {vid} is not in the index")
        self._deleted[node] = True
        self._live -= 1
        self._dirty_node.add(node // NODES_PER_PAGE)
        self._dirty_state = True

    def __len__(self) -> int:
        """Number of live (not deleted) vectors. Complexity: O(1)."""
        return self._live

    def __contains__(self, vec_id: object) -> bool:
        """Whether ``vec_id`` is live in the index. Complexity: O(1)."""
        if isinstance(vec_id, bool) or not isinstance(vec_id, (int, np.integer)):
            return False
        return int(vec_id) in self._id_map

    def page_ids(self) -> list[int]:
        """The ids of the pages this index has written to its store (vector pages, then
        row pages): what to free when the whole index is dropped. Complexity: O(pages)."""
        return list(self._vec_pages) + list(self._node_pages)

    def get_vector(self, vec_id: int) -> np.ndarray:
        """The stored vector of ``vec_id`` (float32, shape (dim,)); under cosine the original
        direction times the original norm (float32 precision).

        Complexity: O(dim).
        """
        vid = _as_int(vec_id, "vec_id")
        node = self._id_map.get(vid)
        if node is None:
            raise NotFoundError(f"vec_id {vid} is not in the index")
        v = self._vecs[node].copy()
        if self.metric == "cosine":
            with np.errstate(over="ignore"):  # a norm beyond float32 range comes back as inf
                v = (v.astype(np.float64) * float(self._norms[node])).astype(np.float32)
        return v

    def _use_exact(self, exact: bool | None) -> bool:
        """Exact scan or graph: the caller's choice, else the index size alone (never the
        call shape, so search and search_many agree)."""
        if exact is not None:
            return bool(exact)
        return self._n * self.dim <= EXACT_COMPONENTS

    def search(
        self, query: object, k: int = 10, ef: int | None = None, *, exact: bool | None = None,
        allow: AllowSet | None = None,
    ) -> list[tuple[int, float]]:
        """The ``k`` nearest live vectors to ``query``: ``[(vec_id, distance), ...]``, nearest
        first (see the module docstring for the distance of each metric).

        :param ef: pool size of this query (default ``ef_search``; at least ``k``).
        :param exact: True forces exact search, False forces the graph; None (default)
            decides as :meth:`filter_plan` says.
        :param allow: when given, only vectors whose vec_id is in the set are returned, and
            exactly ``min(k, live allowed vectors)`` of them (never a post-filtered short
            list): a selective set is scored exactly, a larger one by a filtered graph walk.

        Complexity: O(log n + ef * M * dim) expected (graph); O(n * dim) exact; with
        ``allow`` of m ids, O(m log(n/m) + m * dim) exact or O(ef / s * M * dim) expected
        for the walk at selectivity s.
        """
        if allow is not None:
            Q = self._prepare(query, matrix=False, what="query")[0]
            k, ef = self._prepare_k(k, ef)
            ids, ds, _ = self._search_allowed(Q, k, ef, exact, allow, 1)
            return [(i, d) for i, d in zip(ids[0].tolist(), ds[0].tolist()) if d != math.inf]
        if type(k) is not int or k < 1 or not (ef is None or (type(ef) is int and ef >= 1)):
            k, ef = self._prepare_k(k, ef)
        if ef is None or ef < k:
            ef = max(self.ef_search, k) if ef is None else k
        g = self._g if self._g is not None else self._graph()
        ex = self._use_exact(exact)
        # the kernel validates and prepares an ordinary float vector itself; anything else
        # (other dtypes, lists, NaN, zero, huge values) takes _prepare, which raises or
        # prepares it the same way
        res = g.search(query, 1, self._n, self._entry, self._max_level, self._live, k, ef, ex)
        if res is None:
            q = self._prepare(query, matrix=False, what="query")[0][0]
            res = g.search(q, 0, self._n, self._entry, self._max_level, self._live, k, ef, ex)
        return res

    def search_many(
        self, queries: object, k: int = 10, ef: int | None = None, *, exact: bool | None = None,
        threads: int | None = None, allow: AllowSet | None = None,
    ) -> list[list[tuple[int, float]]]:
        """:meth:`search` for each row of ``queries`` (float array (n, dim)); the same
        answers as :meth:`search` gives row by row.

        :param threads: threads the queries are spread over (default: the machine's cores);
            the answers do not depend on it.
        :param allow: one allowed set for every query (see :meth:`search`).

        Complexity: O(n * (log N + ef * M * dim) / threads) expected.
        """
        ids, ds = self.search_many_arrays(queries, k, ef, exact=exact, threads=threads, allow=allow)
        return hit_lists(ids, ds)

    def search_many_arrays(
        self, queries: object, k: int = 10, ef: int | None = None, *, exact: bool | None = None,
        threads: int | None = None, allow: AllowSet | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search_many` but returns arrays: vec_ids int64 (n, k) and distances
        float32 (n, k); when fewer than k vectors are live (or allowed) a row is padded with
        id -1 and distance inf (test the distance: -1 is also a valid vec_id).

        Complexity: O(n * (log N + ef * M * dim) / threads) expected.
        """
        Q, _ = self._prepare(queries, matrix=True, what="queries")
        k, ef = self._prepare_k(k, ef)
        nt = _threads(threads)
        if allow is not None:
            return self._search_allowed(Q, k, ef, exact, allow, nt)[:2]
        nq = Q.shape[0]
        ids = np.empty((nq, k), np.int64)
        ds = np.empty((nq, k), np.float32)
        if nq:
            self._graph().search_many(
                Q, self._n, self._entry, self._max_level, self._live, k, ef,
                self._use_exact(exact), nt, ids, ds,
            )
        return ids, ds

    # ------------------------------------------------------------------ filtered search

    def search_allowed_arrays(
        self, queries: object, k: int = 10, ef: int | None = None, *, allow: AllowSet,
        exact: bool | None = None, threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[FilterPlan]]:
        """:meth:`search_many_arrays` restricted to ``allow``, and what answered each query:
        the :meth:`filter_plan` strategy, or for a planned walk that handed over to the
        exact scan, why (see :class:`FilterPlan`). ``exact=False`` forces the walk without
        its budget and check (it still hands over when it reaches fewer than k).

        Complexity: that of :meth:`search_many_arrays`; a walk at most about
        ``(1 + FILTER_WALK_BUDGET) * m`` distances for m allowed vectors.
        """
        Q, _ = self._prepare(queries, matrix=True, what="queries")
        k, ef = self._prepare_k(k, ef)
        ids, ds, info = self._search_allowed(Q, k, ef, exact, allow, _threads(threads))
        return ids, ds, [_RAN_PLAN[int(r)] for r in info[:, 0]]

    def filter_plan(self, allow: AllowSet | None = None, *, exact: bool | None = None) -> FilterPlan:
        """How a query restricted to ``allow`` (None: unrestricted) runs; the search methods
        follow this very plan, so what it reports is what ran.

        Without ``allow``: ``scan`` for a small index (:data:`EXACT_COMPONENTS`), else
        ``graph``. With ``allow`` of m ids: ``allowed-scan`` (exact distances to the allowed
        vectors only) when the index is small, when m <= :data:`FILTER_EXACT_MAX` or when
        m <= :data:`FILTER_EXACT_FRACTION` of the live nodes - there scoring m vectors costs
        less than a walk that passes about 1/selectivity nodes for each one it keeps, and the
        walk's recall falls; else ``filtered-graph`` (two-hop below
        :data:`FILTER_TWOHOP_BELOW`, see there). ``exact`` True / False forces the exact or the graph path.

        :raises InvalidTypeError: ``allow`` is not an :class:`~llmdsdb.allow.AllowSet`.

        Complexity: O(1).
        """
        if allow is None:
            ex = self._use_exact(exact)
            return FilterPlan("scan" if ex else "graph", ex)
        if not isinstance(allow, AllowSet):
            raise InvalidTypeError(f"allow must be an AllowSet, not {type(allow).__name__}")
        if exact is None:
            m = len(allow)
            exact = (self._n * self.dim <= EXACT_COMPONENTS or m <= FILTER_EXACT_MAX
                     or m <= FILTER_EXACT_FRACTION * self._live)
        return FilterPlan("allowed-scan", True) if exact else FilterPlan("filtered-graph", False)

    def _label_map(self) -> tuple[np.ndarray, np.ndarray]:
        """vec_id -> node of the live nodes, for the kernels: (increasing int64 vec_ids,
        their int32 nodes). Built on the first filtered query after an insert; a delete
        leaves its entry naming a tombstone, which the kernels skip. O(n log n) to build."""
        lab = self._labels
        if lab is None:
            live = np.flatnonzero(~self._deleted[: self._n])
            keys = self._ext[live]
            order = np.argsort(keys, kind="stable")
            lab = (np.ascontiguousarray(keys[order]), live[order].astype(np.int32))
            self._labels = lab
        return lab

    def _search_allowed(
        self, Q: np.ndarray, k: int, ef: int, exact: bool | None, allow: AllowSet, threads: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prepared queries restricted to ``allow``, by :meth:`filter_plan`: ids, distances
        and int64 (nq, 2) per query what answered (``_RAN_PLAN`` index) and the distances
        computed."""
        plan = self.filter_plan(allow, exact=exact)
        nq = Q.shape[0]
        ids = np.empty((nq, k), np.int64)
        ds = np.empty((nq, k), np.float32)
        info = np.zeros((nq, 2), np.int64)
        info[:, 0] = 1 if plan.exact else 0
        if not nq:
            return ids, ds, info
        mode = "traverse"
        budget = verify = 0
        if not plan.exact and exact is None:  # a planned walk: see FILTER_WALK_BUDGET
            budget = max(1, math.ceil(FILTER_WALK_BUDGET * len(allow)))
            verify = FILTER_VERIFY_SAMPLE
        if not plan.exact:
            sel = len(allow) / max(self._live, 1)
            mode = self._filter_mode or ("two-hop" if sel < FILTER_TWOHOP_BELOW else "traverse")
            if mode == "two-hop":  # see FILTER_TWOHOP_WIDEN_AT
                widen = min(max(FILTER_TWOHOP_WIDEN_AT / max(sel, 1e-9), 1.0), FILTER_EF_WIDEN_MAX)
                ef = max(k, int(math.ceil(ef * widen)))
        keys, nodes = self._label_map()
        self._graph().search_allowed(
            Q, self._n, self._entry, self._max_level, k, ef, plan.exact,
            _FILTER_MODE[mode], threads, allow.bits, allow.ids, keys, nodes, ids, ds,
            budget, verify, info,
        )
        return ids, ds, info

    def stats(self) -> dict[str, Any]:
        """Counts, configuration, layer sizes and memory. Complexity: O(levels)."""
        mem = (
            self._vecs.nbytes + self._adj0.nbytes + self._levels.nbytes
            + self._ext.nbytes + self._deleted.nbytes + self._norms.nbytes
            + sum(a.nbytes for a in self._ladj) + sum(a.nbytes for a in self._lrow)
            + sum(a.nbytes for a in self._lnodes)
        )
        deg = (self._adj0[: self._n] >= 0).sum(axis=1) if self._n else np.zeros(0)
        return {
            "count": self._live,
            "nodes": self._n,
            "deleted": self._n - self._live,
            "dim": self.dim,
            "metric": self.metric,
            "M": self.M,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "ml": self.ml,
            "seed": self.seed,
            "max_level": self._max_level,
            "entry_node": self._entry,  # internal id (the node may be a tombstone)
            "layer_sizes": [self._n] + list(self._lcount),
            "mean_degree_layer0": float(deg.mean()) if deg.size else 0.0,
            "memory_bytes": int(mem),
            "vector_pages": len(self._vec_pages),
            "row_pages": len(self._node_pages),
            "dirty_pages": len(self._dirty_vec) + len(self._dirty_node),
            "kernel_isa": _core.dist_isa(),  # the distance kernels' instruction set
            "scratch_bytes": self._g.scratch_bytes() if self._g is not None else 0,
        }

    # ------------------------------------------------------------------ compaction

    def compact(self) -> int:
        """Rebuild the graph from the live vectors only (repairs the neighbourhoods of
        deleted nodes). Keeps insertion order and each node's level, so the result is
        deterministic. Returns the number of tombstones removed.

        Complexity: O(n log n * ef_construction * M * dim), like a fresh build.
        """
        removed = self._n - self._live
        if not removed:
            return 0
        keep = np.flatnonzero(~self._deleted[: self._n])
        X = self._vecs[keep].copy()
        norms = self._norms[keep].copy()
        ext = self._ext[keep].copy()
        levels = self._levels[keep].copy()
        old_vec, old_node = self._vec_pages, self._node_pages
        config_written = self._config_written
        self._init_empty()
        self._config_written = config_written
        self._vec_pages, self._node_pages = old_vec, old_node
        n = keep.size
        self._reserve(n)
        new = np.arange(n, dtype=np.int32)
        self._vecs[new] = X
        self._levels[new] = levels
        self._ext[new] = ext
        self._norms[new] = norms
        self._register_upper(new, levels)
        self._n = n
        self._link(0, n, 1)
        self._id_map = {v: j for j, v in enumerate(ext.tolist())}
        self._live = n
        nblocks = -(-n // NODES_PER_PAGE)
        self._dirty_vec = set(range(nblocks))
        self._dirty_node = set(range(nblocks))
        return removed

    # ------------------------------------------------------------------ persistence

    def _encode_page(self, magic: bytes, block: int, count: int, payload: bytes) -> bytes:
        return _PAGE.pack(magic, block, count, zlib.crc32(payload)) + payload

    def _decode_page(self, data: bytes, magic: bytes, block: int) -> tuple[int, memoryview]:
        if len(data) < _PAGE.size:
            raise CorruptionError(f"hnsw page of block {block} is truncated")
        mg, blk, count, crc = _PAGE.unpack_from(data)
        payload = memoryview(data)[_PAGE.size :]
        if mg != magic or blk != block:
            raise CorruptionError(f"hnsw page of block {block}: bad header {mg!r}/{blk}")
        if zlib.crc32(payload) != crc:
            raise CorruptionError(f"hnsw page of block {block}: checksum mismatch")
        return count, payload

    def flush(self) -> None:
        """Write every page and meta record changed since the last flush to the store.

        Pages are overwritten in place (their ids stay stable); a shrink by
        :meth:`compact` frees the pages no longer needed.

        Complexity: O(changed pages * NODES_PER_PAGE * dim) + O(upper layers) when they
        changed.
        """
        import msgpack

        st = self._store
        if not self._config_written:
            st.put_meta("hnsw/config", msgpack.packb({
                "format": _FORMAT_VERSION, "dim": self.dim, "M": self.M,
                "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "ml": self.ml, "seed": self.seed, "metric": self.metric,
                "nodes_per_page": NODES_PER_PAGE,
            }))
            self._config_written = True
        nblocks = -(-self._n // NODES_PER_PAGE)
        if len(self._vec_pages) > nblocks:
            st.free(self._vec_pages[nblocks:] + self._node_pages[nblocks:])
            del self._vec_pages[nblocks:]
            del self._node_pages[nblocks:]
        missing = nblocks - len(self._vec_pages)
        if missing > 0:
            self._vec_pages.extend(st.alloc(missing))
            self._node_pages.extend(st.alloc(missing))
            self._dirty_vec.update(range(nblocks - missing, nblocks))
            self._dirty_node.update(range(nblocks - missing, nblocks))
            self._dirty_state = True
        P = NODES_PER_PAGE
        for blk in sorted(b for b in self._dirty_vec if b < nblocks):
            s, e = blk * P, min(self._n, (blk + 1) * P)
            st.put(self._vec_pages[blk], self._encode_page(_VEC_MAGIC, blk, e - s, self._vecs[s:e].astype("<f4").tobytes()))
        for blk in sorted(b for b in self._dirty_node if b < nblocks):
            s, e = blk * P, min(self._n, (blk + 1) * P)
            payload = b"".join((
                self._adj0[s:e].astype("<i4").tobytes(),
                self._ext[s:e].astype("<i8").tobytes(),
                self._norms[s:e].astype("<f8").tobytes(),
                self._levels[s:e].astype("i1").tobytes(),
                self._deleted[s:e].astype("u1").tobytes(),
            ))
            st.put(self._node_pages[blk], self._encode_page(_NODE_MAGIC, blk, e - s, payload))
        self._dirty_vec.clear()
        self._dirty_node.clear()
        if self._dirty_upper:
            layers = []
            for i, c in enumerate(self._lcount):
                layers.append([
                    self._lnodes[i][:c].astype("<i4").tobytes(),
                    self._ladj[i][:c].astype("<i4").tobytes(),
                ])
            blob = msgpack.packb(layers)
            st.put_meta("hnsw/upper", struct.pack("<I", zlib.crc32(blob)) + blob)
            self._dirty_upper = False
        if self._dirty_state:
            st.put_meta("hnsw/state", msgpack.packb({
                "n": self._n, "live": self._live, "entry": self._entry,
                "max_level": self._max_level, "vec_pages": self._vec_pages,
                "node_pages": self._node_pages,
                "rng": repr(self._rng.bit_generator.state),
            }))
            self._dirty_state = False

    @classmethod
    def open(cls, store: PageStore, **overrides: Any) -> HNSW:
        """Rebuild an index from ``store`` (written by :meth:`flush`).

        :param overrides: ``ef_search=`` may be changed; any other key must equal the
            stored value (:class:`ConfigConflictError` otherwise).
        :raises NotFoundError: when the store holds no HNSW index.

        Complexity: O(n * (dim + M)): every page is read once into contiguous arrays.
        """
        import ast

        import msgpack

        raw = store.get_meta("hnsw/config")
        if raw is None:
            raise NotFoundError("the store holds no HNSW index (no hnsw/config record)")
        cfg = msgpack.unpackb(raw)
        if cfg.get("format") != _FORMAT_VERSION:
            raise FormatVersionError(f"hnsw format {cfg.get('format')} is not supported (expected {_FORMAT_VERSION})")
        for key, val in overrides.items():
            if key == "ef_search":
                continue
            if key not in cfg or cfg[key] != val:
                raise ConfigConflictError(
                    f"{key}={val!r} conflicts with the stored HNSW configuration ({key}={cfg.get(key)!r})"
                )
        self = cls(
            cfg["dim"], cfg["M"], cfg["ef_construction"], overrides.get("ef_search", cfg["ef_search"]),
            cfg["ml"], cfg["seed"], cfg["metric"],
        )
        self._store = store
        self._config_written = True
        state = msgpack.unpackb(store.get_meta("hnsw/state") or msgpack.packb({"n": 0}))
        n = int(state["n"])
        P = int(cfg["nodes_per_page"])
        if P != NODES_PER_PAGE:
            raise FormatVersionError(f"hnsw pages of {P} nodes are not supported")
        if n:
            self._reserve(n)
            self._vec_pages = list(state["vec_pages"])
            self._node_pages = list(state["node_pages"])
            M2 = 2 * self.M
            for blk, (vp, npg) in enumerate(zip(self._vec_pages, self._node_pages)):
                s = blk * P
                cnt, payload = self._decode_page(store.get(vp), _VEC_MAGIC, blk)
                if cnt != min(P, n - s) or len(payload) != cnt * self.dim * 4:
                    raise CorruptionError(f"hnsw vector page {vp} (block {blk}) has the wrong size")
                self._vecs[s : s + cnt] = np.frombuffer(payload, "<f4").reshape(cnt, self.dim)
                cnt2, payload = self._decode_page(store.get(npg), _NODE_MAGIC, blk)
                if cnt2 != cnt or len(payload) != cnt * (4 * M2 + 8 + 8 + 1 + 1):
                    raise CorruptionError(f"hnsw row page {npg} (block {blk}) has the wrong size")
                o = 0
                self._adj0[s : s + cnt] = np.frombuffer(payload, "<i4", cnt * M2, o).reshape(cnt, M2)
                o += cnt * M2 * 4
                self._ext[s : s + cnt] = np.frombuffer(payload, "<i8", cnt, o)
                o += cnt * 8
                self._norms[s : s + cnt] = np.frombuffer(payload, "<f8", cnt, o)
                o += cnt * 8
                self._levels[s : s + cnt] = np.frombuffer(payload, "i1", cnt, o)
                o += cnt
                self._deleted[s : s + cnt] = np.frombuffer(payload, "u1", cnt, o).astype(bool)
            self._n = n
            up = store.get_meta("hnsw/upper")
            if up is None or zlib.crc32(up[4:]) != struct.unpack("<I", up[:4])[0]:
                raise CorruptionError("hnsw upper-layer record is missing or fails its checksum")
            for i, (nodes_b, adj_b) in enumerate(msgpack.unpackb(up[4:])):
                self._add_level()
                nodes = np.frombuffer(nodes_b, "<i4").astype(np.int32)
                c = nodes.size
                self._ladj[i] = np.full((c + 1, self.M), -1, np.int32)
                self._ladj[i][:c] = np.frombuffer(adj_b, "<i4").reshape(c, self.M)
                self._lnodes[i] = nodes.copy() if c else np.zeros(1, np.int32)
                self._lrow[i][nodes] = np.arange(c, dtype=np.int32)
                self._lcount[i] = c
            self._entry = int(state["entry"])
            self._max_level = int(state["max_level"])
            self._g = None
            live = np.flatnonzero(~self._deleted[:n])
            self._id_map = dict(zip(self._ext[live].tolist(), live.tolist()))
            self._live = live.size
            if self._live != int(state["live"]):
                raise CorruptionError("hnsw live count disagrees with the deleted flags")
        if "rng" in state:
            self._rng.bit_generator.state = ast.literal_eval(state["rng"])
        self._dirty_vec.clear()
        self._dirty_node.clear()
        self._dirty_upper = False
        self._dirty_state = False
        return self

    # ------------------------------------------------------------------ invariants

    def _check(self) -> None:
        """Assert the structural invariants (see the module docstring). O(n * M)."""
        n = self._n
        assert 0 <= self._live <= n <= self._cap or (n == 0)
        assert len(self._id_map) == self._live
        for v, node in self._id_map.items():
            assert 0 <= node < n and self._ext[node] == v and not self._deleted[node]
        assert int((~self._deleted[:n]).sum()) == self._live
        if n == 0:
            assert self._entry == -1
            return
        assert (self._adj0[self._cap] == -1).all(), "sentinel row was written"
        assert not self._vecs[self._cap].any(), "sentinel vector was written"
        lv = self._levels[:n].astype(np.int64)
        assert self._max_level == int(lv.max()) and lv[self._entry] == self._max_level
        layers = [(self._adj0[:n], np.arange(n), 2 * self.M)]
        for i in range(len(self._ladj)):
            c = self._lcount[i]
            nodes = self._lnodes[i][:c]
            assert np.array_equal(np.sort(nodes), np.flatnonzero(lv >= i + 1))
            assert (self._lrow[i][nodes] == np.arange(c)).all()
            layers.append((self._ladj[i][:c], nodes, self.M))
        for li, (adj, nodes, width) in enumerate(layers):
            assert adj.shape[1] == width
            valid = adj >= 0
            # padding only after the real entries
            assert (valid[:, 1:] <= valid[:, :-1]).all(), f"layer {li}: padding before entries"
            members = np.zeros(n, bool)
            members[nodes] = True
            ids = adj[valid]
            assert (ids < n).all() and members[ids].all(), f"layer {li}: neighbour outside layer"
            assert not (adj == nodes[:, None]).any(), f"layer {li}: self loop"
            s = np.sort(np.where(valid, adj, -1 - np.arange(width)[None, :]), axis=1)
            assert not (s[:, 1:] == s[:, :-1]).any(), f"layer {li}: duplicate neighbour"
        if self.metric == "cosine":
            norms = np.linalg.norm(self._vecs[:n], axis=1)
            assert np.allclose(norms, 1.0, atol=1e-4)
