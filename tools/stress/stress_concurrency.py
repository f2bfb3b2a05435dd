"""Many reader processes, one writer, random SIGKILLs (RELIABILITY.md §4.3).

``--readers`` reader processes (spawn context), each with ``--threads`` threads sharing one
read-only handle, query the database while one writer process commits batches; a chaos loop
SIGKILLs a random reader every ``--reader-kill-s`` and the writer every ``--writer-kill-s``
seconds and starts a new one in its place (a writer resumes from the generation it finds).

The workload is a function of the generation, so any reader can tell what a snapshot must
hold: the commit that makes generation G adds ``b{G}-0 .. b{G}-4`` (text
:func:`text_of`, metadata ``{"G": G, "j": j}``, a vector for even j) and deletes
``b{G-2}-1 .. b{G-2}-3``; so generation G holds ``5G - 3 max(0, G - 2)`` documents.

Checks (each failure is a violation, written to the run's violation file):

(a) no exception in a reader or the writer (the storage layer handles LMDB's retryable
    ``MDB_MAP_RESIZED`` / ``MDB_READERS_FULL`` itself; a writer's stale generation read
    after a writer died inside its commit is counted, see :func:`writer_main`);
(b) snapshots never go backwards: in each thread, and across the threads of a process (a
    read that starts after another finished sees at least its generation);
(c) ``stats()`` reads the generation and the document count from one snapshot: the count
    is the generation's; every search hit is a document live in some snapshot between the
    generations read just before and just after the search, with the text and metadata
    written for its id; ``get()`` of a document live at an earlier snapshot and never
    deleted returns its text;
(d) read-after-ack: a read that starts after the writer acknowledged generation g (a shared
    counter the writer sets after each commit returns) sees at least g;
(e) at the end, after all processes were SIGKILLed (while this process keeps the
    environment open, so LMDB does not reset its lock file): the slots of dead processes in
    LMDB's reader table are counted, and ``reader_check`` clears them all (every reader
    started during the run also ran it, through ``llmdsdb.open``);
(f) file growth stays bounded: every minute the data file is compared with a compacting
    copy of the database; the ratio at the end may not exceed 1.5x the largest ratio of the
    first half of the run (:func:`growth_violation`). LMDB keeps the pages of every snapshot
    a reader holds, so on a small database rewritten by every commit the ratio is several x;
    what must not happen is a ratio that keeps climbing (stale reader slots pinning old
    snapshots).

Usage (from the repository root)::

    nice -n 10 python tools/stress/stress_concurrency.py --seconds 600   # the 10-minute run
    python tools/stress/stress_concurrency.py --seconds 30 --readers 4

Exit status 0 when there was no violation.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

PER_BATCH = 5
DELETED = (1, 2, 3)  # j of the documents of generation G - 2 that generation G deletes
DIM = 8
_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"]


def text_of(doc_id: str) -> str:
    """The text stored for ``doc_id`` (any reader can check a hit against it)."""
    s = sum(map(ord, doc_id))
    return f"{doc_id} shared " + " ".join(_WORDS[(s * 7 + k * 13) % len(_WORDS)]
                                          for k in range(8))


def count_at(g: int) -> int:
    """Documents in generation ``g``."""
    return PER_BATCH * g - len(DELETED) * max(0, g - 2)


def live_at(doc_id: str, g: int) -> bool:
    """Whether ``doc_id`` is in generation ``g``."""
    G, j = _parse(doc_id)
    return G <= g and not (j in DELETED and G + 2 <= g)


def _parse(doc_id: str) -> tuple[int, int]:
    b, _, j = doc_id[1:].partition("-")
    return int(b), int(j)


def _vector(G: int, j: int):
    import numpy as np

    v = np.random.default_rng(G * 131 + j).standard_normal(DIM).astype(np.float32)
    return v if np.any(v) else np.ones(DIM, np.float32)


# --- the processes ----------------------------------------------------------------------------


def _violation(path: str, who: str, what: str) -> None:
    line = json.dumps({"who": who, "pid": os.getpid(), "t": time.time(), "what": what})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def writer_main(path: str, acked, stale, stop_at: int, vfile: str) -> None:
    """Commit batches until generation ``stop_at`` (0 = forever); set ``acked`` after each.

    The batch to write is chosen from the generation read before it. A writer SIGKILLed
    inside LMDB's commit - after its meta page was written, before the shared reader table
    learnt the new transaction id - leaves a commit that readers do not see until the next
    writer takes LMDB's write mutex (robust-mutex recovery adopts the newest meta page). A
    new writer then reads the older generation, and its batch meets its own documents:
    ``add`` refuses them and nothing is written. That is counted in ``stale`` and the batch
    chosen again; twice in a row is a violation."""
    import llmdsdb
    from llmdsdb.errors import DuplicateIdError

    try:
        with llmdsdb.open(path) as db:
            retried = False
            while True:
                g = db.generation + 1  # the generation this batch makes
                if stop_at and g > stop_at:
                    return
                ids = [f"b{g}-{j}" for j in range(PER_BATCH)]
                try:
                    with db.batch():
                        db.add(ids, [text_of(i) for i in ids],
                               embeddings=[_vector(g, j) if j % 2 == 0 else None
                                           for j in range(PER_BATCH)],
                               metadata=[{"G": g, "j": j} for j in range(PER_BATCH)])
                        if g > 2:
                            db.delete([f"b{g - 2}-{j}" for j in DELETED])
                except DuplicateIdError:
                    if retried:
                        raise
                    retried = True
                    stale.value += 1
                    continue
                retried = False
                if db.generation < g:
                    raise AssertionError(f"committed generation {g} but read "
                                         f"{db.generation}")
                acked.value = max(acked.value, g)
    except BaseException as exc:
        _violation(vfile, "writer", f"{type(exc).__name__}: {exc}")
        raise


def reader_main(path: str, slot: int, threads: int, acked, counters, vfile: str,
                seed: int) -> None:
    """Query until killed; ``counters[slot * threads + t]`` counts thread t's checked reads."""

    import llmdsdb

    try:
        db = llmdsdb.open(path, readonly=True)
    except Exception as exc:  # a reader that cannot open is a violation
        _violation(vfile, f"reader {slot}", f"open: {type(exc).__name__}: {exc}")
        raise
    floor = [0]  # the highest generation a finished read of this process saw
    lock = threading.Lock()

    def bad(what: str) -> None:
        _violation(vfile, f"reader {slot}", what)

    def run(t: int) -> None:
        rnd = random.Random(seed * 1000 + t)
        last = 0
        while True:
            try:
                with lock:
                    f = floor[0]
                a = acked.value
                s = db.stats()
                g, n = s["generation"], s["documents"]
                if g < last or g < f:
                    bad(f"generation went back: {g} after {last} (thread), {f} (process)")
                if g < a:
                    bad(f"generation {g} read after generation {a} was acknowledged")
                if n != count_at(g):
                    bad(f"generation {g} with {n} documents (expected {count_at(g)})")
                G = rnd.randint(1, max(g, 1))
                q = text_of(f"b{G}-0").split(" ", 1)[1]
                vec = _vector(G, 0) if rnd.random() < 0.5 and g else None
                hits = db.search(q if rnd.random() < 0.8 or vec is None else None, vector=vec,
                                 top_k=20)
                g1 = db.generation
                if not hits and g:
                    bad(f"no hit at generation {g}..{g1}")
                for h in hits:
                    hg, hj = _parse(h.id)
                    if not (hg <= g1 and not (hj in DELETED and hg + 2 <= g)):
                        bad(f"hit {h.id} is in no snapshot between {g} and {g1}")
                    if h.text != text_of(h.id) or h.metadata != {"G": hg, "j": hj}:
                        bad(f"hit {h.id} has text {h.text!r} metadata {h.metadata!r}")
                if g:  # a document of generation <= g that no later generation deletes
                    k = rnd.choice([0, 4])
                    d = db.get(f"b{rnd.randint(1, g)}-{k}")
                    if d is None or d.text != text_of(d.id):
                        bad(f"get of a live document gave {d!r}")
                last = max(last, g1)
                with lock:
                    floor[0] = max(floor[0], g)
                counters[slot * threads + t] += 1
            except Exception as exc:  # noqa: BLE001 - any error is a violation (a)
                bad(f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)

    for t in range(threads):
        threading.Thread(target=run, args=(t,), daemon=True).start()
    while True:  # the main thread only waits to be killed
        time.sleep(3600)


# --- the chaos loop ---------------------------------------------------------------------------


class Run:
    """One run's processes and figures."""

    def __init__(self, path: str, args: argparse.Namespace, vfile: str) -> None:
        self.ctx = mp.get_context("spawn")
        self.path, self.args, self.vfile = path, args, vfile
        self.acked = self.ctx.Value("q", 0, lock=False)
        self.stale = self.ctx.Value("q", 0, lock=False)
        self.counters = self.ctx.Array("q", args.readers * args.threads, lock=False)
        self.readers: list = [None] * args.readers
        self.writer = None
        self.reader_kills = self.writer_kills = 0
        self.writer_failed = False
        self.growth: list[tuple[int, int, int]] = []  # (s, data file bytes, compact bytes)
        self.started = 0

    def start_reader(self, slot: int) -> None:
        p = self.ctx.Process(target=reader_main, daemon=True,
                             args=(self.path, slot, self.args.threads, self.acked,
                                   self.counters, self.vfile, self.started))
        p.start()
        self.started += 1
        self.readers[slot] = p

    def start_writer(self) -> None:
        self.writer = self.ctx.Process(target=writer_main, daemon=True,
                                       args=(self.path, self.acked, self.stale,
                                             self.args.stop_at, self.vfile))
        self.writer.start()

    def kill(self, p) -> None:
        if p is not None and p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        if p is not None:
            p.join()

    def reads(self) -> int:
        return sum(self.counters)


def growth_sample(path: str) -> tuple[int, int]:
    """The data file's size and that of a compacting copy of the database (taken by this
    process through a read-only handle)."""
    import llmdsdb

    size = os.path.getsize(os.path.join(path, "data.mdb"))
    with llmdsdb.open(path, readonly=True) as db, tempfile.TemporaryDirectory() as d:
        db.copy_to(os.path.join(d, "c"), compact=True)
        return size, os.path.getsize(os.path.join(d, "c", "data.mdb"))


def growth_violation(samples: list[tuple[int, int, int]]) -> str | None:
    """File growth that outpaces the data: the data-file/compact-copy ratio of the last
    sample above 1.5x the largest ratio of the first half of the run (a leak - pages held
    by stale readers - keeps raising the ratio; LMDB's normal overhead, the pages of the
    snapshots live readers hold, does not). None with fewer than 4 samples."""
    if len(samples) < 4:
        return None
    ratios = [size / compact for _, size, compact in samples]
    first = max(ratios[: len(ratios) // 2])
    if ratios[-1] > 1.5 * first:
        return f"data file / compact copy went from at most {first:.2f}x to {ratios[-1]:.2f}x"
    return None


def stale_slots(path: str) -> dict:
    """LMDB's reader table seen from another process: slots of dead processes before and
    after ``reader_check()`` (opened with py-lmdb directly, read-only, in a subprocess: an
    ``llmdsdb.open`` would run ``reader_check`` first)."""
    code = r"""
import json, os, sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, lock=True, max_dbs=0, subdir=True)
def dead():
    pids = []
    for line in env.readers().splitlines()[1:]:
        parts = line.split()
        if parts and parts[0].isdigit():
            pid = int(parts[0])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                pids.append(pid)
            except PermissionError:
                pass
    return pids
before = dead()
cleared = env.reader_check()
print(json.dumps({"dead_before": len(before), "cleared": cleared, "dead_after": len(dead())}))
"""
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def run(args: argparse.Namespace, path: str, *, until: Callable[[Run], bool],
        log: Callable[[str], None] = print) -> dict:
    """Run the readers, the writer and the chaos loop until ``until(run)``; the figures."""
    import llmdsdb

    vfile = path + ".violations"
    with llmdsdb.open(path, dim=DIM):  # create it, with its vector dimension
        pass
    r = Run(path, args, vfile)
    t0 = time.monotonic()
    r.start_writer()
    for slot in range(args.readers):
        r.start_reader(slot)
    rnd = random.Random(args.seed)
    next_reader = t0 + args.reader_kill_s
    next_writer = t0 + args.writer_kill_s
    next_log = t0 + 60
    plan = sorted(getattr(args, "kill_plan", None) or [])  # [(generation, "reader"/"writer")]
    try:
        while not until(r):
            time.sleep(0.05)
            now = time.monotonic()
            while plan and r.acked.value >= plan[0][0]:
                who = plan.pop(0)[1]
                if who == "reader":
                    slot = rnd.randrange(args.readers)
                    r.kill(r.readers[slot])
                    r.reader_kills += 1
                    r.start_reader(slot)
                elif r.writer.is_alive():
                    r.kill(r.writer)
                    r.writer_kills += 1
                    r.start_writer()
            if now >= next_reader:
                slot = rnd.randrange(args.readers)
                r.kill(r.readers[slot])
                r.reader_kills += 1
                r.start_reader(slot)
                next_reader = now + args.reader_kill_s
            if not r.writer.is_alive():  # it stopped by itself: at stop_at, or failed
                if r.writer.exitcode != 0 and not r.writer_failed:
                    r.writer_failed = True  # its violation is in the file
                    log(f"writer exited with {r.writer.exitcode}")
                if not args.stop_at:
                    r.start_writer()  # the tool goes on with a new writer
            elif now >= next_writer:
                r.kill(r.writer)
                r.writer_kills += 1
                r.start_writer()
                next_writer = now + args.writer_kill_s
            if now >= next_log:
                size, compact = growth_sample(path)
                r.growth.append((round(now - t0), size, compact))
                log(f"{now - t0:.0f} s: generation {r.acked.value}, {r.reads():,} checked reads"
                    f", {r.reader_kills} reader / {r.writer_kills} writer kills, data file "
                    f"{size:,} bytes = {size / compact:.2f}x a compact copy")
                next_log = now + 60
    finally:
        # This process keeps the environment open meanwhile, so LMDB does not reset its lock
        # file when the last other user dies: the dead readers' slots stay to be counted.
        holder = llmdsdb.open(path, readonly=True)
        try:
            for p in [*r.readers, r.writer]:  # readers are likely inside a read transaction
                r.kill(p)
            slots = stale_slots(path)
        finally:
            holder.close()
    elapsed = time.monotonic() - t0
    with llmdsdb.open(path) as db:
        problems = db.check()
        gen, n = db.generation, db.count()
        st = db._env  # the storage Environment: its LMDB reader table after the open
        listed = st._env.readers()
        with tempfile.TemporaryDirectory() as d:
            db.copy_to(os.path.join(d, "c"), compact=True)
            compact = os.path.getsize(os.path.join(d, "c", "data.mdb"))
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    violations = []
    if os.path.exists(vfile):
        violations = [json.loads(x) for x in Path(vfile).read_text().splitlines() if x]
    if problems:
        violations.append({"who": "final check", "what": str(problems[:5])})
    if n != count_at(gen):
        violations.append({"who": "final", "what": f"{n} documents at generation {gen}"})
    if slots["dead_after"]:
        violations.append({"who": "reader table", "what": f"{slots}"})
    r.growth.append((round(elapsed), size, compact))
    grew = growth_violation(r.growth)
    if grew:
        violations.append({"who": "file growth", "what": grew})
    return {"seconds": round(elapsed, 1), "readers": args.readers, "threads": args.threads,
            "generation": gen, "documents": n, "checked_reads": r.reads(),
            "reader_kills": r.reader_kills, "writer_kills": r.writer_kills,
            "stale_generation_reads": r.stale.value,
            "reader_processes_started": r.started, "stale_slots": slots,
            "reader_table_after_open": len(listed.splitlines()) - 1,
            "data_bytes": size, "compact_bytes": compact,
            "growth": round(size / compact, 2),
            "growth_samples": [(t, round(a / b, 2)) for t, a, b in r.growth],
            "violations": violations}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reader-kill-s", type=float, default=10)
    ap.add_argument("--writer-kill-s", type=float, default=30)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    args.stop_at = 0
    d = Path(args.dir or tempfile.mkdtemp(prefix="llmdsdb-conc-"))
    path = str(d / "db")
    t_end = time.monotonic() + args.seconds
    out = run(args, path, until=lambda r: time.monotonic() >= t_end,
              log=lambda s: print(s, flush=True))
    print(json.dumps(out, indent=1))
    v = len(out["violations"])
    print(f"\n{args.readers} readers x {args.threads} threads + 1 writer, {out['seconds']:.0f} s,"
          f" {out['reader_kills']} reader kills, {out['writer_kills']} writer kills: "
          f"{out['checked_reads']:,} checked reads, generation {out['generation']}, "
          f"{v} violations; stale reader slots at the end {out['stale_slots']['dead_before']}"
          f", left after reader_check {out['stale_slots']['dead_after']}; data file "
          f"{out['growth']}x a compact copy")
    return 1 if v else 0


if __name__ == "__main__":
    sys.exit(main())
