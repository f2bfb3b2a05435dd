"""The vector segment: an HNSW graph plus an exactly searched *fresh* part, as one index.

Adding a document must leave it searchable when the call returns, but an HNSW insert costs
far more than the rest of an ingest (see tools/bench/bench_db.py). New vectors therefore go
to the fresh part first - an append to a float32 array - and move into the graph in one
batch when the fresh part outgrows its limit (or on :meth:`VectorSegment.merge`, which
``Database.optimize()`` calls). A query asks the graph and scans the fresh part exactly,
and merges the two lists. This is how hnswlib's brute-force index sits beside its HNSW
index behind one interface, and how Chroma's persistent segment composes its buffer.

:class:`VectorSegment` has the search interface of :class:`~llmdsdb.hnsw.HNSW`
(``search``, ``search_many``, ``add_many``, ``delete``, ``flush``, ``len``, ``in``), so
the hybrid searcher does not know which it holds. Whether the graph answers a query exactly
or by walking it is decided by the graph's size alone (:data:`EXACT_MAX_COMPONENTS`),
never by the call shape: :meth:`VectorSegment.search_many` returns exactly what
:meth:`VectorSegment.search` returns for each query.

Persistence goes through the :class:`~llmdsdb.pages.PageStore` meta API only (no
transaction is touched here): ``fresh/dir`` (msgpack ``{rows, dim, metric}``) and
``fresh/<b>`` (msgpack ``{ids: int64 LE bytes, vecs: float32 LE bytes}`` for rows
``b*1024 ..``, id -1 = deleted row), as ``storage/FORMAT.md`` (version 1) describes.

Opened with ``lazy=True`` (as a database opens it), the segment reads only the graph's
configuration; the graph and the fresh part are read at their first use, once, under a
lock - so opening a database and BM25-only queries never read the vectors.

Invariant: every live vector is in exactly one of the graph and the fresh part; in the
fresh part ``pos[i] == row`` exactly for the live rows, and ``live`` counts them.

Not thread-safe for writes; searches from several threads are safe while nothing is
written (the database's reader/writer lock arranges that).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import msgpack
import numpy as np

from llmdsdb._native import _core
from llmdsdb._validate import vectors as _check_vectors
from llmdsdb.allow import AllowSet
from llmdsdb.errors import CorruptionError, NotFoundError
from llmdsdb.hnsw import HNSW, FilterPlan, hit_lists
from llmdsdb.pages import PageStore

__all__ = ["FRESH_BLOCK", "FRESH_MAX_COMPONENTS", "FreshVectors", "GraphWork",
           "VectorSegment"]

#: Rows per persisted block of the fresh part.
FRESH_BLOCK = 1024
#: Default size of the fresh part, in vector components (rows x dim): ~10,000 vectors of
#: 384 dimensions (16 MB of float32), which one exact scan searches in about a millisecond.
FRESH_MAX_COMPONENTS = 4_000_000
_FRESH_DIR = "fresh/dir"
_METRIC_CODE = {"cosine": 0, "l2": 1, "ip": 2}  # as llmdsdb/_native/native.h numbers them


def _unpack(raw: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(bytes(raw), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptionError(f"{what}: malformed record ({exc})") from exc


class FreshVectors:
    """Recently added vectors, searched exactly. Rows are never moved until they leave for
    the graph: a deleted row keeps its place (``alive`` False), so a flush rewrites only the
    blocks that changed. For cosine the rows are stored normalised.

    Not thread-safe for writes. Memory: rows x (4·dim + 9) bytes.
    """

    def __init__(self, dim: int, metric: str) -> None:
        self.dim = dim
        self.metric = metric
        self.ids = np.empty(0, np.int64)
        self.alive = np.empty(0, bool)
        self.vecs = np.empty((0, dim), np.float32)
        self.sq = np.empty(0, np.float32)
        self.n = 0
        self.pos: dict[int, int] = {}
        self.dirty: set[int] = set()
        self.stored_blocks = 0

    def __len__(self) -> int:
        return len(self.pos)

    def __contains__(self, vec_id: object) -> bool:
        return vec_id in self.pos

    def _prep(self, vecs: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(vecs, dtype=np.float32)
        if self.metric == "cosine":
            v64 = v.astype(np.float64)  # norms in float64: float32 squares may overflow
            norms = np.sqrt(np.einsum("ij,ij->i", v64, v64))
            v = (v64 / norms[:, None]).astype(np.float32)
        return v

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * len(self.ids), 256)
        n = self.n
        ids2, alive2 = np.full(cap, -1, np.int64), np.zeros(cap, bool)
        v2, sq2 = np.zeros((cap, self.dim), np.float32), np.zeros(cap, np.float32)
        ids2[:n], alive2[:n], v2[:n], sq2[:n] = self.ids[:n], self.alive[:n], self.vecs[:n], \
            self.sq[:n]
        self.ids, self.alive, self.vecs, self.sq = ids2, alive2, v2, sq2

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Append rows (validated vectors, ids not present). Complexity: O(k·dim) amortised."""
        k = len(ids)
        if not k:
            return
        need = self.n + k
        if need > len(self.ids):
            self._grow(need)
        v = self._prep(vecs)
        self.ids[self.n : need] = ids
        self.alive[self.n : need] = True
        self.vecs[self.n : need] = v
        self.sq[self.n : need] = np.einsum("ij,ij->i", v, v)
        for j, i in enumerate(np.asarray(ids).tolist()):
            self.pos[i] = self.n + j
        self.dirty.update(range(self.n // FRESH_BLOCK, (need - 1) // FRESH_BLOCK + 1))
        self.n = need

    def delete(self, vec_id: int) -> bool:
        """Tombstone a row; False when ``vec_id`` is not here. Complexity: O(1)."""
        row = self.pos.pop(vec_id, None)
        if row is None:
            return False
        self.alive[row] = False
        self.dirty.add(row // FRESH_BLOCK)
        return True

    def take_all(self) -> tuple[np.ndarray, np.ndarray]:
        """The live rows (ids, vectors) - then the part is empty. Complexity: O(n·dim)."""
        keep = self.alive[: self.n]
        ids, vecs = self.ids[: self.n][keep].copy(), self.vecs[: self.n][keep].copy()
        stored = self.stored_blocks
        self.__init__(self.dim, self.metric)  # type: ignore[misc]
        self.stored_blocks = stored
        self.dirty = set(range(stored))  # the next flush deletes the stored blocks
        return ids, vecs

    def search_many(self, Q: np.ndarray, k: int, allow: AllowSet | None = None
                    ) -> list[list[tuple[int, float]]]:
        """Exact ``k`` nearest live rows of each query (float32 (nq, dim)), distances as
        HNSW reports them; ties to the earlier row. The graph's exact scan kernel
        (``_core.exact_topk``) does the work, so a row's answer does not depend on the other
        rows of the call. With ``allow``, only rows whose id is in the set count.

        Complexity: O(nq · n · dim).
        """
        n, live = self.n, len(self.pos)
        if not live:
            return [[] for _ in range(len(Q))]
        skip = None if live == n else (~self.alive[:n]).view(np.uint8)
        if allow is not None:
            ids = self.ids[:n]
            bits = allow.bits
            byte = ids >> 3
            inside = (ids >= 0) & (byte < bits.size)
            ok = np.zeros(n, bool)
            ok[inside] = (bits[byte[inside]] >> (ids[inside] & 7)) & 1 == 1
            keep = ok & self.alive[:n]
            live = int(keep.sum())
            if not live:
                return [[] for _ in range(len(Q))]
            skip = (~keep).view(np.uint8)
        Qp = self._prep(Q)
        kk = min(k, live)
        out_i = np.empty((len(Qp), kk), np.int64)
        out_d = np.empty((len(Qp), kk), np.float32)
        _core.exact_topk(self.vecs[:n], Qp, _METRIC_CODE[self.metric], skip, out_i, out_d)
        ids = self.ids[out_i]
        return [list(zip(r, d)) for r, d in zip(ids.tolist(), out_d.tolist())]

    # -- persistence through the PageStore meta API -----------------------------------------

    def flush(self, store: PageStore) -> None:
        """Write the changed blocks and the directory. Complexity: O(changed blocks)."""
        if not self.dirty:
            return
        nb = (self.n + FRESH_BLOCK - 1) // FRESH_BLOCK
        for b in sorted(self.dirty):
            if b < nb:
                s, e = b * FRESH_BLOCK, min(self.n, (b + 1) * FRESH_BLOCK)
                ids = np.where(self.alive[s:e], self.ids[s:e], -1)
                # float32 rows do not compress: skip the envelope's zstd attempt
                store.put_meta(f"fresh/{b}", msgpack.packb({
                    "ids": ids.astype("<i8").tobytes(),
                    "vecs": self.vecs[s:e].astype("<f4").tobytes()}, use_bin_type=True),
                    compress=False)
        for b in range(nb, self.stored_blocks):
            store.delete_meta(f"fresh/{b}")
        store.put_meta(_FRESH_DIR, msgpack.packb({"rows": self.n, "dim": self.dim,
                                                  "metric": self.metric}, use_bin_type=True))
        self.stored_blocks = nb
        self.dirty = set()

    @classmethod
    def open(cls, store: PageStore, dim: int, metric: str) -> FreshVectors:
        """Load from the store (empty when never written). Complexity: O(n·dim)."""
        seg = cls(dim, metric)
        raw = store.get_meta(_FRESH_DIR)
        if raw is None:
            return seg
        d = _unpack(raw, "idxmeta/fresh/dir")
        if not isinstance(d, dict) or d.get("dim") != dim or not isinstance(d.get("rows"), int):
            raise CorruptionError("idxmeta/fresh/dir: malformed or of another dimension")
        n = d["rows"]
        nb = (n + FRESH_BLOCK - 1) // FRESH_BLOCK
        ids = np.full(n, -1, np.int64)
        vecs = np.zeros((n, dim), np.float32)
        for b in range(nb):
            s, e = b * FRESH_BLOCK, min(n, (b + 1) * FRESH_BLOCK)
            rb = store.get_meta(f"fresh/{b}")
            blk = _unpack(rb, f"idxmeta/fresh/{b}") if rb is not None else None
            if (not isinstance(blk, dict) or not isinstance(blk.get("ids"), bytes)
                    or not isinstance(blk.get("vecs"), bytes)
                    or len(blk["ids"]) != 8 * (e - s) or len(blk["vecs"]) != 4 * dim * (e - s)):
                raise CorruptionError(f"idxmeta/fresh/{b}: missing or malformed block")
            ids[s:e] = np.frombuffer(blk["ids"], "<i8")
            vecs[s:e] = np.frombuffer(blk["vecs"], "<f4").reshape(e - s, dim)
        seg.ids, seg.vecs, seg.n, seg.alive = ids, vecs, n, ids >= 0
        seg.sq = np.einsum("ij,ij->i", vecs, vecs).astype(np.float32)
        live = np.flatnonzero(seg.alive)
        seg.pos = dict(zip(ids[live].tolist(), live.tolist()))
        seg.stored_blocks = nb
        return seg

    def _check(self) -> None:
        live = np.flatnonzero(self.alive[: self.n])
        assert len(live) == len(self.pos)
        assert all(self.pos[int(self.ids[r])] == r for r in live.tolist())


def _fresh_limit(fresh_max_vectors: int | None, dim: int) -> int:
    return (fresh_max_vectors if fresh_max_vectors is not None
            else max(2048, FRESH_MAX_COMPONENTS // max(dim, 1)))


class GraphWork:
    """A graph insert running in a worker thread (or nothing, for ``fn=None``);
    :meth:`wait` joins it and raises what it raised.

    :param fn: the work (called once, in a new thread) or None.
    """

    def __init__(self, fn: Any) -> None:
        self._exc: BaseException | None = None
        self._thread: threading.Thread | None = None
        if fn is not None:
            self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True,
                                            name="llmdsdb-graph-insert")
            self._thread.start()

    def _run(self, fn: Any) -> None:
        try:
            fn()
        except BaseException as exc:  # handed to wait(), in the caller's thread
            self._exc = exc

    def wait(self, *, reraise: bool = True) -> None:
        """Block until the work is done (an interrupt arriving meanwhile is raised after
        it, so nothing changes the segment once this returns); then raise the work's
        exception, if any and ``reraise``. Complexity: that of the work."""
        if self._thread is not None:
            interrupted: BaseException | None = None
            while self._thread.is_alive():
                try:
                    self._thread.join()
                except KeyboardInterrupt as exc:
                    interrupted = exc
            self._thread = None
            if interrupted is not None:
                raise interrupted
        exc, self._exc = self._exc, None
        if exc is not None and reraise:
            raise exc


class VectorSegment:
    """The graph and the fresh part behind the search interface of
    :class:`~llmdsdb.hnsw.HNSW` (module docstring).

    :param graph: the HNSW graph (empty or loaded).
    :param fresh: the fresh part (default: empty).
    :param fresh_max_vectors: rows the fresh part may hold before it is merged into the
        graph (None: :data:`FRESH_MAX_COMPONENTS` / dim, at least 2048; 0: no fresh part).

    Not thread-safe for writes; concurrent searches are safe while nothing is written.
    Memory: the graph's, plus the fresh part's rows x (4·dim + 9) bytes.
    """

    def __init__(self, graph: HNSW, fresh: FreshVectors | None = None, *,
                 fresh_max_vectors: int | None = None) -> None:
        self._graph: HNSW | None = graph
        self.dim = graph.dim
        self.metric = graph.metric
        self._fresh: FreshVectors | None = (fresh if fresh is not None
                                            else FreshVectors(graph.dim, graph.metric))
        self.fresh_limit = _fresh_limit(fresh_max_vectors, graph.dim)
        self._pending: tuple[PageStore, dict[str, Any]] | None = None
        self._load_lock = threading.Lock()
        #: seconds the deferred load took (0.0 when loaded eagerly or not yet)
        self.load_seconds = 0.0

    @classmethod
    def open(cls, store: PageStore, *, fresh_max_vectors: int | None = None,
             lazy: bool = False, **graph_overrides: Any) -> VectorSegment:
        """Load the graph and the fresh part from ``store``.

        :param lazy: read only the graph's configuration now; the graph and the fresh part
            are read on first use (a search, a write, stats), through ``store`` bound to the
            transaction of that use - which must see the same committed state (the
            database reloads its indexes whenever the generation changes, so it does).
            A database opened for BM25-only queries never reads its vectors.

        Complexity: O(n·dim); O(1) with ``lazy`` (the O(n·dim) at first use).

        :raises NotFoundError: when the store holds no graph.
        """
        if not lazy:
            graph = HNSW.open(store, **graph_overrides)
            return cls(graph, FreshVectors.open(store, graph.dim, graph.metric),
                       fresh_max_vectors=fresh_max_vectors)
        raw = store.get_meta("hnsw/config")
        if raw is None:
            raise NotFoundError("the store holds no HNSW index (no hnsw/config record)")
        cfg = _unpack(raw, "idxmeta/hnsw/config")
        if (not isinstance(cfg, dict) or not isinstance(cfg.get("dim"), int)
                or cfg.get("metric") not in _METRIC_CODE):
            raise CorruptionError("idxmeta/hnsw/config: malformed record")
        self = cls.__new__(cls)
        self._graph = self._fresh = None
        self.dim, self.metric = cfg["dim"], cfg["metric"]
        self.fresh_limit = _fresh_limit(fresh_max_vectors, self.dim)
        self._pending = (store, graph_overrides)
        self._load_lock = threading.Lock()
        self.load_seconds = 0.0
        return self

    def counts(self) -> dict[str, int]:
        """Nodes and live nodes of the graph, rows and live rows of the fresh part, and the
        graph's M - without reading the vectors when they are not loaded (then from the
        graph's state record and the fresh part's directory; the fresh part's deleted rows
        are not counted until it is read). Complexity: O(1) (one small record read when
        not loaded; the store must be bound)."""
        if self._graph is not None:
            g, f = self._graph, self.fresh
            return {"graph_nodes": g._n, "graph_live": g._live, "fresh_rows": f.n,
                    "fresh_live": len(f.pos), "M": g.M}
        assert self._pending is not None
        store = self._pending[0]
        cfg = _unpack(store.get_meta("hnsw/config") or b"\x80", "idxmeta/hnsw/config")
        st = _unpack(store.get_meta("hnsw/state") or b"\x80", "idxmeta/hnsw/state")
        fd = _unpack(store.get_meta(_FRESH_DIR) or b"\x80", "idxmeta/fresh/dir")
        try:
            rows = int(fd.get("rows", 0))
            return {"graph_nodes": int(st.get("n", 0)), "graph_live": int(st.get("live", 0)),
                    "fresh_rows": rows, "fresh_live": rows, "M": int(cfg["M"])}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptionError(f"idxmeta/hnsw: malformed state record ({exc})") from None

    @property
    def loaded(self) -> bool:
        """Whether the graph and the fresh part are in memory. Complexity: O(1)."""
        return self._graph is not None

    def _load(self) -> tuple[HNSW, FreshVectors]:
        """The deferred load of :meth:`open` (``lazy=True``), once, whichever thread asks
        first. Complexity: O(n·dim) the first time, O(1) after."""
        with self._load_lock:
            if self._graph is None:
                assert self._pending is not None
                store, overrides = self._pending
                t = time.perf_counter()
                graph = HNSW.open(store, **overrides)
                if (graph.dim, graph.metric) != (self.dim, self.metric):
                    raise CorruptionError("hnsw: the graph disagrees with its configuration")
                self._fresh = FreshVectors.open(store, graph.dim, graph.metric)
                self._graph = graph
                self._pending = None
                self.load_seconds = time.perf_counter() - t
        assert self._fresh is not None
        return self._graph, self._fresh

    @property
    def graph(self) -> HNSW:
        """The HNSW graph (read on first use when opened lazily)."""
        g = self._graph
        return g if g is not None else self._load()[0]

    @graph.setter
    def graph(self, value: HNSW) -> None:
        self._load()
        self._graph = value

    @property
    def fresh(self) -> FreshVectors:
        """The fresh part (read on first use when opened lazily)."""
        f = self._fresh
        return f if f is not None and self._graph is not None else self._load()[1]

    @fresh.setter
    def fresh(self, value: FreshVectors) -> None:
        self._load()
        self._fresh = value

    def __len__(self) -> int:
        """Live vectors in the graph and the fresh part. Complexity: O(1)."""
        return len(self.graph) + len(self.fresh)

    def __contains__(self, vec_id: object) -> bool:
        """Whether ``vec_id`` is live here. Complexity: O(1)."""
        return vec_id in self.fresh or vec_id in self.graph

    # -- writes ----------------------------------------------------------------------------

    def add_many(self, vecs: np.ndarray, ids: np.ndarray, *, threads: int | None = None
                 ) -> None:
        """Add validated vectors (float32 (k, dim)) under new ids: to the fresh part, which
        moves into the graph in one batch once it holds more than its limit.

        :param threads: threads of a graph insert (default: the machine's cores).

        Complexity: O(k·dim) amortised; a merge costs the graph inserts of the fresh part.
        """
        self.add_many_async(vecs, ids, threads=threads).wait()

    def add_many_async(self, vecs: np.ndarray, ids: np.ndarray, *,
                       threads: int | None = None) -> GraphWork:
        """:meth:`add_many`, with the graph insert it may need (a merge of the fresh part,
        or the rows themselves when there is no fresh part) running in a worker thread:
        the kernel releases the GIL, so the caller's other work of the same write proceeds
        meanwhile. The fresh part's append happens before this returns.

        Until :meth:`GraphWork.wait` returns, the caller must not touch this segment (no
        search, write or flush); the rows being inserted are in neither part. The graph
        that results is the one :meth:`add_many` builds (with ``threads=1``, the same
        graph bit for bit).

        Complexity: that of :meth:`add_many` (the graph part off the calling thread).
        """
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return GraphWork(None)
        graph = self.graph  # read here, in the caller's transaction, when opened lazily
        if self.fresh_limit > 0:
            self.fresh.add(ids, vecs)
            if self.fresh.n <= self.fresh_limit:
                return GraphWork(None)
            ids, vecs = self.fresh.take_all()
        return GraphWork(lambda: graph.add_many(vecs, ids, threads=threads))

    def delete(self, vec_id: int) -> None:
        """Delete a vector (a tombstone in either part). Complexity: O(1)."""
        if not self.fresh.delete(vec_id):
            self.graph.delete(vec_id)

    def merge(self, *, threads: int | None = None) -> int:
        """Move every fresh vector into the graph; returns how many moved.

        :param threads: threads of the graph insert (default: the machine's cores).

        Complexity: O(f · log n · ef_construction) for f fresh vectors.
        """
        ids, vecs = self.fresh.take_all()
        if len(ids):
            self.graph.add_many(vecs, ids, threads=threads)
        return len(ids)

    def flush(self, store: PageStore) -> None:
        """Write the graph's changed pages and the fresh part's changed blocks to ``store``.

        Complexity: O(changed pages and blocks).
        """
        if self._graph is None:
            return  # never read, so nothing changed
        self.graph.flush()
        self.fresh.flush(store)

    # -- search ----------------------------------------------------------------------------

    def filter_plan(self, allow: AllowSet | None = None) -> FilterPlan:
        """How the graph part answers a query restricted to ``allow`` (None: unrestricted):
        :meth:`llmdsdb.hnsw.HNSW.filter_plan`, which the search methods follow. The fresh
        part is always scanned exactly (restricted to the same set).

        Complexity: O(1).
        """
        return self.graph.filter_plan(allow)

    def search(self, query: np.ndarray, k: int = 10, ef: int | None = None, *,
               allow: AllowSet | None = None) -> list[tuple[int, float]]:
        """The ``k`` nearest live vectors: ``[(vec_id, distance), ...]``, nearest first;
        the graph's list and the fresh part's exact list merged.

        :param ef: the graph's pool size (default its ``ef_search``; at least ``k``).
        :param allow: only vectors whose id is in the set are returned, exactly
            ``min(k, live allowed vectors)`` of them (see :meth:`filter_plan`).

        Complexity: O(log n + ef·M·dim) (graph) or O(n·dim) (exact) + O(fresh·dim).
        """
        return self.search_many(np.asarray(query)[None, :] if np.ndim(query) == 1 else query,
                                k, ef, allow=allow)[0]

    def search_many(self, queries: np.ndarray, k: int = 10, ef: int | None = None, *,
                    allow: AllowSet | None = None) -> list[list[tuple[int, float]]]:
        """:meth:`search` for each row of ``queries``: exactly the per-query results. The
        graph decides between its exact scan and its graph walk by its size (and the
        allowed set's) alone (see :meth:`filter_plan`), and the fresh part scans every row
        with the same kernel for one query or many, so a query's hits never depend on the
        call shape.

        :param allow: one allowed set for every query (see :meth:`search`).

        Complexity: that of :meth:`search` per query.
        """
        Q = _check_vectors(queries, dim=self.dim, metric=self.metric, what="queries")
        if allow is not None:
            self.filter_plan(allow)  # the type check, even when the graph is empty
        graph = (self.graph.search_many(Q, k, ef, allow=allow) if len(self.graph)
                 else [[] for _ in range(len(Q))])
        return self._with_fresh(Q, k, allow, graph)

    def search_allowed(self, queries: np.ndarray, k: int, allow: AllowSet
                       ) -> tuple[list[list[tuple[int, float]]], list[FilterPlan]]:
        """:meth:`search_many` restricted to ``allow``, and what answered each query in the
        graph part: its :meth:`filter_plan`, or for a planned walk that handed over to the
        exact scan, why (:meth:`llmdsdb.hnsw.HNSW.search_allowed_arrays`). The fresh part is
        scanned exactly either way.

        Complexity: that of :meth:`search_many`.
        """
        Q = _check_vectors(queries, dim=self.dim, metric=self.metric, what="queries")
        plan = self.filter_plan(allow)
        if not len(self.graph):
            return self._with_fresh(Q, k, allow, [[] for _ in range(len(Q))]), [plan] * len(Q)
        ids, ds, plans = self.graph.search_allowed_arrays(Q, k, allow=allow)
        return self._with_fresh(Q, k, allow, hit_lists(ids, ds)), plans

    def _with_fresh(self, Q: np.ndarray, k: int, allow: AllowSet | None,
                    graph: list[list[tuple[int, float]]]) -> list[list[tuple[int, float]]]:
        """The graph part's lists merged with the fresh part's exact ones, k per query."""
        if not len(self.fresh):
            return graph
        out = []
        for g, f in zip(graph, self.fresh.search_many(Q, k, allow)):
            both = g + f if g else f
            if g:
                both.sort(key=lambda p: p[1])
            out.append(both[:k])
        return out

    def stats(self) -> dict[str, Any]:
        """The graph's statistics, ``count`` = all live vectors, ``fresh`` = those in the
        fresh part. Complexity: O(levels)."""
        out = dict(self.graph.stats())
        out["graph_count"] = len(self.graph)
        out["fresh"] = len(self.fresh)
        out["count"] = len(self)
        return out

    def _check(self) -> None:
        """Invariants of both parts; no id in both."""
        self.graph._check()
        self.fresh._check()
        assert not any(i in self.graph for i in self.fresh.pos)
        assert math.isfinite(self.fresh_limit)
