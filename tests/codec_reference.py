"""The numpy postings decoders and encoders that llmdsdb.codec used before the compiled
kernels: the reference models the C decoder and encoder are tested against (byte-identical
results, same errors).

Not used at run time (one runtime path: llmdsdb._native)."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np

from llmdsdb.codec import MAX_BLOCK_POSTINGS, MAX_DOC, POSTINGS_VERSION, _read_varint, _varint
from llmdsdb.errors import CorruptionError, FormatVersionError, InvalidArgumentError

_CRC = struct.Struct("<I")
_POW2 = [(1 << np.arange(w, dtype=np.int64)) for w in range(33)]


def _unpack(buf: np.ndarray, n: int, w: int) -> np.ndarray:
    if w == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    bits = np.unpackbits(buf, count=n * w, bitorder="little").reshape(n, w)
    return bits @ _POW2[w]


def decode_postings(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Decode a block written by :func:`encode_postings`.

    :returns: (docs, tfs): int32 arrays of shape (n,), docs strictly increasing. Read-only
        views are fine to cache; callers must not modify them.
    :raises CorruptionError: on a checksum mismatch, a bad length, an out-of-range field.
    :raises FormatVersionError: on an unknown version byte.

    Complexity: O(n) (vectorised).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CorruptionError(f"postings block must be bytes, not {type(data).__name__}")
    data = bytes(data)
    size = len(data)
    if size < 8:
        raise CorruptionError(f"postings block too short ({size} bytes)")
    end = size - 4
    if zlib.crc32(memoryview(data)[:end]) != _CRC.unpack_from(data, end)[0]:
        raise CorruptionError("postings block checksum mismatch")
    if data[0] != POSTINGS_VERSION:
        raise FormatVersionError(f"postings block version {data[0]} is not supported")
    n, pos = _read_varint(data, 1, end)
    if not 1 <= n <= MAX_BLOCK_POSTINGS:
        raise CorruptionError(f"postings block declares {n} postings")
    base, pos = _read_varint(data, pos, end)
    if base > MAX_DOC:
        raise CorruptionError("postings block: first doc number out of range")
    dw = 0
    if n > 1:
        if pos >= end:
            raise CorruptionError("postings block truncated")
        dw = data[pos]
        pos += 1
    if pos >= end:
        raise CorruptionError("postings block truncated")
    tw = data[pos]
    pos += 1
    if dw > 31 or tw > 31:
        raise CorruptionError(f"postings block: bit widths {dw}/{tw} out of range")
    glen = ((n - 1) * dw + 7) // 8
    tlen = (n * tw + 7) // 8
    if pos + glen + tlen != end:
        raise CorruptionError("postings block length does not match its header")
    buf = np.frombuffer(data, dtype=np.uint8, count=glen + tlen, offset=pos)
    docs = np.empty(n, dtype=np.int64)
    docs[0] = base
    if n > 1:
        np.cumsum(_unpack(buf[:glen], n - 1, dw) + 1, out=docs[1:])
        docs[1:] += base
        if docs[-1] > MAX_DOC:
            raise CorruptionError("postings block: doc number out of range")
    tfs = _unpack(buf[glen:], n, tw) + 1
    return docs.astype(np.int32), tfs.astype(np.int32)


def _varints(buf: np.ndarray, pos: np.ndarray, maxlen: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`_read_varint` at many positions of a zero-padded byte array (at
    least ``maxlen`` bytes of padding): (values, positions after them). Raises on a varint
    longer than ``maxlen`` bytes."""
    b = buf[pos].astype(np.int64)
    val = b & 0x7F
    more = b >= 0x80
    end = pos + 1
    for i in range(1, maxlen):
        if not more.any():
            break
        b = buf[pos + i].astype(np.int64)
        val |= np.where(more, (b & 0x7F) << (7 * i), 0)
        end += more
        more &= b >= 0x80
    if more.any():
        raise CorruptionError("postings block: truncated or overlong varint")
    return val, end


#: Postings decoded per vectorised step of :func:`decode_postings_many` (keeps the
#: temporaries in cache: one pass over a 64 MB array costs ~10x one over 1 MB here).
_DECODE_CHUNK = 1 << 15


def _read_runs(
    win: np.ndarray, j: np.ndarray, cn: np.ndarray, rel: np.ndarray,
    width: np.ndarray, bit0: np.ndarray, mask: np.ndarray,
) -> np.ndarray:
    """The bit-packed runs of consecutive blocks as one int64 array: block b holds ``cn[b]``
    values of ``width[b]`` bits, value 0 at bit ``bit0[b]`` of ``win`` (the step's bytes as
    little-endian int64 windows, one per byte offset); ``j`` = arange over the step's values,
    ``rel`` = each block's first index in it."""
    # value i of a block of width w sits at bit (bit0 - rel * w) + i * w
    w = np.repeat(width, cn)
    bit = j * w
    bit += np.repeat(bit0 - rel * width, cn)
    v = win[bit >> 3]
    v >>= bit & 7
    v &= np.repeat(mask, cn)
    return v


def decode_postings_many(blocks: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode many blocks written by :func:`encode_postings` at once, with the same checks
    as :func:`decode_postings` on every block.

    Vectorised across blocks: only the crc32 of each block is a Python step; headers are
    parsed with a fixed number of numpy operations for the whole batch and payloads in
    steps of ~32k postings (each value: one unaligned 64-bit window read, a shift and a
    mask). The per-block decoder costs tens of microseconds per block in numpy call
    overhead, which made the first query on a term ~10x slower than the next at 1M docs.

    :returns: (docs, tfs, counts): docs and tfs int32, the blocks' postings concatenated in
        order; counts (int64) the number of postings of each block.
    :raises CorruptionError: as :func:`decode_postings`, for any block.
    :raises FormatVersionError: on an unknown version byte in any block.

    Complexity: O(total postings + total bytes) (vectorised) + O(blocks) crc32 calls.
    """
    nb = len(blocks)
    if nb == 0:
        z = np.zeros(0, dtype=np.int32)
        return z, z.copy(), np.zeros(0, dtype=np.int64)
    try:
        data = b"".join(blocks) + bytes(32)
        lens = np.fromiter(map(len, blocks), dtype=np.int64, count=nb)
    except TypeError:
        bad = next(b for b in blocks if not isinstance(b, (bytes, bytearray, memoryview)))
        raise CorruptionError(f"postings block must be bytes, not {type(bad).__name__}") from None
    if lens.min() < 8:
        raise CorruptionError(f"postings block too short ({int(lens.min())} bytes)")
    buf = np.frombuffer(data, dtype=np.uint8)
    starts = np.cumsum(lens) - lens
    ends = starts + lens - 4  # where each crc begins
    mv = memoryview(data)
    crc32 = zlib.crc32
    got = np.fromiter(
        map(crc32, map(mv.__getitem__, map(slice, starts.tolist(), ends.tolist()))),
        dtype=np.int64,
        count=nb,
    )
    want = (
        buf[ends].astype(np.int64)
        | buf[ends + 1].astype(np.int64) << 8
        | buf[ends + 2].astype(np.int64) << 16
        | buf[ends + 3].astype(np.int64) << 24
    )
    if (got != want).any():
        raise CorruptionError("postings block checksum mismatch")
    ver = buf[starts]
    if (ver != POSTINGS_VERSION).any():
        bad = int(ver[ver != POSTINGS_VERSION][0])
        raise FormatVersionError(f"postings block version {bad} is not supported")
    # n <= 2**16 needs 3 varint bytes, a doc number < 2**31 five: longer is corrupt
    n, pos = _varints(buf, starts + 1, 3)
    if n.min() < 1 or n.max() > MAX_BLOCK_POSTINGS:
        raise CorruptionError("postings block declares a bad number of postings")
    base, pos = _varints(buf, pos, 5)
    if base.max() > MAX_DOC:
        raise CorruptionError("postings block: first doc number out of range")
    multi = (n > 1).astype(np.int64)
    if (pos + multi >= ends).any():
        raise CorruptionError("postings block truncated")
    dw = np.where(multi > 0, buf[pos], 0).astype(np.int64)
    pos = pos + multi
    tw = buf[pos].astype(np.int64)
    pos += 1
    if dw.max() > 31 or tw.max() > 31:
        raise CorruptionError("postings block: bit widths out of range")
    glen = ((n - 1) * dw + 7) // 8
    tlen = (n * tw + 7) // 8
    if (pos + glen + tlen != ends).any():
        raise CorruptionError("postings block length does not match its header")
    # Bit position of value 0 of each run. The gap run is read as n values starting one
    # width before the payload (value 0 is junk from the header, replaced by the base), so
    # gaps and tfs line up with the docs.
    gbit = pos * 8 - dw
    tbit = (pos + glen) * 8
    total = int(n.sum())
    first = np.cumsum(n) - n
    docs = np.empty(total, dtype=np.int32)
    tfs = np.empty(total, dtype=np.int32)
    cum_end = first + n
    # per block: bit of value 0 relative to its decode step's first block start, and mask
    gmask = (1 << dw) - 1
    tmask = (1 << tw) - 1
    ar = np.arange(min(total, _DECODE_CHUNK + MAX_BLOCK_POSTINGS), dtype=np.int64)
    b0 = 0
    while b0 < nb:
        b1 = int(np.searchsorted(cum_end, first[b0] + _DECODE_CHUNK, "right"))
        b1 = max(b1, b0 + 1)
        cn = n[b0:b1]
        lo = int(first[b0])
        hi = int(cum_end[b1 - 1])
        # win[j] = the little-endian int64 at byte byte0 + j: eight strided copies, then
        # every value is one aligned gather (an unaligned strided view gathers ~5x slower)
        byte0 = int(starts[b0])
        nw = (int(ends[b1 - 1]) + 8 - byte0 + 7) // 8
        win = np.empty(nw * 8, dtype=np.int64)
        w8 = win.reshape(nw, 8)
        for k in range(8):
            w8[:, k] = np.frombuffer(data, dtype="<i8", count=nw, offset=byte0 + k)
        rel = first[b0:b1] - lo
        j = ar[: hi - lo]
        g = _read_runs(win, j, cn, rel, dw[b0:b1], gbit[b0:b1] - byte0 * 8, gmask[b0:b1])
        g += 1
        tfs[lo:hi] = _read_runs(win, j, cn, rel, tw[b0:b1], tbit[b0:b1] - byte0 * 8, tmask[b0:b1])
        # docs: one cumsum per step, each block's first step = its base minus the previous
        # block's last doc
        g[rel] = 0
        last = base[b0:b1] + np.add.reduceat(g, rel)
        if last.max() > MAX_DOC:
            raise CorruptionError("postings block: doc number out of range")
        g[rel[1:]] = base[b0 + 1 : b1] - last[:-1]
        g[0] = base[b0]
        docs[lo:hi] = np.cumsum(g)
        b0 = b1
    tfs += 1
    return docs, tfs, n


# --- encoders ------------------------------------------------------------------------------


def _pack(vals: np.ndarray, w: int) -> bytes:
    if w == 0 or len(vals) == 0:
        return b""
    bits = (vals[:, None] >> np.arange(w, dtype=np.int64)) & 1
    return np.packbits(bits.astype(np.uint8).ravel(), bitorder="little").tobytes()


def encode_postings(docs: np.ndarray, tfs: np.ndarray) -> bytes:
    """Encode one postings block.

    :param docs: int array of shape (n,): strictly increasing doc numbers in [0, 2**31).
    :param tfs: int array of shape (n,): term frequencies in [1, 2**31).
    :raises InvalidArgumentError: when the arrays break those rules or n is 0 or too big.

    Complexity: O(n) (vectorised).
    """
    d = np.asarray(docs, dtype=np.int64)
    t = np.asarray(tfs, dtype=np.int64)
    n = len(d)
    if d.ndim != 1 or t.shape != d.shape:
        raise InvalidArgumentError("docs and tfs must be 1-D arrays of the same length")
    if not 1 <= n <= MAX_BLOCK_POSTINGS:
        raise InvalidArgumentError(f"a block holds 1..{MAX_BLOCK_POSTINGS} postings, got {n}")
    if d[0] < 0 or d[-1] > MAX_DOC or t.min() < 1 or t.max() > MAX_DOC:
        raise InvalidArgumentError("doc numbers and tfs must lie in [0, 2**31) and [1, 2**31)")
    gaps = np.diff(d) - 1
    if n > 1 and gaps.min() < 0:
        raise InvalidArgumentError("doc numbers must be strictly increasing")
    tm1 = t - 1
    tw = int(tm1.max()).bit_length()
    head = bytearray((POSTINGS_VERSION,))
    head += _varint(n)
    head += _varint(int(d[0]))
    if n > 1:
        dw = int(gaps.max()).bit_length()
        head.append(dw)
        head.append(tw)
        head += _pack(gaps, dw)
    else:
        head.append(tw)
    head += _pack(tm1, tw)
    head += _CRC.pack(zlib.crc32(head))
    return bytes(head)


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Vectorised int.bit_length for 0 <= x < 2**53."""
    return np.frexp(x.astype(np.float64))[1].astype(np.int64)


def _scatter_vals(nwords: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Little-endian bit stream as uint32 words: each (vals, first_bit) pair writes vals[i]
    (< 2**31, fields disjoint) at bit first_bit[i]. Disjoint fields add up to their OR, and
    sums of 32-bit words are exact in float64, so one bincount per half-word does the
    scatter in O(values) instead of O(bits)."""
    words = np.zeros(nwords, dtype=np.float64)
    for vals, first_bit in parts:
        if len(vals) == 0:
            continue
        w = first_bit >> 5
        sh = first_bit & 31
        lo = (vals << sh) & 0xFFFFFFFF
        hi = vals >> (32 - sh)  # sh == 0 -> vals >> 32 == 0
        words += np.bincount(w, weights=lo, minlength=nwords)[:nwords]
        words += np.bincount(w + 1, weights=hi, minlength=nwords + 1)[:nwords]
    return words.astype("<u4")


def encode_postings_many(
    docs: np.ndarray, tfs: np.ndarray, bounds: np.ndarray
) -> list[bytes]:
    """Encode many blocks at once; block i is ``docs[bounds[i]:bounds[i+1]]`` (same format
    as :func:`encode_postings`, byte for byte).

    Vectorised across blocks: only the few header bytes and the crc are computed per block
    in Python, which makes a bulk build ~10x faster than encoding block by block.

    :param bounds: int array of shape (nblocks + 1,), increasing, from 0 to len(docs).
    :raises InvalidArgumentError: as :func:`encode_postings`, for any block.

    Complexity: O(total postings + total bits) (vectorised) + O(nblocks) Python steps.
    """
    d = np.asarray(docs, dtype=np.int64)
    t = np.asarray(tfs, dtype=np.int64)
    b = np.asarray(bounds, dtype=np.int64)
    if d.ndim != 1 or t.shape != d.shape or b.ndim != 1 or len(b) < 1:
        raise InvalidArgumentError("docs, tfs and bounds must be 1-D; docs and tfs alike")
    nb = len(b) - 1
    if nb == 0:
        return []
    starts, ends = b[:-1], b[1:]
    n = ends - starts
    if b[0] != 0 or b[-1] != len(d) or n.min() < 1 or n.max() > MAX_BLOCK_POSTINGS:
        raise InvalidArgumentError(
            f"bounds must run from 0 to len(docs) with 1..{MAX_BLOCK_POSTINGS} per block"
        )
    if d.min() < 0 or d.max() > MAX_DOC or t.min() < 1 or t.max() > MAX_DOC:
        raise InvalidArgumentError("doc numbers and tfs must lie in [0, 2**31) and [1, 2**31)")
    g = np.empty(len(d), dtype=np.int64)
    g[0] = 0
    np.subtract(d[1:], d[:-1], out=g[1:])
    g -= 1
    g[starts] = 0
    if g.min() < 0:
        raise InvalidArgumentError("doc numbers must be strictly increasing within a block")
    tm1 = t - 1
    dw = _bit_length(np.maximum.reduceat(g, starts))
    dw[n == 1] = 0
    tw = _bit_length(np.maximum.reduceat(tm1, starts))
    gbytes = ((n - 1) * dw + 7) // 8
    tbytes = (n * tw + 7) // 8
    plen = gbytes + tbytes
    poff = np.cumsum(plen) - plen
    total_bytes = int(plen.sum())
    blk = np.repeat(np.arange(nb, dtype=np.int64), n)
    rank = np.arange(len(d), dtype=np.int64) - np.repeat(starts, n)
    nonstart = rank > 0
    gb = blk[nonstart]
    payload = _scatter_vals(
        (total_bytes + 3) // 4 + 1,
        [
            (g[nonstart], poff[gb] * 8 + (rank[nonstart] - 1) * dw[gb]),
            (tm1, (poff[blk] + gbytes[blk]) * 8 + rank * tw[blk]),
        ],
    ).tobytes()
    out = []
    crc32 = zlib.crc32
    pack = _CRC.pack
    for i, (cnt, first, w1, w2, off, ln) in enumerate(
        zip(n.tolist(), d[starts].tolist(), dw.tolist(), tw.tolist(), poff.tolist(), plen.tolist())
    ):
        head = bytearray((POSTINGS_VERSION,))
        head += _varint(cnt)
        head += _varint(first)
        if cnt > 1:
            head.append(w1)
        head.append(w2)
        head += payload[off : off + ln]
        head += pack(crc32(head))
        out.append(bytes(head))
    return out
