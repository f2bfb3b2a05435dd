"""The exact block maxima of the BM25 query state (llmdsdb/_native/bm25.c,
native_bm25_block_max): each registered list's per-block bound is the largest
tf * (k1 + 1) / (norm[d] + tf) of the block, bit for bit, and pruning with these bounds
(MaxScore over windows, the candidate lookups, the filtered "candidates" plan) returns
exactly what the exhaustive scorer returns, on corpora built so that the bounds differ
from block to block (skewed term frequencies and document lengths, small blocks)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llmdsdb.allow import AllowSet
from llmdsdb.analysis import Analyzer
from llmdsdb.inverted_index import _CNT, InvertedIndex
from tests.property.test_bm25_model import check_query, compressed_lists

VOCAB = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"]


def plain() -> Analyzer:
    return Analyzer(stopwords=False, stem=False)


# a document: a few query words, each repeated 1..8 times, and 0..40 filler words, so tf
# and length (hence each posting's contribution) vary widely between documents and blocks
doc = st.tuples(
    st.lists(st.tuples(st.sampled_from(VOCAB), st.integers(1, 8)), max_size=4),
    st.integers(0, 40),
)


def text_of(d: tuple[list[tuple[str, int]], int]) -> list[str]:
    words, filler = d
    return [w for w, n in words for _ in range(n)] + ["zz"] * filler


def build(corpus: list[list[str]], block: int) -> InvertedIndex:
    idx = InvertedIndex(plain(), block_size=block)
    half = len(corpus) // 2
    idx.add_documents(range(half), [" ".join(t) for t in corpus[:half]])
    idx.flush()  # flushed (compressed) blocks and pending raw ones in the same lists
    idx.add_documents(range(half, len(corpus)), [" ".join(t) for t in corpus[half:]])
    return idx


@given(st.lists(doc, min_size=1, max_size=120), st.lists(st.sampled_from(VOCAB), min_size=1,
       max_size=6), st.integers(1, 6), st.sampled_from([16, 32]))
@settings(deadline=None, max_examples=30)
def test_small_corpora_agree_with_textbook(
    corpus: list[tuple[list[tuple[str, int]], int]], query: list[str], k: int, block: int
) -> None:
    texts = [text_of(d) for d in corpus]
    idx = build(texts, block)
    check_query(idx, dict(enumerate(texts)), query, k)


def textbook_scores(tf: np.ndarray, lengths: np.ndarray, qcounts: np.ndarray,
                    k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """Textbook BM25 of every document (tf: docs x words, qcounts: query count per word)."""
    n = len(lengths)
    df = (tf > 0).sum(axis=0)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    part = tf * (k1 + 1) / (tf + norm[:, None]) * idf
    return (part * qcounts).sum(axis=1)


def index_of_counts(tf: np.ndarray, filler: np.ndarray,
                    block: int) -> tuple[list[str], InvertedIndex]:
    """Words w0.. and a flushed index of one document per row of tf (word counts), each
    padded with its filler count of "zz"."""
    words = [f"w{i}" for i in range(tf.shape[1])]
    texts = [" ".join([w for w, c in zip(words, row) for _ in range(c)] + ["zz"] * f)
             for row, f in zip(tf.tolist(), filler.tolist())]
    idx = InvertedIndex(plain(), block_size=block)
    idx.add_documents(range(len(texts)), texts)
    idx.flush()
    return words, idx


@given(st.integers(0, 2**32 - 1), st.integers(4200, 9000), st.sampled_from([16, 64, 256]),
       st.floats(0.6, 1.6), st.integers(1, 12))
@settings(deadline=None, max_examples=10)
def test_pruned_over_many_windows_equals_exhaustive(seed: int, n: int, block: int, skew: float,
                                                    max_tf: int) -> None:
    # more documents than one pruning window (4,096 doc numbers), so that the k-th score
    # is known when later windows are planned and the bounds decide what is skipped
    rng = np.random.default_rng(seed)
    nw = 24
    p = 1.0 / np.arange(1, nw + 1) ** skew
    p /= p.sum()
    tf = rng.poisson(p * 6, size=(n, nw)) * rng.integers(1, max_tf + 1, size=(n, nw))
    filler = rng.integers(0, 30, n)
    words, idx = index_of_counts(tf, filler, block)
    lengths = tf.sum(axis=1) + filler
    allow = AllowSet.from_ids(list(range(0, n, 7)), universe=n)
    for _ in range(4):
        qw = rng.choice(nw, size=int(rng.integers(2, 7)))
        q = " ".join(words[i] for i in qw)
        full = idx.search(q, top_k=60, mode="exhaustive")
        ref = textbook_scores(tf, lengths, np.bincount(qw, minlength=nw))
        for d, s in full:
            assert abs(s - ref[d]) <= 1e-5
        for k in (1, 3, 10, 60):
            assert idx.search(q, top_k=k, mode="pruned") == full[:k]
        assert idx.search_many([q, q], top_k=10, mode="pruned", threads=2) == [full[:10]] * 2
        want = [h for h in idx.search(q, top_k=n, mode="exhaustive") if h[0] % 7 == 0][:10]
        assert idx.search(q, top_k=10, mode="pruned", allow=allow) == want
        with compressed_lists(idx):
            assert idx.search(q, top_k=10, mode="pruned") == full[:10]


@given(st.integers(0, 2**32 - 1), st.integers(8500, 14000), st.sampled_from([32, 128]))
@settings(deadline=None, max_examples=8)
def test_pruned_lookups_and_window_arrays_equal_exhaustive(seed: int, n: int,
                                                           block: int) -> None:
    # words from present in most documents down to a few dozen: the common ones' bounds
    # fall below the k-th score, and each window then reads them for the documents left
    # either by lookups (many postings for few documents) or through a window array of
    # their tfs (few postings for many documents); both must add exactly what the
    # exhaustive scorer adds
    rng = np.random.default_rng(seed)
    density = np.array([0.7, 0.5, 0.35, 0.2, 0.1, 0.05, 0.02, 0.006, 0.003])
    nw = len(density)
    present = rng.random((n, nw)) < density
    tf = present * rng.integers(1, 5, size=(n, nw))
    filler = rng.integers(0, 25, n)
    words, idx = index_of_counts(tf, filler, block)
    allow = AllowSet.from_ids(list(range(1, n, 3)), universe=n)
    for _ in range(3):
        qw = rng.choice(nw, size=int(rng.integers(3, 8)), replace=False)
        q = " ".join(words[i] for i in qw)
        full = idx.search(q, top_k=n, mode="exhaustive")
        for k in (1, 10, 50):
            assert idx.search(q, top_k=k, mode="pruned") == full[:k]
        want = [h for h in full if h[0] % 3 == 1][:10]
        assert idx.search(q, top_k=10, mode="pruned", allow=allow) == want
        with compressed_lists(idx):
            assert idx.search(q, top_k=10, mode="pruned") == full[:10]


@given(st.lists(doc, min_size=1, max_size=150), st.sampled_from([16, 64]), st.booleans())
@settings(deadline=None, max_examples=40)
def test_block_maxima_are_exact(corpus: list[tuple[list[tuple[str, int]], int]], block: int,
                                compressed: bool) -> None:
    texts = [text_of(d) for d in corpus]
    idx = build(texts, block)
    idx.flush()
    if compressed:
        with compressed_lists(idx):
            _check_block_max(idx)
    else:
        _check_block_max(idx)


def _check_block_max(idx: InvertedIndex) -> None:
    # a pruned query learns the maxima of the blocks it decodes (lists held compressed) or
    # has them all (lists held decoded); an exhaustive one decodes every block
    idx.search(" ".join(VOCAB[:3]), top_k=2, mode="pruned")
    _compare_block_max(idx, complete=False)
    idx.search(" ".join(VOCAB), top_k=3, mode="exhaustive")
    _compare_block_max(idx, complete=True)


def _compare_block_max(idx: InvertedIndex, complete: bool) -> None:
    state = idx._cstate
    if state is None:  # no query term indexed: nothing registered
        assert not complete or not any(w in idx._tid for w in VOCAB)
        return
    norm = idx._norms()
    kp1 = idx.k1 + 1.0
    for w in VOCAB:
        tid = idx._tid.get(w)
        if tid is None:
            continue
        raw = state.block_max(tid)
        if raw is None:  # not registered yet
            assert not complete
            continue
        got = np.frombuffer(raw, dtype=np.float64)
        docs, tfs = idx._term_postings(tid)
        counts = idx._skip[tid][:, _CNT]
        assert len(got) == len(counts)
        t = tfs.astype(np.float64)
        g = (t * kp1) / (norm[docs] + t)  # the kernel's operations, in the same order
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        exact = np.maximum.reduceat(g, starts)
        known = got >= 0
        assert got[known].tolist() == exact[known].tolist()
        assert (got[~known] == -1.0).all()
        if complete:
            assert known.all()
