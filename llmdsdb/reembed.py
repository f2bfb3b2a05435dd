"""Re-embedding: move a database to another embedder without a moment of mixed vectors.

:meth:`Database.reembed <llmdsdb.db.Database.reembed>` (and ``llmdsdb reembed``) rebuilds
every document's vector and the graph with a new embedder in two phases:

1. **Staging**, in bounded batches. Each batch reads up to ``batch_size`` documents past a
   cursor (internal ids ascending) from a read snapshot, embeds their texts with no lock
   held, and then commits in one short write transaction: the vectors go into a *staged*
   graph, the embedder's raw output into a staged block, and the cursor moves on. The
   staged key space is the ``idxmeta`` prefix ``reembed/`` (:data:`PREFIX`):

   * ``reembed/state`` - msgpack ``{v, embedder, dim, cursor, staged, blocks}``: the target
     identity, the last internal id staged, documents staged, blocks written;
   * ``reembed/hnsw/...`` - the staged graph's records (its pages are ordinary pages from
     the one allocator, so ``check()`` accounts for them);
   * ``reembed/vec/<b>`` - block *b*: ``{ids: int64 LE, vecs: float32 LE}``, the embedder's
     output for the documents of one batch (what the document records will hold).

   The live vectors, graph and configuration are not touched: every search, and every
   write with the old embedder, runs as before. A kill loses at most the batch in flight;
   a re-run with the same embedder resumes from the cursor.
2. **The switch**, one write transaction: documents written since staging began (internal
   ids are never reused, so they sit past the cursor) are embedded (when at most one
   batch; otherwise staging goes on first), staged vectors of documents deleted meanwhile
   are dropped, every document record gets its new vector (and content hash), the old
   graph's pages are freed and its records deleted, the staged records take the live
   names, and the configuration stores the new embedder's identity and dimension. Readers
   see the old database or the new one, never a mix.

Invariant: while ``reembed/state`` exists, every staged vector belongs to an internal id at
most ``cursor``, is in the staged graph exactly once and has exactly one row in the
``reembed/vec/`` blocks; after the switch no ``reembed/`` record remains, and every live
document's vector is the new embedder's output for its text (a document whose text
embeds to a zero vector under the cosine metric is kept without a vector).

Limits: the switch rewrites every document record in one write transaction, so its size
is about the database's document bytes (LMDB keeps a transaction's dirty pages in memory);
the metric and the graph parameters stay those of the database.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from llmdsdb.errors import (
    ConfigConflictError,
    CorruptionError,
    DimensionError,
    InvalidArgumentError,
    LlmdsdbError,
)

__all__ = ["PREFIX", "ReembedProgress", "ReembedResult", "abort", "check_staging",
           "in_progress", "run"]

#: The ``idxmeta`` name prefix of everything staged.
PREFIX = "reembed/"
_STATE = "state"
_VEC = "vec/"
_STATE_VERSION = 1
#: Times the switch may find more than one batch of new documents before it embeds them
#: inside its own transaction anyway (a writer that never pauses must not starve it).
_SWITCH_TRIES = 3


@dataclass(frozen=True, slots=True)
class ReembedProgress:
    """Counts so far, handed to ``progress`` after every committed batch and at the end.

    ``total`` is the number of documents when the batch was read (writes may change it);
    ``phase`` is ``"staging"`` or ``"switched"``.
    """

    staged: int
    total: int
    batches: int
    embedded_now: int
    elapsed_s: float
    phase: str


@dataclass(frozen=True, slots=True)
class ReembedResult:
    """What one :func:`run` did.

    ``embedded`` counts the documents this call embedded (a resumed run skips those staged
    before); ``resumed`` says whether a staged re-embed was found; ``switched`` is False only
    when the database already had this embedder and nothing was staged; ``without_vector``
    counts documents whose text embeds to nothing (kept without a vector).
    """

    embedder: dict
    documents: int
    embedded: int
    batches: int
    resumed: bool
    switched: bool
    without_vector: int
    seconds: float


class _Behind(Exception):
    """The switch found more new documents than it embeds in its own transaction."""


class _Moved(Exception):
    """Another re-embed committed a batch since this one read its snapshot."""


# --- the staged key space ----------------------------------------------------------------


class _Prefixed:
    """A :class:`~llmdsdb.pages.PageStore` view of ``store`` whose named records live under
    :data:`PREFIX`; pages and the allocator are ``store``'s own (one allocator per file).

    Not thread-safe: used inside one write or read transaction.
    """

    def __init__(self, store: Any) -> None:
        self._s = store

    def alloc(self, n: int = 1) -> list[int]:
        return self._s.alloc(n)  # type: ignore[no-any-return]

    def put(self, page_id: int, data: bytes) -> None:
        self._s.put(page_id, data)

    def get(self, page_id: int) -> bytes:
        return self._s.get(page_id)  # type: ignore[no-any-return]

    def load(self, page_id: int, decode: Callable[[bytes], Any]) -> Any:
        return self._s.load(page_id, decode)

    def free(self, page_ids: Any) -> None:
        self._s.free(page_ids)

    def get_meta(self, name: str) -> bytes | None:
        return self._s.get_meta(PREFIX + name)  # type: ignore[no-any-return]

    def put_meta(self, name: str, data: bytes, *, compress: bool | None = None) -> None:
        self._s.put_meta(PREFIX + name, data, compress=compress)

    def delete_meta(self, name: str) -> bool:
        return self._s.delete_meta(PREFIX + name)  # type: ignore[no-any-return]

    def meta_names(self, prefix: str = "") -> list[str]:
        cut = len(PREFIX)
        return [n[cut:] for n in self._s.meta_names(PREFIX + prefix)]


def _unpack(raw: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(bytes(raw), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptionError(f"idxmeta/{PREFIX}{what}: malformed record ({exc})") from exc


def _read_state(view: _Prefixed) -> dict | None:
    raw = view.get_meta(_STATE)
    if raw is None:
        return None
    s = _unpack(raw, _STATE)
    if (not isinstance(s, dict) or s.get("v") != _STATE_VERSION
            or not isinstance(s.get("embedder"), dict)
            or not all(isinstance(s.get(k), int) for k in ("dim", "cursor", "staged", "blocks"))):
        raise CorruptionError(f"idxmeta/{PREFIX}{_STATE}: unknown or malformed record")
    return s


def _write_state(view: _Prefixed, s: dict) -> None:
    view.put_meta(_STATE, msgpack.packb(s, use_bin_type=True))


def _read_blocks(view: _Prefixed, s: dict) -> dict[int, np.ndarray]:
    """internal id -> the embedder's float32 vector, from every staged block."""
    out: dict[int, np.ndarray] = {}
    dim = s["dim"]
    for b in range(s["blocks"]):
        raw = view.get_meta(f"{_VEC}{b}")
        blk = _unpack(raw, f"{_VEC}{b}") if raw is not None else None
        if (not isinstance(blk, dict) or not isinstance(blk.get("ids"), bytes)
                or not isinstance(blk.get("vecs"), bytes)
                or len(blk["vecs"]) != 4 * dim * (len(blk["ids"]) // 8)
                or len(blk["ids"]) % 8):
            raise CorruptionError(f"idxmeta/{PREFIX}{_VEC}{b}: missing or malformed block")
        ids = np.frombuffer(blk["ids"], "<i8")
        vecs = np.frombuffer(blk["vecs"], "<f4").reshape(len(ids), dim)
        for i, v in zip(ids.tolist(), vecs):
            out[i] = v
    return out


def in_progress(txn: Any) -> bool:
    """Whether a re-embed is staged in the snapshot of ``txn`` (page-moving maintenance
    must wait for it to finish or be aborted). Complexity: O(1)."""
    from llmdsdb.storage import meta_key

    return txn.get("idxmeta", meta_key(PREFIX + _STATE)) is not None


# --- helpers -----------------------------------------------------------------------------


def _identity(embedder: Any) -> tuple[Any, dict]:
    from llmdsdb.embedders import get_embedder

    obj = get_embedder(embedder)
    return obj, obj.identity().as_dict()


def _new_graph(view: _Prefixed, cfg: Any, dim: int, options: Any) -> Any:
    from llmdsdb.write_batch import new_graph

    return new_graph(view, cfg, dim, options)  # the live graph's parameters


def _open_graph(view: _Prefixed, options: Any) -> Any:
    from llmdsdb.hnsw import HNSW
    from llmdsdb.index_state import graph_overrides

    return HNSW.open(view, **graph_overrides(options))


def _embed(emb: Any, texts: list[str], dim: int) -> np.ndarray:
    """The embedder's float32 (n, dim) output for ``texts``."""
    if not texts:
        return np.zeros((0, dim), np.float32)
    vecs = np.ascontiguousarray(np.asarray(emb.embed_documents(texts), dtype=np.float32))
    if vecs.shape != (len(texts), dim):
        raise DimensionError(f"embedder returned shape {vecs.shape}, expected "
                             f"({len(texts)}, {dim})")
    return vecs


def _graph_rows(ids: np.ndarray, vecs: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows that go into the graph: under cosine a zero row has no direction and the
    document is kept without a vector; every other row must pass the vector rule."""
    from llmdsdb._validate import vectors as check_vectors

    if metric == "cosine" and len(vecs):
        keep = np.einsum("ij,ij->i", vecs.astype(np.float64), vecs.astype(np.float64)) > 0
        ids, vecs = ids[keep], vecs[keep]
    if len(vecs):
        check_vectors(vecs, dim=vecs.shape[1], metric=metric, what="re-embedded vectors")
    return ids, vecs


def _stage(view: _Prefixed, graph: Any, s: dict, iids: list[int], vecs: np.ndarray,
           metric: str) -> None:
    """Add one batch to the staged graph and blocks, and move the cursor past it."""
    ids = np.asarray(iids, np.int64)
    gi, gv = _graph_rows(ids, vecs, metric)
    if len(gi):
        graph.add_many(gv, gi)
    graph.flush()
    view.put_meta(f"{_VEC}{s['blocks']}", msgpack.packb(
        {"ids": ids.astype("<i8").tobytes(), "vecs": vecs.astype("<f4").tobytes()},
        use_bin_type=True), compress=False)
    s["blocks"] += 1
    s["staged"] += len(iids)


def _drop_staging(store: Any, view: _Prefixed, free_pages: bool) -> None:
    """Delete every staged record (and free the staged graph's pages when asked)."""
    if free_pages and view.get_meta("hnsw/config") is not None:
        graph = _open_graph(view, _NoOverrides)
        store.free(graph.page_ids())
    for name in view.meta_names():
        view.delete_meta(name)


class _NoOverrides:
    hnsw_ef_search = None


# --- the two phases ----------------------------------------------------------------------


class _Run:
    """One call of :func:`run`: the database, the target embedder and the staged graph
    kept in memory between batches while nobody else writes."""

    def __init__(self, db: Any, emb: Any, ident: dict, batch_size: int) -> None:
        self.db, self.emb, self.ident, self.batch_size = db, emb, ident, batch_size
        self.dim = int(ident["dim"])
        self.graph: Any = None
        self.graph_gen = -1  # the generation our last commit produced (graph valid there)
        self.embedded = 0
        self.batches = 0
        self.without_vector = 0

    def _graph_for(self, txn: Any, view: _Prefixed, s: dict, cfg: Any) -> Any:
        if self.graph is not None and self.db._env.generation(txn) == self.graph_gen:
            self.graph._store = view  # the same graph; this transaction's store
            return self.graph
        if s["staged"] or view.get_meta("hnsw/config") is not None:
            self.graph = _open_graph(view, self.db._options)
        else:
            self.graph = _new_graph(view, cfg, self.dim, self.db._options)
        return self.graph

    def _committed(self) -> None:
        self.graph_gen = self.db._state.ix.gen

    def _start_state(self, s: dict | None) -> dict:
        if s is None:
            return {"v": _STATE_VERSION, "embedder": self.ident, "dim": self.dim,
                    "cursor": -1, "staged": 0, "blocks": 0}
        if s["embedder"] != self.ident:
            raise ConfigConflictError(_other_staged(s["embedder"], self.ident))
        return s

    def snapshot(self) -> tuple[dict | None, int, list[tuple[int, str]]]:
        """The staged state, the live document count and the next batch to embed."""
        from llmdsdb.documents import docs_after
        from llmdsdb.records import decode_record

        st = self.db._state
        with self.db._env.read() as txn, st.store.bound(txn):
            s = _read_state(_Prefixed(st.store))
            if s is not None and s["embedder"] != self.ident:
                raise ConfigConflictError(_other_staged(s["embedder"], self.ident))
            cursor = s["cursor"] if s is not None else -1
            rows = [(iid, decode_record(raw, f"docs/{iid}")["text"])
                    for iid, raw in itertools.islice(docs_after(txn, cursor), self.batch_size)]
            return s, txn.count("docs"), rows

    def stage_batch(self, cursor: int, rows: list[tuple[int, str]]) -> int:
        """Embed ``rows`` (no lock held) and commit them as one staged batch; returns the
        number staged (0 when another re-embed moved the cursor first)."""
        from llmdsdb.documents import u64key

        vecs = _embed(self.emb, [t for _, t in rows], self.dim)
        self.embedded += len(rows)
        db, st = self.db, self.db._state

        def fn(txn: Any) -> list[int]:
            with st.store.bound(txn):
                view = _Prefixed(st.store)
                s = self._start_state(_read_state(view))
                if s["cursor"] != cursor:
                    raise _Moved()
                live = [j for j, (iid, _) in enumerate(rows)
                        if txn.get("docs", u64key(iid)) is not None]  # deleted meanwhile
                graph = self._graph_for(txn, view, s, st.ix.config)
                _stage(view, graph, s, [rows[j][0] for j in live], vecs[live],
                       st.ix.config.metric)
                s["cursor"] = rows[-1][0]
                _write_state(view, s)
                st.store.save_allocator()
            return [len(live)]

        with db._write_lock:
            db._check_writable()
            try:
                n = st.writing(fn)[0]
            except _Moved:
                self.graph = None
                return 0
            except BaseException:
                self.graph = None  # it ran ahead of the aborted transaction
                raise
            self._committed()
        self.batches += 1
        return n

    def switch(self, last_try: bool) -> dict:
        """The one transaction that makes the staged vectors the database's; returns the
        new configuration's public form."""
        from llmdsdb import records
        from llmdsdb.compaction import PROGRESS as COMPACT_PROGRESS
        from llmdsdb.documents import docs_after, u64key
        from llmdsdb.index_state import graph_overrides
        from llmdsdb.vector_segment import VectorSegment

        db, st = self.db, self.db._state
        out: dict = {}

        def fn(txn: Any) -> list[int]:
            store, ix = st.store, st.ix
            with store.bound(txn):
                # an unfinished compaction's graph phases hold cursors into the graph the
                # switch replaces (one during staging is harmless: it never moves pages it
                # does not own, and the staged graph's are not its own)
                if store.get_meta(COMPACT_PROGRESS) is not None:
                    raise InvalidArgumentError(
                        "a compaction of this database is unfinished and its cursor points "
                        "into the current graph: finish it first (llmdsdb compact PATH), "
                        "then run reembed again - it resumes and only switches")
                view = _Prefixed(store)
                s = self._start_state(_read_state(view))
                staged = _read_blocks(view, s)
                docs = [(iid, records.decode_record(raw, f"docs/{iid}"))
                        for iid, raw in docs_after(txn, -1)]
                live = {iid for iid, _ in docs}
                todo = [(iid, rec["text"]) for iid, rec in docs if iid not in staged]
                if len(todo) > self.batch_size and not last_try:
                    raise _Behind()
                graph = self._graph_for(txn, view, s, ix.config)
                if todo:  # written since staging began: embedded here, inside the switch
                    vecs = _embed(self.emb, [t for _, t in todo], self.dim)
                    self.embedded += len(todo)
                    _stage(view, graph, s, [i for i, _ in todo], vecs, ix.config.metric)
                    staged.update(zip((i for i, _ in todo), vecs))
                for iid in [i for i in staged if i not in live]:  # deleted since staged
                    if iid in graph:
                        graph.delete(iid)
                graph.flush()
                without = 0
                for iid, rec in docs:
                    v = staged[iid]
                    emb = v.astype("<f4").tobytes() if iid in graph else None
                    without += emb is None
                    txn.put("docs", u64key(iid), records.with_embedding(rec, emb),
                            compress=False)
                self.without_vector = without
                if ix.vectors is not None:  # the old graph and fresh part go
                    store.free(ix.vectors.graph.page_ids())
                for name in store.meta_names("hnsw/") + store.meta_names("fresh/"):
                    store.delete_meta(name)
                for name in view.meta_names("hnsw/"):
                    store.put_meta(name, view.get_meta(name))
                _drop_staging(store, view, free_pages=False)
                cfg = dataclasses.replace(ix.config, embedder=self.ident)
                if ix.bm25 is None:  # a database never written to: a stored configuration
                    from llmdsdb.analysis import Analyzer  # goes with an inverted index
                    from llmdsdb.inverted_index import InvertedIndex

                    ix.bm25 = InvertedIndex(Analyzer.from_dict(cfg.analyzer), store=store,
                                            cache_bytes=db._options.cache_bytes)
                    ix.bm25.flush()
                ix.config = cfg.write(txn, self.dim)
                ix.vectors = VectorSegment.open(
                    store, fresh_max_vectors=db._options.fresh_max_vectors,
                    **graph_overrides(db._options))
                store.save_allocator()
                out.update(ix.config.public())
            return [0]

        with db._write_lock:
            db._check_writable()
            try:
                st.writing(fn)
            finally:
                self.graph = None
        return out


def _other_staged(have: dict, want: dict) -> str:
    return (f"a re-embed with embedder {have.get('name')!r} (model {have.get('model')}) is "
            f"staged in this database; resume it with that embedder, or abort it (llmdsdb "
            f"reembed PATH --abort) before re-embedding with {want['name']!r}")


def run(db: Any, embedder: Any, *, batch_size: int = 256,
        progress: Callable[[ReembedProgress], None] | None = None,
        clock: Callable[[], float] = time.monotonic) -> ReembedResult:
    """Re-embed every document of ``db`` with ``embedder`` (see the module docstring);
    ``Database.reembed`` calls it.

    Complexity: O(n) embeddings plus the graph inserts, in O(n / batch_size) write
    transactions, and one switch transaction of O(n) record writes.
    """
    from llmdsdb._validate import check_int

    batch_size = check_int("batch_size", batch_size, 1, 1_000_000)
    if progress is not None and not callable(progress):
        raise InvalidArgumentError("progress must be callable or None")
    db._check_writable()
    if db._batch is not None:
        raise InvalidArgumentError("reembed() cannot run inside batch()")
    emb, ident = _identity(embedder)
    start = clock()
    r = _Run(db, emb, ident, batch_size)
    s, total, rows = r.snapshot()
    resumed = s is not None
    cfg = db._state.ix.config
    if s is None and cfg.stored and cfg.embedder == ident:
        return ReembedResult(ident, total, 0, 0, False, False, 0, clock() - start)
    tries = 0
    while True:
        while rows:
            r.stage_batch(s["cursor"] if s is not None else -1, rows)
            s, total, rows = r.snapshot()
            if progress is not None and s is not None:
                progress(ReembedProgress(s["staged"], total, r.batches, r.embedded,
                                         clock() - start, "staging"))
        try:
            r.switch(last_try=tries >= _SWITCH_TRIES - 1)
            break
        except _Behind:
            tries += 1
            s, total, rows = r.snapshot()
    _adopt(db, emb, ident)
    n = db.count()
    if progress is not None:
        progress(ReembedProgress(n, n, r.batches, r.embedded, clock() - start, "switched"))
    return ReembedResult(ident, n, r.embedded, r.batches, resumed, True, r.without_vector,
                         clock() - start)


def _adopt(db: Any, emb: Any, ident: dict) -> None:
    """After the switch: this handle embeds with the new embedder, and the explicit
    settings it was opened with follow the new identity."""
    st = db._state
    ex = db._explicit
    new = dataclasses.replace(
        ex, embedder=ident if ex.embedder is not None else None,
        dim=int(ident["dim"]) if ex.dim is not None else None)
    db._explicit = st.explicit = new
    db._embedder_obj = emb


def abort(db: Any) -> bool:
    """Drop a staged re-embed (its pages freed, its records deleted) in one write
    transaction; False when none was staged. The database is as it was before it began.

    Complexity: O(staged pages).
    """
    db._check_writable()
    if db._batch is not None:
        raise InvalidArgumentError("abort_reembed() cannot run inside batch()")
    st = db._state
    with db._env.read() as txn:
        if not in_progress(txn):
            return False

    def fn(txn: Any) -> list[int]:
        with st.store.bound(txn):
            view = _Prefixed(st.store)
            found = view.get_meta(_STATE) is not None
            _drop_staging(st.store, view, free_pages=True)
            st.store.save_allocator()
        return [int(found)]

    with db._write_lock:
        return bool(st.writing(fn)[0])


def check_staging(txn: Any, store: Any) -> list[str]:
    """Problems of a staged re-embed in the snapshot of ``txn`` (none when nothing is
    staged): the state record, the blocks, and the staged graph - its invariants, and that
    it holds exactly the staged rows that have a vector, all at most the cursor.

    Complexity: O(staged vectors).
    """
    from llmdsdb.documents import next_id

    view = _Prefixed(store)
    try:
        s = _read_state(view)
        if s is None:
            names = view.meta_names()
            return [f"idxmeta/{PREFIX}: records {names[:3]} without a state record"] \
                if names else []
        staged = _read_blocks(view, s)
        if len(staged) != s["staged"]:
            return [f"{PREFIX}state: {s['staged']} documents staged, blocks hold {len(staged)}"]
        problems = []
        if staged and (max(staged) > s["cursor"] or s["cursor"] >= next_id(txn)):
            problems.append(f"{PREFIX}state: cursor {s['cursor']} disagrees with the staged "
                            "ids or next_id")
        if view.get_meta("hnsw/config") is None:
            return problems + ([f"{PREFIX}: staged vectors but no staged graph"]
                               if staged else [])
        graph = _open_graph(view, _NoOverrides)
        try:
            graph._check()
        except AssertionError as exc:
            problems.append(f"{PREFIX}hnsw: invariant violated ({exc})")
        want = {i for i, v in staged.items() if graph.metric != "cosine" or np.any(v)}
        if len(graph) != len(want):
            problems.append(f"{PREFIX}hnsw: holds {len(graph)} vectors for "
                            f"{len(want)} staged documents with a vector")
        problems += [f"{PREFIX}hnsw: staged document {i} is missing"
                     for i in sorted(want) if i not in graph][:20]
        return problems
    except LlmdsdbError as exc:
        return [f"{PREFIX}: cannot be read ({exc})"]
