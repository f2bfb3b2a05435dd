"""The storage layer's on-disk encodings: table names and tags, keys, and the value envelope.

Pure functions and constants, no LMDB (the layer rule: importing this module loads neither
lmdb nor a database). Invariants (see ``storage/FORMAT.md``):

* **Keys** are 1..510 bytes (LMDB's 511 minus the one-byte table tag); internal ids are
  8-byte big-endian (:func:`u64key`, sorting numerically); external ids are their UTF-8
  (:func:`id_key`), hashed to 34 bytes when longer than 400 bytes or starting with NUL.
* **Every value is wrapped in an envelope** (:class:`Envelope`): magic byte, format version,
  kind, flags, CRC-32 and length, optionally zstd-compressed. LMDB has no checksums of its own,
  so a flipped bit inside a value is reported as :class:`~llmdsdb.errors.CorruptionError`
  naming the key instead of being returned silently.

Everything here is re-exported by :mod:`llmdsdb.storage`, its public home.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import zlib

import zstandard

from llmdsdb.errors import (
    CorruptionError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidTypeError,
)

__all__ = [
    "DB_NAMES",
    "FORMAT_VERSION",
    "KIND_DOC",
    "KIND_ID",
    "KIND_IDXMETA",
    "KIND_META",
    "KIND_PAGE",
    "KIND_RAW",
    "MAX_KEY_BYTES",
    "MAX_PLAIN_ID_BYTES",
    "MAX_VALUE_BYTES",
    "Envelope",
    "decode_value",
    "encode_value",
    "from_u64key",
    "id_key",
    "is_hashed_id_key",
    "meta_key",
    "u64key",
]

#: On-disk format version written to ``meta/format_version`` and into every envelope.
#: A database (or a value) with a larger version refuses to open: see storage/FORMAT.md.
FORMAT_VERSION = 1

#: The tables ("named databases"), in a fixed order. See storage/FORMAT.md. They all live in
#: LMDB's main database, each key prefixed by a one-byte tag: py-lmdb keeps a named-database
#: handle only when it was opened in a committed *write* transaction, so LMDB named databases
#: would make every writable open wait for another process's running write batch.
DB_NAMES: tuple[str, ...] = ("meta", "docs", "ids", "pages", "idxmeta")
_TAG: dict[str, bytes] = {"meta": b"\x01", "docs": b"\x02", "ids": b"\x03", "pages": b"\x04",
                          "idxmeta": b"\x05"}
_TAGS = frozenset(t[0] for t in _TAG.values())
#: Tables whose entry count is kept in ``meta/count/<table>`` (``meta`` itself is counted by
#: a scan: it is small).
_COUNTED = ("docs", "ids", "pages", "idxmeta")

#: Envelope kinds (one per named database, so a value copied to the wrong place is caught).
KIND_RAW = 0
KIND_META = 1
KIND_DOC = 2
KIND_ID = 3
KIND_PAGE = 4
KIND_IDXMETA = 5
_KIND_OF_DB = {"meta": KIND_META, "docs": KIND_DOC, "ids": KIND_ID, "pages": KIND_PAGE,
               "idxmeta": KIND_IDXMETA}

#: Longest key of a table: LMDB's compile-time limit (MDB_MAXKEYSIZE, 511) minus the tag byte.
#: An empty key is refused too.
MAX_KEY_BYTES = 510
#: External ids up to this many UTF-8 bytes are stored as keys as is; longer ones are hashed.
MAX_PLAIN_ID_BYTES = 400


# --------------------------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------------------------

_U64 = struct.Struct(">Q")


def u64key(i: int) -> bytes:
    """Encode an unsigned 64-bit integer as an 8-byte big-endian key (sorts numerically).

    >>> u64key(258)
    b'\\x00\\x00\\x00\\x00\\x00\\x00\\x01\\x02'

    Complexity: O(1).

    :raises InvalidTypeError: when ``i`` is not an int.
    :raises InvalidArgumentError: when ``i`` is negative or >= 2**64.
    """
    if not isinstance(i, int) or isinstance(i, bool):
        raise InvalidTypeError(f"a u64 key must be an int, not {type(i).__name__}")
    if not 0 <= i < 1 << 64:
        raise InvalidArgumentError(f"a u64 key must be in [0, 2**64), got {i}")
    return _U64.pack(i)


def from_u64key(b: bytes | memoryview) -> int:
    """Decode a key written by :func:`u64key`.

    Complexity: O(1).

    :raises CorruptionError: when ``b`` is not 8 bytes long.
    """
    if len(b) != 8:
        raise CorruptionError(f"a u64 key must be 8 bytes, got {len(b)}")
    return _U64.unpack(b)[0]


def id_key(external_id: str) -> bytes:
    """The key of an external document id in the ``ids`` database.

    UTF-8 of the id when it is at most 400 bytes and does not start with NUL; otherwise
    ``b"\\x00h" + sha256(utf8)`` (34 bytes). The original id is kept in the document record,
    so a hashed key is never the only copy. Table keys are limited to 510 bytes.

    >>> id_key("doc-1")
    b'doc-1'
    >>> len(id_key("x" * 1000)), id_key("x" * 1000)[:2]
    (34, b'\\x00h')

    Complexity: O(len(external_id)).

    :raises InvalidTypeError: when the id is not a str.
    :raises InvalidArgumentError: when it is empty or not encodable as UTF-8 (lone surrogates).
    """
    if not isinstance(external_id, str):
        raise InvalidTypeError(f"a document id must be a str, not {type(external_id).__name__}")
    if not external_id:
        raise InvalidArgumentError("a document id must be a non-empty string")
    try:
        raw = external_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(f"document id {external_id!r} is not valid Unicode") from exc
    if len(raw) <= MAX_PLAIN_ID_BYTES and raw[0] != 0:
        return raw
    return b"\x00h" + hashlib.sha256(raw).digest()


def is_hashed_id_key(key: bytes) -> bool:
    """True when ``key`` came from hashing a long id in :func:`id_key`.

    Complexity: O(1).
    """
    return len(key) == 34 and key[:2] == b"\x00h"


def meta_key(name: str) -> bytes:
    """The key of a named record (``meta`` or ``idxmeta``): its UTF-8 bytes.

    Complexity: O(len(name)).

    :raises InvalidArgumentError: when the name is empty or longer than 510 bytes.
    """
    if not isinstance(name, str):
        raise InvalidTypeError(f"a record name must be a str, not {type(name).__name__}")
    raw = name.encode("utf-8")
    if not raw or len(raw) > MAX_KEY_BYTES:
        raise InvalidArgumentError(f"record name must be 1..{MAX_KEY_BYTES} UTF-8 bytes: {name!r}")
    return raw


def _as_key(key: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    elif isinstance(key, (bytearray, memoryview)):
        key = bytes(key)
    elif not isinstance(key, bytes):
        raise InvalidTypeError(f"a key must be bytes or str, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_BYTES:
        raise InvalidArgumentError(f"a key must be 1..{MAX_KEY_BYTES} bytes, got {len(key)}")
    return key


# --------------------------------------------------------------------------------------------
# the value envelope
# --------------------------------------------------------------------------------------------

_ENV_MAGIC = 0xD5
_HDR = struct.Struct(">BBBBII")  # magic, version, kind, flags, crc32, payload length
_HDR_SIZE = _HDR.size  # 12
_FLAG_ZSTD = 0x01
_KNOWN_FLAGS = _FLAG_ZSTD
#: Values above this are refused on write and treated as corrupt on read (LMDB's own limit
#: is ~4 GiB; nothing we store comes near 1 GiB).
MAX_VALUE_BYTES = 1 << 30
_COMPRESS_MIN_BYTES = 256
_ZSTD_LEVEL = 3
_ZSTD_MAX_WINDOW = 1 << 27

_tls = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_tls, "cctx", None)
    if c is None:
        c = _tls.cctx = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "dctx", None)
    if d is None:
        d = _tls.dctx = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW)
    return d


class Envelope:
    """The checksummed wrapper around every stored value.

    Layout (big-endian, 12-byte header then the body)::

        0  u8   magic 0xD5
        1  u8   format version (1)
        2  u8   kind (KIND_META=1, KIND_DOC=2, KIND_ID=3, KIND_PAGE=4, KIND_IDXMETA=5, RAW=0)
        3  u8   flags (bit 0: body is one zstd frame; other bits must be 0)
        4  u32  CRC-32 (zlib) of bytes 0..3, bytes 8..11 and the body
        8  u32  payload length (after decompression)
        12 ...  body: the payload, or its zstd frame (content size in the frame header)

    The CRC covers the stored body, so a corrupt value is caught before it is decompressed;
    decompression is bounded by the length field (itself checksummed) and the frame's declared
    content size must equal it, so a hostile value cannot make us allocate more than it says.

    Stateless; the methods are static. Thread-safe (per-thread zstd contexts).

    Memory: none beyond the returned bytes.

    >>> raw = Envelope.encode_value(b"x" * 1000, kind=KIND_DOC)
    >>> len(raw) < 100, Envelope.decode_value(raw, key_desc="docs/1") == b"x" * 1000
    (True, True)
    """

    HEADER_SIZE = _HDR_SIZE

    @staticmethod
    def encode_value(payload: bytes | bytearray | memoryview, *, kind: int,
                     compress: bool | None = None) -> bytes:
        """Wrap ``payload``; compress with zstd when ``compress`` is True, or when it is None
        (auto), the payload is at least 256 bytes and compression saves at least 1/8.

        Complexity: O(len(payload)).

        :raises InvalidTypeError: when the payload is not bytes-like.
        :raises InvalidArgumentError: when it exceeds 1 GiB or ``kind`` is not in 0..255.
        """
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise InvalidTypeError(f"a stored value must be bytes, not {type(payload).__name__}")
        n = len(payload) if not isinstance(payload, memoryview) else payload.nbytes
        if n > MAX_VALUE_BYTES:
            raise InvalidArgumentError(f"a stored value may be at most {MAX_VALUE_BYTES} bytes, "
                                       f"got {n}; split it")
        if not 0 <= kind <= 255:
            raise InvalidArgumentError(f"envelope kind must be 0..255, got {kind}")
        flags = 0
        body: bytes | bytearray | memoryview = payload
        if compress or (compress is None and n >= _COMPRESS_MIN_BYTES):
            packed = _compressor().compress(payload)
            if compress or len(packed) <= n - (n >> 3):
                body, flags = packed, _FLAG_ZSTD
        head = bytes((_ENV_MAGIC, FORMAT_VERSION, kind, flags))
        length = struct.pack(">I", n)
        crc = zlib.crc32(body, zlib.crc32(length, zlib.crc32(head)))
        return b"".join((head, struct.pack(">I", crc), length, body))

    @staticmethod
    def decode_value(raw: bytes | bytearray | memoryview, *, key_desc: str,
                     kind: int | None = None) -> bytes:
        """Verify and unwrap a value written by :meth:`encode_value`.

        Complexity: O(len(raw)) plus decompression.

        :param key_desc: names the value in error messages (``"pages/page 42"``).
        :param kind: when given, the envelope's kind must match.
        :raises CorruptionError: on a bad magic byte, unknown flags, checksum mismatch, a length
            that does not match, or a zstd frame that does not decompress to the stated length.
        :raises FormatVersionError: when the value was written by a newer format version.
        """
        n = len(raw) if not isinstance(raw, memoryview) else raw.nbytes
        if n < _HDR_SIZE:
            raise CorruptionError(f"{key_desc}: stored value is {n} bytes, shorter than the "
                                  f"{_HDR_SIZE}-byte envelope header; restore from a backup")
        magic, version, vkind, flags, crc, length = _HDR.unpack_from(raw, 0)
        if magic != _ENV_MAGIC:
            raise CorruptionError(f"{key_desc}: bad envelope magic 0x{magic:02x} (not written "
                                  f"by llmdsdb, or corrupt); restore from a backup")
        if version > FORMAT_VERSION or version == 0:
            raise FormatVersionError(f"{key_desc}: value has format version {version}; this "
                                     f"llmdsdb reads version {FORMAT_VERSION}; upgrade llmdsdb")
        mv = raw if isinstance(raw, memoryview) else memoryview(raw)
        body = mv[_HDR_SIZE:]
        calc = zlib.crc32(body, zlib.crc32(mv[8:12], zlib.crc32(mv[0:4])))
        if calc != crc:
            raise CorruptionError(f"{key_desc}: checksum mismatch (stored 0x{crc:08x}, computed "
                                  f"0x{calc:08x}); the value is corrupt; restore from a backup "
                                  f"or run `llmdsdb verify`")
        if kind is not None and vkind != kind:
            raise CorruptionError(f"{key_desc}: value of kind {vkind} found where kind {kind} "
                                  f"belongs")
        if flags & ~_KNOWN_FLAGS:
            raise CorruptionError(f"{key_desc}: unknown envelope flags 0x{flags:02x}")
        if length > MAX_VALUE_BYTES:
            raise CorruptionError(f"{key_desc}: declared length {length} exceeds the limit")
        if not flags & _FLAG_ZSTD:
            if len(body) != length:
                raise CorruptionError(f"{key_desc}: length field {length} != body {len(body)}")
            return bytes(body)
        try:
            declared = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:  # not a zstd frame at all
            raise CorruptionError(f"{key_desc}: zstd body has no readable frame header: "
                                  f"{exc}; restore from a backup") from exc
        if declared != length:
            raise CorruptionError(f"{key_desc}: zstd frame declares {declared} bytes, the "
                                  f"envelope {length}")
        try:
            # one frame and nothing after it: bytes behind the frame mean a crafted value
            out = _decompressor().decompress(body, max_output_size=length,
                                             allow_extra_data=False)
        except zstandard.ZstdError as exc:
            raise CorruptionError(f"{key_desc}: zstd body does not decompress: {exc}") from exc
        if len(out) != length:
            raise CorruptionError(f"{key_desc}: decompressed {len(out)} bytes, expected {length}")
        return out


#: Module-level aliases of the :class:`Envelope` methods.
encode_value = Envelope.encode_value
decode_value = Envelope.decode_value
