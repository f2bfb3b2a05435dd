"""Write batches: recorded write calls, and applying them inside one LMDB write transaction.

A write call (``add``, ``upsert``, ``delete``, or every call inside ``with db.batch():``) is
validated when it is made and recorded as an :class:`Op`; :func:`apply` then runs the
recorded operations in one write transaction, in three steps, each its own function:

1. :func:`write_documents` - the ``docs`` / ``ids`` records, gathering the index work
   (:class:`IndexWork`: adds keyed by internal id, so a document added and removed inside
   one batch never reaches an index);
2. :func:`store_config` - the configuration, with the first batch and when the first
   embeddings fix the dimension;
3. :func:`update_indexes` - postings, the vector segment, their pages and the allocator.

Invariant: after :func:`apply` returns, the transaction holds the documents, the indexes'
pages and records, the allocator state and ``next_id`` of the batch - all or nothing, since
the caller commits or aborts the whole transaction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from llmdsdb.documents import next_id, set_next_id, u64key
from llmdsdb.errors import (
    ConfigConflictError,
    CorruptionError,
    DimensionError,
    DocumentNotFoundError,
    DuplicateIdError,
)
from llmdsdb.index_state import Indexes, ensure_metadata_index, graph_overrides
from llmdsdb.options import Config, Explicit
from llmdsdb.records import decode_record

__all__ = ["META_CHANGED", "BatchState", "IndexWork", "Op", "apply", "current_hashes",
           "new_graph", "validate_rows"]

#: The overlay's content hash of a document whose metadata a recorded update_metadata
#: changed (the new hash is known only in the transaction); equal to no real hash.
META_CHANGED = "metadata-changed"


class Op(NamedTuple):
    """One recorded write call: ``rows`` are :class:`~llmdsdb.records.Row` for add / upsert,
    ``(id, key)`` pairs for delete, ``(id, key, metadata, merge)`` for meta (update_metadata),
    one parsed filter for delete_where, empty for merge."""

    kind: Literal["add", "upsert", "delete", "delete_where", "meta", "merge"]
    rows: tuple
    #: the embedder identity the rows' vectors were made with (None: the caller's vectors)
    embedder: dict | None = None


@dataclass
class BatchState:
    """Calls recorded by ``with db.batch():`` (validated, not yet written)."""

    ops: list[Op] = field(default_factory=list)
    # key -> content hash after the recorded ops (None: deleted by them)
    overlay: dict[bytes, str | None] = field(default_factory=dict)
    dim: int | None = None
    changes: int = 0

    def record(self, op: Op, changes: int) -> None:
        """Record a validated call. Complexity: O(rows)."""
        self.ops.append(op)
        if op.kind == "delete":
            for _, k in op.rows:
                self.overlay[k] = None
        elif op.kind == "meta":
            for _, k, _, _ in op.rows:
                self.overlay[k] = META_CHANGED
        elif op.kind == "delete_where":
            pass  # resolved in the transaction; the overlay cannot know which ids
        else:
            for r in op.rows:
                self.overlay[r.key] = r.hash
                if self.dim is None and r.emb is not None:
                    self.dim = r.emb.shape[0]
        self.changes += changes

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested ``batch()`` block: the calls recorded inside it are dropped when an
        exception leaves it. Complexity: O(overlay) to open."""
        saved = len(self.ops), dict(self.overlay), self.dim, self.changes
        try:
            yield
        except BaseException:
            del self.ops[saved[0]:]
            self.overlay, self.dim, self.changes = saved[1], saved[2], saved[3]
            raise


def validate_rows(name: str, ids: object, texts: object, embeddings: object, metadata: object,
                  config: Config, batch: BatchState | None) -> list:
    """The :class:`~llmdsdb.records.Row` of a write call, every argument checked against the
    configuration (the dimension the open batch fixes counts).

    Complexity: O(total size of the call).
    """
    from llmdsdb import records
    from llmdsdb.documents import id_key

    keys = records.check_ids(name, ids, id_key, unique=True)
    dim = config.dim if config.dim is not None or batch is None else batch.dim
    embs = records.validate_embeddings(name, embeddings, len(keys), dim, config.metric)
    return records.build_rows(name, ids, texts, embs, metadata, keys=keys)  # type: ignore[arg-type]


def current_hashes(env: Any, batch: BatchState | None, keys: list[bytes]
                   ) -> dict[bytes, str | None]:
    """Content hash of each key as the next batch will see it: the committed state plus the
    calls recorded in the open batch.

    Complexity: O(k log n).
    """
    from llmdsdb import documents

    overlay = batch.overlay if batch is not None else {}
    out = {k: overlay[k] for k in keys if k in overlay}
    todo = [k for k in keys if k not in overlay]
    if todo:
        with env.read() as txn:
            out.update(documents.current_hashes(txn, todo))
    return out


@dataclass
class IndexWork:
    """What a batch does to the indexes, gathered while the documents are written."""

    add_text: dict[int, str] = field(default_factory=dict)
    add_emb: dict[int, np.ndarray] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)
    removed_emb: list[int] = field(default_factory=list)
    dim: int | None = None
    merge: bool = False
    meta: Any = None  # the MetadataIndex, brought in step by sync_meta()
    # metadata index changes not applied yet (applied together: one update per batch,
    # not one per document)
    meta_removed: dict[int, dict] = field(default_factory=dict)
    meta_added: dict[int, dict] = field(default_factory=dict)

    def remove(self, iid: int, had_emb: bool, metadata: dict) -> None:
        """A document leaves (deleted or replaced). Complexity: O(1) (the metadata index
        is updated by :meth:`sync_meta`)."""
        if iid in self.add_text:  # added earlier in this batch: it never reaches an index
            del self.add_text[iid]
            self.add_emb.pop(iid, None)
        else:
            self.removed.append(iid)
            if had_emb:
                self.removed_emb.append(iid)
        if iid in self.meta_added:  # added earlier in this batch: never reached it
            del self.meta_added[iid]
        else:
            self.meta_removed[iid] = metadata

    def add(self, iid: int, text: str, emb: np.ndarray | None, metadata: dict) -> None:
        """A document arrives. Complexity: O(1) (the metadata index is updated by
        :meth:`sync_meta`)."""
        self.add_text[iid] = text
        if emb is not None:
            self.add_emb[iid] = emb
        self.meta_added[iid] = metadata

    def sync_meta(self) -> Any:
        """Apply the pending metadata changes in one update; returns the metadata index,
        now in step with the batch so far. Complexity: that of one
        ``MetadataIndex.update`` of the pending documents."""
        if self.meta_removed or self.meta_added:
            self.meta.update(self.meta_removed, self.meta_added)
            self.meta_removed, self.meta_added = {}, {}
        return self.meta


def _delete_docs(txn: Any, rows: tuple, work: IndexWork) -> int:
    n = 0
    for _id, k in rows:
        raw = txn.get("ids", k)
        if raw is None:
            continue
        rec = decode_record(txn.get("docs", raw) or b"\xc0", f"docs/{int.from_bytes(raw, 'big')}")
        txn.delete("ids", k)
        txn.delete("docs", raw)
        work.remove(int.from_bytes(raw, "big"), rec["emb"] is not None, rec["meta"])
        n += 1
    return n


def _delete_where(txn: Any, flt: Any, work: IndexWork) -> int:
    """Delete the documents that pass the parsed filter ``flt`` as of this point of the
    batch (the metadata index is brought in step first)."""
    from llmdsdb.storage import id_key

    pairs = []
    for iid in work.sync_meta().evaluate(flt).tolist():
        raw = txn.get("docs", u64key(iid))
        if raw is None:
            raise CorruptionError(f"docs/{iid}: missing, but the metadata index holds it; "
                                  "run check()")
        pairs.append((None, id_key(decode_record(raw, f"docs/{iid}")["id"])))
    return _delete_docs(txn, tuple(pairs), work)


def _set_meta(txn: Any, rows: tuple, work: IndexWork) -> int:
    """update_metadata: rewrite each record with its new metadata (same internal id, text
    and vector; a new content hash) and move it in the metadata index only."""
    from llmdsdb.records import with_metadata

    n = 0
    for doc_id, k, meta, merge in rows:
        raw = txn.get("ids", k)
        if raw is None:
            raise DocumentNotFoundError(f"update_metadata: no document with id {doc_id!r}; "
                                        "nothing was written")
        iid = int.from_bytes(raw, "big")
        rec = decode_record(txn.get("docs", raw) or b"\xc0", f"docs/{iid}")
        new = dict(rec["meta"], **meta) if merge else meta
        record, h, new = with_metadata(rec, new, "update_metadata")
        if h == rec["hash"]:
            continue
        txn.put("docs", raw, record, compress=False)
        work.sync_meta().update({iid: rec["meta"]}, {iid: new})
        n += 1
    return n


def _put_docs(txn: Any, op: Op, work: IndexWork, counter: list[int]) -> int:
    n = 0
    for r in op.rows:
        raw = txn.get("ids", r.key)
        if raw is not None:
            if op.kind == "add":
                raise DuplicateIdError(f"add: id {r.id!r} already exists")
            rec = decode_record(txn.get("docs", raw) or b"\xc0",
                                f"docs/{int.from_bytes(raw, 'big')}")
            if rec["hash"] == r.hash:
                continue
            txn.delete("docs", raw)
            work.remove(int.from_bytes(raw, "big"), rec["emb"] is not None, rec["meta"])
        if r.emb is not None:
            if work.dim is None:
                work.dim = r.emb.shape[0]
            elif r.emb.shape[0] != work.dim:
                raise DimensionError(f"{op.kind}: expected dimension {work.dim}, "
                                     f"got {r.emb.shape[0]}")
        iid = counter[0]
        counter[0] += 1
        kb = u64key(iid)
        txn.put("docs", kb, r.record, compress=False)
        txn.put("ids", r.key, kb)
        work.add(iid, r.text, r.emb, r.meta)
        n += 1
    return n


def write_documents(txn: Any, ops: list[Op], dim: int | None, meta: Any
                    ) -> tuple[list[int], IndexWork]:
    """Step 1: write the documents of ``ops``, keeping the metadata index ``meta`` in step;
    returns each op's count and the work left for the text and vector indexes.

    Complexity: O(rows · log n).

    :raises DuplicateIdError: an added id exists. :raises DimensionError: mixed dimensions.
    :raises DocumentNotFoundError: update_metadata of an id that does not exist.
    """
    work = IndexWork(dim=dim, merge=any(op.kind == "merge" for op in ops), meta=meta)
    first = next_id(txn)
    counter = [first]
    results: list[int] = []
    for op in ops:
        if op.kind == "merge":
            results.append(-1)  # filled in by update_indexes
        elif op.kind == "delete":
            results.append(_delete_docs(txn, op.rows, work))
        elif op.kind == "delete_where":
            results.append(_delete_where(txn, op.rows[0], work))
        elif op.kind == "meta":
            results.append(_set_meta(txn, op.rows, work))
        else:
            results.append(_put_docs(txn, op, work, counter))
    if counter[0] != first:
        set_next_id(txn, counter[0])
    work.sync_meta()
    return results, work


def store_config(txn: Any, config: Config, explicit: Explicit, dim: int | None) -> Config:
    """Step 2: write the configuration when it is not stored yet or the batch fixes the
    dimension; returns the configuration the batch runs with.

    Complexity: O(1).

    :raises ConfigConflictError: another handle stored a conflicting configuration first.
    :raises DimensionError: it stored another dimension first.
    """
    if config.stored and config.dim == dim:
        return config
    stored = Config.read(txn)
    if stored is not None:
        merged = config.adopt(stored, explicit)
        if not config.stored and merged.public() | {"dim": None} != config.public() | {"dim": None}:
            raise ConfigConflictError("another handle stored a different configuration while "
                                      "this batch was validated; run the call again")
        if merged.dim not in (None, dim):
            raise DimensionError(f"expected dimension {merged.dim}, got {dim}")
        config = merged
    return config.write(txn, dim)


def new_graph(store: Any, cfg: Config, dim: int, options: Any) -> Any:
    """An empty graph of the database's configuration over ``store``.

    Complexity: O(1).
    """
    from llmdsdb.hnsw import HNSW

    # ml = 1/ln M (the paper's recommendation) rather than the seed API's 1/ln 2: at equal
    # recall it built 1.8-2.7x faster on SciFact, siftsmall and fmnist (docs/tuning.md,
    # tools/bench/results/hnsw_ml_ln2.md). The graph stores its ml, so reopening keeps it.
    return HNSW(dim, M=cfg.hnsw_M, ef_construction=cfg.hnsw_ef_construction,
                ml=1.0 / math.log(cfg.hnsw_M), seed=cfg.hnsw_seed, metric=cfg.metric,
                store=store, **graph_overrides(options))


def update_indexes(store: Any, ix: Indexes, work: IndexWork, options: Any,
                   results: list[int]) -> None:
    """Step 3: apply the index work to the in-memory indexes and write their pages (the
    indexes are created with the first documents / embeddings). A graph insert the new
    vectors cause runs in a worker thread while the text is indexed and its pages written
    (:meth:`~llmdsdb.vector_segment.VectorSegment.add_many_async`); it is joined before
    the vector pages are written, and before an exception leaves this function.

    Complexity: O(postings of the changed documents) + the vector segment's inserts.
    """
    from llmdsdb.analysis import Analyzer
    from llmdsdb.inverted_index import InvertedIndex
    from llmdsdb.vector_segment import VectorSegment

    cfg = ix.config
    if ix.bm25 is None:
        ix.bm25 = InvertedIndex(Analyzer.from_dict(cfg.analyzer), store=store,
                                cache_bytes=options.cache_bytes)
    if ix.vectors is None and work.dim is not None:
        ix.vectors = VectorSegment(new_graph(store, cfg, work.dim, options),
                                   fresh_max_vectors=options.fresh_max_vectors)
    for iid in work.removed:
        ix.bm25.remove_document(iid)
    for iid in work.removed_emb:
        ix.vectors.delete(iid)
    graph_work = None
    if work.add_emb:  # the graph insert (if any) runs in a worker while the text is indexed
        ids = np.fromiter(work.add_emb, dtype=np.int64, count=len(work.add_emb))
        graph_work = ix.vectors.add_many_async(np.stack(list(work.add_emb.values())), ids)
    try:
        if work.add_text:
            ix.bm25.add_documents(list(work.add_text), list(work.add_text.values()))
        ix.bm25.flush()
    except BaseException:
        if graph_work is not None:
            graph_work.wait(reraise=False)  # joined before the transaction aborts
        raise
    if graph_work is not None:
        graph_work.wait()
    if work.merge:
        moved = ix.vectors.merge() if ix.vectors is not None else 0
        results[:] = [moved if r == -1 else r for r in results]
    if ix.vectors is not None:
        ix.vectors.flush(store)
    ix.meta.flush()
    store.save_allocator()


def apply(txn: Any, store: Any, ix: Indexes, ops: list[Op], explicit: Explicit,
          options: Any) -> list[int]:
    """Run ``ops`` in the write transaction ``txn`` (the store bound to it); ``ix`` is
    brought up to the new state (the caller reloads it from disk when the transaction
    aborts). Returns each op's count.

    Complexity: that of the three steps.
    """
    for op in ops:
        now = ix.config.embedder
        if op.embedder is not None and op.embedder != now:
            raise ConfigConflictError(
                f"the database was re-embedded (embedder {now and now['name']!r}) while this "
                f"call's texts were embedded with {op.embedder['name']!r}; nothing was "
                "written: run the call again")
    with store.bound(txn):
        ensure_metadata_index(txn, ix)
        results, work = write_documents(txn, ops, ix.config.dim, ix.meta)
        if not any(results) and ix.config.stored and not work.merge:
            return results  # nothing changed (the generation still counts the batch)
        ix.config = store_config(txn, ix.config, explicit, work.dim)
        update_indexes(store, ix, work, options, results)
    return results
