"""The storage layer: one LMDB environment per database directory, checksummed values.

Everything the database keeps on disk goes through this module. It owns the rules that make
LMDB safe to use from Python (see ``RELIABILITY.md`` §0-§1 and ``storage/FORMAT.md``):

* **Paths are checked before liblmdb sees them.** A symlink, a regular file or a FIFO where the
  database directory should be raises :class:`~llmdsdb.errors.InvalidPathError`; a missing
  directory is created with mode ``0o700``; a ``data.mdb`` of size 0, too short, whose LMDB
  meta pages are not there (magic ``0xBEEFC0DE``) or that is shorter than the pages its meta
  page says exist raises :class:`~llmdsdb.errors.CorruptionError` instead of opening as an
  empty database (size 0) or killing the process with SIGBUS (truncated).
* **Every value is wrapped in an envelope** (:class:`Envelope`): magic byte, format version,
  kind, flags, CRC-32 and length, optionally zstd-compressed. LMDB has no checksums of its own,
  so a flipped bit inside a value is reported as :class:`~llmdsdb.errors.CorruptionError`
  naming the key instead of being returned silently.
* **A directory that lost its data file is refused**: ``lock.mdb`` (or a write lock file
  naming a writer) without ``data.mdb`` raises :class:`~llmdsdb.errors.CorruptionError`
  instead of silently starting a new, empty database; a ``data.mdb`` or ``lock.mdb`` with
  more than one hard link (one file, two lock tables) raises
  :class:`~llmdsdb.errors.InvalidPathError`. Creating a new database is serialised by the
  write lock, so two processes creating one path at the same instant both succeed.
* **One :class:`Environment` per real path per process** (a second open shares it, reference
  counted; py-lmdb refuses a second handle and LMDB's fcntl locks break with two), with fork
  detection: an environment used in a forked child raises :class:`~llmdsdb.errors.ClosedError`
  and the child may open its own. An ``os.register_at_fork`` handler drops inherited
  environments in the child without any LMDB call and without taking a lock a parent thread
  may have held.
* **The map is never resized under a live transaction of the process** (LMDB's rule for
  ``mdb_env_set_mapsize``): every transaction holds the shared side of a readers-writer
  guard, every resize (growth, ``set_mapsize(0)`` after ``MDB_MAP_RESIZED`` from another
  process, a larger ``map_size_bytes`` from a second handle) the exclusive side. Readers
  run concurrently; a pending resize holds back new transactions until it is done.
* **A structural check that cannot crash the caller**: :func:`check_structure_in_subprocess`
  walks every page of the file with LMDB in a child process (a damaged page header trips
  an assertion that aborts the process that reads it).
* **Writes are serialised across processes by a lock file** (``llmdsdb.lock``, ``flock``) taken
  with a timeout before the LMDB write transaction begins (LMDB's own writer mutex waits
  forever); a second writer gets :class:`~llmdsdb.errors.LockTimeoutError` naming the holder.
* **A full map is grown, never resumed.** ``MDB_MAP_FULL`` kills the transaction; the write is
  aborted, the map doubled, and :meth:`Environment.run_write` re-runs the whole function.
* **A generation counter** in the ``meta`` database is incremented exactly once by every write
  transaction that commits a change, so readers in other processes can tell that the data
  changed (the page cache uses it to drop stale pages).

Durability modes (``durability=``), mapped to LMDB flags:

========== =========================== ====================================================
mode       LMDB flags                  after a power loss / OS crash
========== =========================== ====================================================
``sync``   ``sync=True, metasync=True`` every committed transaction survives (default)
``metasync`` ``sync=True, metasync=False`` the last committed transaction may be lost;
                                       the database stays consistent
``nosync`` ``sync=False, metasync=False`` the last transactions may be lost and, unless the
                                       filesystem preserves write order, the file may be
                                       corrupt; only for rebuildable data
========== =========================== ====================================================

A process crash (``kill -9``) loses nothing that was committed, in every mode. ``writemap``
is never used (a full disk would crash the process with SIGBUS).

    >>> import tempfile, os
    >>> d = os.path.join(tempfile.mkdtemp(), "db")
    >>> env = Environment.open(d, map_size_bytes=1 << 20)
    >>> with env.write() as txn:
    ...     txn.put("docs", u64key(1), b"hello")
    >>> with env.read() as txn:
    ...     txn.get("docs", u64key(1)), env.generation(txn)
    (b'hello', 1)
    >>> env.close()
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import stat as stat_mod
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Literal, Self, TypeVar

import lmdb
import zstandard

from llmdsdb._validate import DURABILITIES, check_choice
from llmdsdb.errors import (
    ClosedError,
    CorruptionError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidPathError,
    InvalidTypeError,
    LockTimeoutError,
    MapFullError,
    ReadOnlyError,
    StorageError,
)

__all__ = [
    "DB_NAMES",
    "DEFAULT_MAP_SIZE_BYTES",
    "FORMAT_VERSION",
    "KIND_DOC",
    "KIND_ID",
    "KIND_IDXMETA",
    "KIND_META",
    "KIND_PAGE",
    "KIND_RAW",
    "MAX_KEY_BYTES",
    "MAX_MAP_SIZE_BYTES",
    "Durability",
    "Envelope",
    "Environment",
    "Txn",
    "check_format",
    "check_lmdb_file",
    "check_structure_in_subprocess",
    "decode_value",
    "encode_value",
    "from_u64key",
    "holders",
    "id_key",
    "is_hashed_id_key",
    "meta_key",
    "u64key",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Durability = Literal["sync", "metasync", "nosync"]

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

#: Initial map size for a new database (the map is sparse; it is grown x2 on demand).
DEFAULT_MAP_SIZE_BYTES = 1 << 30
#: The map is never grown beyond this without an explicit, larger ``map_size_bytes``.
MAX_MAP_SIZE_BYTES = 1 << 40
_DEFAULT_MAX_READERS = 512

_LOCK_FILE = "llmdsdb.lock"
_DATA_FILE = "data.mdb"
_LMDB_LOCK_FILE = "lock.mdb"


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
            out = _decompressor().decompress(body, max_output_size=length)
        except zstandard.ZstdError as exc:
            raise CorruptionError(f"{key_desc}: zstd body does not decompress: {exc}") from exc
        if len(out) != length:
            raise CorruptionError(f"{key_desc}: decompressed {len(out)} bytes, expected {length}")
        return out


#: Module-level aliases of the :class:`Envelope` methods.
encode_value = Envelope.encode_value
decode_value = Envelope.decode_value


# --------------------------------------------------------------------------------------------
# file checks done before liblmdb sees a file
# --------------------------------------------------------------------------------------------

_MDB_MAGIC = 0xBEEFC0DE
_P_META = 0x08
# MDB_page header is 16 bytes on 64-bit; MDB_meta follows (all little-endian on x86/arm).
_META = struct.Struct("<IIQQ")  # magic, version, address, mapsize   at page offset 16
_META_PSIZE_OFF = 16 + 24  # mm_dbs[FREE_DBI].md_pad holds the page size
_META_LAST_OFF = 16 + 24 + 96  # mm_last_pg, mm_txnid


def check_lmdb_file(data_path: str) -> dict[str, int]:
    """Check that ``data_path`` looks like an LMDB data file that liblmdb can map safely.

    Reads only the two meta pages: both must carry the LMDB magic ``0xBEEFC0DE`` and the meta
    page flag, and the file must be at least as long as the pages the newer meta page says are
    in use. This catches an empty file (which LMDB would silently open as a new, empty
    database), a foreign file, and a truncated one (which would crash the process with SIGBUS
    on the first read of a missing page). It is not a full verification (``python -m lmdb
    verify`` walks every page).

    Complexity: O(1) (two page reads).

    :returns: ``{"page_size", "last_page", "txnid", "file_bytes"}``.
    :raises CorruptionError: when the file is empty, foreign or truncated.
    """
    try:
        size = os.stat(data_path).st_size
        with open(data_path, "rb") as fh:
            head = fh.read(4096)
            if size == 0:
                raise CorruptionError(f"{data_path} is empty (0 bytes): the database was "
                                      f"truncated; restore from a backup")
            if len(head) < 48 or _META.unpack_from(head, 16)[0] != _MDB_MAGIC:
                raise CorruptionError(f"{data_path} is not an LMDB data file (no LMDB magic "
                                      f"0xBEEFC0DE in the first meta page)")
            psize = struct.unpack_from("<I", head, _META_PSIZE_OFF)[0]
            if psize < 512 or psize > 65536 or psize & (psize - 1):
                raise CorruptionError(f"{data_path}: implausible LMDB page size {psize}")
            if size < 2 * psize:
                raise CorruptionError(f"{data_path} is {size} bytes, shorter than its two meta "
                                      f"pages: truncated; restore from a backup")
            fh.seek(0)
            pages = fh.read(2 * psize)
    except OSError as exc:
        raise InvalidPathError(f"cannot read {data_path}: {exc.strerror or exc}") from exc
    best = None
    for i in range(2):
        off = i * psize
        flags = struct.unpack_from("<H", pages, off + 10)[0]
        magic, version, _addr, _mapsize = _META.unpack_from(pages, off + 16)
        if magic != _MDB_MAGIC or not flags & _P_META:
            raise CorruptionError(f"{data_path}: LMDB meta page {i} is damaged (magic "
                                  f"0x{magic:08x}, flags 0x{flags:04x}); restore from a backup")
        if version != 1:
            raise CorruptionError(f"{data_path}: unsupported LMDB data version {version}")
        last_pg, txnid = struct.unpack_from("<QQ", pages, off + _META_LAST_OFF)
        if best is None or txnid > best[1]:
            best = (last_pg, txnid)
    assert best is not None
    last_pg, txnid = best
    if (last_pg + 1) * psize > size:
        raise CorruptionError(f"{data_path} is {size} bytes but its meta page uses "
                              f"{(last_pg + 1) * psize}: the file is truncated; restore from a "
                              f"backup (opening it would crash the process)")
    return {"page_size": psize, "last_page": last_pg, "txnid": txnid, "file_bytes": size}


#: The structural walk run by :func:`check_structure_in_subprocess`: a fresh interpreter
#: (``-I -S``: no user site, no ``PYTHON*`` variables; py-lmdb's directory is the only
#: path added) that opens the environment read-only and reads every key and every byte of
#: every value with a cursor, in key order and then backwards, so that every branch, leaf
#: and overflow page of the snapshot is visited. It prints one JSON line; liblmdb's
#: assertions and SIGBUS can only kill this child.
_WALKER = r"""
import json, sys, zlib
sys.path.insert(0, sys.argv[3])
import lmdb
path, lock = sys.argv[1], sys.argv[2] == "1"
try:
    env = lmdb.open(path, readonly=True, lock=lock, subdir=True, create=False, max_dbs=0,
                    max_spare_txns=0, readahead=False)
    for _ in range(16):
        try:
            txn = env.begin(buffers=True)
            break
        except lmdb.MapResizedError:
            env.set_mapsize(0)
    else:
        raise lmdb.Error("the map keeps being resized")
    n = crc = 0
    cur = txn.cursor()
    ok = cur.first()
    while ok:
        crc = zlib.crc32(cur.value(), zlib.crc32(cur.key(), crc))
        n += 1
        ok = cur.next()
    back = 0
    ok = cur.last()
    while ok:
        back += 1
        ok = cur.prev()
    txn.abort()
    env.close()
    out = {"entries": n, "problems": [] if back == n else
           [f"a forward walk saw {n} entries, a backward walk {back}"]}
except lmdb.Error as exc:
    out = {"entries": None, "problems": [f"{type(exc).__name__}: {exc}"]}
print(json.dumps(out), flush=True)
"""


def check_structure_in_subprocess(path: str | os.PathLike[str], *, lock: bool = True,
                                  timeout_s: float | None = None) -> list[str]:
    """Walk every entry of the LMDB environment in directory ``path`` in a child process,
    so that a damaged file (a page header that trips an LMDB assertion, which calls
    ``abort()``; a page beyond the end of the file, SIGBUS) kills only the child. Each
    problem is one string; an empty list means that liblmdb read every page of the newest
    snapshot without complaint (it says nothing about the values: their checksums are the
    in-process checks' job).

    Complexity: O(size of the database), plus ~30 ms to start an interpreter.

    :param lock: False when the environment is opened without LMDB's lock file (a
        read-only file system).
    :param timeout_s: kill the walk after this long (default: 60 s plus 1 s per 20 MiB).
    """
    p = os.path.abspath(os.fspath(path))
    data = os.path.join(p, _DATA_FILE)
    if timeout_s is None:
        try:
            timeout_s = 60.0 + os.path.getsize(data) / (20 << 20)
        except OSError:
            timeout_s = 60.0
    lmdb_dir = os.path.dirname(os.path.dirname(os.path.abspath(lmdb.__file__)))
    cmd = [sys.executable, "-I", "-S", "-c", _WALKER, p, "1" if lock else "0", lmdb_dir]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        return [(f"{data}: the structural walk did not finish in {timeout_s:g} s (a cycle "
                 f"in the page tree?); restore from a backup")]
    except OSError as exc:
        raise StorageError(f"cannot start the structural check of {p}: "
                           f"{exc.strerror or exc}") from exc
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        said = proc.stderr.strip().splitlines()[-1:] or [""]
        return [(f"{data} is damaged: reading it through LMDB kills the process ({name}"
                 f"{': ' + said[0] if said[0] else ''}); restore from a backup")]
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else None
    except ValueError:
        out = None
    if not isinstance(out, dict) or not isinstance(out.get("problems"), list):
        said = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return [f"{data}: the structural walk failed: {said[0]}"]
    return [f"{data}: LMDB structure: {q}" for q in out["problems"]]


_FLOCK = struct.Struct("hhqqi4x")  # struct flock (Linux): type, whence, start, len, pid


def holders(path: str | os.PathLike[str]) -> list[str]:
    """Who has the database in directory ``path`` open right now, as phrases (``"this
    process"``, ``"process 1234"``, ``"a writer (process 1234)"``); empty when nobody does.

    * this process: the environment registry;
    * another process: every process that has the environment open holds a shared
      ``fcntl`` lock on byte 0 of ``lock.mdb`` for as long as it is open (LMDB takes it in
      ``mdb_env_open``), reported by ``F_GETLK`` without taking any lock;
    * a writer in the middle of a batch holds llmdsdb's write lock (``flock``).

    ``lock.mdb`` is opened only when this process does not have the environment open: a
    process loses all its ``fcntl`` locks on a file when it closes any descriptor of it.
    A reader that opened the database without LMDB's lock file (a read-only file system)
    cannot be seen. Linux ``struct flock`` layout.

    Complexity: O(1).
    """
    p = os.path.abspath(os.fspath(path))
    with _REGISTRY_LOCK:
        env = _REGISTRY.get(os.path.realpath(p))
        if env is not None and not env.closed:
            return ["this process"]
    out: list[str] = []
    try:
        fd = os.open(os.path.join(p, _LMDB_LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW
                     | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            got = fcntl.fcntl(fd, fcntl.F_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
            kind, _, _, _, pid = _FLOCK.unpack(got)
            if kind != fcntl.F_UNLCK:
                out.append(f"process {pid}")
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        fd = os.open(os.path.join(p, _LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return out
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        try:
            writer = os.pread(fd, 32, 0).decode("ascii").strip()
            out.append(f"a writer (process {int(writer)})")
        except (OSError, ValueError):
            out.append("a writer")
    finally:
        os.close(fd)
    return out


def _check_dir(path: str, *, create: bool, readonly: bool) -> bool:
    """Validate the database directory; create it 0700 when allowed. True when created."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InvalidPathError(f"cannot access {path}: {exc.strerror or exc}") from exc
    if st is None:
        if readonly or not create:
            raise InvalidPathError(f"no database at {path} (the directory does not exist)")
        try:
            os.makedirs(path, mode=0o700, exist_ok=False)
            return True
        except FileExistsError:
            # Another process created it an instant ago (two processes creating one new
            # database at once): check what is there like any existing directory.
            st = os.lstat(path)
        except OSError as exc:
            raise InvalidPathError(f"cannot create database directory {path}: "
                                   f"{exc.strerror or exc}") from exc
    if stat_mod.S_ISLNK(st.st_mode):
        raise InvalidPathError(f"{path} is a symbolic link; open the real directory "
                               f"({os.path.realpath(path)}) instead")
    if not stat_mod.S_ISDIR(st.st_mode):
        what = ("a regular file" if stat_mod.S_ISREG(st.st_mode) else
                "a FIFO" if stat_mod.S_ISFIFO(st.st_mode) else
                "a socket" if stat_mod.S_ISSOCK(st.st_mode) else "not a directory")
        raise InvalidPathError(f"{path} is {what}; a database is a directory")
    if not readonly and os.geteuid() != 0 and st.st_uid != os.geteuid():
        raise InvalidPathError(f"{path} is owned by uid {st.st_uid}, not by this user; "
                               f"open it readonly=True or copy it")
    for name in (_DATA_FILE, _LMDB_LOCK_FILE, _LOCK_FILE):
        p = os.path.join(path, name)
        try:
            fst = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InvalidPathError(f"cannot access {p}: {exc.strerror or exc}") from exc
        if not stat_mod.S_ISREG(fst.st_mode):
            raise InvalidPathError(f"{p} is not a regular file (symlink or special file); "
                                   f"refusing to open")
        if fst.st_nlink > 1 and name != _LOCK_FILE:
            # Two directory entries for one data file would give it two lock files: two
            # reader tables and two writer mutexes, so neither side's readers are seen by
            # the other's writers, which then overwrite pages still being read.
            raise InvalidPathError(f"{p} has {fst.st_nlink} hard links: the same LMDB file "
                                   f"reached through two paths has two lock tables and is "
                                   f"corrupted by concurrent use; open it through one path "
                                   f"only (remove the other links, or take a copy with "
                                   f"`llmdsdb backup`)")
    return False


def _empty_file(path: str) -> bool:
    try:
        return os.stat(path).st_size == 0
    except OSError:
        return False


def _missing_data_file(path: str) -> str | None:
    """Why ``path`` (a directory without ``data.mdb``) looks like a database whose data file
    was removed, or None for a new or empty directory."""
    if os.path.lexists(os.path.join(path, _LMDB_LOCK_FILE)):
        return f"{_LMDB_LOCK_FILE} is there"
    try:
        if os.path.getsize(os.path.join(path, _LOCK_FILE)) > 0:
            return f"{_LOCK_FILE} names a writer"
    except OSError:
        pass
    return None


def _flock_until(fd: int, deadline: float, timeout_s: float, what: Callable[[], str]) -> None:
    """Take an exclusive ``flock`` on ``fd``, polling until ``deadline`` (``time.monotonic``).

    :raises LockTimeoutError: with ``what()`` in the message, at the deadline.
    """
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeoutError(
                    f"{what()} for more than lock_timeout_s={timeout_s:g} s; wait for that "
                    f"writer or raise lock_timeout_s") from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# transactions
# --------------------------------------------------------------------------------------------


def _wrap(exc: lmdb.Error, what: str) -> StorageError:
    """Translate an lmdb exception into ours (the caller raises it ``from exc``)."""
    if isinstance(exc, lmdb.MapFullError):
        return MapFullError(f"{what}: the LMDB map is full; open with a larger "
                            f"map_size_bytes= (the map is grown automatically up to the cap)")
    if isinstance(exc, lmdb.ReadonlyError):
        return ReadOnlyError(f"{what}: the database is read-only ({exc})")
    if isinstance(exc, lmdb.TxnFullError):
        return StorageError(f"{what}: the transaction has too many dirty pages; write smaller "
                            f"batches")
    if isinstance(exc, lmdb.ReadersFullError):
        return StorageError(f"{what}: the LMDB reader table is full; close idle readers or "
                            f"processes holding read transactions")
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.PanicError,
                        lmdb.InvalidError, lmdb.VersionMismatchError)):
        return CorruptionError(f"{what}: LMDB reports a damaged file ({exc}); restore from a "
                               f"backup")  # type: ignore[return-value]
    if isinstance(exc, lmdb.DiskError):
        return StorageError(f"{what}: disk error ({exc}); check free space and the device")
    return StorageError(f"{what}: LMDB error: {exc}")


def _is_map_full(exc: BaseException) -> bool:
    return isinstance(exc, (lmdb.MapFullError, MapFullError))


class Txn:
    """One LMDB transaction over the named databases, values verified through the envelope.

    Obtained from :meth:`Environment.read` or :meth:`Environment.write` (never constructed
    directly); valid only inside that ``with`` block. Keys are bytes (str is accepted and
    encoded as UTF-8), 1..510 bytes long (the table tag takes one of LMDB's 511).

    Not thread-safe: one thread uses a transaction at a time (a write transaction only on the
    thread that began it).

    Memory: O(1) plus LMDB's dirty pages in a write transaction.
    """

    __slots__ = ("_bump", "_delta", "_dirty", "_env", "_live", "_map_full", "_new_generation",
                 "_txn", "_write", "start_generation")

    def __init__(self, env: Environment, txn: lmdb.Transaction, write: bool) -> None:
        self._env = env
        self._txn = txn
        self._write = write
        self._live = True
        self._dirty = False
        self._bump = False
        self._map_full = False
        self._new_generation: int | None = None
        self._delta: dict[str, int] = {}
        self.start_generation = env._read_generation(txn)

    # -- helpers ---------------------------------------------------------------------------

    @property
    def write(self) -> bool:
        """True for a write transaction."""
        return self._write

    @property
    def env(self) -> Environment:
        """The environment this transaction belongs to."""
        return self._env

    @property
    def dirty(self) -> bool:
        """True once this write transaction has changed something."""
        return self._dirty

    def _handle(self, db: str) -> bytes:
        """The table's tag byte (validates the name and that the txn is live)."""
        if not self._live:
            raise ClosedError("transaction used after its `with` block ended")
        try:
            return _TAG[db]
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"unknown named database {db!r}; one of "
                                       f"{', '.join(DB_NAMES)}") from None

    def _need_write(self) -> None:
        if not self._write:
            raise ReadOnlyError("cannot write in a read transaction; use env.write()")

    @staticmethod
    def _desc(db: str, key: bytes) -> str:
        if len(key) == 8 and db in ("docs", "pages"):
            return f"{db}/{'page' if db == 'pages' else 'doc'} {_U64.unpack(key)[0]}"
        try:
            return f"{db}/{key.decode('utf-8')!r}"
        except UnicodeDecodeError:
            return f"{db}/0x{key[:40].hex()}"

    # -- reads -----------------------------------------------------------------------------

    def get(self, db: str, key: bytes | str) -> bytes | None:
        """The verified value at ``key``, or None.

        Complexity: O(log n) + O(len(value)).

        :raises CorruptionError: when the stored value fails its envelope check.
        """
        h = self._handle(db)
        k = _as_key(key)
        try:
            raw = self._txn.get(h + k)
        except lmdb.Error as exc:
            raise _wrap(exc, f"get {self._desc(db, k)}") from exc
        if raw is None:
            return None
        return decode_value(raw, key_desc=self._desc(db, k), kind=_KIND_OF_DB[db])

    def raw_get(self, db: str, key: bytes | str) -> bytes | None:
        """The stored bytes at ``key`` without verification (for check and repair tools).

        Complexity: O(log n).
        """
        h = self._handle(db)
        k = _as_key(key)
        try:
            raw = self._txn.get(h + k)
        except lmdb.Error as exc:
            raise _wrap(exc, f"get {self._desc(db, k)}") from exc
        return None if raw is None else bytes(raw)

    def _iter(self, db: str, prefix: bytes, verify: bool, values: bool
              ) -> Iterator[tuple[bytes, bytes | None]]:
        h = self._handle(db)
        if isinstance(prefix, str):
            prefix = prefix.encode("utf-8")
        elif isinstance(prefix, (bytes, bytearray, memoryview)):
            prefix = bytes(prefix)
        else:  # bytes(5) would be a prefix of five NUL bytes
            raise InvalidTypeError(f"a key prefix must be bytes or str, not "
                                   f"{type(prefix).__name__}")
        kind = _KIND_OF_DB[db]
        full = h + prefix
        try:
            cur = self._txn.cursor()
            ok = cur.set_range(full)
            while ok:
                fk = bytes(cur.key())
                if not fk.startswith(full):
                    break
                k = fk[1:]
                if not values:
                    yield k, None
                else:
                    raw = cur.value()
                    if verify:
                        yield k, decode_value(raw, key_desc=self._desc(db, k), kind=kind)
                    else:
                        yield k, bytes(raw)
                ok = cur.next()
        except lmdb.Error as exc:
            raise _wrap(exc, f"iterate {db}") from exc

    def items(self, db: str, prefix: bytes | str = b"") -> Iterator[tuple[bytes, bytes]]:
        """``(key, verified value)`` pairs in key order, restricted to keys starting with
        ``prefix``. Consume the iterator inside the transaction.

        Complexity: O(log n + k) for k items yielded, plus their lengths.
        """
        return self._iter(db, prefix, True, True)  # type: ignore[return-value]

    def keys(self, db: str, prefix: bytes | str = b"") -> Iterator[bytes]:
        """Keys in order, restricted to ``prefix``.

        Complexity: O(log n + k).
        """
        return (k for k, _ in self._iter(db, prefix, False, False))

    def raw_items(self, db: str, prefix: bytes | str = b"") -> Iterator[tuple[bytes, bytes]]:
        """``(key, stored bytes)`` pairs without verification, for ``check()``.

        Complexity: O(log n + k).
        """
        return self._iter(db, prefix, False, True)  # type: ignore[return-value]

    def around(self, db: str, key: bytes | str) -> list[tuple[bytes, bytes]]:
        """The entries of ``db`` just below ``key`` and at or above it (at most two,
        verified values): where a damaged key would sit if ``key`` was damaged, for the
        document layer's key-integrity check on a miss.

        Complexity: O(log n).
        """
        h = self._handle(db)
        full = h + _as_key(key)
        kind = _KIND_OF_DB[db]
        out: list[tuple[bytes, bytes]] = []
        try:
            cur = self._txn.cursor()
            found = cur.set_range(full)
            for step in range(2):
                ok = found if step == 0 else (cur.prev() if found else cur.last())
                fk = bytes(cur.key()) if ok else b""
                if fk[:1] == h:
                    out.append((fk[1:], decode_value(cur.value(), key_desc=self._desc(db, fk[1:]),
                                                     kind=kind)))
        except lmdb.Error as exc:
            raise _wrap(exc, f"seek {db}") from exc
        return out

    def count(self, db: str) -> int:
        """Number of entries in a table (kept in meta; ``meta`` itself is scanned).

        Complexity: O(1); O(entries) for ``meta``.
        """
        self._handle(db)
        if db not in _COUNTED:
            return sum(1 for _ in self._iter(db, b"", False, False))
        try:
            raw = self._txn.get(_TAG["meta"] + b"count/" + db.encode())
        except lmdb.Error as exc:
            raise _wrap(exc, f"count {db}") from exc
        stored = 0
        if raw is not None:
            v = decode_value(raw, key_desc=f"meta/'count/{db}'", kind=KIND_META)
            if len(v) != 8:
                raise CorruptionError(f"meta/'count/{db}': malformed record")
            stored = _U64.unpack(v)[0]
        return stored + self._delta.get(db, 0)

    def generation(self) -> int:
        """The generation this transaction sees (including its own pending bump).

        Complexity: O(1).
        """
        return self._new_generation if self._new_generation is not None else \
            self.start_generation

    # -- writes ----------------------------------------------------------------------------

    def put(self, db: str, key: bytes | str, value: bytes | bytearray | memoryview, *,
            compress: bool | None = None) -> None:
        """Store ``value`` (wrapped in the envelope) at ``key``, replacing any old value.

        Complexity: O(log n) + O(len(value)).

        :raises ReadOnlyError: in a read transaction.
        :raises MapFullError: when the map is full; the transaction is then dead: leave the
            ``with`` block (``run_write`` grows the map and runs the function again).
        """
        h = self._handle(db)
        self._need_write()
        k = _as_key(key)
        v = encode_value(value, kind=_KIND_OF_DB[db], compress=compress)
        self._put_raw(h, db, k, v)

    def raw_put(self, db: str, key: bytes | str, raw: bytes) -> None:
        """Store ``raw`` as is, bypassing the envelope (tests and repair tools only).

        Complexity: O(log n).
        """
        h = self._handle(db)
        self._need_write()
        self._put_raw(h, db, _as_key(key), bytes(raw))

    def _put_raw(self, h: bytes, db: str, k: bytes, v: bytes) -> None:
        try:
            if db in _COUNTED:
                if self._txn.replace(h + k, v) is None:
                    self._delta[db] = self._delta.get(db, 0) + 1
            else:
                self._txn.put(h + k, v)
        except lmdb.Error as exc:
            if isinstance(exc, lmdb.MapFullError):
                self._map_full = True
            raise _wrap(exc, f"put {self._desc(db, k)}") from exc
        self._dirty = True

    def delete(self, db: str, key: bytes | str) -> bool:
        """Delete ``key``; True when it existed.

        Complexity: O(log n).
        """
        h = self._handle(db)
        self._need_write()
        k = _as_key(key)
        try:
            done = bool(self._txn.delete(h + k))
        except lmdb.Error as exc:
            if isinstance(exc, lmdb.MapFullError):
                self._map_full = True
            raise _wrap(exc, f"delete {self._desc(db, k)}") from exc
        if done:
            self._dirty = True
            if db in _COUNTED:
                self._delta[db] = self._delta.get(db, 0) - 1
        return done

    def bump_generation(self) -> int:
        """Make this write transaction count as a commit even if it wrote nothing else.

        The generation is incremented exactly once per committing write transaction whatever
        is called; this returns the generation the commit will have.

        Complexity: O(1).
        """
        self._need_write()
        self._bump = True
        return self.start_generation + 1

    def _finish_generation(self) -> None:
        if self._dirty or self._bump:
            for db, d in list(self._delta.items()):
                if d:
                    n = self.count(db)
                    if n < 0:
                        raise CorruptionError(f"meta/'count/{db}' would become {n}")
                    self._put_raw(_TAG["meta"], "meta", b"count/" + db.encode(),
                                  encode_value(_U64.pack(n), kind=KIND_META, compress=False))
                    self._delta[db] = 0
            new = self.start_generation + 1
            self._put_raw(_TAG["meta"], "meta", b"generation",
                          encode_value(_U64.pack(new), kind=KIND_META, compress=False))
            self._new_generation = new


# --------------------------------------------------------------------------------------------
# the environment
# --------------------------------------------------------------------------------------------

class _MapGuard:
    """The readers-writer guard of one environment's memory map.

    LMDB's rule (``mdb_env_set_mapsize``): the map may be resized only while no transaction
    of the environment is live in this process, and LMDB does not check it; py-lmdb then
    remaps, so a value buffer a reader still holds points at unmapped memory (SIGBUS) and
    its transaction is dead ("closed/deleted/dropped object", "Invalid argument"). Every
    transaction therefore holds the *shared* side for its whole life, and every
    ``set_mapsize`` (growing the map, or adopting another process's size with
    ``set_mapsize(0)``) runs under the *exclusive* side.

    Invariants: ``_live`` is the number of live transactions in this process; the
    exclusive side is entered only when it is 0 and by one thread at a time; a thread that
    holds no transaction waits while a resize is pending (so a resize is not starved), a
    thread that already holds one begins more without waiting (so it cannot deadlock
    against the pending resize it blocks); a thread that holds a transaction never enters
    the exclusive side (:meth:`exclusive` raises instead of waiting for itself).

    Thread-safe. Readers run concurrently with each other.
    """

    __slots__ = ("_cond", "_live", "_pending", "_resizing", "_tls")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._live = 0
        self._pending = 0
        self._resizing = False
        self._tls = threading.local()

    def depth(self) -> int:
        """Transactions the calling thread holds."""
        return getattr(self._tls, "depth", 0)

    def acquire_shared(self) -> None:
        depth = self.depth()
        with self._cond:
            if not depth:
                while self._pending or self._resizing:
                    self._cond.wait()
            self._live += 1
        self._tls.depth = depth + 1

    def release_shared(self) -> None:
        self._tls.depth = self.depth() - 1
        with self._cond:
            self._live -= 1
            if not self._live:
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Run the block while no transaction of the environment is live in the process.

        :raises StorageError: when the calling thread itself holds a transaction.
        """
        if self.depth():
            raise StorageError(f"{what}: this thread holds a transaction of the database; "
                               f"the map cannot be resized until it ends: end it and retry")
        with self._cond:
            self._pending += 1
            try:
                while self._resizing or self._live:
                    self._cond.wait()
            finally:
                self._pending -= 1
            self._resizing = True
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


_REGISTRY: dict[str, Environment] = {}
_REGISTRY_LOCK = threading.Lock()
_DURABILITY: dict[str, dict[str, bool]] = {
    "sync": {"sync": True, "metasync": True},
    "metasync": {"sync": True, "metasync": False},
    "nosync": {"sync": False, "metasync": False},
}


def check_format(txn: Txn) -> int:
    """Check the format version recorded in ``meta/format_version``.

    Complexity: O(1).

    :returns: the stored format version.
    :raises FormatVersionError: when it is newer than :data:`FORMAT_VERSION` (upgrade
        llmdsdb), missing or malformed (not an llmdsdb database).
    """
    raw = txn.get("meta", b"format_version")
    if raw is None:
        raise FormatVersionError(f"{txn.env.path}: no format_version record: not an llmdsdb "
                                 f"database (or one written before format versions existed)")
    if len(raw) != 8:
        raise FormatVersionError(f"{txn.env.path}: malformed format_version record")
    version = _U64.unpack(raw)[0]
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"{txn.env.path} has on-disk format version {version}, newer "
                                 f"than the {FORMAT_VERSION} this llmdsdb reads; upgrade llmdsdb "
                                 f"(pip install -U llmdsdb)")
    if version < 1:
        raise FormatVersionError(f"{txn.env.path}: invalid format version {version}")
    return version


class Environment:
    """One LMDB environment (a database directory), shared by everything in the process.

    Open with :meth:`open`. Read with ``with env.read() as txn``; write with
    ``with env.write() as txn`` or ``env.run_write(fn)``. Close with :meth:`close` (or use it
    as a context manager); a second :meth:`open` of the same path shares this object and needs
    its own :meth:`close`.

    Hooks (lists the database appends to):

    * ``before_commit``: ``fn(txn)`` called inside every write transaction just before it
      commits (the page store saves its allocator there); an exception aborts.
    * ``on_commit``: ``fn(generation)`` after a write transaction committed a change.
    * ``on_abort``: ``fn()`` after a write transaction was aborted (an exception, a full map,
      a failed commit), so in-memory state derived from it can be dropped.

    Thread-safe: any number of threads may read at once; writers are serialised by an internal
    lock plus the cross-process lock file. Not fork-safe: a forked child gets
    :class:`~llmdsdb.errors.ClosedError` and must open its own.

    Memory: the LMDB map is address space, not RAM (pages are cached by the OS); O(1) here.
    """

    def __init__(self, *, _token: object = None) -> None:
        if _token is not _OPEN_TOKEN:
            raise InvalidArgumentError("use Environment.open(path, ...)")
        self._env: lmdb.Environment
        self._refs = 1
        self._pid = os.getpid()
        self._closed = False
        self._lock_fd: int | None = None
        self._write_mutex = threading.Lock()
        self._write_owner: int | None = None
        self._guard = _MapGuard()
        self.before_commit: list[Callable[[Txn], None]] = []
        self.on_commit: list[Callable[[int], None]] = []
        self.on_abort: list[Callable[[], None]] = []
        self.path = ""
        self.readonly = False
        self.durability: str = "sync"
        self.lock_timeout_s = 30.0
        self.max_map_size_bytes = MAX_MAP_SIZE_BYTES
        self.file_info: dict[str, int] = {}

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, durability: Durability = "sync",
             readonly: bool = False, map_size_bytes: int | None = None,
             lock_timeout_s: float = 30.0, create: bool = True,
             max_readers: int = _DEFAULT_MAX_READERS,
             max_map_size_bytes: int | None = None) -> Environment:
        """Open (creating when allowed) the database directory ``path``.

        Complexity: O(1) (two page reads to check the file, one short transaction).

        :param durability: ``"sync"`` (default), ``"metasync"`` or ``"nosync"``; see the module
            docstring for what each survives.
        :param readonly: open for reading only: writes raise ReadOnlyError; nothing is created.
        :param map_size_bytes: initial map size (default 1 GiB; the map only reserves address
            space). Grown x2 when a write finds it full, up to ``max_map_size_bytes`` (default
            1 TiB, or ``map_size_bytes`` if larger).
        :param lock_timeout_s: how long a writer waits for another process's write lock.
        :param create: create the directory and database when missing.
        :param max_readers: LMDB reader slots (only the first process to open sets it).
        :raises InvalidPathError: for a symlink, a regular file or FIFO, a missing directory
            with ``create=False`` or ``readonly=True``, or one owned by another user.
        :raises CorruptionError: for an empty, foreign or truncated ``data.mdb``.
        :raises FormatVersionError: for a database written by a newer format version.
        :raises InvalidArgumentError: for a bad option, or when the path is already open in
            this process with a different ``readonly``/``durability``.
        """
        check_choice("durability", durability, DURABILITIES)
        if map_size_bytes is not None and (
                not isinstance(map_size_bytes, int) or map_size_bytes < 1 << 16):
            raise InvalidArgumentError(f"map_size_bytes must be an int >= 65536, got "
                                       f"{map_size_bytes!r}")
        if not isinstance(lock_timeout_s, (int, float)) or not lock_timeout_s >= 0:
            raise InvalidArgumentError(f"lock_timeout_s must be a number >= 0, got "
                                       f"{lock_timeout_s!r}")
        if not isinstance(max_readers, int) or max_readers < 1:
            raise InvalidArgumentError(f"max_readers must be a positive int, got {max_readers!r}")
        try:
            p = os.path.abspath(os.fsdecode(os.fspath(path)))
        except TypeError as exc:
            raise InvalidTypeError(f"path must be str or os.PathLike, not "
                                   f"{type(path).__name__}") from exc
        if "\x00" in p:
            raise InvalidPathError(f"database path {os.fspath(path)!r} contains a NUL byte; "
                                   f"no file system accepts one")
        _check_dir(p, create=create, readonly=readonly)
        real = os.path.realpath(p)
        with _REGISTRY_LOCK:
            env = _REGISTRY.get(real)
            if env is not None and env._pid != os.getpid():
                # Inherited through fork (the at-fork handler normally dropped it already).
                env._forget_after_fork()
                env = None
            if env is None or env._closed:
                env = cls(_token=_OPEN_TOKEN)
                env._open_new(p, create=create, durability=durability, readonly=readonly,
                              map_size_bytes=map_size_bytes,
                              lock_timeout_s=float(lock_timeout_s), max_readers=max_readers,
                              max_map_size_bytes=max_map_size_bytes)
                _REGISTRY[real] = env
                env._real = real
                return env
            if env.readonly != readonly or env.durability != durability:
                raise InvalidArgumentError(
                    f"{p} is already open in this process with readonly={env.readonly}, "
                    f"durability={env.durability!r}; close it first")
            env._refs += 1
        # A larger map asked for by this handle: grown like any growth, under the exclusive
        # side, and outside the registry lock (waiting for other threads' transactions must
        # not hold up opens of other databases).
        if map_size_bytes and not readonly and not env._guard.depth():
            with contextlib.suppress(StorageError), env._guard.exclusive("open"):
                if not env._closed and map_size_bytes > int(env._env.info()["map_size"]):
                    env._set_mapsize(map_size_bytes)
        return env

    def _open_new(self, p: str, *, create: bool, durability: str, readonly: bool,
                  map_size_bytes: int | None, lock_timeout_s: float, max_readers: int,
                  max_map_size_bytes: int | None) -> None:
        self.path = p
        self.readonly = readonly
        self.durability = durability
        self.lock_timeout_s = lock_timeout_s
        self.max_map_size_bytes = max(max_map_size_bytes or MAX_MAP_SIZE_BYTES,
                                      map_size_bytes or 0)
        if p in _ORPHANED_PATHS:  # inherited through fork and never closed
            _ORPHANED_PATHS.discard(p)
            _release_orphan(p)
        data = os.path.join(p, _DATA_FILE)
        if not readonly:
            try:
                self._lock_fd = os.open(os.path.join(p, _LOCK_FILE),
                                        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                                        0o600)
            except OSError as exc:
                raise InvalidPathError(f"cannot open the write lock file in {p}: "
                                       f"{exc.strerror or exc}") from exc
        try:
            creating = not os.path.lexists(data)
            if (creating or _empty_file(data)) and not readonly:
                # Creation is serialised by the write lock, held until the format records
                # are committed, so a directory with LMDB's lock file but no data file (or
                # an empty one) is never a creation in progress: it is a database whose data
                # file is gone (or truncated).
                assert self._lock_fd is not None
                _flock_until(self._lock_fd, time.monotonic() + lock_timeout_s, lock_timeout_s,
                             lambda: f"{p} is being created by {self._lock_holder()}")
                creating = not os.path.lexists(data)
            self._open_env(p, data, creating=creating, durability=durability,
                           readonly=readonly, create=create, map_size_bytes=map_size_bytes,
                           max_readers=max_readers)
        except BaseException:
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)  # also drops the creation lock
                self._lock_fd = None
            raise
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _open_env(self, p: str, data: str, *, creating: bool, durability: str,
                  readonly: bool, create: bool, map_size_bytes: int | None,
                  max_readers: int) -> None:
        if creating:
            why = _missing_data_file(p)
            if why is not None:
                raise CorruptionError(
                    f"{p} holds no {_DATA_FILE} but {why}: the database file was deleted or "
                    f"moved; restore it from a backup (llmdsdb restore), or remove the "
                    f"directory to start a new, empty database")
            if readonly or not create:
                raise InvalidPathError(f"no database at {p} (no {_DATA_FILE})")
        else:
            self.file_info = check_lmdb_file(data)
        lock = True
        if readonly:
            try:
                lock = not os.statvfs(p).f_flag & os.ST_RDONLY
            except OSError:
                lock = True
        self._lmdb_lock = lock
        try:
            self._env = lmdb.open(
                p, map_size=map_size_bytes or DEFAULT_MAP_SIZE_BYTES, subdir=True,
                readonly=readonly, create=not readonly, mode=0o600, max_dbs=0,
                max_readers=max_readers, writemap=False, map_async=False, lock=lock,
                max_spare_txns=0, readahead=True, meminit=True,
                **_DURABILITY[durability])
        except lmdb.Error as exc:
            code = getattr(exc, "code", None) or getattr(exc, "errno", None)  # py-lmdb: code
            if isinstance(exc, lmdb.ReadonlyError) or code in (errno.EACCES, errno.EROFS,
                                                               errno.EPERM):
                if readonly:
                    raise ReadOnlyError(
                        f"cannot open {p} even read-only ({exc}): a reader needs write access "
                        f"to {_LMDB_LOCK_FILE} (LMDB's reader table) unless the whole file "
                        f"system is read-only; get write access to the directory, or open a "
                        f"copy (llmdsdb backup)") from exc
                raise ReadOnlyError(f"cannot open {p} for writing ({exc}); open it with "
                                    f"readonly=True") from exc
            raise _wrap(exc, f"open {p}") from exc
        try:
            if lock:
                with contextlib.suppress(lmdb.Error):
                    self._env.reader_check()
            if not readonly:
                # LMDB shrinks a requested map to the data size when reopening a large file;
                # leave room to write without an immediate abort-grow-retry.
                info = self._env.info()
                used = (int(info["last_pgno"]) + 1) * int(self._env.stat()["psize"])
                want = min(max(map_size_bytes or DEFAULT_MAP_SIZE_BYTES, 2 * used),
                           self.max_map_size_bytes)
                if want > int(info["map_size"]):
                    self._set_mapsize(want)
            self._open_dbs()
        except BaseException:
            self._close_native()
            raise

    def _open_dbs(self) -> None:
        """Check the layout; a brand-new environment gets its format records (this is the
        only open that takes the write lock: an existing database opens without waiting for
        another process's write batch)."""
        try:
            t = self._begin(write=False)
            try:
                cur = t.cursor()
                empty = not cur.first()
                first_tag = bytes(cur.key())[:1] if not empty else b""
                has_version = t.get(_TAG["meta"] + b"format_version") is not None
            finally:
                self._end(t)
        except lmdb.Error as exc:
            raise _wrap(exc, f"read {self.path}") from exc
        if empty:
            if self.readonly:
                raise CorruptionError(f"{self.path} is not an llmdsdb database (the LMDB "
                                      f"environment is empty)")
            self._init_new()
        elif not has_version or first_tag[0] not in _TAGS:
            raise FormatVersionError(f"{self.path} holds an LMDB environment not written by "
                                     f"llmdsdb (no format_version record); refusing to use it")
        with self.read() as txn:
            check_format(txn)

    def _init_new(self) -> None:
        with self._write_lock():
            try:
                t = self._begin(write=True)
                try:
                    if t.cursor().first():
                        return  # another process initialised it while we waited
                    meta = _TAG["meta"]
                    t.put(meta + b"format_version",
                          encode_value(_U64.pack(FORMAT_VERSION), kind=KIND_META,
                                       compress=False))
                    t.put(meta + b"generation", encode_value(_U64.pack(0), kind=KIND_META,
                                                             compress=False))
                    t.commit()
                finally:
                    self._end(t)
            except lmdb.Error as exc:
                raise _wrap(exc, f"initialise {self.path}") from exc

    # -- state -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"environment {self.path} is closed")
        if os.getpid() != self._pid:
            raise ClosedError(f"environment {self.path} was opened in process {self._pid} and "
                              f"cannot be used after fork(); open the database again in this "
                              f"process")

    @property
    def closed(self) -> bool:
        """True after the last :meth:`close` (or in a forked child)."""
        return self._closed or os.getpid() != self._pid

    @property
    def map_size_bytes(self) -> int:
        """The current LMDB map size."""
        self._check_open()
        self._guard.acquire_shared()  # info() reads a meta page of the map
        try:
            return int(self._env.info()["map_size"])
        finally:
            self._guard.release_shared()

    def _read_generation(self, t: lmdb.Transaction) -> int:
        raw = t.get(_TAG["meta"] + b"generation")
        if raw is None:
            return 0
        v = decode_value(raw, key_desc="meta/'generation'", kind=KIND_META)
        if len(v) != 8:
            raise CorruptionError("meta/'generation': malformed record")
        return int(_U64.unpack(v)[0])

    def generation(self, txn: Txn) -> int:
        """The number of committed write transactions, as seen by ``txn``.

        Complexity: O(1).
        """
        return txn.generation()

    # -- transactions ----------------------------------------------------------------------

    def _begin(self, write: bool) -> lmdb.Transaction:
        """Begin an LMDB transaction holding the shared side of the map guard; the caller
        ends it with :meth:`_end` (which releases the guard)."""
        checked = False
        for _ in range(16):
            self._guard.acquire_shared()
            if self._closed:  # closed by another thread while this one waited
                self._guard.release_shared()
                raise ClosedError(f"environment {self.path} is closed")
            try:
                return self._env.begin(write=write, buffers=True)
            except lmdb.MapResizedError:
                # Another process grew the map past ours: adopt its size (under the
                # exclusive side: no transaction of this process may be live) and retry.
                self._guard.release_shared()
                self._adopt_map_size()
            except lmdb.ReadersFullError as exc:
                self._guard.release_shared()
                if checked:
                    raise _wrap(exc, f"begin on {self.path}") from exc
                checked = True
                self._env.reader_check()
            except BaseException:
                self._guard.release_shared()
                raise
        raise StorageError(f"{self.path}: could not begin a transaction: the map keeps being "
                           f"resized by another process; retry")

    def _end(self, t: lmdb.Transaction) -> None:
        """Abort ``t`` (a no-op after its commit) and release the map guard."""
        try:
            with contextlib.suppress(lmdb.Error):
                t.abort()
        finally:
            self._guard.release_shared()

    def _adopt_map_size(self) -> None:
        """``set_mapsize(0)``: take the map size another process recorded in the file."""
        what = f"adopt the map size of {self.path} grown by another process"
        with self._guard.exclusive(what):
            try:
                self._env.set_mapsize(0)
            except lmdb.Error as exc:
                raise _wrap(exc, what) from exc

    def _start(self, write: bool) -> tuple[lmdb.Transaction, Txn]:
        """Begin an LMDB transaction and wrap it; the LMDB one is aborted if wrapping fails
        (a corrupt generation record), so a dead write txn never keeps LMDB's writer lock."""
        what = f"begin {'write' if write else 'read'} on {self.path}"
        try:
            t = self._begin(write=write)
        except lmdb.Error as exc:
            raise _wrap(exc, what) from exc
        try:
            return t, Txn(self, t, write=write)
        except BaseException as exc:
            self._end(t)
            if isinstance(exc, lmdb.Error):
                raise _wrap(exc, what) from exc
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[Txn]:
        """A read transaction (a consistent snapshot). Keep it short: a long-lived reader
        stops LMDB from reusing pages and the file grows.

        Complexity: O(1) to begin.
        """
        self._check_open()
        t, txn = self._start(write=False)
        try:
            yield txn
        finally:
            txn._live = False
            self._end(t)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        if self.readonly:
            raise ReadOnlyError(f"{self.path} was opened readonly=True; writes are refused")
        me = threading.get_ident()
        if self._write_owner == me:
            raise InvalidArgumentError("a write transaction is already open in this thread; "
                                       "nested writes are not supported (use the outer txn)")
        timeout = self.lock_timeout_s
        deadline = time.monotonic() + timeout
        ok = (self._write_mutex.acquire(timeout=timeout) if timeout > 0
              else self._write_mutex.acquire(blocking=False))
        if not ok:
            raise LockTimeoutError(f"another thread held the write lock on {self.path} for "
                                   f"more than {timeout:g} s")
        try:
            fd = self._lock_fd
            assert fd is not None
            _flock_until(fd, deadline, timeout, lambda: f"the write lock on {self.path} is held "
                                                        f"by {self._lock_holder()}")
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass  # the pid is only informative
            self._write_owner = me
            try:
                yield
            finally:
                self._write_owner = None
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._write_mutex.release()

    def _lock_holder(self) -> str:
        try:
            with open(os.path.join(self.path, _LOCK_FILE), encoding="ascii") as fh:
                pid = fh.read(32).strip()
            return f"process {int(pid)}"
        except (OSError, ValueError):
            return "another process"

    @contextlib.contextmanager
    def _txn_ctx(self) -> Iterator[Txn]:
        """One write transaction; the write lock is held by the caller. Commits when the body
        returns (if anything changed), aborts on an exception; a full map becomes _MapFull."""
        t, txn = self._start(write=True)
        try:
            try:
                yield txn
                for hook in list(self.before_commit):
                    hook(txn)
                if not (txn._dirty or txn._bump):
                    return  # nothing to commit (not an abort of user work): aborted below
                txn._finish_generation()
                txn._live = False
                try:
                    t.commit()
                except lmdb.Error as exc:
                    if isinstance(exc, lmdb.MapFullError):
                        txn._map_full = True
                    raise _wrap(exc, f"commit on {self.path}") from exc
            finally:
                txn._live = False
                self._end(t)  # the abort is a no-op after the commit; releases the guard
        except BaseException as exc:
            self._run_abort_hooks()
            if txn._map_full or _is_map_full(exc):
                root: BaseException = exc
                while not isinstance(root, lmdb.Error) and root.__cause__ is not None:
                    root = root.__cause__
                raise _MapFull(str(exc)) from root
            if isinstance(exc, lmdb.Error):
                raise _wrap(exc, f"write on {self.path}") from exc
            raise
        gen = txn._new_generation
        assert gen is not None
        for hook in list(self.on_commit):
            try:
                hook(gen)
            except Exception:  # the data is committed; a failing observer must not say otherwise
                logger.exception("on_commit hook %r failed", hook)

    def _run_abort_hooks(self) -> None:
        for hook in list(self.on_abort):
            try:
                hook()
            except Exception:
                logger.exception("on_abort hook %r failed", hook)

    def _grow(self) -> int | None:
        """Double the map (up to the cap); the new size, or None at the cap. Runs under the
        exclusive side of the map guard: it waits until no transaction of this environment
        is live in the process (every handle of the process shares this environment)."""
        with self._guard.exclusive(f"grow the map of {self.path}"):
            cur = int(self._env.info()["map_size"])
            if cur >= self.max_map_size_bytes:
                return None
            new = min(cur * 2, self.max_map_size_bytes)
            self._set_mapsize(new)
        logger.info("LMDB map of %s grown from %d to %d bytes", self.path, cur, new)
        return new

    def _set_mapsize(self, new: int) -> None:
        try:
            self._env.set_mapsize(new)
        except lmdb.Error as exc:
            raise _wrap(exc, f"grow map of {self.path} to {new}") from exc

    def _full_error(self, cause: BaseException, grown: int | None) -> MapFullError:
        if grown is None:
            err = MapFullError(f"the LMDB map of {self.path} is full at "
                               f"{self.map_size_bytes} bytes, the cap; reopen with a larger "
                               f"map_size_bytes= (the batch was rolled back)")
        else:
            err = MapFullError(f"the LMDB map of {self.path} was full; it was grown to {grown} "
                               f"bytes; the batch was rolled back: run it again")
        err.grown = grown is not None  # type: ignore[attr-defined]
        return err

    @contextlib.contextmanager
    def write(self) -> Iterator[Txn]:
        """A write transaction under the cross-process write lock; commits on normal exit
        (incrementing the generation once if anything changed), aborts on an exception.

        On a full map the transaction is aborted, the map is grown x2 and
        :class:`~llmdsdb.errors.MapFullError` is raised (with ``.grown = True``): run the batch
        again, or use :meth:`run_write`, which does that for you.

        Complexity: O(1) plus the commit (an fsync with ``durability="sync"``).

        :raises ReadOnlyError: when opened ``readonly=True``.
        :raises LockTimeoutError: when another process holds the write lock longer than
            ``lock_timeout_s``.
        """
        self._check_open()
        with self._write_lock():
            try:
                with self._txn_ctx() as txn:
                    yield txn
            except _MapFull as exc:
                raise self._full_error(exc, self._grow()) from (exc.__cause__ or exc)

    def run_write(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn(txn)`` in a write transaction and commit. When the map fills up, the
        transaction is aborted (``on_abort`` hooks run), the map doubled, and ``fn`` run again
        from scratch, so ``fn`` must be re-runnable (no side effects outside ``txn`` that it
        does not redo). An exception from ``fn`` aborts and propagates.

        Complexity: O(cost of fn) per attempt; at most log2(cap / map size) attempts.

        :raises MapFullError: when the map cannot grow any more.
        :raises ReadOnlyError, LockTimeoutError: as :meth:`write`.
        """
        self._check_open()
        with self._write_lock():
            while True:
                try:
                    with self._txn_ctx() as txn:
                        result = fn(txn)
                    return result
                except _MapFull as exc:
                    grown = self._grow()
                    if grown is None:
                        raise self._full_error(exc, None) from (exc.__cause__ or exc)

    # -- maintenance -----------------------------------------------------------------------

    def copy_to(self, dest_dir: str | os.PathLike[str], *, compact: bool = True
                ) -> dict[str, object]:
        """Hot, consistent copy of the environment into ``dest_dir`` (new or empty; created
        0700), taken under one read transaction, fsynced.

        Complexity: O(size of the database).

        :returns: ``{"generation", "count", "format_version", "path", "bytes"}`` of exactly the
            copied snapshot (``count`` = entries in ``docs``).
        :raises InvalidPathError: when ``dest_dir`` is a symlink, a file or a non-empty
            directory.
        """
        self._check_open()
        dest = os.path.abspath(os.fspath(dest_dir))
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat_mod.S_ISLNK(st.st_mode) or not stat_mod.S_ISDIR(st.st_mode):
                raise InvalidPathError(f"copy target {dest} is not a plain directory")
            try:
                nonempty = bool(os.listdir(dest))
            except OSError as exc:
                raise InvalidPathError(f"cannot read {dest}: {exc.strerror or exc}") from exc
            if nonempty:
                raise InvalidPathError(f"copy target {dest} is not empty")
        else:
            try:
                os.makedirs(dest, mode=0o700)
            except OSError as exc:
                raise InvalidPathError(f"cannot create {dest}: {exc.strerror or exc}") from exc
        with self.read() as txn:
            info: dict[str, object] = {"generation": txn.generation(),
                                       "count": txn.count("docs"),
                                       "format_version": check_format(txn)}
            try:
                if compact:
                    self._env.copy(dest, compact=True, txn=txn._txn)
                else:
                    self._env.copy(dest, compact=False)
            except lmdb.Error as exc:
                raise _wrap(exc, f"copy {self.path} to {dest}") from exc
        data = os.path.join(dest, _DATA_FILE)
        try:
            if not compact:  # the copy may be newer than our snapshot: read what it holds
                info.update(_read_copy_info(dest))
            fd = os.open(data, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(dest)
            info["bytes"] = os.path.getsize(data)
        except OSError as exc:
            raise StorageError(f"copy of {self.path} to {dest}: {exc.strerror or exc}; the "
                               f"copy is incomplete") from exc
        except lmdb.Error as exc:
            raise _wrap(exc, f"read back the copy in {dest}") from exc
        info["path"] = dest
        return info

    def check_structure(self, *, timeout_s: float | None = None) -> list[str]:
        """Walk every page of the newest snapshot in a child process
        (:func:`check_structure_in_subprocess`): problems as strings, empty when LMDB reads
        the whole file without complaint. Run it before in-process checks of a suspect file:
        a damaged page header trips an assertion in liblmdb that aborts the process.

        Complexity: O(size of the database), in another process.
        """
        self._check_open()
        return check_structure_in_subprocess(self.path, lock=self._lmdb_lock,
                                             timeout_s=timeout_s)

    def stat(self) -> dict[str, object]:
        """Sizes and counts: ``bytes_on_disk`` (data.mdb), ``map_size_bytes``, ``page_size``,
        ``last_txnid``, ``readers``, ``max_readers``, ``generation``, ``entries`` per named
        database, ``durability``, ``readonly``, ``path``.

        Complexity: O(number of named databases).
        """
        self._check_open()
        with self.read() as txn:  # info() and stat() read the map: under the guard
            info = self._env.info()
            st = self._env.stat()
            entries = {name: txn.count(name) for name in DB_NAMES}
            gen = txn.generation()
        return {
            "path": self.path,
            "bytes_on_disk": os.path.getsize(os.path.join(self.path, _DATA_FILE)),
            "map_size_bytes": int(info["map_size"]),
            "page_size": int(st["psize"]),
            "last_txnid": int(info["last_txnid"]),
            "readers": int(info["num_readers"]),
            "max_readers": int(info["max_readers"]),
            "generation": gen,
            "entries": entries,
            "durability": self.durability,
            "readonly": self.readonly,
        }

    def sync(self) -> None:
        """Flush to disk (useful with ``durability="nosync"``).

        Complexity: O(dirty OS pages).
        """
        self._check_open()
        if not self.readonly:
            self._guard.acquire_shared()
            try:
                self._env.sync(True)
            except lmdb.Error as exc:
                raise _wrap(exc, f"sync {self.path}") from exc
            finally:
                self._guard.release_shared()

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release this handle; the environment closes when the last sharer closes it, after
        the transactions other threads still hold on it have ended. Idempotent.

        Complexity: O(1), plus the wait for live transactions.
        """
        with _REGISTRY_LOCK:
            if self._closed:
                return
            if os.getpid() != self._pid:
                self._forget_after_fork()
                return
            self._refs -= 1
            if self._refs > 0:
                return
            self._closed = True  # new transactions now raise ClosedError
            if _REGISTRY.get(getattr(self, "_real", "")) is self:
                del _REGISTRY[self._real]
        if self._guard.depth():  # closed inside one of its own transactions
            self._close_native()
        else:
            with self._guard.exclusive(f"close {self.path}"):
                self._close_native()

    def _close_native(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._env.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the inherited environment without any LMDB call.

        LMDB forbids using an environment after fork(), closing included: py-lmdb's close()
        waits for the write transaction of a parent thread that does not exist here (a
        hang), and aborting a parent thread's read transaction would free the *parent's*
        slot in the shared reader table. The lmdb object is kept referenced for the life of
        the process so that nothing ever finalises it; our copy of the write-lock fd is
        closed (an ``flock`` belongs to the open file description the parent still holds,
        so closing a copy releases nothing). No lock is taken: one may be held by a parent
        thread that does not exist in the child.
        """
        if self._pid == os.getpid() or getattr(self, "_forked", False):
            return
        self._forked = True
        self._closed = True
        _ORPHANED.append(self.__dict__.pop("_env", None))
        if self.path:
            _ORPHANED_PATHS.add(self.path)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("readonly" if self.readonly else "open")
        return f"<Environment {self.path!r} {state} durability={self.durability}>"

    def _check(self) -> None:
        """Invariants: open, a lock fd when writable, a positive reference count."""
        if self._closed:
            return
        assert self.readonly or self._lock_fd is not None
        assert self._refs >= 1


_OPEN_TOKEN = object()
#: lmdb environments inherited through fork(), kept alive so that nothing finalises them.
_ORPHANED: list[object] = []
#: Their paths: py-lmdb still counts them as open in this process (see _release_orphan).
_ORPHANED_PATHS: set[str] = set()


def _release_orphan(path: str) -> None:
    """Let this (forked) process open ``path`` again although an environment on the same
    files, inherited from the parent, was never closed.

    py-lmdb refuses a second open of the same files in one process ("already open in this
    process"), keeping the file identities of every open environment in a process-wide
    set that only ``Environment.close()`` empties, and that close must not run after a
    fork (see :meth:`Environment._forget_after_fork`). The inherited environment stays
    mapped and its descriptors stay open for the life of the process (closing one would
    drop this process's ``fcntl`` locks on ``lock.mdb``), so the new open is the only
    user of the files here: the stale identities are removed from that set. Only sets
    whose entries are all py-lmdb file identities are touched.
    """
    import gc

    try:
        from lmdb import _envid
    except ImportError:  # a py-lmdb without the guard: nothing to release
        return
    keys = frozenset(_envid.env_keys(path, True))
    if not keys:
        return
    for obj in gc.get_objects():
        if type(obj) is set and keys & obj and all(
                type(k) is tuple and k and k[0] in ("ino", "path") for k in obj):
            obj.difference_update(keys)


def _after_fork_in_child() -> None:
    """``os.register_at_fork`` handler: the child starts with no open environment.

    The registry lock may have been held by a parent thread at the moment of the fork; it
    is replaced, never acquired. Every inherited environment is dropped without an LMDB
    call (:meth:`Environment._forget_after_fork`); a handle the child still holds raises
    :class:`~llmdsdb.errors.ClosedError`, and ``open()`` in the child opens its own.
    """
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    for env in list(_REGISTRY.values()):
        env._forget_after_fork()
    _REGISTRY.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _MapFull(Exception):
    """Internal: the attempt died of MDB_MAP_FULL (cause chained)."""


def _read_copy_info(dest: str) -> dict[str, object]:
    env = lmdb.open(dest, readonly=True, lock=False, subdir=True)
    try:
        with env.begin(buffers=True) as t:
            out: dict[str, object] = {}
            for key, name in ((b"generation", "generation"), (b"count/docs", "count"),
                              (b"format_version", "format_version")):
                raw = t.get(_TAG["meta"] + key)
                out[name] = (_U64.unpack(decode_value(raw, key_desc=f"meta/{name}"))[0]
                             if raw is not None else 0)
        return out
    finally:
        env.close()
