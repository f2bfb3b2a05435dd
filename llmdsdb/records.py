"""Document records: what a stored document looks like, and the typed records the API returns.

Storage layout (``storage/FORMAT.md``): ``docs`` maps an internal id (u64 big-endian) to a
msgpack map ``{id, text, meta, emb, hash}`` - ``emb`` the float32 little-endian bytes of the
embedding or nil, ``hash`` the sha256 of the content - and ``ids`` maps the key of the
external id (:func:`llmdsdb.storage.id_key`) to the internal id. This module builds records
from validated write calls and decodes them; it does no I/O (the keys and the transactions
are :mod:`llmdsdb.documents`' business), so it imports no lmdb.

Invariant: a record this module packs decodes back to the same id, text, metadata and
embedding bytes; :func:`decode_record` accepts exactly the records of that shape and raises
:class:`~llmdsdb.errors.CorruptionError` for anything else.

>>> rows = build_rows("add", ["a"], ["hello"], [None], None, keys=[b"a"])
>>> rec = decode_record(rows[0].record, "docs/0")
>>> rec["id"], rec["text"], record_id(rows[0].record, "docs/0")
('a', 'hello', 'a')
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgpack
import numpy as np

from llmdsdb._native import _core
from llmdsdb._validate import utf8, vector, vectors
from llmdsdb.analysis import Analyzer
from llmdsdb.errors import (
    CorruptionError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
)
from llmdsdb.fusion import Explain

__all__ = ["MAX_DOC_WORDS", "MAX_ID_BYTES", "MAX_META_BYTES", "MAX_META_DEPTH", "MAX_TEXT_BYTES",
           "Document",
           "Explain", "Row", "SearchResult", "build_rows", "check_ids", "check_metadata",
           "content_hash", "decode_record", "document", "pack", "record_id", "unpack",
           "validate_embeddings", "with_embedding", "with_metadata"]

#: Largest id accepted at all (it is kept whole in the record).
MAX_ID_BYTES = 64 * 1024
#: Largest document text accepted (UTF-8 bytes); rejected before tokenising.
MAX_TEXT_BYTES = 10 * 1024 * 1024
#: Most distinct words per document (the analyzer's words: runs of letters and digits,
#: case-folded; its terms are at most as many). Every new term costs the index a postings
#: page when the batch is flushed: a document of 10^6 distinct tokens took minutes to add.
#: Natural text stays well below it (a 10 MiB English text has some 50,000-80,000).
MAX_DOC_WORDS = 100_000
#: Largest packed metadata map per document.
MAX_META_BYTES = 1024 * 1024
#: Deepest nesting of metadata values.
MAX_META_DEPTH = 16


class Document(NamedTuple):
    """A stored document. ``embedding`` is a float32 array of shape (dim,) or None.

    A new record (with its own array and dict) per call, so threads never share one.
    """

    id: str
    text: str
    embedding: np.ndarray | None
    metadata: dict
    content_hash: str


_UNSET: Any = object()


class SearchResult:
    """One hit, best first: ``id``, ``score`` (higher is better: the fused score when both
    sides ran, else the side's own - BM25 score or vector similarity; see
    :meth:`~llmdsdb.db.Database.search`), ``text``, ``metadata`` and ``explain`` (None
    unless asked for); ``embedding`` (not a tuple field) is the stored vector or None;
    ``plan`` (not a tuple field; None unless ``explain``) is the query's
    :class:`~llmdsdb.filtered_search.SearchPlan`: the strategy each side ran, how many
    documents the filter allowed, and whether the hits are exact.

    ``text`` and ``metadata`` are decoded from the stored record on first access, so a
    caller that reads only ids and scores pays for no decode. Behaves like the named tuple
    it used to be: fields by name or position, unpacking, equality, ``_asdict()``.

    A new record per search; two threads reading one result may both decode it (harmless).
    Memory: the stored record's bytes until they are decoded.
    """

    __slots__ = ("_emb", "_meta", "_raw", "_text", "explain", "id", "plan", "score")
    _fields = ("id", "score", "text", "metadata", "explain")

    def __init__(self, id: str, score: float, text: str = _UNSET, metadata: dict = _UNSET,
                 explain: Explain | None = None, *, raw: bytes | None = None) -> None:
        self.id = id
        self.score = score
        self.explain = explain
        self.plan: Any = None  # with explain: how the query ran (filtered_search.SearchPlan)
        self._text = text
        self._meta = metadata
        self._emb: Any = _UNSET if raw is not None else None
        self._raw = raw

    def _decode(self) -> None:
        rec = decode_record(self._raw or b"\xc0", f"docs record of {self.id!r}")
        self._text, self._meta, self._raw = rec["text"], rec["meta"], None
        self._emb = rec["emb"]

    @property
    def embedding(self) -> np.ndarray | None:
        """The document's stored vector (float32, a new array per access), or None.
        Not one of the tuple fields. Complexity: O(len(record)) on first access, O(dim)."""
        if self._emb is _UNSET:
            self._decode()
        return None if self._emb is None else np.frombuffer(self._emb, dtype="<f4").copy()

    @property
    def text(self) -> str:
        """The document's text (decoded on first access). Complexity: O(len(record))."""
        if self._text is _UNSET:
            self._decode()
        return self._text

    @property
    def metadata(self) -> dict:
        """The document's metadata (decoded on first access). Complexity: O(len(record))."""
        if self._meta is _UNSET:
            self._decode()
        return self._meta

    def _astuple(self) -> tuple:
        return (self.id, self.score, self.text, self.metadata, self.explain)

    def _asdict(self) -> dict[str, Any]:
        """The fields as a dict. Complexity: O(1) after the decode."""
        return dict(zip(self._fields, self._astuple()))

    def __iter__(self) -> Any:
        return iter(self._astuple())

    def __getitem__(self, i: int | slice) -> Any:
        return self._astuple()[i]

    def __len__(self) -> int:
        return 5

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (SearchResult, tuple)):
            return self._astuple() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # metadata is a dict, as before

    def __repr__(self) -> str:
        return ("SearchResult(" + ", ".join(f"{k}={v!r}" for k, v in zip(self._fields,
                                                                         self._astuple())) + ")")


class Row(NamedTuple):
    """One validated document of a write call."""

    id: str
    key: bytes
    text: str
    emb: np.ndarray | None  # float32 (dim,)
    meta: dict
    hash: str
    record: bytes  # packed msgpack map


# --- packing --------------------------------------------------------------------------------


def pack(obj: object) -> bytes:
    """msgpack with bin types. Complexity: O(size)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(raw: bytes, key_desc: str) -> Any:
    """msgpack decode; anything malformed is a :class:`CorruptionError` naming ``key_desc``.

    Complexity: O(size).
    """
    try:
        return msgpack.unpackb(bytes(raw), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptionError(f"{key_desc}: malformed record ({exc})") from exc


def decode_record(raw: bytes, key_desc: str) -> dict:
    """A document record, checked for its shape.

    Complexity: O(len(raw)).

    :raises CorruptionError: when it is not a document record.
    """
    rec = unpack(raw, key_desc)
    if (
        not isinstance(rec, dict)
        or not isinstance(rec.get("id"), str)
        or not isinstance(rec.get("text"), str)
        or not isinstance(rec.get("meta"), dict)
        or not isinstance(rec.get("hash"), str)
        or "emb" not in rec
        or not (rec["emb"] is None or isinstance(rec["emb"], bytes))
    ):
        raise CorruptionError(f"{key_desc}: document record has the wrong shape")
    if rec["emb"] is not None and len(rec["emb"]) % 4:
        raise CorruptionError(f"{key_desc}: embedding bytes are not a float32 array")
    return rec


def record_id(raw: bytes, key_desc: str) -> str:
    """The external id of a document record, without decoding its text, metadata or
    embedding (the id is the record's first field; other orders are read too).

    Complexity: O(1) for records this module wrote; O(len(raw)) otherwise.

    :raises CorruptionError: when the record has no str id.
    """
    if raw[:4] == b"\x85\xa2id" and len(raw) >= 7:  # packed here: {"id": <str>, ...}
        h = raw[4]
        if 0xA0 <= h <= 0xBF:
            start, size = 5, h - 0xA0
        elif h == 0xD9:
            start, size = 6, raw[5]
        elif h == 0xDA:
            start, size = 7, int.from_bytes(raw[5:7], "big")
        else:
            start, size = 0, -1
        if size >= 0 and start + size <= len(raw):
            try:
                return bytes(raw[start:start + size]).decode("utf-8")
            except UnicodeDecodeError:
                pass  # the careful path below reports it
    try:
        up = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(raw) + 1)
        up.feed(raw)
        for _ in range(up.read_map_header()):
            if up.unpack() == "id":
                value = up.unpack()
                if isinstance(value, str):
                    return value
                break
            up.skip()
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptionError(f"{key_desc}: malformed record ({exc})") from exc
    raise CorruptionError(f"{key_desc}: document record has the wrong shape")


def document(rec: dict) -> Document:
    """The public record of a decoded document record. Complexity: O(len(embedding))."""
    emb = rec["emb"]
    vec = np.frombuffer(emb, dtype="<f4").copy() if emb is not None else None
    return Document(rec["id"], rec["text"], vec, rec["meta"], rec["hash"])


# --- validation of write calls --------------------------------------------------------------


def check_id(doc_id: object, where: str, key_of: Callable[[str], bytes]) -> bytes:
    """The ``ids`` key of an external id, after checking it (``key_of`` is the storage
    layer's :func:`~llmdsdb.storage.id_key`).

    Complexity: O(len(doc_id)).

    :raises InvalidTypeError: not a str. :raises InvalidArgumentError: empty, too long or not
        valid Unicode.
    """
    if not isinstance(doc_id, str):
        raise InvalidTypeError(f"{where}: id must be a str, not {type(doc_id).__name__}")
    if not doc_id:
        raise InvalidArgumentError(f"{where}: id must be non-empty")
    raw = utf8(doc_id, f"{where}: id")
    if len(raw) > MAX_ID_BYTES:
        raise InvalidArgumentError(f"{where}: id is {len(raw)} bytes; the limit is {MAX_ID_BYTES}")
    return key_of(doc_id)


def check_ids(name: str, ids: object, key_of: Callable[[str], bytes], *,
              unique: bool) -> list[bytes]:
    """The keys of a list of ids (each checked by :func:`check_id`).

    Complexity: O(total length).

    :raises DuplicateIdError: when ``unique`` and an id repeats.
    """
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise InvalidTypeError(f"{name}: ids must be a list of str, not {type(ids).__name__}")
    keys = [check_id(i, f"{name}: ids[{j}]", key_of) for j, i in enumerate(ids)]
    if unique:
        seen: dict[bytes, int] = {}
        for j, k in enumerate(keys):
            if k in seen:
                raise DuplicateIdError(f"{name}: id {ids[j]!r} appears twice in one call "
                                       f"(positions {seen[k]} and {j})")
            seen[k] = j
    return keys


def _check_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise InvalidTypeError(f"{where}: text must be a str, not {type(text).__name__}")
    # len(text) * 4 bounds the UTF-8 size: skip encoding huge strings twice
    if len(text) > MAX_TEXT_BYTES:
        raise InvalidArgumentError(
            f"{where}: text has {len(text)} characters; the limit is {MAX_TEXT_BYTES} bytes")
    n = len(utf8(text, f"{where}: text"))
    if n > MAX_TEXT_BYTES:
        raise InvalidArgumentError(f"{where}: text is {n} bytes; the limit is {MAX_TEXT_BYTES}")
    # words are separated: a text shorter than 2 * MAX_DOC_WORDS cannot have more
    if len(text) >= 2 * MAX_DOC_WORDS:
        words = _core.words_split([text if text.isascii() else Analyzer.normalize(text)])[2]
        if len(words) > MAX_DOC_WORDS:
            raise InvalidArgumentError(
                f"{where}: text has {len(words)} distinct words; the limit is "
                f"{MAX_DOC_WORDS} per document (split it into several documents)")
    return text


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
        utf8(value, f"{where}: metadata string")
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(x, where, depth + 1) for x in value]
    if isinstance(value, Mapping):
        out = {}
        for k in sorted(value, key=lambda k: (not isinstance(k, str), str(k))):
            if not isinstance(k, str):
                raise InvalidTypeError(f"{where}: metadata keys must be str, got {k!r}")
            utf8(k, f"{where}: metadata key")
            out[k] = _canonical(value[k], where, depth + 1)
        return out
    raise InvalidTypeError(
        f"{where}: metadata value of type {type(value).__name__} is not supported "
        "(use None, bool, int, float, str, list or dict)")


def _metadata(name: str, metadata: object, n: int) -> list[dict]:
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping) or not isinstance(metadata, Sequence):
        raise InvalidTypeError(f"{name}: metadata must be a list of dicts (one per id)")
    if len(metadata) != n:
        raise InvalidArgumentError(f"{name}: {n} ids but {len(metadata)} metadata")
    out: list[dict] = []
    for j, m in enumerate(metadata):
        if m is None:
            out.append({})
        elif not isinstance(m, Mapping):
            raise InvalidTypeError(f"{name}: metadata[{j}] must be a dict, not {type(m).__name__}")
        else:
            out.append(_canonical(m, f"{name}: metadata[{j}]"))  # type: ignore[arg-type]
    return out


def validate_embeddings(name: str, embeddings: object, n: int, dim: int | None, metric: str
                        ) -> list[np.ndarray | None]:
    """The embeddings of a write call, one float32 vector (or None) per document, checked by
    the one vector rule (:func:`llmdsdb._validate.vectors`); the first one fixes ``dim``
    when it is None.

    Complexity: O(n * dim).
    """
    if embeddings is None:
        return [None] * n
    if isinstance(embeddings, np.ndarray):
        if embeddings.ndim == 2 and embeddings.shape[0] != n:
            raise InvalidArgumentError(f"{name}: {n} ids but {embeddings.shape[0]} embeddings")
        if n == 0 and embeddings.ndim == 2:
            return []
        return list(vectors(embeddings, dim=dim, metric=metric, what=f"{name}: embeddings"))
    if isinstance(embeddings, (str, bytes)) or not isinstance(embeddings, Sequence):
        raise InvalidTypeError(
            f"{name}: embeddings must be a 2-D array or a list of vectors (or None)")
    if len(embeddings) != n:
        raise InvalidArgumentError(f"{name}: {n} ids but {len(embeddings)} embeddings")
    out: list[np.ndarray | None] = []
    for j, e in enumerate(embeddings):
        if e is None:
            out.append(None)
            continue
        v = vector(e, dim=dim, metric=metric, what=f"{name}: embeddings[{j}]")
        dim = v.shape[0]
        out.append(v)
    return out


def with_metadata(rec: dict, metadata: object, where: str) -> tuple[bytes, str, dict]:
    """A decoded document record with new metadata: ``(packed record, content hash, the
    canonical metadata)`` - the id, text and embedding bytes unchanged, the hash as
    :func:`build_rows` computes it.

    Complexity: O(size of the record).

    :raises InvalidTypeError, InvalidArgumentError: on bad metadata (as :func:`build_rows`).
    """
    if not isinstance(metadata, Mapping):
        raise InvalidTypeError(f"{where}: metadata must be a dict, not "
                               f"{type(metadata).__name__}")
    meta = _canonical(metadata, f"{where}: metadata")
    packed_meta = pack(meta)
    if len(packed_meta) > MAX_META_BYTES:
        raise InvalidArgumentError(f"{where}: metadata is {len(packed_meta)} bytes packed; "
                                   f"the limit is {MAX_META_BYTES}")
    h = content_hash(rec["text"], rec["emb"], packed_meta)
    record = pack({"id": rec["id"], "text": rec["text"], "meta": meta, "emb": rec["emb"],
                   "hash": h})
    return record, h, meta  # type: ignore[return-value]


def check_metadata(name: str, metadata: object, n: int) -> list[dict]:
    """The canonical metadata dicts of a call with ``n`` ids (None -> ``{}``).

    Complexity: O(total size).

    :raises InvalidTypeError, InvalidArgumentError: on bad metadata.
    """
    out = _metadata(name, metadata, n)
    for j, m in enumerate(out):
        if len(pack(m)) > MAX_META_BYTES:
            raise InvalidArgumentError(f"{name}: metadata[{j}] is too large; the limit is "
                                       f"{MAX_META_BYTES} bytes packed")
    return out


def content_hash(text: str, emb_bytes: bytes | None, packed_meta: bytes) -> str:
    """The content hash of a document (what an unchanged upsert is recognised by): sha256
    over its text, embedding bytes and packed metadata. Complexity: O(size)."""
    return hashlib.sha256(pack([text, emb_bytes]) + packed_meta).hexdigest()


def with_embedding(rec: dict, emb_bytes: bytes | None) -> bytes:
    """The packed record of the decoded record ``rec`` with its embedding replaced by
    ``emb_bytes`` (float32 LE bytes or None) and its content hash recomputed, as
    :func:`build_rows` would pack it. Complexity: O(size)."""
    h = content_hash(rec["text"], emb_bytes, pack(rec["meta"]))
    return pack({"id": rec["id"], "text": rec["text"], "meta": rec["meta"], "emb": emb_bytes,
                 "hash": h})


def build_rows(name: str, ids: Sequence[str], texts: object, embs: list[np.ndarray | None],
               metadata: object, *, keys: list[bytes]) -> list[Row]:
    """The records of a write call whose ids (``keys``) and embeddings are checked; checks
    the texts and the metadata.

    Complexity: O(total size).
    """
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise InvalidTypeError(f"{name}: texts must be a list of str, not {type(texts).__name__}")
    n = len(ids)
    if len(texts) != n:
        raise InvalidArgumentError(f"{name}: {n} ids but {len(texts)} texts")
    tx = [_check_text(t, f"{name}: texts[{j}]") for j, t in enumerate(texts)]
    metas = _metadata(name, metadata, n)
    rows = []
    for j in range(n):
        emb = embs[j]
        emb_bytes = emb.astype("<f4").tobytes() if emb is not None else None
        packed_meta = pack(metas[j])
        if len(packed_meta) > MAX_META_BYTES:
            raise InvalidArgumentError(f"{name}: metadata[{j}] is {len(packed_meta)} bytes "
                                       f"packed; the limit is {MAX_META_BYTES}")
        h = content_hash(tx[j], emb_bytes, packed_meta)
        record = pack({"id": ids[j], "text": tx[j], "meta": metas[j], "emb": emb_bytes,
                       "hash": h})
        rows.append(Row(ids[j], keys[j], tx[j], emb, metas[j], h, record))
    return rows
