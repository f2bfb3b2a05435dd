"""The in-memory index state of one database handle: its configuration, the inverted index
and the vector segment, as of one generation.

Invariant: an :class:`Indexes` loaded by :func:`load` reflects exactly the snapshot it was
loaded from (generation ``gen``); the database replaces it (never patches it) when another
writer has committed, and discards it when a write of its own aborts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmdsdb.options import Config, Explicit, Options

__all__ = ["Indexes", "adopt_stored", "graph_overrides", "index_stats", "load"]


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


def graph_overrides(options: Options) -> dict:
    """The graph's runtime options (the query-time ``ef``). Complexity: O(1)."""
    return {"ef_search": options.hnsw_ef_search} if options.hnsw_ef_search is not None else {}


def load(store: Any, txn: Any, gen: int, config: Config, explicit: Explicit,
         options: Options) -> Indexes:
    """The indexes as of the snapshot of ``txn`` (generation ``gen``); ``config`` is the
    handle's configuration so far, checked against the stored one.

    Complexity: O(1) for the inverted index (its directory is loaded, postings lazily) plus
    O(n) to load the graph's arrays and the fresh vectors.

    :raises ConfigConflictError: when an explicit setting of this handle disagrees with
        the stored configuration (another handle may have stored it after this one opened).
    :raises CorruptionError: when an index record is damaged.
    """
    from llmdsdb.inverted_index import InvertedIndex
    from llmdsdb.vector_segment import VectorSegment

    stored = Config.read(txn)
    ix = Indexes(config.adopt(stored, explicit), gen)
    if stored is None:
        return ix
    with store.bound(txn):
        ix.bm25 = InvertedIndex.open(store)
        ix.bm25.cache_bytes = options.cache_bytes
        if stored.dim is not None:
            ix.vectors = VectorSegment.open(store, fresh_max_vectors=options.fresh_max_vectors,
                                            **graph_overrides(options))
    return ix


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
