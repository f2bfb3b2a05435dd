"""kill -9 trials during ingest: workloads, kill points, the prefix oracle and the state hash.

Shared by ``tools/stress/stress_crash.py`` (hundreds of trials) and ``tests/crash`` (a few
dozen). A trial runs a deterministic workload in a child process, kills it with SIGKILL at a
point chosen by a *strategy*, then judges the directory it left:

* it opens, and ``Database.check()`` finds nothing;
* its **state hash** (:func:`state_hash`: every document - id, text, metadata, vector,
  content hash - plus the answers to a fixed set of BM25, vector and hybrid queries, ids and
  scores) equals the hash an uninterrupted run had after exactly *k* steps, with
  ``acked <= k <= acked + 1`` (``acked`` = the last step whose commit had returned when the
  child was killed; the child appends it to an acknowledgement file right after the commit
  returns). Equality with the reference after *k* steps means the visible batches are
  exactly 1..k and none is partial; *k* may be ``acked + 1`` because a kill can land after a
  commit and before its acknowledgement;
* **resuming** the workload from step *k* reaches the final hash of the uninterrupted run.

Workloads (:class:`Workload`):

``api``
    Steps through the Python API: a ``batch`` (adds, upserts and deletes in one
    ``db.batch()``), ``optimize``, ``compact`` (several commits) and ``update_metadata``.
    More kinds are added by writing a runner, registering it in :data:`STEP_KINDS` and
    emitting the kind in :func:`api_steps`; the oracle needs no model of what a step does,
    only that the step is one atomic commit (or several whose intermediate states all have
    the step's final hash).
``cli``
    ``llmdsdb ingest`` of a JSONL file with ``--batch-size B``: step *k* is the *k*-th batch;
    the acknowledgement is the command's own progress line (written after each batch
    commits); resuming is running the same command again.

Kill strategies (:func:`pick_kill`):

``time``      SIGKILL after a uniform random delay in [0, 1.1 x the uninterrupted run time]
              (the child's own run, from opening the database; ``exec`` trials also count
              the interpreter start); a run that ends before its kill shortens that time
              for the next trials (the load of a shared machine changes).
``ops``       SIGKILL just before the N-th storage write operation (a put or delete of the
              storage layer, ``Txn._put_raw`` / ``Txn.delete``), N uniform over the run.
``commit``    one of: ``before`` (just before LMDB's commit of the c-th write transaction,
              after the generation record was written), ``inside`` (just before, or just after, the N-th
              write, fdatasync or ftruncate of a file in the database directory, through
              the ``iotrace`` LD_PRELOAD shim: between the page writes, the fsync and the
              meta-page write of a commit - after the meta page is written but before LMDB
              publishes the transaction id, too - or while LMDB creates its files),
              ``after`` (after the c-th commit returned, before the caller is told).

Children are forked from a *zygote* (:class:`Zygote`): one interpreter, started once with
llmdsdb imported (and the shim preloaded when a C compiler is there), that forks a child per
run, so a trial costs a fork rather than an interpreter start. The zygote waits for each
child itself (and kills it at the chosen time), so a pid is never reused under the parent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent))
import iotrace

STRATEGIES = ("time", "ops", "commit")
COMMIT_POINTS = ("before", "inside", "after")
DIM = 8
_VOCAB = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega"]


# --- workloads ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A deterministic workload: ``kind`` ``"api"`` or ``"cli"``, ``steps`` commits (for
    ``cli``: batches of ``batch`` records), generated from ``seed``; ``durability`` is the
    ``llmdsdb.open`` option of an ``api`` run."""

    kind: str = "api"
    seed: int = 0
    steps: int = 8
    batch: int = 4
    durability: str = "sync"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "steps": self.steps, "batch": self.batch,
                "durability": self.durability}


@dataclass(frozen=True)
class Step:
    """One step of an ``api`` workload: ``kind`` names its runner in :data:`STEP_KINDS`;
    ``ops`` are ``(verb, ids, texts, vectors, metadata)`` for a ``batch``."""

    kind: str
    ops: tuple = ()


def _text(rnd: random.Random, tag: str) -> str:
    return f"{tag} " + " ".join(rnd.choice(_VOCAB) for _ in range(rnd.randint(3, 12)))


def _vector(rnd: random.Random) -> list[float]:
    v = [rnd.gauss(0.0, 1.0) for _ in range(DIM)]
    return v if any(v) else [1.0] * DIM


def api_steps(w: Workload) -> list[Step]:
    """The steps of an ``api`` workload: mostly batches (1-6 new documents, two thirds with
    vectors, sometimes an upsert that changes a live document and a delete); every fifth
    step an ``optimize``, every seventh a ``compact`` (in transactions of 2 items, so a kill
    can land between them), and now and then an ``update_metadata`` of live documents."""
    rnd = random.Random(w.seed)
    live: list[str] = []
    steps: list[Step] = []
    for i in range(w.steps):
        if i % 5 == 4:
            steps.append(Step("optimize"))
            continue
        if i % 7 == 6:
            steps.append(Step("compact", (2,)))
            continue
        if len(live) > 1 and rnd.random() < 0.2:
            ids = rnd.sample(live, min(len(live), rnd.randint(1, 3)))
            steps.append(Step("update_metadata", (ids, [{"step": i, "k": k}
                                                        for k in range(len(ids))],
                                                  rnd.random() < 0.5)))
            continue
        ops = []
        n = rnd.randint(1, 6)
        ids = [f"s{i}-{j}" for j in range(n)]
        ops.append(("add", ids, [_text(rnd, d) for d in ids],
                    [_vector(rnd) if rnd.random() < 0.67 else None for _ in ids],
                    [{"step": i, "j": j} for j in range(n)]))
        if live and rnd.random() < 0.5:
            u = rnd.choice(live)
            ops.append(("upsert", [u], [_text(rnd, u + " again")], [_vector(rnd)],
                        [{"step": i, "upserted": True}]))
        if len(live) > 2 and rnd.random() < 0.5:
            d = live.pop(rnd.randrange(len(live)))
            ops.append(("delete", [d]))
        live.extend(ids)
        steps.append(Step("batch", tuple(ops)))
    return steps


def _run_batch(db, step: Step) -> None:
    import numpy as np

    with db.batch():
        for op in step.ops:
            if op[0] == "delete":
                db.delete(op[1])
                continue
            verb, ids, texts, vecs, meta = op
            embs = [None if v is None else np.asarray(v, np.float32) for v in vecs]
            getattr(db, verb)(ids, texts, embeddings=embs, metadata=meta)


def _run_optimize(db, step: Step) -> None:
    db.optimize()


def _run_compact(db, step: Step) -> None:
    db.compact(max_batch=step.ops[0])


def _run_update_metadata(db, step: Step) -> None:
    ids, metas, merge = step.ops
    db.update_metadata(ids, metas, merge=merge)


#: step kind -> runner(db, step). A runner is one atomic commit (or none), or several
#: commits whose intermediate states all have the state hash of the step's end (compaction:
#: it changes no document and no answer).
STEP_KINDS: dict[str, Callable] = {"batch": _run_batch, "optimize": _run_optimize,
                                   "compact": _run_compact,
                                   "update_metadata": _run_update_metadata}


def cli_records(w: Workload) -> list[dict]:
    """The JSONL records of a ``cli`` workload: ``steps * batch`` documents."""
    rnd = random.Random(w.seed)
    out = []
    for i in range(w.steps * w.batch):
        rec = {"id": f"r{i}", "text": _text(rnd, f"r{i}"), "metadata": {"i": i}}
        if rnd.random() < 0.67:
            rec["embedding"] = _vector(rnd)
        out.append(rec)
    return out


def write_cli_input(w: Workload, path: str | os.PathLike[str]) -> str:
    """Write the ``cli`` workload's input file; its path."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(rec) + "\n" for rec in cli_records(w))
    return str(path)


def cli_args(db_path: str, input_path: str, w: Workload) -> list[str]:
    """The ``llmdsdb`` arguments of a ``cli`` workload's run (and of its resume)."""
    return ["ingest", db_path, input_path, "--batch-size", str(w.batch), "--progress"]


_PROGRESS = re.compile(r"([\d,]+)(?:/[\d,]+)? docs read")


def read_acks(w: Workload, ack_path: str | os.PathLike[str]) -> int:
    """The last acknowledged step (0 = none) from the acknowledgement file: one step number a
    line (``api``), or ``llmdsdb ingest``'s progress lines (``cli``: records read // batch)."""
    try:
        text = Path(ack_path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return 0
    if w.kind == "cli":
        found = _PROGRESS.findall(text)
        return int(found[-1].replace(",", "")) // w.batch if found else 0
    nums = [int(x) for x in text.split() if x.isdigit()]
    return max(nums, default=0)


# --- the state hash -------------------------------------------------------------------------


def _queries() -> list[tuple[str | None, list[float] | None]]:
    rnd = random.Random(12345)
    texts = ["alpha beta", "gamma", "omega psi chi", "s1-0 r3", "sigma tau upsilon"]
    vecs = [_vector(rnd) for _ in range(3)]
    return ([(t, None) for t in texts] + [(None, v) for v in vecs]
            + [(texts[0], vecs[0]), (texts[2], vecs[1])])


def state_hash(db) -> str:
    """sha256 over the database's documents (sorted by id: id, text, metadata, vector,
    content hash) and the answers (ids and scores to 4 decimals; or the error's class) to a
    fixed set of text, vector and hybrid queries with top_k 10.

    Complexity: O(n) documents plus 10 queries.
    """
    import numpy as np

    from llmdsdb.errors import LlmdsdbError

    h = hashlib.sha256()
    docs = sorted(db.iter_documents(), key=lambda d: d.id)
    h.update(f"count {db.count()} {len(docs)}\n".encode())
    for d in docs:
        emb = None if d.embedding is None else np.asarray(d.embedding, "<f4").tobytes().hex()
        h.update(json.dumps([d.id, d.text, d.metadata, emb, d.content_hash],
                            sort_keys=True).encode() + b"\n")
    for q, v in _queries():
        try:
            vec = None if v is None else np.asarray(v, np.float32)
            hits = db.search(q, vector=vec, top_k=10)
            ans = [[r.id, round(float(r.score), 4)] for r in hits]
        except LlmdsdbError as exc:
            ans = type(exc).__name__
        h.update(json.dumps([q, ans]).encode() + b"\n")
    return h.hexdigest()


# --- kill hooks (installed in the child) ----------------------------------------------------


def _suicide() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Counters:
    """Counts of storage write operations and commits in the child; kills at a chosen one."""

    def __init__(self, kill: dict | None) -> None:
        self.kill = kill or {}
        self.ops = 0
        self.commits_before = 0
        self.commits_after = 0

    def install(self, db_path: str) -> None:
        from llmdsdb import storage, storage_txn

        at = self.kill.get("at")
        n = int(self.kill.get("n", 0))
        counters = self
        put_raw, delete = storage_txn.Txn._put_raw, storage_txn.Txn.delete
        finish, env_open = storage_txn.Txn._finish_generation, storage.Environment.open.__func__

        def _put_raw(self, *a, **k):
            counters.ops += 1
            if at == "ops" and counters.ops == n:
                _suicide()
            return put_raw(self, *a, **k)

        def _delete(self, *a, **k):
            counters.ops += 1
            if at == "ops" and counters.ops == n:
                _suicide()
            return delete(self, *a, **k)

        def _finish_generation(self):
            finish(self)
            counters.commits_before += 1
            if at == "before" and counters.commits_before == n:
                _suicide()

        def _after(_gen: int) -> None:
            counters.commits_after += 1
            if at == "after" and counters.commits_after == n:
                _suicide()

        def _open(cls, *a, **k):
            env = env_open(cls, *a, **k)
            if _after not in env.on_commit:
                env.on_commit.append(_after)
            return env

        storage_txn.Txn._put_raw = _put_raw
        storage_txn.Txn.delete = _delete
        storage_txn.Txn._finish_generation = _finish_generation
        storage.Environment.open = classmethod(_open)
        if iotrace.Loaded.available():
            iotrace.Loaded().config(track=os.path.join(db_path, ""),
                                    kill_at=n if at == "inside" else 0)

    def report(self) -> dict:
        file_ops = iotrace.Loaded().ops() if iotrace.Loaded.available() else None
        return {"ops": self.ops, "commits": self.commits_after, "file_ops": file_ops}


# --- the child ------------------------------------------------------------------------------


def child_run(req: dict) -> int:
    """Run (part of) a workload, as asked by ``req``; in a forked child. Exit status: 0 when
    it ran to the end, 1 on an exception (its traceback goes to ``req["err"]``)."""
    import llmdsdb

    w = Workload(**req["workload"])
    path, start = req["path"], int(req.get("start", 0))
    counters = Counters(req.get("kill"))
    counters.install(path)
    ack = os.open(req["ack"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    hashes: list[str] = []
    hashing = [0.0]  # time spent hashing, left out of the run's elapsed time

    def hashed(db) -> None:
        t = time.monotonic()
        hashes.append(state_hash(db))
        hashing[0] += time.monotonic() - t

    t0 = time.monotonic()
    if w.kind == "api":
        steps = api_steps(w)
        with llmdsdb.open(path, durability=w.durability) as db:
            if req.get("reference"):
                hashed(db)
            shim = _start_recording(path, req)
            for k in range(start, len(steps)):
                STEP_KINDS[steps[k].kind](db, steps[k])
                os.write(ack, f"{k + 1}\n".encode())
                if shim is not None:
                    shim.mark(k + 1)
                if req.get("reference"):
                    hashed(db)
    elif req.get("reference"):
        from llmdsdb.ingest import ingest

        with llmdsdb.open(path) as db:
            hashed(db)
            ingest(db, [req["input"]], batch_size=w.batch, on_progress=lambda _p: hashed(db))
    else:
        from llmdsdb.cli import main

        os.dup2(ack, 2)  # the progress lines are the acknowledgements
        try:
            main(cli_args(path, req["input"], w))
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise
    elapsed = time.monotonic() - t0 - hashing[0]
    if req.get("out"):
        Path(req["out"]).write_text(json.dumps({"hashes": hashes, "elapsed_s": elapsed,
                                                **counters.report()}))
    return 0


def _start_recording(path: str, req: dict) -> iotrace.Loaded | None:
    """With ``req["iolog"]``: copy ``data.mdb`` as it is now (everything the open wrote is
    durable: creation ends with a synced commit) to ``req["base"]``, then log every write and
    sync of ``data.mdb`` from here on (the shim must be preloaded)."""
    if not req.get("iolog"):
        return None
    import shutil

    data = os.path.join(path, "data.mdb")
    shutil.copyfile(data, req["base"])
    shim = iotrace.Loaded()
    shim.config(track=data, log=req["iolog"])
    return shim


def child_judge(req: dict) -> int:
    """Open the database a trial left, check it and hash it; the verdict goes to
    ``req["out"]`` as JSON: ``{"exists", "error", "problems", "hash", "generation"}``."""
    import llmdsdb

    path = req["path"]
    out: dict = {"exists": os.path.exists(os.path.join(path, "data.mdb")), "error": None,
                 "problems": [], "hash": None, "generation": None}
    if out["exists"] or os.path.isdir(path) and os.listdir(path):
        try:
            with llmdsdb.open(path) as db:
                out["problems"] = db.check()
                out["hash"] = state_hash(db)
                out["generation"] = db.generation
        except Exception as exc:  # noqa: BLE001 - the verdict reports it; the parent decides
            out["error"] = f"{type(exc).__name__}: {exc}"
    Path(req["out"]).write_text(json.dumps(out))
    return 0


# --- the zygote -----------------------------------------------------------------------------


def _wait(pid: int, kill_after_s: float | None, timeout_s: float) -> tuple[int, float]:
    """Wait for child ``pid`` (SIGKILL it after ``kill_after_s``, or at ``timeout_s``); its
    wait status and how long it ran."""
    t0 = time.monotonic()
    fd = os.pidfd_open(pid)
    try:
        deadline = kill_after_s if kill_after_s is not None else timeout_s
        ready, _, _ = select.select([fd], [], [], max(deadline, 0.0))
        if not ready:
            os.kill(pid, signal.SIGKILL)  # the zygote has not reaped it: the pid is still ours
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return status, time.monotonic() - t0


def _warm_up() -> None:
    """Run a tiny workload once, so that the modules the engine imports lazily are loaded
    before the zygote forks (each child would import them again)."""
    import tempfile

    import llmdsdb

    with tempfile.TemporaryDirectory(prefix="llmdsdb-zygote-") as d:
        w = Workload(steps=5)
        with llmdsdb.open(os.path.join(d, "db")) as db:
            for s in api_steps(w):
                STEP_KINDS[s.kind](db, s)
            state_hash(db)
            db.check()


def zygote_main() -> None:
    """Serve requests (one JSON object a line on stdin; one JSON reply a line on stdout)."""
    import numpy  # noqa: F401 - imported once here, inherited by every child

    import llmdsdb
    import llmdsdb.cli
    import llmdsdb.ingest  # noqa: F401

    _warm_up()
    ctl_in, ctl_out = sys.stdin.buffer, sys.stdout.buffer
    ctl_out.write(json.dumps({"ready": True, "threads": len(os.listdir("/proc/self/task"))}
                             ).encode() + b"\n")
    ctl_out.flush()
    for line in ctl_in:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                err = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.dup2(err, 2)
                code = (child_judge if req["cmd"] == "judge" else child_run)(req)
            except BaseException:  # noqa: BLE001 - the child reports by its exit status
                with contextlib.suppress(Exception):
                    traceback.print_exc()
                    sys.stderr.flush()
            os._exit(code)
        status, ran = _wait(pid, req.get("kill_after_s"), float(req.get("timeout_s", 600)))
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        ctl_out.write(json.dumps({"rc": rc, "signal": sig, "ran_s": ran}).encode() + b"\n")
        ctl_out.flush()


class Zygote:
    """The parent's handle on a zygote process (see the module docstring).

    :param preload: the iotrace shim to preload (enables the ``inside`` commit point).
    """

    def __init__(self, preload: str | None = None) -> None:
        # one thread: fork() copies only the calling thread (OpenBLAS would start a pool)
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        if preload:
            env = iotrace.preload_env(preload, base=env)
        cmd = [sys.executable, str(Path(__file__).resolve()), "zygote"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env)
        hello = self.proc.stdout.readline()
        if not hello.startswith(b'{"ready"'):
            self.close()
            raise RuntimeError(f"the zygote did not start: {hello!r}")
        if json.loads(hello)["threads"] != 1:  # fork() copies only the calling thread
            self.close()
            raise RuntimeError(f"the zygote runs threads after its warm-up: {hello!r}")
        self.preloaded = bool(preload)

    def request(self, req: dict) -> dict:
        """Send one request; the reply ``{"rc", "signal", "ran_s"}``."""
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the zygote died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- trials (the parent) --------------------------------------------------------------------


@dataclass
class Reference:
    """The uninterrupted run: ``hashes[k]`` = the state hash after k steps; its counts of
    storage write operations, commits and file operations in the database directory."""

    workload: Workload
    hashes: list[str]
    elapsed_s: float
    ops: int
    commits: int
    file_ops: int | None
    input: str | None = None
    exec_elapsed_s: float | None = None


@dataclass
class Trial:
    """One trial's outcome; ``violations`` is empty when every check passed."""

    workload: str
    strategy: str
    kill: dict
    acked: int = 0
    k: int | None = None
    killed: bool = False
    generation: int | None = None
    resumed_ok: bool | None = None
    violations: list[str] = field(default_factory=list)


def _files(work: Path, name: str) -> dict[str, str]:
    return {"ack": str(work / f"{name}.ack"), "err": str(work / f"{name}.err"),
            "out": str(work / f"{name}.json")}


def reference(zyg: Zygote, w: Workload, work: Path) -> Reference:
    """Run ``w`` uninterrupted (twice: the second run must give the same hashes, or the
    workload is not deterministic and no oracle can hold)."""
    work.mkdir(parents=True, exist_ok=True)
    inp = write_cli_input(w, work / "input.jsonl") if w.kind == "cli" else None
    runs = []
    for r in range(2):
        f = _files(work, f"ref{r}")
        reply = zyg.request({"cmd": "run", "workload": w.as_dict(), "path": str(work / f"ref{r}"),
                             "reference": True, "input": inp, **f})
        if reply["rc"] != 0:
            raise RuntimeError(f"reference run failed: {reply}\n{Path(f['err']).read_text()}")
        runs.append(json.loads(Path(f["out"]).read_text()))
    if runs[0]["hashes"] != runs[1]["hashes"]:
        raise RuntimeError("two uninterrupted runs of the workload reached different states")
    ref = runs[0]
    if len(ref["hashes"]) != w.steps + 1:
        raise RuntimeError(f"the reference has {len(ref['hashes'])} states, expected "
                           f"{w.steps + 1}")
    return Reference(w, ref["hashes"], ref["elapsed_s"], ref["ops"], ref["commits"],
                     ref["file_ops"], inp)


def pick_kill(strategy: str, ref: Reference, rnd: random.Random, *,
              inside_ok: bool = True) -> dict:
    """A random kill point of ``strategy`` for a run of ``ref``'s workload."""
    if strategy == "time":
        return {"at": "time", "s": rnd.uniform(0.0, 1.1 * ref.elapsed_s)}
    if strategy == "ops":
        return {"at": "ops", "n": rnd.randint(1, max(ref.ops, 1))}
    points = COMMIT_POINTS if inside_ok and ref.file_ops else ("before", "after")
    at = rnd.choice(points)
    if at == "inside":  # n < 0: just after the |n|-th operation completed
        return {"at": "inside", "n": rnd.randint(1, ref.file_ops) * rnd.choice((1, -1))}
    return {"at": at, "n": rnd.randint(1, max(ref.commits, 1))}


def judge(zyg: Zygote, path: str, work: Path, name: str) -> dict:
    """The verdict on the directory at ``path`` (computed in a forked child, so a file that
    crashes liblmdb kills that child, not the caller)."""
    f = _files(work, name)
    reply = zyg.request({"cmd": "judge", "path": path, **f})
    if reply["rc"] != 0:
        err = Path(f["err"]).read_text() if os.path.exists(f["err"]) else ""
        return {"exists": True, "error": f"judge child failed ({reply}): {err[-2000:]}",
                "problems": [], "hash": None, "generation": None}
    return json.loads(Path(f["out"]).read_text())


def run_trial(zyg: Zygote, ref: Reference, strategy: str, rnd: random.Random, work: Path,
              name: str, *, resume: bool = True, exec_cli: bool = False) -> Trial:
    """One kill -9 trial of ``ref``'s workload (see the module docstring for the checks).

    :param exec_cli: run ``python -m llmdsdb ingest`` as a new process instead of a fork of
        the zygote (``time`` strategy, ``cli`` workloads only).
    """
    w = ref.workload
    kill = pick_kill(strategy, ref, rnd, inside_ok=zyg.preloaded)
    trial = Trial(w.kind + ("-exec" if exec_cli else ""), strategy, kill)
    work.mkdir(parents=True, exist_ok=True)
    path = str(work / f"{name}.db")
    f = _files(work, name)
    if exec_cli:
        assert w.kind == "cli" and strategy == "time"
        budget = ref.exec_elapsed_s or 2.0
        kill = trial.kill = {"at": "time", "s": rnd.uniform(0.0, 1.1 * budget)}
        t0 = time.monotonic()
        with open(f["ack"], "ab") as ack:
            proc = subprocess.Popen([sys.executable, "-m", "llmdsdb",
                                     *cli_args(path, ref.input, w)],
                                    stdout=subprocess.DEVNULL, stderr=ack)
            try:
                proc.wait(timeout=kill["s"])
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        trial.killed = proc.returncode == -signal.SIGKILL
        if proc.returncode == 0:
            ref.exec_elapsed_s = time.monotonic() - t0  # ended sooner: a shorter span
        if proc.returncode not in (0, -signal.SIGKILL):
            trial.violations.append(f"the ingest exited with {proc.returncode}")
    else:
        req = {"cmd": "run", "workload": w.as_dict(), "path": path, "input": ref.input,
               "kill": kill if kill["at"] != "time" else None, **f}
        req["out"] = ""
        if kill["at"] == "time":
            req["kill_after_s"] = kill["s"]
        reply = zyg.request(req)
        trial.killed = reply["signal"] == signal.SIGKILL
        if kill["at"] == "time" and reply["rc"] == 0:
            # the run ended before the kill: the machine is faster now than when the
            # reference was timed; later random times are drawn over this run's length
            ref.elapsed_s = reply["ran_s"]
        if not trial.killed and reply["rc"] != 0:
            err = Path(f["err"]).read_text() if os.path.exists(f["err"]) else ""
            trial.violations.append(f"the writer failed: {reply} {err[-1500:]}")
    trial.acked = read_acks(w, f["ack"])
    verdict = judge(zyg, path, work, name + "-judge")
    trial.generation = verdict["generation"]
    if verdict["error"]:
        trial.violations.append(f"reopen failed: {verdict['error']}")
        return trial
    if verdict["problems"]:
        trial.violations.append(f"check(): {verdict['problems'][:5]}")
    if verdict["hash"] is None:
        if trial.acked:
            trial.violations.append(f"no database, but step {trial.acked} was acknowledged")
            return trial
        k = 0
    else:
        k, why = prefix_verdict(ref.hashes, verdict["hash"], trial.acked)
        if why:
            trial.violations.append(why)
            return trial
    trial.k = k
    if resume:
        trial.resumed_ok = _resume(zyg, ref, path, work, name, k)
        if not trial.resumed_ok:
            trial.violations.append("resuming did not reach the uninterrupted run's state")
    return trial


def prefix_verdict(hashes: list[str], h: str, acked: int, *, may_lose: int = 0
                   ) -> tuple[int | None, str | None]:
    """The prefix oracle: the step count *k* whose reference state has hash ``h`` with
    ``acked - may_lose <= k <= acked + 1`` (the smallest, when steps that change nothing
    visible tie), or a violation. ``may_lose`` is 0 after a process crash."""
    ks = [k for k, ref in enumerate(hashes) if ref == h]
    if not ks:
        return None, (f"the state matches no prefix of the workload (acked {acked}): a "
                      f"partial or corrupt batch")
    fit = [k for k in ks if acked - may_lose <= k <= acked + 1]
    if not fit:
        return None, f"the state is that after steps {ks}, but step {acked} was acknowledged"
    return min(fit), None


def _resume(zyg: Zygote, ref: Reference, path: str, work: Path, name: str, k: int) -> bool:
    w = ref.workload
    f = _files(work, name + "-resume")
    reply = zyg.request({"cmd": "run", "workload": w.as_dict(), "path": path,
                         "input": ref.input, "start": k, "kill": None, **f, "out": ""})
    if reply["rc"] != 0:
        return False
    verdict = judge(zyg, path, work, name + "-final")
    return (verdict["error"] is None and not verdict["problems"]
            and verdict["hash"] == ref.hashes[-1])


def measure_exec(ref: Reference, work: Path) -> float:
    """Run the ``cli`` workload once as ``python -m llmdsdb ingest`` uninterrupted; its wall
    time (the ``time`` strategy's budget for ``exec`` trials)."""
    path = str(work / "exec-ref.db")
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "llmdsdb", *cli_args(path, ref.input, ref.workload)],
                   check=True, capture_output=True)
    return time.monotonic() - t0


def rule_of_three(n: int) -> float:
    """The 95% upper bound on a failure rate after 0 failures in ``n`` trials (3/n)."""
    return math.inf if n <= 0 else 3.0 / n


if __name__ == "__main__":
    if sys.argv[1:] == ["zygote"]:
        zygote_main()
    else:
        sys.exit("usage: crashkit.py zygote  (started by Zygote; see stress_crash.py)")
