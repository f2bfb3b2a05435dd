"""``Database.check()``: verify a whole database, reporting problems instead of raising.

Checks, in one read transaction: the envelope checksum of every value in every named
database; the shape of every document record; that the id map and the documents agree
(every ``ids`` key is the key of the id its record holds - the key-integrity rule of
:mod:`llmdsdb.documents` - and every document is mapped); that the counts agree; that the
indexes hold exactly the live documents (the inverted index's entries, and the graph's plus
the fresh part's, are the live documents with an embedding; the metadata index's ``all``
list is the live documents) and that each index's
``_check()`` holds; that every allocated page is stored and every stored page allocated;
and a staged re-embed, if any (:func:`llmdsdb.reembed.check_staging`).

Invariant: :func:`check_database` never raises for a damaged file (each failure becomes a
problem line); it raises only when the transaction itself cannot be used.
"""

from __future__ import annotations

from typing import Any

from llmdsdb.documents import id_key, next_id
from llmdsdb.errors import CorruptionError, LlmdsdbError
from llmdsdb.records import decode_record
from llmdsdb.reembed import check_staging
from llmdsdb.storage import Envelope, from_u64key

__all__ = ["check_database", "check_documents", "check_indexes", "check_metadata_index",
           "check_values"]


def check_values(txn: Any) -> list[str]:
    """Envelope checksums of every value outside ``pages`` (the page store checks those).

    Complexity: O(total bytes).
    """
    problems: list[str] = []
    for db in ("meta", "docs", "ids", "idxmeta"):
        try:
            for k, raw in txn.raw_items(db):
                try:
                    Envelope.decode_value(raw, key_desc=f"{db}/{bytes(k)!r}")
                except CorruptionError as exc:
                    problems.append(str(exc))
        except LlmdsdbError as exc:
            problems.append(f"{db}: cannot be read ({exc})")
    return problems


def check_documents(txn: Any, dim: int | None, problems: list[str]) -> dict[int, bool]:
    """The documents and the id map; returns ``{internal id: has an embedding}`` of the
    readable documents.

    Complexity: O(n).
    """
    live: dict[int, bool] = {}
    ids_seen: dict[bytes, int] = {}
    try:
        for k, v in txn.items("ids"):
            ids_seen[bytes(k)] = from_u64key(v)
    except LlmdsdbError as exc:
        problems.append(f"ids: {exc}")
    max_iid = -1
    try:
        for k, v in txn.items("docs"):
            iid = from_u64key(k)
            max_iid = max(max_iid, iid)
            try:
                rec = decode_record(v, f"docs/{iid}")
            except CorruptionError as exc:
                problems.append(str(exc))
                continue
            live[iid] = rec["emb"] is not None
            if ids_seen.get(id_key(rec["id"])) != iid:
                problems.append(f"docs/{iid}: id {rec['id']!r} is not mapped to it")
            if rec["emb"] is not None and dim is not None and len(rec["emb"]) != 4 * dim:
                problems.append(f"docs/{iid}: embedding has the wrong dimension")
    except LlmdsdbError as exc:
        problems.append(f"docs: {exc}")
    for key, iid in ids_seen.items():
        if iid not in live:
            problems.append(f"ids/{key!r}: points at missing document {iid}")
    try:
        if next_id(txn) <= max_iid:
            problems.append("meta/next_id is not above every internal id")
    except LlmdsdbError as exc:
        problems.append(f"meta/next_id: {exc}")
    if txn.count("docs") != len(ids_seen):
        problems.append(f"count mismatch: {txn.count('docs')} documents, {len(ids_seen)} ids")
    return live


def _invariants(name: str, idx: Any) -> list[str]:
    try:
        idx._check()
    except AssertionError as exc:
        return [f"{name}: invariant violated ({exc})"]
    except Exception as exc:  # noqa: BLE001 - a damaged index may fail in any way
        return [f"{name}: check failed ({type(exc).__name__}: {exc})"]
    return []


def check_indexes(bm: Any, vectors: Any, live: dict[int, bool]) -> list[str]:
    """The indexes hold exactly the live documents (see the module docstring).

    Complexity: O(n) plus the indexes' ``_check()``.
    """
    problems: list[str] = []
    if bm is not None:
        problems += _invariants("bm25", bm)
        if len(bm) != len(live):
            problems.append(f"bm25 holds {len(bm)} documents, the database {len(live)}")
        problems += [f"bm25: live document {i} is not indexed" for i in live if i not in bm][:20]
    elif live:
        problems.append("documents exist but the inverted index is missing")
    with_emb = {i for i, e in live.items() if e}
    if vectors is None:
        if with_emb:
            problems.append("embeddings exist but the graph is missing")
        return problems
    hn, fr = vectors.graph, vectors.fresh
    problems += _invariants("hnsw", hn) + _invariants("fresh segment", fr)
    in_fresh = set(fr.pos)
    problems += [f"fresh segment: row of missing document {i}"
                 for i in sorted(in_fresh - with_emb)[:20]]
    if len(hn) + len(in_fresh) != len(with_emb):
        problems.append(f"hnsw holds {len(hn)} vectors and the fresh segment "
                        f"{len(in_fresh)}, the database {len(with_emb)} embeddings")
    problems += [f"hnsw: document {i} is neither in the graph nor the fresh segment"
                 for i in with_emb if i not in hn and i not in in_fresh][:20]
    problems += [f"document {i} is both in the graph and the fresh segment"
                 for i in in_fresh if i in hn][:20]
    return problems


def check_metadata_index(meta: Any, live: dict[int, bool]) -> list[str]:
    """The metadata index (when built) holds exactly the live documents and keeps its
    invariants. Complexity: O(n) plus the lists it has loaded.

    """
    if meta is None or not meta.built:
        return []
    try:
        held = meta.live_ids().tolist()
    except LlmdsdbError as exc:
        return [f"metadata index: {exc}"]
    problems = _invariants("metadata index", meta)
    if held != sorted(live):
        problems.append(f"metadata index holds {len(held)} documents, the database "
                        f"{len(live)}")
    return problems


def check_database(txn: Any, store: Any, ix: Any, load_error: str | None) -> list[str]:
    """Every check of the module docstring on the snapshot of ``txn``; ``ix`` are the
    indexes loaded from it (None with ``load_error`` when they could not be loaded).

    Complexity: O(size of the database).
    """
    problems = check_values(txn)
    if load_error is not None:
        problems.append(f"indexes cannot be loaded: {load_error}")
    live = check_documents(txn, ix.config.dim if ix is not None else None, problems)
    with store.bound(txn):
        if ix is not None:
            problems += check_indexes(ix.bm25, ix.vectors, live)
            problems += check_metadata_index(ix.meta, live)
        problems += store.check()
        problems += check_staging(txn, store)
    return problems
