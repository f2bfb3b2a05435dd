"""Byte encodings of index pages: postings blocks and checksummed compressed arrays.

**Postings block** (:func:`encode_postings` / :func:`decode_postings`): a sorted run of
distinct internal doc numbers (``0 <= doc < 2**31``) with their term frequencies
(``1 <= tf < 2**31``). Layout, version 1::

    u8      format version (1)
    varint  n, the number of postings (1 <= n <= MAX_BLOCK_POSTINGS)
    varint  base, the first doc number
    u8      dw, bit width of (gap - 1)   [only when n > 1]
    u8      tw, bit width of (tf - 1)
    bytes   (n - 1) values of (gap - 1), dw bits each, little-endian bit order, byte padded
    bytes   n values of (tf - 1), tw bits each, byte padded
    u32 LE  zlib.crc32 of everything above

That is frame-of-reference bit packing of the d-gaps and of the term frequencies. It was
chosen by measurement on SciFact (513,268 postings, 26,588 terms; see
tools/bench/results/bench_bm25.md for the current figures): bit packing gave 1.90 bytes per
(doc, tf) pair at any block size from 128 to 1024, byte-plane shuffle + zstd (level 3) gave
2.11 / 2.01 / 1.95 / 1.93 at 128 / 256 / 512 / 1024 -- zstd's frame costs more than it saves
on the many short lists (half of all terms occur in one document). Decoding runs in the
compiled kernels (llmdsdb/_native/postings.c: width-specialised unpacking and a prefix sum,
~2 ns a posting here against ~23 ns for the numpy decoder it replaced, which the tests keep
as the reference model); encoding stays vectorised numpy (the build's bulk path).

**Array record** (:func:`encode_arrays` / :func:`decode_arrays`): a few named-by-position
numpy arrays (doc lengths, doc id maps, forward lists), zstd-compressed, with a crc32.

Decoders trust nothing inside the data: every declared count is capped (by
:data:`MAX_BLOCK_POSTINGS`, or the caller's ``max_bytes``) and checked against the actual
length before anything is allocated, and zstd output is bounded by the declared, capped size
(never by the size the frame claims). Any malformed input raises
:class:`~llmdsdb.errors.CorruptionError`.

>>> import numpy as np
>>> data = encode_postings(np.array([3, 7, 8]), np.array([1, 2, 1]))
>>> docs, tfs = decode_postings(data)
>>> docs.tolist(), tfs.tolist()
([3, 7, 8], [1, 2, 1])
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Sequence

import numpy as np
import zstandard

from llmdsdb._native import _core
from llmdsdb.errors import CorruptionError, FormatVersionError, InvalidArgumentError

__all__ = [
    "MAX_BLOCK_POSTINGS",
    "MAX_DOC",
    "decode_arrays",
    "decode_postings",
    "decode_postings_many",
    "encode_arrays",
    "encode_postings",
    "encode_postings_many",
    "join_postings",
]

POSTINGS_VERSION = 1
ARRAYS_VERSION = 1
#: Largest number of postings one block may hold (the decoder's allocation cap).
MAX_BLOCK_POSTINGS = 1 << 16
#: Doc numbers and term frequencies must be below this.
MAX_DOC = (1 << 31) - 1

_CRC = struct.Struct("<I")
_DTYPES = {
    1: np.dtype("<i4"),
    2: np.dtype("<i8"),
    3: np.dtype("<f8"),
    4: np.dtype("u1"),
    5: np.dtype("<u4"),
    6: np.dtype("<f4"),
}
_DTYPE_CODE = {v: k for k, v in _DTYPES.items()}
# zstd contexts are not thread-safe (two threads in one decompressor corrupt each other's
# output: false "bad zstd frame" errors under concurrent reads): one pair per thread.
_ZTLS = threading.local()


def _zc() -> zstandard.ZstdCompressor:
    c = getattr(_ZTLS, "c", None)
    if c is None:
        c = _ZTLS.c = zstandard.ZstdCompressor(level=3, write_content_size=False,
                                               write_checksum=False)
    return c


def _zd() -> zstandard.ZstdDecompressor:
    d = getattr(_ZTLS, "d", None)
    if d is None:
        d = _ZTLS.d = zstandard.ZstdDecompressor(max_window_size=1 << 27)
    return d


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    v = shift = 0
    for i in range(pos, min(end, pos + 10)):
        b = data[i]
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i + 1
        shift += 7
    raise CorruptionError("postings block: truncated or overlong varint")


def _ints32(x: object, what: str, lo: int) -> np.ndarray:
    """``x`` as a contiguous int32 array, its values checked to lie in [lo, MAX_DOC]."""
    a = np.asarray(x)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise InvalidArgumentError(f"{what} must be a 1-D integer array")
    if a.dtype != np.int32:
        if a.size and (int(a.min()) < lo or int(a.max()) > MAX_DOC):
            raise InvalidArgumentError("doc numbers and tfs must lie in [0, 2**31) and "
                                       "[1, 2**31)")
        a = a.astype(np.int32)
    return np.ascontiguousarray(a)


def encode_postings(docs: np.ndarray, tfs: np.ndarray) -> bytes:
    """Encode one postings block (the compiled kernel, as :func:`encode_postings_many`).

    :param docs: int array of shape (n,): strictly increasing doc numbers in [0, 2**31).
    :param tfs: int array of shape (n,): term frequencies in [1, 2**31).
    :raises InvalidArgumentError: when the arrays break those rules or n is 0 or too big.

    Complexity: O(n).
    """
    d = _ints32(docs, "docs", 0)
    t = _ints32(tfs, "tfs", 1)
    if t.shape != d.shape:
        raise InvalidArgumentError("docs and tfs must be 1-D arrays of the same length")
    if not 1 <= len(d) <= MAX_BLOCK_POSTINGS:
        raise InvalidArgumentError(
            f"a block holds 1..{MAX_BLOCK_POSTINGS} postings, got {len(d)}")
    return _core.postings_encode_many(d, t, np.array([0, len(d)], np.int64))[0]  # type: ignore[no-any-return]


def encode_postings_many(
    docs: np.ndarray, tfs: np.ndarray, bounds: np.ndarray
) -> list[bytes]:
    """Encode many blocks at once; block i is ``docs[bounds[i]:bounds[i+1]]`` (same format
    as :func:`encode_postings`, byte for byte). One compiled-kernel call
    (llmdsdb/_native/postings_write.c, GIL released); the numpy encoder it replaced is the
    reference model of the tests (tests/codec_reference.py).

    :param bounds: int array of shape (nblocks + 1,), increasing, from 0 to len(docs).
    :raises InvalidArgumentError: as :func:`encode_postings`, for any block.

    Complexity: O(total postings).
    """
    d = _ints32(docs, "docs", 0)
    t = _ints32(tfs, "tfs", 1)
    b = np.ascontiguousarray(np.asarray(bounds), dtype=np.int64)
    if t.shape != d.shape or b.ndim != 1 or len(b) < 1:
        raise InvalidArgumentError("docs, tfs and bounds must be 1-D; docs and tfs alike")
    return _core.postings_encode_many(d, t, b)  # type: ignore[no-any-return]


def _block_bytes(data: object) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CorruptionError(f"postings block must be bytes, not {type(data).__name__}")


def decode_postings(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a block written by :func:`encode_postings` (compiled kernel, ~2 ns a posting).

    :returns: (docs, tfs): int32 arrays of shape (n,), docs strictly increasing. Read-only
        views are fine to cache; callers must not modify them.
    :raises CorruptionError: on a checksum mismatch, a bad length, an out-of-range field.
    :raises FormatVersionError: on an unknown version byte.

    Complexity: O(n).
    """
    _block_bytes(data)
    docs, tfs = _core.postings_decode(data)
    return np.frombuffer(docs, dtype=np.int32), np.frombuffer(tfs, dtype=np.int32)


def decode_postings_many(blocks: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode many blocks written by :func:`encode_postings` at once, with the same checks
    as :func:`decode_postings` on every block (one kernel call, GIL released).

    :returns: (docs, tfs, counts): docs and tfs int32, the blocks' postings concatenated in
        order; counts (int64) the number of postings of each block.
    :raises CorruptionError: as :func:`decode_postings`, for any block.
    :raises FormatVersionError: on an unknown version byte in any block.

    Complexity: O(total postings + total bytes).
    """
    docs, tfs, counts = _core.postings_decode_many(blocks)
    return (np.frombuffer(docs, dtype=np.int32), np.frombuffer(tfs, dtype=np.int32),
            np.frombuffer(counts, dtype=np.int64))


def join_postings(blocks: Sequence[bytes]) -> tuple[bytes, np.ndarray]:
    """The blocks back to back in one buffer, each checked as :func:`decode_postings` checks
    it (checksum, header, lengths), without decoding them: the form the BM25 kernels read a
    term's postings in (they decode only the blocks a query needs).

    :returns: (buf, offs): block i is ``buf[offs[i]:offs[i + 1]]``; offs int64 of shape
        (len(blocks) + 1,).
    :raises CorruptionError: as :func:`decode_postings`, for any block.

    Complexity: O(total bytes) (~0.2 ns a byte: a crc32 and a copy).
    """
    buf, offs = _core.postings_join(blocks)
    return buf, np.frombuffer(offs, dtype=np.int64)


def encode_arrays(arrays: Sequence[np.ndarray]) -> bytes:
    """Encode a few 1-D arrays (int32/int64/uint32/uint8/float32/float64) as one record:
    u8 version, varint count, per array (u8 dtype code, varint length), then the zstd
    frame of the concatenated raw bytes, then a u32 crc32 of everything before.

    Complexity: O(total bytes).
    """
    head = bytearray((ARRAYS_VERSION,))
    head += _varint(len(arrays))
    raw = []
    for a in arrays:
        a = np.ascontiguousarray(a)
        code = _DTYPE_CODE.get(a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype)
        if a.ndim != 1 or code is None:
            raise InvalidArgumentError(f"cannot encode array of dtype {a.dtype}, ndim {a.ndim}")
        head.append(code)
        head += _varint(len(a))
        raw.append(a.astype(_DTYPES[code], copy=False).tobytes())
    head += _zc().compress(b"".join(raw))
    head += _CRC.pack(zlib.crc32(head))
    return bytes(head)


def decode_arrays(data: bytes, max_bytes: int = 1 << 28) -> list[np.ndarray]:
    """Decode a record written by :func:`encode_arrays`; arrays are read-only.

    :param max_bytes: refuse records that declare more raw bytes than this.
    :raises CorruptionError: on a checksum mismatch, a bad header, a size mismatch.

    Complexity: O(total bytes).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CorruptionError(f"array record must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < 6:
        raise CorruptionError("array record too short")
    end = len(data) - 4
    if zlib.crc32(memoryview(data)[:end]) != _CRC.unpack_from(data, end)[0]:
        raise CorruptionError("array record checksum mismatch")
    if data[0] != ARRAYS_VERSION:
        raise FormatVersionError(f"array record version {data[0]} is not supported")
    count, pos = _read_varint(data, 1, end)
    if count > 64:
        raise CorruptionError(f"array record declares {count} arrays")
    specs = []
    total = 0
    for _ in range(count):
        if pos >= end:
            raise CorruptionError("array record truncated")
        dt = _DTYPES.get(data[pos])
        if dt is None:
            raise CorruptionError(f"array record: unknown dtype code {data[pos]}")
        length, pos = _read_varint(data, pos + 1, end)
        total += length * dt.itemsize
        if total > max_bytes:
            raise CorruptionError(f"array record declares more than {max_bytes} bytes")
        specs.append((dt, length))
    frame = data[pos:end]
    try:
        # python-zstandard allocates what a frame *declares*, ignoring max_output_size: we
        # write frames without a content size, so refuse any frame that declares one other
        # than ours, then decompress with the output capped at the size we declared.
        declared = zstandard.frame_content_size(frame)
        if declared not in (-1, total):
            raise CorruptionError(f"array record: zstd frame declares {declared} bytes")
        raw = _zd().decompress(frame, max_output_size=max(total, 1), allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise CorruptionError(f"array record: bad zstd frame ({exc})") from None
    if len(raw) != total:
        raise CorruptionError(f"array record holds {len(raw)} bytes, header says {total}")
    out = []
    off = 0
    for dt, length in specs:
        a = np.frombuffer(raw, dtype=dt, count=length, offset=off)
        off += length * dt.itemsize
        out.append(a)
    return out
