"""Database.compact(): space given back, results kept, bounded steps, resumable, readers safe.

Real LMDB files in tmp dirs. The documents are shaped like SciFact's (384-d unit vectors,
texts of ~120 words from a Zipf-like vocabulary), so that records and vector pages are of
the sizes a real corpus has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import llmdsdb
from llmdsdb import compaction
from llmdsdb.errors import InvalidArgumentError

N, DIM = 400, 384


def corpus(n: int = N, dim: int = DIM, seed: int = 0) -> tuple[list, list, np.ndarray]:
    """SciFact-sized documents at dim 384; shorter texts, fewer words for small dims."""
    rng = np.random.default_rng(seed)
    big = dim >= 128
    vocab = [f"w{i}" for i in range(3000 if big else 500)]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    lo, hi = (80, 160) if big else (15, 40)
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(lo, hi)), p=p))
             for _ in range(n)]
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [f"d{i}" for i in range(n)], texts, v


def build(path: str, n: int = N, dim: int = DIM, **kw: object
          ) -> tuple[llmdsdb.Database, list, list, np.ndarray]:
    ids, texts, emb = corpus(n, dim)
    kw.setdefault("auto_compact_debt", None)
    kw.setdefault("durability", "nosync")  # a process kill loses nothing committed in any mode
    kw.setdefault("fresh_max_vectors", 64)  # most vectors in the graph
    db = llmdsdb.open(path, **kw)
    for s in range(0, n, 100):
        db.add(ids[s:s + 100], texts[s:s + 100], emb[s:s + 100])
    return db, ids, texts, emb


def answers(db: llmdsdb.Database, texts: list, emb: np.ndarray, rest: list[int]) -> tuple:
    """BM25 top-10 (ids, scores) for 30 queries and vector top-10 (ids, scores) for 30."""
    qs = [" ".join(texts[i].split()[3:7]) for i in rest[:30]]
    bm = [[(h.id, h.score) for h in db.search(q, top_k=10, fusion_weight=0.0)] for q in qs]
    vec = [[(h.id, h.score) for h in db.search(vector=emb[i] + 0.01, top_k=10,
                                                fusion_weight=1.0)] for i in rest[:30]]
    return bm, vec


def same(a: tuple, b: tuple) -> None:
    for x, y in zip(a[0], b[0]):  # BM25: same ids; scores to the kernel's quantum
        assert [i for i, _ in x] == [i for i, _ in y]
        np.testing.assert_allclose([s for _, s in x], [s for _, s in y], rtol=1e-12)
    assert a[1] == b[1]  # vectors: identical ids and distances


def delete_half(db: llmdsdb.Database, ids: list) -> list[int]:
    rng = np.random.default_rng(1)
    dead = set(rng.choice(len(ids), len(ids) // 2, replace=False).tolist())
    db.delete([ids[i] for i in sorted(dead)])
    return [i for i in range(len(ids)) if i not in dead]


def test_half_deleted_gives_back_40_percent(tmp_path) -> None:
    db, ids, texts, emb = build(str(tmp_path / "db"))
    with db:
        full = compaction.pages_in_use(db._env)["in_use"]
        rest = delete_half(db, ids)
        ref = answers(db, texts, emb, rest)
        st = db.stats()["compaction"]
        assert st["debt"] > 0.4 and st["dead_nodes"] > 0 and st["dead_tokens"] > 0
        rep = db.compact(max_batch=100)
        assert rep["steps"] > 5 and not rep["resumed"]
        after = compaction.pages_in_use(db._env)["in_use"]
        assert after <= 0.6 * full, (full, after)
        st = db.stats()
        assert st["compaction"]["debt"] == 0.0 and st["compaction"]["in_progress"] is None
        assert st["hnsw"]["nodes"] == st["hnsw"]["count"]  # deleted nodes dropped
        assert st["bm25"]["total_postings"] == sum(
            len(set(texts[i].split())) for i in rest)  # no dead postings left
        a = st["compaction"]
        # page ids dense, but for pages of other owners (the metadata index) left in place:
        # no movable page above `used`, and only a few pinned ones (where they sit depends
        # on the allocator's holes when they were written - postings tails are rewritten in
        # place, so a dense build leaves none below)
        with db._state.reading() as (_txn, ix):
            pinned = compaction._pinned(db._state.store, ix)
            assert pinned is not None and len(pinned) <= 4
            assert compaction._to_move(db._state.store.allocator, pinned) == 0
        assert a["page_ids_used"] <= a["page_ids_high_water"]
        same(ref, answers(db, texts, emb, rest))
        for i in rest:  # every remaining document found by its own vector
            assert db.search(vector=emb[i], top_k=1, fusion_weight=1.0)[0].id == ids[i]
        assert db.check() == []
    with llmdsdb.open(str(tmp_path / "db")) as db:  # and after a reopen
        same(ref, answers(db, texts, emb, rest))
        assert db.compact()["steps"] == 0  # nothing left to do


def test_writes_between_steps(tmp_path) -> None:
    """Adds, upserts and deletes between compaction steps (the progress callback runs on
    the compacting thread, between two transactions) end in a clean, searchable state."""
    db, ids, texts, emb = build(str(tmp_path / "db"), n=200, dim=32)
    extra_ids, extra_texts, extra_emb = corpus(60, dim=32, seed=5)
    with db:
        rest = delete_half(db, ids)
        k = [0]

        def between(p: dict) -> None:
            j = k[0]
            k[0] += 1
            if j < 12:
                db.add([f"x{j}-{m}" for m in range(5)], extra_texts[5 * j:5 * j + 5],
                       extra_emb[5 * j:5 * j + 5])
                db.delete([ids[rest[j]]])
            if j == 3:
                db.upsert([ids[rest[20]]], ["replaced text w1 w2"], [emb[rest[20]]])

        db.compact(max_batch=40, progress=between)
        assert db.check() == []
        assert db.search("replaced", top_k=1)[0].id == ids[rest[20]]
        for j in range(min(k[0], 12)):
            assert ids[rest[j]] not in db
            assert db.search(vector=extra_emb[5 * j], top_k=1,
                             fusion_weight=1.0)[0].id == f"x{j}-0"
        db.compact()
        st = db.stats()
        assert st["compaction"]["debt"] == 0.0 and db.check() == []
        assert st["hnsw"]["nodes"] == st["hnsw"]["count"]


def test_concurrent_reader_sees_whole_steps(tmp_path) -> None:
    db, ids, texts, emb = build(str(tmp_path / "db"), n=200, dim=32)
    with db:
        rest = delete_half(db, ids)
        ref = answers(db, texts, emb, rest)
        stop = threading.Event()
        seen: list[object] = []

        def reader() -> None:
            try:
                while not stop.is_set():
                    same(ref, answers(db, texts, emb, rest))
                    seen.append(1)
            except BaseException as exc:  # reported by the main thread
                seen.append(exc)
                raise

        t = threading.Thread(target=reader)
        t.start()
        try:
            db.compact(max_batch=30)
        finally:
            stop.set()
            t.join()
        assert seen and not [e for e in seen if isinstance(e, BaseException)]
        same(ref, answers(db, texts, emb, rest))
        assert db.check() == []


def test_other_threads_write_between_steps(tmp_path) -> None:
    """compact() holds the write-call lock per step only: a writer thread's add completes
    while the compaction is still running (the progress callback, between two steps, waits
    for it)."""
    db, ids, texts, emb = build(str(tmp_path / "db"), n=200, dim=32)
    with db:
        delete_half(db, ids)
        go, done = threading.Event(), threading.Event()

        def writer() -> None:
            go.wait(60)
            db.add(["new"], ["a document added during compaction"], emb[:1] * 2)
            done.set()

        t = threading.Thread(target=writer)
        t.start()
        seen = []

        def between(p: dict) -> None:
            if p["step"] == 2:
                go.set()
                seen.append(done.wait(60))

        try:
            db.compact(max_batch=30, progress=between)
        finally:
            go.set()
            t.join()
        assert seen == [True]
        assert db.search("during compaction", top_k=1)[0].id == "new"
        assert db.check() == []


def test_stop_and_resume(tmp_path) -> None:
    db, ids, texts, emb = build(str(tmp_path / "db"), n=200, dim=32)
    with db:
        rest = delete_half(db, ids)
        ref = answers(db, texts, emb, rest)
        calls = [0]

        def stop() -> bool:
            calls[0] += 1
            return calls[0] > 4

        rep = compaction.compact(db._state, max_batch=50, stop=stop)
        assert rep["steps"] == 4
        st = db.stats()["compaction"]
        assert st["in_progress"] in compaction.PHASES
        assert db.check() == []
        same(ref, answers(db, texts, emb, rest))
    with llmdsdb.open(str(tmp_path / "db"), auto_compact_debt=None,
                      durability="nosync") as db:
        rep = db.compact(max_batch=50)
        assert rep["resumed"] and rep["steps"] > 0
        assert db.stats()["compaction"]["debt"] == 0.0
        same(ref, answers(db, texts, emb, rest))
        assert db.check() == []


def test_auto_compaction_past_the_debt(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(compaction, "AUTO_MIN_DEAD_BYTES", 0)
    db, ids, texts, emb = build(str(tmp_path / "db"), n=200, dim=32, auto_compact_debt=0.3)
    with db:
        db.delete(ids[:25])  # debt 1/8: below
        assert db.stats()["compaction"]["dead_nodes"] > 0
        db.delete(ids[25:100])  # debt 1/2: the delete compacts before it returns
        st = db.stats()["compaction"]
        assert st["debt"] == 0.0 and st["dead_nodes"] == 0 and db.check() == []
    with pytest.raises(InvalidArgumentError):
        llmdsdb.open(str(tmp_path / "db"), auto_compact_debt=1.5)


def test_everything_deleted_and_bad_arguments(tmp_path) -> None:
    db, ids, texts, emb = build(str(tmp_path / "db"), n=150, dim=16)
    with db:
        with pytest.raises(InvalidArgumentError):
            db.compact(max_batch=0)
        with pytest.raises(InvalidArgumentError), db.batch():
            db.compact()
        db.delete(ids)
        db.compact(max_batch=20)
        st = db.stats()
        assert st["hnsw"]["nodes"] == 0 and st["bm25"]["total_postings"] == 0
        assert db.check() == []
        db.add(ids[:10], texts[:10], emb[:10])
        assert db.search(vector=emb[3], top_k=1, fusion_weight=1.0)[0].id == ids[3]
        assert db.check() == []


KILLER = r"""
import os, signal, sys
import llmdsdb
from llmdsdb import compaction
path, phase, mid = sys.argv[1], sys.argv[2], sys.argv[3] == "mid"
fn = compaction._PHASE_FN[phase]
def run(*a):
    out = fn(*a)
    if mid:  # the step's work is done, its commit is not
        os.kill(os.getpid(), signal.SIGKILL)
    return out
compaction._PHASE_FN[phase] = run
def between(p):
    if not mid and p["phase"] == phase:  # the step committed
        os.kill(os.getpid(), signal.SIGKILL)
with llmdsdb.open(path, auto_compact_debt=None, durability="nosync") as db:
    db.compact(max_batch=150, progress=between)
print("finished", flush=True)
"""


@pytest.mark.parametrize("phase,mid", [
    ("postings", "mid"), ("forward", "after"), ("purged", "mid"), ("fresh", "mid"),
    ("graph_repair", "mid"), ("graph_repair", "after"), ("graph_move", "mid"),
    ("pages", "mid")])
def test_kill9_during_compaction(tmp_path, phase, mid) -> None:
    """SIGKILL inside a step (its work done, not committed) or right after its commit, in
    every phase: the database opens, checks clean, answers as before, and the next
    compact() resumes and finishes."""
    path = str(tmp_path / "db")
    db, ids, texts, emb = build(path, n=200, dim=32)
    with db:
        rest = delete_half(db, ids)
        db.add(["f1", "f2"], ["fresh one", "fresh two"], emb[:2] * -1)  # stay fresh
        db.delete(["f1"])
        ref = answers(db, texts, emb, rest)
    proc = subprocess.run([sys.executable, "-c", KILLER, path, phase, mid],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with llmdsdb.open(path, auto_compact_debt=None, durability="nosync") as db:
        assert db.check() == []
        same(ref, answers(db, texts, emb, rest))
        rep = db.compact(max_batch=150)
        assert rep["resumed"] == (phase != "postings")
        assert db.stats()["compaction"]["debt"] == 0.0 and db.check() == []
        same(ref, answers(db, texts, emb, rest))
