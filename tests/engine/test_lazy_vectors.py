"""Opening a database does not read its vectors: the graph and the fresh part are read by
the first use that needs them (a vector or hybrid query, a write that touches vectors,
stats), from the same committed state; BM25-only queries and text-only writes never read
them; two threads asking first get one load and the same answers."""

from __future__ import annotations

import threading

import numpy as np
from dbtestutil import unit_vectors

import llmdsdb

DIM = 8


def _make(path: str, n: int = 300, fresh: int | None = 64) -> np.ndarray:
    emb = unit_vectors(n, DIM, 5)
    with llmdsdb.open(path, durability="nosync", fresh_max_vectors=fresh) as db:
        db.add([f"d{i}" for i in range(n)], [f"word{i % 17} common text {i}" for i in range(n)],
               embeddings=emb)
    return emb


def _vectors(db: llmdsdb.Database):  # the handle's vector segment (internal)
    return db._state.ix.vectors


def test_open_and_bm25_queries_do_not_read_the_graph(tmp_path):
    path = str(tmp_path / "db")
    emb = _make(path)
    with llmdsdb.open(path, readonly=True) as eager_ref:
        eager_ref.stats()  # reads the vectors before any query: the reference answers
        assert _vectors(eager_ref).loaded
        want_v = [(r.id, r.score) for r in eager_ref.search(vector=emb[3], top_k=5,
                                                             fusion_weight=1.0)]
        want_h = [(r.id, r.score) for r in eager_ref.search("word3", vector=emb[3], top_k=5)]
    with llmdsdb.open(path, readonly=True) as db:
        seg = _vectors(db)
        assert not seg.loaded
        assert [r.id for r in db.search("word5 common", top_k=3, fusion_weight=0.0)]
        db.search_many(["word1", "word2"], top_k=3, fusion_weight=0.0)
        assert db.count() == 300 and "d7" in db
        assert not seg.loaded  # BM25-only work never read the vectors
        got_v = [(r.id, r.score) for r in db.search(vector=emb[3], top_k=5, fusion_weight=1.0)]
        assert seg.loaded and seg.load_seconds > 0
        assert got_v == want_v
        assert [(r.id, r.score) for r in db.search("word3", vector=emb[3], top_k=5)] == want_h


def test_writes_before_any_vector_query(tmp_path):
    path = str(tmp_path / "db")
    emb = _make(path)
    more = unit_vectors(40, DIM, 9)
    with llmdsdb.open(path, durability="nosync", fresh_max_vectors=64) as db:
        db.add(["t0"], ["text only word3"])
        assert not _vectors(db).loaded  # a text-only write leaves the vectors unread
        db.add([f"e{i}" for i in range(40)], ["more"] * 40, embeddings=more)  # reads them
        assert _vectors(db).loaded
        db.delete(["d0"])
        hits = db.search(vector=emb[1], top_k=3, fusion_weight=1.0)
        assert hits[0].id == "d1"
    with llmdsdb.open(path, readonly=True) as db:
        assert db.stats()["hnsw"]["count"] + db.stats()["fresh_vectors"] == 339
        assert db.search(vector=more[7], top_k=1, fusion_weight=1.0)[0].id == "e7"
        assert "d0" not in db


def test_two_threads_asking_first_share_one_load(tmp_path, monkeypatch):
    from llmdsdb import vector_segment

    path = str(tmp_path / "db")
    emb = _make(path, fresh=32)
    with llmdsdb.open(path, readonly=True) as ref:
        want = [[(r.id, r.score) for r in ref.search(vector=emb[i], top_k=4, fusion_weight=1.0)]
                for i in range(6)]
    opens = []
    real = vector_segment.HNSW.open.__func__  # type: ignore[attr-defined]

    def counting_open(cls, *a, **kw):  # type: ignore[no-untyped-def]
        opens.append(1)
        return real(cls, *a, **kw)

    monkeypatch.setattr(vector_segment.HNSW, "open", classmethod(counting_open))
    with llmdsdb.open(path, readonly=True) as db:
        assert not opens
        out: dict[int, list] = {}
        go = threading.Barrier(2, timeout=60)

        def run(t: int) -> None:
            go.wait()
            out[t] = [[(r.id, r.score) for r in db.search(vector=emb[i], top_k=4,
                                                          fusion_weight=1.0)]
                      for i in range(6)]

        threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert out[0] == out[1] == want
        assert len(opens) == 1  # one load for both threads
