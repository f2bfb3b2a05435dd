"""Every C kernel entry point and every stored-bytes decoder under hypothesis, for a bounded
number of examples each (a few seconds in all): the targets of ``tests/fuzz_targets.py``,
whose invariant is "a well-formed answer (equal to the reference model's where there is
one) or a documented llmdsdb error". ``tools/fuzz/run_fuzz.py`` runs the same targets for
minutes under atheris; ``tools/sanitize`` runs this file under ASan/UBSan.

Also here: the regression inputs of findings the fuzzers made, each with the fix it
checks, and the test that keeps the target list complete.
"""

from __future__ import annotations

import struct
import zlib

import fuzz_targets as ft
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmdsdb._native import _core
from llmdsdb.codec import encode_postings
from llmdsdb.errors import CorruptionError, InvalidArgumentError
from llmdsdb.paged_allocator import PagedAllocator
from llmdsdb.records import decode_record, record_id

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", sorted(ft.TARGETS))
def test_fuzz_target(name: str) -> None:
    fn = ft.TARGETS[name]

    @FUZZ
    @given(st.binary(min_size=0, max_size=2048))
    def run(data: bytes) -> None:
        fn(data)

    run()


def test_every_kernel_entry_point_has_a_target() -> None:
    """A new entry point of ``_core`` (or a new HnswGraph method) needs a fuzz target."""
    names = set(_core.kernel_info()["kernels"])
    v = np.zeros((2, 1), np.float32)
    g = _core.HnswGraph(0, 256, v, np.full((2, 2), -1, np.int32), np.zeros(1, bool),
                        np.zeros(1, np.int64), np.zeros(1, np.int8), [])
    names |= {f"HnswGraph.{m}" for m in dir(g) if not m.startswith("__")}
    one = np.ones(1)
    z = np.zeros(1, np.int64)
    st_ = _core.Bm25State(one, z, z, z, z, 1, 1, 1.0, 1.2, 0.75, 8)
    names |= {f"Bm25State.{m}" for m in dir(st_) if not m.startswith("__")}
    covered = set(ft.KERNEL_TARGETS) | ft.NO_INPUT | set(ft.COVERED_BY)
    assert names == covered, (names - covered, covered - names)


# --- regressions: findings of the fuzzers, each fixed ----------------------------------------


def test_record_id_of_a_record_cut_after_the_id_key_is_a_corruption_error() -> None:
    """fuzz target "records": ``record_id`` indexed past the end of a 4..6-byte value that
    starts like a packed record (IndexError); now the careful path reports it."""
    for raw in (b"\x85\xa2id", b"\x85\xa2id\xd9", b"\x85\xa2id\xda\x00"):
        with pytest.raises(CorruptionError):
            record_id(raw, "docs/1")


def test_document_record_without_an_emb_field_is_a_corruption_error() -> None:
    """fuzz target "records": a record lacking "emb" raised KeyError from decode_record."""
    raw = msgpack.packb({"id": "a", "text": "t", "meta": {}, "hash": "h"}, use_bin_type=True)
    with pytest.raises(CorruptionError, match="wrong shape"):
        decode_record(raw, "docs/1")


def test_prep_rows_never_casts_an_out_of_range_double_to_float32() -> None:
    """fuzz target "prep_rows": with a NaN or infinite limit a row with components beyond
    float32 (1e100) was "prepared" into inf (an undefined cast in C); now it is flagged for
    the careful path."""
    X = np.array([[1e100, 0.0], [1.0, 2.0]])
    for limit in (np.nan, np.inf, 1e300):
        out = np.zeros((2, 2), np.float32)
        norms = np.zeros(2)
        bad = np.zeros(2, np.uint8)
        assert _core.prep_rows(X, 1, limit, out, norms, bad) == (2 if np.isnan(limit) else 1)
        assert bad[0] == 1 and np.isfinite(out).all()


def test_allocator_state_declaring_a_huge_high_water_is_a_corruption_error() -> None:
    """fuzz target "allocator_state": a state re-sealed with a valid crc that declares
    high_water near max_pages = 2**40 raised MemoryError."""
    from llmdsdb.paged_allocator import _HEADER

    head = _HEADER.pack(b"LDPA", 1, 4096, 1 << 62, 1 << 61, 1 << 61, 0)
    forged = head + struct.pack("<I", zlib.crc32(head))
    with pytest.raises(CorruptionError):
        PagedAllocator.from_bytes(forged)


def test_misaligned_arrays_are_refused_not_read() -> None:
    """fuzz target "Bm25State" under UBSan: an int64 array at an odd byte offset (a numpy
    view of a bytes buffer) was read with misaligned loads (undefined behaviour); every
    binding now refuses it with InvalidArgumentError."""
    from llmdsdb.errors import InvalidArgumentError

    one = np.ones(1)
    z = np.zeros(1, np.int64)
    with pytest.raises(InvalidArgumentError, match="aligned"):
        _core.Bm25State(one, z, ft._unaligned(np.zeros(2, np.int64)), z, z, 1, 1, 1.0, 1.2,
                        0.75, 8)
    v = np.zeros((2, 2), np.float32)
    with pytest.raises(InvalidArgumentError, match="aligned"):
        _core.exact_topk(ft._unaligned(v), v, 0, None, np.zeros((2, 1), np.int64),
                         np.zeros((2, 1), np.float32))
    A = np.full((2, 2), -1, np.int32)
    with pytest.raises(InvalidArgumentError, match="aligned"):
        _core.hnsw_repair(v, 0, A, ft._unaligned(np.arange(2, dtype=np.int64)), None,
                          np.zeros(2, np.uint8), np.zeros(2, np.uint8), np.zeros(0, np.int64))


def test_bm25_search_refuses_a_touched_scratch_without_its_extra_entry() -> None:
    """``--sanitize`` fuzz, bm25_search (16:38): with every document touched, the
    exhaustive loop's branch-free store wrote one int32 past a caller's ``touched`` of
    len(norm) entries (ASan heap-buffer-overflow); the binding now wants len(norm) + 1."""
    ndocs = 4
    docs = np.arange(ndocs, dtype=np.int32)
    block = encode_postings(docs, np.ones(ndocs, np.int32))
    skip = np.array([[0, ndocs, 0, ndocs - 1, 1, 1]], np.int64)
    lst = (block, np.array([0, len(block)], np.int64), skip, None, None)
    q = (np.array([0, 0], np.int32), np.ones(2), np.ones(2), np.full(2, 10.0))
    norm = np.full(ndocs, 0.9)
    args = ([lst], [q], norm, 3, 1.2, 0.75, 7.0, 8, 0, 1, np.zeros(ndocs, np.int64))
    with pytest.raises(InvalidArgumentError, match="touched"):
        _core.bm25_search(*args, np.zeros(ndocs, np.int32))
    (d, _sc), = _core.bm25_search(*args, np.zeros(ndocs + 1, np.int32))
    assert len(np.frombuffer(d, np.int32)) == 3
