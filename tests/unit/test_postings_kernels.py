"""The compiled postings and BM25 kernels (llmdsdb/_native/postings.c, bm25.c) on hostile
input: a bounded-time fuzz of the decoders and of the top-k kernel with random and
mutated blocks, offsets and skip rows. Anything but a result or a CorruptionError /
InvalidArgumentError (a crash, another exception, a read outside a buffer under the
sanitizer build) fails."""

from __future__ import annotations

import struct
import threading
import time
import zlib

import codec_reference as ref
import numpy as np
import pytest

from llmdsdb._native import _core
from llmdsdb.analysis import Analyzer
from llmdsdb.codec import decode_postings, decode_postings_many, encode_postings, join_postings
from llmdsdb.errors import CorruptionError, InvalidArgumentError
from llmdsdb.inverted_index import InvertedIndex

FUZZ_SECONDS = 1.5


def _block(rng: np.random.Generator) -> bytes:
    n = int(rng.choice([1, 2, 3, 8, 9, 31, 64]))
    docs = int(rng.integers(0, 100)) + np.cumsum(rng.integers(1, 1 << int(rng.integers(1, 20)), n))
    tfs = rng.integers(1, 1 << int(rng.integers(1, 12)), n)
    return encode_postings(docs - docs[0], tfs)


def _mutate(rng: np.random.Generator, raw: bytes) -> bytes:
    b = bytearray(raw)
    kind = int(rng.integers(0, 4))
    if kind == 0 and len(b) > 4:  # bytes changed behind a valid crc
        body = b[:-4]
        for _ in range(int(rng.integers(1, 4))):
            body[int(rng.integers(0, len(body)))] = int(rng.integers(0, 256))
        return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    if kind == 1:  # cut, crc fixed
        body = b[: int(rng.integers(0, max(len(b) - 3, 1)))]
        return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    if kind == 2:  # random bytes
        return rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
    b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))  # a flipped byte
    return bytes(b)


def test_fuzz_decoders() -> None:
    rng = np.random.default_rng(1234)
    end = time.monotonic() + FUZZ_SECONDS
    runs = decoded = 0
    while time.monotonic() < end:
        blocks = [_block(rng) for _ in range(int(rng.integers(1, 4)))]
        blocks[int(rng.integers(0, len(blocks)))] = _mutate(rng, blocks[0])
        for fn, arg in ((decode_postings, blocks[0]), (decode_postings_many, blocks),
                        (join_postings, blocks)):
            runs += 1
            try:
                out = fn(arg)
            except CorruptionError:
                continue
            decoded += 1
            if len(out) >= 2 and isinstance(out[0], np.ndarray):
                d = out[0]
                assert (d >= 0).all()
    assert runs > 100 and decoded > 0


def test_both_unpackers_match_the_reference_at_every_width() -> None:
    """The AVX2 unpacking (eight values per step, a zero-padded copy for the run's last
    bytes) and the portable one give the reference decoder's postings for every gap and tf
    width, block sizes around the eight-value groups, and gaps so wide that the doc sums
    need the 64-bit path."""
    rng = np.random.default_rng(31)
    isas = ["scalar"] + (["avx2"] if _core.postings_decode(encode_postings([0], [1]), "avx2") else [])
    cases = 0
    for w in range(0, 32):
        for n in (1, 2, 7, 8, 9, 15, 16, 17, 33, 127, 128, 129, 300):
            top = min(1 << w, (2**31 - 2) // n)  # gaps drawn below 2**w: dw close to w
            gaps = rng.integers(max(top // 2, 1), top + 1, n)
            docs = np.cumsum(gaps) - gaps[0] + int(rng.integers(0, 1000))
            if docs[-1] >= 2**31 - 1:
                continue
            tfs = rng.integers(1, min(1 << w, 2**31 - 2) + 1, n)
            raw = encode_postings(docs, tfs)
            want_d, want_t = ref.decode_postings(raw)
            assert want_d.tolist() == docs.tolist() and want_t.tolist() == tfs.tolist()
            for isa in isas:
                d, t = _core.postings_decode(raw, isa)
                assert np.frombuffer(d, np.int32).tolist() == docs.tolist(), (w, n, isa)
                assert np.frombuffer(t, np.int32).tolist() == tfs.tolist(), (w, n, isa)
            cases += 1
    assert cases > 300
    # the widest gaps a valid block can hold (dw 31 beside small ones, eight and more of
    # them: the wide unpacking, then the 64-bit sums since 2**31 per gap could overflow)
    for docs in ([0, 2**31 - 1], list(range(9)) + [2**31 - 1], [5] + list(range(2**30, 2**30 + 20))):
        raw = encode_postings(docs, np.arange(1, len(docs) + 1))
        for isa in isas:
            d, t = _core.postings_decode(raw, isa)
            assert np.frombuffer(d, np.int32).tolist() == docs, isa
            assert np.frombuffer(t, np.int32).tolist() == list(range(1, len(docs) + 1)), isa
    # gaps whose sum passes the doc range (a forged block with a valid crc): the wide path
    # must leave it to the 64-bit one, which reports it
    gaps = np.array([2**31 - 2, 2**31 - 2, 5])
    head = bytes((ref.POSTINGS_VERSION,)) + ref._varint(4) + ref._varint(10) + bytes((31, 0))
    body = head + ref._pack(gaps, 31)
    forged = body + struct.pack("<I", zlib.crc32(body))
    for isa in isas:
        with pytest.raises(CorruptionError, match="out of range"):
            _core.postings_decode(forged, isa)
    with pytest.raises(ValueError):
        _core.postings_decode(encode_postings([0], [1]), "sse9")


def _lists(rng: np.random.Generator, ndocs: int, nterms: int, damage: bool) -> list[tuple]:
    out = []
    for _ in range(nterms):
        nb = int(rng.integers(1, 5))
        blocks, skip = [], []
        doc = int(rng.integers(0, 5))
        for _ in range(nb):
            n = int(rng.integers(1, 9))
            docs = doc + np.cumsum(rng.integers(1, 4, n)) - 1
            tfs = rng.integers(1, 6, n)
            doc = int(docs[-1]) + 1
            blocks.append(encode_postings(docs, tfs))
            skip.append([0, n, docs[0], docs[-1], tfs.max(), 1])
        sk = np.array(skip, dtype=np.int64)
        if damage and rng.random() < 0.5:
            i = int(rng.integers(0, len(blocks)))
            blocks[i] = _mutate(rng, blocks[i])
        if damage and rng.random() < 0.5:
            sk[int(rng.integers(0, nb)), int(rng.integers(1, 6))] = int(rng.integers(-3, ndocs + 40))
        buf = b"".join(blocks)
        offs = np.cumsum([0] + [len(b) for b in blocks]).astype(np.int64)
        if damage and rng.random() < 0.2:
            offs[int(rng.integers(0, len(offs)))] = int(rng.integers(-5, len(buf) + 5))
        if rng.random() < 0.3:  # the raw form
            docs_all, tfs_all = [], []
            for bl in blocks:
                try:
                    d, t = decode_postings(bl)
                except CorruptionError:
                    d, t = np.zeros(1, np.int32), np.zeros(1, np.int32)
                docs_all.append(d)
                tfs_all.append(t)
            cnt = np.cumsum([0] + [len(d) for d in docs_all]).astype(np.int64)
            out.append((None, cnt, sk, np.concatenate(docs_all), np.concatenate(tfs_all)))
        else:
            out.append((buf, offs, sk, None, None))
    return out


def _search(lists, queries, ndocs, k, mode, threads=1, ext=None):
    norm = np.full(ndocs, 0.9)
    acc = np.zeros(ndocs, dtype=np.int64)
    touched = np.zeros(ndocs + 1, dtype=np.int32)  # one past: the branch-free store
    got = _core.bm25_search(lists, queries, norm, k, 1.2, 0.75, 7.0, 8, mode, threads, acc,
                            touched, ext)
    assert not acc.any()  # the kernel leaves its accumulator zeroed
    return [(np.frombuffer(d, np.int32).tolist(), np.frombuffer(s).tolist()) for d, s in got]


def _query(rng: np.random.Generator, nterms: int) -> tuple:
    m = int(rng.integers(1, nterms + 1))
    li = rng.choice(nterms, m, replace=False).astype(np.int32)
    idf = rng.uniform(0.1, 3.0, m)
    qtf = rng.integers(1, 3, m).astype(np.float64)
    ub = idf * qtf * 2.2  # tf part < k1 + 1
    return (li, idf, qtf, ub)


def test_fuzz_topk_kernel() -> None:
    rng = np.random.default_rng(99)
    end = time.monotonic() + FUZZ_SECONDS
    runs = answered = 0
    # a fixed number of cases always (so the test asserts the same under a sanitizer or a
    # loaded machine), then more while the time allows
    while runs < 60 or time.monotonic() < end:
        ndocs = int(rng.integers(1, 120))
        nterms = int(rng.integers(1, 6))
        lists = _lists(rng, ndocs, nterms, damage=True)
        queries = [_query(rng, nterms) for _ in range(3)]
        ext = rng.integers(-3, ndocs + 20, ndocs + int(rng.integers(0, 3))).astype(np.int64)
        queries.append(_query(rng, nterms) + (
            rng.integers(0, 256, int(rng.integers(0, 20))).astype(np.uint8), None))
        lo, hi = (-2, ndocs + 2) if rng.random() < 0.1 else (0, ndocs)
        cand = np.unique(rng.integers(lo, hi, int(rng.integers(0, 10)))).astype(np.int32)
        queries.append(_query(rng, nterms) + (None, cand))
        for mode in (0, 1):
            runs += 1
            try:
                _search(lists, queries, ndocs, int(rng.integers(1, 12)), mode,
                        int(rng.integers(1, 3)), ext)
            except (CorruptionError, InvalidArgumentError):
                continue
            answered += 1
    assert answered > 0


def test_kernel_modes_agree_on_valid_lists() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        nterms = int(rng.integers(1, 6))
        lists = _lists(rng, 200, nterms, damage=False)
        queries = [_query(rng, nterms) for _ in range(4)]
        k = int(rng.integers(1, 15))
        ex = _search(lists, queries, 200, k, 0)
        assert _search(lists, queries, 200, k, 1) == ex
        assert _search(lists, queries, 200, k, 1, threads=2) == ex
        assert _search(lists, queries, 200, k, 0, threads=3) == ex
        # filtered: the allowed hits of the unfiltered ranking, by bitmap or by candidates
        ext = rng.permutation(200).astype(np.int64)
        bits = np.packbits(rng.random(200) < 0.3, bitorder="little")
        ok = np.flatnonzero(np.unpackbits(bits, bitorder="little", count=200))
        cand = np.sort(np.flatnonzero(np.isin(ext, ok))).astype(np.int32)
        full = _search(lists, queries, 200, 200, 0)
        want = []
        for d, sc in full:
            keep = [i for i, x in enumerate(d) if ext[x] in set(ok.tolist())][:k]
            want.append(([d[i] for i in keep], [sc[i] for i in keep]))
        for mode in (0, 1):
            assert _search(lists, [q + (bits, None) for q in queries], 200, k, mode,
                           ext=ext) == want
            assert _search(lists, [q + (None, cand) for q in queries], 200, k, mode) == want


def test_kernel_refuses_bad_arguments() -> None:
    rng = np.random.default_rng(3)
    lists = _lists(rng, 50, 2, damage=False)
    q = _query(rng, 2)
    norm = np.ones(50)
    with pytest.raises(InvalidArgumentError):  # a term list index out of range
        _core.bm25_search(lists, [(np.array([5], np.int32),) + q[1:2] * 3], norm, 3, 1.2,
                          0.75, 1.0, 8, 1)
    with pytest.raises(InvalidArgumentError):  # wrong dtype
        _core.bm25_search(lists, [(q[0].astype(np.int64),) + q[1:]], norm, 3, 1.2, 0.75,
                          1.0, 8, 1)
    with pytest.raises(InvalidArgumentError):  # scratch too short
        _core.bm25_search(lists, [q], norm, 3, 1.2, 0.75, 1.0, 8, 0, 1,
                          np.zeros(3, np.int64), np.zeros(3, np.int32))
    with pytest.raises(InvalidArgumentError):
        _core.bm25_search(lists, [q], norm, 0, 1.2, 0.75, 1.0, 8, 1)
    bits = np.ones(8, np.uint8)
    with pytest.raises(InvalidArgumentError):  # an allow bitmap without ext
        _core.bm25_search(lists, [q + (bits, None)], norm, 3, 1.2, 0.75, 1.0, 8, 1)
    with pytest.raises(InvalidArgumentError):  # ext shorter than norm
        _core.bm25_search(lists, [q + (bits, None)], norm, 3, 1.2, 0.75, 1.0, 8, 1, 1, None,
                          None, np.zeros(3, np.int64))
    for cand in ([3, 3], [5, 2], [-1], [50]):  # not ascending, or out of range
        with pytest.raises(InvalidArgumentError):
            _core.bm25_search(lists, [q + (None, np.array(cand, np.int32))], norm, 3, 1.2,
                              0.75, 1.0, 8, 1)
    # a block with more postings than block_cap is corrupt for this index
    with pytest.raises(CorruptionError):
        _core.bm25_search(lists, [q], norm, 3, 1.2, 0.75, 1.0, 1, 1)


def _corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(200)]
    p = 1.0 / np.arange(1, 201) ** 0.9
    p /= p.sum()
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 30)), p=p)) for _ in range(n)]
    queries = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 8)), p=p)) for _ in range(60)]
    return texts, queries


def test_search_threads_agree_and_run_concurrently() -> None:
    texts, queries = _corpus(3000, 5)
    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), block_size=32)
    idx.add_documents(range(len(texts)), texts)
    idx.flush()
    ref = [idx.search(q, 10) for q in queries]
    for mode in ("auto", "pruned", "exhaustive"):
        assert idx.search_many(queries, 10, mode=mode, threads=3) == ref
    got: dict[int, list] = {}

    def worker(i: int) -> None:
        got[i] = [idx.search(q, 10) for q in queries]

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(v == ref for v in got.values())
    with pytest.raises(InvalidArgumentError):
        idx.search_many(queries, 10, threads=0)


def test_corrupt_page_is_corruption_error_at_query_time() -> None:
    texts, _ = _corpus(2000, 8)
    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), block_size=16)
    idx.add_documents(range(len(texts)), texts)
    idx.flush()
    store = idx.store
    tid = idx._tid["w0"]
    page = int(idx._skip[tid][3, 0])
    raw = bytearray(store.get(page))
    raw[len(raw) // 2] ^= 0xFF
    store.put(page, bytes(raw))
    cold = InvertedIndex.open(store)
    for mode in ("pruned", "exhaustive"):
        with pytest.raises(CorruptionError):
            cold.search("w0 w1", 10, mode=mode)
    # the same with lists kept compressed in the query state (decoded per query)
    cold = InvertedIndex.open(store)
    cold.cache_bytes = 1  # a decode budget of 0
    for mode in ("pruned", "exhaustive"):
        with pytest.raises(CorruptionError):
            cold.search("w0 w1", 10, mode=mode)


def test_query_state_decodes_lists_within_its_budget() -> None:
    texts, queries = _corpus(3000, 12)
    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), block_size=32)
    idx.add_documents(range(len(texts)), texts)
    idx.flush()
    small = InvertedIndex.open(idx.store)
    small.cache_bytes = 4 * 8 * 2000  # room for ~2,000 decoded postings
    ref = [idx.search(q, 10) for q in queries]
    assert [small.search(q, 10) for q in queries] == ref
    assert idx._cstate.decoded > small._cstate.decoded > 0
    assert small._cstate.decoded <= 8 * 2000


def test_cached_lists_follow_appends_when_page_ids_come_back() -> None:
    # Reopening a term's last block frees its page; a later flush may hand the same id
    # out again for the same term's last block. The cached list must not be served then.
    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), block_size=16)
    idx.add_documents(range(20), ["w0 w1"] * 20)
    idx.flush()
    pages_seen = set()
    for step in range(12):
        assert idx.search("w0", 100) == InvertedIndex.open(idx.store).search("w0", 100)
        idx.add_documents([1000 + step], ["w0 w2"])
        idx.flush()
        pages_seen.add(int(idx._skip[idx._tid["w0"]][-1, 0]))
    assert idx.search("w0", 100) == InvertedIndex.open(idx.store).search("w0", 100)
    assert len(pages_seen) < 12  # page ids did come back


def test_query_state_refuses_bad_arguments() -> None:
    rng = np.random.default_rng(11)
    lists = _lists(rng, 50, 2, damage=False)
    z = np.zeros(2, np.int64)
    st = _core.Bm25State(np.ones(50), np.arange(50, dtype=np.int64), np.array([3, 4]),
                         np.array([5, 5]), np.array([1, 1]), 2, 50, 7.0, 1.2, 0.75, 8)
    res, missing = st.search([[0, 1, 1]], 3, 2, 100)
    assert res is None and sorted(missing) == [0, 1]
    st.set_lists([0, 1], lists)
    res, missing = st.search([[0, 1, 1], []], 3, 2, 100)
    assert missing is None and len(res) == 2 and res[1] == []
    assert st.nloaded == 2 and st.nbytes > 0
    for bad in ([[2]], [[-1]], [["x"]], [5]):  # term ids out of range, not ints, not lists
        with pytest.raises((InvalidArgumentError, TypeError)):
            st.search(bad, 3, 2, 100)
    with pytest.raises(InvalidArgumentError):  # cand not ascending
        st.search([[0]], 3, 2, 100, 1, [(None, np.array([4, 2], np.int32))])
    with pytest.raises(InvalidArgumentError):  # one allow entry per query
        st.search([[0]], 3, 2, 100, 1, [])
    with pytest.raises(InvalidArgumentError):  # mode
        st.search([[0]], 3, 7, 100)
    with pytest.raises(InvalidArgumentError):  # skip rows and offsets disagree
        _core.Bm25State(np.ones(50), np.arange(50, dtype=np.int64), z, z, z, 2, 50, 7.0,
                        1.2, 0.75, 8).set_lists([0], [(lists[0][0], np.zeros(9, np.int64),
                                                      lists[0][2], None, None)])
    with pytest.raises(InvalidArgumentError):  # term arrays shorter than nterms
        _core.Bm25State(np.ones(50), np.arange(50, dtype=np.int64), z, z, z, 3, 50, 7.0,
                        1.2, 0.75, 8)


def test_query_state_is_renewed_past_the_cache_budget() -> None:
    texts, queries = _corpus(3000, 9)
    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), block_size=32,
                        cache_bytes=20_000)
    idx.add_documents(range(len(texts)), texts)
    idx.flush()
    ref = [InvertedIndex.open(idx.store).search(q, 10) for q in queries]
    states = set()
    for q, want in zip(queries, ref):
        assert idx.search(q, 10) == want
        states.add(id(idx._cstate))
        assert idx._cstate.nbytes <= 20_000 + 40_000  # one query's lists past the budget
    assert len(states) > 1


def _state_like(idx: InvertedIndex, norm_ids: bool):
    """A query state over idx's arrays, as InvertedIndex._state makes one."""
    n = idx._len.n
    return _core.Bm25State(idx._norms(), idx._ext.a[:n], idx._df.a, idx._tmaxtf.a,
                           idx._tmindl.a, len(idx._terms), idx._nlive, idx._avgdl() or 1.0,
                           idx.k1, idx.b, idx.block_size, 1 << 30, norm_ids=norm_ids)


def test_norm_dictionary_gives_the_same_bits_as_whole_norms() -> None:
    # Two windows and more, dead documents (norm +inf) among them: the states that read the
    # norms through their dictionary and whole agree to the last bit in every mode.
    texts, queries = _corpus(9000, 21)
    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), block_size=32)
    idx.add_documents(range(len(texts)), texts)
    for d in range(0, 9000, 7):
        idx.remove_document(d)
    idx.flush()
    coded, whole = _state_like(idx, True), _state_like(idx, False)
    assert 0 < coded.norm_values <= 31 and whole.norm_values == -1
    tids = [idx._tids(q) for q in queries]
    cache, epoch = idx._cache_ctx()
    for st in (coded, whole):
        need = sorted({t for ts in tids for t in ts})
        st.set_lists(need, [idx._plist(t, cache, epoch) for t in need])
    allow = np.packbits(np.random.default_rng(2).random(9000) < 0.4, bitorder="little")
    for mode in (0, 1, 2):
        for k in (1, 10, 100):
            got = coded.search(tids, k, mode, 10**9, 2)
            assert got == whole.search(tids, k, mode, 10**9, 1)
            assert got[0] is not None and any(got[0])
        cand = np.flatnonzero(np.random.default_rng(3).random(9000) < 0.05).astype(np.int32)
        for args in ([(allow, None)] * len(tids), [(None, cand)] * len(tids)):
            assert coded.search(tids, 10, mode, 10**9, 1, args) == \
                whole.search(tids, 10, mode, 10**9, 1, args)


def test_norm_dictionary_counts_values_by_their_bits() -> None:
    z = np.zeros(1, np.int64)

    def values(norm: np.ndarray, **kw) -> int:
        n = len(norm)
        return _core.Bm25State(norm, np.arange(n, dtype=np.int64), z, z, z, 0, n, 1.0, 1.2,
                               0.75, 8, **kw).norm_values

    assert values(np.arange(65536) + 0.5) == 65536
    assert values(np.arange(65537) + 0.5) == -1  # too many: the norms are read whole
    assert values(np.ones(5), norm_ids=False) == -1
    assert values(np.array([0.0, -0.0, np.inf, np.inf, np.nan, 1.5, 1.5])) == 5
    rng = np.random.default_rng(5)
    for _ in range(50):
        pool = rng.uniform(0.1, 3.0, int(rng.integers(1, 40)))
        norm = rng.choice(pool, int(rng.integers(1, 500)))
        assert values(norm) == len(np.unique(norm.view(np.uint64)))
