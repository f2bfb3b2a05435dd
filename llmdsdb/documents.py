"""The document tables in a transaction: ``ids`` (external id key -> internal id) and ``docs``
(internal id -> record, see :mod:`llmdsdb.records`), and the ``next_id`` counter.

Keys come from the storage layer, their one home: :func:`llmdsdb.storage.id_key` for
external ids and :func:`llmdsdb.storage.u64key` for internal ids.

Key integrity: LMDB checksums no keys (the envelope covers values only), so a damaged key
could make a document unreachable by its id while search still finds it. Every lookup
therefore checks the key against the record it reaches: a hit compares the record's id with
the id asked for, and a miss looks at the ``ids`` entries on either side of where the key
would be (a damaged key stays in its slot of the B-tree page, so it is one of them) and
checks that each one's key is the key of the id its record holds. A mismatch is a
:class:`~llmdsdb.errors.CorruptionError` naming the key, never a silent miss.

Invariant (checked by :mod:`llmdsdb.db_check`): every ``ids`` entry points at a ``docs``
record whose id maps back to it, and vice versa; ``next_id`` is above every internal id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from llmdsdb._native import _core
from llmdsdb.errors import CorruptionError
from llmdsdb.fusion import Explain
from llmdsdb.records import Document, SearchResult, decode_record, document, record_id
from llmdsdb.storage import from_u64key, id_key, u64key
from llmdsdb.storage_format import FORMAT_VERSION, KIND_DOC, decode_value

__all__ = ["contains", "current_hashes", "docs_after", "id_key", "iter_documents", "lookup",
           "next_id",
           "search_results", "set_next_id", "u64key", "verify_miss"]

META_NEXT_ID = b"next_id"


def _check_key(txn: Any, key: bytes, iid_raw: bytes) -> None:
    """Raise when the ``ids`` entry ``key -> iid`` is not the key of its record's id."""
    iid = from_u64key(iid_raw)
    raw = txn.get("docs", iid_raw)
    if raw is None:
        raise CorruptionError(f"ids/{key!r} points at missing document {iid}")
    ext = record_id(raw, f"docs/{iid}")
    if id_key(ext) != key:
        raise CorruptionError(f"ids/{key!r}: the key does not match its document "
                              f"{ext!r} (docs/{iid}); the key is damaged - run check()")


def verify_miss(txn: Any, key: bytes) -> None:
    """After a miss of ``key`` in ``ids``: check the entries on either side of it.

    Complexity: O(log n) plus two record-id reads.

    :raises CorruptionError: when a neighbouring key does not match its record.
    """
    for k, v in txn.around("ids", key):
        _check_key(txn, k, v)


def lookup(txn: Any, doc_id: str, key: bytes) -> tuple[int, dict] | None:
    """``(internal id, record)`` of the document with external id ``doc_id`` (whose ``ids``
    key is ``key``), or None.

    Complexity: O(log n) (two B-tree lookups; on a miss two more and two record-id reads).

    :raises CorruptionError: on a dangling id, a record of another id or a damaged key.
    """
    raw = txn.get("ids", key)
    if raw is None:
        verify_miss(txn, key)
        return None
    iid = from_u64key(raw)
    rec_raw = txn.get("docs", raw)
    if rec_raw is None:
        raise CorruptionError(f"ids/{doc_id!r} points at missing document {iid}")
    rec = decode_record(rec_raw, f"docs/{iid}")
    if rec["id"] != doc_id:
        raise CorruptionError(f"ids/{doc_id!r} points at the document of {rec['id']!r}")
    return iid, rec


def contains(txn: Any, key: bytes) -> bool:
    """Whether ``key`` is in ``ids`` (a miss is checked as in :func:`lookup`).

    Complexity: O(log n).
    """
    if txn.get("ids", key) is not None:
        return True
    verify_miss(txn, key)
    return False


def current_hashes(txn: Any, keys: Iterable[bytes]) -> dict[bytes, str | None]:
    """Content hash of the document under each key (None: no document).

    Misses are checked as in :func:`verify_miss`, once per gap between stored keys: the new
    ids of one batch mostly share a few gaps (often the one after the last key), so a batch
    of new documents costs a few neighbour checks, not two record reads each.

    Complexity: O(k log n) plus O(gaps the misses fall in) record-id reads.
    """
    out: dict[bytes, str | None] = {}
    misses: list[bytes] = []
    for k in keys:
        raw = txn.get("ids", k)
        if raw is None:
            out[k] = None
            misses.append(k)
            continue
        rec_raw = txn.get("docs", raw)
        if rec_raw is None:
            raise CorruptionError(f"ids/{k!r} points at missing document {from_u64key(raw)}")
        out[k] = decode_record(rec_raw, f"docs/{from_u64key(raw)}")["hash"]
    checked: set[bytes] = set()  # neighbours already checked
    gap_end: bytes | None = None  # first stored key at or after the last checked miss
    have_gap = False
    for k in sorted(set(misses)):
        if have_gap and (gap_end is None or k < gap_end):
            continue  # no stored key between the last checked miss and k: its neighbours
        around = txn.around("ids", k)
        for nk, nv in around:
            if nk not in checked:
                _check_key(txn, nk, nv)
                checked.add(nk)
        gap_end = next((nk for nk, _ in around if nk >= k), None)
        have_gap = True
    return out


def next_id(txn: Any) -> int:
    """The next internal id to hand out. Complexity: O(1)."""
    raw = txn.get("meta", META_NEXT_ID)
    return from_u64key(raw) if raw is not None else 0


def set_next_id(txn: Any, value: int) -> None:
    """Store the internal id counter. Complexity: O(1)."""
    txn.put("meta", META_NEXT_ID, u64key(value))


def docs_after(txn: Any, after: int) -> Iterator[tuple[int, bytes]]:
    """``(internal id, verified record bytes)`` of documents with internal id > ``after``,
    in id order.

    Internal ids are u64 big-endian keys below ``next_id``; the keys sharing their first 7
    bytes form blocks of 256 ids, each read with one prefix scan, so resuming costs
    O(log n) and a whole iteration O(n + blocks).

    Complexity: O(log n) to start, O(1) amortised per document.
    """
    end = next_id(txn)
    block = (after + 1) >> 8
    while (block << 8) < end:
        for k, v in txn.items("docs", u64key(block << 8)[:7]):
            iid = from_u64key(k)
            if iid > after:
                yield iid, v
        block += 1


def search_results(txn: Any, hits: list[list], explain: bool) -> list[list[SearchResult]]:
    """The :class:`~llmdsdb.records.SearchResult` of each fused hit (keyed by internal id)
    of each query's list: one record read per hit, all the queries' records checked in one
    pass, and only the ids decoded; text and metadata decode on access.

    Complexity: O(hits · log n).

    :raises CorruptionError: when an index returns a document that has no record, or a
        record fails its check.
    """
    flat = [h for hs in hits for h in hs]
    keys = [u64key(h[0]) for h in flat]
    raws = txn.raw_many("docs", keys)
    # the envelope checks and the ids of the usual records in one C pass; any other value
    # (compressed, or failing a check) through the Python decoder, which names the fault
    bodies, ids = _core.docs_open(raws, KIND_DOC, FORMAT_VERSION)
    res = []
    for h, key, raw, body, rid in zip(flat, keys, raws, bodies, ids):
        if raw is None:
            raise CorruptionError(f"docs/{h[0]}: missing, but an index returns it; run check()")
        if body is None:
            body = decode_value(raw, key_desc=txn.desc("docs", key), kind=KIND_DOC)
        if rid is None:
            rid = record_id(body, f"docs/{h[0]}")
        res.append(SearchResult(rid, float(h[1]),
                                explain=Explain._make(h[2:]) if explain else None, raw=body))
    out, at = [], 0
    for hs in hits:
        out.append(res[at : at + len(hs)])
        at += len(hs)
    return out


def iter_documents(reading: Callable[[], AbstractContextManager[Any]], chunk: int
                   ) -> Iterator[Document]:
    """Every document in internal id order, read ``chunk`` documents per read transaction
    (``reading()`` opens one), so a long iteration never pins an old snapshot.

    Complexity: O(n) overall, O(chunk) per read transaction.
    """
    after = -1
    while True:
        got: list[Document] = []
        with reading() as txn:
            for iid, raw in docs_after(txn, after):
                got.append(document(decode_record(raw, f"docs/{iid}")))
                after = iid
                if len(got) >= chunk:
                    break
        yield from got
        if len(got) < chunk:
            return
