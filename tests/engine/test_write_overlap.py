"""The graph insert of a write runs in a worker thread beside the write's text indexing
(``VectorSegment.add_many_async``, joined in ``write_batch.update_indexes``): one
transaction all the same. A failure on either side leaves the database as it was, no
worker outlives the failed call, the next write works, and with ``threads=1`` the graph is
the one the synchronous insert builds, bit for bit."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from dbtestutil import state_hash, unit_vectors

import llmdsdb
from llmdsdb.errors import CorruptionError
from llmdsdb.hnsw import HNSW
from llmdsdb.inverted_index import InvertedIndex
from llmdsdb.vector_segment import VectorSegment

DIM = 8


def _workers_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llmdsdb-graph-insert"]


def _fill(db: llmdsdb.Database, start: int, n: int, seed: int) -> np.ndarray:
    emb = unit_vectors(n, DIM, seed)
    db.add([f"d{i}" for i in range(start, start + n)],
           [f"word{i % 13} shared text {i}" for i in range(start, start + n)], embeddings=emb)
    return emb


def _answers(db: llmdsdb.Database, q: np.ndarray) -> list:
    return [[(r.id, r.score) for r in db.search("word3 shared", vector=v, top_k=5)] for v in q]


@pytest.mark.parametrize("fresh", [0, 16])  # every write to the graph / merges of the fresh part
def test_failing_graph_insert_leaves_the_database_unchanged(tmp_path, monkeypatch, fresh):
    path = str(tmp_path / "db")
    q = unit_vectors(4, DIM, 99)
    with llmdsdb.open(path, durability="nosync", fresh_max_vectors=fresh) as db:
        _fill(db, 0, 40, 1)
        before, answers = state_hash(db), _answers(db, q)
        real_link = HNSW._link

        def link_then_fail(self, start, stop, threads):
            real_link(self, start, stop, threads)  # the in-memory graph is changed ...
            raise CorruptionError("injected: graph insert failed")  # ... then it fails

        monkeypatch.setattr(HNSW, "_link", link_then_fail)
        with pytest.raises(CorruptionError, match="injected"):
            _fill(db, 40, 30, 2)  # 30 rows: over the fresh limit, so the graph is written
        assert not _workers_alive()
        assert state_hash(db) == before
        assert _answers(db, q) == answers
        assert db.check() == []
        monkeypatch.setattr(HNSW, "_link", real_link)
        _fill(db, 40, 30, 2)
        assert db.count() == 70 and db.check() == []
    with llmdsdb.open(path, readonly=True) as db:
        assert db.count() == 70 and db.check() == []


@pytest.mark.parametrize("fresh", [0, 16])
def test_failing_text_indexing_joins_the_graph_worker_first(tmp_path, monkeypatch, fresh):
    path = str(tmp_path / "db")
    q = unit_vectors(4, DIM, 98)
    with llmdsdb.open(path, durability="nosync", fresh_max_vectors=fresh) as db:
        _fill(db, 0, 40, 3)
        before, answers = state_hash(db), _answers(db, q)
        seen: list[int] = []

        def fail(self, ids, texts):
            seen.append(len(_workers_alive()))  # the graph insert has been started
            raise CorruptionError("injected: text indexing failed")

        monkeypatch.setattr(InvertedIndex, "add_documents", fail)
        with pytest.raises(CorruptionError, match="injected"):
            _fill(db, 40, 30, 4)
        assert seen == [1] or seen == [0]  # 0: the worker may already have finished
        assert not _workers_alive()  # joined before the exception left the write
        monkeypatch.undo()
        assert state_hash(db) == before
        assert _answers(db, q) == answers
        assert db.check() == []
        _fill(db, 40, 30, 4)
        assert db.count() == 70 and db.check() == []


def _graph_arrays(g: HNSW) -> tuple:
    n = g._n
    return (g._n, g._entry, g._max_level, g._adj0[:n].tobytes(), g._vecs[:n].tobytes(),
            g._levels[:n].tobytes(), g._ext[:n].tobytes(), g.stats()["count"])


@pytest.mark.parametrize("fresh", [0, 20])
def test_worker_insert_with_one_thread_builds_the_synchronous_graph(fresh):
    emb = unit_vectors(200, DIM, 7)

    def build(run_async: bool) -> HNSW:
        seg = VectorSegment(HNSW(DIM, M=8, ef_construction=40, ml=1 / math.log(8), seed=5),
                            fresh_max_vectors=fresh)
        for s in range(0, 200, 25):
            ids = np.arange(s, s + 25, dtype=np.int64)
            if run_async:
                seg.add_many_async(emb[s:s + 25], ids, threads=1).wait()
            else:
                seg.add_many(emb[s:s + 25], ids, threads=1)
        seg.merge(threads=1)
        seg._check()
        return seg.graph

    a, b = build(True), build(False)
    assert _graph_arrays(a) == _graph_arrays(b)
    # and the synchronous graph itself is a function of the seed and the calls
    assert _graph_arrays(build(False)) == _graph_arrays(b)
