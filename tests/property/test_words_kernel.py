"""The C word splitter (``_core.words_split``) against its reference, the analyzer's
``words`` (NFKC + casefold, maximal ``str.isalnum`` runs): the same tokens in the same order,
each distinct word listed once and numbered by first appearance; and an index built through
it holds exactly the terms ``Analyzer.analyze`` gives each document."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmdsdb._native import _core
from llmdsdb.analysis import Analyzer
from llmdsdb.errors import InvalidArgumentError
from llmdsdb.inverted_index import InvertedIndex

# every code point class, lone surrogates included, plus ASCII-heavy text with upper case
any_text = st.text(
    alphabet=st.characters(codec=None, categories=None, exclude_categories=()), max_size=60
)
ascii_text = st.text(alphabet="abcXYZ019 _-.,\t\n\x00", max_size=60)
texts_st = st.lists(st.one_of(any_text, ascii_text), max_size=6)


def split(an: Analyzer, texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    slots, counts, words = _core.words_split([t if t.isascii() else an.normalize(t)
                                              for t in texts])
    return np.frombuffer(slots, np.int32), np.frombuffer(counts, np.int64), words


@given(texts_st)
def test_words_split_equals_analyzer_words(texts: list[str]) -> None:
    an = Analyzer()
    slots, counts, words = split(an, texts)
    ref = [an.words(t) for t in texts]
    assert counts.tolist() == [len(r) for r in ref]
    assert [words[s] for s in slots.tolist()] == [w for r in ref for w in r]
    # distinct, numbered by first appearance
    assert words == list(dict.fromkeys(w for r in ref for w in r))


@given(texts_st)
def test_index_terms_equal_analyze(texts: list[str]) -> None:
    an = Analyzer()
    idx = InvertedIndex(Analyzer())
    idx.add_documents(range(len(texts)), texts)
    idx._check()
    expect: dict[str, dict[int, int]] = {}
    for d, t in enumerate(texts):
        tf = Counter(an.analyze(t))
        for term, n in tf.items():
            expect.setdefault(term, {})[d] = n
        assert int(idx._len.view[d]) == sum(tf.values())
    assert set(idx._terms) == set(expect)
    for term, postings in expect.items():
        tid = idx._tid[term]
        docs, tfs = idx._term_postings(tid)
        assert dict(zip(docs.tolist(), tfs.tolist())) == postings
        assert int(idx._df.a[tid]) == len(postings)


def test_words_split_rejects_non_str() -> None:
    with pytest.raises(InvalidArgumentError, match=r"texts\[1\]"):
        _core.words_split(["ok", b"bytes"])
    slots, counts, words = _core.words_split([])
    assert (slots, counts, words) == (b"", b"", [])


def test_many_distinct_words_grow_the_table() -> None:
    texts = [" ".join(f"w{i}x{j}" for j in range(100)) for i in range(200)]
    slots, counts, words = _core.words_split(texts)
    assert len(words) == 20_000 and np.frombuffer(counts, np.int64).tolist() == [100] * 200
    assert words[:3] == ["w0x0", "w0x1", "w0x2"]
    assert np.array_equal(np.frombuffer(slots, np.int32), np.arange(20_000, dtype=np.int32))
