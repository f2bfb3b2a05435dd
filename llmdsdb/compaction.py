"""Compaction: give the space of deleted documents back, in bounded write transactions.

A delete is a tombstone (``Database.delete``): the inverted index keeps the document's
postings and forward list, the graph keeps the node (traversed, never returned), the fresh
part keeps the row. :func:`compact` removes them in *steps*; each step is one write
transaction of bounded size (at most ``max_batch`` terms or graph nodes, ``max_batch / 64``
forward chunks, ``4 · max_batch`` page moves of which 64 MiB of graph pages at most)
that runs under the database's write lock, so readers and other writers go on between
steps, and each step commits a complete, searchable state (``Database.check()`` clean).

The phases, in order (the record ``compact/progress`` in ``idxmeta`` names the phase and
its cursor, written in the same transaction as each step, so a killed compaction resumes
where it stopped and a reader never sees half a step):

1. ``postings`` - every term whose blocks hold postings of dead documents gets its
   postings rewritten without them (new blocks, new skip rows; old pages freed). N, df and
   avgdl already describe the live documents only, so BM25 scores do not change (the
   scores are identical up to the kernel's fixed-point quantum, ~1e-16 relative, which
   depends on the query's block bounds - tested to 1e-12).
2. ``forward`` - forward lists (term ids per document) of dead documents are emptied.
3. ``purged`` - the documents that were dead when the pass began (a bitmap kept in the
   progress record) get length 0 in the doc chunks: that marks them purged, which is how
   :func:`debt` knows that their postings are gone.
4. ``fresh`` - the fresh vector part is rewritten without its deleted rows (order kept).
5. ``graph_repair`` - deleted graph nodes are unlinked the way hnswlib's
   ``markDelete``/``repairConnectionsForUpdate`` and FreshDiskANN's delete consolidation
   do: every row (at every layer) that points at a deleted node ``d`` is re-chosen from its
   own surviving neighbours plus ``d``'s live neighbours with the HNSW selection heuristic
   (Malkov & Yashunin, Algorithm 4); then ``d`` leaves the upper layers and its row is
   cleared. A deleted entry point is replaced by a live node of the highest live level.
6. ``graph_move`` - the live nodes are renumbered densely, keeping their order (so ties
   still rank the earlier insert first): each step moves the next ``max_batch`` nodes down
   into free slots and rewrites the rows that point at them; the last step cuts the
   trailing free slots, which frees their pages.
7. ``pages`` - :meth:`PagedAllocator.defragment` renumbers the page ids densely, at most
   ``max_batch`` moves per step; the term dictionary and the graph's page directory learn
   the moves in the same transaction. Runs only when every allocated page belongs to the
   inverted index or the graph (a page owner compaction does not know is never moved).

Why repair and not a rebuild (``HNSW.compact``): a rebuild re-inserts every live node
(a search with ``ef_construction`` each) in one transaction of the whole graph's size; the
repair touches only the rows that point at deleted nodes, runs in the C kernel
``_core.hnsw_repair`` (llmdsdb/_native/repair.c) and fits bounded transactions. On SciFact
with half the documents deleted it took 0.54 s against 1.71 s for a one-thread rebuild of
the live nodes, at recall@10 0.9960 against 0.9920; with a tenth deleted, 0.21 s against
4.76 s, recall 0.9953 against 0.9900 (tools/bench/bench_compact.py, results/bench_compact.md
and bench_compact_10pct.md, one process, same run).

Invariant: between any two steps the database satisfies every invariant of
``Database.check()``; the documents, their BM25 scores and their vector distances are those
of the uncompacted database. A deleted document never comes back to life.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from llmdsdb._native import _core
from llmdsdb.errors import CorruptionError, InvalidArgumentError

__all__ = ["AUTO_MIN_DEAD_BYTES", "DEFAULT_MAX_BATCH", "PHASES", "auto_compact", "compact",
           "compaction_stats", "debt", "pages_in_use"]

log = logging.getLogger(__name__)

#: Work items (terms, graph nodes, pages; forward chunks / 64) per write transaction.
DEFAULT_MAX_BATCH = 2000
#: Postings rewritten per transaction at most (a term larger than that goes alone).
MAX_STEP_POSTINGS = 2_000_000
#: Page moves per work item in the ``pages`` phase: a move copies one stored value, and
#: each step rewrites the term-dictionary shards that name a moved page, so few large steps
#: cost less than many small ones.
PAGE_MOVES_PER_ITEM = 4
#: Graph pages moved per step at most, in bytes (their vectors and rows).
STEP_GRAPH_BYTES = 64 << 20
PHASES = ("postings", "forward", "purged", "fresh", "graph_repair", "graph_move", "pages")
PROGRESS = "compact/progress"
#: Estimated bytes a token of a document costs in the inverted index: its share of the
#: postings pages and the forward-list pages (stored values and keys). SciFact (5,183
#: documents, 850,713 tokens): 1.47 MB of postings + 0.84 MB of forward lists = 2.7 bytes
#: a token (tools/bench/bench_compact.py prints the figure for its database).
TOKEN_BYTES = 2.7
_PAGE, _CNT, _FIRST, _LAST, _MAXTF, _MINDL = range(6)
_METRIC_CODE = {"cosine": 0, "l2": 1, "ip": 2}  # as llmdsdb/_native/native.h numbers them
_INT64_MAX = (1 << 63) - 1


# --- debt -------------------------------------------------------------------------------


def debt(ix: Any) -> dict[str, Any]:
    """Live and dead bytes of the indexes (estimates from counts) and the compaction debt,
    ``dead / (live + dead)``.

    Dead: the tokens of dead documents whose postings are not purged yet
    (:data:`TOKEN_BYTES` each), deleted graph nodes (``4·dim + 8·M + 18`` bytes each: vector,
    layer-0 row, node fields) and deleted rows of the fresh part (``4·dim + 8``).

    Complexity: O(documents ever indexed) at C speed (one numpy sum), O(1) for the rest.
    """
    live = dead = 0.0
    out: dict[str, Any] = {}
    bm = ix.bm25 if ix is not None else None
    if bm is not None:
        all_len = int(bm._len.view.sum(dtype=np.int64))
        dead_tok = max(0, all_len - bm._total_len)
        out["dead_documents"] = int(bm._ext.n - bm._nlive)
        out["dead_tokens"] = dead_tok
        live += bm._total_len * TOKEN_BYTES
        dead += dead_tok * TOKEN_BYTES
    vs = ix.vectors if ix is not None else None
    if vs is not None:
        c = vs.counts()  # does not read a lazily opened graph
        node = 4 * vs.dim + 8 * c["M"] + 18
        out["dead_nodes"] = c["graph_nodes"] - c["graph_live"]
        live += c["graph_live"] * node
        dead += (c["graph_nodes"] - c["graph_live"]) * node
        row = 4 * vs.dim + 8
        out["dead_fresh_rows"] = c["fresh_rows"] - c["fresh_live"]
        live += c["fresh_live"] * row
        dead += (c["fresh_rows"] - c["fresh_live"]) * row
    out["live_bytes"] = int(live)
    out["dead_bytes"] = int(dead)
    out["debt"] = dead / (live + dead) if live + dead else 0.0
    return out


def pages_in_use(env: Any) -> dict[str, int]:
    """LMDB pages of the database's B-tree (all tables live in LMDB's main database):
    branch, leaf and overflow pages, their sum ``in_use``, and ``file_pages`` (the file's
    high-water mark). Pages on LMDB's free list are reused by later writes but not counted.

    Complexity: O(1).
    """
    with env.read():
        raw = env._env
        st = raw.stat()
        info = raw.info()
    used = int(st["branch_pages"]) + int(st["leaf_pages"]) + int(st["overflow_pages"])
    return {"branch": int(st["branch_pages"]), "leaf": int(st["leaf_pages"]),
            "overflow": int(st["overflow_pages"]), "in_use": used,
            "file_pages": int(info["last_pgno"]) + 1, "page_size": int(st["psize"])}


#: Automatic compaction waits until at least this many bytes are dead: below that the
#: space is not worth the transactions (a tiny database would compact on every delete).
AUTO_MIN_DEAD_BYTES = 1 << 20


def compaction_stats(holder: Any) -> dict[str, Any]:
    """``stats()["compaction"]``: :func:`debt`, the phase of an unfinished compaction
    (None) and :func:`pages_in_use`. Complexity: that of :func:`debt`."""
    with holder.reading() as (txn, ix):
        out = debt(ix)
        rec = _load_progress(holder.store)
        alloc = holder.store.allocator.stats()
    out["in_progress"] = None if rec is None else rec["phase"]
    out["page_ids_used"] = alloc.used
    out["page_ids_high_water"] = alloc.high_water
    out["lmdb_pages"] = pages_in_use(holder.env)
    return out


def auto_compact(holder: Any, threshold: float) -> dict[str, Any] | None:
    """Compact when the debt passed ``threshold`` (and at least
    :data:`AUTO_MIN_DEAD_BYTES` are dead), or finish a compaction a kill interrupted.

    Complexity: that of :func:`debt`; a compaction when one runs.
    """
    with holder.reading() as (txn, ix):
        d = debt(ix)
        resume = holder.store.get_meta(PROGRESS) is not None
    if resume or (d["debt"] > threshold and d["dead_bytes"] >= AUTO_MIN_DEAD_BYTES):
        log.info("automatic compaction: debt %.2f, %d dead bytes", d["debt"], d["dead_bytes"])
        return compact(holder)
    return None


# --- the driver -------------------------------------------------------------------------


def compact(holder: Any, *, max_batch: int = DEFAULT_MAX_BATCH,
            progress: Callable[[dict], object] | None = None,
            stop: Callable[[], bool] | None = None,
            lock: Any = None) -> dict[str, Any]:
    """Run compaction steps until the database is compact (or resume one a kill stopped).

    :param holder: the database's :class:`~llmdsdb.index_state.IndexHolder`; each step runs
        through ``holder.writing`` (one write transaction, the write side of its lock).
    :param max_batch: work items per transaction (>= 1).
    :param progress: called after each committed step with ``{"phase", "step", "done",
        "todo"}``.
    :param stop: polled before each step; True stops early (a later call resumes).
    :param lock: held around each step only (the database's write-call lock), so that other
        threads' write calls run between steps.
    :returns: ``{"steps", "phases": {phase: items}, "before", "after", "resumed"}`` where
        ``before``/``after`` are :func:`debt` figures.

    Complexity: O(dead postings + live postings of the terms that hold dead ones) for the
    inverted index, O(rows pointing at deleted nodes · (2M)² · dim) for the repair,
    O(n · M) per graph step for the scans, O(pages moved) for the page ids.
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InvalidArgumentError(f"max_batch must be an int >= 1, got {max_batch!r}")
    report: dict[str, Any] = {"steps": 0, "phases": {p: 0 for p in PHASES}, "resumed": False}
    with holder.reading() as (txn, ix):
        report["before"] = debt(ix)
        report["resumed"] = holder.store.get_meta(PROGRESS) is not None
    passes = 0
    while not (stop is not None and stop()):
        with lock if lock is not None else contextlib.nullcontext():
            out = holder.writing(lambda txn: _step(txn, holder, max_batch))
        if out is None:
            break
        phase, items, done, todo = out
        report["steps"] += 1
        report["phases"][phase] += items
        if progress is not None:
            progress({"phase": phase, "step": report["steps"], "done": items, "todo": todo})
        if done:
            # a resumed pass, or one that writes interleaved with, leaves the documents
            # deleted meanwhile (after the phase that handles them): one more pass for them
            passes += 1
            with holder.reading() as (_txn, ix):
                again = _needed(ix)
            if passes >= 2 or not again:
                break
    with holder.reading() as (txn, ix):
        report["after"] = debt(ix)
    return report


def _load_progress(store: Any) -> dict | None:
    raw = store.get_meta(PROGRESS)
    if raw is None:
        return None
    try:
        rec = msgpack.unpackb(bytes(raw), raw=False, strict_map_key=True)
        if not isinstance(rec, dict) or rec.get("phase") not in PHASES:
            raise ValueError("unknown phase")
        int(rec["cursor"])
        bytes(rec["dead"])
        int(rec["ndocnos"])
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptionError(f"idxmeta/{PROGRESS}: malformed record ({exc})") from exc
    return rec


def _needed(ix: Any) -> bool:
    d = debt(ix)
    if d["dead_bytes"] > 0:
        return True
    return False


def _step(txn: Any, holder: Any, max_batch: int) -> tuple[str, int, bool, int] | None:
    """One compaction step in the write transaction ``txn``: (phase, items done, whether
    compaction is complete, items left in the phase); None when there was nothing to do."""
    from llmdsdb import inverted_index

    store, ix = holder.store, holder.ix
    with store.bound(txn):
        rec = _load_progress(store)
        if rec is None:
            if not _needed(ix) and not _pages_movable(store, ix):
                return None
            bm = ix.bm25
            nd = bm._ext.n if bm is not None else 0
            dead = np.packbits(bm._live.view == 0).tobytes() if bm is not None else b""
            rec = {"phase": PHASES[0], "cursor": 0, "dead": dead, "ndocnos": nd}
        phase = rec["phase"]
        items, todo, finished = _PHASE_FN[phase](store, ix, rec, max_batch)
        done = False
        if finished:
            i = PHASES.index(phase) + 1
            if i == len(PHASES):
                store.delete_meta(PROGRESS)
                done = True
            else:
                rec["phase"], rec["cursor"] = PHASES[i], 0
        if not done:
            store.put_meta(PROGRESS, msgpack.packb(rec, use_bin_type=True))
        if ix.bm25 is not None:
            ix.bm25.flush()
            # postings entries of the page cache are named by the index object: a new name,
            # since compaction (unlike appends) rewrites a term's postings
            ix.bm25._instance = next(inverted_index._INSTANCES)
        if ix.vectors is not None:
            ix.vectors.flush(store)
        store.save_allocator()
    return phase, items, done, todo


# --- inverted index ---------------------------------------------------------------------


def _postings(store: Any, ix: Any, rec: dict, max_batch: int) -> tuple[int, int, bool]:
    """Rewrite the postings of the next terms that hold dead documents (all their blocks
    encoded in one vectorised call)."""
    from llmdsdb.codec import decode_postings_many, encode_postings_many

    bm = ix.bm25
    if bm is None:
        return 0, 0, True
    from llmdsdb.inverted_index import N_SHARDS

    # shard by shard (the cursor is a shard of the term dictionary), so that a step
    # rewrites only the dictionary shards it changed
    shard = int(rec["cursor"])
    live = bm._live.view
    lens = bm._len.a
    B = bm.block_size
    df = bm._df.a
    postings = 0
    to_free: list[int] = []
    work: list[tuple[int, np.ndarray, np.ndarray]] = []
    while shard < N_SHARDS and len(work) < max_batch and postings < MAX_STEP_POSTINGS:
        for t in bm._shard_tids[shard]:
            sk = bm._skip[t]
            if len(sk) == 0 or int(sk[:, _CNT].sum()) == int(df[t]):
                continue
            if int(sk[:, _PAGE].min()) < 0:
                raise CorruptionError(f"term {t} has unflushed blocks at compaction")
            # read past the page cache: each block is read once, and caching it would
            # only evict what searches use
            docs, tfs, _ = decode_postings_many([store.get(p) for p in sk[:, _PAGE].tolist()])
            keep = live[docs] != 0
            work.append((t, docs[keep], tfs[keep]))
            to_free.extend(sk[:, _PAGE].tolist())
            postings += len(docs)
        shard += 1
    if to_free:  # first, so the new blocks take the freed ids (the pages phase then has
        store.free(to_free)  # less to move); readers still see the old pages (MVCC)
    if work:
        cnt = np.fromiter((len(w[1]) for w in work), np.int64, len(work))
        nb = -(-cnt // B)
        D = np.concatenate([w[1] for w in work]).astype(np.int32)
        T = np.concatenate([w[2] for w in work]).astype(np.int32)
        seg = np.cumsum(cnt) - cnt
        first = np.cumsum(nb) - nb
        total = int(nb.sum())
        within = np.arange(total, dtype=np.int64) - np.repeat(first, nb)
        starts = np.repeat(seg, nb) + within * B
        ends = np.minimum(starts + B, np.repeat(seg + cnt, nb))
        rows = np.zeros((total, 6), dtype=np.int64)
        if total:
            # one id at a time: each comes from a free slab (the ids just freed) where a
            # bulk alloc would want one run of `total` ids and take the tail
            pages = [store.alloc(1)[0] for _ in range(total)]
            for page, data in zip(pages, encode_postings_many(D, T, np.concatenate((starts, [len(D)])))):
                store.put(page, data)
            rows[:, _PAGE] = pages
            rows[:, _CNT] = ends - starts
            rows[:, _FIRST] = D[starts]
            rows[:, _LAST] = D[ends - 1]
            rows[:, _MAXTF] = np.maximum.reduceat(T, starts)
            rows[:, _MINDL] = np.minimum.reduceat(lens[D], starts)
        for (tid, _, _), f, k in zip(work, first.tolist(), nb.tolist()):
            r = rows[f:f + k].copy()
            bm._skip[tid] = r
            bm._tmaxtf.a[tid] = int(r[:, _MAXTF].max()) if k else 0
            bm._tmindl.a[tid] = int(r[:, _MINDL].min()) if k else _INT64_MAX
            bm._dirty_terms.add(tid)
    bm._invalidate()
    rec["cursor"] = shard
    return len(work), N_SHARDS - shard, shard >= N_SHARDS


def _forward(store: Any, ix: Any, rec: dict, max_batch: int) -> tuple[int, int, bool]:
    """Empty the forward lists of dead documents, chunk by chunk."""
    from llmdsdb.inverted_index import FWD_CHUNK

    bm = ix.bm25
    if bm is None:
        return 0, 0, True
    nchunks = len(bm._fwd_pages)
    c = int(rec["cursor"])
    budget = max(1, max_batch // 64)
    done = 0
    live = bm._live.view
    while c < nchunks and done < budget:
        chunk = bm._fwd_chunk(c)
        if chunk is None:
            c += 1
            continue
        off, tids = chunk
        lo = c * FWD_CHUNK
        cnt = len(off) - 1
        per = np.diff(off)
        dead = live[lo:lo + cnt] == 0
        if (per[dead] > 0).any():
            per = np.where(dead, 0, per)
            keep = np.repeat(~dead, np.diff(off))
            new_off = np.concatenate(([0], np.cumsum(per))).astype(off.dtype)
            bm._fwd_pending[c] = (new_off, np.ascontiguousarray(tids[keep]))
            done += 1
        c += 1
    rec["cursor"] = c
    return done, nchunks - c, c >= nchunks


def _purged(store: Any, ix: Any, rec: dict, max_batch: int) -> tuple[int, int, bool]:
    """Length 0 for the documents dead when the pass began: their postings are gone."""
    from llmdsdb.inverted_index import DOC_CHUNK

    bm = ix.bm25
    if bm is None:
        return 0, 0, True
    nd = int(rec["ndocnos"])
    dead = np.unpackbits(np.frombuffer(bytes(rec["dead"]), np.uint8), count=nd).astype(bool)
    idx = np.flatnonzero(dead & (bm._len.a[:nd] != 0))
    if len(idx):
        if (bm._live.a[idx] != 0).any():
            raise CorruptionError("a document dead at the start of compaction is live again")
        bm._len.a[idx] = 0
        bm._dirty_doc_chunks.update(np.unique(idx // DOC_CHUNK).tolist())
        bm._invalidate()
    return len(idx), 0, True


def _fresh(store: Any, ix: Any, rec: dict, max_batch: int) -> tuple[int, int, bool]:
    """The fresh vector part without its deleted rows (one step: its size is bounded by
    ``fresh_max_vectors``)."""
    from llmdsdb.vector_segment import FRESH_BLOCK

    vs = ix.vectors
    if vs is None:
        return 0, 0, True
    fr = vs.fresh
    dead = fr.n - len(fr.pos)
    if dead:
        # the rows as stored, in their order (not re-normalised: distances stay bit-equal)
        keep = fr.alive[: fr.n]
        ids = fr.ids[: fr.n][keep].copy()
        fr.vecs = np.ascontiguousarray(fr.vecs[: fr.n][keep])
        fr.sq = fr.sq[: fr.n][keep].copy()
        fr.ids, fr.alive, fr.n = ids, np.ones(len(ids), bool), len(ids)
        fr.pos = {int(i): r for r, i in enumerate(ids.tolist())}
        fr.dirty = set(range(max(fr.stored_blocks, -(-fr.n // FRESH_BLOCK))))
    return dead, 0, True


# --- graph ------------------------------------------------------------------------------


def _layers(g: Any) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(rows, node of each row, width) of every layer, layer 0 first (views)."""
    n = g._n
    out = [(g._adj0[:n], np.arange(n, dtype=np.int64), 2 * g.M)]
    for i in range(len(g._ladj)):
        c = g._lcount[i]
        out.append((g._ladj[i][:c], g._lnodes[i][:c].astype(np.int64), g.M))
    return out


def _referenced(g: Any) -> np.ndarray:
    """bool (n,): nodes some row of some layer points at."""
    ref = np.zeros(g._n, bool)
    for a, _, _ in _layers(g):
        v = a[a >= 0]
        ref[v] = True
    return ref


def _free_slots(g: Any) -> np.ndarray:
    """bool (n,): deleted nodes nothing points at, on layer 0 only, with an empty row -
    slots the renumbering may fill."""
    n = g._n
    free = g._deleted[:n] & ~_referenced(g) & (g._levels[:n] == 0) & (g._adj0[:n, 0] < 0)
    if g._entry >= 0:
        free[g._entry] = False
    return free


def _graph_repair(store: Any, ix: Any, rec: dict, max_batch: int) -> tuple[int, int, bool]:
    """Unlink the next ``max_batch`` deleted nodes (see the module docstring)."""
    from llmdsdb.hnsw import NODES_PER_PAGE

    vs = ix.vectors
    if vs is None or vs.graph._n == 0:
        return 0, 0, True
    g = vs.graph
    n = g._n
    if g._live == 0:
        _clear_graph(g)
        return n, 0, True
    free = _free_slots(g)
    pending = np.flatnonzero(g._deleted[:n] & ~free)
    if not len(pending):
        return 0, 0, True
    levels = g._levels[:n].astype(np.int64)
    D = pending[:max_batch]
    new_entry = g._entry
    if g._deleted[g._entry]:
        live = np.flatnonzero(~g._deleted[:n])
        top = int(levels[live].max())
        new_entry = int(live[np.argmax(levels[live] == top)])
        above = np.flatnonzero(g._deleted[:n] & (levels > top))
        D = np.union1d(np.union1d(D, above), [g._entry])
    nvec = g._vecs.shape[0]  # capacity + the sentinel row
    gone = np.zeros(nvec, np.uint8)
    gone[D] = 1
    dead = np.zeros(nvec, np.uint8)
    dead[:n] = g._deleted[:n]
    metric = _METRIC_CODE[g.metric]
    dirty_nodes: set[int] = set()
    for li, (A, rownode, _width) in enumerate(_layers(g)):
        if not len(A):
            continue
        rows = np.flatnonzero((gone[np.where(A >= 0, A, nvec - 1)] != 0).any(axis=1))
        if not len(rows):
            continue
        # the rows of this layer are a prefix of its array: repair them in place
        full = g._adj0 if li == 0 else g._ladj[li - 1]
        _core.hnsw_repair(g._vecs, metric, full, _rownodes(rownode, full.shape[0]),
                          None if li == 0 else g._lrow[li - 1], gone, dead,
                          rows.astype(np.int64))
        if li == 0:
            dirty_nodes.update(rows.tolist())
    inD = gone.astype(bool)
    # strip the unlinked nodes: out of the upper layers, level 0, an empty row
    for i in range(len(g._ladj)):
        c = g._lcount[i]
        nodes = g._lnodes[i][:c]
        stay = ~inD[nodes]
        if stay.all():
            continue
        kept = nodes[stay]
        adj = np.full_like(g._ladj[i], -1)
        adj[: len(kept)] = g._ladj[i][:c][stay]
        ln = np.zeros_like(g._lnodes[i])
        ln[: len(kept)] = kept
        g._lrow[i][nodes[~stay]] = -1
        g._lrow[i][kept] = np.arange(len(kept), dtype=np.int32)
        g._ladj[i], g._lnodes[i], g._lcount[i] = adj, ln, len(kept)
    g._adj0[D] = -1
    g._levels[D] = 0
    dirty_nodes.update(D.tolist())
    g._entry = int(new_entry)
    g._max_level = int(g._levels[:n].max())
    g._g = None
    g._dirty_node.update({u // NODES_PER_PAGE for u in dirty_nodes})
    g._dirty_upper = True
    g._dirty_state = True
    left = len(pending) - len(np.intersect1d(pending, D))
    return len(D), left, left == 0


def _rownodes(rownode: np.ndarray, rows: int) -> np.ndarray:
    """int64 node of each of ``rows`` rows (the rows past the layer's count: its node 0,
    never repaired)."""
    out = np.zeros(rows, np.int64)
    out[: len(rownode)] = rownode
    return out


def _clear_graph(g: Any) -> None:
    """Every node is deleted: the graph becomes empty (its pages are freed at flush)."""
    vec, node, cfg = g._vec_pages, g._node_pages, g._config_written
    g._init_empty()
    g._vec_pages, g._node_pages, g._config_written = vec, node, cfg


def _graph_move(store: Any, ix: Any, rec: dict, max_batch: int) -> tuple[int, int, bool]:
    """Move the next ``max_batch`` kept nodes down into free slots, keeping their order;
    cut the trailing free slots when every kept node is in place."""
    from llmdsdb.hnsw import NODES_PER_PAGE

    vs = ix.vectors
    if vs is None or vs.graph._n == 0:
        return 0, 0, True
    g = vs.graph
    n = g._n
    kept = ~_free_slots(g)
    rank = np.cumsum(kept) - 1
    src_all = np.flatnonzero(kept & (rank != np.arange(n)))
    if len(src_all):
        src = src_all[:max_batch]
        tgt = rank[src]
        vacated = np.setdiff1d(src, tgt)
        remap = np.arange(n + 1, dtype=np.int64)
        remap[src] = tgt
        # every layer's rows: references to moved nodes follow them
        for li, (A, rownode, _) in enumerate(_layers(g)):
            if not len(A):
                continue
            moved = np.zeros(n + 1, bool)
            moved[src] = True
            safe = np.where(A >= 0, A, n)
            hit = moved[safe]
            rows = np.flatnonzero(hit.any(axis=1))
            if len(rows):
                A[rows] = np.where(A[rows] >= 0, remap[safe[rows]], -1).astype(np.int32)
                if li == 0:
                    g._dirty_node.update((rows // NODES_PER_PAGE).tolist())
        for name in ("_vecs", "_adj0", "_ext", "_norms", "_levels", "_deleted"):
            a = getattr(g, name)
            a[tgt] = a[src]
        for i in range(len(g._lrow)):
            lr = g._lrow[i]
            lr[tgt] = lr[src]
            lr[vacated] = -1
            c = g._lcount[i]
            g._lnodes[i][:c] = remap[g._lnodes[i][:c]]
        g._adj0[vacated] = -1
        g._levels[vacated] = 0
        g._deleted[vacated] = True
        if g._entry >= 0:
            g._entry = int(remap[g._entry])
        for t in tgt[~g._deleted[tgt]].tolist():
            g._id_map[int(g._ext[t])] = t
        blocks = set((tgt // NODES_PER_PAGE).tolist())
        g._dirty_vec.update(blocks)
        g._dirty_node.update(blocks | set((vacated // NODES_PER_PAGE).tolist()))
        g._dirty_upper = True
        g._dirty_state = True
        g._g = None
        left = len(src_all) - len(src)
        if left:
            return len(src), left, False
        kept = ~_free_slots(g)
    # every kept node is in place: cut the free tail
    top = int(np.flatnonzero(kept).max()) + 1 if kept.any() else 0
    if top < n:
        g._adj0[top:n] = -1
        g._vecs[top:n] = 0
        g._levels[top:n] = 0
        g._deleted[top:n] = False
        g._n = top
        last = (top - 1) // NODES_PER_PAGE if top else 0
        g._dirty_vec.add(last)
        g._dirty_node.add(last)
        g._dirty_state = True
        g._g = None
    return int(len(src_all)), 0, True


# --- page ids ---------------------------------------------------------------------------


def _owned_pages(ix: Any) -> set[int] | None:
    """Every page id the inverted index and the graph hold (None when a block is not
    flushed)."""
    out: set[int] = set()
    bm = ix.bm25
    if bm is not None:
        if bm._skip:
            p = np.concatenate([sk[:, _PAGE] for sk in bm._skip])
            if len(p) and int(p.min()) < 0:
                return None
            out.update(p.tolist())
        out.update(p for p in bm._doc_pages if p >= 0)
        out.update(p for p in bm._fwd_pages if p >= 0)
    if ix.vectors is not None:
        g = ix.vectors.graph
        out.update(g._vec_pages)
        out.update(g._node_pages)
    return out


def _pinned(store: Any, ix: Any) -> set[int] | None:
    """The allocated pages compaction cannot move (owned by neither the inverted index nor
    the graph, e.g. the metadata indexes'); None when a block is not flushed."""
    owned = _owned_pages(ix)
    if owned is None:
        return None
    alloc = store.allocator
    if len(owned) == alloc.used:
        return set()
    return {p for p in alloc.allocated_ids(alloc.used) if p not in owned}


def _to_move(alloc: Any, pinned: set[int]) -> int:
    """Pages a full defragmentation would still move: live, not pinned, at or above
    ``used`` (each has a hole below ``used`` to go to). Complexity: O(high_water - used)."""
    return sum(1 for p in alloc.allocated_ids(alloc.used) if p not in pinned)


def _pages_movable(store: Any, ix: Any) -> bool:
    """Whether defragmenting the page ids would move a page."""
    st = store.allocator.stats()
    if st.high_water == st.used:
        return False
    pinned = _pinned(store, ix)
    return pinned is not None and _to_move(store.allocator, pinned) > 0


def _pages(store: Any, ix: Any, rec: dict, max_batch: int) -> tuple[int, int, bool]:
    """Renumber up to ``PAGE_MOVES_PER_ITEM * max_batch`` page ids, of which graph pages
    (large: a vector page is 256 vectors) at most :data:`STEP_GRAPH_BYTES` worth; tell the
    owners the moves. Pages of other owners are pinned."""
    alloc = store.allocator
    pinned = _pinned(store, ix)
    if pinned is None:
        return 0, 0, True
    step_pinned = pinned
    if ix.vectors is not None:
        from llmdsdb.hnsw import NODES_PER_PAGE

        g = ix.vectors.graph
        per_page = NODES_PER_PAGE * (4 * g.dim + 8 * g.M + 18)
        allow = max(1, STEP_GRAPH_BYTES // per_page)
        big = [p for p in g._vec_pages + g._node_pages if p >= alloc.used]
        if len(big) > allow:
            step_pinned = pinned | set(sorted(big)[: len(big) - allow])
    moves = store.defragment(max_moves=PAGE_MOVES_PER_ITEM * max_batch, pinned=step_pinned)
    if moves:
        old = np.fromiter(moves.keys(), np.int64, len(moves))
        new = np.fromiter(moves.values(), np.int64, len(moves))
        order = np.argsort(old)
        old, new = old[order], new[order]

        def mapped(p: np.ndarray) -> np.ndarray:
            i = np.clip(np.searchsorted(old, p), 0, len(old) - 1)
            return np.where(old[i] == p, new[i], p)

        bm = ix.bm25
        if bm is not None:
            nb = np.fromiter(map(len, bm._skip), np.int64, len(bm._skip))
            if nb.sum():
                allp = np.concatenate([sk[:, _PAGE] for sk in bm._skip])
                newp = mapped(allp)
                off = np.concatenate(([0], np.cumsum(nb)))
                hit_terms = np.unique(np.repeat(np.arange(len(nb)), nb)[newp != allp])
                for t in hit_terms.tolist():
                    sk = bm._skip[t].copy()
                    sk[:, _PAGE] = newp[off[t]:off[t + 1]]
                    bm._skip[t] = sk
                    bm._dirty_terms.add(t)
            bm._doc_pages = [moves.get(p, p) for p in bm._doc_pages]
            bm._fwd_pages = [moves.get(p, p) for p in bm._fwd_pages]
            bm._invalidate()
        if ix.vectors is not None:
            g = ix.vectors.graph
            g._vec_pages = [moves.get(p, p) for p in g._vec_pages]
            g._node_pages = [moves.get(p, p) for p in g._node_pages]
            g._dirty_state = True
    left = _to_move(alloc, pinned)
    return len(moves), left, left == 0 or not moves


_PHASE_FN: dict[str, Callable[[Any, Any, dict, int], tuple[int, int, bool]]] = {
    "postings": _postings, "forward": _forward, "purged": _purged, "fresh": _fresh,
    "graph_repair": _graph_repair, "graph_move": _graph_move, "pages": _pages,
}
