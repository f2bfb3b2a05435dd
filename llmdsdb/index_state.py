"""The in-memory index state of one database handle: its configuration, the inverted index
and the vector segment, as of one generation.

Invariant: an :class:`Indexes` loaded by :func:`load` reflects exactly the snapshot it was
loaded from (generation ``gen``); the database replaces it (never patches it) when another
writer has committed, and discards it when a write of its own aborts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from llmdsdb.options import Config, Explicit, Options

__all__ = ["IndexHolder", "Indexes", "adopt_stored", "ensure_metadata_index", "graph_overrides",
           "index_stats", "load"]


@dataclass
class Indexes:
    """The configuration and the in-memory indexes of one database, as of generation
    ``gen``: the inverted index and the vector segment (None until the database has
    documents / embeddings).

    Not thread-safe: the database's reader/writer lock guards it.
    """

    config: Config
    gen: int = -1
    bm25: Any = None
    vectors: Any = None
    meta: Any = None  # the MetadataIndex (set by load)


def graph_overrides(options: Options) -> dict:
    """The graph's runtime options (the query-time ``ef``). Complexity: O(1)."""
    return {"ef_search": options.hnsw_ef_search} if options.hnsw_ef_search is not None else {}


def load(store: Any, txn: Any, gen: int, config: Config, explicit: Explicit,
         options: Options) -> Indexes:
    """The indexes as of the snapshot of ``txn`` (generation ``gen``); ``config`` is the
    handle's configuration so far, checked against the stored one.

    Complexity: O(1) for the inverted index (its directory is loaded, postings lazily) and
    for the vector segment (its graph and fresh vectors are read at their first use).

    :raises ConfigConflictError: when an explicit setting of this handle disagrees with
        the stored configuration (another handle may have stored it after this one opened).
    :raises CorruptionError: when an index record is damaged.
    """
    from llmdsdb.inverted_index import InvertedIndex
    from llmdsdb.metadata_index import MetadataIndex
    from llmdsdb.vector_segment import VectorSegment

    stored = Config.read(txn)
    ix = Indexes(config.adopt(stored, explicit), gen)
    with store.bound(txn):
        ix.meta = MetadataIndex.open(store)
    if stored is None:
        return ix
    with store.bound(txn):
        ix.bm25 = InvertedIndex.open(store)
        ix.bm25.cache_bytes = options.cache_bytes
        if stored.dim is not None:
            # lazily: the graph is read by the first vector query (or write, or stats) of
            # this generation, never by open or by BM25-only queries
            ix.vectors = VectorSegment.open(store, fresh_max_vectors=options.fresh_max_vectors,
                                            lazy=True, **graph_overrides(options))
    return ix


def ensure_metadata_index(txn: Any, ix: Indexes) -> None:
    """Build the metadata index from the documents of ``txn``'s snapshot when the database
    has none yet (written before metadata indexes existed): in memory for a read, and
    persisted by the write batch that calls this first (see :mod:`llmdsdb.metadata_index`).

    Complexity: O(1) when built; O(n) record decodes once otherwise.
    """
    if ix.meta.built:
        return
    from llmdsdb.documents import docs_after
    from llmdsdb.records import decode_record

    ix.meta.ensure((iid, decode_record(raw, f"docs/{iid}")["meta"])
                   for iid, raw in docs_after(txn, -1))


def adopt_stored(env: Any, config: Config, explicit: Explicit) -> Config | None:
    """The configuration a handle must adopt when another handle created the database, or
    fixed its dimension, after this one opened it; None when nothing changed.

    Complexity: O(1); a read only while the dimension is not fixed.

    :raises ConfigConflictError: when an explicit argument of :func:`llmdsdb.open`
        disagrees with what the other handle stored.
    """
    if config.stored and config.dim is not None:
        return None  # the configuration can no longer change
    with env.read() as txn:
        stored = Config.read(txn)
    if stored is None or (config.stored and stored.dim is None):
        return None
    return config.adopt(stored, explicit)


def _as_dict(stats: object) -> dict:
    """A stats record (a dict, a NamedTuple or a dataclass) as a dict."""
    import dataclasses

    if isinstance(stats, dict):
        return dict(stats)
    if hasattr(stats, "_asdict"):
        return dict(stats._asdict())  # type: ignore[attr-defined]
    if dataclasses.is_dataclass(stats):
        return dataclasses.asdict(stats)  # type: ignore[arg-type]
    return {"value": stats}


def index_stats(ix: Indexes) -> dict[str, Any]:
    """The indexes' part of ``Database.stats()``: ``bm25``, ``terms``, ``hnsw`` (the
    graph) and ``fresh_vectors``. Complexity: O(1) plus the indexes' stats()."""
    bm = _as_dict(ix.bm25.stats()) if ix.bm25 is not None else None
    return {"bm25": bm, "terms": (bm or {}).get("num_terms"),
            "hnsw": _as_dict(ix.vectors.graph.stats()) if ix.vectors is not None else None,
            "fresh_vectors": len(ix.vectors.fresh) if ix.vectors is not None else 0}


class IndexHolder:
    """The in-memory indexes of one database handle, kept at the generation of the
    transactions that use them, and the readers-writer lock that guards them.

    :meth:`reading` gives a search its own read transaction and the indexes of that
    snapshot under the read side (reloading them first, under the write side, when another
    writer has committed); :meth:`writing` runs a write transaction under the write side and
    reloads the indexes when it aborts. A reload replaces the :class:`Indexes` (and the page
    store, so its allocator state goes with them); it never patches the one readers use.

    Thread-safe: that is what the lock is for. Memory: the indexes and the page cache.
    """

    def __init__(self, env: Any, config: Config, explicit: Explicit, options: Options) -> None:
        from llmdsdb._rwlock import RWLock
        from llmdsdb.lmdb_pages import LmdbPageStore
        from llmdsdb.pages import PageCache

        self.env, self.explicit, self.options = env, explicit, options
        self.rw = RWLock()  # read side: a search; write side: any change of the state below
        self.cache = PageCache(options.cache_bytes)
        self.store_cls = LmdbPageStore
        self.store = LmdbPageStore(env, self.cache)
        self.ix = Indexes(config)
        self.dirty = True  # the in-memory indexes may differ from the committed state
        env.on_abort.append(self.on_abort)

    def on_abort(self, *args: object) -> None:
        """The environment's abort hook: reload before the next use. Complexity: O(1)."""
        self.dirty = True
        self.cache.clear()

    def refresh(self, txn: Any) -> None:
        """Make the indexes reflect the snapshot of ``txn`` (write side held).

        Complexity: O(1) when they do; a reload otherwise (see :func:`load`).
        """
        gen = self.env.generation(txn)
        if gen != self.ix.gen or self.dirty:
            self.load(txn, gen)

    def load(self, txn: Any, gen: int) -> None:
        """Replace the indexes by those of ``txn``'s snapshot (write side held).

        Complexity: that of :func:`load`.
        """
        self.ix.bm25 = self.ix.vectors = self.ix.meta = None
        self.cache.clear()
        self.store.close()  # unhook the old store from the environment
        self.store = self.store_cls(self.env, self.cache)
        self.ix = load(self.store, txn, gen, self.ix.config, self.explicit, self.options)
        self.dirty = False

    @contextmanager
    def reading(self) -> Iterator[tuple[Any, Indexes]]:
        """A read transaction and the indexes as of its snapshot, the store bound to it.

        Complexity: O(1) plus a reload when another writer committed.
        """
        with self.rw.read(), self.env.read() as txn:
            if self.env.generation(txn) == self.ix.gen and not self.dirty:
                with self.store.bound(txn):
                    yield txn, self.ix
                return
        with self.rw.write(), self.env.read() as txn:
            self.refresh(txn)
            with self.store.bound(txn):
                yield txn, self.ix

    def adopt(self, config: Config) -> None:
        """Run with ``config`` from now on (the indexes reload with it). Complexity: O(1)."""
        with self.rw.write():
            self.ix.config = config
            self.dirty = True

    def writing(self, apply: Callable[[Any], list[int]]) -> list[int]:
        """``apply(txn)`` in one write transaction (run again from scratch after a map
        grow), the write side held; the indexes follow the commit, or are reloaded from the
        last committed state when it aborts.

        Complexity: that of ``apply`` plus the commit.
        """
        new_gen = [-1]
        with self.rw.write():
            cfg_before = self.ix.config  # the batch may fix the dimension: undone on abort

            def fn(txn: Any) -> list[int]:
                gen = self.env.generation(txn)
                if self.dirty or gen != self.ix.gen:  # a re-run after a map grow, too
                    self.ix.config = cfg_before
                    self.load(txn, gen)
                self.dirty = True  # from here on the in-memory indexes run ahead of the disk
                results = apply(txn)
                new_gen[0] = txn.bump_generation()
                return results

            try:
                results = self.env.run_write(fn)
            except BaseException:
                self.dirty = True
                self.ix.config = cfg_before
                self.cache.clear()
                raise
            self.ix.gen = new_gen[0]
            self.dirty = False
        return results

    def close(self) -> None:
        """Drop the indexes and unhook from the environment (write side held by the caller).

        Complexity: O(1).
        """
        if self.on_abort in self.env.on_abort:
            self.env.on_abort.remove(self.on_abort)
        self.ix.bm25 = self.ix.vectors = self.ix.meta = None
        self.cache.clear()
        self.store.close()
