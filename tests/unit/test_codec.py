"""Postings and array codecs: round trips, format details, malformed input refused."""

from __future__ import annotations

import struct
import zlib

import codec_reference as ref
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from llmdsdb.codec import (
    MAX_BLOCK_POSTINGS,
    MAX_DOC,
    decode_arrays,
    decode_postings,
    decode_postings_many,
    encode_arrays,
    encode_postings,
    encode_postings_many,
)
from llmdsdb.errors import CorruptionError, FormatVersionError, InvalidArgumentError


def _rt(docs: list[int], tfs: list[int]) -> None:
    data = encode_postings(np.array(docs), np.array(tfs))
    d, t = decode_postings(data)
    assert d.dtype == np.int32 and t.dtype == np.int32
    assert d.tolist() == docs and t.tolist() == tfs


def test_round_trips() -> None:
    _rt([0], [1])
    _rt([5], [1000])
    _rt([0, 1, 2, 3], [1, 1, 1, 1])  # all widths zero
    _rt([3, 7, 8, 1000, MAX_DOC], [1, 2, 1, 7, MAX_DOC])
    docs = np.cumsum(np.random.default_rng(0).integers(1, 100, MAX_BLOCK_POSTINGS))
    _rt(docs.tolist(), [1] * MAX_BLOCK_POSTINGS)


def test_singleton_is_small() -> None:
    # version, count, base (2 bytes), tf width, crc32
    assert len(encode_postings(np.array([200]), np.array([1]))) == 1 + 1 + 2 + 1 + 4


def test_encode_rejects_bad_blocks() -> None:
    bad = [
        ([], []),
        ([1, 1], [1, 1]),  # not strictly increasing
        ([2, 1], [1, 1]),
        ([-1], [1]),
        ([MAX_DOC + 1], [1]),
        ([1], [0]),
        ([1, 2], [1]),
    ]
    for docs, tfs in bad:
        with pytest.raises(InvalidArgumentError):
            encode_postings(np.array(docs, dtype=np.int64), np.array(tfs, dtype=np.int64))
    with pytest.raises(InvalidArgumentError):
        encode_postings(np.arange(MAX_BLOCK_POSTINGS + 1), np.ones(MAX_BLOCK_POSTINGS + 1))


def test_many_matches_one_by_one() -> None:
    rng = np.random.default_rng(1)
    docs, tfs, bounds = [], [], [0]
    for _ in range(300):
        n = int(rng.integers(1, 300))
        docs.append(np.cumsum(rng.integers(1, 1 << int(rng.integers(1, 20)), n)))
        tfs.append(rng.geometric(0.5, n))
        bounds.append(bounds[-1] + n)
    many = encode_postings_many(np.concatenate(docs), np.concatenate(tfs), np.array(bounds))
    assert many == [encode_postings(d, t) for d, t in zip(docs, tfs)]
    # the compiled encoder writes what the numpy reference writes, byte for byte
    assert many == ref.encode_postings_many(np.concatenate(docs), np.concatenate(tfs),
                                            np.array(bounds))
    assert many == [ref.encode_postings(d, t) for d, t in zip(docs, tfs)]
    assert encode_postings_many(np.zeros(0), np.zeros(0), np.array([0])) == []
    with pytest.raises(InvalidArgumentError):
        encode_postings_many(np.array([1, 2]), np.array([1, 1]), np.array([0, 1]))
    with pytest.raises(InvalidArgumentError):  # decreasing inside a block
        encode_postings_many(np.array([5, 2]), np.array([1, 1]), np.array([0, 2]))
    # decreasing across a block boundary is fine: blocks are independent
    assert len(encode_postings_many(np.array([5, 2]), np.array([1, 1]), np.array([0, 1, 2]))) == 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 300), st.integers(0, 30), st.integers(0, 30)),
                min_size=1, max_size=12), st.integers(0, 2**31 - 1), st.integers(0, 2**32 - 1))
def test_encoder_matches_reference(shapes: list, start: int, seed: int) -> None:
    # blocks of random lengths, gap widths and tf widths (up to 31 bits), at any base
    rng = np.random.default_rng(seed)
    docs, tfs, bounds = [], [], [0]
    for n, gw, tw in shapes:
        g = rng.integers(1, 2 ** min(gw, 30) + 1, n).astype(np.int64)
        d = np.minimum(start, MAX_DOC - int(g.sum())) + np.cumsum(g) - g[0]
        if d[0] < 0:
            continue
        docs.append(d)
        tfs.append(rng.integers(1, 2 ** min(tw, 31), n, endpoint=True).clip(1, MAX_DOC))
        bounds.append(bounds[-1] + n)
    if not docs:
        return
    D, T, B = np.concatenate(docs), np.concatenate(tfs), np.array(bounds)
    got = encode_postings_many(D.astype(np.int32), T.astype(np.int32), B)
    assert got == ref.encode_postings_many(D, T, B)
    for blk, d, t in zip(got, docs, tfs):
        dd, tt = decode_postings(blk)
        assert dd.tolist() == d.tolist() and tt.tolist() == t.tolist()


def test_encoder_refuses_what_the_reference_refuses() -> None:
    bad = [([3, 3], [1, 1]), ([4, 2], [1, 1]), ([1], [0]), ([-1], [1])]
    for d, t in bad:
        with pytest.raises(InvalidArgumentError):
            encode_postings_many(np.array(d, np.int32), np.array(t, np.int32), np.array([0, len(d)]))
        with pytest.raises(InvalidArgumentError):
            ref.encode_postings_many(np.array(d), np.array(t), np.array([0, len(d)]))
    with pytest.raises(InvalidArgumentError):  # bounds not covering the postings
        encode_postings_many(np.array([1, 2], np.int32), np.array([1, 1], np.int32),
                             np.array([0, 1]))
    with pytest.raises(InvalidArgumentError):  # float input
        encode_postings_many(np.array([1.0]), np.array([1]), np.array([0, 1]))


def test_every_single_byte_flip_is_refused() -> None:
    data = encode_postings(np.array([3, 9, 40, 41]), np.array([1, 5, 2, 1]))
    for i in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(CorruptionError):
                decode_postings(bytes(bad))


def test_truncation_and_garbage_refused() -> None:
    data = encode_postings(np.array([3, 9, 40]), np.array([1, 5, 2]))
    for n in range(len(data)):
        with pytest.raises(CorruptionError):
            decode_postings(data[:n])
    with pytest.raises(CorruptionError):
        decode_postings(data + b"\0")
    with pytest.raises(CorruptionError):
        decode_postings("text")  # type: ignore[arg-type]


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_declared_sizes_are_not_trusted() -> None:
    # a valid checksum over a header that declares 2**40 postings (a count needs at most
    # three varint bytes), or 2**16 + 1
    with pytest.raises(CorruptionError, match="varint"):
        decode_postings(_with_crc(bytes([1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0, 0])))
    with pytest.raises(CorruptionError, match="declares"):
        decode_postings(_with_crc(bytes([1, 0x81, 0x80, 0x04, 0, 0, 0])))
    # widths beyond 31 bits
    with pytest.raises(CorruptionError, match="width"):
        decode_postings(_with_crc(bytes([1, 2, 0, 40, 0]) + b"\0" * 5))
    # header consistent, payload length wrong
    with pytest.raises(CorruptionError, match="length"):
        decode_postings(_with_crc(bytes([1, 3, 0, 8, 0]) + b"\0" * 5))
    # doc numbers overflowing 2**31
    big = bytes([1, 2]) + bytes([0xFE, 0xFF, 0xFF, 0xFF, 0x07]) + bytes([31, 0]) + b"\xff" * 4
    with pytest.raises(CorruptionError, match="range"):
        decode_postings(_with_crc(big))
    with pytest.raises(FormatVersionError):
        decode_postings(_with_crc(bytes([9, 1, 0, 0])))


def _blocks(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.choice([1, 2, 3, 17, 256, 257]))
        gap_bits = int(rng.integers(0, 21))
        docs = int(rng.integers(0, 1000)) + np.cumsum(rng.integers(1, (1 << gap_bits) + 1, n))
        tfs = rng.integers(1, 1 << int(rng.integers(1, 31)), n)
        if rng.random() < 0.3:
            tfs[:] = 1  # tf width 0
        out.append((docs - docs[0] + int(rng.integers(0, 50)), tfs))
    return out


def test_decode_many_matches_one_by_one() -> None:
    blocks = _blocks(2, 200)
    blocks.append((np.array([MAX_DOC - 2, MAX_DOC]), np.array([MAX_DOC, 1])))
    blocks.append((np.arange(MAX_BLOCK_POSTINGS) * 3, np.ones(MAX_BLOCK_POSTINGS, np.int64)))
    raw = [encode_postings(d, t) for d, t in blocks]
    docs, tfs, counts = decode_postings_many(raw)
    assert docs.dtype == np.int32 and tfs.dtype == np.int32
    assert counts.tolist() == [len(d) for d, _ in blocks]
    assert docs.tolist() == np.concatenate([d for d, _ in blocks]).tolist()
    assert tfs.tolist() == np.concatenate([t for _, t in blocks]).tolist()
    for one in raw[:20]:  # one block at a time, and bytearray / memoryview input
        d1, t1 = decode_postings(one)
        for form in (one, bytearray(one), memoryview(one)):
            d, t, c = decode_postings_many([form])
            assert d.tolist() == d1.tolist() and t.tolist() == t1.tolist()
    d, t, c = decode_postings_many([])
    assert len(d) == len(t) == len(c) == 0


def test_decode_many_refuses_any_bad_block() -> None:
    good = [encode_postings(d, t) for d, t in _blocks(3, 6)]
    flipped = bytearray(good[2])
    flipped[len(flipped) // 2] ^= 0x10
    bad_blocks = [
        bytes(flipped),
        good[2][:-1],
        good[2][:5],
        good[2] + b"\0",
        b"",
        _with_crc(bytes([1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0, 0])),  # 2**40 postings
        _with_crc(bytes([1, 0x81, 0x80, 0x04, 0]) + b"\0" * 4),  # 65537 postings
        _with_crc(bytes([1, 2, 0, 40, 0]) + b"\0" * 5),  # width > 31
        _with_crc(bytes([1, 3, 0, 8, 0]) + b"\0" * 5),  # payload length wrong
        _with_crc(bytes([1, 2]) + bytes([0xFE, 0xFF, 0xFF, 0xFF, 0x07]) + bytes([31, 0]) + b"\xff" * 4),
        _with_crc(bytes([1, 1, 0x80, 0x80, 0x80, 0x80, 0x08, 0])),  # base >= 2**31
        _with_crc(bytes([1, 1])),  # header cut short
    ]
    for bad in bad_blocks:
        for at in (0, 3, len(good)):
            blocks = good[:at] + [bad] + good[at:]
            with pytest.raises(CorruptionError):
                decode_postings_many(blocks)
            with pytest.raises(CorruptionError):
                decode_postings(bad)
    with pytest.raises(FormatVersionError):
        decode_postings_many(good + [_with_crc(bytes([9, 1, 0, 0]))])
    with pytest.raises(CorruptionError):
        decode_postings_many(good + ["text"])  # type: ignore[list-item]


def test_arrays_round_trip() -> None:
    arrays = [
        np.arange(10, dtype=np.int64),
        np.array([1, 2], dtype=np.int32),
        np.ones(3, dtype=np.uint8),
        np.zeros(0, dtype=np.float64),
        np.array([1.5], dtype=np.float32),
    ]
    back = decode_arrays(encode_arrays(arrays))
    assert len(back) == len(arrays)
    for a, b in zip(arrays, back):
        assert a.dtype == b.dtype and (a == b).all()
    assert decode_arrays(encode_arrays([])) == []
    with pytest.raises(InvalidArgumentError):
        encode_arrays([np.zeros((2, 2))])
    with pytest.raises(InvalidArgumentError):
        encode_arrays([np.array(["x"], dtype=object)])


def test_arrays_corruption_and_bombs_refused() -> None:
    data = encode_arrays([np.arange(1000, dtype=np.int64)])
    for i in range(0, len(data), 7):
        bad = bytearray(data)
        bad[i] ^= 0x10
        with pytest.raises(CorruptionError):
            decode_arrays(bytes(bad))
    # a valid frame that inflates beyond the declared size (declares 8 bytes, holds 10 MB)
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * 10_000_000)
    with pytest.raises(CorruptionError):
        decode_arrays(_with_crc(bytes([1, 1, 2, 1]) + frame))
    # a frame that declares a huge content size
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * 1000)
    with pytest.raises(CorruptionError):
        decode_arrays(_with_crc(bytes([1, 1, 2, 1]) + frame))
    # a header declaring more than max_bytes
    with pytest.raises(CorruptionError, match="declares"):
        decode_arrays(_with_crc(bytes([1, 1, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])))
    with pytest.raises(CorruptionError):
        decode_arrays(_with_crc(bytes([1, 200])))
