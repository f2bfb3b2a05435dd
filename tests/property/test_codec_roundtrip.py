"""Postings codec vs identity, and random damage never escapes as anything but
CorruptionError."""

from __future__ import annotations

import struct
import zlib

import codec_reference as ref
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from llmdsdb.codec import (
    decode_postings,
    decode_postings_many,
    encode_postings,
    encode_postings_many,
    join_postings,
)
from llmdsdb.errors import CorruptionError

block = st.lists(
    st.tuples(st.integers(1, 1 << 20), st.integers(1, 1 << 12)), min_size=1, max_size=300
).flatmap(
    lambda gaps: st.integers(0, 1 << 10).map(
        lambda base: (
            (base + np.cumsum([g for g, _ in gaps]) - gaps[0][0]).tolist(),
            [t for _, t in gaps],
        )
    )
)


@given(block)
def test_round_trip_is_identity(b: tuple[list[int], list[int]]) -> None:
    docs, tfs = b
    d, t = decode_postings(encode_postings(np.array(docs), np.array(tfs)))
    assert d.tolist() == docs and t.tolist() == tfs


@given(st.lists(block, min_size=1, max_size=8))
def test_many_equals_single(blocks: list[tuple[list[int], list[int]]]) -> None:
    bounds = np.cumsum([0] + [len(d) for d, _ in blocks])
    many = encode_postings_many(
        np.concatenate([d for d, _ in blocks]), np.concatenate([t for _, t in blocks]), bounds
    )
    assert many == [encode_postings(np.array(d), np.array(t)) for d, t in blocks]


@given(block, st.data())
def test_damage_is_refused(b: tuple[list[int], list[int]], data: st.DataObject) -> None:
    raw = bytearray(encode_postings(np.array(b[0]), np.array(b[1])))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for bad in (bytes(raw), bytes(raw[:cut])):
        try:
            decode_postings(bad)
        except CorruptionError:
            pass
        else:  # only possible if the damage left the block valid: never for one flipped byte
            raise AssertionError("damaged block decoded")


@given(st.lists(block, min_size=1, max_size=8))
def test_decode_many_equals_single(blocks: list[tuple[list[int], list[int]]]) -> None:
    raw = [encode_postings(np.array(d), np.array(t)) for d, t in blocks]
    docs, tfs, counts = decode_postings_many(raw)
    assert counts.tolist() == [len(d) for d, _ in blocks]
    assert docs.tolist() == [x for d, _ in blocks for x in d]
    assert tfs.tolist() == [x for _, t in blocks for x in t]


@given(st.lists(block, min_size=1, max_size=4), st.data())
def test_decode_many_refuses_damage(
    blocks: list[tuple[list[int], list[int]]], data: st.DataObject
) -> None:
    raw = [bytearray(encode_postings(np.array(d), np.array(t))) for d, t in blocks]
    j = data.draw(st.integers(0, len(raw) - 1))
    i = data.draw(st.integers(0, len(raw[j]) - 1))
    raw[j][i] ^= data.draw(st.integers(1, 255))
    try:
        decode_postings_many([bytes(r) for r in raw])
    except CorruptionError:
        pass
    else:
        raise AssertionError("damaged block decoded")


# --- the compiled decoder against the numpy decoder it replaced (tests/codec_reference.py) ---


def _fix_crc(body: bytes) -> bytes:
    """``body`` (a block without its crc) with a valid crc: damage reaches the parser."""
    return body + struct.pack("<I", zlib.crc32(body))


def _same_outcome(block: bytes) -> None:
    """The kernel and the reference decode ``block`` alike, or both refuse it."""
    try:
        want = ref.decode_postings_many([block])
    except CorruptionError:
        want = None
    try:
        got = decode_postings_many([block])
    except CorruptionError:
        got = None
    if want is None or got is None:
        assert want is None and got is None, (block, want, got)
        return
    for w, g in zip(want, got):
        assert w.tolist() == g.tolist()
    d, t = decode_postings(block)
    assert d.tolist() == want[0].tolist() and t.tolist() == want[1].tolist()


@given(block)
def test_kernel_equals_reference(b: tuple[list[int], list[int]]) -> None:
    raw = encode_postings(np.array(b[0]), np.array(b[1]))
    _same_outcome(raw)
    buf, offs = join_postings([raw, raw])
    assert buf == raw + raw and offs.tolist() == [0, len(raw), 2 * len(raw)]


@given(block, st.data())
def test_kernel_equals_reference_on_damage_behind_a_valid_crc(
    b: tuple[list[int], list[int]], data: st.DataObject
) -> None:
    body = bytearray(encode_postings(np.array(b[0]), np.array(b[1]))[:-4])
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    _same_outcome(_fix_crc(bytes(body)))
    _same_outcome(_fix_crc(bytes(body[:cut])))
