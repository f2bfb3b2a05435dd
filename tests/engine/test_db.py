"""The Database API on real LMDB files: writes, batches, reopen, configuration, readonly,
search, check, copy."""

from __future__ import annotations

import os

import numpy as np
import pytest

import llmdsdb
from llmdsdb.analysis import Analyzer
from llmdsdb.errors import (
    ClosedError,
    ConfigConflictError,
    DimensionError,
    DuplicateIdError,
    ReadOnlyError,
)

from dbtestutil import dump, unit_vectors

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a lazy cat sleeps all day",
    "foxes and dogs are canines",
    "cats are felines and sleep a lot",
    "the stock market fell sharply today",
    "interest rates and the bond market",
]


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "db")


def _fill(db, n=len(TEXTS), dim=8, seed=0):
    ids = [f"d{i}" for i in range(n)]
    emb = unit_vectors(n, dim, seed)
    db.add(ids, TEXTS[:n], embeddings=emb, metadata=[{"i": i} for i in range(n)])
    return ids, emb


def test_add_get_count_contains(path):
    with llmdsdb.open(path) as db:
        assert db.count() == 0 and db.generation == 0 and len(db) == 0
        ids, emb = _fill(db)
        assert db.count() == len(ids) and db.generation == 1
        d = db.get("d2")
        assert d.text == TEXTS[2] and d.metadata == {"i": 2}
        np.testing.assert_array_equal(d.embedding, emb[2])
        assert "d2" in db and "zz" not in db and 5 not in db
        assert db.get("nope") is None
        assert db.dim == 8
        assert db.check() == []


def test_duplicate_add_is_atomic(path):
    with llmdsdb.open(path) as db:
        _fill(db)
        before = dump(db)
        with pytest.raises(DuplicateIdError):
            db.add(["new", "d1"], ["x", "y"])
        with pytest.raises(DuplicateIdError):
            db.add(["n1", "n1"], ["x", "y"])
        assert dump(db) == before and "new" not in db


def test_upsert_skips_unchanged_and_replaces_changed(path):
    with llmdsdb.open(path) as db:
        ids, emb = _fill(db)
        g = db.generation
        assert db.upsert(ids, TEXTS, embeddings=emb, metadata=[{"i": i} for i in range(6)]) == 0
        assert db.upsert(["d0", "d1"], ["changed text", TEXTS[1]], embeddings=emb[:2],
                         metadata=[{"i": 0}, {"i": 99}]) == 2
        assert db.get("d0").text == "changed text" and db.get("d1").metadata == {"i": 99}
        assert db.generation == g + 1  # the no-op upsert wrote nothing
        assert [r.id for r in db.search("changed", top_k=1)] == ["d0"]
        assert db.search("quick brown fox", fusion_weight=0.0) == [] or \
            db.search("quick brown fox", fusion_weight=0.0)[0].id != "d0"
        assert db.upsert(["d9"], ["brand new"]) == 1 and db.count() == 7
        assert db.check() == []


def test_delete(path):
    with llmdsdb.open(path) as db:
        _fill(db)
        assert db.delete(["d0", "d0", "missing"]) == 1
        assert "d0" not in db and db.count() == 5
        assert all(r.id != "d0" for r in db.search("fox", top_k=10))
        assert db.delete([]) == 0
        assert db.check() == []


def test_batch_groups_calls_into_one_generation(path):
    with llmdsdb.open(path) as db:
        _fill(db)
        g = db.generation
        with db.batch():
            assert db.add(["x1"], ["extra one"]) == 1
            assert db.upsert(["x1"], ["extra one changed"]) == 1
            assert db.delete(["d1"]) == 1
            with pytest.raises(DuplicateIdError):
                db.add(["x1"], ["again"])  # the batch sees its own earlier calls
            assert "x1" not in db  # nothing is visible before the batch ends
        assert db.generation == g + 1
        assert db.get("x1").text == "extra one changed" and "d1" not in db
        assert db.check() == []


def test_batch_exception_writes_nothing(path):
    with llmdsdb.open(path) as db:
        _fill(db)
        before = dump(db)
        with pytest.raises(RuntimeError):
            with db.batch():
                db.add(["x1"], ["extra"])
                raise RuntimeError("boom")
        assert dump(db) == before


def test_nested_batch_exception_drops_only_the_inner_calls(path):
    with llmdsdb.open(path) as db:
        _fill(db)
        g = db.generation
        with db.batch():
            db.add(["keep"], ["kept by the outer batch"])
            with pytest.raises(RuntimeError):
                with db.batch():
                    db.add(["inner"], ["dropped"])
                    db.delete(["d0"])
                    raise RuntimeError("boom")
            db.add(["inner"], ["added again after the savepoint"])  # not a duplicate now
        assert db.generation == g + 1
        assert db.get("inner").text == "added again after the savepoint"
        assert "keep" in db and "d0" in db
        assert db.check() == []


def test_close_inside_batch_raises_at_the_end(path):
    db = llmdsdb.open(path)
    with pytest.raises(ClosedError):
        with db.batch():
            db.add(["a"], ["never written"])
            db.close()
    with pytest.raises(ClosedError):
        with db.batch():  # a batch on a closed database
            pass
    with llmdsdb.open(path) as db:
        assert "a" not in db and db.count() == 0


def test_failure_inside_the_write_reloads_indexes(path, monkeypatch):
    with llmdsdb.open(path) as db:
        _fill(db)
        before = dump(db)
        import llmdsdb.db as dbmod

        calls = {"n": 0}
        real = dbmod.Database._apply

        def failing(self, txn, ops):
            real(self, txn, ops)  # indexes now run ahead of the disk
            calls["n"] += 1
            raise OSError("injected failure after the index updates")

        monkeypatch.setattr(dbmod.Database, "_apply", failing)
        with pytest.raises(OSError):
            db.add(["x1"], ["zebra unicorn"], embeddings=unit_vectors(1, 8, 5))
        monkeypatch.undo()
        assert calls["n"] == 1
        assert dump(db) == before
        assert db.search("zebra unicorn") == []
        assert db.check() == []
        db.add(["x2"], ["zebra"], embeddings=unit_vectors(1, 8, 6))
        assert [r.id for r in db.search("zebra")] == ["x2"]


def test_reopen_keeps_everything(path):
    with llmdsdb.open(path) as db:
        ids, emb = _fill(db)
        db.delete(["d3"])
        before = dump(db)
        hits = db.search("lazy fox", vector=emb[0])
    with llmdsdb.open(path) as db:
        assert dump(db) == before
        assert db.search("lazy fox", vector=emb[0]) == hits
        assert db.check() == []


def test_config_stored_wins_and_conflicts_raise(path):
    with llmdsdb.open(path, metric="ip", hnsw_M=8) as db:
        db.add(["a"], ["x"], embeddings=[np.ones(3)])
    with llmdsdb.open(path) as db:
        assert db.config["metric"] == "ip" and db.config["hnsw_M"] == 8 and db.dim == 3
    with llmdsdb.open(path, metric="ip", dim=3, hnsw_ef_search=77) as db:
        assert db.options.hnsw_ef_search == 77
    for kw in ({"metric": "cosine"}, {"dim": 4}, {"hnsw_M": 16},
               {"hnsw_ef_construction": 100}):
        with pytest.raises(ConfigConflictError):
            llmdsdb.open(path, **kw)


def test_dimension_fixed_by_first_embeddings(path):
    with llmdsdb.open(path) as db:
        db.add(["a"], ["no vector"])
        assert db.dim is None
        db.add(["b"], ["vector"], embeddings=[np.ones(5)])
        assert db.dim == 5
        with pytest.raises(DimensionError):
            db.add(["c"], ["v"], embeddings=[np.ones(4)])
    with llmdsdb.open(path) as db:
        assert db.dim == 5


def test_dimension_given_at_open(path):
    with llmdsdb.open(path, dim=4) as db:
        with pytest.raises(DimensionError):
            db.add(["c"], ["v"], embeddings=[np.ones(5)])
        db.add(["a"], ["text only"])
    with llmdsdb.open(path) as db:
        assert db.dim == 4


def test_readonly(path):
    with llmdsdb.open(path) as db:
        _fill(db)
    with llmdsdb.open(path, readonly=True) as db:
        assert db.readonly and db.count() == 6
        assert db.search("fox")
        with pytest.raises(ReadOnlyError):
            db.add(["z"], ["z"])
        with pytest.raises(ReadOnlyError):
            db.delete(["d0"])
        with pytest.raises(ReadOnlyError):
            with db.batch():
                pass


def test_closed(path):
    db = llmdsdb.open(path)
    db.close()
    db.close()
    with pytest.raises(ClosedError):
        db.count()
    with pytest.raises(ClosedError):
        db.add(["a"], ["b"])


def test_search_sides_and_explain(path):
    with llmdsdb.open(path) as db:
        ids, emb = _fill(db)
        assert db.search("   ") == []
        r = db.search(vector=emb[4], top_k=1)
        assert r[0].id == "d4"
        r = db.search("market", top_k=2, fusion_weight=0.0, explain=True)
        assert {x.id for x in r} == {"d4", "d5"} and r[0].explain.bm25_score > 0
        r = db.search("market", vector=emb[2], top_k=6, fusion="rrf", explain=True)
        assert len(r) == 6 and r[0].score >= r[-1].score
        assert r[0].metadata == db.get(r[0].id).metadata
        many = db.search_many(["market", "lazy"], [emb[0], None], top_k=3)
        assert many[0] == db.search("market", vector=emb[0], top_k=3)
        assert many[1] == db.search("lazy", top_k=3)


def test_iter_documents_order_and_chunks(path, monkeypatch):
    import llmdsdb.db as dbmod

    monkeypatch.setattr(dbmod, "ITER_CHUNK", 3)
    with llmdsdb.open(path) as db:
        db.add([f"k{i:02d}" for i in range(10)], [f"t{i}" for i in range(10)])
        db.upsert(["k03"], ["moved"])
        assert [d.id for d in db.iter_documents()] == (
            [f"k{i:02d}" for i in range(10) if i != 3] + ["k03"])


def test_long_ids_round_trip(path):
    long_id = "é" * 1000
    nul_id = "\x00h" + "a" * 32
    with llmdsdb.open(path) as db:
        db.add([long_id, nul_id, "short"], ["long one", "nul one", "short one"])
        assert db.get(long_id).id == long_id and long_id in db
        assert db.get(nul_id).text == "nul one"
        assert [r.id for r in db.search("long")] == [long_id]
        assert db.delete([long_id]) == 1 and long_id not in db
        assert db.check() == []


def test_map_full_grows_and_retries(tmp_path):
    path = str(tmp_path / "small")
    with llmdsdb.open(path, map_size_bytes=1 << 20) as db:
        texts = [f"document number {i} " + "filler words here " * 50 for i in range(400)]
        emb = unit_vectors(400, 16, 1)
        assert db.add([str(i) for i in range(400)], texts, embeddings=emb) == 400
        assert db.generation == 1 and db.count() == 400
        assert db.check() == []
    with llmdsdb.open(path) as db:
        assert db.count() == 400


def test_copy_to(path, tmp_path):
    with llmdsdb.open(path) as db:
        _fill(db)
        before = dump(db)
        info = db.copy_to(tmp_path / "copy")
        assert info["generation"] == db.generation and info["count"] == 6
        assert info["format_version"] >= 1
    with llmdsdb.open(str(tmp_path / "copy")) as db2:
        assert dump(db2) == before and db2.check() == []


def test_stats(path):
    with llmdsdb.open(path) as db:
        _fill(db)
        s = db.stats()
        assert s["documents"] == 6 and s["generation"] == 1 and s["pages"] >= 0
        assert s["bytes_on_disk"] > 0 and "cache" in s


def test_check_detects_a_missing_document(path):
    with llmdsdb.open(path) as db:
        _fill(db)

        def drop(txn):
            txn.delete("docs", (0).to_bytes(8, "big"))

        db._env.run_write(drop)
        problems = db.check()
        assert problems and any("missing" in p or "not" in p for p in problems)


def test_check_detects_a_page_the_allocator_does_not_match(path):
    with llmdsdb.open(path) as db:
        _fill(db)
        with db._env.read() as txn:
            first_page = next(iter(txn.raw_items("pages")))[0]

        def drop(txn):
            txn.delete("pages", bytes(first_page))

        db._env.run_write(drop)
        assert any(p.startswith("allocator:") for p in db.check())


def test_document_reads_do_not_reload_the_indexes_after_another_commit(path, monkeypatch):
    from llmdsdb.index_state import IndexHolder

    with llmdsdb.open(path) as writer, llmdsdb.open(path) as reader:
        _fill(writer)
        assert reader.search("fox")  # the reader's indexes are loaded
        loads = []
        real = IndexHolder.load
        monkeypatch.setattr(IndexHolder, "load",
                            lambda self, txn, gen: (loads.append(gen), real(self, txn, gen)))
        writer.add(["late"], ["a late fox"], embeddings=unit_vectors(1, 8, 9))
        assert reader.get("late").text == "a late fox" and "late" in reader
        assert reader.count() == len(TEXTS) + 1 and reader.generation == writer.generation
        assert [d.id for d in reader.iter_documents()][-1] == "late"
        assert loads == []  # document reads leave the graph alone
        assert reader.search("late")[0].id == "late"  # a search brings the indexes up
        assert loads == [writer.generation]


def test_map_full_retry_of_a_later_batch_reloads_the_indexes(tmp_path):
    path = str(tmp_path / "small")
    emb = unit_vectors(300, 16, 2)
    rng = np.random.default_rng(5)
    texts = [f"document number {i} filler "  # incompressible enough to overflow 1 MiB
             + " ".join(f"w{x}" for x in rng.integers(0, 5000, 150)) for i in range(300)]
    with llmdsdb.open(path, map_size_bytes=1 << 20, fresh_max_vectors=50) as db:
        db.add([str(i) for i in range(20)], texts[:20], embeddings=emb[:20])
        assert db.search("number", top_k=1)  # the indexes are loaded and clean
        size = db._env.stat()["map_size_bytes"]
        with db.batch():  # too big for the map: aborted, grown, run again from scratch
            db.delete(["3"])
            db.upsert(["4"], ["replaced text"], embeddings=emb[4:5] * -1)
            db.add([str(i) for i in range(20, 300)], texts[20:], embeddings=emb[20:])
        assert db._env.stat()["map_size_bytes"] != size
        assert db.generation == 2 and db.count() == 299 and db.check() == []
        live = [(r.id, round(r.score, 5)) for r in db.search("number filler", emb[7], top_k=20)]
        vec = [r.id for r in db.search(vector=emb[250], top_k=3, fusion_weight=1.0)]
    with llmdsdb.open(path, fresh_max_vectors=50) as db:
        assert db.check() == []
        assert [(r.id, round(r.score, 5))
                for r in db.search("number filler", emb[7], top_k=20)] == live
        assert [r.id for r in db.search(vector=emb[250], top_k=3, fusion_weight=1.0)] == vec
        assert db.get("4").text == "replaced text" and "3" not in db


def test_id_key_has_one_home_in_the_storage_layer():
    # the keys of the ids table are made by storage.id_key alone: no copy to drift from it
    import llmdsdb
    from llmdsdb import documents, storage

    assert documents.id_key is storage.id_key
    assert not any(hasattr(m, "id_key") for m in (llmdsdb.db, llmdsdb.records))


def test_search_uses_the_metric_another_handle_stored(path):
    q = unit_vectors(1, 8, 7)[0]
    early = llmdsdb.open(path)  # opened before the database has a configuration
    try:
        with llmdsdb.open(path, metric="l2") as creator:
            _fill(creator)
            creator.add(["plain"], ["a fox without an embedding"])  # no vector-side score
        got = [(r.id, r.score) for r in early.search("fox", vector=q,
                                                     normalization="theoretical")]
    finally:
        early.close()
    with llmdsdb.open(path) as db:
        assert db.config["metric"] == "l2"
        assert got == [(r.id, r.score) for r in db.search("fox", vector=q,
                                                          normalization="theoretical")]


def test_query_vector_checked_against_the_stored_configuration(path):
    early = llmdsdb.open(path)  # opened before the database has a configuration (cosine)
    try:
        with llmdsdb.open(path, metric="l2") as creator:
            _fill(creator)
        assert early.search(vector=np.zeros(8))  # a zero vector is fine for l2
        with pytest.raises(DimensionError):
            early.search(vector=np.ones(5))
    finally:
        early.close()


def test_write_calls_validate_against_the_stored_configuration(path):
    early = llmdsdb.open(path)  # opened before the database has a configuration (cosine)
    try:
        with llmdsdb.open(path, metric="l2") as creator:
            _fill(creator)
        assert early.add(["zero"], ["origin"], embeddings=[np.zeros(8)]) == 1  # fine for l2
        g = early.generation
        with pytest.raises(DimensionError):
            early.upsert(["short"], ["x"], embeddings=[np.ones(5)])
        assert early.generation == g and early.check() == []
    finally:
        early.close()


def test_check_reports_an_index_record_that_cannot_be_loaded(path):
    with llmdsdb.open(path) as db:
        _fill(db)
        db.optimize()
        with db._env.read() as txn:
            key = next(bytes(k) for k, _ in txn.raw_items("idxmeta") if k.startswith(b"hnsw/"))

        def flip(txn):
            raw = bytearray(txn.raw_get("idxmeta", key))
            raw[-3] ^= 0x40
            txn.raw_put("idxmeta", key, bytes(raw))

        db._env.run_write(flip)  # a commit this handle has not loaded yet
        problems = db.check()
        assert any("indexes cannot be loaded" in p for p in problems), problems
        assert any(key.decode() in p for p in problems)
        assert db.get("d1").text == TEXTS[1]  # the documents stay readable


def test_directory_permissions(path):
    with llmdsdb.open(path):
        pass
    assert os.stat(path).st_mode & 0o777 == 0o700


def test_fresh_segment_merges_into_the_graph(path):
    emb = unit_vectors(40, 8, 3)
    with llmdsdb.open(path, fresh_max_vectors=6) as db:
        for s in range(0, 20, 4):  # 5 batches of 4: the segment overflows and merges
            db.add([f"v{i}" for i in range(s, s + 4)], [f"vec {i}" for i in range(s, s + 4)],
                   embeddings=emb[s:s + 4])
            assert db.check() == []
        st = db.stats()
        assert 0 < st["fresh_vectors"] <= 6  # the rest moved into the graph
        for i in (0, 18):  # one from the graph, one from the fresh segment
            assert db.search(vector=emb[i], top_k=1)[0].id == f"v{i}"
        db.delete(["v0", "v18"])
        assert db.check() == []
        hits = db.search(vector=emb[0], top_k=20)
        assert {h.id for h in hits} == {f"v{i}" for i in range(1, 20) if i != 18}
    with llmdsdb.open(path, fresh_max_vectors=6) as db:
        assert db.check() == []
        assert db.search(vector=emb[19], top_k=1)[0].id == "v19"
        assert db.optimize() >= 1 and db.stats()["fresh_vectors"] == 0
        assert db.optimize() == 0
        assert db.search(vector=emb[19], top_k=1)[0].id == "v19"
        assert db.check() == []


def test_fresh_segment_disabled(path):
    emb = unit_vectors(10, 8, 4)
    with llmdsdb.open(path, fresh_max_vectors=0) as db:
        db.add([str(i) for i in range(10)], ["x"] * 10, embeddings=emb)
        assert db.stats()["fresh_vectors"] == 0
        assert db.search(vector=emb[3], top_k=1)[0].id == "3"
        assert db.check() == []


def _flip_doc_byte(db, iid: int, at: int) -> None:
    """Flip one bit of byte ``at`` of the stored docs record of internal id ``iid``."""
    key = iid.to_bytes(8, "big")

    def flip(txn):
        raw = bytearray(txn.raw_get("docs", key))
        raw[at] ^= 0x40
        txn.raw_put("docs", key, bytes(raw))

    db._env.run_write(flip)


def test_check_detects_a_flipped_byte_and_get_refuses_it(path):
    from llmdsdb.errors import CorruptionError

    with llmdsdb.open(path) as db:
        _fill(db)
        _flip_doc_byte(db, 2, -5)
        problems = db.check()
        assert any("docs" in p for p in problems), problems
        with pytest.raises(CorruptionError):
            db.get("d2")


def test_search_refuses_a_damaged_record_among_its_hits(path):
    """The hits' records are checked in one pass (C fast path, Python decoder for the rest):
    a damaged one raises CorruptionError naming it."""
    from llmdsdb.errors import CorruptionError

    with llmdsdb.open(path) as db:
        db.add(["a", "b", "c"], ["apple pie " * 60, "apple tart", "apple " + "x" * 300])
        assert {r.id for r in db.search("apple", top_k=3, fusion_weight=0.0)} == {"a", "b", "c"}
        assert all(r.text.startswith("apple") for r in db.search("apple", fusion_weight=0.0))
        _flip_doc_byte(db, 1, -3)
        with pytest.raises(CorruptionError, match="docs/doc 1"):
            db.search("apple", top_k=3, fusion_weight=0.0)

def test_iter_documents_across_blocks_with_gaps(path, monkeypatch):
    import llmdsdb.db as dbmod

    monkeypatch.setattr(dbmod, "ITER_CHUNK", 100)
    with llmdsdb.open(path) as db:
        ids = [f"x{i:04d}" for i in range(700)]
        db.add(ids, ["t"] * 700)
        db.delete(ids[250:560])  # a gap spanning whole 256-id blocks
        assert [d.id for d in db.iter_documents()] == ids[:250] + ids[560:]


def test_weight_extremes_fall_back_to_the_side_present(path):
    with llmdsdb.open(path) as db:
        ids, emb = _fill(db)
        assert [r.id for r in db.search("market", fusion_weight=1.0, top_k=2)] and \
            {r.id for r in db.search("market", fusion_weight=1.0, top_k=2)} == {"d4", "d5"}
        assert db.search(vector=emb[1], fusion_weight=0.0, top_k=1)[0].id == "d1"
        # both sides present: weight 0 is BM25's order, weight 1 the vector order
        assert db.search("market", vector=emb[0], fusion_weight=0.0, top_k=2) == \
            db.search("market", fusion_weight=0.0, top_k=2)
        assert db.search("market", vector=emb[0], fusion_weight=1.0, top_k=1)[0].id == "d0"


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_vector_search_is_exact_per_metric(tmp_path, metric):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((60, 6)).astype(np.float32) * rng.uniform(0.5, 3, (60, 1))
    q = rng.standard_normal(6).astype(np.float32)
    if metric == "cosine":
        score = -(X @ q) / np.linalg.norm(X, axis=1)
    elif metric == "ip":
        score = -(X @ q)
    else:
        score = ((X - q) ** 2).sum(axis=1)
    truth = [f"v{i}" for i in np.argsort(score, kind="stable")[:5]]
    with llmdsdb.open(str(tmp_path / metric), metric=metric, fresh_max_vectors=25) as db:
        for s in range(0, 60, 20):  # part of it moves into the graph, part stays fresh
            db.add([f"v{i}" for i in range(s, s + 20)], ["x"] * 20, embeddings=X[s:s + 20])
        assert [r.id for r in db.search(vector=q, top_k=5)] == truth
        assert db.check() == []


def test_analyzer_is_stored_and_conflicts(path):
    from llmdsdb.analysis import Analyzer

    with llmdsdb.open(path, analyzer=Analyzer(stem=False)) as db:
        db.add(["a"], ["running dogs"])
        assert db.search("running") and not db.search("run")
    with llmdsdb.open(path) as db:
        assert db.config["analyzer"]["stem"] is False
        assert not db.search("run")
    with pytest.raises(ConfigConflictError):
        llmdsdb.open(path, analyzer=Analyzer(stem=True))


def test_aborted_first_batch_fixes_nothing(path, monkeypatch):
    import llmdsdb.db as dbmod

    real = dbmod.Database._apply

    def failing(self, txn, ops):
        real(self, txn, ops)
        raise OSError("injected")

    with llmdsdb.open(path) as db:
        monkeypatch.setattr(dbmod.Database, "_apply", failing)
        with pytest.raises(OSError):
            db.add(["a"], ["x"], embeddings=[np.ones(3)])
        monkeypatch.undo()
        assert db.dim is None and db.count() == 0 and db.generation == 0
        db.add(["b"], ["y"], embeddings=[np.ones(5)])  # another dimension is fine now
        assert db.dim == 5 and db.check() == []
    with llmdsdb.open(path) as db:
        assert db.dim == 5 and db.count() == 1


# --- issue 13, finding 5: a damaged LMDB key is reported, never a silent miss ---------------


def _flip_in_file(path: str, needle: bytes, at: int) -> None:
    """Flip one bit of ``needle`` in data.mdb, in place (as a bad sector or a stray write
    would: the key keeps its slot in its B-tree page); every copy, since LMDB may keep an
    old copy of the page."""
    data = os.path.join(path, "data.mdb")
    with open(data, "r+b") as f:
        raw = bytearray(f.read())
        assert raw.count(needle) >= 1
        start = 0
        while (i := raw.find(needle, start)) >= 0:
            raw[i + at] ^= 0x40
            start = i + 1
        f.seek(0)
        f.write(raw)


@pytest.mark.parametrize("victim", [0, 7, 15])  # first, middle and last key of the table
def test_a_flipped_byte_in_an_id_key_is_reported_not_a_silent_miss(path, victim):
    from llmdsdb.errors import CorruptionError

    ids = [f"doc-key-{i:04d}" for i in range(16)]
    with llmdsdb.open(path) as db:
        db.add(ids, [f"text number {i} marker{i}" for i in range(16)])
    name = ids[victim]
    _flip_in_file(path, b"\x03" + name.encode(), 1 + 8)  # "doc-key-0..." -> "doc-key-p..."
    with llmdsdb.open(path) as db:
        # search still finds the document by its text ...
        assert [r.id for r in db.search(f"marker{victim}", top_k=1)] == [name]
        # ... so a lookup by its id must not answer "no such document"
        with pytest.raises(CorruptionError, match="damaged"):
            db.get(name)
        with pytest.raises(CorruptionError):
            name in db  # noqa: B015
        with pytest.raises(CorruptionError):
            db.upsert([name], ["replacement"])  # would write a second document of that id
        # in a batch of new ids sharing its gap (their misses are checked once per gap)
        with pytest.raises(CorruptionError):
            db.upsert([name + "a", "doc-key-", name, name + "b"], ["x", "y", "z", "w"])
        assert db.count() == 16
        assert db.get(ids[(victim + 8) % 16]).id == ids[(victim + 8) % 16]  # others fine
        assert any("is not mapped to it" in p for p in db.check())


# --- issue 13, finding 8: an explicit setting that conflicts with the stored one -----------


@pytest.mark.parametrize(("explicit", "stored"), [
    ({"metric": "cosine"}, {"metric": "l2"}),
    ({"hnsw_M": 8}, {"hnsw_M": 12}),
    ({"hnsw_ef_construction": 50}, {"hnsw_ef_construction": 60}),
    ({"dim": 4}, {}),
    ({"analyzer": Analyzer(stem=False)}, {}),
])
def test_an_explicit_setting_another_handle_stored_differently_is_a_conflict(
        path, explicit, stored):
    early = llmdsdb.open(path, **explicit)  # nothing stored yet: the arguments are accepted
    try:
        with llmdsdb.open(path, **stored) as creator:
            _fill(creator)  # stores its configuration (dim 8)
        for call in (lambda: early.search("fox", vector=unit_vectors(1, 8, 1)[0]),
                     lambda: early.add(["late"], ["x"], embeddings=unit_vectors(1, 8, 2))):
            with pytest.raises(ConfigConflictError):
                call()
        assert "late" not in early
    finally:
        early.close()
    with pytest.raises(ConfigConflictError):  # and at open, as before
        llmdsdb.open(path, **explicit)
