"""Processes sharing one database: a reader querying while a writer commits (monotonic
generations, whole batches only), and a second writer that waits for the write lock and
times out with LockTimeoutError."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from dbtestutil import dump

import llmdsdb
from llmdsdb.errors import LockTimeoutError

PER_BATCH = 5
N_BATCHES = 30

WRITER = r"""
import sys
import numpy as np
import llmdsdb
path, n_batches, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
with llmdsdb.open(path) as db:
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(n_batches):
        db.add([f"g{i}-{j}" for j in range(per)],
               [f"generation {i} shared term doc{j}" for j in range(per)],
               embeddings=rng.standard_normal((per, 8)).astype(np.float32),
               metadata=[{"batch": i} for _ in range(per)])
print("done", flush=True)
"""

READER = r"""
import sys
import numpy as np
import llmdsdb
path, n_batches, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
last = -1
reads = 0
q = np.ones(8, dtype=np.float32)
with llmdsdb.open(path, readonly=True) as db:
    print("ready", flush=True)
    while last < n_batches and reads < 200000:
        s = db.stats()  # generation and count from one snapshot
        g, n = s["generation"], s["documents"]
        assert g >= last, f"generation went back from {last} to {g}"
        assert n == g * per, f"generation {g} with {n} documents: a partial batch"
        hits = db.search("shared term", vector=q if g else None, top_k=50)
        for h in hits:
            b = h.metadata["batch"]
            assert h.id.startswith(f"g{b}-")
        assert len(hits) >= min(50, g * per) if g else True
        # a search snapshot is at least as new as the stats snapshot before it
        assert all(h.metadata["batch"] < max(db.generation, 1) for h in hits)
        last = g
        reads += 1
        if g == n_batches:
            break
    print("reads", reads, "last", last, flush=True)
"""


@pytest.fixture
def path(tmp_path):
    p = str(tmp_path / "db")
    with llmdsdb.open(p) as db:  # create it (a readonly open needs an existing database)
        db.add(["seed"], ["seed document"])
        db.delete(["seed"])
    return p


def test_reader_process_sees_whole_batches_in_order(path):
    base = 2  # the fixture's two generations hold no documents: count them out
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, str(N_BATCHES),
                               str(PER_BATCH)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    reader_src = READER.replace("g, n = s[\"generation\"], s[\"documents\"]",
                                f"g, n = s['generation'] - {base}, s['documents']")
    reader = subprocess.Popen([sys.executable, "-c", reader_src, path, str(N_BATCHES),
                               str(PER_BATCH)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        assert reader.stdout.readline().strip() == "ready"
        writer.stdin.write("go\n")
        writer.stdin.flush()
        _wout, werr = writer.communicate(timeout=120)
        rout, rerr = reader.communicate(timeout=120)
    finally:
        for p in (writer, reader):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert writer.returncode == 0, werr
    assert reader.returncode == 0, rerr
    words = rout.split()
    assert words[0] == "reads" and int(words[1]) >= 1 and int(words[3]) == N_BATCHES
    with llmdsdb.open(path) as db:
        assert db.count() == N_BATCHES * PER_BATCH and db.check() == []


LOCKER = r"""
import sys
from llmdsdb.storage import Environment
env = Environment.open(sys.argv[1])
with env.write() as txn:
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
env.close()
"""


def test_second_writer_waits_for_the_lock_then_times_out(path):
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked", locker.stderr.read()
        with llmdsdb.open(path, lock_timeout_s=0.3) as db:
            before = dump(db)
            with pytest.raises(LockTimeoutError):
                db.add(["x"], ["blocked"])
            assert dump(db) == before
            # a reader is never blocked by the writer
            assert db.count() == 0 and db.search("anything") == []
        # a writer with a long timeout waits, and proceeds once the lock is released
        with llmdsdb.open(path, lock_timeout_s=60) as db:
            result = {}
            t = threading.Thread(target=lambda: result.setdefault("n", db.add(["y"], ["ok"])))
            t.start()
            locker.stdin.write("\n")
            locker.stdin.flush()
            t.join(timeout=60)
            assert result.get("n") == 1
            assert db.get("y").text == "ok" and db.check() == []
    finally:
        if locker.poll() is None:
            locker.kill()
        locker.wait()


# --- map growth under readers: two handles in one process, and another process ------------

GROWING_READERS = r"""
import sys, threading
import numpy as np
import llmdsdb

path, n_batches = sys.argv[1], int(sys.argv[2])
h1 = llmdsdb.open(path, map_size_bytes=1 << 16)
h2 = llmdsdb.open(path, map_size_bytes=1 << 16)  # shares h1's environment
stop = threading.Event()
errors, reads = [], [0]

def reader(db):
    q = np.ones(8, np.float32)
    while not stop.is_set():
        try:
            n = db.count()
            assert (n - 1) % 10 == 0, f"{n} documents: a partial batch"
            hits = db.search("seed shared", vector=q, top_k=5)
            assert hits and hits[0].id == "seed", hits
            assert db.get("seed").text == "seed shared text"
            reads[0] += 1
        except BaseException as exc:
            errors.append(f"reader: {exc!r}")
            stop.set()

def writer():  # grows the map in this process while the readers run
    rng = np.random.default_rng(1)
    try:
        for i in range(n_batches):
            h1.add([f"a{i}-{j}" for j in range(10)], [("alpha%d " % j) * 150 for j in range(10)],
                   embeddings=rng.standard_normal((10, 8)).astype(np.float32) * 0.01)
    except BaseException as exc:
        errors.append(f"writer: {exc!r}")

threads = [threading.Thread(target=reader, args=(db,)) for db in (h1, h2, h2)]
for t in threads:
    t.start()
print("ready", flush=True)
w = threading.Thread(target=writer)
w.start()
w.join()
sys.stdin.readline()  # the other process's writer has finished too
stop.set()
for t in threads:
    t.join()
assert not errors, errors
n = h2.count()
assert n == 1 + 10 * n_batches + 10 * n_batches, n
assert h1.check() == []
print("reads", reads[0], "map", h1.stats()["storage"]["map_size_bytes"], flush=True)
h2.close()
h1.close()
"""

GROWING_WRITER = r"""
import sys
import numpy as np
import llmdsdb

path, n_batches = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(2)
with llmdsdb.open(path, map_size_bytes=1 << 16) as db:
    for i in range(n_batches):
        db.add([f"b{i}-{j}" for j in range(10)], [("beta%d " % j) * 150 for j in range(10)],
               embeddings=rng.standard_normal((10, 8)).astype(np.float32) * 0.01)
    print("map", db.stats()["storage"]["map_size_bytes"], flush=True)
"""


def test_map_grows_under_readers_of_two_handles_and_another_process(tmp_path):
    path = str(tmp_path / "db")
    with llmdsdb.open(path, map_size_bytes=1 << 16, dim=8) as db:
        db.add(["seed"], ["seed shared text"], embeddings=np.ones((1, 8), np.float32))
    n_batches = 25
    readers = subprocess.Popen([sys.executable, "-c", GROWING_READERS, path, str(n_batches)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert readers.stdout.readline().strip() == "ready", readers.stderr.read()
        other = subprocess.run([sys.executable, "-c", GROWING_WRITER, path, str(n_batches)],
                               capture_output=True, text=True, timeout=120, check=False)
        assert other.returncode == 0, other.stderr
        readers.stdin.write("done\n")
        readers.stdin.flush()
        out, err = readers.communicate(timeout=120)
    finally:
        if readers.poll() is None:
            readers.kill()
            readers.wait()
    assert readers.returncode == 0, f"exit {readers.returncode}\n{err[-3000:]}"
    words = out.split()
    assert words[0] == "reads" and int(words[1]) > 0
    with llmdsdb.open(path, readonly=True) as db:
        assert db.count() == 1 + 20 * n_batches and db.check() == []
        assert db.stats()["storage"]["map_size_bytes"] > 1 << 20  # it did grow, many times


# --- readers in several processes, a writer, SIGKILLs (tools/stress/stress_concurrency.py) ---


def test_readers_and_a_writer_survive_sigkills(tmp_path):
    """3 reader processes x 2 threads and a writer; a reader is killed at generations 3 and
    8, the writer at 5 (and restarted): no error, no snapshot going back, every hit and
    count consistent with its snapshot, the dead readers' slots cleared by reader_check.
    The 10-minute run with 8 readers is ``tools/stress/stress_concurrency.py``."""
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "stress"))
    import stress_concurrency as sc

    args = argparse.Namespace(readers=3, threads=2, reader_kill_s=1e9, writer_kill_s=1e9,
                              seed=1, stop_at=12,
                              kill_plan=[(3, "reader"), (5, "writer"), (8, "reader")])
    # the readers may still be starting when the writer is done (slow interpreters, such
    # as under tools/sanitize): wait up to a minute for their first checked reads
    deadline = time.monotonic() + 60

    def until(r) -> bool:
        return r.writer_failed or (r.acked.value >= args.stop_at and not r.writer.is_alive()
                                   and (r.reads() > 0 or time.monotonic() > deadline))

    out = sc.run(args, str(tmp_path / "db"), log=lambda s: None, until=until)
    assert out["violations"] == []
    assert out["generation"] == 12 and out["documents"] == sc.count_at(12)
    assert out["reader_kills"] == 2 and out["writer_kills"] == 1
    assert out["checked_reads"] > 0
    assert out["stale_slots"]["dead_after"] == 0


def test_file_growth_check_flags_a_climbing_ratio_only():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "stress"))
    import stress_concurrency as sc

    steady = [(60, 500, 100), (120, 560, 110), (180, 600, 120), (240, 640, 125)]
    assert sc.growth_violation(steady) is None
    climbing = [(60, 200, 100), (120, 300, 100), (180, 500, 100), (240, 800, 100)]
    assert "3.00x to 8.00x" in sc.growth_violation(climbing)
    assert sc.growth_violation(climbing[:3]) is None  # too few samples to tell
