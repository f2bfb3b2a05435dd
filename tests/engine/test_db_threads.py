"""Threads sharing one Database: searches run side by side (each in its own read
transaction) while a writer thread adds batches that grow the map; no error, no wrong hit."""

from __future__ import annotations

import threading

import numpy as np

import llmdsdb
import llmdsdb.retrieval_pipeline as rp

from dbtestutil import unit_vectors

# Only a guard against a hang: the test makes no claim about time. With one lock held for a
# whole search (the old design) the second reader never reaches the barrier.
BARRIER_TIMEOUT_S = 60


def test_two_readers_search_at_once_while_a_writer_grows_the_map(tmp_path, monkeypatch):
    dim = 8
    rng = np.random.default_rng(11)
    filler = [" ".join(f"f{x}" for x in rng.integers(0, 50_000, 80)) for _ in range(160)]
    emb = unit_vectors(160, dim, 12)
    path = str(tmp_path / "db")
    db = llmdsdb.open(path, map_size_bytes=1 << 20, fresh_max_vectors=64, durability="nosync")
    db.add(["w0"], [f"uniq0 {filler[0]}"], embeddings=emb[:1])
    map_before = db._env.stat()["map_size_bytes"]

    inside = threading.Barrier(2, timeout=BARRIER_TIMEOUT_S)
    meet = {"left": 6}  # searches that must meet another one inside the search
    meet_lock = threading.Lock()
    real = rp.HybridSearcher.search_many

    def meeting_search_many(self, queries):
        with meet_lock:
            wait = threading.current_thread().name.startswith("reader") and meet["left"] > 0
            if wait:
                meet["left"] -= 1
        if wait:
            inside.wait()  # both readers are inside a search here, each in its transaction
        return real(self, queries)

    monkeypatch.setattr(rp.HybridSearcher, "search_many", meeting_search_many)
    committed = [1]  # documents w0..w{committed-1} are in the database
    errors: list[BaseException] = []
    written = threading.Event()

    def writer() -> None:
        try:
            i = 1
            while i < 160:
                j = min(160, i + 20)
                db.add([f"w{k}" for k in range(i, j)],
                       [f"uniq{k} {filler[k]}" for k in range(i, j)], embeddings=emb[i:j])
                committed[0] = j
                i = j
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            written.set()

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            n = 0
            while n < 30 or not written.is_set():  # search for as long as the writer writes
                n += 1
                k = int(r.integers(0, committed[0]))
                hits = db.search(f"uniq{k}", vector=emb[k], top_k=3, fusion_weight=0.3)
                assert hits and hits[0].id == f"w{k}", (k, [h.id for h in hits])
                assert hits[0].text.startswith(f"uniq{k} ")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, name="writer")]
    threads += [threading.Thread(target=reader, args=(s,), name=f"reader-{s}") for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        assert meet["left"] == 0  # the readers met inside a search six times
        assert db._env.stat()["map_size_bytes"] > map_before  # the writer grew the map
        assert db.count() == committed[0] and db.check() == []
    finally:
        db.close()
