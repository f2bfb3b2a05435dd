"""Analyzer: normalisation, splitting, bounds, stop words, stemming, config round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmdsdb.analysis import _WORD_RE, ENGLISH_STOP_WORDS, MEMO_MAX_ENTRIES, Analyzer
from llmdsdb.errors import FormatVersionError, InvalidArgumentError, InvalidTypeError


def test_pipeline_example() -> None:
    an = Analyzer()
    assert an.analyze("The Cats are running_fast, in 2020!") == ["cat", "run", "fast", "2020"]
    an._check()


def test_stop_words_are_the_lucene_list() -> None:
    assert len(ENGLISH_STOP_WORDS) == 33 and "the" in ENGLISH_STOP_WORDS
    assert Analyzer().analyze("this is not the end") == ["end"]
    assert Analyzer(stopwords=False).analyze("this is") == ["this", "is"]


def test_nfkc_and_casefold() -> None:
    an = Analyzer(stem=False, stopwords=False)
    assert an.analyze("ＡＢＣ ﬁne Straße") == ["abc", "fine", "strasse"]


def test_digits_kept_underscore_splits() -> None:
    an = Analyzer(stem=False)
    assert an.analyze("p53 il_6 x2") == ["p53", "il", "6", "x2"]


def test_control_characters_nul_and_lone_surrogates_are_separators() -> None:
    an = Analyzer(stem=False)
    text = "ab\x00cd\udc80ef\x07gh\ud800"
    assert an.analyze(text) == ["ab", "cd", "ef", "gh"]
    assert an.analyze(text) == an.analyze(text)  # deterministic, memo or not


def test_long_tokens_dropped_not_truncated() -> None:
    an = Analyzer(max_token_len=10)
    assert an.analyze("x" * 10 + " " + "y" * 11) == ["x" * 10]
    assert Analyzer().analyze("a" * (1 << 20)) == []  # a 1 MB token
    assert Analyzer(min_token_len=3, stem=False).analyze("ab abc") == ["abc"]


def test_bad_input_types() -> None:
    an = Analyzer()
    for bad in (None, 3, b"bytes", ["list"]):
        with pytest.raises(InvalidTypeError):
            an.analyze(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match=r"texts\[1\]"):
        an.analyze_many(["ok", 5])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError):
        an.analyze_many("a string")


def test_bad_config() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown language"):
        Analyzer(language="klingon")
    with pytest.raises(InvalidArgumentError):
        Analyzer(min_token_len=0)
    with pytest.raises(InvalidArgumentError):
        Analyzer(min_token_len=5, max_token_len=4)
    with pytest.raises(InvalidArgumentError, match="no built-in stop words"):
        Analyzer(language="french")
    assert Analyzer(language="french", stopwords=False).analyze("chanteuses") == ["chanteux"]


def test_config_round_trip() -> None:
    for an in (
        Analyzer(),
        Analyzer(stopwords=["Foo", "bar"], stem=False, min_token_len=2, max_token_len=20),
        Analyzer(language="german", stopwords=False),
    ):
        d = an.to_dict()
        assert d["version"] == 1
        back = Analyzer.from_dict(d)
        assert back == an and back.to_dict() == d
        assert back.analyze("Foo bars häuser") == an.analyze("Foo bars häuser")
    assert Analyzer(stopwords=["Foo"]).analyze("foo baz") == ["baz"]


def test_from_dict_rejects_unknown_versions_and_missing_fields() -> None:
    d = Analyzer().to_dict()
    with pytest.raises(FormatVersionError):
        Analyzer.from_dict({**d, "version": 99})
    del d["stem"]
    with pytest.raises(InvalidArgumentError, match="stem"):
        Analyzer.from_dict(d)


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import llmdsdb.analysis as mod

    monkeypatch.setattr(mod, "MEMO_MAX_ENTRIES", 10)
    an = Analyzer(stem=False)
    words = [f"w{i}" for i in range(50)]
    assert an.analyze(" ".join(words)) == words
    assert an.analyze_many([" ".join(words)]) == [words]
    assert an.terms(words) == words
    assert len(an._memo) <= 10
    assert MEMO_MAX_ENTRIES >= 1000


text_st = st.text(
    alphabet=st.characters(codec=None, categories=None, exclude_categories=()), max_size=80
)


@given(st.lists(text_st, max_size=5))
def test_words_match_the_reference_regex_and_batches_match(texts: list[str]) -> None:
    an = Analyzer()
    for t in texts:
        assert an.words(t) == _WORD_RE.findall(an.normalize(t))
    assert an.analyze_many(texts) == [an.analyze(t) for t in texts]
    assert an.terms([w for t in texts for w in an.words(t)]) == [
        an.term(w) for t in texts for w in an.words(t)
    ]
    an._check()
