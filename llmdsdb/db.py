"""The database: ``llmdsdb.open(path) -> Database``.

One directory holds one LMDB environment (see ``storage/FORMAT.md``). This module keeps the
*document layer* and the *batch machinery* on top of the storage layer
(:mod:`llmdsdb.storage`, :mod:`llmdsdb.pages`) and the two indexes
(:class:`~llmdsdb.inverted_index.InvertedIndex`, :class:`~llmdsdb.hnsw.HNSW`), whose pages live
in the same environment:

* ``docs``: internal id (u64, big-endian) -> msgpack map ``{id, text, meta, emb, hash}``
  (``emb`` is the float32 little-endian bytes of the embedding, or nil);
* ``ids``: external id key -> internal id (u64, big-endian). An id of up to 400 UTF-8 bytes
  is its own key; a longer one (or one starting with NUL) is keyed by ``b"\\x00h" +
  sha256(id)`` and the original is kept in the record;
* ``meta``: ``config`` (msgpack map ``{v: 1, dim, metric, analyzer, hnsw_M,
  hnsw_ef_construction, hnsw_seed}``), ``next_id`` (the internal id counter, u64
  big-endian), and what the storage layer keeps there (format version, generation,
  allocator state);
* ``idxmeta``: the indexes' records (``bm25/...``, ``hnsw/...``) and the *fresh segment*
  (``fresh/dir``: msgpack ``{rows, dim, metric}``; ``fresh/<b>``: msgpack ``{ids: int64 LE
  bytes, vecs: float32 LE bytes}`` for rows ``b*1024 ..``, id -1 = deleted row): vectors
  added since the last merge into the graph, searched exactly (see :class:`_FreshSegment`).

Invariant (checked by :meth:`Database.check`): every ``ids`` entry points at a ``docs``
record whose ``id`` maps back to it, and vice versa; the inverted index holds exactly the
live documents, the graph exactly the live documents that have an embedding; the generation
counts the committed write batches.

Every write is a *batch*: a call to :meth:`Database.add`, :meth:`~Database.upsert` or
:meth:`~Database.delete` (or every call inside ``with db.batch():``) is validated when it is
made - bad input raises at the call and nothing is written - and recorded; the recorded
operations then run inside one LMDB write transaction (``Environment.run_write``), which
re-runs the whole batch after growing a full map. Documents, postings pages, graph pages,
allocator state and the generation commit together or not at all. On any abort the
in-memory indexes are discarded and reopened from the last committed state.

Readers see whole batches only (LMDB snapshots). Before each search (and each write) the
stored generation is compared with the one the in-memory indexes reflect; when another
process has committed, the indexes are reopened and the page cache is cleared. Document
reads (get, ``in``, count, iter_documents) use only the ``docs`` and ``ids`` databases and
leave the indexes alone.

Durability (``durability=``, see :class:`Options`): ``"sync"`` opens LMDB with
``sync=True, metasync=True``, ``"metasync"`` with ``metasync=False``, ``"nosync"`` with
``sync=False``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Self

import msgpack
import numpy as np

from llmdsdb.errors import (
    ClosedError,
    ConfigConflictError,
    CorruptionError,
    DimensionError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    LlmdsdbError,
    NonFiniteError,
    QueryError,
    ReadOnlyError,
    ZeroVectorError,
)

__all__ = ["Database", "Document", "Explain", "Options", "SearchResult", "open"]

log = logging.getLogger(__name__)

Metric = Literal["cosine", "ip", "l2"]
Durability = Literal["sync", "metasync", "nosync"]
FusionMethod = Literal["convex", "rrf"]
Normalization = Literal["minmax", "zscore", "theoretical"]

METRICS = ("cosine", "ip", "l2")
DURABILITIES = ("sync", "metasync", "nosync")
FUSIONS = ("convex", "rrf")
NORMALIZATIONS = ("minmax", "zscore", "theoretical")

#: Format of the document records and the ``config`` meta record (see storage/FORMAT.md).
RECORD_VERSION = 1
#: Ids of up to this many UTF-8 bytes are their own key; longer ones are hashed.
MAX_PLAIN_ID_BYTES = 400
#: Largest id accepted at all (it is kept whole in the record).
MAX_ID_BYTES = 64 * 1024
#: Largest document text accepted (UTF-8 bytes); rejected before tokenising.
MAX_TEXT_BYTES = 10 * 1024 * 1024
#: Largest packed metadata map per document.
MAX_META_BYTES = 1024 * 1024
#: Deepest nesting of metadata values.
MAX_META_DEPTH = 16
#: Largest dimension of an embedding.
MAX_DIM = 65536
#: Largest query text (UTF-8 bytes) and top_k.
MAX_QUERY_BYTES = 16 * 1024
MAX_TOP_K = 1000
#: Candidates taken from each side before fusion (at least top_k).
DEFAULT_CANDIDATES = 100
#: Documents read per read transaction by iter_documents.
ITER_CHUNK = 512
#: Fixed seed of the graph's level generator, so that two databases built from the same
#: batches hold the same graph.
HNSW_SEED = 0x11D5DB

_DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
_HASHED_PREFIX = b"\x00h"
_META_CONFIG = b"config"
_META_NEXT_ID = b"next_id"


# --- public records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """How a database was opened (the runtime options; the stored configuration is in
    :attr:`Database.config`).

    ``durability`` maps to the flags of ``lmdb.open`` (see :mod:`llmdsdb.storage`):

    * ``"sync"`` (default): ``sync=True, metasync=True`` - data and meta pages are fsynced
      at every commit; a batch that returned survives power loss;
    * ``"metasync"``: ``sync=True, metasync=False`` - the meta page is not fsynced; after
      power loss the last committed batch may roll back, the file stays consistent;
    * ``"nosync"``: ``sync=False, metasync=False`` - nothing is fsynced; after power loss
      or an OS crash recent batches may be lost and, unless the filesystem keeps write
      order, the file may be damaged (only for data you can rebuild).

    ``cache_bytes`` bounds the decoded-page cache and, separately, the inverted index's
    cache of decoded whole postings lists (the query path's working set), so a process holds
    at most about twice ``cache_bytes`` of decoded data.

    In every mode a process crash (``kill -9``) loses no committed batch; ``writemap`` is
    never used. Frozen, so safe to share between threads.
    """

    cache_bytes: int = _DEFAULT_CACHE_BYTES
    durability: Durability = "sync"
    readonly: bool = False
    map_size_bytes: int | None = None
    lock_timeout_s: float = 30.0
    hnsw_ef_search: int | None = None
    fresh_max_vectors: int | None = None


class Document(NamedTuple):
    """A stored document. ``embedding`` is a float32 array of shape (dim,) or None.

    A new record (with its own array and dict) per call, so threads never share one.
    """

    id: str
    text: str
    embedding: np.ndarray | None
    metadata: dict
    content_hash: str


class Explain(NamedTuple):
    """How a hit's fused score came about (None where a side did not find the document).

    Immutable, so safe to share between threads.
    """

    bm25_score: float | None
    vector_distance: float | None
    bm25_rank: int | None
    vector_rank: int | None
    bm25_norm: float | None
    vector_norm: float | None


class SearchResult(NamedTuple):
    """One hit, best first. ``score`` is the fused score (higher is better).

    A new record (with its own metadata dict) per search, so threads never share one.
    """

    id: str
    score: float
    text: str
    metadata: dict
    explain: Explain | None = None


# --- validation helpers -----------------------------------------------------------------------


def _check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise InvalidArgumentError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                                   f"got {value!r}")
    return value  # type: ignore[return-value]


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name} must be an int, not {type(value).__name__}")
    v = int(value)
    if not lo <= v <= hi:
        raise InvalidArgumentError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _utf8(s: str, what: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"{what} is not valid Unicode (lone surrogate at index {exc.start})"
        ) from None


def id_key(doc_id: str) -> bytes:
    """The ``ids`` key of an external id (validated by the caller); the same rule as
    :func:`llmdsdb.storage.id_key`.

    Complexity: O(len(doc_id)).

    >>> id_key("doc-1")
    b'doc-1'
    >>> k = id_key("x" * 401); k[:2], len(k)
    (b'\\x00h', 34)
    """
    raw = doc_id.encode("utf-8")
    if len(raw) > MAX_PLAIN_ID_BYTES or raw[:1] == b"\x00":
        return _HASHED_PREFIX + hashlib.sha256(raw).digest()
    return raw


def _check_id(doc_id: object, where: str) -> bytes:
    if not isinstance(doc_id, str):
        raise InvalidTypeError(f"{where}: id must be a str, not {type(doc_id).__name__}")
    if not doc_id:
        raise InvalidArgumentError(f"{where}: id must be non-empty")
    raw = _utf8(doc_id, f"{where}: id")
    if len(raw) > MAX_ID_BYTES:
        raise InvalidArgumentError(
            f"{where}: id is {len(raw)} bytes; the limit is {MAX_ID_BYTES}"
        )
    return id_key(doc_id)


def _check_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise InvalidTypeError(f"{where}: text must be a str, not {type(text).__name__}")
    # len(text) * 4 bounds the UTF-8 size: skip encoding huge strings twice
    if len(text) > MAX_TEXT_BYTES:
        raise InvalidArgumentError(
            f"{where}: text has {len(text)} characters; the limit is {MAX_TEXT_BYTES} bytes"
        )
    n = len(_utf8(text, f"{where}: text"))
    if n > MAX_TEXT_BYTES:
        raise InvalidArgumentError(f"{where}: text is {n} bytes; the limit is {MAX_TEXT_BYTES}")
    return text


def _as_float32_matrix(x: object, what: str) -> np.ndarray:
    """Convert to a C-contiguous float32 array, rejecting object/complex/bool/str dtypes."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:
        raise InvalidTypeError(f"{what} is not an array of numbers ({exc})") from None
    if a.dtype == object:
        raise InvalidTypeError(f"{what} must be numeric, got an object array (ragged or mixed)")
    if a.dtype.kind not in "fiu":
        raise InvalidTypeError(f"{what} must be float or int, got dtype {a.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(a, dtype=np.float32)


def _check_vectors(v: np.ndarray, dim: int | None, metric: str, what: str) -> None:
    """Validate a float32 (n, d) array: dimension, finiteness, zero norm for cosine."""
    if v.shape[1] == 0:
        raise DimensionError(f"{what}: vectors must have dimension >= 1, got 0")
    if v.shape[1] > MAX_DIM:
        raise DimensionError(f"{what}: dimension {v.shape[1]} exceeds {MAX_DIM}")
    if dim is not None and v.shape[1] != dim:
        raise DimensionError(f"{what}: expected dimension {dim}, got {v.shape[1]}")
    finite = np.isfinite(v)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise NonFiniteError(
            f"{what}: non-finite value {v[r, c]} in row {r} at index {c}"
        )
    norms = np.sqrt(np.einsum("ij,ij->i", v.astype(np.float64), v.astype(np.float64)))
    if not np.isfinite(norms).all():
        raise NonFiniteError(f"{what}: vector norm overflows")
    if metric == "cosine" and (norms == 0).any():
        r = int(np.flatnonzero(norms == 0)[0])
        raise ZeroVectorError(f"{what}: row {r} is a zero-norm vector (metric is cosine)")


def _canonical(value: object, where: str, depth: int = 0) -> object:
    """Validate a metadata value and return it with dict keys sorted (for hashing)."""
    if depth > MAX_META_DEPTH:
        raise InvalidArgumentError(f"{where}: metadata nested deeper than {MAX_META_DEPTH}")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if not -(2**63) <= v < 2**63:
            raise InvalidArgumentError(f"{where}: integer {v} is outside the int64 range")
        return v
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise NonFiniteError(f"{where}: metadata number {f} is not finite")
        return f
    if isinstance(value, str):
        _utf8(value, f"{where}: metadata string")
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(x, where, depth + 1) for x in value]
    if isinstance(value, Mapping):
        out = {}
        for k in sorted(value, key=lambda k: (not isinstance(k, str), str(k))):
            if not isinstance(k, str):
                raise InvalidTypeError(f"{where}: metadata keys must be str, got {k!r}")
            _utf8(k, f"{where}: metadata key")
            out[k] = _canonical(value[k], where, depth + 1)
        return out
    raise InvalidTypeError(
        f"{where}: metadata value of type {type(value).__name__} is not supported "
        "(use None, bool, int, float, str, list or dict)"
    )


def _as_dict(stats: object) -> dict:
    """A stats record (a dict, a NamedTuple or a dataclass) as a dict."""
    if isinstance(stats, Mapping):
        return dict(stats)
    if hasattr(stats, "_asdict"):
        return dict(stats._asdict())  # type: ignore[attr-defined]
    import dataclasses

    if dataclasses.is_dataclass(stats):
        return dataclasses.asdict(stats)  # type: ignore[arg-type]
    return {"value": stats}


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(raw: bytes, key_desc: str) -> Any:
    try:
        return msgpack.unpackb(bytes(raw), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptionError(f"{key_desc}: malformed record ({exc})") from exc


def _u64(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _k64(i: int) -> bytes:
    return i.to_bytes(8, "big")


class _Row(NamedTuple):
    """One validated document of a write call."""

    id: str
    key: bytes
    text: str
    emb: np.ndarray | None  # float32 (dim,)
    meta: dict
    hash: str
    record: bytes  # packed msgpack map


class _Op(NamedTuple):
    kind: Literal["add", "upsert", "delete", "merge"]
    rows: tuple  # tuple[_Row, ...] for add/upsert; tuple[(id, key), ...] for delete


def _decode_record(raw: bytes, key_desc: str) -> dict:
    rec = _unpack(raw, key_desc)
    if (
        not isinstance(rec, dict)
        or not isinstance(rec.get("id"), str)
        or not isinstance(rec.get("text"), str)
        or not isinstance(rec.get("meta"), dict)
        or not isinstance(rec.get("hash"), str)
        or not (rec.get("emb") is None or isinstance(rec.get("emb"), bytes))
    ):
        raise CorruptionError(f"{key_desc}: document record has the wrong shape")
    if rec["emb"] is not None and len(rec["emb"]) % 4:
        raise CorruptionError(f"{key_desc}: embedding bytes are not a float32 array")
    return rec


def _document(rec: dict) -> Document:
    emb = rec["emb"]
    vec = np.frombuffer(emb, dtype="<f4").copy() if emb is not None else None
    return Document(rec["id"], rec["text"], vec, rec["meta"], rec["hash"])


@dataclass
class _BatchState:
    """Calls recorded by ``with db.batch():`` (validated, not yet written)."""

    ops: list[_Op] = field(default_factory=list)
    # key -> content hash after the recorded ops (None: deleted by them)
    overlay: dict[bytes, str | None] = field(default_factory=dict)
    dim: int | None = None
    changes: int = 0


# --- the fresh segment ------------------------------------------------------------------------

#: Rows per persisted block of the fresh segment.
FRESH_BLOCK = 1024
#: Default size of the fresh segment, in vector components (rows x dim): ~10,000 vectors of
#: 384 dimensions (16 MB of float32), which one exact scan searches in about a millisecond.
FRESH_MAX_COMPONENTS = 4_000_000
_FRESH_DIR = "fresh/dir"


class _FreshSegment:
    """Recently added vectors that are not in the graph yet, searched exactly.

    Adding a document must leave it searchable when the call returns, but an HNSW insert
    costs far more than the rest of an ingest (measured: see tools/bench/bench_db.py). New
    vectors therefore go here first - an append to a float32 array, persisted in blocks of
    :data:`FRESH_BLOCK` rows as ``idxmeta`` records ``fresh/<block>`` - and are moved into the
    graph in one batch when the segment outgrows its limit (or on :meth:`Database.optimize`).
    A query searches the graph and scans this segment exactly, and merges the two lists.

    Rows are never moved until the merge: a deleted row keeps its place with id -1, so a
    flush rewrites only the blocks that changed. For cosine the rows are stored normalised.

    Invariant: ``pos[i] == row`` exactly for the rows whose id ``i >= 0``; ``live`` counts them.

    Not thread-safe (the database's lock guards it). Memory: rows x (4·dim + 8) bytes.
    """

    def __init__(self, dim: int, metric: str) -> None:
        self.dim = dim
        self.metric = metric
        self.ids = np.empty(0, np.int64)
        self.vecs = np.empty((0, dim), np.float32)
        self.sq = np.empty(0, np.float32)
        self.n = 0
        self.live = 0
        self.pos: dict[int, int] = {}
        self.dirty: set[int] = set()
        self.stored_blocks = 0

    def __len__(self) -> int:
        return self.live

    def __contains__(self, iid: object) -> bool:
        return iid in self.pos

    def _prep(self, vecs: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(vecs, dtype=np.float32)
        if self.metric == "cosine":
            v64 = v.astype(np.float64)  # norms in float64: float32 squares may overflow
            norms = np.sqrt(np.einsum("ij,ij->i", v64, v64))
            v = (v64 / norms[:, None]).astype(np.float32)
        return v

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Append rows. Complexity: O(k·dim) amortised."""
        k = len(ids)
        if not k:
            return
        need = self.n + k
        if need > len(self.ids):
            cap = max(need, 2 * len(self.ids), 256)
            ids2 = np.full(cap, -1, np.int64)
            ids2[: self.n] = self.ids[: self.n]
            v2 = np.zeros((cap, self.dim), np.float32)
            v2[: self.n] = self.vecs[: self.n]
            sq2 = np.zeros(cap, np.float32)
            sq2[: self.n] = self.sq[: self.n]
            self.ids, self.vecs, self.sq = ids2, v2, sq2
        v = self._prep(vecs)
        self.ids[self.n : need] = ids
        self.vecs[self.n : need] = v
        self.sq[self.n : need] = np.einsum("ij,ij->i", v, v)
        for j, i in enumerate(ids.tolist()):
            self.pos[i] = self.n + j
        self.dirty.update(range(self.n // FRESH_BLOCK, (need - 1) // FRESH_BLOCK + 1))
        self.n = need
        self.live += k

    def delete(self, iid: int) -> bool:
        """Tombstone a row; False when ``iid`` is not here. Complexity: O(1)."""
        row = self.pos.pop(iid, None)
        if row is None:
            return False
        self.ids[row] = -1
        self.live -= 1
        self.dirty.add(row // FRESH_BLOCK)
        return True

    def take_all(self) -> tuple[np.ndarray, np.ndarray]:
        """The live rows (ids, vectors) - then the segment is empty. Complexity: O(n·dim)."""
        keep = self.ids[: self.n] >= 0
        ids, vecs = self.ids[: self.n][keep].copy(), self.vecs[: self.n][keep].copy()
        self.ids = np.empty(0, np.int64)
        self.vecs = np.empty((0, self.dim), np.float32)
        self.sq = np.empty(0, np.float32)
        self.n = self.live = 0
        self.pos = {}
        self.dirty = set(range(self.stored_blocks))
        return ids, vecs

    def search_many(self, Q: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Exact k nearest live rows of each query (distances as HNSW reports them).

        Complexity: O(nq · n · dim) in BLAS.
        """
        out: list[list[tuple[int, float]]] = [[] for _ in range(len(Q))]
        if not self.live:
            return out
        n = self.n
        Qp = self._prep(Q) if self.metric == "cosine" else np.ascontiguousarray(Q, np.float32)
        if len(Qp) == 1:  # one query: gemv and 1-D selection, ~2x faster than the 2-D path
            q = Qp[0]
            dots1 = self.vecs[:n] @ q
            if self.metric == "cosine":
                d1 = 1.0 - dots1
            elif self.metric == "ip":
                d1 = -dots1
            else:
                d1 = self.sq[:n] + float(q @ q) - 2.0 * dots1
            if self.live < n:
                d1[self.ids[:n] < 0] = np.inf
            kk = min(k, self.live)
            top = np.argpartition(d1, kk - 1)[:kk] if kk < n else np.arange(n)
            top = top[np.argsort(d1[top], kind="stable")]
            out[0] = [(i, d) for i, d in zip(self.ids[top].tolist(), d1[top].tolist())
                      if i >= 0]
            return out
        dots = Qp @ self.vecs[:n].T
        if self.metric == "cosine":
            D = 1.0 - dots
        elif self.metric == "ip":
            D = -dots
        else:
            D = self.sq[:n][None, :] + np.einsum("ij,ij->i", Qp, Qp)[:, None] - 2.0 * dots
        if self.live < n:
            D[:, self.ids[:n] < 0] = np.inf
        kk = min(k, self.live)
        part = np.argpartition(D, kk - 1, axis=1)[:, :kk] if kk < n else \
            np.broadcast_to(np.arange(n), (len(Q), n))
        pd = np.take_along_axis(D, part, axis=1)
        order = np.argsort(pd, axis=1, kind="stable")
        sel = np.take_along_axis(part, order, axis=1)
        sd = np.take_along_axis(pd, order, axis=1)
        ids = self.ids[sel]
        for r in range(len(Q)):
            out[r] = [(i, d) for i, d in zip(ids[r].tolist(), sd[r].tolist()) if i >= 0]
        return out

    # -- persistence ------------------------------------------------------------------------

    def flush(self, store: Any) -> None:
        """Write the changed blocks and the directory. Complexity: O(changed blocks)."""
        if not self.dirty:
            return
        nb = (self.n + FRESH_BLOCK - 1) // FRESH_BLOCK
        from llmdsdb.storage import meta_key

        txn = store.txn
        prefix = store.name_prefix

        def put(name: str, data: bytes) -> None:
            # float32 rows do not compress: skip the envelope's zstd attempt
            txn.put("idxmeta", meta_key(prefix + name), data, compress=False)

        for b in sorted(self.dirty):
            if b < nb:
                s, e = b * FRESH_BLOCK, min(self.n, (b + 1) * FRESH_BLOCK)
                put(f"fresh/{b}", _pack({
                    "ids": self.ids[s:e].astype("<i8").tobytes(),
                    "vecs": self.vecs[s:e].astype("<f4").tobytes()}))
        for b in range(nb, self.stored_blocks):
            store.delete_meta(f"fresh/{b}")
        store.put_meta(_FRESH_DIR, _pack({"rows": self.n, "dim": self.dim,
                                          "metric": self.metric}))
        self.stored_blocks = nb
        self.dirty = set()

    @classmethod
    def open(cls, store: Any, dim: int, metric: str) -> _FreshSegment:
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
        seg.ids, seg.vecs, seg.n = ids, vecs, n
        seg.sq = np.einsum("ij,ij->i", vecs, vecs).astype(np.float32)
        live = np.flatnonzero(ids >= 0)
        seg.pos = dict(zip(ids[live].tolist(), live.tolist()))
        seg.live = len(live)
        seg.stored_blocks = nb
        return seg

    def _check(self) -> None:
        live = np.flatnonzero(self.ids[: self.n] >= 0)
        assert len(live) == self.live == len(self.pos)
        assert all(self.pos[int(self.ids[r])] == r for r in live.tolist())


# --- the database -----------------------------------------------------------------------------


class Database:
    """A retrieval database in one directory: documents, BM25 postings and an HNSW graph in
    one LMDB environment. Open it with :func:`llmdsdb.open`.

    Thread safety: one lock serialises every call of one ``Database`` object, so threads may
    share it (a ``with db.batch():`` block holds the lock until it ends); processes each open
    their own handle (any number of readers, one writer at a time).

    Memory: the in-memory index directories (the term dictionary, the graph's arrays), plus
    the decoded-page cache bounded by ``cache_bytes``.
    """

    def __init__(self, path: str | os.PathLike, options: Options, explicit: dict) -> None:
        from llmdsdb.pages import LmdbPageStore, PageCache
        from llmdsdb.storage import Environment

        self._path = os.fspath(path)
        self._options = options
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._closed = True
        self._env = Environment.open(
            self._path,
            durability=options.durability,
            readonly=options.readonly,
            map_size_bytes=options.map_size_bytes,
            lock_timeout_s=options.lock_timeout_s,
            create=not options.readonly,
        )
        try:
            self._cache = PageCache(options.cache_bytes)
            self._store_cls = LmdbPageStore
            self._store = LmdbPageStore(self._env, self._cache)
            self._batch: _BatchState | None = None
            self._bm25: Any = None
            self._hnsw: Any = None
            self._fresh: _FreshSegment | None = None
            self._gen = -1  # generation the in-memory indexes reflect (-1: none loaded)
            self._dirty = True  # in-memory indexes may differ from the committed state
            with self._env.read() as txn:
                stored = self._read_config(txn)
            self._config = self._merge_config(stored, explicit)
            self._closed = False
            self._env.on_abort.append(self._on_abort)
            with self._env.read() as txn:
                self._refresh(txn)
        except BaseException:
            self._env.close()
            raise

    # --- configuration ----------------------------------------------------------------------

    def _read_config(self, txn: Any) -> dict | None:
        raw = txn.get("meta", _META_CONFIG)
        if raw is None:
            return None
        cfg = _unpack(raw, "meta/config")
        if not isinstance(cfg, dict) or cfg.get("v") != RECORD_VERSION:
            raise CorruptionError("meta/config: unknown or malformed configuration record")
        return cfg

    @staticmethod
    def _default_config(explicit: dict) -> dict:
        from llmdsdb.analysis import Analyzer

        analyzer = explicit.get("analyzer")
        return {
            "v": RECORD_VERSION,
            "dim": explicit.get("dim"),
            "metric": explicit.get("metric") or "cosine",
            "analyzer": analyzer if analyzer is not None else Analyzer().to_dict(),
            "hnsw_M": explicit.get("hnsw_M") or 16,
            "hnsw_ef_construction": explicit.get("hnsw_ef_construction") or 200,
            "hnsw_seed": HNSW_SEED,
        }

    def _merge_config(self, stored: dict | None, explicit: dict) -> dict:
        if stored is None:
            cfg = self._default_config(explicit)
            cfg["stored"] = False
            return cfg
        for name, value in explicit.items():
            if value is None:
                continue
            have = stored.get(name)
            if name == "dim" and have is None:
                continue  # the dimension is not fixed yet: the argument will fix it
            if have != value:
                raise ConfigConflictError(
                    f"{name}={value!r} conflicts with the stored configuration "
                    f"({name}={have!r}); the stored configuration wins: omit the argument"
                )
        cfg = dict(stored)
        if cfg.get("dim") is None and explicit.get("dim") is not None:
            cfg["dim"] = explicit["dim"]
        cfg["stored"] = True
        return cfg

    @property
    def config(self) -> dict:
        """The configuration: dim, metric, analyzer, hnsw_M, hnsw_ef_construction. Complexity: O(1)."""
        return {k: v for k, v in self._config.items() if k not in ("v", "stored")}

    @property
    def options(self) -> Options:
        """The runtime options the database was opened with. Complexity: O(1)."""
        return self._options

    @property
    def path(self) -> str:
        """The database directory. Complexity: O(1)."""
        return self._path

    @property
    def readonly(self) -> bool:
        """Whether the database was opened read-only. Complexity: O(1)."""
        return self._options.readonly

    @property
    def dim(self) -> int | None:
        """The embedding dimension (None until the first embeddings are added). Complexity: O(1)."""
        return self._config.get("dim")

    # --- lifecycle --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"database {self._path} is closed")
        if os.getpid() != self._pid:
            raise ClosedError(
                f"database {self._path} was opened in another process (before fork); "
                "open it again in this process"
            )

    def close(self) -> None:
        """Close the database (idempotent). A pending ``batch()`` is discarded.

        Complexity: O(1).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._batch = None
            if self._on_abort in self._env.on_abort:
                self._env.on_abort.remove(self._on_abort)
            self._bm25 = self._hnsw = self._fresh = None
            self._cache.clear()
            self._store.close()
            if os.getpid() == self._pid:
                self._env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("readonly" if self.readonly else "open")
        return f"<Database {self._path!r} {state}>"

    # --- in-memory index state ----------------------------------------------------------------

    def _on_abort(self, *args: object) -> None:
        self._dirty = True
        self._cache.clear()

    def _refresh(self, txn: Any) -> None:
        """Make the in-memory indexes reflect the snapshot of ``txn``."""
        gen = self._env.generation(txn)
        if gen == self._gen and not self._dirty:
            return
        self._load_indexes(txn, gen)

    def _load_indexes(self, txn: Any, gen: int) -> None:
        from llmdsdb.hnsw import HNSW
        from llmdsdb.inverted_index import InvertedIndex

        self._bm25 = self._hnsw = self._fresh = None
        self._cache.clear()
        self._store.close()  # unhook the old store from the environment
        self._store = self._store_cls(self._env, self._cache)
        stored = self._read_config(txn)
        if stored is not None:
            keep_dim = self._config.get("dim")
            self._config = dict(stored, stored=True)
            if self._config.get("dim") is None and keep_dim is not None:
                self._config["dim"] = keep_dim
        with self._store.bound(txn):
            if stored is not None:
                self._bm25 = InvertedIndex.open(self._store)
                self._bm25.cache_bytes = self._options.cache_bytes
                if stored.get("dim") is not None:
                    self._hnsw = HNSW.open(self._store, **self._hnsw_overrides())
                    self._fresh = _FreshSegment.open(self._store, stored["dim"],
                                                     stored["metric"])
        self._gen = gen
        self._dirty = False

    def _hnsw_overrides(self) -> dict:
        ef = self._options.hnsw_ef_search
        return {"ef_search": ef} if ef is not None else {}

    def _new_bm25(self) -> Any:
        """The inverted index of a database that has none yet (first write)."""
        from llmdsdb.analysis import Analyzer
        from llmdsdb.inverted_index import InvertedIndex

        return InvertedIndex(Analyzer.from_dict(self._config["analyzer"]), store=self._store,
                             cache_bytes=self._options.cache_bytes)

    def _new_hnsw(self, dim: int) -> Any:
        from llmdsdb.hnsw import HNSW

        c = self._config
        # ml = 1/ln M (the paper's recommendation) rather than the seed API's 1/ln 2: at equal
        # recall it built 1.8-2.7x faster on SciFact, siftsmall and fmnist (docs/tuning.md,
        # tools/bench/results/hnsw_ml_ln2.md). The graph stores its ml, so reopening keeps it.
        return HNSW(dim, M=c["hnsw_M"], ef_construction=c["hnsw_ef_construction"],
                    ml=1.0 / math.log(c["hnsw_M"]), seed=c["hnsw_seed"], metric=c["metric"],
                    store=self._store, **self._hnsw_overrides())

    # --- reads ------------------------------------------------------------------------------

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """A read transaction with the indexes brought up to its snapshot."""
        self._check_open()
        with self._lock, self._env.read() as txn:
            self._refresh(txn)
            with self._store.bound(txn):
                yield txn

    @contextmanager
    def _reading_docs(self) -> Iterator[Any]:
        """A read transaction for the document layer only: the indexes are not brought up
        to date, so a lookup after another process's commit does not reload the graph
        (O(n)) it does not use."""
        self._check_open()
        with self._lock, self._env.read() as txn:
            yield txn

    def _lookup(self, txn: Any, doc_id: str, key: bytes) -> tuple[int, dict] | None:
        raw = txn.get("ids", key)
        if raw is None:
            return None
        iid = _u64(raw)
        rec_raw = txn.get("docs", _k64(iid))
        if rec_raw is None:
            raise CorruptionError(f"ids/{doc_id!r} points at missing document {iid}")
        rec = _decode_record(rec_raw, f"docs/{iid}")
        if rec["id"] != doc_id:
            raise CorruptionError(f"ids/{doc_id!r} points at the document of {rec['id']!r}")
        return iid, rec

    def get(self, id: str) -> Document | None:
        """The document with external id ``id``, or None.

        Complexity: O(log n) (two B-tree lookups).
        """
        key = _check_id(id, "get")
        with self._reading_docs() as txn:
            found = self._lookup(txn, id, key)
        return _document(found[1]) if found else None

    def __contains__(self, id: object) -> bool:
        """``id in db``. Complexity: O(log n)."""
        if not isinstance(id, str) or not id:
            return False
        try:
            key = _check_id(id, "contains")
        except LlmdsdbError:
            return False
        with self._reading_docs() as txn:
            return txn.get("ids", key) is not None

    def count(self) -> int:
        """Number of documents. Complexity: O(1)."""
        with self._reading_docs() as txn:
            return txn.count("docs")

    def __len__(self) -> int:
        """``len(db)``: the number of documents. Complexity: O(1)."""
        return self.count()

    @property
    def generation(self) -> int:
        """Number of committed write batches. Complexity: O(1)."""
        with self._reading_docs() as txn:
            return self._env.generation(txn)

    def iter_documents(self) -> Iterator[Document]:
        """Every document, in the order of their last write (an upsert that changes a
        document moves it to the end). Reads in chunks of :data:`ITER_CHUNK` documents, one
        short read transaction each, so a long iteration never pins an old snapshot; a
        concurrent write may therefore be seen part-way.

        Complexity: O(n) overall, O(chunk) per read transaction.
        """
        after = -1
        while True:
            chunk: list[Document] = []
            with self._reading_docs() as txn:
                for k, v in self._docs_from(txn, after):
                    chunk.append(_document(_decode_record(v, f"docs/{_u64(k)}")))
                    after = _u64(k)
                    if len(chunk) >= ITER_CHUNK:
                        break
            yield from chunk
            if len(chunk) < ITER_CHUNK:
                return

    def _docs_from(self, txn: Any, after: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of documents with internal id > ``after``, in id order.

        Internal ids are u64 big-endian keys below ``next_id``; the keys sharing their first 7
        bytes form blocks of 256 ids, each read with one prefix scan, so resuming costs
        O(log n) and a whole iteration O(n + blocks).
        """
        raw_next = txn.get("meta", _META_NEXT_ID)
        end = _u64(raw_next) if raw_next is not None else 0
        block = (after + 1) >> 8
        while (block << 8) < end:
            for k, v in txn.items("docs", _k64(block << 8)[:7]):
                if _u64(k) > after:
                    yield k, v
            block += 1

    # --- validation of write calls ------------------------------------------------------------

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ReadOnlyError(f"database {self._path} was opened read-only")

    def validate(self, ids: Sequence[str], texts: Sequence[str],
                 embeddings: np.ndarray | Sequence[np.ndarray | None] | None = None,
                 metadata: Sequence[Mapping | None] | None = None) -> None:
        """Check a batch exactly as :meth:`add` / :meth:`upsert` would, writing nothing.

        :raises InvalidArgumentError: (or a subclass) for the first bad value, as the write
            calls raise it.
        :raises InvalidTypeError: for a value of the wrong type.

        Complexity: O(total size of the batch).
        """
        self._check_open()
        self._sync_config()
        self._validate_rows("validate", ids, texts, embeddings, metadata)

    def _validate_rows(self, name: str, ids: object, texts: object, embeddings: object,
                       metadata: object) -> list[_Row]:
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise InvalidTypeError(f"{name}: ids must be a list of str, not {type(ids).__name__}")
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
            raise InvalidTypeError(
                f"{name}: texts must be a list of str, not {type(texts).__name__}"
            )
        n = len(ids)
        if len(texts) != n:
            raise InvalidArgumentError(f"{name}: {n} ids but {len(texts)} texts")
        keys = [_check_id(i, f"{name}: ids[{j}]") for j, i in enumerate(ids)]
        seen: dict[bytes, int] = {}
        for j, k in enumerate(keys):
            if k in seen:
                raise DuplicateIdError(f"{name}: id {ids[j]!r} appears twice in one call "
                                       f"(positions {seen[k]} and {j})")
            seen[k] = j
        tx = [_check_text(t, f"{name}: texts[{j}]") for j, t in enumerate(texts)]
        embs = self._validate_embeddings(name, embeddings, n)
        if metadata is None:
            metas: list[dict] = [{} for _ in range(n)]
        else:
            if isinstance(metadata, Mapping) or not isinstance(metadata, Sequence):
                raise InvalidTypeError(f"{name}: metadata must be a list of dicts (one per id)")
            if len(metadata) != n:
                raise InvalidArgumentError(f"{name}: {n} ids but {len(metadata)} metadata")
            metas = []
            for j, m in enumerate(metadata):
                if m is None:
                    metas.append({})
                elif not isinstance(m, Mapping):
                    raise InvalidTypeError(
                        f"{name}: metadata[{j}] must be a dict, not {type(m).__name__}"
                    )
                else:
                    metas.append(_canonical(m, f"{name}: metadata[{j}]"))  # type: ignore[arg-type]
        rows = []
        for j in range(n):
            emb = embs[j]
            emb_bytes = emb.astype("<f4").tobytes() if emb is not None else None
            packed_meta = _pack(metas[j])
            if len(packed_meta) > MAX_META_BYTES:
                raise InvalidArgumentError(
                    f"{name}: metadata[{j}] is {len(packed_meta)} bytes packed; the limit is "
                    f"{MAX_META_BYTES}"
                )
            h = hashlib.sha256(_pack([tx[j], emb_bytes]) + packed_meta).hexdigest()
            record = _pack({"id": ids[j], "text": tx[j], "meta": metas[j], "emb": emb_bytes,
                            "hash": h})
            rows.append(_Row(ids[j], keys[j], tx[j], emb, metas[j], h, record))
        return rows

    def _sync_config(self) -> None:
        """Adopt the stored configuration when this handle may not know it yet (another
        handle created the database, or fixed its dimension, after this one opened it), so
        that write calls validate against the right metric and dimension.

        Complexity: O(1); a read only while the dimension is not fixed.
        """
        c = self._config
        if c.get("stored") and c.get("dim") is not None:
            return  # the configuration can no longer change
        with self._env.read() as txn:
            stored = self._read_config(txn)
        if stored is None or (c.get("stored") and stored.get("dim") is None):
            return
        cfg = dict(stored, stored=True)
        if cfg.get("dim") is None and c.get("dim") is not None:
            cfg["dim"] = c["dim"]  # fixed by this handle's dim= argument, not written yet
        self._config = cfg
        self._dirty = True  # the indexes are reloaded with the configuration

    def _known_dim(self) -> int | None:
        if self._config.get("dim") is not None:
            return self._config["dim"]
        if self._batch is not None:
            return self._batch.dim
        return None

    def _validate_embeddings(self, name: str, embeddings: object, n: int
                             ) -> list[np.ndarray | None]:
        if embeddings is None:
            return [None] * n
        metric = self._config["metric"]
        dim = self._known_dim()
        if isinstance(embeddings, np.ndarray):
            if embeddings.dtype.kind not in "fiu":
                raise InvalidTypeError(f"{name}: embeddings must be float or int, got dtype "
                                       f"{embeddings.dtype}")
            if embeddings.ndim != 2:
                raise DimensionError(
                    f"{name}: embeddings must be a 2-D array (n, dim), got shape "
                    f"{embeddings.shape}"
                )
            if embeddings.shape[0] != n:
                raise InvalidArgumentError(f"{name}: {n} ids but {embeddings.shape[0]} "
                                           "embeddings")
            m = _as_float32_matrix(embeddings, f"{name}: embeddings")
            if n:
                _check_vectors(m, dim, metric, f"{name}: embeddings")
            return list(m)
        if isinstance(embeddings, (str, bytes)) or not isinstance(embeddings, Sequence):
            raise InvalidTypeError(
                f"{name}: embeddings must be a 2-D array or a list of vectors (or None)"
            )
        if len(embeddings) != n:
            raise InvalidArgumentError(f"{name}: {n} ids but {len(embeddings)} embeddings")
        out: list[np.ndarray | None] = []
        for j, e in enumerate(embeddings):
            if e is None:
                out.append(None)
                continue
            v = _as_float32_matrix(e, f"{name}: embeddings[{j}]")
            if v.ndim != 1:
                raise DimensionError(
                    f"{name}: embeddings[{j}] must be 1-D, got shape {v.shape}"
                )
            _check_vectors(v[None, :], dim, metric, f"{name}: embeddings[{j}]")
            dim = v.shape[0]
            out.append(v)
        return out

    def _current_hashes(self, keys: Iterable[bytes]) -> dict[bytes, str | None]:
        """Content hash of each key as the next batch will see it (committed state plus the
        calls recorded in the open batch)."""
        out: dict[bytes, str | None] = {}
        overlay = self._batch.overlay if self._batch is not None else {}
        todo = []
        for k in keys:
            if k in overlay:
                out[k] = overlay[k]
            else:
                todo.append(k)
        if todo:
            with self._env.read() as txn:
                for k in todo:
                    raw = txn.get("ids", k)
                    if raw is None:
                        out[k] = None
                        continue
                    rec_raw = txn.get("docs", raw)
                    out[k] = (_decode_record(rec_raw, f"docs/{_u64(raw)}")["hash"]
                              if rec_raw is not None else None)
        return out

    # --- write calls ----------------------------------------------------------------------------

    def add(self, ids: Sequence[str], texts: Sequence[str],
            embeddings: np.ndarray | Sequence[np.ndarray | None] | None = None,
            metadata: Sequence[Mapping | None] | None = None) -> int:
        """Add new documents; the whole call is atomic.

        :param ids: external ids (non-empty str, unique in the call and the database).
        :param texts: one str per id (may be empty).
        :param embeddings: float array of shape (n, dim), or a list of 1-D vectors / None,
            or None. The first embeddings ever added fix the dimension.
        :param metadata: one dict (or None) per id: str keys; None, bool, int64, finite
            float, str, list and dict values.
        :returns: the number of documents added (``len(ids)``).
        :raises DuplicateIdError: when an id exists or repeats in the call.
        :raises DimensionError, NonFiniteError, ZeroVectorError: on a bad embedding.
        :raises InvalidTypeError, InvalidArgumentError: on other bad input.
        :raises ReadOnlyError: when opened read-only.

        Complexity: O(total text + n·log n) plus the graph inserts (O(n·log n·ef)).
        """
        with self._lock:
            self._check_writable()
            self._sync_config()
            rows = self._validate_rows("add", ids, texts, embeddings, metadata)
            current = self._current_hashes(r.key for r in rows)
            for r in rows:
                if current[r.key] is not None:
                    raise DuplicateIdError(f"add: id {r.id!r} already exists (use upsert)")
            return self._submit(_Op("add", tuple(rows)), len(rows))

    def upsert(self, ids: Sequence[str], texts: Sequence[str],
               embeddings: np.ndarray | Sequence[np.ndarray | None] | None = None,
               metadata: Sequence[Mapping | None] | None = None) -> int:
        """Insert or replace documents; the whole call is atomic. A document whose content
        hash (text, embedding bytes, metadata) is unchanged is skipped, which is what makes
        a repeated ingest cheap and resumable.

        :returns: the number of documents actually written.
        :raises DuplicateIdError: when an id repeats in the call.
        :raises: as :meth:`add` for bad input.

        Complexity: O(total text + n·log n) plus the graph inserts of changed documents.
        """
        with self._lock:
            self._check_writable()
            self._sync_config()
            rows = self._validate_rows("upsert", ids, texts, embeddings, metadata)
            current = self._current_hashes(r.key for r in rows)
            changed = sum(1 for r in rows if current[r.key] != r.hash)
            return self._submit(_Op("upsert", tuple(rows)), changed)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete documents by id; unknown ids are ignored.

        :returns: the number of documents deleted.

        Complexity: O(n·log N) plus the postings and graph updates of the deleted documents.
        """
        with self._lock:
            self._check_writable()
            if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
                raise InvalidTypeError(
                    f"delete: ids must be a list of str, not {type(ids).__name__}"
                )
            pairs = []
            seen = set()
            for j, i in enumerate(ids):
                k = _check_id(i, f"delete: ids[{j}]")
                if k not in seen:
                    seen.add(k)
                    pairs.append((i, k))
            current = self._current_hashes(k for _, k in pairs)
            n = sum(1 for _, k in pairs if current[k] is not None)
            return self._submit(_Op("delete", tuple(pairs)), n)

    def _submit(self, op: _Op, result: int) -> int:
        b = self._batch
        if b is not None:
            b.ops.append(op)
            if op.kind == "delete":
                for _, k in op.rows:
                    b.overlay[k] = None
            else:
                for r in op.rows:
                    b.overlay[r.key] = r.hash
                    if b.dim is None and r.emb is not None:
                        b.dim = r.emb.shape[0]
            b.changes += result
            return result
        if result == 0:
            return 0  # nothing would change: no write transaction, no new generation
        return self._execute([op])[0]

    @contextmanager
    def batch(self) -> Iterator[Database]:
        """Group write calls into one LMDB write transaction::

            with db.batch():
                db.add(["a"], ["first"])
                db.delete(["b"])

        Each call is validated when it is made (and raises there, recording nothing);
        everything is written when the block ends without an exception, and nothing when
        it raises. A nested ``batch()`` block joins the outer one like a savepoint: when an
        exception leaves the inner block, the calls made in it are dropped and the outer
        batch keeps the others. The block holds the database's lock: other threads wait
        for it.

        :raises ClosedError: at the end of the block when :meth:`close` discarded the
            recorded calls (nothing was written).

        Complexity: O(1) to open (a nested block copies the outer one's id overlay); the
        writes cost what the calls would cost.
        """
        with self._lock:
            self._check_writable()
            outer = self._batch
            if outer is not None:
                saved = (len(outer.ops), dict(outer.overlay), outer.dim, outer.changes)
                try:
                    yield self
                except BaseException:
                    if self._batch is outer:  # roll back to the savepoint
                        del outer.ops[saved[0]:]
                        outer.overlay, outer.dim, outer.changes = saved[1], saved[2], saved[3]
                    raise
                return
            state = self._batch = _BatchState()
            try:
                yield self
            finally:
                self._batch = None
            if self._closed:
                if state.ops and state.changes:
                    raise ClosedError(f"database {self._path} was closed inside batch(); "
                                      "its calls were not written")
                return
            if state.ops and state.changes:
                self._execute(state.ops)

    # --- executing a batch --------------------------------------------------------------------

    def _execute(self, ops: list[_Op]) -> list[int]:
        """Run ``ops`` in one write transaction (re-run from scratch after a map grow)."""

        new_gen = [-1]
        cfg_before = dict(self._config)  # the batch may fix the dimension: undone on abort

        def fn(txn: Any) -> list[int]:
            gen = self._env.generation(txn)
            if self._config != cfg_before:  # a re-run after a map grow
                self._config = dict(cfg_before)
                self._dirty = True
            if self._dirty or gen != self._gen:
                self._load_indexes(txn, gen)
            self._dirty = True  # from here on the in-memory indexes run ahead of the disk
            results = self._apply(txn, ops)
            new_gen[0] = txn.bump_generation()
            return results

        try:
            results = self._env.run_write(fn)
        except BaseException:
            self._dirty = True
            self._config = cfg_before
            self._cache.clear()
            raise
        self._gen = new_gen[0]
        self._dirty = False
        return results

    def _fresh_limit(self, dim: int) -> int:
        """Rows the fresh segment may hold before it is merged into the graph."""
        n = self._options.fresh_max_vectors
        return n if n is not None else max(2048, FRESH_MAX_COMPONENTS // max(dim, 1))

    def _apply(self, txn: Any, ops: list[_Op]) -> list[int]:
        cfg = self._config
        merge = any(op.kind == "merge" for op in ops)
        results: list[int] = []
        raw_next = txn.get("meta", _META_NEXT_ID)
        next_id = _u64(raw_next) if raw_next is not None else 0
        # index work gathered for the whole batch: adds keyed by internal id (an id added
        # and then removed inside the batch never reaches an index)
        add_text: dict[int, str] = {}
        add_emb: dict[int, np.ndarray] = {}
        removed: list[int] = []
        removed_emb: list[int] = []
        dim = cfg.get("dim")

        def remove(iid: int, had_emb: bool) -> None:
            if iid in add_text:
                del add_text[iid]
                add_emb.pop(iid, None)
            else:
                removed.append(iid)
                if had_emb:
                    removed_emb.append(iid)

        with self._store.bound(txn):
            for op in ops:
                n = 0
                if op.kind == "merge":
                    results.append(len(self._fresh) if self._fresh is not None else 0)
                    continue
                if op.kind == "delete":
                    for i, k in op.rows:
                        raw = txn.get("ids", k)
                        if raw is None:
                            continue
                        rec = _decode_record(txn.get("docs", raw) or b"\xc0", f"docs/{_u64(raw)}")
                        txn.delete("ids", k)
                        txn.delete("docs", raw)
                        remove(_u64(raw), rec["emb"] is not None)
                        n += 1
                    results.append(n)
                    continue
                for r in op.rows:
                    raw = txn.get("ids", r.key)
                    if raw is not None:
                        if op.kind == "add":
                            raise DuplicateIdError(f"add: id {r.id!r} already exists")
                        rec = _decode_record(txn.get("docs", raw) or b"\xc0",
                                             f"docs/{_u64(raw)}")
                        if rec["hash"] == r.hash:
                            continue
                        txn.delete("docs", raw)
                        remove(_u64(raw), rec["emb"] is not None)
                    if r.emb is not None:
                        if dim is None:
                            dim = r.emb.shape[0]
                        elif r.emb.shape[0] != dim:
                            raise DimensionError(
                                f"{op.kind}: expected dimension {dim}, got {r.emb.shape[0]}"
                            )
                    iid = next_id
                    next_id += 1
                    kb = _k64(iid)
                    txn.put("docs", kb, r.record, compress=False)
                    txn.put("ids", r.key, kb)
                    add_text[iid] = r.text
                    if r.emb is not None:
                        add_emb[iid] = r.emb
                    n += 1
                results.append(n)

            if not any(results) and cfg.get("stored") and not merge:
                return results  # nothing changed (the generation still counts the batch)
            # configuration: written with the first batch, and when the dimension gets fixed
            if not cfg.get("stored") or cfg.get("dim") != dim:
                stored = self._read_config(txn)
                if stored is not None:
                    merged = self._merge_config(stored, {k: v for k, v in cfg.items()
                                                         if k in ("metric", "hnsw_M",
                                                                  "hnsw_ef_construction",
                                                                  "analyzer")})
                    if merged.get("dim") not in (None, dim):
                        raise DimensionError(
                            f"expected dimension {merged['dim']}, got {dim}"
                        )
                new_cfg = {k: v for k, v in cfg.items() if k != "stored"}
                new_cfg["dim"] = dim
                txn.put("meta", _META_CONFIG, _pack(new_cfg))
                self._config = dict(new_cfg, stored=True)
            if self._bm25 is None:
                self._bm25 = self._new_bm25()
            if self._hnsw is None and dim is not None:
                self._hnsw = self._new_hnsw(dim)
                self._fresh = _FreshSegment(dim, cfg["metric"])

            for iid in removed:
                self._bm25.remove_document(iid)
            for iid in removed_emb:
                if self._fresh is None or not self._fresh.delete(iid):
                    self._hnsw.delete(iid)
            if add_text:
                self._bm25.add_documents(list(add_text), list(add_text.values()))
            if add_emb:
                ids = np.fromiter(add_emb, dtype=np.int64, count=len(add_emb))
                vecs = np.stack(list(add_emb.values()))
                if self._fresh is not None and self._fresh_limit(dim) > 0:
                    self._fresh.add(ids, vecs)
                else:
                    self._hnsw.add_many(vecs, ids)
            if self._fresh is not None and (merge or self._fresh.n > self._fresh_limit(dim)):
                ids, vecs = self._fresh.take_all()
                if len(ids):
                    self._hnsw.add_many(vecs, ids)
            self._bm25.flush()
            if self._hnsw is not None:
                self._hnsw.flush()
                self._fresh.flush(self._store)
            self._store.save_allocator(txn)
            txn.put("meta", _META_NEXT_ID, _k64(next_id))
        return results

    # --- search -----------------------------------------------------------------------------

    def _validate_query(self, query: object, vector: object, top_k: object,
                        fusion_weight: object, fusion: object, normalization: object,
                        filter: object, explain: object
                        ) -> tuple[str | None, np.ndarray | None, int, float]:
        if query is not None:
            if not isinstance(query, str):
                raise InvalidTypeError(f"query must be a str, not {type(query).__name__}")
            nb = len(_utf8(query, "query")) if len(query) <= MAX_QUERY_BYTES else len(query) * 4
            if nb > MAX_QUERY_BYTES:
                raise QueryError(f"query is {nb} bytes; the limit is {MAX_QUERY_BYTES}")
        vec = None
        if vector is not None:
            v = _as_float32_matrix(vector, "vector")
            if v.ndim != 1:
                raise DimensionError(f"vector must be 1-D, got shape {v.shape}")
            _check_vectors(v[None, :], self._config.get("dim"), self._config["metric"],
                           "vector")
            vec = v
        if query is None and vec is None:
            raise QueryError("give a query text, a vector, or both")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
            raise QueryError(f"top_k must be an int, not {type(top_k).__name__}")
        if not 1 <= int(top_k) <= MAX_TOP_K:
            raise QueryError(f"top_k must be in [1, {MAX_TOP_K}], got {top_k}")
        if isinstance(fusion_weight, bool) or not isinstance(fusion_weight,
                                                             (int, float, np.floating)):
            raise InvalidTypeError("fusion_weight must be a number in [0, 1]")
        w = float(fusion_weight)
        if not 0.0 <= w <= 1.0:
            raise InvalidArgumentError(f"fusion_weight must be in [0, 1], got {fusion_weight}")
        _check_choice("fusion", fusion, FUSIONS)
        _check_choice("normalization", normalization, NORMALIZATIONS)
        if not isinstance(explain, (bool, np.bool_)):
            raise InvalidTypeError(f"explain must be a bool, not {type(explain).__name__}")
        if filter is not None:
            raise InvalidArgumentError("filter is not supported yet (metadata filters come "
                                       "with a later version); pass filter=None")
        return query, vec, int(top_k), w

    def search(self, query: str | None = None, vector: np.ndarray | None = None,
               top_k: int = 10, fusion_weight: float = 0.5,
               fusion: FusionMethod = "convex", normalization: Normalization = "minmax",
               filter: Mapping | None = None, explain: bool = False) -> list[SearchResult]:
        """Hybrid search: BM25 candidates for ``query``, nearest neighbours of ``vector``,
        fused (``fusion_weight`` weighs the vector side: 0 = BM25 only, 1 = vector only; a
        missing side falls back to the other).

        An empty or whitespace-only query (with no vector) returns no results.

        :raises QueryError: when neither side is given, the query is too long or top_k is out
            of [1, 1000].
        :raises DimensionError, NonFiniteError, ZeroVectorError: on a bad vector.

        Complexity: O(|query| · postings scored) + O(log n · ef) (graph) + O(top_k log n).
        """
        return self.search_many(
            None if query is None else [query],
            None if vector is None else [vector],
            top_k=top_k, fusion_weight=fusion_weight, fusion=fusion,
            normalization=normalization, filter=filter, explain=explain,
        )[0]

    def search_many(self, queries: Sequence[str | None] | None = None,
                    vectors: np.ndarray | Sequence[np.ndarray | None] | None = None,
                    top_k: int = 10, fusion_weight: float = 0.5,
                    fusion: FusionMethod = "convex", normalization: Normalization = "minmax",
                    filter: Mapping | None = None, explain: bool = False
                    ) -> list[list[SearchResult]]:
        """:meth:`search` for many queries under one read transaction (one snapshot);
        ``queries[i]`` pairs with ``vectors[i]`` and either list may be None.

        Complexity: that of :meth:`search` per query; the vector side runs batched.
        """
        self._check_open()
        n = None
        for name, seq in (("queries", queries), ("vectors", vectors)):
            if seq is None:
                continue
            if isinstance(seq, (str, bytes)) or not isinstance(seq, (Sequence, np.ndarray)):
                raise InvalidTypeError(f"{name} must be a list, not {type(seq).__name__}")
            if n is not None and len(seq) != n:
                raise InvalidArgumentError(f"{n} queries but {len(seq)} vectors")
            n = len(seq)
        if n is None:
            raise QueryError("give queries, vectors, or both")
        qs = list(queries) if queries is not None else [None] * n
        vs = list(vectors) if vectors is not None else [None] * n
        from llmdsdb.fusion import fuse

        out: list[list[SearchResult]] = []
        with self._reading() as txn:
            # validated against the configuration of this snapshot: another handle may have
            # created the database (fixing its metric and dimension) after this one opened
            checked = [self._validate_query(qs[i], vs[i], top_k, fusion_weight, fusion,
                                            normalization, filter, explain) for i in range(n)]
            k = int(top_k)
            ncand = max(k, DEFAULT_CANDIDATES)
            w = float(fusion_weight)
            metric = self._config["metric"]
            # a side whose weight is 0 is not consulted - unless the other side is missing
            need_dense = [c[1] if (w > 0.0 or c[0] is None) else None for c in checked]
            dense = self._dense_many(need_dense, ncand)
            need_text = [i for i, c in enumerate(checked) if c[0] is not None
                         and (w < 1.0 or need_dense[i] is None)]
            texts = [i for i in need_text if checked[i][0].strip()]
            sparse_of: dict[int, list] = {i: [] for i in need_text}
            if texts and self._bm25 is not None:
                qs_ = [checked[i][0] for i in texts]
                found = (self._bm25.search_many(qs_, top_k=ncand) if len(qs_) > 1
                         else [self._bm25.search(qs_[0], top_k=ncand)])
                sparse_of.update(zip(texts, found))
            for i, (q, v, _k, _w) in enumerate(checked):
                v = need_dense[i]
                sparse = sparse_of.get(i)
                dn = dense[i] if v is not None else None
                if not sparse and not dn:
                    out.append([])
                    continue
                hits = fuse(sparse, dn, fusion_weight=w, method=fusion,
                            normalization=normalization, top_k=k, metric=metric)
                out.append(self._results(txn, hits, explain))
        return out

    def _dense_many(self, vecs: list[np.ndarray | None], ncand: int) -> list[list]:
        """Nearest neighbours of each vector: the graph's and the fresh segment's, merged."""
        out: list[list] = [[] for _ in vecs]
        if self._hnsw is None:
            return out
        rows = [i for i, v in enumerate(vecs) if v is not None]
        if not rows:
            return out
        Q = np.stack([vecs[i] for i in rows])
        graph: list[list] = [[] for _ in rows]
        if len(self._hnsw):
            ef = max(self._options.hnsw_ef_search or 0, ncand)
            if len(rows) == 1:
                graph = [self._hnsw.search(Q[0], ncand, ef=ef)]
            else:
                graph = self._hnsw.search_many(Q, ncand, ef=ef)
        fresh = (self._fresh.search_many(Q, ncand) if self._fresh is not None
                 and len(self._fresh) else None)
        for j, i in enumerate(rows):
            if fresh is None:
                out[i] = list(graph[j])
            elif not graph[j]:
                out[i] = fresh[j]
            else:
                both = list(graph[j]) + fresh[j]
                both.sort(key=lambda p: p[1])
                out[i] = both[:ncand]
        return out

    def _results(self, txn: Any, hits: list, explain: bool) -> list[SearchResult]:
        res = []
        for h in hits:
            raw = txn.get("docs", _k64(int(h.key)))
            if raw is None:
                continue  # a stale index entry; check() reports it
            rec = _decode_record(raw, f"docs/{int(h.key)}")
            ex = None
            if explain:
                ex = Explain(h.bm25_score, h.vector_distance, h.bm25_rank, h.vector_rank,
                             h.bm25_norm, h.vector_norm)
            res.append(SearchResult(rec["id"], float(h.score), rec["text"], rec["meta"], ex))
        return res

    # --- maintenance ----------------------------------------------------------------------------

    def optimize(self) -> int:
        """Move every vector of the fresh segment into the graph now (one write batch).

        :returns: the number of vectors moved.

        Complexity: O(f · log n · ef_construction) for f fresh vectors.
        """
        with self._lock:
            self._check_writable()
            if self._batch is not None:
                raise InvalidArgumentError("optimize() cannot run inside batch()")
            with self._reading():
                n = len(self._fresh) if self._fresh is not None else 0
            if not n:
                return 0
            return self._execute([_Op("merge", ())])[0]

    def stats(self) -> dict:
        """Figures about the database: documents, terms, pages, bytes on disk, generation,
        configuration, index and cache statistics.

        Complexity: O(1) plus the indexes' stats().
        """
        with self._reading() as txn:
            out: dict[str, Any] = {
                "path": self._path,
                "generation": self._env.generation(txn),
                "documents": txn.count("docs"),
                "pages": txn.count("pages"),
                "config": self.config,
                "readonly": self.readonly,
            }
            out["bm25"] = _as_dict(self._bm25.stats()) if self._bm25 is not None else None
            bm = out["bm25"] or {}
            out["terms"] = bm.get("num_terms")
            out["hnsw"] = _as_dict(self._hnsw.stats()) if self._hnsw is not None else None
            out["fresh_vectors"] = len(self._fresh) if self._fresh is not None else 0
        out["storage"] = self._env.stat()
        out["bytes_on_disk"] = out["storage"].get("bytes_on_disk")
        out["cache"] = self._cache.stats()
        return out

    def check(self) -> list[str]:
        """Verify the whole database; returns a list of problems (empty when healthy).

        Checks the envelope checksum of every value in every named database, the shape of
        every document record, that the id map and the documents agree, and that the counts
        agree; that the indexes hold exactly the live documents: the inverted index's live
        entries, and the graph's plus the fresh segment's, are exactly the live documents
        (with an embedding), and each index's ``_check()`` holds - every posting and every
        graph neighbour refers to an entry of its index, which is either such a live
        document or a tombstone that search skips (both indexes delete lazily); and that
        every allocated page is stored and every stored page allocated.

        Complexity: O(size of the database).
        """
        # A damaged page can trip an assertion in liblmdb that aborts the process: walk the
        # whole file in a child process first, and go on in-process only if that passed.
        problems: list[str] = self._env.check_structure()
        if problems:
            return problems
        from llmdsdb.storage import Envelope

        with self._reading_docs() as txn, self._checking_indexes(txn, problems) as loaded:
            # 1. checksums of every value
            for db in ("meta", "docs", "ids", "idxmeta"):  # pages: store.check() below
                try:
                    for k, raw in txn.raw_items(db):
                        try:
                            Envelope.decode_value(raw, key_desc=f"{db}/{bytes(k)!r}")
                        except CorruptionError as exc:
                            problems.append(str(exc))
                except LlmdsdbError as exc:
                    problems.append(f"{db}: cannot be read ({exc})")
            # 2. documents and the id map
            live: dict[int, bool] = {}
            ids_seen: dict[bytes, int] = {}
            try:
                for k, v in txn.items("ids"):
                    ids_seen[bytes(k)] = _u64(v)
            except LlmdsdbError as exc:
                problems.append(f"ids: {exc}")
            max_iid = -1
            try:
                for k, v in txn.items("docs"):
                    iid = _u64(k)
                    max_iid = max(max_iid, iid)
                    try:
                        rec = _decode_record(v, f"docs/{iid}")
                    except CorruptionError as exc:
                        problems.append(str(exc))
                        continue
                    live[iid] = rec["emb"] is not None
                    key = id_key(rec["id"])
                    if ids_seen.get(key) != iid:
                        problems.append(f"docs/{iid}: id {rec['id']!r} is not mapped to it")
                    if rec["emb"] is not None and self.dim is not None and \
                            len(rec["emb"]) != 4 * self.dim:
                        problems.append(f"docs/{iid}: embedding has the wrong dimension")
            except LlmdsdbError as exc:
                problems.append(f"docs: {exc}")
            for key, iid in ids_seen.items():
                if iid not in live:
                    problems.append(f"ids/{key!r}: points at missing document {iid}")
            raw_next = txn.get("meta", _META_NEXT_ID)
            if raw_next is not None and _u64(raw_next) <= max_iid:
                problems.append("meta/next_id is not above every internal id")
            if txn.count("docs") != len(ids_seen):
                problems.append(f"count mismatch: {txn.count('docs')} documents, "
                                f"{len(ids_seen)} ids")
            # 3. indexes hold exactly the live documents
            if loaded:
                problems += self._check_indexes(live)
            # 4. every page's checksum; the allocator's state matches the stored pages
            problems += self._store.check()
        return problems

    @contextmanager
    def _checking_indexes(self, txn: Any, problems: list[str]) -> Iterator[bool]:
        """Bring the indexes up to ``txn`` for :meth:`check`; a failure to load them (a
        damaged index record) is a problem to report, not an exception. Yields whether they
        loaded."""
        try:
            self._refresh(txn)
            loaded = True
        except LlmdsdbError as exc:
            self._dirty = True
            problems.append(f"indexes cannot be loaded: {exc}")
            loaded = False
        with self._store.bound(txn):
            yield loaded

    def _check_indexes(self, live: dict[int, bool]) -> list[str]:
        problems: list[str] = []
        bm, hn = self._bm25, self._hnsw
        for name, idx in (("bm25", bm), ("hnsw", hn)):
            if idx is None:
                continue
            try:
                idx._check()
            except AssertionError as exc:
                problems.append(f"{name}: invariant violated ({exc})")
            except Exception as exc:  # noqa: BLE001 - a damaged index may fail in any way
                problems.append(f"{name}: check failed ({type(exc).__name__}: {exc})")
        if bm is not None:
            if len(bm) != len(live):
                problems.append(f"bm25 holds {len(bm)} documents, the database {len(live)}")
            problems += [f"bm25: live document {i} is not indexed" for i in live
                         if i not in bm][:20]
        elif live:
            problems.append("documents exist but the inverted index is missing")
        with_emb = {i for i, e in live.items() if e}
        fr = self._fresh
        in_fresh: set[int] = set()
        if fr is not None:
            try:
                fr._check()
            except AssertionError as exc:
                problems.append(f"fresh segment: invariant violated ({exc})")
            in_fresh = set(fr.pos)
            problems += [f"fresh segment: row of missing document {i}"
                         for i in sorted(in_fresh - with_emb)[:20]]
        if hn is not None:
            if len(hn) + len(in_fresh) != len(with_emb):
                problems.append(f"hnsw holds {len(hn)} vectors and the fresh segment "
                                f"{len(in_fresh)}, the database {len(with_emb)} embeddings")
            problems += [f"hnsw: document {i} is neither in the graph nor the fresh segment"
                         for i in with_emb if i not in hn and i not in in_fresh][:20]
            problems += [f"document {i} is both in the graph and the fresh segment"
                         for i in in_fresh if i in hn][:20]
        elif with_emb:
            problems.append("embeddings exist but the graph is missing")
        return problems

    def _check(self) -> None:
        """Invariant (for tests): :meth:`check` finds nothing."""
        problems = self.check()
        assert not problems, problems

    def copy_to(self, dest_dir: str | os.PathLike, *, compact: bool = True) -> dict:
        """Hot, consistent copy of the whole environment under one read transaction into
        the new or empty directory ``dest_dir``.

        :returns: ``{"generation", "count", "format_version"}`` of the copied snapshot.

        :raises InvalidPathError: when ``dest_dir`` exists and is not an empty directory.
        :raises InvalidTypeError: when ``dest_dir`` is not a str or os.PathLike.

        Complexity: O(size of the database).
        """
        if not isinstance(dest_dir, (str, os.PathLike)):
            raise InvalidTypeError(
                f"dest_dir must be a str or os.PathLike, not {type(dest_dir).__name__}"
            )
        with self._lock:
            self._check_open()
            info = dict(self._env.copy_to(os.fspath(dest_dir), compact=compact))
        info.setdefault("count", info.get("documents"))
        return info


# --- open ---------------------------------------------------------------------------------


def open(  # the public name is llmdsdb.open, shadowing the builtin on purpose
    path: str | os.PathLike,
    *,
    dim: int | None = None,
    metric: Metric | None = None,
    analyzer: Any = None,
    hnsw_M: int | None = None,
    hnsw_ef_construction: int | None = None,
    hnsw_ef_search: int | None = None,
    cache_bytes: int = _DEFAULT_CACHE_BYTES,
    durability: Durability = "sync",
    readonly: bool = False,
    map_size_bytes: int | None = None,
    lock_timeout_s: float = 30.0,
    fresh_max_vectors: int | None = None,
) -> Database:
    """Open (creating it when absent) the database in directory ``path``.

    The configuration (``dim``, ``metric`` (default ``"cosine"``), ``analyzer``, ``hnsw_M``
    (16), ``hnsw_ef_construction`` (200)) is stored with the first write; on reopen the
    stored configuration wins and an argument that conflicts with it raises
    :class:`~llmdsdb.errors.ConfigConflictError` (leave it out). ``dim`` may be left None:
    the first embeddings added fix it. The other options are runtime only (see
    :class:`Options`).

    :raises InvalidPathError: when ``path`` is a symlink, a regular file or a FIFO.
    :raises CorruptionError: when it holds a damaged or foreign database.
    :raises FormatVersionError: when written by a newer format version.
    :raises LockTimeoutError: never here; a write waits ``lock_timeout_s`` for another
        writer and raises it then.

    Complexity: O(1) for the inverted index (its directory is loaded, postings lazily) plus
    O(n) to load the graph's arrays.

    >>> import tempfile, llmdsdb
    >>> with llmdsdb.open(tempfile.mkdtemp() + "/db") as db:
    ...     db.add(["a", "b"], ["the cat sat", "a dog barked"])
    ...     [r.id for r in db.search("cat")]
    2
    ['a']
    """
    explicit: dict[str, Any] = {}
    if dim is not None:
        explicit["dim"] = _check_int("dim", dim, 1, MAX_DIM)
    if metric is not None:
        explicit["metric"] = _check_choice("metric", metric, METRICS)
    if analyzer is not None:
        explicit["analyzer"] = _analyzer_dict(analyzer)
    if hnsw_M is not None:
        explicit["hnsw_M"] = _check_int("hnsw_M", hnsw_M, 2, 256)
    if hnsw_ef_construction is not None:
        explicit["hnsw_ef_construction"] = _check_int("hnsw_ef_construction",
                                                      hnsw_ef_construction, 1, 4096)
    if hnsw_ef_search is not None:
        hnsw_ef_search = _check_int("hnsw_ef_search", hnsw_ef_search, 1, 4096)
    cache_bytes = _check_int("cache_bytes", cache_bytes, 1, 2**48)
    _check_choice("durability", durability, DURABILITIES)
    if not isinstance(readonly, bool):
        raise InvalidTypeError("readonly must be a bool")
    if map_size_bytes is not None:
        map_size_bytes = _check_int("map_size_bytes", map_size_bytes, 1 << 16, 2**50)
    if isinstance(lock_timeout_s, bool) or not isinstance(lock_timeout_s, (int, float)) \
            or not 0 <= lock_timeout_s < math.inf:
        raise InvalidArgumentError(f"lock_timeout_s must be a finite number >= 0, "
                                   f"got {lock_timeout_s!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    if fresh_max_vectors is not None:
        fresh_max_vectors = _check_int("fresh_max_vectors", fresh_max_vectors, 0, 2**31)
    options = Options(cache_bytes=cache_bytes, durability=durability, readonly=readonly,
                      map_size_bytes=map_size_bytes, lock_timeout_s=float(lock_timeout_s),
                      hnsw_ef_search=hnsw_ef_search, fresh_max_vectors=fresh_max_vectors)
    return Database(path, options, explicit)


def _analyzer_dict(analyzer: Any) -> dict:
    if isinstance(analyzer, Mapping):
        from llmdsdb.analysis import Analyzer

        try:
            return Analyzer.from_dict(dict(analyzer)).to_dict()
        except (LlmdsdbError, TypeError, ValueError, KeyError) as exc:
            # an argument, not a stored record: not a CorruptionError/FormatVersionError
            raise InvalidArgumentError(f"analyzer: {exc} (pass an llmdsdb.analysis.Analyzer "
                                       "or its to_dict())") from exc
    to_dict: Callable[[], dict] | None = getattr(analyzer, "to_dict", None)
    if to_dict is None:
        raise InvalidTypeError("analyzer must be an llmdsdb.analysis.Analyzer or its to_dict()")
    return to_dict()
