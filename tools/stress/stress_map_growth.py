"""Stress run for issue 13's map-growth faults: repeated runs of two scenarios, each in its
own child process, under load from other processes; any crash, error or wrong result fails.

Scenarios (each run uses a fresh database that starts with a 64 KiB map, so it is doubled
many times while the scenario runs):

``two-handles``
    Two ``Database`` handles on one path in one process (they share one LMDB environment).
    A writer thread on the first adds batches until the map reaches 2 MiB; two reader
    threads on the second handle and one on the first search, count and ``get()`` random
    documents that are already committed, comparing each text with the text that was
    written (a wrong result, not only an exception, is a failure). At the end the handle
    that only read runs ``check()``.
``backup``
    One writer thread grows the map while the main thread takes five hot backups with
    ``llmdsdb.backup(path)`` (which opens its own handle on the same environment); each
    backup is restored into a fresh directory and every document in it is compared with
    the text that was written for its id, and the count and generation with the manifest.

Load: during every run another process writes batches to the same database (so the map also
grows from outside, and readers see ``MDB_MAP_RESIZED``), and ``--burners`` processes spin
on the CPU. A run fails when the scenario child is killed by a signal (crash), exits with
an error, or reports a wrong result.

Usage (from the repository root)::

    python tools/stress/stress_map_growth.py                 # 20 runs of each scenario
    python tools/stress/stress_map_growth.py --runs 5 --scenario backup
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

N_PER_BATCH = 10


def text_of(doc_id: str) -> str:
    """The text every writer stores for ``doc_id`` (so any reader can check a result)."""
    s = sum(map(ord, doc_id))
    return f"{doc_id} shared " + " ".join(f"w{(k * 31 + s) % 997}" for k in range(60))


# --- the processes ---------------------------------------------------------------------------


def child_two_handles(path: str) -> dict:
    import random
    import threading

    import numpy as np

    import llmdsdb

    db1 = llmdsdb.open(path, map_size_bytes=1 << 16)
    db2 = llmdsdb.open(path)
    committed = ["seed"]
    stop = threading.Event()
    errors: list[str] = []
    wrong: list[str] = []
    reads = [0]
    q = np.ones(8, np.float32)

    def reader(db: llmdsdb.Database, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            try:
                n = db.count()
                if (n - 1) % N_PER_BATCH:
                    wrong.append(f"{n} documents: a partial batch")
                hits = db.search("seed shared", vector=q, top_k=5)
                if not hits or hits[0].id != "seed":
                    wrong.append(f"search: {[h.id for h in hits]}")
                doc_id = rng.choice(committed)
                doc = db.get(doc_id)
                if doc.text != text_of(doc_id):
                    wrong.append(f"get({doc_id!r}) returned another text")
                reads[0] += 1
            except BaseException as exc:  # noqa: BLE001 - any error fails the run
                errors.append(f"reader: {exc!r}")
                stop.set()

    def writer() -> None:
        rng = np.random.default_rng(0)
        i = 0
        try:
            while db1.stats()["storage"]["map_size_bytes"] < 2 << 20 and not stop.is_set():
                ids = [f"w{i}-{j}" for j in range(N_PER_BATCH)]
                db1.add(ids, [text_of(d) for d in ids],
                        embeddings=rng.standard_normal((N_PER_BATCH, 8)).astype(np.float32)
                        * 0.01)
                committed.extend(ids)
                i += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"writer: {exc!r}")
        finally:
            stop.set()

    threads = [threading.Thread(target=reader, args=(db, k)) for k, db in
               enumerate((db2, db2, db1))]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    problems = [] if errors else db2.check()
    out = {"reads": reads[0], "batches": (len(committed) - 1) // N_PER_BATCH,
           "map_bytes": db1.stats()["storage"]["map_size_bytes"], "errors": errors,
           "wrong": wrong[:5] + problems[:5]}
    db2.close()
    db1.close()
    return out


def child_backup(path: str) -> dict:
    import threading

    import llmdsdb

    db = llmdsdb.open(path, map_size_bytes=1 << 16)
    stop = threading.Event()
    errors: list[str] = []
    wrong: list[str] = []

    def writer() -> None:
        i = 0
        try:
            while not stop.is_set():
                ids = [f"w{i}-{j}" for j in range(N_PER_BATCH)]
                db.add(ids, [text_of(d) for d in ids])
                i += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"writer: {exc!r}")

    out_dir = tempfile.mkdtemp(prefix="stress-bk-", dir=os.path.dirname(path))
    t = threading.Thread(target=writer)
    t.start()
    infos = []
    try:
        for k in range(5):
            infos.append(llmdsdb.backup(path, os.path.join(out_dir, f"b{k}")))
    except BaseException as exc:  # noqa: BLE001
        errors.append(f"backup: {exc!r}")
    finally:
        stop.set()
        t.join()
    grown = db.stats()["storage"]["map_size_bytes"]
    db.close()
    for k, info in enumerate(infos):
        dest = os.path.join(out_dir, f"r{k}")
        try:
            llmdsdb.restore(info.dest, dest)
            with llmdsdb.open(dest, readonly=True) as r:
                if (r.count(), r.generation) != (info.count, info.generation):
                    wrong.append(f"backup {k}: {r.count()} at {r.generation}, manifest "
                                 f"{info.count} at {info.generation}")
                for d in r.iter_documents():
                    if d.text != text_of(d.id):
                        wrong.append(f"backup {k}: {d.id} has another text")
                wrong.extend(r.check())
        except BaseException as exc:  # noqa: BLE001
            errors.append(f"restore {k}: {exc!r}")
    return {"backups": [i.count for i in infos], "map_bytes": grown, "errors": errors,
            "wrong": wrong[:5]}


def load_writer(path: str, stop_file: str) -> None:
    """Another process growing the same database until ``stop_file`` appears."""
    import llmdsdb

    i = 0
    with llmdsdb.open(path, map_size_bytes=1 << 16) as db:
        while not os.path.exists(stop_file):
            ids = [f"L{i}-{j}" for j in range(N_PER_BATCH)]
            db.add(ids, [text_of(d) for d in ids])
            i += 1
            # The cross-process write lock is not fair (the waiting writer polls it): a
            # writer that takes it again at once would starve the scenario's own writer.
            time.sleep(0.02)


def burn(stop_file: str) -> None:
    x = 0
    while not os.path.exists(stop_file):
        for _ in range(100_000):
            x = (x * 31 + 7) % 1_000_003


# --- the driver ------------------------------------------------------------------------------


def one_run(scenario: str, burners: int, timeout_s: float) -> dict:
    import numpy as np

    import llmdsdb

    tmp = tempfile.mkdtemp(prefix="stress-")
    path = os.path.join(tmp, "db")
    with llmdsdb.open(path, map_size_bytes=1 << 16, dim=8) as db:
        db.add(["seed"], [text_of("seed")], embeddings=np.ones((1, 8), np.float32))
    stop_file = os.path.join(tmp, "stop")
    me = [sys.executable, os.path.abspath(__file__)]
    load = [subprocess.Popen(me + ["--child", "load", path, stop_file])]
    load += [subprocess.Popen(me + ["--child", "burn", path, stop_file])
             for _ in range(burners)]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(me + ["--child", scenario, path, stop_file], capture_output=True,
                              text=True, timeout=timeout_s, check=False,
                              env=dict(os.environ, STRESS_DUMP_S=str(max(timeout_s - 20, 5))))
        outcome = {"returncode": proc.returncode, "stderr": proc.stderr[-20000:]}
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines:
            outcome.update(json.loads(lines[-1]))
    except subprocess.TimeoutExpired:
        outcome = {"returncode": None, "stderr": f"hung for {timeout_s} s"}
    finally:
        with open(stop_file, "w"):
            pass
        for p in load:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    outcome["load_exit"] = [p.returncode for p in load]
    outcome["seconds"] = round(time.monotonic() - t0, 2)
    subprocess.run(["rm", "-rf", tmp], check=False)
    return outcome


def classify(o: dict) -> str:
    rc = o["returncode"]
    if rc is None:
        return "hang"
    if rc < 0:
        return "crash"
    if rc != 0 or o.get("errors") or any(o["load_exit"]):
        return "error"
    if o.get("wrong"):
        return "wrong"
    return "ok"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--scenario", choices=["two-handles", "backup", "all"], default="all")
    ap.add_argument("--burners", type=int, default=1, help="CPU-spinning processes per run")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    ap.add_argument("--child", nargs=3, metavar=("ROLE", "PATH", "STOP"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        role, path, stop_file = args.child
        if role == "load":
            load_writer(path, stop_file)
        elif role == "burn":
            burn(stop_file)
        else:
            import faulthandler

            # a hang shows where every thread waits (stderr), then ends the child
            faulthandler.dump_traceback_later(float(os.environ.get("STRESS_DUMP_S", "280")),
                                              exit=True)
            fn = child_two_handles if role == "two-handles" else child_backup
            print(json.dumps(fn(path)), flush=True)
        return 0
    scenarios = ["two-handles", "backup"] if args.scenario == "all" else [args.scenario]
    failed = 0
    for scenario in scenarios:
        tally: dict[str, int] = {}
        detail = []
        for i in range(args.runs):
            o = one_run(scenario, args.burners, args.timeout)
            kind = classify(o)
            tally[kind] = tally.get(kind, 0) + 1
            detail.append(o)
            extra = (f"reads={o.get('reads')} batches={o.get('batches')}" if scenario ==
                     "two-handles" else f"backups={o.get('backups')}")
            print(f"{scenario} run {i + 1}/{args.runs}: {kind} ({o['seconds']} s, "
                  f"map {o.get('map_bytes')} bytes, {extra})", flush=True)
            if kind != "ok":
                sig = (f" {signal.Signals(-o['returncode']).name}"
                       if o["returncode"] and o["returncode"] < 0 else "")
                print(f"    {sig} {o.get('errors')} {o.get('wrong')}\n{o['stderr']}", flush=True)
        bad = args.runs - tally.get("ok", 0)
        failed += bad
        print(f"== {scenario}: {args.runs} runs: " + ", ".join(
            f"{k} {v}" for k, v in sorted(tally.items())), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
