"""A database with an embedder: text in, hybrid search out; identities never mixed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dbtestutil import digest

import llmdsdb
from llmdsdb.cli import cli
from llmdsdb.embedders import CallableEmbedder, HashingEmbedder
from llmdsdb.errors import ConfigConflictError

TEXTS = ["owls hunt small animals at night", "the sea is salty because of rivers",
         "volcanoes erupt when magma rises", "owls and bats are nocturnal hunters"]
IDS = ["owl", "sea", "volcano", "bats"]


def test_texts_are_embedded_and_text_queries_run_hybrid(tmp_path: Path) -> None:
    with llmdsdb.open(tmp_path / "db", embedder="hashing") as db:
        assert db.add(IDS, TEXTS) == 4
        assert db.dim == 256 and db.config["embedder"]["name"] == "hashing"
        want = HashingEmbedder(256).embed_documents(TEXTS[:1])[0]
        assert np.array_equal(db.get("owl").embedding, want)
        hits = db.search("nocturnal owls", explain=True)
        assert hits[0].id in ("owl", "bats")
        assert any(h.explain.vector_rank is not None for h in hits)       # vector side ran
        bm25_only = db.search("nocturnal owls", fusion_weight=0.0, explain=True)
        assert all(h.explain.vector_rank is None for h in bm25_only)
        assert db.upsert(IDS, TEXTS) == 0  # deterministic embedder: nothing changed


def test_reopening_reuses_the_stored_embedder(tmp_path: Path) -> None:
    with llmdsdb.open(tmp_path / "db", embedder="hashing") as db:
        db.add(IDS, TEXTS)
        first = [h.id for h in db.search("salty sea water")]
    with llmdsdb.open(tmp_path / "db", readonly=True) as db:
        assert db.embedder().identity() == HashingEmbedder(256).identity()
        assert [h.id for h in db.search("salty sea water")] == first


def test_another_embedder_is_refused_and_nothing_written(tmp_path: Path) -> None:
    with llmdsdb.open(tmp_path / "db", embedder="hashing") as db:
        db.add(IDS, TEXTS)
        before = digest(db)
    with pytest.raises(ConfigConflictError, match="embedder 'hashing' .*conflicts with the "
                       "database's embedder 'hashing' .*hashing-v1/blake2b/256"):
        llmdsdb.open(tmp_path / "db", embedder=HashingEmbedder(64))
    other = CallableEmbedder(lambda t: np.ones((len(t), 256)), name="ones", dim=256,
                             model="ones-v1")
    with pytest.raises(ConfigConflictError, match="embedder 'ones'"):
        llmdsdb.open(tmp_path / "db", embedder=other)
    with llmdsdb.open(tmp_path / "db", readonly=True) as db:
        assert digest(db) == before


def test_an_embedder_on_caller_made_vectors_is_refused(tmp_path: Path) -> None:
    with llmdsdb.open(tmp_path / "db") as db:
        db.add(["a"], ["x"], embeddings=np.ones((1, 256), np.float32))
    with pytest.raises(ConfigConflictError, match="vectors were added by the caller"):
        llmdsdb.open(tmp_path / "db", embedder="hashing")


def test_a_text_only_database_takes_an_embedder_later(tmp_path: Path) -> None:
    with llmdsdb.open(tmp_path / "db") as db:
        db.add(["a"], ["plain text"])
    with llmdsdb.open(tmp_path / "db", embedder="hashing") as db:
        db.add(["b"], ["more text"])
        assert db.get("b").embedding is not None
    with llmdsdb.open(tmp_path / "db") as db:
        assert db.config["embedder"]["name"] == "hashing"


def test_a_callable_embedder_must_be_given_again(tmp_path: Path) -> None:
    fn = CallableEmbedder(lambda t: [[float(len(s)), 1.0] for s in t], name="len", dim=2,
                          model="len-v1")
    with llmdsdb.open(tmp_path / "db", embedder=fn) as db:
        db.add(["a", "b"], ["x", "yyyy"])
    with llmdsdb.open(tmp_path / "db") as db:
        with pytest.raises(ConfigConflictError, match="cannot rebuild by itself"):
            db.search("x")
        assert [h.id for h in db.search("x", fusion_weight=0.0)] == ["a"]
    with llmdsdb.open(tmp_path / "db", embedder=fn) as db:
        assert db.search("yyyy", fusion_weight=1.0)[0].id == "b"


def test_cli_ingest_with_an_embedder_then_query_from_text(tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(IDS, TEXTS)))
    run = CliRunner()
    res = run.invoke(cli, ["ingest", str(tmp_path / "db"), str(src), "--embedder", "hashing"])
    assert res.exit_code == 0, res.output
    res = run.invoke(cli, ["query", str(tmp_path / "db"), "nocturnal owls", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["mode"] == "hybrid" and out["results"][0]["id"] in ("owl", "bats")
    res = run.invoke(cli, ["ingest", str(tmp_path / "db"), str(src), "--embedder", "nope"])
    assert res.exit_code == 1 and "unknown embedder 'nope'" in res.stderr


def test_a_resumed_ingest_embeds_only_what_it_did_not_commit(tmp_path: Path) -> None:
    import json

    from llmdsdb.ingest import IngestInterrupted, ingest

    embedded: list[str] = []
    inner = HashingEmbedder(32)

    def fn(texts: list[str]) -> np.ndarray:
        embedded.extend(texts)
        return inner.embed_documents(texts)

    counting = CallableEmbedder(fn, name="counting", dim=32, model=inner.identity().model,
                                normalized=True)
    src = tmp_path / "docs.jsonl"
    rows = [{"id": f"d{i}", "text": f"document {i} about owls and the sea {i % 7}",
             "tag": i % 3} for i in range(95)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = llmdsdb.ingest_io.FieldSpec(metadata_fields=("tag",))

    def stop_after_two(p: object) -> None:
        if p.batches == 2:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    with pytest.raises(IngestInterrupted):
        ingest(tmp_path / "db", [src], spec=spec, batch_size=20, embedder=counting,
               on_progress=stop_after_two)
    assert len(embedded) == 40  # two committed batches
    r = ingest(tmp_path / "db", [src], spec=spec, batch_size=20, embedder=counting)
    assert (r.written, r.unchanged, len(embedded)) == (55, 40, 95)  # the rest, once each
    assert sorted(embedded) == sorted(r["text"] for r in rows)
    # a re-run embeds nothing; changed metadata is written without embedding the text again
    rows[3]["tag"] = 99
    rows[4]["text"] = "a changed text about volcanoes"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    r = ingest(tmp_path / "db", [src], spec=spec, batch_size=20, embedder=counting)
    assert (r.written, len(embedded)) == (2, 96) and embedded[-1] == rows[4]["text"]
    with llmdsdb.open(tmp_path / "db", embedder=counting) as db:
        assert np.array_equal(db.get("d4").embedding,
                              inner.embed_documents([rows[4]["text"]])[0])
        assert db.get("d3").metadata == {"tag": 99}
        assert db.check() == []
