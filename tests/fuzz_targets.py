"""Fuzz targets: one function per C kernel entry point of ``llmdsdb._native._core`` and per
decoder of stored bytes, each taking one ``bytes`` input.

The invariant every target checks: whatever the bytes, the call returns a well-formed answer
(checked against a reference model where one exists) or raises one of the ``llmdsdb.errors``
classes the entry point documents. Anything else -- another exception, a wrong answer, a
crash, a read outside a buffer under the sanitizer build -- is a finding.

The bytes drive the structure through :class:`Src` (sizes, modes, which byte to damage), so a
coverage-guided fuzzer's mutations map onto structural changes. Two drivers use the same
targets: ``tests/property/test_fuzz_targets.py`` (hypothesis, a few seconds each, in the unit
suite) and ``tools/fuzz/run_fuzz.py`` (atheris, minutes per target, by hand).
"""

from __future__ import annotations

import collections
import importlib
import json
import math
import os
import struct
import tempfile
import zlib
from collections.abc import Callable

import codec_reference as ref
import msgpack
import numpy as np

from llmdsdb._native import _core
from llmdsdb.codec import decode_arrays, encode_arrays, encode_postings
from llmdsdb.errors import (
    BackupError,
    CorruptionError,
    FilterError,
    InvalidArgumentError,
    InvalidTypeError,
)
from llmdsdb.paged_allocator import PagedAllocator
from llmdsdb.records import decode_record, pack, record_id
from llmdsdb.storage_format import KIND_DOC, Envelope

EXPECTED = (CorruptionError, InvalidArgumentError)
#: How many inputs of each target got an answer that was checked (not a refusal): the
#: drivers assert it grows, so a target cannot silently test refusals only.
ANSWERED: collections.Counter[str] = collections.Counter()
_ALLOC_ERRORS = (InvalidArgumentError, MemoryError)


class Src:
    """Reads typed values from fuzz bytes; past the end every read is zero (never raises),
    so any input is a valid program."""

    def __init__(self, data: bytes) -> None:
        self.d = data
        self.i = 0

    def raw(self, n: int) -> bytes:
        out = self.d[self.i : self.i + n]
        self.i += len(out)
        return out + bytes(n - len(out))

    def left(self) -> int:
        return len(self.d) - self.i

    def rest(self, limit: int = 1 << 16) -> bytes:
        return self.raw(min(self.left(), limit))

    def u8(self) -> int:
        return self.raw(1)[0]

    def int(self, lo: int, hi: int) -> int:
        """An int in [lo, hi]."""
        span = hi - lo + 1
        nb = 1 if span <= 256 else 2 if span <= 65536 else 4 if span <= 1 << 32 else 8
        return lo + int.from_bytes(self.raw(nb), "little") % span

    def bool(self) -> bool:
        return bool(self.u8() & 1)

    def pick(self, seq):  # type: ignore[no-untyped-def]
        return seq[self.int(0, len(seq) - 1)]

    def f32(self, shape: tuple[int, ...], wild: bool | None = None) -> np.ndarray:
        """float32 array: small integers scaled (tame) or raw bit patterns (NaN, inf,
        denormals, huge: wild)."""
        n = int(np.prod(shape))
        if wild is None:
            wild = self.int(0, 3) == 0
        if wild:
            return np.frombuffer(self.raw(4 * n), "<f4").reshape(shape).copy()
        return (np.frombuffer(self.raw(n), np.int8).astype(np.float32) / 16).reshape(shape)

    def ints(self, n: int, lo: int, hi: int, dtype: str = "<i4") -> np.ndarray:
        return np.array([self.int(lo, hi) for _ in range(n)], dtype=dtype)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.int(0, 2**32 - 1))


def _expect(fn: Callable[[], object], *errors: type[BaseException]) -> object | None:
    """fn() or None when it raises one of ``errors`` (EXPECTED by default)."""
    caught = errors or EXPECTED
    try:
        return fn()
    except caught:
        return None


# --- postings blocks --------------------------------------------------------------------


def _valid_block(s: Src) -> tuple[bytes, list[int], list[int]]:
    n = s.int(1, 80)
    wide = s.int(0, 20)
    gaps = [1 + s.int(0, (1 << wide) - 1) for _ in range(n)]
    base = s.int(0, 1 << 20)
    docs = (base + np.cumsum(gaps) - gaps[0]).tolist()
    tfs = [1 + s.int(0, (1 << s.int(0, 12)) - 1) for _ in range(n)]
    return encode_postings(np.array(docs), np.array(tfs)), docs, tfs


def _damage(s: Src, raw: bytes) -> bytes:
    b = bytearray(raw)
    mode = s.int(0, 5)
    if mode == 0:
        return bytes(b)
    if mode == 1 and b:  # flipped bytes, crc left stale
        for _ in range(s.int(1, 3)):
            b[s.int(0, len(b) - 1)] ^= s.int(1, 255)
        return bytes(b)
    if mode in (2, 3) and len(b) > 4:  # bytes changed or cut behind a recomputed crc
        body = b[:-4]
        if mode == 2:
            for _ in range(s.int(1, 4)):
                body[s.int(0, len(body) - 1)] = s.u8()
        else:
            body = body[: s.int(0, len(body))] + s.raw(s.int(0, 8))
        return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    if mode == 4:
        return b[: s.int(0, len(b))]
    return s.raw(s.int(0, 64))  # bytes of the fuzzer's own choosing


def _block(s: Src) -> bytes:
    if s.int(0, 7) == 0:
        body = s.raw(s.int(0, 48))
        return body + struct.pack("<I", zlib.crc32(body))
    return _damage(s, _valid_block(s)[0])


def _ref_decode(raw: bytes) -> tuple[list[int], list[int]] | None:
    try:
        d, t = ref.decode_postings(raw)
    except CorruptionError:
        return None
    return d.tolist(), t.tolist()


def fuzz_postings_decode(data: bytes) -> None:
    """``_core.postings_decode`` against the numpy reference decoder: the same postings, or
    both refuse the block -- by each unpacking implementation this CPU runs."""
    s = Src(data)
    raw = _block(s)
    want = _ref_decode(raw)
    for isa in ("auto", "scalar", "avx2"):
        try:
            out = _core.postings_decode(raw, isa)
        except CorruptionError:
            assert want is None, f"the reference decodes a block the kernel ({isa}) refused"
            continue
        if out is None:  # an implementation this CPU does not run
            continue
        d, t = out
        got = (np.frombuffer(d, np.int32).tolist(), np.frombuffer(t, np.int32).tolist())
        assert want is not None and got == want, f"the kernel ({isa}) disagrees with the reference"


def _blocks(s: Src) -> list[bytes]:
    return [_block(s) for _ in range(s.int(0, 5))]


def fuzz_postings_decode_many(data: bytes) -> None:
    """``_core.postings_decode_many``: the blocks' postings concatenated, or refused when
    any one block is."""
    s = Src(data)
    blocks = _blocks(s)
    each = [_ref_decode(b) for b in blocks]
    try:
        d, t, c = _core.postings_decode_many(blocks)
    except CorruptionError:
        assert any(w is None for w in each)
        return
    assert all(w is not None for w in each)
    assert np.frombuffer(c, np.int64).tolist() == [len(w[0]) for w in each]  # type: ignore[index]
    assert np.frombuffer(d, np.int32).tolist() == [x for w in each for x in w[0]]  # type: ignore[index]
    assert np.frombuffer(t, np.int32).tolist() == [x for w in each for x in w[1]]  # type: ignore[index]


def fuzz_postings_join(data: bytes) -> None:
    """``_core.postings_join``: the blocks back to back with their offsets, or refused when
    any block fails the checks."""
    s = Src(data)
    blocks = _blocks(s)
    try:
        buf, offs = _core.postings_join(blocks)
    except CorruptionError:
        assert any(_ref_decode(b) is None for b in blocks)
        return
    assert all(_ref_decode(b) is not None for b in blocks)
    assert bytes(buf) == b"".join(blocks)
    assert np.frombuffer(offs, np.int64).tolist() == np.cumsum([0] + [len(b) for b in blocks]).tolist()


def fuzz_postings_encode_many(data: bytes) -> None:
    """``_core.postings_encode_many`` against the numpy reference encoder: byte-identical
    blocks that decode back to the input, or InvalidArgumentError for docs that do not
    increase, tfs below 1, values past 2**31 - 1 or bounds that do not cover the input."""
    s = Src(data)
    nblocks = s.int(0, 4)
    docs: list[int] = []
    tfs: list[int] = []
    bounds = [0]
    base = s.int(0, 1 << 20)
    for _ in range(nblocks):
        for _ in range(s.int(1, 40)):
            base += s.int(1, (1 << s.int(0, 24)))
            docs.append(min(base, 2**31 - 1))
            tfs.append(1 + s.int(0, (1 << s.int(0, 16)) - 1))
        bounds.append(len(docs))
    d = np.array(docs, np.int32)
    t = np.array(tfs, np.int32)
    b = np.array(bounds, np.int64)
    if s.int(0, 3) == 0:  # damage
        which = s.int(0, 5)
        if which == 0 and len(d) > 1:
            d[s.int(1, len(d) - 1)] = d[0]
        elif which == 1 and len(t):
            t[s.int(0, len(t) - 1)] = s.pick([0, -1, -(2**31)])
        elif which == 2:
            b[s.int(0, len(b) - 1)] = s.pick([-1, len(d) + 1, 2**40])
        elif which == 3:
            b = b[::-1].copy()
        elif which == 4:
            d = _unaligned(d)
        else:
            t = t[:-1] if len(t) else np.zeros(1, np.int32)
    try:
        got = _core.postings_encode_many(d, t, b)
    except InvalidArgumentError:
        return
    want = ref.encode_postings_many(d, t, b)
    assert got == want, "the kernel and the reference encoder disagree"
    for i, blk in enumerate(got):
        dd, tt = ref.decode_postings(blk)
        assert dd.tolist() == d[b[i]:b[i + 1]].tolist() and tt.tolist() == t[b[i]:b[i + 1]].tolist()
    ANSWERED["postings_encode_many"] += 1


def fuzz_crc32(data: bytes) -> None:
    """``_core.crc32`` equals zlib's, for any bytes-like input."""
    s = Src(data)
    body = s.rest()
    assert _core.crc32(body) == zlib.crc32(body)
    assert _core.crc32(bytearray(body)) == zlib.crc32(body)
    assert _core.crc32(memoryview(body)[1::1]) == zlib.crc32(body[1:])


# --- BM25 top-k ---------------------------------------------------------------------------


def _bm25_lists(s: Src, ndocs: int, nterms: int, damage: bool, stride: int = 1,
                per_block: int = 8) -> list[tuple]:
    out = []
    for _ in range(nterms):
        nb = s.int(1, 4 if per_block <= 8 else 6)
        blocks, skip = [], []
        doc = s.int(0, 4)
        for _ in range(nb):
            n = s.int(1, per_block)
            docs = doc + np.cumsum([s.int(1, 3) * stride for _ in range(n)]) - 1
            tfs = np.array([s.int(1, 5) for _ in range(n)])
            doc = int(docs[-1]) + 1
            blocks.append(encode_postings(docs, tfs))
            skip.append([0, n, docs[0], docs[-1], tfs.max(), 1])
        sk = np.array(skip, dtype=np.int64)
        if damage and s.int(0, 15) == 0:
            sk = _unaligned(sk)
        if damage and s.bool():
            i = s.int(0, nb - 1)
            blocks[i] = _damage(s, blocks[i])
        if damage and s.bool():
            sk[s.int(0, nb - 1), s.int(0, 5)] = s.int(-3, ndocs + 40)
        if damage and s.int(0, 7) == 0:
            sk = sk[: s.int(0, nb)]
        buf = b"".join(blocks)
        offs = np.cumsum([0] + [len(b) for b in blocks]).astype(np.int64)
        if damage and s.int(0, 4) == 0:
            offs[s.int(0, len(offs) - 1)] = s.int(-5, len(buf) + 5)
        if s.int(0, 3) == 0:  # the raw (decoded) form
            dl, tl = [], []
            for bl in blocks:
                got = _ref_decode(bl)
                dl.append(np.array(got[0] if got else [s.int(-2, ndocs + 2)], np.int32))
                tl.append(np.array(got[1] if got else [s.int(-1, 3)], np.int32))
            cnt = np.cumsum([0] + [len(d) for d in dl]).astype(np.int64)
            if damage and s.int(0, 4) == 0:
                cnt[s.int(0, len(cnt) - 1)] = s.int(-3, int(cnt[-1]) + 3)
            out.append((None, cnt, sk, np.concatenate(dl), np.concatenate(tl)))
        else:
            out.append((buf, offs, sk, None, None))
    return out


def _bm25_query(s: Src, nterms: int) -> tuple:
    m = s.int(1, nterms)
    li = np.array([s.int(0, nterms - 1) for _ in range(m)], np.int32)
    idf = np.array([s.int(1, 300) / 100 for _ in range(m)])
    qtf = np.array([s.int(1, 2) for _ in range(m)], np.float64)
    return (li, idf, qtf, idf * qtf * 2.2)


def fuzz_bm25_search(data: bytes) -> None:
    """``_core.bm25_search`` over damaged postings, skip rows and offsets: a typed error or
    at most k hits per query, documents in range, scores finite and ordered, the scratch
    accumulator left zero; undamaged lists give the same answer in both modes and on two
    threads."""
    s = Src(data)
    # wide: doc numbers spread past the pruned kernel's first window (4,096), so that the
    # later windows split the terms and look the non-essential ones up or lay them out
    wide = s.int(0, 2) == 0
    ndocs = s.int(4097, 12000) if wide else s.int(1, 120)
    nterms = s.int(1, 5)
    damage = s.bool()
    cap = 64 if wide else 8  # postings a block may hold
    lists = _bm25_lists(s, ndocs, nterms, damage, s.int(1, 150) if wide else 1, cap)
    queries = [_bm25_query(s, nterms) for _ in range(s.int(1, 3))]
    k = s.int(1, 12)
    norm = np.full(ndocs, 0.9)
    if s.int(0, 5) == 0:
        norm[s.int(0, ndocs - 1)] = s.pick([math.inf, -1.0, math.nan, 0.0])
    answers = []
    short = s.int(0, 7) == 0  # the touched scratch one entry short: refused
    for mode, threads in ((0, 1), (1, 1), (1, 2)):
        acc = np.zeros(ndocs, np.int64)
        touched = np.zeros(ndocs + (0 if short else 1), np.int32)
        if short and mode == 0:  # the exhaustive mode uses the scratch: refused
            assert _expect(lambda a=acc, t=touched: _core.bm25_search(lists, queries, norm, k,
                                                     1.2, 0.75, 7.0, cap, 0, 1, a, t),
                           InvalidArgumentError, CorruptionError) is None
            return
        try:
            got = _core.bm25_search(lists, queries, norm, k, 1.2, 0.75, 7.0, cap, mode, threads,
                                    acc, touched)
        except EXPECTED:
            answers.append(None)
            continue
        assert not acc.any(), "the kernel left its accumulator dirty"
        res = [(np.frombuffer(d, np.int32).tolist(), np.frombuffer(sc).tolist()) for d, sc in got]
        assert len(res) == len(queries)
        for docs, scores in res:
            assert len(docs) == len(scores) <= k and len(set(docs)) == len(docs)
            assert all(0 <= x < ndocs for x in docs)
            assert scores == sorted(scores, reverse=True)
        answers.append(res)
    top = max((int(sk[:, 3].max()) for _, _, sk, _, _ in lists if sk.size), default=0)
    if not damage and top < ndocs and np.isfinite(norm).all() and (norm > 0).all():
        assert answers[0] is not None and answers[0] == answers[1] == answers[2], answers


def _unaligned(a: np.ndarray) -> np.ndarray:
    """The same values in a buffer that starts one byte off the item alignment."""
    raw = bytearray(a.nbytes + 1)
    out = np.frombuffer(raw, a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    return out


def fuzz_bm25_state(data: bytes) -> None:
    """``_core.Bm25State`` (construction, ``set_lists``, ``search`` with allow bitmaps and
    candidate lists): over damaged postings, term statistics and arguments, a typed error
    or, per query, at most k distinct ids of live documents with ordered finite scores."""
    s = Src(data)
    ndocs, nterms = s.int(1, 100), s.int(1, 6)
    damage = s.bool()
    lists = _bm25_lists(s, ndocs, nterms, damage)
    norm = np.full(ndocs, 0.9)
    if s.bool():  # a few distinct norms (read through the state's dictionary, or whole)
        norm = np.array([0.5 + 0.25 * s.int(0, 4) for _ in range(ndocs)])
    if s.int(0, 3) == 0:
        norm[s.int(0, ndocs - 1)] = s.pick([math.inf, -1.0, math.nan, 0.0, 1e300])
    norm_ids = s.bool()
    ext = np.arange(ndocs, dtype=np.int64) * 7
    df = np.array([s.int(0, ndocs + 2) for _ in range(nterms)], np.int64)
    maxtf = np.array([s.int(0, 6) for _ in range(nterms)], np.int64)
    mindl = np.array([s.int(0, 3) for _ in range(nterms)], np.int64)
    args = [norm, ext, df, maxtf, mindl, nterms, s.int(0, ndocs + 1), s.pick([7.0, 0.5, 1e-300]),
            1.2, 0.75, s.pick([8, 8, 8, 1, 65536]),
            s.pick([0, 1 << 20, 400])]  # decode budget: lists held decoded or not
    if s.int(0, 5) == 0:  # a damaged argument
        i = s.int(0, 11)
        args[i] = (args[i][: s.int(0, len(args[i]))] if i < 5 and s.bool() else
                   _unaligned(args[i]) if i < 5 else
                   s.pick([-1, 0, math.nan, math.inf, 1 << 40]))
    try:
        state = _core.Bm25State(*args, norm_ids=norm_ids)
    except (InvalidArgumentError, CorruptionError, TypeError, OverflowError):
        return
    queries = [[s.int(-1 if damage else 0, nterms - (0 if damage else 1))
                for _ in range(s.int(0, 4))] for _ in range(s.int(1, 3))]
    allows = None
    if s.bool():
        allows = []
        for _ in queries:
            kind = s.int(0, 3)
            if kind == 0:
                allows.append(None)
            elif kind == 1:
                allows.append((np.frombuffer(s.raw(s.int(0, 16)), np.uint8), None))
            else:
                cand = sorted({s.int(-1 if damage else 0, ndocs - (0 if damage else 1))
                               for _ in range(s.int(0, 8))})
                allows.append((None, np.array(cand, np.int32)))
        if damage and s.int(0, 3) == 0:
            allows = allows[:-1]
    k, mode = s.int(1, 12), s.int(0, 2)
    live_ids = {int(x) for x in ext[: ndocs]}
    for _ in range(4):
        try:
            res, missing = state.search(queries, k, mode, s.pick([0, 10, 1 << 20]),
                                        s.int(1, 3), allows)
        except (InvalidArgumentError, CorruptionError, TypeError):
            return
        if res is None:
            assert missing, "no result and no missing term"
            try:
                state.set_lists(missing, [lists[t] for t in missing])
            except (InvalidArgumentError, CorruptionError, TypeError):
                return
            continue
        assert len(res) == len(queries)
        for hits in res:
            ids = [i for i, _ in hits]
            scores = [sc for _, sc in hits]
            assert len(hits) <= k and len(set(ids)) == len(ids)
            assert set(ids) <= live_ids, (ids, live_ids)
            assert scores == sorted(scores, reverse=True)
        _check_block_max(s, state, nterms, norm, args[8])
        ANSWERED["Bm25State"] += 1
        return


def _check_block_max(s: Src, state: object, nterms: int, norm: np.ndarray, k1: float) -> None:
    """``Bm25State.block_max`` of a term (registered or not, or out of range): None, a typed
    error, or one entry per block: -1 (not learned yet: the block was never decoded) or a
    bound in [0, k1 + 1] when every norm is a positive number."""
    for _ in range(s.int(1, 3)):
        t = s.int(-2, nterms + 1)
        try:
            bm = state.block_max(t)  # type: ignore[attr-defined]
        except (InvalidArgumentError, CorruptionError, TypeError, OverflowError):
            continue
        if bm is None:
            continue
        assert isinstance(bm, bytes) and len(bm) % 8 == 0, type(bm)
        a = np.frombuffer(bm, np.float64)
        if np.all(np.isfinite(norm) & (norm > 0)) and 0 <= k1 < math.inf:
            assert np.all(((a >= 0) & (a <= (k1 + 1) * (1 + 1e-12))) | (a == -1.0)), (a, k1)


# --- vectors ------------------------------------------------------------------------------


def fuzz_prep_rows(data: bytes) -> None:
    """``_core.prep_rows``: rows it prepares are finite with the norm of the input; the rest
    are flagged; shape mismatches are DimensionError."""
    s = Src(data)
    n, dim, metric = s.int(0, 6), s.int(1, 9), s.int(0, 2)
    X = np.frombuffer(s.raw(8 * n * dim), "<f8").reshape(n, dim).copy()
    if s.bool():
        X = np.nan_to_num(X, nan=0.0, posinf=1e30, neginf=-1e30).clip(-1e40, 1e40)
    limit_sq = s.pick([1e76, 1e30, 1.0, math.inf, 0.0, -1.0, math.nan, 1e300])
    out = np.zeros((n, dim), np.float32)
    norms = np.zeros(n)
    bad = np.zeros(n, np.uint8)
    if s.int(0, 7) == 0:  # a wrong shape somewhere
        which = s.int(0, 2)
        out, norms, bad = (np.zeros((n, dim + 1), np.float32) if which == 0 else out,
                           np.zeros(n + 1) if which == 1 else norms,
                           np.zeros(max(n - 1, 0) if n else 1, np.uint8) if which == 2 else bad)
        _expect(lambda: _core.prep_rows(X, metric, limit_sq, out, norms, bad))
        return
    nbad = _core.prep_rows(X, metric, limit_sq, out, norms, bad)
    assert nbad == int(bad.sum())
    for i in range(n):
        if bad[i]:
            continue
        ss = float(np.sum(X[i] * X[i]))
        assert math.isfinite(ss) and ss > 0
        assert np.isfinite(out[i]).all(), "a prepared row holds a non-finite value"
        assert math.isclose(norms[i], math.sqrt(ss), rel_tol=1e-9)


def fuzz_dist_rows(data: bytes) -> None:
    """``_core.dist_rows``: each instruction set this CPU runs gives distances close to a
    float64 reference on tame input, and never fails on wild input."""
    s = Src(data)
    n, dim, metric = s.int(0, 5), s.int(1, 70), s.int(0, 2)
    wild = s.int(0, 3) == 0
    A, B = s.f32((n, dim), wild), s.f32((n, dim), wild)
    a64, b64 = A.astype(np.float64), B.astype(np.float64)
    want = (((a64 - b64) ** 2).sum(1) if metric == 1 else
            1 - (a64 * b64).sum(1) if metric == 0 else -(a64 * b64).sum(1))
    for isa in ("auto", "scalar", "avx2", "avx512"):
        out = np.zeros(n, np.float32)
        if not _core.dist_rows(A, B, metric, isa, out):
            continue
        if not wild:
            assert np.allclose(out, want, rtol=1e-4, atol=1e-3), (isa, out, want)
    if s.int(0, 7) == 0:
        _expect(lambda: _core.dist_rows(A, B[: max(n - 1, 0)], metric, "auto",
                                        np.zeros(n, np.float32)))


def fuzz_exact_topk(data: bytes) -> None:
    """``_core.exact_topk``: per query the k nearest unskipped rows (distances equal to a
    brute-force scan on tame input), padded with -1 / inf."""
    s = Src(data)
    n, nq, dim, k, metric = s.int(0, 30), s.int(0, 3), s.int(1, 8), s.int(1, 9), s.int(0, 3)
    wild = s.int(0, 3) == 0
    V, Q = s.f32((n, dim), wild), s.f32((nq, dim), wild)
    skip = None if s.bool() else (np.frombuffer(s.raw(n), np.uint8) & 1).astype(np.uint8)
    ids = np.zeros((nq, k), np.int64)
    ds = np.zeros((nq, k), np.float32)
    if metric == 3:  # an unknown metric
        _expect(lambda: _core.exact_topk(V, Q, s.int(3, 99), skip, ids, ds))
        return
    _core.exact_topk(V, Q, metric, skip, ids, ds)
    live = np.flatnonzero(skip == 0) if skip is not None else np.arange(n)
    for r in range(nq):
        got = [i for i in ids[r].tolist() if i != -1]
        assert len(got) == min(k, live.size) and len(set(got)) == len(got)
        assert set(got) <= set(live.tolist())
        assert all(i == -1 for i in ids[r, len(got):].tolist())
        if wild or not got:
            continue
        v, q = V.astype(np.float64), Q[r].astype(np.float64)
        full = ((v - q) ** 2).sum(1) if metric == 1 else (1 - v @ q if metric == 0 else -(v @ q))
        want = np.sort(full[live])[: len(got)]
        assert np.allclose(ds[r, : len(got)], want, rtol=1e-4, atol=1e-3)


# --- HNSW graph ---------------------------------------------------------------------------


def _graph(s: Src) -> dict:
    """HNSW arrays: a plausible hierarchy that a chosen rate of damage then corrupts."""
    cap, dim, M, nl = s.int(0, 40), s.int(1, 6), s.int(1, 4), s.int(0, 3)
    rng = s.rng()
    hostile = s.bool()
    lo, hi = (-(2**31), 2**31 - 1) if hostile else (-3, cap + 3)
    vecs = rng.normal(size=(cap + 1, dim)).astype(np.float32)
    if s.int(0, 3) == 0:
        vecs.ravel()[rng.integers(0, vecs.size, 3)] = [np.nan, np.inf, -np.inf]
    n = s.int(0, cap)
    levels = np.minimum(rng.geometric(0.5, cap) - 1, nl).astype(np.int8)
    rate = s.pick([0.0, 0.0, 0.02, 0.3, 1.0])
    upper = []
    for lv in range(1, nl + 1):
        members = np.flatnonzero(levels[:n] >= lv)
        rows = max(1, members.size)
        rowmap = np.full(cap + 1, -1, np.int32)
        rowmap[members] = np.arange(members.size, dtype=np.int32)
        adj = (members[rng.integers(0, members.size, (rows, M))] if members.size else
               np.full((rows, M), -1)).astype(np.int32)
        for arr, hi_ in ((rowmap, rows + 2), (adj, hi)):
            bad = rng.random(arr.shape) < rate
            arr[bad] = rng.integers(lo if arr is adj else -2, hi_, int(bad.sum()), endpoint=True)
        upper.append((rowmap, adj, members.size))
    if rate == 1.0:
        levels = rng.integers(-2, nl + 2, cap).astype(np.int8)
    adj0 = rng.integers(-1, max(n, 1), (cap + 1, 2 * M)).astype(np.int32)
    bad = rng.random(adj0.shape) < rate
    adj0[bad] = rng.integers(lo, hi, int(bad.sum()), endpoint=True)
    top = int(levels[:n].max()) if n else -1
    entry, maxl = (int(np.flatnonzero(levels[:n] == top)[0]), top) if n and top >= 0 else (-1, -1)
    if s.int(0, 3) == 0:
        entry, maxl = s.int(-2, n + 1), s.int(-2, nl + 1)
    return {
        "metric": s.int(0, 2), "vecs": vecs, "adj0": adj0, "deleted": rng.random(cap) < 0.3,
        "ext": np.arange(cap, dtype=np.int64) * 3, "levels": levels, "upper": upper, "n": n,
        "entry": entry, "maxl": maxl, "live": s.int(0, n), "k": s.int(1, 8),
        "ef": s.int(1, 12), "q": rng.normal(size=dim).astype(np.float32),
        "threads": s.int(1, 3), "start": s.int(0, n), "block": s.pick([256, 256, 1, 7, 0]),
    }


def _make_graph(g: dict) -> object:
    return _core.HnswGraph(g["metric"], g["block"], g["vecs"], g["adj0"], g["deleted"],
                           g["ext"], g["levels"], g["upper"])


def _well_formed(res: list[tuple[int, float]], g: dict) -> None:
    ids = [i for i, _ in res]
    assert len(res) <= g["k"] and len(set(ids)) == len(ids)
    assert all(i % 3 == 0 and 0 <= i // 3 < g["n"] for i in ids)
    ds = [d for _, d in res]
    if all(math.isfinite(d) for d in ds):
        assert ds == sorted(ds)


def _graph_or_none(s: Src) -> tuple[dict, object | None]:
    g = _graph(s)
    return g, _expect(lambda: _make_graph(g))


def fuzz_hnsw_graph(data: bytes) -> None:
    """``_core.HnswGraph(...)``: arrays of any dtype, shape or contiguity are refused with
    InvalidArgumentError; well-shaped arrays build a graph whose scratch query works."""
    s = Src(data)
    g = _graph(s)
    args = [g["metric"], g["block"], g["vecs"], g["adj0"], g["deleted"], g["ext"], g["levels"],
            g["upper"]]
    for _ in range(s.int(0, 3)):  # damage the argument list itself
        i = s.int(0, 7)
        a = args[i]
        kind = s.int(0, 5)
        if isinstance(a, np.ndarray):
            args[i] = (a.astype(s.pick([np.float64, np.int64, np.int16, np.uint8, np.float32]))
                       if kind == 0 else a[:-1] if kind == 1 and a.shape[0] else
                       a[::2] if kind == 2 else a.reshape(-1) if kind == 3 else
                       np.asfortranarray(a.reshape(a.shape[0], -1)) if kind == 4 and a.size else a[None])
        elif isinstance(a, list):
            args[i] = ([] if kind == 0 else [(x[0], x[1], s.int(-3, 99)) for x in a] if kind == 1
                       else a + a[:1] if kind == 2 else [(None, None, 0)] if kind == 3
                       else [x[:2] for x in a] if kind == 4 else 7)
        else:
            args[i] = s.pick([-1, 3, 99, 2**40, 1.5, None])
    try:
        graph = _core.HnswGraph(*args)
    except (InvalidArgumentError, CorruptionError, TypeError, OverflowError):
        return  # TypeError/OverflowError: argument parsing of a non-int where an int belongs
    _expect(lambda: graph.scratch_bytes())
    res = _expect(lambda: graph.search(g["q"], 0, g["n"], g["entry"], g["maxl"], g["live"],
                                       g["k"], g["ef"], 1))
    if res is not None and args[2] is g["vecs"] and args[6] is g["ext"]:
        _well_formed(res, g)  # type: ignore[arg-type]


def fuzz_hnsw_search(data: bytes) -> None:
    """``HnswGraph.search`` (graph walk and exact scan) over damaged arrays."""
    s = Src(data)
    g, graph = _graph_or_none(s)
    if graph is None:
        return
    q = g["q"] if s.int(0, 7) else s.f32((s.int(0, 7),))
    if s.int(0, 7) == 0:
        q = _unaligned(q)
    if s.int(0, 3) == 0:  # visited-stamp epochs near the wrap (also the _set_epoch hook)
        _expect(lambda: graph._set_epoch(s.pick([0, 1, 65534, 65535, 65536, -1])))
    for exact in (0, 1):
        raw = s.int(0, 1)
        res = _expect(lambda raw=raw, exact=exact: graph.search(
            q if not raw else q.tobytes(), raw, g["n"], g["entry"], g["maxl"], g["live"],
            g["k"], g["ef"], exact))
        if res is not None:
            _well_formed(res, g)  # type: ignore[arg-type]


def fuzz_hnsw_search_many(data: bytes) -> None:
    """``HnswGraph.search_many`` on several threads over damaged arrays."""
    s = Src(data)
    g, graph = _graph_or_none(s)
    if graph is None:
        return
    nq = s.int(0, 4)
    Q = np.stack([g["q"] * (i + 1) for i in range(nq)]) if nq else np.zeros((0, len(g["q"])), np.float32)
    kk = g["k"] + (s.int(-1, 1) if s.int(0, 7) == 0 else 0)
    ids = np.empty((nq, max(kk, 0)), np.int64)
    ds = np.empty((nq, max(kk, 0)), np.float32)
    for exact in (0, 1):
        try:
            graph.search_many(Q, g["n"], g["entry"], g["maxl"], g["live"], g["k"], g["ef"],
                              exact, g["threads"], ids, ds)
        except EXPECTED:
            continue
        for r in range(nq):
            _well_formed([(i, d) for i, d in zip(ids[r].tolist(), ds[r].tolist()) if d != math.inf], g)


def fuzz_hnsw_search_allowed(data: bytes) -> None:
    """``HnswGraph.search_allowed`` (filtered walk, two-hop, exact) with any allow bitmap,
    allowed-id list and label map over damaged arrays: a typed error, or hits that are
    allowed, distinct and at most k per query."""
    s = Src(data)
    g, graph = _graph_or_none(s)
    if graph is None:
        return
    cap = len(g["ext"])
    nq = s.int(0, 3)
    dim = len(g["q"])
    Q = np.stack([g["q"] * (i + 1) for i in range(nq)]) if nq else np.zeros((0, dim), np.float32)
    allowed = sorted({s.int(-2, 3 * cap + 3) for _ in range(s.int(0, 12))})
    ids = np.array(allowed, np.int64)
    if s.int(0, 7) == 0 and len(ids) > 1:
        ids = ids[::-1].copy()  # not increasing
    bits = np.zeros(s.int(0, (3 * cap) // 8 + 2), np.uint8)
    for v in allowed:
        if 0 <= v < 8 * len(bits):
            bits[v >> 3] |= 1 << (v & 7)
    keys = g["ext"][: g["n"]].copy()
    knodes = np.arange(len(keys), dtype=np.int32)
    if s.int(0, 3) == 0 and len(knodes):  # a label map out of step with the graph
        knodes[s.int(0, len(knodes) - 1)] = s.int(-3, cap + 3)
    if s.int(0, 7) == 0:
        keys = keys[: s.int(0, len(keys))]
    k = g["k"]
    out_i = np.empty((nq, k), np.int64)
    out_d = np.empty((nq, k), np.float32)
    mode = s.pick([0, 1, 0, 1, 2, -1])
    exact = s.int(0, 1)
    try:
        graph.search_allowed(Q, g["n"], g["entry"], g["maxl"], k, g["ef"], exact, mode,
                             g["threads"], bits, ids, keys, knodes, out_i, out_d)
    except EXPECTED:
        return
    ok_ids = set(allowed) | {8 * i + b for i, x in enumerate(bits.tolist()) for b in range(8)
                             if x >> b & 1}
    for r in range(nq):
        got = [i for i in out_i[r].tolist() if i != -1]
        assert len(set(got)) == len(got) <= k
        assert all(i % 3 == 0 and 0 <= i // 3 < g["n"] for i in got), got
        assert set(got) <= ok_ids, (got, allowed)
    ANSWERED["HnswGraph.search_allowed"] += 1


def fuzz_hnsw_insert(data: bytes) -> None:
    """``HnswGraph.insert`` over damaged arrays, then a search of whatever it left."""
    s = Src(data)
    g, graph = _graph_or_none(s)
    if graph is None:
        return
    pages = -(-g["n"] // max(g["block"], 1)) + 1
    dirty = np.zeros(pages if s.int(0, 7) else s.int(0, 2), np.uint8)
    efc = s.pick([8, 1, 0, -1, 64])
    try:
        entry, maxl = graph.insert(g["start"], g["n"], g["entry"], g["maxl"], efc, g["threads"], dirty)
        assert -1 <= entry < max(g["n"], 1) and -1 <= maxl <= len(g["upper"])
    except EXPECTED:
        pass
    res = _expect(lambda: graph.search(g["q"], 0, g["n"], g["entry"], g["maxl"], g["live"],
                                       g["k"], g["ef"], 0))
    if res is not None:
        _well_formed(res, g)  # type: ignore[arg-type]


def fuzz_hnsw_set_counts(data: bytes) -> None:
    """``HnswGraph.set_counts`` with any counts, then a search that trusts them."""
    s = Src(data)
    g, graph = _graph_or_none(s)
    if graph is None:
        return
    nl = len(g["upper"]) + s.int(-1, 1)
    counts = [s.int(-3, 50) for _ in range(max(nl, 0))]
    arg = s.pick([counts, np.array(counts, np.int64), tuple(counts), None, "x"])
    try:
        graph.set_counts(arg)
    except (InvalidArgumentError, CorruptionError, TypeError):
        return
    res = _expect(lambda: graph.search(g["q"], 0, g["n"], g["entry"], g["maxl"], g["live"],
                                       g["k"], g["ef"], 0))
    if res is not None:
        _well_formed(res, g)  # type: ignore[arg-type]


def fuzz_hnsw_repair(data: bytes) -> None:
    """``_core.hnsw_repair`` (compaction's re-linking of rows that name removed nodes) over
    damaged rows, row maps and row lists: a typed error, or repaired rows that name no
    removed node, hold ids in range, each once, -1 padded; other rows untouched."""
    s = Src(data)
    nvec, dim, W = s.int(1, 30), s.int(1, 5), s.int(1, 6)
    layer0 = s.bool()
    damage = s.int(0, 3) == 0
    vecs = s.f32((nvec, dim))
    if layer0:
        R = nvec
        rownode = np.arange(nvec, dtype=np.int64)
        node2row = None
    else:
        members = sorted({s.int(0, nvec - 1) for _ in range(s.int(1, nvec))})
        R = len(members)
        rownode = np.array(members, np.int64)
        node2row = np.full(nvec, -1, np.int32)
        node2row[members] = np.arange(R, dtype=np.int32)
    pool = rownode.tolist()
    A = np.full((R, W), -1, np.int32)
    for r in range(R):
        for c in range(s.int(0, W)):
            A[r, c] = s.pick(pool)
    gone = np.frombuffer(s.raw(nvec), np.uint8) % 4 == 0
    dead = gone | (np.frombuffer(s.raw(nvec), np.uint8) % 5 == 0)
    rows = np.array(sorted({s.int(0, max(R - 1, 0)) for _ in range(s.int(0, R))}), np.int64)
    if damage:
        which = s.int(0, 5)
        if which == 0 and A.size:
            A.flat[s.int(0, A.size - 1)] = s.pick([nvec, -2, 2**31 - 1, -(2**31)])
        elif which == 1 and len(rows):
            rows[s.int(0, len(rows) - 1)] = s.pick([R, -1, 2**40])
        elif which == 2:
            rownode[s.int(0, R - 1)] = s.pick([nvec, -1, 2**40])
        elif which == 3 and node2row is not None:
            node2row[s.int(0, nvec - 1)] = s.pick([R, -2, 2**31 - 1])
        elif which == 4:
            gone = gone[:-1]
        else:
            A = A[:, :0] if s.bool() else A.astype(np.int64)
    metric = s.pick([0, 1, 2, 3])
    if s.int(0, 7) == 0:
        vecs, rows = (_unaligned(vecs), rows) if s.bool() else (vecs, _unaligned(rows))
    before = A.copy()
    try:
        _core.hnsw_repair(vecs, metric, A, rownode, node2row, gone.astype(np.uint8),
                          dead.astype(np.uint8), rows)
    except EXPECTED:
        return
    fixed = set(rows.tolist())
    for r in range(A.shape[0]):
        row = A[r].tolist()
        if r not in fixed:
            assert row == before[r].tolist(), "a row not asked for changed"
            continue
        ids = [x for x in row if x != -1]
        assert row == ids + [-1] * (len(row) - len(ids)), row
        assert len(set(ids)) == len(ids) and all(0 <= x < nvec for x in ids), row
        assert not any(gone[x] for x in ids), (row, gone.tolist())
    ANSWERED["hnsw_repair"] += 1



# --- the word splitter -------------------------------------------------------------------------


def fuzz_words_split(data: bytes) -> None:
    """``_core.words_split`` over texts made of the bytes (UTF-8 with surrogates kept,
    Latin-1, UTF-32 code points: every str kind CPython has) equals the analyzer's
    ``words``: the same tokens in order, distinct words numbered by first appearance."""
    from llmdsdb.analysis import Analyzer

    s = Src(data)
    an = Analyzer()
    texts: list[object] = []
    for _ in range(s.int(0, 5)):
        raw = s.raw(s.int(0, 300))
        mode = s.int(0, 3)
        if mode == 0:
            t = raw.decode("utf-8", "surrogateescape")
        elif mode == 1:
            t = raw.decode("latin-1")
        elif mode == 2:
            cps = np.frombuffer(raw[: len(raw) // 4 * 4], "<u4") % 0x110000
            t = "".join(map(chr, cps.tolist()))
        else:
            t = raw.decode("ascii", "replace").upper()
        texts.append(t)
    if s.int(0, 15) == 15:
        texts.insert(s.int(0, len(texts)), s.pick([b"bytes", 7, None]))
        assert _expect(lambda: _core.words_split(texts), InvalidArgumentError) is None
        return
    strs = [str(t) for t in texts]
    slots, counts, words = _core.words_split([t if t.isascii() else an.normalize(t)
                                              for t in strs])
    ref = [an.words(t) for t in strs]
    assert np.frombuffer(counts, np.int64).tolist() == [len(r) for r in ref]
    flat = [w for r in ref for w in r]
    assert [words[i] for i in np.frombuffer(slots, np.int32).tolist()] == flat
    assert words == list(dict.fromkeys(flat))
    ANSWERED["words_split"] += 1


# --- the envelope fast path --------------------------------------------------------------------


def fuzz_docs_open(data: bytes) -> None:
    """``_core.docs_open`` over stored values (records or any bytes, enveloped as one kind
    or another, compressed or not, then damaged or cut): a body only for a plain envelope
    of the asked kind that ``decode_value`` accepts, and then its body; an id only when it
    equals ``record_id``'s."""
    from llmdsdb.errors import LlmdsdbError
    from llmdsdb.storage_format import FORMAT_VERSION, decode_value, encode_value

    s = Src(data)
    raws: list[bytes | None] = []
    for _ in range(s.int(0, 5)):
        if s.int(0, 5) == 0:
            raws.append(None)
            continue
        if s.bool():
            body = msgpack.packb({"id": s.raw(s.int(0, 40)).decode("utf-8", "replace"),
                                  "text": "t", "meta": {}, "hash": "h", "emb": None})
        else:
            body = s.raw(s.int(0, 200))
        raw = bytearray(encode_value(body, kind=s.pick([KIND_DOC, KIND_DOC, 1, 4]),
                                     compress=s.pick([False, None, True])))
        for _ in range(s.int(0, 2)):
            if s.bool() and raw:
                raw[s.int(0, len(raw) - 1)] ^= s.int(1, 255)
            else:
                del raw[s.int(0, len(raw)):]
        raws.append(bytes(raw))
    maxv = s.pick([FORMAT_VERSION, FORMAT_VERSION, 0, 255])
    bodies, ids = _core.docs_open([None if r is None else memoryview(r) for r in raws],
                                  KIND_DOC, maxv)
    assert len(bodies) == len(ids) == len(raws)
    for raw, body, rid in zip(raws, bodies, ids):
        if raw is None:
            assert body is None and rid is None
            continue
        try:
            want = decode_value(raw, key_desc="fuzz/1", kind=KIND_DOC)
        except LlmdsdbError:
            want = None
        if body is not None:
            assert body == want and raw[3] == 0 and raw[1] <= maxv
        if rid is not None:
            assert body is not None and rid == record_id(body, "fuzz/1")
    assert _expect(lambda: _core.docs_open(5, KIND_DOC, maxv), TypeError) is None
    ANSWERED["docs_open"] += 1


# --- the LMDB value bounds check ------------------------------------------------------------


def _ref_value_extent(f: bytes, koff: int, ks: int, n: int, psize: int) -> bool:
    """Reference of ``lmdb_value_check`` for a key at offset ``koff`` of the file image
    ``f`` whose first ``n`` bytes count: True when the value ends inside them."""
    if koff < 2 * psize or koff > n:
        return False
    page = koff - koff % psize
    node = koff - 8
    if koff - page < 24 or koff + ks > page + psize or page + psize > n:
        return False
    lo, hi, flags, ksize = struct.unpack_from("<HHHH", f, node)
    dsize = lo | hi << 16
    if ksize != ks:
        return False
    data = node + 8 + ks
    if flags & 1:
        if data + 8 > page + psize:
            return False
        pgno = struct.unpack_from("<Q", f, data)[0]
        return 2 <= pgno < n // psize and pgno * psize + 16 + dsize <= n // psize * psize
    return data + dsize <= page + psize


def fuzz_lmdb_value_check(data: bytes) -> None:
    """``_core.lmdb_value_check`` over a random file image standing in for the map: it
    agrees with the reference (True, or CorruptionError), reads nothing outside the image
    (ASan), and says False for a key in no mapping."""
    s = Src(data)
    psize = s.pick([512, 1024, 4096])
    npages = s.int(0, 6)
    img = bytearray(s.raw(npages * psize))
    # plant a plausible node (header + key + data or page number) at a chosen place
    koff = s.int(0, max(0, len(img)))
    ks = s.int(0, 40)
    if s.bool() and koff >= 8 and koff + ks + 8 <= len(img):
        flags = s.pick([0, 1, 2, 1 | 4])
        dsize = s.pick([0, 1, 16, psize - 40, psize, 3 * psize, 1 << 31, (1 << 32) - 1])
        struct.pack_into("<HHHH", img, koff - 8, dsize & 0xFFFF, dsize >> 16, flags,
                         ks if s.int(0, 7) else s.int(0, 0xFFFF))
        if flags & 1:
            struct.pack_into("<Q", img, koff + ks, s.pick([0, 2, npages - 1, npages, 1 << 60]))
    file_bytes = s.pick([len(img), max(0, len(img) - psize), len(img) + psize, 0])
    ks = min(ks, max(0, len(img) - koff))
    base = int(np.frombuffer(img, np.uint8).__array_interface__["data"][0]) if img else 0
    key = memoryview(img)[koff:koff + ks]
    end = base + len(img)
    if not img or not ks:
        assert _core.lmdb_value_check(key, base, end, file_bytes, psize) is False
        return
    want = _ref_value_extent(bytes(img), koff, ks, min(file_bytes, len(img)), psize)
    got = _expect(lambda: _core.lmdb_value_check(key, base, end, file_bytes, psize),
                  CorruptionError)
    assert (got is True) == want, (got, want)
    assert _core.lmdb_value_check(key, end + 4096, end + 8192, file_bytes, psize) is False
    assert _expect(lambda: _core.lmdb_value_check(key, end, base, file_bytes, psize),
                   InvalidArgumentError) is None
    assert _expect(lambda: _core.lmdb_value_check(key, base, end, file_bytes, psize + 1),
                   InvalidArgumentError) is None
    ANSWERED["lmdb_value_check"] += 1


# --- decoders of stored bytes -------------------------------------------------------------


def _flip(s: Src, raw: bytes) -> bytes:
    b = bytearray(raw)
    mode = s.int(0, 3)
    if mode == 0 or not b:
        return bytes(b) + s.raw(s.int(0, 4))
    if mode == 1:
        for _ in range(s.int(1, 3)):
            b[s.int(0, len(b) - 1)] ^= s.int(1, 255)
        return bytes(b)
    if mode == 2:
        return bytes(b[: s.int(0, len(b))])
    return s.rest(4096)


def fuzz_envelope(data: bytes) -> None:
    """``Envelope.decode_value``: the payload back, or CorruptionError (a stored value that
    fails its checksum, length or zstd frame checks)."""
    s = Src(data)
    payload = s.raw(s.int(0, 600)) * s.int(1, 4)
    raw = Envelope.encode_value(payload, kind=KIND_DOC, compress=s.pick([None, True, False]))
    bad = _flip(s, raw)
    if s.int(0, 3) == 0 and len(bad) >= 12:  # re-seal the damage behind a valid crc
        body = bad[12:]
        crc = zlib.crc32(body, zlib.crc32(bad[8:12], zlib.crc32(bad[0:4])))
        bad = bad[:4] + struct.pack(">I", crc) + bad[8:]
    try:
        got = Envelope.decode_value(bad, key_desc="fuzz/1", kind=s.pick([None, KIND_DOC]))
    except CorruptionError:
        assert bad != raw
        return
    assert isinstance(got, bytes)
    if bad == raw:
        assert got == payload


def fuzz_records(data: bytes) -> None:
    """msgpack document records (``decode_record`` / ``record_id``): a dict of the right
    shape, or CorruptionError; never a msgpack exception, never a large allocation."""
    s = Src(data)
    mode = s.int(0, 2)
    if mode == 0:
        raw = s.rest()
    else:
        rec = {"id": s.raw(s.int(0, 40)).decode("latin-1"), "text": s.raw(s.int(0, 50)).hex(),
               "meta": {"a": s.int(-5, 5)}, "hash": "h", "emb": s.raw(4 * s.int(0, 4)) or None}
        raw = _flip(s, pack(rec)) if mode == 1 else pack(rec)
    try:
        rec = decode_record(raw, "docs/1")
        assert isinstance(rec["id"], str)
    except CorruptionError:
        pass
    try:
        assert isinstance(record_id(raw, "docs/1"), str)
    except CorruptionError:
        pass


def fuzz_arrays(data: bytes) -> None:
    """``codec.decode_arrays`` (index metadata records): the arrays back, or CorruptionError."""
    s = Src(data)
    arrays = [np.frombuffer(s.raw(8 * s.int(0, 20)), s.pick(["<i4", "<i8", "<f4", "<f8", "u1"]))
              for _ in range(s.int(0, 4))]
    raw = encode_arrays(arrays)
    bad = _flip(s, raw)
    if s.bool() and len(bad) > 4:
        bad = bad[:-4] + struct.pack("<I", zlib.crc32(bad[:-4]))
    try:
        got = decode_arrays(bad, max_bytes=1 << 20)
    except CorruptionError:
        assert bad != raw
        return
    if bad == raw:
        assert [g.tobytes() for g in got] == [a.tobytes() for a in arrays]


def fuzz_allocator_state(data: bytes) -> None:
    """``PagedAllocator.from_bytes``: an allocator whose own ``_check`` holds, or
    CorruptionError."""
    s = Src(data)
    a = PagedAllocator(page_size=s.int(1, 64), max_pages=s.int(1, 300))
    held: list[int] = []
    for _ in range(s.int(0, 12)):
        if s.bool() and held:
            a.free([held.pop(s.int(0, len(held) - 1))])
        else:
            held += _expect(lambda: a.alloc(s.int(1, 5)), *_ALLOC_ERRORS) or []  # type: ignore[operator]
    raw = a.to_bytes()
    bad = _flip(s, raw)
    if s.bool() and len(bad) > 4:
        bad = bad[:-4] + struct.pack("<I", zlib.crc32(bad[:-4]))
    try:
        b = PagedAllocator.from_bytes(bad)
    except CorruptionError:
        assert bad != raw
        return
    b._check()
    if bad == raw:
        assert b.to_bytes() == raw


def fuzz_backup_manifest(data: bytes) -> None:
    """``backup.read_manifest`` on any manifest.json bytes: a manifest with the documented
    fields, or BackupError."""
    bk = importlib.import_module("llmdsdb.backup")  # llmdsdb.backup is also a function

    s = Src(data)
    if s.bool():
        body = s.rest().decode("utf-8", "replace").encode()
    else:
        m = {"format": bk.BACKUP_FORMAT, "manifest_version": s.int(-1, 3),
             "generation": s.pick([1, -1, "1", True, 2**70, None]), "count": s.int(0, 9),
             "size_bytes": s.int(0, 1 << 20), "sha256": s.pick(["ab" * 32, "", 5]),
             "data_file": s.pick([bk.DATA_FILE, "../x", "data.mdb\x00"])}
        for key in list(m):
            if s.int(0, 7) == 0:
                del m[key]
        body = _flip(s, json.dumps(m).encode()) if s.int(0, 3) == 0 else json.dumps(m).encode()
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, bk.MANIFEST), "wb") as f:
            f.write(body)
        try:
            m = bk.read_manifest(d)
        except BackupError:
            return
    assert m["data_file"] == bk.DATA_FILE and isinstance(m["generation"], int)


def fuzz_filter(data: bytes) -> None:
    """``filters.parse_filter`` on any msgpack-decoded structure: a typed AST, or
    FilterError naming the token; never evaluation, never RecursionError."""
    from llmdsdb.filters import Filter, parse_filter

    s = Src(data)
    ops = ["$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$and", "$or",
           "$not", "$bogus", "__import__('os')", "", "a.b", "$"]

    def value(depth: int) -> object:
        kind = s.int(0, 9)
        if kind == 0 and depth < 40:
            return {s.pick(ops) if s.bool() else s.pick(["x", "y", "year"]): value(depth + 1)
                    for _ in range(s.int(0, 3))}
        if kind == 1 and depth < 40:
            return [value(depth + 1) for _ in range(s.int(0, 4))]
        return s.pick([1, -0.0, math.nan, math.inf, 2**64, "a", "", None, True, b"\x80", 1.5,
                       "'; DROP", [], {}])

    spec = value(0)
    if s.int(0, 7) == 0:
        for _ in range(s.int(100, 3000)):
            spec = {"$not": spec}
    if s.int(0, 7) == 0:
        spec = _expect(lambda: msgpack.unpackb(s.rest(), strict_map_key=False),
                       Exception) or spec  # type: ignore[arg-type]
    try:
        f = parse_filter(spec)
    except (FilterError, InvalidTypeError):
        return
    assert isinstance(f, Filter)


#: Every C entry point of ``llmdsdb._native._core`` that takes input, with its target. The
#: suite checks this list against ``_core.kernel_info()['kernels']`` and the HnswGraph
#: methods, so a new kernel cannot be added without a fuzz target.
KERNEL_TARGETS: dict[str, Callable[[bytes], None]] = {
    "postings_decode": fuzz_postings_decode,
    "postings_decode_many": fuzz_postings_decode_many,
    "postings_join": fuzz_postings_join,
    "postings_encode_many": fuzz_postings_encode_many,
    "crc32": fuzz_crc32,
    "bm25_search": fuzz_bm25_search,
    "Bm25State": fuzz_bm25_state,
    "prep_rows": fuzz_prep_rows,
    "dist_rows": fuzz_dist_rows,
    "exact_topk": fuzz_exact_topk,
    "HnswGraph": fuzz_hnsw_graph,
    "HnswGraph.search": fuzz_hnsw_search,
    "HnswGraph.search_many": fuzz_hnsw_search_many,
    "HnswGraph.search_allowed": fuzz_hnsw_search_allowed,
    "HnswGraph.insert": fuzz_hnsw_insert,
    "HnswGraph.set_counts": fuzz_hnsw_set_counts,
    "hnsw_repair": fuzz_hnsw_repair,
    "lmdb_value_check": fuzz_lmdb_value_check,
    "words_split": fuzz_words_split,
    "docs_open": fuzz_docs_open,
}

#: Entry points that take no input (nothing to fuzz).
NO_INPUT = {"kernel_info", "dist_isa", "HnswGraph.scratch_bytes", "HnswGraph._epochs",
            "Bm25State.nbytes", "Bm25State.nloaded", "Bm25State.decoded",
            "Bm25State.norm_values"}
#: Test hooks whose input the target named here covers.
COVERED_BY = {"HnswGraph._set_epoch": "HnswGraph.search",
              "Bm25State.set_lists": "Bm25State", "Bm25State.search": "Bm25State",
              "Bm25State.block_max": "Bm25State"}

DECODER_TARGETS: dict[str, Callable[[bytes], None]] = {
    "envelope": fuzz_envelope,
    "records": fuzz_records,
    "arrays": fuzz_arrays,
    "allocator_state": fuzz_allocator_state,
    "backup_manifest": fuzz_backup_manifest,
    "filter": fuzz_filter,
}

TARGETS = {**KERNEL_TARGETS, **DECODER_TARGETS}
