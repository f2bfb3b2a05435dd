"""InvertedIndex: API, bad input leaves the index unchanged, persistence, pruning."""

from __future__ import annotations

import numpy as np
import pytest

from llmdsdb import inverted_index
from llmdsdb.analysis import Analyzer
from llmdsdb.errors import (
    ConfigConflictError,
    CorruptionError,
    DocumentNotFoundError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    QueryError,
)
from llmdsdb.inverted_index import MAX_QUERY_TERMS, InvertedIndex
from llmdsdb.pages import MemoryPageStore

DOCS = {
    10: "The quick brown fox jumps over the lazy dog",
    20: "Foxes are quick; dogs are lazy.",
    30: "A treatise on the migration of brown bears",
    40: "quick quick quick",
}


def make(**kw) -> InvertedIndex:
    idx = InvertedIndex(**kw)
    idx.add_documents(list(DOCS), list(DOCS.values()))
    return idx


def snapshot(idx: InvertedIndex):
    return (
        idx.stats(),
        len(idx),
        [idx.search(q, 10) for q in ("quick fox", "brown", "lazy dogs bears")],
    )


def test_basic_api() -> None:
    idx = make()
    assert len(idx) == 4 and 10 in idx and 99 not in idx and "10" not in idx
    assert idx.get_document_frequency("quick") == 3
    assert idx.get_document_frequency("Foxes") == 2  # analysed like a query word
    assert idx.get_document_frequency("nothing") == 0
    assert idx.get_term_frequency("quick", 40) == 3
    assert idx.get_term_frequency("quick", 30) == 0
    assert idx.get_term_frequency("quick", 12345) == 0
    hits = idx.search("quick fox")
    assert [d for d, _ in hits][:2] == [20, 10]
    assert all(isinstance(d, int) and isinstance(s, float) for d, s in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert idx.search("quick", top_k=1) == hits[:0] + [idx.search("quick")[0]]
    st = idx.stats()
    assert st.num_docs == 4 and st.num_terms > 5 and st.k1 == 1.2 and st.b == 0.75
    idx._check()


def test_remove_and_readd() -> None:
    idx = make()
    idx.remove_document(40)
    assert 40 not in idx and len(idx) == 3
    assert idx.get_document_frequency("quick") == 2
    assert 40 not in [d for d, _ in idx.search("quick")]
    with pytest.raises(DocumentNotFoundError):
        idx.remove_document(40)
    idx.add_document(40, "bears")
    assert idx.search("bears")[0][0] == 40
    idx._check()


def test_bad_input_leaves_index_unchanged() -> None:
    idx = make()
    before = snapshot(idx)
    with pytest.raises(InvalidTypeError):
        idx.add_document(50, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        idx.add_documents([50, 51], ["fine", b"bytes"])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError):
        idx.add_document("50", "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        idx.add_document(True, "text")
    with pytest.raises(InvalidArgumentError):
        idx.add_document(1 << 70, "text")
    with pytest.raises(DuplicateIdError):
        idx.add_document(10, "again")
    with pytest.raises(DuplicateIdError):
        idx.add_documents([60, 60], ["a", "b"])
    with pytest.raises(InvalidArgumentError):
        idx.add_documents([60, 61], ["a"])
    with pytest.raises(InvalidTypeError):
        idx.remove_document("10")  # type: ignore[arg-type]
    assert snapshot(idx) == before
    idx._check()


def test_queries_edge_cases() -> None:
    idx = make()
    before = snapshot(idx)
    assert idx.search("") == []
    assert idx.search("   \t\n") == []
    assert idx.search("the of and") == []  # stop words only
    assert idx.search("zebra") == []
    with pytest.raises(QueryError, match="terms"):
        idx.search(" ".join(f"w{i}" for i in range(100_000)))
    with pytest.raises(QueryError):
        idx.search("x " * (MAX_QUERY_TERMS + 1))
    assert idx.search("quick " * MAX_QUERY_TERMS)  # at the limit: fine
    for k in (0, -1, 1.5, True, "3", None):
        with pytest.raises(QueryError):
            idx.search("quick", top_k=k)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        idx.search(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        idx.search("quick", mode="fast")
    assert idx.search("quick", top_k=10**9) == idx.search("quick")
    assert snapshot(idx) == before


def test_control_characters_surrogates_and_huge_tokens() -> None:
    idx = make()
    idx.add_document(70, "nul\x00byte bell\x07 lone\udc80surrogate " + "z" * (1 << 20))
    assert idx.search("surrogate")[0][0] == 70
    assert idx.search("nul byte")[0][0] == 70
    assert idx.search("z" * (1 << 20)) == []  # the 1 MB token was dropped, not truncated
    assert idx.get_document_frequency("z" * 64) == 0
    idx.flush()
    again = InvertedIndex.open(idx.store)
    assert again.search("lone bell") == idx.search("lone bell")
    again._check()


def test_flush_open_round_trip_and_incremental_flush() -> None:
    store = MemoryPageStore()
    idx = make(store=store)
    idx.flush()
    back = InvertedIndex.open(store)
    assert snapshot(back) == snapshot(idx)
    back._check()

    writes: list[str] = []
    orig = store.put_meta

    def spy(name: str, data: bytes) -> None:
        writes.append(name)
        orig(name, data)

    store.put_meta = spy  # type: ignore[method-assign]
    back.add_document(80, "quick zebra")
    n_pages = len(store)
    back.flush()
    shards = [w for w in writes if w.startswith("bm25/terms/")]
    assert 1 <= len(shards) <= 2  # only the shards of "quick" and "zebra"
    writes.clear()
    back.flush()  # nothing changed: only the state record
    assert [w for w in writes if w.startswith("bm25/terms/")] == []
    assert len(store) <= n_pages + 4  # replaced pages were freed
    again = InvertedIndex.open(store)
    assert snapshot(again) == snapshot(back)
    assert again.search("zebra")[0][0] == 80


def test_open_errors() -> None:
    with pytest.raises(CorruptionError):
        InvertedIndex.open(MemoryPageStore())
    store = MemoryPageStore()
    idx = make(store=store)
    idx.flush()
    with pytest.raises(ConfigConflictError):
        InvertedIndex.open(store, tokenizer=Analyzer(stem=False))
    assert InvertedIndex.open(store, tokenizer=Analyzer()).search("fox")
    # k1/b overrides affect scoring only
    assert InvertedIndex.open(store, k1=2.0).k1 == 2.0
    custom = MemoryPageStore()
    c = InvertedIndex(str.split, store=custom)
    c.add_documents([1, 2], ["a b", "b c"])
    c.flush()
    with pytest.raises(ConfigConflictError):
        InvertedIndex.open(custom)
    assert InvertedIndex.open(custom, tokenizer=str.split).search("b") == c.search("b")


def test_corrupted_page_is_reported() -> None:
    store = MemoryPageStore()
    idx = make(store=store)
    idx.flush()
    back = InvertedIndex.open(store)
    tid = back._tid["quick"]
    page = int(back._skip[tid][0, 0])
    raw = bytearray(store.get(page))
    raw[-1] ^= 0xFF
    store.put(page, bytes(raw))
    with pytest.raises(CorruptionError):
        back.search("quick")
    store.put_meta("bm25/state", b"\xc1")
    with pytest.raises(CorruptionError):
        InvertedIndex.open(store)


def test_constructor_validation() -> None:
    for kw in ({"k1": -1}, {"b": 1.5}, {"k1": float("nan")}, {"block_size": 4}):
        with pytest.raises(InvalidArgumentError):
            InvertedIndex(**kw)
    with pytest.raises(InvalidTypeError):
        InvertedIndex(tokenizer=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        InvertedIndex(k1="1")  # type: ignore[arg-type]


def test_custom_tokenizer_must_return_str_list() -> None:
    idx = InvertedIndex(lambda t: [1, 2])  # type: ignore[arg-type, return-value]
    with pytest.raises(InvalidTypeError):
        idx.add_document(1, "x")
    assert len(idx) == 0


def test_pruned_equals_exhaustive_on_a_zipf_corpus() -> None:
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(400)]
    p = 1.0 / np.arange(1, 401)
    p /= p.sum()
    texts = [
        " ".join(rng.choice(vocab, size=int(rng.integers(1, 60)), p=p)) for _ in range(3000)
    ]
    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), block_size=32)
    idx.add_documents(range(3000), texts)
    for i in range(0, 3000, 7):
        idx.remove_document(i)
    for _ in range(60):
        q = " ".join(rng.choice(vocab, size=int(rng.integers(1, 8)), p=p))
        for k in (1, 10, 100):
            assert idx.search(q, k, mode="pruned") == idx.search(q, k, mode="exhaustive")


def test_all_modes_agree_with_dense_terms_and_after_open(monkeypatch) -> None:
    # Words in over a quarter of the documents, so that pruned mode skips, looks up and
    # drops candidates; auto picks exhaustive for some queries and pruned for others; a
    # reopened (cold) index reads its lists from the pages again. Every path must return
    # the same lists.
    rng = np.random.default_rng(11)
    vocab = [f"w{i}" for i in range(300)]
    p = 1.0 / np.arange(1, 301) ** 0.8
    p /= p.sum()
    n = 6000
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 40)), p=p)) for _ in range(n)]
    queries = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 9)), p=p)) for _ in range(40)]
    queries += ["w0", "w0 w0 w1", "w299 w0", "w5 w5 w5 w0 w1 w2", "w250 w0 w1", "w280 w2 w0"]
    monkeypatch.setattr(inverted_index, "EXHAUSTIVE_MAX_POSTINGS", 4096)
    for block_size, ks in ((64, (1, 10, 50)), (16, (1, 3))):  # 16: partial block decodes
        _check_modes(texts, queries, block_size, ks)


def _check_modes(texts: list[str], queries: list[str], block_size: int, ks: tuple) -> None:
    store = MemoryPageStore()
    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), store=store, block_size=block_size)
    idx.add_documents(range(len(texts)), texts)
    for i in range(0, len(texts), 11):
        idx.remove_document(i)
    idx.flush()
    assert idx.get_document_frequency("w0") * 4 >= len(idx)  # a dense term
    for k in ks:
        ref = [idx.search(q, k, mode="exhaustive") for q in queries]
        assert [idx.search(q, k, mode="pruned") for q in queries] == ref
        for mode in ("auto", "pruned", "exhaustive"):
            assert idx.search_many(queries, k, mode=mode) == ref
            cold = InvertedIndex.open(store)
            assert cold.search_many(queries, k, mode=mode) == ref
        cold = InvertedIndex.open(store, k1=idx.k1)
        assert [cold.search(q, k, mode="pruned") for q in queries] == ref
    small = InvertedIndex.open(store)
    small.cache_bytes = 1 << 16  # no room for most lists: still the same
    assert small.search_many(queries, 10) == [idx.search(q, 10) for q in queries]


def test_scifact_quality(data_dir) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
    import common

    sf = common.load_scifact(data_dir / "scifact")
    idx = InvertedIndex()
    idx.add_documents(range(len(sf.texts)), sf.texts)
    runs = {qid: [sf.doc_ids[d] for d, _ in idx.search(q)] for qid, q in zip(sf.query_ids, sf.queries)}
    assert common.mean_ndcg(runs, sf.qrels) >= 0.68


def test_search_many_equals_search() -> None:
    rng = np.random.default_rng(5)
    vocab = [f"w{i}" for i in range(60)]
    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), block_size=16)
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(0, 30)))) for _ in range(500)]
    idx.add_documents(range(500), texts)
    idx.remove_document(3)
    queries = [" ".join(rng.choice(vocab, size=int(rng.integers(0, 5)))) for _ in range(40)]
    queries += ["", "zzz", "w1 w1 w2"]
    for k in (1, 10):
        for mode in ("auto", "pruned", "exhaustive"):
            assert idx.search_many(queries, k, mode=mode) == [idx.search(q, k) for q in queries]
    with pytest.raises(InvalidTypeError):
        idx.search_many("w1")
    with pytest.raises(QueryError):
        idx.search_many(["w1"], top_k=0)
    with pytest.raises(InvalidTypeError):
        idx.search_many(["w1", 3])  # type: ignore[list-item]


def test_allow_filters_and_plans() -> None:
    from llmdsdb.allow import AllowSet

    idx = InvertedIndex(Analyzer(stopwords=False, stem=False), block_size=16)
    idx.add_documents(range(100), ["w1 w2" if i % 2 else "w1" for i in range(100)])
    assert idx.filter_plan(None) == ("none", True)
    assert idx.filter_plan(AllowSet.from_ids([], universe=100)) == ("empty", True)
    few = AllowSet.from_ids([7, 8, 9], universe=100)
    assert idx.filter_plan(few, "w1") == ("candidates", True)
    assert idx.filter_plan(AllowSet.from_ids(range(0, 100, 2), universe=100), "w1").strategy \
        == "bitmap"
    assert [d for d, _ in idx.search("w1 w2", 10, allow=few)] == [7, 9, 8]
    assert idx.search("w1", 10, allow=AllowSet.from_ids([], universe=100)) == []
    assert idx.search("w1", 10, allow=AllowSet.from_ids([150], universe=200)) == []
    with pytest.raises(InvalidTypeError):
        idx.search("w1", allow={1, 2})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        idx.search_many(["w1", "w2"], allow=[few])


def test_open_refuses_damaged_term_dictionary_shards() -> None:
    """Every way a term-dictionary shard can disagree with itself or the others is a
    CorruptionError at open (naming the shard where one is to blame); an intact copy opens
    to the same index."""
    import msgpack

    from llmdsdb.errors import CorruptionError
    from llmdsdb.pages import MemoryPageStore

    idx = InvertedIndex(store=MemoryPageStore(), block_size=16)
    idx.add_documents(range(60), [f"w{i % 7} w{i % 11} x{i} common" for i in range(60)])
    idx.remove_document(5)
    idx.flush()
    st = idx.store
    names = [n for n in st.meta_names("bm25/terms/")]
    assert len(names) > 2
    same = InvertedIndex.open(st)
    assert same._terms == idx._terms and same._tid == idx._tid
    assert all(np.array_equal(a, b) for a, b in zip(same._skip, idx._skip))
    assert same._shard_tids == idx._shard_tids
    assert np.array_equal(same._df.view, idx._df.view)
    assert np.array_equal(same._tmaxtf.view, idx._tmaxtf.view)
    assert np.array_equal(same._tmindl.view, idx._tmindl.view)

    def damaged(name: str, change) -> None:
        old = st.get_meta(name)
        rec = msgpack.unpackb(old, raw=False)
        change(rec)
        st.put_meta(name, msgpack.packb(rec))
        try:
            with pytest.raises(CorruptionError):
                InvertedIndex.open(st)
        finally:
            st.put_meta(name, old)

    a, b = names[0], names[1]
    damaged(a, lambda r: r.pop("skip"))
    damaged(a, lambda r: r.update(tids=r["tids"][:-8]))
    damaged(a, lambda r: r.update(terms=r["terms"] + b"x"))
    damaged(a, lambda r: r.update(skip=r["skip"][:-48]))
    damaged(a, lambda r: r.update(terms="text"))
    damaged(a, lambda r: r.update(tids=np.full(len(r["tids"]) // 8, 10**6, "<i8").tobytes()))
    other = msgpack.unpackb(st.get_meta(b), raw=False)["tids"][:8]
    damaged(a, lambda r: r.update(tids=other + r["tids"][8:]))  # a term id in two shards
    damaged(a, lambda r: r.update(term_lens=np.full(len(r["term_lens"]) // 4, -1,
                                                    "<i4").tobytes()))
    damaged(a, lambda r: r.update(terms=b"\xff" * len(r["terms"])))
    assert InvertedIndex.open(st)._terms == idx._terms  # restored: opens again
