"""Database.reembed: a new embedder's vectors and graph, staged in batches, switched in one
transaction; searches and writes meanwhile see the old vectors; resumable; abortable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import llmdsdb
from llmdsdb.embedders import CallableEmbedder, HashingEmbedder
from llmdsdb.errors import ConfigConflictError, InvalidArgumentError

OLD, NEW = HashingEmbedder(32), HashingEmbedder(48)
WORDS = ["owls", "hunt", "night", "sea", "salt", "volcano", "erupts", "cats", "purr", "rain"]


def _texts(n: int, tag: str = "") -> list[str]:
    return [f"doc{tag}{i} " + " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 5))
            for i in range(n)]


def _build(path: Path, n: int = 230) -> None:
    with llmdsdb.open(path, embedder=OLD) as db:
        db.add([f"d{i}" for i in range(n)], _texts(n),
               metadata=[{"i": i, "tag": ["a", "b"][i % 2]} for i in range(n)])


def _assert_embedded_by(db: llmdsdb.Database, emb: HashingEmbedder) -> None:
    for doc in db:
        assert np.array_equal(doc.embedding, emb.embed_documents([doc.text])[0]), doc.id


class _Stop(Exception):
    pass


def _interrupt_after(batches: int):
    def progress(p):
        if p.phase == "staging" and p.batches >= batches:
            raise _Stop
    return progress


def test_reembed_switches_vectors_graph_and_identity(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _build(path)
    seen = []
    with llmdsdb.open(path) as db:
        meta_before = {d.id: d.metadata for d in db}
        r = db.reembed(NEW, batch_size=40, progress=seen.append)
        assert (r.documents, r.embedded, r.batches, r.resumed, r.switched) == \
            (230, 230, 6, False, True)
        assert [p.staged for p in seen if p.phase == "staging"] == [40, 80, 120, 160, 200, 230]
        assert seen[-1].phase == "switched"
        assert db.config["embedder"] == NEW.identity().as_dict() and db.dim == 48
        assert db.stats()["hnsw"]["count"] + db.stats()["fresh_vectors"] == 230
        _assert_embedded_by(db, NEW)
        assert {d.id: d.metadata for d in db} == meta_before
        assert db.check() == []
        hits = db.search("owls hunt at night", top_k=5)
        assert hits and hits[0].explain is None
        # the same text upserted again is unchanged: the stored hash is the new vector's
        assert db.upsert(["d3"], [db.get("d3").text], metadata=[meta_before["d3"]]) == 0
        # a second call has nothing to do
        again = db.reembed(NEW)
        assert (again.switched, again.embedded) == (False, 0)
    with llmdsdb.open(path) as db:  # reopened: the stored identity is the new embedder's
        assert db.embedder().identity() == NEW.identity()
        assert db.check() == []
    with pytest.raises(ConfigConflictError, match="re-embed"):
        llmdsdb.open(path, embedder=OLD)


def test_searches_during_reembed_use_the_old_vectors(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _build(path)
    queries = ["owls hunt", "salt sea volcano", "cats purr in the rain"]
    with llmdsdb.open(path) as db, llmdsdb.open(path) as reader:
        before = [[(h.id, h.score) for h in db.search(q, top_k=8)] for q in queries]
        vec_before = db.get("d7").embedding
        checked = []

        def progress(p):
            if p.phase != "staging":
                return
            for handle in (db, reader):  # this handle and another one, mid re-embed
                assert handle.config["embedder"] == OLD.identity().as_dict()
                got = [[(h.id, h.score) for h in handle.search(q, top_k=8)] for q in queries]
                assert got == before
                assert np.array_equal(handle.get("d7").embedding, vec_before)
            assert db.check() == []  # the staged graph and blocks check out too
            checked.append(p.batches)

        db.reembed(NEW, batch_size=50, progress=progress)
        assert checked == [1, 2, 3, 4, 5]
        # after the switch the other handle follows: new identity, new query vectors
        with llmdsdb.open(tmp_path / "ref", embedder=NEW) as ref:
            ref.add([d.id for d in db], [d.text for d in db])
            want = [[h.id for h in ref.search(q, top_k=8)] for q in queries]
        got = [[h.id for h in reader.search(q, top_k=8)] for q in queries]
        assert reader.config["embedder"] == NEW.identity().as_dict()
        assert got == want
        assert reader.embedder().identity() == NEW.identity()


def test_writes_during_reembed_end_up_embedded_by_the_new_model(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _build(path, 120)
    with llmdsdb.open(path) as db:
        def progress(p):
            if p.phase == "staging" and p.batches == 1:
                db.add(["new1"], ["a new owl paragraph"])       # past the cursor
                db.delete(["d5"])                                # staged already
                db.upsert(["d6"], ["doc6 rewritten about volcano salt"])  # staged: new id
                db.update_metadata(["d1"], [{"tag": "changed"}])  # in place, same id
            if p.phase == "staging" and p.batches == 2:
                db.delete(["new1"])
                db.add(["new2"], ["another late document about rain"])

        r = db.reembed(NEW, batch_size=30, progress=progress)
        assert r.documents == 120 and "d5" not in db and "new1" not in db
        assert db.get("d6").text == "doc6 rewritten about volcano salt"
        assert db.get("d1").metadata == {"tag": "changed"}
        assert db.count(filter={"tag": "changed"}) == 1
        _assert_embedded_by(db, NEW)
        assert db.check() == []
        assert db.search("another late document", top_k=1)[0].id == "new2"


def test_interrupted_reembed_resumes_and_abort_restores(tmp_path: Path) -> None:
    path = tmp_path / "db"
    _build(path)
    with llmdsdb.open(path) as db:
        pages_before = db.stats()["pages"]
        old_vecs = {d.id: d.embedding for d in db}
        with pytest.raises(_Stop):
            db.reembed(NEW, batch_size=50, progress=_interrupt_after(2))
        assert db.check() == []
        assert db.config["embedder"] == OLD.identity().as_dict()
        with pytest.raises(ConfigConflictError, match="staged .* abort"):
            db.reembed(HashingEmbedder(40))
        assert db.abort_reembed() is True
        assert db.abort_reembed() is False
        assert db.stats()["pages"] == pages_before
        assert {d.id: d.embedding.tobytes() for d in db} == \
            {k: v.tobytes() for k, v in old_vecs.items()}
        assert db.check() == []
        with pytest.raises(_Stop):
            db.reembed(NEW, batch_size=50, progress=_interrupt_after(3))
    with llmdsdb.open(path) as db:  # a new handle resumes from the cursor
        r = db.reembed(NEW, batch_size=50)
        assert r.resumed and r.embedded == 230 - 150 and r.documents == 230
        _assert_embedded_by(db, NEW)
        assert db.check() == []


def test_reembed_an_empty_database_gives_it_the_embedder(tmp_path: Path) -> None:
    with llmdsdb.open(tmp_path / "db") as db:
        assert db.reembed(NEW).switched and db.check() == []
    with llmdsdb.open(tmp_path / "db") as db:
        assert db.config["embedder"] == NEW.identity().as_dict() and db.check() == []
        db.add(["a"], ["owls hunt at night"])
        assert db.search("owls")[0].id == "a"
        _assert_embedded_by(db, NEW)


def test_reembed_a_text_only_and_a_caller_vector_database(tmp_path: Path) -> None:
    with llmdsdb.open(tmp_path / "text") as db:
        db.add(["a", "b", "c"], ["owls hunt", "sea salt", "..."])
        r = db.reembed("hashing")
        assert r.without_vector == 1 and db.get("c").embedding is None  # nothing to embed
        assert db.config["embedder"]["name"] == "hashing" and db.dim == 256
        assert db.search("owls", top_k=1)[0].id == "a"
        assert db.check() == []
    with llmdsdb.open(tmp_path / "vec") as db:
        db.add(["a", "b"], ["owls hunt", "sea salt"], embeddings=np.eye(2, 5, dtype=np.float32))
        db.reembed(NEW)
        _assert_embedded_by(db, NEW)
        assert db.check() == []


def test_a_stale_handle_cannot_write_old_model_vectors(tmp_path: Path) -> None:
    # both embedders make 32-d vectors: only the identity tells them apart
    other = CallableEmbedder(lambda t: HashingEmbedder(32).embed_documents(t)[:, ::-1],
                             name="reversed", dim=32, model="reversed-hashing-32",
                             normalized=True)
    path = tmp_path / "db"
    _build(path, 50)
    with llmdsdb.open(path) as stale, llmdsdb.open(path) as db:
        stale.count()
        assert stale.embedder().identity() == OLD.identity()
        db.reembed(other, batch_size=20)
        with pytest.raises(ConfigConflictError, match="re-embedded"):
            stale.add(["x"], ["text embedded by the old model"])
        assert "x" not in db
        # the next call sees the new identity, but the caller's function cannot be rebuilt
        with pytest.raises(ConfigConflictError, match="reversed"):
            stale.add(["x"], ["text embedded by the old model"])
        db.add(["x"], ["text embedded by the new model"])
        assert np.array_equal(db.get("x").embedding,
                              other.embed_documents(["text embedded by the new model"])[0])
        assert db.check() == []


def test_reembed_bad_arguments(tmp_path: Path) -> None:
    _build(tmp_path / "db", 5)
    with llmdsdb.open(tmp_path / "db") as db:
        with pytest.raises(InvalidArgumentError, match="batch_size"):
            db.reembed(NEW, batch_size=0)
        with pytest.raises(InvalidArgumentError, match="unknown embedder"):
            db.reembed("no-such-model")
        with db.batch(), pytest.raises(InvalidArgumentError, match="batch"):
            db.reembed(NEW)
        assert db.config["embedder"] == OLD.identity().as_dict()
    with llmdsdb.open(tmp_path / "db", readonly=True) as ro, \
            pytest.raises(llmdsdb.errors.ReadOnlyError):
        ro.reembed(NEW)


def test_compaction_during_staging_and_an_unfinished_one_before_the_switch(
        tmp_path: Path) -> None:
    path = tmp_path / "db"
    _build(path, 300)
    with llmdsdb.open(path) as db:
        db.optimize()  # the vectors into the graph, so compaction has graph work
        with pytest.raises(_Stop):
            db.reembed(NEW, batch_size=50, progress=_interrupt_after(2))
        db.delete([f"d{i}" for i in range(0, 300, 3)])
        db.compact(max_batch=20)  # moves pages; never the staged graph's (not its own)
        assert db.check() == []
        db.delete([f"d{i}" for i in range(1, 300, 3)])

        def stop(p: dict) -> None:
            raise _Stop

        with pytest.raises(_Stop):
            db.compact(max_batch=5, progress=stop)  # leaves compact/progress behind
        with pytest.raises(InvalidArgumentError, match="compaction .* unfinished"):
            db.reembed(NEW, batch_size=50)
        assert db.config["embedder"] == OLD.identity().as_dict()
        assert db.check() == []
        db.compact()
        r = db.reembed(NEW, batch_size=50)
        assert r.resumed and r.switched and r.documents == 100
        _assert_embedded_by(db, NEW)
        assert db.check() == []
