"""HNSW vector search (Malkov & Yashunin, 2016/2018), vectorised with numpy, kept in pages.

Layout. Every vector gets a dense *internal* id ``0 .. n-1`` in insertion order (the
caller's ``vec_id`` is mapped to it). Layer 0 -- the only large layer -- is one contiguous
``(capacity + 1, 2*M)`` int32 array of neighbour rows padded with ``-1``; vectors are one
``(capacity + 1, dim)`` float32 array (unit length under ``metric="cosine"``). The extra
last row of each array is a *sentinel* (no neighbours, zero vector): ``-1`` used as an
index lands on it, so padded rows can be gathered without masking. Upper layers (each
holds about ``1/exp(1/ml)`` of the one below) are smaller arrays of ``M``-wide rows with
their own row numbering. For persistence the layer-0 rows and the vectors are cut into
pages of :data:`NODES_PER_PAGE` nodes; upper layers, the entry point and the page directory
are meta records ``hnsw/...``. :meth:`HNSW.flush` writes only the pages touched since the
last flush.

Search. One exact product against the lowest upper layer small enough (at most
``_SCAN_MAX`` nodes; greedy descent through any layers between it and layer 0). When that
layer is layer 1, or has at least ``_POOL_SCAN_MIN`` nodes -- the nodes of every upper
layer are layer-0 nodes too -- its ``ef`` best nodes, already scored, are the initial pool
of the layer-0 search and the rest of it is marked visited.
Then a best-first search of layer 0 with a pool of the ``ef`` best nodes found so far.
Instead of expanding one node at a time (the textbook loop, whose per-node Python overhead
dominates in numpy), each step expands the ``c`` best unexpanded pool entries at once:
their neighbour rows are gathered, filtered through an epoch-stamped visited array (no
per-query allocation), and scored with one gathered product; a single query keeps its
small pool in a sorted Python list, a batch merges its pools with one numpy sort.
The search stops when every pool entry has been expanded -- exactly the textbook stopping
rule, since a candidate farther than the pool's worst is never expanded there either.
``search_many`` runs the same loop for many queries in lock-step (one gather, one product
and one sort per step for all queries still active; finished queries leave the working
set).

Insertion. ``add_many`` inserts in batches: a batch of new points searches the current
graph in lock-step (``ef_construction``), each point's candidates are merged with the exact
distances to the other points of its batch, neighbours are chosen with the paper's
heuristic (Algorithm 4, vectorised over the batch), and back-links are added per target
node, pruned with the same heuristic when a row overflows.

Invariant (checked by :meth:`HNSW._check`): every stored neighbour id names an existing
node of that layer, no row holds its own node or a duplicate, padding only follows the
real entries; a node appears in exactly the layers ``0 .. level``; the entry point has the
top level; the id map names exactly the live (non-deleted) nodes.

Distances: ``cosine`` -> ``1 - cos`` (vectors stored normalised), ``ip`` -> ``-dot``,
``l2`` -> squared Euclidean distance. Smaller is closer for all three.
"""

from __future__ import annotations

import math
import struct
import threading
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

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

__all__ = ["HNSW", "NODES_PER_PAGE", "Metric"]

Metric = Literal["cosine", "l2", "ip"]
_METRICS = ("cosine", "l2", "ip")

#: Nodes per page for vectors and layer-0 rows. 256 x 384-d float32 = 384 KiB per vector
#: page, 256 x 32 int32 = 32 KiB per row page: big enough that a 1M-vector index has only
#: ~4k pages of each kind, small enough that one added vector dirties little.
NODES_PER_PAGE = 256

#: Below this many live vectors a single query is answered by exact search by default. One
#: exact query is one BLAS matrix-vector product over all vectors; on the bench machine
#: (tools/bench/bench_hnsw.py, results/hnsw_*.md) it matched the graph search at recall
#: 0.95 around a few thousand 384-d vectors; the threshold is in *vector components*
#: (n * dim) because the exact cost is proportional to that.
EXACT_COMPONENTS_SINGLE = 2_000_000
#: Same for ``search_many``: a batched exact search is one matrix-matrix product, far
#: cheaper per query than a matrix-vector product, so the crossover is higher.
EXACT_COMPONENTS_BATCH = 8_000_000

#: Candidates expanded per step of the batched layer search.
#: More candidates per step mean fewer numpy calls but some wasted distance computations.
_C_BATCH = 4
#: ... or ef / _C_BATCH_DIV of them when that is more: on SciFact search_many +19 % q/s at
#: ef=64, +14 % at 128, +50 % at 256 against a fixed 4, recall equal or higher.
_C_BATCH_DIV = 8
#: Candidates scanned per chunk by the neighbour-selection heuristic.
_HEUR_CHUNK = 48
#: Rows processed together by the heuristic (bounds its gathered candidate block).
_HEUR_ROWS = 32
#: Vectors gathered per block when scoring a step of a batched search.
_GATHER_ROWS = 256
#: Entries (uint16) of visited stamps per thread: bounds how many queries of one batch
#: advance together on large indexes (64 MiB: 33 queries at a time on 1M vectors).
_VIS_BUDGET = 1 << 25
#: Visited stamps: a search takes a fresh epoch in 1.._EPOCH_MAX (the array is cleared when
#: they run out); the values above are the marks with which a batched step keeps one copy
#: of a neighbour that two expanded nodes of the same query share.
_EPOCH_MAX = 32767
_MARKS = np.arange(_EPOCH_MAX + 1, 1 << 16, dtype=np.uint16)
#: Largest M: one query's step (_C_BATCH rows of 2 * M neighbours) must fit in _MARKS.
_M_MAX = _MARKS.size // (2 * _C_BATCH)  # (larger c is capped per call to fit)
#: Most frontier nodes expanded per step of a single-query search: at least _C_ONE, and
#: ef / _C_ONE_DIV for large pools (fewer steps; the extra expansions are a small share of a
#: large pool: on SciFact +12 % q/s at ef=96, +16 % at 128, +40 % at 256, recall equal or
#: higher).
_C_ONE = 8
_C_ONE_DIV = 8
#: Largest upper layer scanned exactly to find a query's entry point.
_SCAN_MAX = 1024
#: Entries of the (queries, vectors) key matrix an exact batch computes at a time (16 MiB).
_EXACT_BLOCK = 1 << 22
#: Start nodes of a single-query layer-0 search taken from that scan.
_SEEDS = 4
#: A scanned layer above layer 1 with at least this many nodes seeds the layer-0 pool
#: directly (its nodes are layer-0 nodes too), skipping the greedy descent through the layers
#: between: measured on SciFact with ml = 1/ln 2 (scan of layer 3, 643 nodes) +33 % single and
#: +20 % batch q/s at higher recall; with a 68-node scan (20k vectors, ml = 1/ln 16) the
#: descent was as good or better, hence the floor. With ml = 1/ln 2 every scanned layer has
#: 512..1024 nodes, so the descent is always skipped.
_POOL_SCAN_MIN = 256
_MAX_LEVEL = 30
_FLOAT32_MAX = float(np.finfo(np.float32).max)

_PAGE = struct.Struct("<4sIII")  # magic, block index, node count, crc32 of the payload
_VEC_MAGIC = b"HNV1"
_NODE_MAGIC = b"HNN1"
_FORMAT_VERSION = 1


class _Scratch(threading.local):
    """Per-thread visited stamps, reused across queries (epochs instead of clearing)."""

    def __init__(self) -> None:
        self.vis = np.zeros(1, np.uint16)
        self.cap1 = 0
        self.slots = 0
        self.epoch = 0


def _as_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{what} must be an int, not {type(value).__name__}")
    return int(value)


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

    Single writer; searches from several threads are safe while nothing is written (each
    thread has its own scratch arrays).

    Memory: about ``n * (4*dim + 8*M + 26 + 4*L)`` bytes (vectors, layer-0 rows, per-node
    fields, one row-map entry per upper layer ``L``) plus ``n * (4*M + 4) * p / (1 - p)``
    for the upper layers (``p = exp(-1/ml)``), plus ``2 * (n + 1) * q`` bytes of visited
    stamps per searching thread (``q`` queries advanced together, at most 64 MiB); see
    ``docs/tuning.md``.
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
        self._init_empty()

    # ------------------------------------------------------------------ state

    def _init_empty(self) -> None:
        self._n = 0
        self._linked = 0  # nodes 0.._linked-1 are linked into the graph
        self._scan: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._cap = 0
        self._live = 0
        self._entry = -1
        self._max_level = -1
        self._vecs = np.zeros((1, self.dim), np.float32)
        self._vsq = np.zeros(1, np.float32)  # squared norms (l2 only; zeros otherwise)
        self._hsq = self._vsq  # half squared norms (l2 only), for ranking keys
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
        self._scratch = _Scratch()
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
        vsq = np.zeros(cap + 1, np.float32)
        vsq[:n] = self._vsq[:n]
        self._vsq = vsq
        self._hsq = vsq * 0.5
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

    def _add_level(self) -> None:
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
                adj = np.full((ncap + 1, self.M), -1, np.int32)
                adj[:c0] = self._ladj[i][:c0]
                self._ladj[i] = adj
                ln = np.zeros(ncap, np.int32)
                ln[:c0] = self._lnodes[i][:c0]
                self._lnodes[i] = ln
            self._lrow[i][sel] = np.arange(c0, c1, dtype=np.int32)
            self._lnodes[i][c0:c1] = sel
            self._lcount[i] = c1

    def _layer(self, level: int) -> tuple[np.ndarray, np.ndarray | None]:
        if level == 0:
            return self._adj0, None
        return self._ladj[level - 1], self._lrow[level - 1]

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
        a64 = np.asarray(a, dtype=np.float64).reshape(-1, self.dim)
        ss = np.einsum("ij,ij->i", a64, a64)
        if ss.size and np.isfinite(ss).all() and ss.min() > 1e-290:
            # common case in one pass: a NaN or inf anywhere, an overflow (1e200 squared) or an
            # underflow would show in ss and take the careful path below
            norms = np.sqrt(ss)
        else:
            finite = np.isfinite(a64)
            if not finite.all():
                bad = np.argwhere(~finite)[0]
                raise NonFiniteError(f"{what}: non-finite value at index {tuple(int(v) for v in bad)}")
            # norms in float64 with scaling, so 1e200 does not overflow when squared
            scale = np.abs(a64).max(axis=1) if a64.size else np.zeros(0)
            safe = np.where(scale > 0, scale, 1.0)
            norms = np.sqrt(np.einsum("ij,ij->i", a64 / safe[:, None], a64 / safe[:, None])) * safe
        if self.metric == "cosine":
            zero = np.flatnonzero(norms == 0)
            if zero.size:
                raise ZeroVectorError(
                    f"{what}: zero-norm vector (row {int(zero[0])}) has no direction under cosine"
                )
            out = (a64 / norms[:, None]).astype(np.float32)
        else:
            # distances are computed in float32: squared norms must stay finite
            limit = math.sqrt(_FLOAT32_MAX) / 4
            big = np.flatnonzero(norms > limit)
            if big.size:
                raise NonFiniteError(
                    f"{what}: vector norm {norms[big[0]]:.3g} (row {int(big[0])}) is too large "
                    f"for float32 distances (limit {limit:.3g}); rescale the vectors"
                )
            out = a64.astype(np.float32)
        return np.ascontiguousarray(out), norms

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

    # ------------------------------------------------------------------ distances

    def _dist_pairs(self, nodes: np.ndarray, Q: np.ndarray, qsq: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
        """Distance of node ``nodes[i]`` to query ``Q[rows[i]]``; float32."""
        dots = np.einsum("ij,ij->i", self._vecs[nodes], Q[rows])
        return self._from_dots(dots, nodes, qsq, rows)

    def _from_dots(self, dots: np.ndarray, nodes: np.ndarray, qsq: np.ndarray | None, rows: np.ndarray | None) -> np.ndarray:
        if self.metric == "cosine":
            return 1.0 - dots
        if self.metric == "ip":
            return -dots
        qs = qsq if rows is None else qsq[rows]  # type: ignore[index]
        return self._vsq[nodes] + qs - 2.0 * dots

    def _pairwise(self, A_ids: np.ndarray, B_ids: np.ndarray) -> np.ndarray:
        """(R, a, b) distances between rows of ``A_ids`` (R, a) and ``B_ids`` (R, b)."""
        Ga = self._vecs[A_ids]
        Gb = self._vecs[B_ids]
        dots = np.matmul(Ga, Gb.transpose(0, 2, 1))
        if self.metric == "cosine":
            return 1.0 - dots
        if self.metric == "ip":
            return -dots
        return self._vsq[A_ids][:, :, None] + self._vsq[B_ids][:, None, :] - 2.0 * dots

    # ------------------------------------------------------------------ graph search

    def _visited(self, rows: int) -> tuple[np.ndarray, int, int]:
        """Visited stamps for ``rows`` queries: (array, row stride, fresh epoch)."""
        s = self._scratch
        cap1 = self._cap + 1
        if s.cap1 != cap1 or s.slots < rows:
            s.slots = max(rows, 1)
            s.cap1 = cap1
            s.vis = np.zeros(s.slots * cap1 + 1, np.uint16)
            s.epoch = 0
        s.epoch += 1
        if s.epoch > _EPOCH_MAX:
            s.vis.fill(0)
            s.epoch = 1
        return s.vis, cap1, s.epoch

    def _max_rows(self) -> int:
        return max(1, _VIS_BUDGET // (self._cap + 1))

    def _search_layer(
        self,
        Q: np.ndarray,
        qsq: np.ndarray | None,
        entry: np.ndarray,
        level: int,
        ef: int,
        c: int,
        entry_k: np.ndarray | None = None,
        premark: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best-first search of one layer for all rows of ``Q`` in lock-step.

        Each step takes the ``c`` best unexpanded pool entries of every active row, gathers
        their neighbour rows, drops visited ids (epoch stamps, one row of stamps per query),
        scores the rest with one batched product in a padded (rows, width) layout and merges
        them into the sorted pools with one sort. Rows whose pool is fully expanded leave
        the working set.

        ``entry_k`` (optional) holds the entries' keys when the caller already computed
        them; ``premark`` (optional) are nodes marked visited for every row without being
        scored (the caller scored them and passes only the best as entries).

        :returns: (ids, distances), int32 and float32 arrays of shape (len(Q), ef), each row
            sorted nearest first, padded with -1 / inf.
        """
        A = Q.shape[0]
        adj, rowmap = self._layer(level)
        width = adj.shape[1]
        if c > 1:  # large pools expand more per step (c == 1 is the greedy descent)
            c = max(1, min(max(c, ef // _C_BATCH_DIV), _MARKS.size // width))
        # a step keeps at most rows * c * width neighbours, each needing its own mark
        maxr = min(self._max_rows(), max(1, _MARKS.size // (c * width)))
        if A > maxr:
            parts = [
                self._search_layer(
                    Q[i : i + maxr], None if qsq is None else qsq[i : i + maxr], entry[i : i + maxr], level, ef, c,
                    None if entry_k is None else entry_k[i : i + maxr], premark,
                )
                for i in range(0, A, maxr)
            ]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        vecs = self._vecs
        l2 = self.metric == "l2"
        hsq = self._hsq
        vis, cap1, epoch = self._visited(A)
        base = np.arange(A, dtype=np.int64) * cap1
        vis[base + (cap1 - 1)] = epoch  # sentinel column of each row
        vis[-1] = epoch
        entry = entry.astype(np.int32).reshape(A, -1)[:, :ef]  # (A, seeds), distinct per row
        if premark is not None:
            vis[(base[:, None] + premark[None, :]).ravel()] = epoch
        vis[(base[:, None] + entry).ravel()] = epoch
        nQ = -Q
        out_id = np.full((A, ef), -1, np.int32)
        out_k = np.full((A, ef), np.inf, np.float32)
        W_id = out_id.copy()
        W_k = out_k.copy()
        W_x = np.zeros((A, ef), bool)
        ns = entry.shape[1]
        if entry_k is not None:
            ek = entry_k.astype(np.float32).reshape(A, -1)[:, :ef]
        else:
            ek = np.matmul(vecs.take(entry, axis=0), nQ[:, :, None])[:, :, 0]
            if l2:
                ek += hsq.take(entry)
        if ns > 1:
            o = np.argsort(ek, axis=1, kind="stable")
            entry = np.take_along_axis(entry, o, axis=1)
            ek = np.take_along_axis(ek, o, axis=1)
        W_id[:, :ns] = entry
        W_k[:, :ns] = ek
        rows = np.arange(A)  # original row of each working row
        nQw, basew = nQ, base
        marks = _MARKS
        while True:
            um = ~W_x & (W_id >= 0)
            live = um.any(axis=1)
            if not live.all():
                done = ~live
                out_id[rows[done]] = W_id[done]
                out_k[rows[done]] = W_k[done]
                if not live.any():
                    break
                rows = rows[live]
                W_id, W_k, W_x, um = W_id[live], W_k[live], W_x[live], um[live]
                nQw = nQw[live]
                basew = basew[live]
            Aw = rows.shape[0]
            if c == 1:
                col = um.argmax(axis=1)
                r = np.arange(Aw)
            else:
                r, col = np.nonzero(um & (np.cumsum(um, axis=1) <= c))
            W_x[r, col] = True
            nodes = W_id[r, col]
            nb = adj.take(nodes if rowmap is None else rowmap.take(nodes), axis=0)
            fi = (basew.take(r)[:, None] + nb).ravel()
            m = vis.take(fi) != epoch
            fi = fi.compress(m)
            n = fi.size
            if not n:
                continue
            rr = np.repeat(r, width).compress(m)
            mk = marks[:n]
            vis[fi] = mk
            m = vis.take(fi) == mk
            fi = fi.compress(m)
            rr = rr.compress(m)
            vis[fi] = epoch
            node = (fi - basew.take(rr)).astype(np.int32)
            cnt = np.bincount(rr, minlength=Aw)
            wn = int(cnt.max())
            colp = np.arange(rr.size) - (np.cumsum(cnt) - cnt).take(rr)
            ni = np.full((Aw, wn), -1, np.int32)
            ni[rr, colp] = node
            # gather + product in blocks of ~_GATHER_ROWS vectors: the block stays in cache
            # (measured 2.3x faster than one big gather of 15k rows on the bench machine)
            # (padding: each block is cut to its own widest row)
            key = np.full((Aw, wn, 1), np.inf, np.float32)
            nQ3 = nQw[:, :, None]
            bs = max(1, 2 * _GATHER_ROWS // (wn + rr.size // Aw + 1))
            starts = range(0, Aw, bs)
            for i, wb in zip(starts, np.maximum.reduceat(cnt, starts).tolist()):
                if wb:
                    np.matmul(vecs.take(ni[i : i + bs, :wb], axis=0), nQ3[i : i + bs], out=key[i : i + bs, :wb])
            key = key[:, :, 0]
            if l2:
                key += hsq.take(ni)
            key[ni < 0] = np.inf
            cat_k = np.concatenate((W_k, key), axis=1)
            o = np.argsort(cat_k, axis=1, kind="stable")[:, :ef]
            wide = ef + wn
            flat = (o + (np.arange(Aw) * wide)[:, None]).ravel()
            W_k = cat_k.ravel().take(flat).reshape(Aw, ef)
            W_id = np.concatenate((W_id, ni), axis=1).ravel().take(flat).reshape(Aw, ef)
            W_x = np.concatenate((W_x, np.zeros((Aw, wn), bool)), axis=1).ravel().take(flat).reshape(Aw, ef)
        if self.metric == "cosine":
            out_d = 1.0 + out_k
        elif self.metric == "ip":
            out_d = out_k
        else:
            out_d = np.maximum(2.0 * out_k + qsq[:, None], 0.0)  # type: ignore[index]
        return out_id, out_d

    def _search_layer_one(self, q: np.ndarray, qsq: float, ef: int) -> tuple[list[int], list[float]]:
        """Layer-0 search for one query: numpy for neighbours and distances, Python lists
        for the pool.

        Start: when the scanned upper layer is layer 1 or has at least ``_POOL_SCAN_MIN``
        nodes (every node of an upper layer is a layer-0 node too), its one exact product
        already scores every node of it, so the ``ef`` best of them form the initial pool
        and all of them are marked visited (one not in the initial pool is worse than the
        pool's ``ef``-th entry, which only gets better). Otherwise the greedy descent's node
        starts the pool.

        Each step expands the pool entries not expanded yet (the *frontier*), at most
        ``max(_C_ONE, ef // _C_ONE_DIV)`` of them, nearest first: their neighbour rows are gathered with one
        ``take``, filtered through the epoch-stamped visited array, and scored with one
        gathered product. The pool (at most ``ef`` entries) is a sorted Python list of
        ``(key, id, unexpanded)``; a step appends the new entries that beat the pool's worst
        and re-sorts once: for pools of tens of entries this costs less than the half-dozen
        numpy calls a vectorised merge needs. Nodes are ranked by a *key* that orders like
        the distance and costs one product (``-q.v``, or ``|v|^2/2 - q.v`` for l2).

        :returns: (internal ids, keys), nearest first (at most ``ef`` of each).
        """
        adj = self._adj0
        vecs = self._vecs
        vis, cap1, epoch = self._visited(1)
        vis[cap1 - 1] = epoch
        vis[-1] = epoch
        l2 = self.metric == "l2"
        hsq = self._hsq
        nq = -q
        scan = self._scan_set()
        if scan is not None and (scan[0] == 1 or scan[1].size >= _POOL_SCAN_MIN):
            _, nodes, V, vsq = scan
            ka = V @ nq
            if l2:
                ka += 0.5 * vsq
            vis[nodes] = epoch
            if nodes.size > ef:
                o = ka.argpartition(ef - 1)[:ef]
                pool = sorted(zip(ka.take(o).tolist(), nodes.take(o).tolist()))
            else:
                pool = sorted(zip(ka.tolist(), nodes.tolist()))
        else:
            seeds = self._descend(q[None, :], np.array([qsq], np.float32) if l2 else None, 0)
            vis[seeds] = epoch
            ks = vecs.take(seeds, axis=0) @ nq
            if l2:
                ks += hsq.take(seeds)
            pool = sorted(zip(ks.tolist(), seeds.tolist()))
        # pool: sorted list of (key, id, unexpanded); a step merges its new entries that beat
        # the pool's worst with one sort (cheaper than a bisect/insert per entry)
        pool = [(kv, i, True) for kv, i in pool]
        c = max(_C_ONE, ef // _C_ONE_DIV)
        while True:
            fr = [j for j, e in enumerate(pool) if e[2]][:c]
            if not fr:
                break
            exp = []
            for j in fr:
                kv, i, _ = pool[j]
                pool[j] = (kv, i, False)
                exp.append(i)
            nb = adj.take(exp, axis=0).ravel()
            nb = nb.compress(vis.take(nb) != epoch)
            n = nb.size
            if not n:
                continue
            vis[nb] = epoch
            k = vecs.take(nb, axis=0) @ nq
            if l2:
                k += hsq.take(nb)
            if len(pool) >= ef:
                # most scored neighbours lose to the pool's worst: drop them in numpy, not
                # one by one in Python
                m = k < pool[-1][0]
                k = k[m]
                nb = nb[m]
            if len(fr) > 1:
                # two frontier nodes may share a new neighbour: it was scored twice (cheaper
                # than a dedupe in numpy) and enters the pool once
                seen: set[int] = set()
                new = [(kv, i, True) for kv, i in zip(k.tolist(), nb.tolist()) if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]
            else:
                new = [(kv, i, True) for kv, i in zip(k.tolist(), nb.tolist())]
            if new:
                pool += new
                pool.sort()
                del pool[ef:]
        return [e[1] for e in pool], [e[0] for e in pool]

    def _key_to_dist(self, key: np.ndarray, qsq: float | np.ndarray) -> np.ndarray:
        if self.metric == "cosine":
            return 1.0 + key
        if self.metric == "ip":
            return key
        return np.maximum(2.0 * key + qsq, 0.0)

    def _scan_set(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
        """(level, nodes, their vectors, their squared norms) of the lowest upper layer with
        at most ``_SCAN_MAX`` linked nodes, cached until the next insert.

        Queries start with one exact product against this small layer instead of a greedy
        walk through every layer above it: fewer numpy calls and a better entry point.
        """
        if self._scan is not None:
            return self._scan
        for i in range(len(self._lcount)):
            nodes = self._lnodes[i][: self._lcount[i]]
            nodes = nodes[nodes < self._linked]
            if 0 < nodes.size <= _SCAN_MAX:
                self._scan = (i + 1, nodes, self._vecs[nodes], self._vsq[nodes])
                return self._scan
        return None

    def _scan_dists(self, Q: np.ndarray, qsq: np.ndarray | None, V: np.ndarray, vsq: np.ndarray) -> np.ndarray:
        dots = Q @ V.T
        if self.metric == "cosine":
            return 1.0 - dots
        if self.metric == "ip":
            return -dots
        return vsq[None, :] + qsq[:, None] - 2.0 * dots  # type: ignore[index]

    def _descend(self, Q: np.ndarray, qsq: np.ndarray | None, to_level: int) -> np.ndarray:
        """Entry node on layer ``to_level`` for each query: exact scan of a small upper
        layer, then greedy descent (pool of one) through the layers below it."""
        scan = self._scan_set()
        if scan is None:
            cur = np.full(Q.shape[0], self._entry, np.int32)
            top = self._max_level
        else:
            level, nodes, V, vsq = scan
            cur = nodes[self._scan_dists(Q, qsq, V, vsq).argmin(axis=1)].astype(np.int32)
            top = level - 1
        for lv in range(top, to_level, -1):
            if Q.shape[0] == 1:
                cur = np.array([self._greedy_one(Q[0], None if qsq is None else float(qsq[0]), int(cur[0]), lv)], np.int32)
            else:
                ids, _ = self._search_layer(Q, qsq, cur, lv, 1, 1)
                cur = ids[:, 0]
        return cur

    def _greedy_one(self, q: np.ndarray, qsq: float | None, cur: int, level: int) -> int:
        """Greedy walk on one upper layer for one query."""
        adj, rowmap = self._layer(level)
        vecs = self._vecs
        metric = self.metric

        def dist(ids: np.ndarray) -> np.ndarray:
            dots = vecs[ids] @ q
            if metric == "cosine":
                return 1.0 - dots
            if metric == "ip":
                return -dots
            return self._vsq[ids] + (qsq - 2.0 * dots)  # type: ignore[operator]

        curd = float(dist(np.array([cur]))[0])
        while True:
            nb = adj[rowmap[cur]]  # type: ignore[index]
            nb = nb[nb >= 0]
            if not nb.size:
                return cur
            d = dist(nb)
            j = int(d.argmin())
            if d[j] < curd:
                cur, curd = int(nb[j]), float(d[j])
            else:
                return cur

    # ------------------------------------------------------------------ insertion

    def _draw_levels(self, n: int) -> np.ndarray:
        u = 1.0 - self._rng.random(n)  # (0, 1]
        lv = np.floor(-np.log(u) * self.ml)
        return np.minimum(lv, _MAX_LEVEL).astype(np.int8)

    def _select(self, cand: np.ndarray, dq: np.ndarray, mmax: int) -> np.ndarray:
        """The paper's heuristic (Algorithm 4) for each row, vectorised over rows.

        ``cand`` (R, K) int32 candidate ids sorted by ``dq`` (their distance to the row's
        base point, inf for padding). A candidate is kept when it is closer to the base
        than to every candidate kept before it; at most ``mmax`` are kept. Candidates are
        scanned in chunks: distances among a chunk and to the already kept ones are one
        batched product each, so a row that fills up early costs little.

        :returns: int32 (R, mmax), padded with -1.
        """
        R, K = cand.shape
        if R > _HEUR_ROWS:
            return np.concatenate([
                self._select(cand[i : i + _HEUR_ROWS], dq[i : i + _HEUR_ROWS], mmax)
                for i in range(0, R, _HEUR_ROWS)
            ])
        sel = np.full((R, mmax), -1, np.int32)
        nsel = np.zeros(R, np.int64)
        alive_all = np.isfinite(dq) & (cand >= 0)
        vecs = self._vecs
        l2 = self.metric == "l2"
        vsq = self._vsq

        def pair(a: np.ndarray, b: np.ndarray, sa: np.ndarray | None, sb: np.ndarray | None) -> np.ndarray:
            dots = np.matmul(a, b.transpose(0, 2, 1))
            if self.metric == "cosine":
                return 1.0 - dots
            if self.metric == "ip":
                return -dots
            return sa[:, :, None] + sb[:, None, :] - 2.0 * dots  # type: ignore[index]

        for s in range(0, K, _HEUR_CHUNK):
            e = min(K, s + _HEUR_CHUNK)
            rows = np.flatnonzero((nsel < mmax) & alive_all[:, s:e].any(axis=1))
            if not rows.size:
                continue
            cid = cand[rows, s:e]
            cd = dq[rows, s:e]
            al = alive_all[rows, s:e].copy()
            ns = nsel[rows]
            Gc = vecs.take(cid, axis=0)
            sqc = vsq.take(cid) if l2 else None
            mx = int(ns.max())
            if mx:
                acc = sel[rows, :mx]
                sqa = vsq.take(acc) if l2 else None
                dac = pair(vecs.take(acc, axis=0), Gc, sqa, sqc)  # (r, mx, ch)
                dac[acc < 0] = np.inf
                al &= ~(dac < cd[:, None, :]).any(axis=1)
            dcc = pair(Gc, Gc, sqc, sqc)  # (r, ch, ch)
            while True:
                go = al.any(axis=1) & (ns < mmax)
                if not go.any():
                    break
                g = np.flatnonzero(go)
                i = al[g].argmax(axis=1)
                sel[rows[g], ns[g]] = cid[g, i]
                ns[g] += 1
                al[g] &= ~(dcc[g, i, :] < cd[g])
                al[g, i] = False
            nsel[rows] = ns
        return sel

    def _link_back(self, level: int, src: np.ndarray, tgt: np.ndarray) -> None:
        """Add edges tgt -> src on ``level``; rows that overflow are pruned by heuristic."""
        if not src.size:
            return
        mmax = 2 * self.M if level == 0 else self.M
        adj, rowmap = self._layer(level)
        o = np.argsort(tgt, kind="stable")
        tgt = tgt[o]
        src = src[o]
        ut, start, cnt = np.unique(tgt, return_index=True, return_counts=True)
        T = ut.size
        rowpos = np.repeat(np.arange(T), cnt)
        colpos = np.arange(tgt.size) - start[rowpos]
        inc = np.full((T, int(cnt.max())), -1, np.int32)
        inc[rowpos, colpos] = src
        arow = ut if rowmap is None else rowmap[ut]
        U = np.concatenate((adj[arow], inc), axis=1)
        U = np.where(U < 0, np.iinfo(np.int32).max, U)
        U.sort(axis=1)
        dup = np.zeros(U.shape, bool)
        dup[:, 1:] = U[:, 1:] == U[:, :-1]
        U[dup | (U == ut[:, None])] = np.iinfo(np.int32).max
        U.sort(axis=1)
        U[U == np.iinfo(np.int32).max] = -1
        nvalid = (U >= 0).sum(axis=1)
        fit = nvalid <= mmax
        if fit.any():
            w = min(mmax, U.shape[1])
            rows_fit = arow[fit]
            block = np.full((rows_fit.size, mmax), -1, np.int32)
            block[:, :w] = U[fit, :w]
            adj[rows_fit] = block
        over = np.flatnonzero(~fit)
        if over.size:
            Uo = U[over]
            t = ut[over].astype(np.int32)
            dq = self._from_dots(np.matmul(self._vecs.take(Uo, axis=0), self._vecs.take(t, axis=0)[:, :, None])[:, :, 0], Uo, self._vsq.take(t)[:, None], None)
            dq[Uo < 0] = np.inf
            o = np.argsort(dq, axis=1, kind="stable")
            Uo = np.take_along_axis(Uo, o, axis=1)
            dq = np.take_along_axis(dq, o, axis=1)
            adj[arow[over]] = self._select(Uo, dq, mmax)
        if level == 0:
            self._dirty_node.update((ut // NODES_PER_PAGE).tolist())
        else:
            self._dirty_upper = True

    def _insert_batch(self, nodes: np.ndarray) -> None:
        """Link already-stored nodes ``nodes`` (consecutive internal ids) into the graph."""
        b = nodes.size
        lv = self._levels[nodes].astype(np.int64)
        X = self._vecs[nodes]
        qsq = self._vsq[nodes] if self.metric == "l2" else None
        old_top = self._max_level
        top = max(old_top, int(lv.max()))
        efc = self.ef_construction
        # exact distances inside the batch: every new point sees its batch peers exactly
        dots = X @ X.T
        if self.metric == "cosine":
            Db = 1.0 - dots
        elif self.metric == "ip":
            Db = -dots
        else:
            Db = qsq[:, None] + qsq[None, :] - 2.0 * dots  # type: ignore[index]
        np.fill_diagonal(Db, np.inf)
        cands: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        scan = self._scan_set() if self._entry >= 0 else None
        cur = np.full(b, self._entry, np.int32)
        search_top = old_top
        if scan is not None:
            # exact candidates on the small top layers, entry point for the layers below
            s_level, s_nodes, s_V, s_vsq = scan
            Ds = self._scan_dists(X, qsq, s_V, s_vsq)
            cur = s_nodes[Ds.argmin(axis=1)].astype(np.int32)
            search_top = s_level - 1
            s_lv = self._levels[s_nodes]
        for level in range(top, -1, -1):
            need = np.flatnonzero(lv >= level)
            if not need.size:
                continue
            g_id = g_d = None
            if self._entry >= 0 and level > search_top and level <= old_top:
                cols = np.flatnonzero(s_lv >= level)
                g_d = Ds[np.ix_(need, cols)]
                g_id = np.ascontiguousarray(np.broadcast_to(s_nodes[cols].astype(np.int32), g_d.shape))
            elif self._entry >= 0 and level <= search_top:
                if level > 0:
                    walk = np.flatnonzero(lv < level)
                    if walk.size:
                        ids, _ = self._search_layer(X[walk], None if qsq is None else qsq[walk], cur[walk], level, 1, 1)
                        cur[walk] = ids[:, 0]
                g_id, g_d = self._search_layer(X[need], None if qsq is None else qsq[need], cur[need], level, efc, _C_BATCH)
                cur[need] = g_id[:, 0]
            peers = np.flatnonzero(lv >= level)
            p_d = Db[np.ix_(need, peers)]
            p_id = np.broadcast_to(nodes[peers].astype(np.int32), p_d.shape)
            if g_id is not None:
                all_id = np.concatenate((g_id, p_id), axis=1)
                all_d = np.concatenate((g_d, p_d), axis=1)
            else:
                all_id, all_d = np.ascontiguousarray(p_id), p_d
            kk = min(efc, all_d.shape[1])
            o = np.argsort(all_d, axis=1, kind="stable")[:, :kk]
            cands[level] = (need, np.take_along_axis(all_id, o, axis=1), np.take_along_axis(all_d, o, axis=1))
        for level in range(top, -1, -1):
            if level not in cands:
                continue
            need, cid, cd = cands[level]
            chosen = self._select(cid, cd, self.M)
            adj, rowmap = self._layer(level)
            src_nodes = nodes[need]
            arow = src_nodes if rowmap is None else rowmap[src_nodes]
            full = np.full((need.size, adj.shape[1]), -1, np.int32)
            full[:, : self.M] = chosen
            adj[arow] = full
            m = chosen >= 0
            self._link_back(level, np.repeat(src_nodes, m.sum(axis=1)).astype(np.int32), chosen[m])
        if top > old_top or self._entry < 0:
            self._entry = int(nodes[int(np.argmax(lv))])
            self._max_level = int(lv.max())
        self._linked = int(nodes[-1]) + 1
        self._scan = None
        self._dirty_state = True

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
        self._insert_prepared(x, norms, ids)

    def add_many(self, vecs: object, ids: Iterable[int] | np.ndarray, *, batch_size: int | None = None) -> None:
        """Insert many vectors (rows of ``vecs``, float array of shape (n, dim)) in batches.

        All rows and ids are validated before anything changes. Within a batch the new
        points search the graph together and are linked to each other by exact distance.

        :param batch_size: points inserted together (default: grows with the index, up
            to 256).

        Complexity: O(n log n * ef_construction * M * dim) expected.
        """
        X, norms = self._prepare(vecs, matrix=True, what="vectors")
        id_arr = self._prepare_ids(ids if isinstance(ids, np.ndarray) else list(ids), X.shape[0])
        if batch_size is not None:
            batch_size = _as_int(batch_size, "batch_size")
            if batch_size < 1:
                raise InvalidArgumentError("batch_size must be >= 1")
        self._insert_prepared(X, norms, id_arr, batch_size)

    def _insert_prepared(self, X: np.ndarray, norms: np.ndarray, ids: np.ndarray, batch_size: int | None = None) -> None:
        n = X.shape[0]
        if not n:
            return
        n0 = self._n
        self._reserve(n0 + n)
        new = np.arange(n0, n0 + n, dtype=np.int32)
        levels = self._draw_levels(n)
        self._vecs[new] = X
        if self.metric == "l2":
            self._vsq[new] = np.einsum("ij,ij->i", X, X)
            self._hsq[new] = self._vsq[new] * 0.5
        self._levels[new] = levels
        self._ext[new] = ids
        self._norms[new] = norms
        self._deleted[new] = False
        self._register_upper(new, levels)
        self._n = n0 + n
        i = 0
        while i < n:
            bs = batch_size if batch_size is not None else self._batch_size(n0 + i)
            self._insert_batch(new[i : i + bs])
            i += bs
        for j, v in enumerate(ids.tolist()):
            self._id_map[v] = n0 + j
        self._live += n
        self._dirty_vec.update(range(n0 // NODES_PER_PAGE, (n0 + n - 1) // NODES_PER_PAGE + 1))
        self._dirty_node.update(range(n0 // NODES_PER_PAGE, (n0 + n - 1) // NODES_PER_PAGE + 1))
        self._dirty_upper = True
        self._dirty_state = True

    def _batch_size(self, linked: int) -> int:
        """Points inserted together when ``linked`` nodes are already in the graph.

        An empty graph takes a first batch of up to 1024 points linked by exact distances
        alone (an exact candidate list is what a perfect search would find). Later batches
        are a quarter of the graph, 32 to 256 points: large enough to amortise the numpy
        calls of the lock-step search, small next to the graph so that most candidates
        come from the graph search.
        """
        if self._entry < 0:
            return 1024
        return int(min(256, max(32, linked // 4)))

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

    def _use_exact(self, exact: bool | None, batch: bool) -> bool:
        if exact is not None:
            return bool(exact)
        limit = EXACT_COMPONENTS_BATCH if batch else EXACT_COMPONENTS_SINGLE
        return self._n * self.dim <= limit

    def search(self, query: object, k: int = 10, ef: int | None = None, *, exact: bool | None = None) -> list[tuple[int, float]]:
        """The ``k`` nearest live vectors to ``query``: ``[(vec_id, distance), ...]``, nearest
        first (see the module docstring for the distance of each metric).

        :param ef: pool size of this query (default ``ef_search``; at least ``k``).
        :param exact: True forces exact search, False forces the graph; None (default)
            picks exact search when the index is small enough for it to be faster.

        Complexity: O(log n + ef * M * dim) expected (graph); O(n * dim) exact.
        """
        q = self._prepare_query(query)
        k, ef = self._prepare_k(k, ef)
        if self._live == 0:
            return []
        if self._use_exact(exact, batch=False):
            return self._exact_one(q, k)
        qsq = float(q @ q) if self.metric == "l2" else 0.0
        pid, pk = self._search_layer_one(q, qsq, ef)
        if self._live < self._n:
            dead = self._deleted
            keep = [j for j, i in enumerate(pid) if not dead[i]][:k]
            if len(keep) < min(k, self._live):  # many deletions near the query
                return self._exact_one(q, k)
            pid = [pid[j] for j in keep]
            pk = [pk[j] for j in keep]
        pid = pid[:k]
        kk = np.array(pk[:k], np.float32)
        return list(zip(self._ext.take(pid).tolist(), self._key_to_dist(kk, qsq).tolist()))

    def _prepare_query(self, query: object) -> np.ndarray:
        """Fast path of :meth:`_prepare` for one float vector (same checks and errors)."""
        if type(query) is np.ndarray and query.dtype.kind == "f" and query.shape == (self.dim,):
            a64 = query.astype(np.float64)
            ss = float(a64 @ a64)
            if math.isfinite(ss) and ss > 0.0 and (self.metric == "cosine" or ss <= (math.sqrt(_FLOAT32_MAX) / 4) ** 2):
                if self.metric == "cosine":
                    a64 /= math.sqrt(ss)
                return a64.astype(np.float32)
        return self._prepare(query, matrix=False, what="query")[0][0]

    def search_many(self, queries: object, k: int = 10, ef: int | None = None, *, exact: bool | None = None) -> list[list[tuple[int, float]]]:
        """:meth:`search` for each row of ``queries`` (float array (n, dim)), run together.

        Complexity: O(n * (log N + ef * M * dim)) expected.
        """
        ids, ds = self.search_many_arrays(queries, k, ef, exact=exact)
        out = []
        for ri, rd in zip(ids.tolist(), ds.tolist()):
            out.append([(i, d) for i, d in zip(ri, rd) if d != math.inf])
        return out

    def search_many_arrays(self, queries: object, k: int = 10, ef: int | None = None, *, exact: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search_many` but returns arrays: vec_ids int64 (n, k) and distances
        float32 (n, k); when fewer than k vectors are live a row is padded with id -1 and
        distance inf (test the distance: -1 is also a valid vec_id).

        Complexity: O(n * (log N + ef * M * dim)) expected.
        """
        Q, _ = self._prepare(queries, matrix=True, what="queries")
        k, ef = self._prepare_k(k, ef)
        nq = Q.shape[0]
        if self._live == 0 or nq == 0:
            return np.full((nq, k), -1, np.int64), np.full((nq, k), np.inf, np.float32)
        if self._use_exact(exact, batch=True):
            return self._exact(Q, k)
        qsq = np.einsum("ij,ij->i", Q, Q) if self.metric == "l2" else None
        scan = self._scan_set()
        if scan is not None and (scan[0] == 1 or scan[1].size >= _POOL_SCAN_MIN) and scan[1].size > _SEEDS:
            # upper-layer nodes are layer-0 nodes too and one product scores them all: the
            # best min(ef, size) of them are every query's initial pool, the rest are marked
            # visited (each is worse than the pool's ef-th entry, which only gets better)
            _, nodes, V, vsq = scan
            keys = Q @ -V.T
            if self.metric == "l2":
                keys += 0.5 * vsq
            ns = min(max(ef, _SEEDS), nodes.size)
            o = keys.argpartition(ns - 1, axis=1)[:, :ns] if ns < nodes.size else np.broadcast_to(np.arange(nodes.size), keys.shape)
            pid, pd = self._search_layer(
                Q, qsq, nodes.take(o), 0, ef, _C_BATCH, np.take_along_axis(keys, o, axis=1), nodes
            )
        else:
            pid, pd = self._search_layer(Q, qsq, self._descend(Q, qsq, 0), 0, ef, _C_BATCH)
        return self._finish(Q, pid, pd, k)

    def _finish(self, Q: np.ndarray, pid: np.ndarray, pd: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Drop deleted nodes from pools, keep k, map to vec_ids; exact fallback for rows
        that found fewer than ``min(k, live)`` live nodes (only with many deletions)."""
        valid = pid >= 0
        if self._live < self._n:
            valid &= ~self._deleted[np.where(valid, pid, 0)]
        nvalid = valid.sum(axis=1)
        want = min(k, self._live)
        pd = np.where(valid, pd, np.inf)
        o = np.argsort(pd, axis=1, kind="stable")[:, :k]
        ids_int = np.take_along_axis(pid, o, axis=1)
        ds = np.take_along_axis(pd, o, axis=1)
        if ids_int.shape[1] < k:
            padw = k - ids_int.shape[1]
            ids_int = np.pad(ids_int, ((0, 0), (0, padw)), constant_values=-1)
            ds = np.pad(ds, ((0, 0), (0, padw)), constant_values=np.inf)
        ok = np.isfinite(ds)
        ids = np.where(ok, self._ext[np.where(ok, ids_int, 0)], -1)
        short = np.flatnonzero(nvalid < want)
        if short.size:
            e_ids, e_ds = self._exact(Q[short], k)
            ids[short] = e_ids
            ds[short] = e_ds
        return ids.astype(np.int64), ds.astype(np.float32)

    def _exact(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over all live vectors, in blocks of queries; float32 BLAS.

        Each block is one product giving every node's ranking key (``-q.v``, or
        ``|v|^2/2 - q.v`` for l2: one pass fewer than full distances). The ``k``-th smallest
        key of each row comes from a value partition (about half the cost of an index
        partition), the entries at or below it from one comparison, and those few are
        sorted by (row, key, id): ties go to the lower internal id, as in a stable sort.
        """
        n = self._n
        V = self._vecs[:n]
        nq = Q.shape[0]
        kk = min(k, self._live)
        out_i = np.full((nq, k), -1, np.int64)
        out_d = np.full((nq, k), np.inf, np.float32)
        step = max(1, _EXACT_BLOCK // max(n, 1))
        l2 = self.metric == "l2"
        for s in range(0, nq, step):
            Qb = Q[s : s + step]
            b = Qb.shape[0]
            key = self._exact_keys(Qb @ V.T)
            if kk < n:
                kth = np.partition(key, kk - 1, axis=1)[:, kk - 1 : kk]
                r, c = np.divmod(np.flatnonzero(key <= kth), n)  # (8x faster than np.nonzero)
                kv = key[r, c]
                o = np.lexsort((c, kv, r))
                r, c, kv = r.take(o), c.take(o), kv.take(o)
                cnt = np.bincount(r, minlength=b)
                pos = np.arange(r.size) - (np.cumsum(cnt) - cnt).take(r)
                m = pos < kk
                r, c, kv, pos = r[m], c[m], kv[m], pos[m]
                sel = np.zeros((b, kk), np.int64)
                sk = np.zeros((b, kk), np.float32)
                sel[r, pos] = c
                sk[r, pos] = kv
            else:
                sel = np.argsort(key, axis=1, kind="stable")
                sk = np.take_along_axis(key, sel, axis=1)
            qsq = np.einsum("ij,ij->i", Qb, Qb)[:, None] if l2 else 0.0
            out_i[s : s + step, :kk] = self._ext[sel]
            out_d[s : s + step, :kk] = self._key_to_dist(sk, qsq)
        return out_i, out_d

    def _exact_keys(self, dots: np.ndarray) -> np.ndarray:
        """Ranking keys, in place, from the products of queries with all ``n`` stored
        vectors (last axis): ``-q.v``, or ``|v|^2/2 - q.v`` for l2; inf for deleted ones."""
        n = dots.shape[-1]
        if self.metric == "l2":
            np.subtract(self._hsq[:n], dots, out=dots)
        else:
            np.negative(dots, out=dots)
        if self._live < n:
            dots[..., self._deleted[:n]] = np.inf
        return dots

    def _exact_one(self, q: np.ndarray, k: int) -> list[tuple[int, float]]:
        """:meth:`_exact` for one query, with 1-d arrays and Python lists for its result
        (a single query's time is mostly call overhead beyond the one product)."""
        n = self._n
        key = self._exact_keys(self._vecs[:n] @ q)
        l2 = self.metric == "l2"
        kk = min(k, self._live)
        if kk < n:
            idx = np.flatnonzero(key <= np.partition(key, kk - 1)[kk - 1])
            kv = key.take(idx)
            o = kv.argsort(kind="stable")[:kk]  # idx ascending: ties go to the lower id
            idx = idx.take(o)
            kv = kv.take(o)
        else:
            idx = key.argsort(kind="stable")[:kk]
            kv = key.take(idx)
        dist = self._key_to_dist(kv, float(q @ q) if l2 else 0.0)
        return list(zip(self._ext.take(idx).tolist(), dist.tolist()))

    def stats(self) -> dict[str, Any]:
        """Counts, configuration, layer sizes and memory. Complexity: O(levels)."""
        mem = (
            self._vecs.nbytes + self._adj0.nbytes + self._vsq.nbytes + self._levels.nbytes
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
        if self.metric == "l2":
            self._vsq[new] = np.einsum("ij,ij->i", X, X)
            self._hsq[new] = self._vsq[new] * 0.5
        self._levels[new] = levels
        self._ext[new] = ext
        self._norms[new] = norms
        self._register_upper(new, levels)
        self._n = n
        i = 0
        while i < n:
            bs = self._batch_size(i)
            self._insert_batch(new[i : i + bs])
            i += bs
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
            if self.metric == "l2":
                self._vsq[:n] = np.einsum("ij,ij->i", self._vecs[:n], self._vecs[:n])
                self._hsq[:n] = self._vsq[:n] * 0.5
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
            self._linked = n
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
