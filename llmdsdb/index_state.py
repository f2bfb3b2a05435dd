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

__all__ = ["Indexes", "graph_overrides", "load"]


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
