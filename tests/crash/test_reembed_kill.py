"""kill -9 during ``reembed``: a child process re-embeds a database and is SIGKILLed - inside
the embedder, inside a batch's write transaction, right after a commit, inside the switch
transaction, and at points chosen by the parent while the child runs - and each time the
next run resumes. At the end ``check()`` is clean, the stored identity is the new
embedder's, every document's vector equals the new model's output for its text, and every
document was embedded by the new model exactly once in committed work.

"Exactly once" is proved from a log: the child's embedder appends ``E <pid> <ids>`` before
it returns a batch, and the progress callback appends ``C <pid> <staged>`` after each
committed batch. An id may appear in several ``E`` lines only when every one but the last
is the final, unacknowledged ``E`` line of a killed process (work lost with the
transaction it never committed); before every kill, the database must still serve the old
vectors and pass ``check()``.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import llmdsdb
from llmdsdb.embedders import HashingEmbedder

N_DOCS = 600
BATCH = 40
OLD_DIM, NEW_DIM = 24, 40

CHILD = r"""
import os, signal, sys
import numpy as np
import llmdsdb
from llmdsdb.embedders import CallableEmbedder, HashingEmbedder
from llmdsdb.storage import meta_key

path, log_path, mode, k, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
inner = HashingEmbedder(int(sys.argv[6]))
calls = [0]
log = open(log_path, "a", buffering=1)

def die():
    log.flush()
    os.kill(os.getpid(), signal.SIGKILL)

with llmdsdb.open(path) as db:
    ids_of = {d.text: d.id for d in db}

    def fn(texts):
        out = inner.embed_documents(texts)
        log.write("E %d %s\n" % (os.getpid(), " ".join(ids_of[t] for t in texts)))
        calls[0] += 1
        if mode == "embed" and calls[0] == k:
            die()  # the batch was embedded, never committed
        return out

    emb = CallableEmbedder(fn, name="logged", dim=inner.dim, model=inner.identity().model,
                           normalized=True, batch_size=10_000)
    commits = [0]

    def before_commit(txn):
        commits[0] += 1
        switching = txn.get("idxmeta", meta_key("reembed/state")) is None
        if (mode == "commit" and commits[0] == k) or (mode == "switch" and switching):
            die()  # inside the write transaction, before it commits

    db._env.before_commit.append(before_commit)

    def progress(p):
        log.write("C %d %d\n" % (os.getpid(), p.staged))
        print(p.staged, flush=True)
        if mode == "after" and p.batches == k:
            die()  # right after a commit

    db.reembed(emb, batch_size=batch, progress=progress)
print("done", flush=True)
"""


def _texts() -> list[str]:
    words = ["owls", "hunt", "night", "sea", "salt", "volcano", "erupts", "cats", "rain", "fog"]
    return [f"doc{i} " + " ".join(words[(i * j + j) % len(words)] for j in range(1, 6))
            for i in range(N_DOCS)]


def _run_child(path: Path, log: Path, mode: str, k: int, stop_after: int | None = None
               ) -> int:
    """Run the child; with ``stop_after`` the parent SIGKILLs it after reading that many
    acknowledgements (the child keeps working meanwhile). Returns the exit code."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(log), mode, str(k), str(BATCH),
         str(NEW_DIM)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if stop_after is not None:
            for _ in range(stop_after):
                line = proc.stdout.readline()
                if not line or line.strip() == "done":
                    break
            proc.send_signal(signal.SIGKILL)
        proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGKILL), err
    return proc.returncode


def _lines(log: Path) -> list[list[str]]:
    return [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []


def _check_exactly_once(log: Path, ids: list[str], killed: set[int]) -> None:
    lines = _lines(log)
    # the last E line of a killed pid with no C after it: embedded, never acknowledged
    lost: set[int] = set()
    last_e: dict[int, int] = {}
    for n, ln in enumerate(lines):
        pid = int(ln[1])
        if ln[0] == "E":
            last_e[pid] = n
        elif ln[0] == "C":
            last_e.pop(pid, None)
    lost = {n for pid, n in last_e.items() if pid in killed}
    seen: dict[str, list[int]] = {}
    for n, ln in enumerate(lines):
        if ln[0] == "E":
            for i in ln[2:]:
                seen.setdefault(i, []).append(n)
    assert set(seen) == set(ids), "some documents were never embedded by the new model"
    for i, where in seen.items():
        assert all(n in lost for n in where[:-1]), f"{i} embedded again after a commit: {where}"
    repeats = sum(len(w) - 1 for w in seen.values())
    assert repeats <= len(killed) * BATCH


def test_reembed_killed_at_many_points_resumes_and_embeds_each_document_once(
        tmp_path: Path) -> None:
    path, log = tmp_path / "db", tmp_path / "embed.log"
    texts = _texts()
    ids = [f"d{i}" for i in range(N_DOCS)]
    old = HashingEmbedder(OLD_DIM)
    with llmdsdb.open(path, embedder=old) as db:
        db.add(ids, texts)
        baseline = [[h.id for h in db.search(q, top_k=5)] for q in ("owls hunt", "salt fog")]
    rnd = random.Random(17)
    # deterministic kill points (in the embedder, inside a commit, after a commit, in the
    # switch), then kills the parent times while the child runs
    plan = [("embed", 2, None), ("commit", 3, None), ("after", 1, None),
            ("commit", 1, None)]
    plan += [("none", 0, rnd.randint(0, 2)) for _ in range(3)]
    plan += [("switch", 0, None)]
    killed: set[int] = set()
    modes_killed: list[str] = []
    for mode, k, stop in plan:
        before = {ln[1] for ln in _lines(log)}
        code = _run_child(path, log, mode, k, stop)
        pids = {ln[1] for ln in _lines(log)} - before
        modes_killed.append(mode if code else "")
        if code != 0:
            killed |= {int(p) for p in pids}
            with llmdsdb.open(path) as db:  # the old database, whole, until the switch
                assert db.check() == []
                assert db.config["embedder"] == old.identity().as_dict()
                assert [[h.id for h in db.search(q, top_k=5)]
                        for q in ("owls hunt", "salt fog")] == baseline
        else:
            break
    assert modes_killed == [m for m, _, _ in plan], "a run finished before its kill point"
    if code != 0:
        assert _run_child(path, log, "none", 0) == 0
    new = HashingEmbedder(NEW_DIM)
    with llmdsdb.open(path) as db:
        assert db.check() == []
        assert db.config["embedder"]["model"] == new.identity().model
        assert db.dim == NEW_DIM and len(db) == N_DOCS
        want = new.embed_documents(texts)
        for doc in db:
            assert np.array_equal(doc.embedding, want[int(doc.id[1:])]), doc.id
    _check_exactly_once(log, ids, killed)


@pytest.mark.parametrize("seed", range(2))
def test_reembed_killed_at_a_random_moment_resumes(tmp_path: Path, seed: int) -> None:
    path, log = tmp_path / "db", tmp_path / "embed.log"
    texts = _texts()[:200]
    ids = [f"d{i}" for i in range(200)]
    with llmdsdb.open(path, embedder=HashingEmbedder(OLD_DIM)) as db:
        db.add(ids, texts)
    code = _run_child(path, log, "none", 0, stop_after=random.Random(seed).randint(0, 5))
    killed = {int(ln[1]) for ln in _lines(log)} if code else set()
    if code:
        assert _run_child(path, log, "none", 0) == 0
    with llmdsdb.open(path) as db:
        assert db.check() == []
        want = HashingEmbedder(NEW_DIM).embed_documents(texts)
        assert all(np.array_equal(d.embedding, want[int(d.id[1:])]) for d in db)
    _check_exactly_once(log, ids, killed)
