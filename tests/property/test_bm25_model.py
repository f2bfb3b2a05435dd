"""InvertedIndex vs the textbook BM25 formula in plain Python, as a stateful machine:
random adds, removals, flushes and reopens on small corpora with small blocks; after every
step scores equal the formula within 1e-5, pruned == exhaustive, and _check() holds.
Filtered queries (an AllowSet) against brute force: exactly the allowed documents of the
unfiltered ranking, the first min(k, allowed matches) of them, under every plan."""

from __future__ import annotations

import contextlib
import math

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llmdsdb import inverted_index
from llmdsdb.allow import AllowSet
from llmdsdb.analysis import Analyzer
from llmdsdb.inverted_index import InvertedIndex
from llmdsdb.pages import MemoryPageStore

VOCAB = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]
K1, B = 1.2, 0.75


def textbook(docs: dict[int, list[str]], query: list[str], k1: float = K1, b: float = B):
    """score(d) = sum over query tokens t in d of idf(t) tf (k1+1) / (tf + k1 (1-b+b dl/avgdl)),
    idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)), over the live documents ``docs``."""
    n = len(docs)
    if n == 0:
        return {}
    avgdl = sum(len(t) for t in docs.values()) / n
    scores = {}
    for d, toks in docs.items():
        s = 0.0
        hit = False
        for q in query:
            tf = toks.count(q)
            if tf == 0:
                continue
            df = sum(1 for t in docs.values() if q in t)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            s += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(toks) / avgdl))
            hit = True
        if hit:
            scores[d] = s
    return scores


def plain() -> Analyzer:
    return Analyzer(stopwords=False, stem=False)


@contextlib.contextmanager
def compressed_lists(idx: InvertedIndex):
    """The query state with no list held decoded: every block decoded by the kernels."""
    old = inverted_index.DECODED_SHARE
    inverted_index.DECODED_SHARE = 0
    idx._cstate = None
    try:
        yield
    finally:
        inverted_index.DECODED_SHARE = old
        idx._cstate = None


def check_query(idx: InvertedIndex, docs: dict[int, list[str]], query: list[str], k: int):
    ref = textbook(docs, query)
    got = idx.search(" ".join(query), top_k=k, mode="pruned")
    assert got == idx.search(" ".join(query), top_k=k, mode="exhaustive")
    with compressed_lists(idx):
        for mode in ("pruned", "exhaustive"):
            assert idx.search(" ".join(query), top_k=k, mode=mode) == got
    assert len(got) == min(k, len(ref))
    for d, s in got:
        assert abs(s - ref[d]) <= 1e-5, (d, s, ref[d])
    if got:
        worst = got[-1][1]
        returned = {d for d, _ in got}
        for d, s in ref.items():
            if d not in returned:
                assert s <= worst + 1e-9
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True)


@contextlib.contextmanager
def candidates_factor(f: float):
    old = inverted_index.FILTER_CANDIDATES_FACTOR
    inverted_index.FILTER_CANDIDATES_FACTOR = f
    try:
        yield
    finally:
        inverted_index.FILTER_CANDIDATES_FACTOR = old


def check_filtered(idx: InvertedIndex, docs: dict[int, list[str]], query: list[str], k: int,
                   allowed: set[int], universe: int) -> None:
    text = " ".join(query)
    allow = AllowSet.from_ids(sorted(allowed), universe=universe)
    ref = {d: s for d, s in textbook(docs, query).items() if d in allowed}
    full = idx.search(text, top_k=len(docs) + 1) if docs and query else []
    want = [h for h in full if h[0] in allowed][:k]
    # factor 0: "candidates" always (len * 0 <= postings); 1e18: "bitmap" always
    for factor, strategy in ((0, "candidates"), (10**18, "bitmap")):
        with candidates_factor(factor):
            if allowed and text.strip():
                assert idx.filter_plan(allow).strategy == strategy
            for mode in ("pruned", "exhaustive", "auto"):
                got = idx.search(text, top_k=k, mode=mode, allow=allow)
                assert got == want, (strategy, mode)
                assert idx.search_many([text, text], top_k=k, mode=mode,
                                       allow=[allow, None]) == [got, idx.search(text, top_k=k)]
    assert len(want) == min(k, len(ref))
    for d, s in want:
        assert d in allowed and abs(s - ref[d]) <= 1e-5
    if want:
        returned = {d for d, _ in want}
        assert all(s <= want[-1][1] + 1e-9 for d, s in ref.items() if d not in returned)


words = st.lists(st.sampled_from(VOCAB), max_size=12)


@given(st.lists(words, min_size=1, max_size=60), st.lists(st.sampled_from(VOCAB), max_size=4),
       st.integers(1, 12), st.data())
@settings(deadline=None)
def test_filtered_search_equals_brute_force(corpus: list[list[str]], query: list[str], k: int,
                                            data: st.DataObject) -> None:
    idx = InvertedIndex(plain(), block_size=16)
    idx.add_documents(range(len(corpus)), [" ".join(w) for w in corpus])
    universe = len(corpus) + data.draw(st.integers(0, 9))
    allowed = data.draw(st.sets(st.integers(0, universe - 1)))
    check_filtered(idx, dict(enumerate(corpus)), query, k, allowed, universe)


@given(st.lists(words, min_size=1, max_size=40), st.lists(st.sampled_from(VOCAB), max_size=5),
       st.integers(1, 12))
def test_scores_equal_textbook_bm25(corpus: list[list[str]], query: list[str], k: int) -> None:
    idx = InvertedIndex(plain(), block_size=16)
    idx.add_documents(range(len(corpus)), [" ".join(w) for w in corpus])
    check_query(idx, dict(enumerate(corpus)), query, k)


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryPageStore()
        self.idx = InvertedIndex(plain(), block_size=16, store=self.store)
        self.docs: dict[int, list[str]] = {}
        self.next_id = 0

    @rule(batch=st.lists(words, min_size=1, max_size=15))
    def add(self, batch: list[list[str]]) -> None:
        ids = list(range(self.next_id, self.next_id + len(batch)))
        self.next_id += len(batch)
        self.idx.add_documents(ids, [" ".join(w) for w in batch])
        self.docs.update(zip(ids, batch))

    @precondition(lambda self: self.docs)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        d = data.draw(st.sampled_from(sorted(self.docs)))
        self.idx.remove_document(d)
        del self.docs[d]

    @precondition(lambda self: self.docs)
    @rule(data=st.data(), words=words)
    def readd_removed_id(self, data: st.DataObject, words: list[str]) -> None:
        d = data.draw(st.sampled_from(sorted(self.docs)))
        self.idx.remove_document(d)
        self.idx.add_document(d, " ".join(words))
        self.docs[d] = words

    @rule()
    def flush(self) -> None:
        self.idx.flush()
        # every page the store holds is one the index points at (rewritten tails keep
        # their page, replaced pages are freed): nothing leaks, nothing dangles
        ix = self.idx
        held = {int(p) for sk in ix._skip for p in sk[:, 0].tolist()}
        held |= {p for p in ix._doc_pages + ix._fwd_pages if p >= 0}
        assert held == set(self.store._pages)

    @rule()
    def reopen(self) -> None:
        self.idx.flush()
        self.idx = InvertedIndex.open(self.store)

    @rule(query=st.lists(st.sampled_from(VOCAB), min_size=1, max_size=4), k=st.integers(1, 8))
    def query(self, query: list[str], k: int) -> None:
        check_query(self.idx, self.docs, query, k)

    @rule(query=st.lists(st.sampled_from(VOCAB), min_size=1, max_size=4), k=st.integers(1, 8),
          data=st.data())
    def filtered_query(self, query: list[str], k: int, data: st.DataObject) -> None:
        universe = self.next_id + 1
        allowed = data.draw(st.sets(st.integers(0, universe - 1)))
        check_filtered(self.idx, self.docs, query, k, allowed, universe)

    @invariant()
    def consistent(self) -> None:
        self.idx._check()
        assert len(self.idx) == len(self.docs)
        for w in VOCAB[:3]:
            assert self.idx.get_document_frequency(w) == sum(w in t for t in self.docs.values())


TestIndexMachine = IndexMachine.TestCase
TestIndexMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
