"""The fault matrix of RELIABILITY.md §4.5: each row injects one fault and expects a clear,
typed error from llmdsdb.errors (never a crash of the calling process), nothing
acknowledged lost, and a database that opens at its last acknowledged generation with
``check()`` clean once the fault is gone.

Faults that could kill the process that meets them (a truncated or damaged ``data.mdb``,
an I/O error inside LMDB, a file-size limit, an address-space limit) are injected into a
child process; the test asserts the child was not killed by a signal and reads its report.
Write and sync errors come from ``faultshim.c`` (beside this file), compiled by the test
with gcc and preloaded into the child; without gcc those rows skip with the reason.

Row -> test (``F<nn>`` is in each test's name; rows covered elsewhere are named here):

=====  ===========================================  ==========================================
F01    MDB_MAP_FULL mid-batch                       test_f01_* (grow x2 and rerun the batch);
                                                    the growth cap: test_storage.py
                                                    ``test_map_full_at_cap_leaves_data_unchanged``
F02    ENOSPC / EFBIG (disk full)                   test_f02_* (RLIMIT_FSIZE), test_f03_* (shim
                                                    returning ENOSPC on the Nth write)
F03    EIO on the Nth write / sync, once / forever  test_f03_*
F04    writemap=True + ENOSPC                       test_f04_* (writemap is never used)
F05    read-only filesystem / read-only file        test_f05_* (shim: EROFS, EACCES on open)
F06    permission denied on the directory           test_f06_*
F07    truncated data.mdb (0, 8 KiB, 50%, -1 page)  test_f07_*
F08    bit-flipped bytes in data.mdb                test_f08_*
F09    stale lock.mdb (a SIGKILLed reader)          test_f09_*
F10    garbage lock.mdb                             test_f10_*
F11    newer format version                         test_f11_*
F12    out of memory (RLIMIT_AS)                    test_f12_*
F13    SIGKILL of an ingest mid-batch               tests/crash/test_kill9.py
F14    two writers race                             test_f14_*
F15    same path opened twice in one process        test_f15_*
F16    fork with an open database                   test_f16_*
F17    MapResized from another process             test_storage.py
                                                    ``test_reader_adopts_map_grown_by_another_process``,
                                                    test_concurrency.py ``test_map_grows_under_*``
F18    ReadersFull                                  test_storage.py
                                                    ``test_reader_table_full_gives_a_clear_error``
=====  ===========================================  ==========================================
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from dbtestutil import path_state_hash, state_hash, unit_vectors

import llmdsdb
from llmdsdb.errors import ClosedError, CorruptionError, FormatVersionError, StorageError

ROOT = Path(__file__).resolve().parents[2]
DIM = 4


def _batch(db: llmdsdb.Database, b: int, n: int = 5, text_bytes: int = 40) -> None:
    ids = [f"b{b}-{i}" for i in range(n)]
    texts = [f"batch {b} doc {i} " + "lorem ipsum " * (text_bytes // 12) for i in range(n)]
    db.add(ids, texts, embeddings=unit_vectors(n, DIM, b), metadata=[{"b": b}] * n)


def make_db(path: Path, batches: int = 2) -> str:
    """A database with ``batches`` acknowledged batches; returns its state hash."""
    with llmdsdb.open(str(path)) as db:
        for b in range(batches):
            _batch(db, b)
        return state_hash(db)


def assert_intact(path: Path, want_hash: str | None = None) -> llmdsdb.Database:
    """The database opens, checks clean and (when given) has exactly ``want_hash``."""
    with llmdsdb.open(str(path)) as db:
        assert db.check() == []
        if want_hash is not None:
            assert state_hash(db) == want_hash
        return db


def run_child(code: str, *, preload: str | None = None, timeout: float = 120) -> dict:
    """Run ``code`` in a fresh interpreter (this tree first on the path); it prints one JSON
    object as its last line. Fails if the child was killed by a signal or exited non-zero."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'engine'}")
    if preload:  # after what is preloaded already (tools/sanitize preloads libasan first)
        env["LD_PRELOAD"] = f"{os.environ.get('LD_PRELOAD', '')} {preload}".strip()
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=False, capture_output=True,
                       text=True, env=env, timeout=timeout)
    assert p.returncode >= 0, (f"the child was killed by signal {-p.returncode}\n"
                               f"{p.stderr[-3000:]}")
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> str:
    gcc = shutil.which(os.environ.get("CC", "gcc"))
    if gcc is None:
        pytest.skip("gcc not found: the write/sync error shim (faultshim.c) cannot be built")
    out = tmp_path_factory.mktemp("shim") / "faultshim.so"
    p = subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(out),
                        str(Path(__file__).with_name("faultshim.c")), "-ldl"],
                       check=False, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"faultshim.c did not compile: {p.stderr[-500:]}")
    return str(out)


# --- F01: a full map mid-batch ----------------------------------------------------------------


def test_f01_map_full_mid_batch_grows_and_reruns_the_whole_batch(tmp_path):
    path = tmp_path / "db"
    with llmdsdb.open(str(path), map_size_bytes=1 << 16) as db:
        start = int(db._env.stat()["map_size"]) if "map_size" in db._env.stat() else None
        _batch(db, 0, n=3)
        # one batch far larger than the 64 KiB map: full mid-batch, grown, rerun whole
        _batch(db, 1, n=40, text_bytes=6000)
        assert db.count() == 43 and db.generation == 2
        assert sorted(db.ids()) == sorted([f"b0-{i}" for i in range(3)] +
                                          [f"b1-{i}" for i in range(40)])
        assert db.check() == []
        if start is not None:
            assert int(db._env.stat()["map_size"]) > start
    assert_intact(path)


# --- F02: disk full (a file-size limit) -------------------------------------------------------


def test_f02_file_size_limit_fails_the_commit_and_keeps_the_acknowledged_state(tmp_path):
    path = tmp_path / "db"
    make_db(path)
    size = (path / "data.mdb").stat().st_size
    report = run_child(f"""
        import json, resource, signal
        import llmdsdb
        from test_fault_matrix import _batch
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        out = {{}}
        with llmdsdb.open({str(path)!r}) as db:
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, ({size}, hard))
            try:
                _batch(db, 7, n=60, text_bytes=3000)
                out["first"] = "ok"
            except Exception as exc:
                out["first"] = [c.__name__ for c in type(exc).__mro__]
                out["msg"] = str(exc)
            out["gen_after_failure"] = db.generation
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # the disk has room again
            _batch(db, 8, n=3)
            out["gen"] = db.generation
        print(json.dumps(out))
    """)
    assert report["first"] != "ok" and "LlmdsdbError" in report["first"], report
    assert "StorageError" in report["first"], report  # an OSError-kind error, typed
    assert report["gen_after_failure"] == 2 and report["gen"] == 3
    with llmdsdb.open(str(path), readonly=True) as db:
        assert db.check() == [] and db.count() == 13
        assert db.get("b7-0") is None and db.get("b8-2") is not None


# --- F03: EIO / ENOSPC on the Nth write or sync ------------------------------------------------

_LOOP = """
    import ctypes, errno, json, shutil
    import llmdsdb
    from dbtestutil import state_hash
    from test_fault_matrix import _batch
    shim = ctypes.CDLL(None)
    out = []
    for n in range(1, 40):
        d = {work!r} + f"/n{{n}}"
        shutil.copytree({base!r}, d)
        rec = {{"n": n}}
        db = llmdsdb.open(d)
        shim.faultshim_arm(n, {forever}, {errnum}, {mask})
        try:
            _batch(db, 5)
            rec["acked"] = True
        except llmdsdb.errors.LlmdsdbError as exc:
            rec["acked"] = False
            rec["error"] = [c.__name__ for c in type(exc).__mro__]
        rec["fired"] = shim.faultshim_fired()
        if {forever} and rec["fired"]:  # still failing: every write keeps failing cleanly
            try:
                _batch(db, 7, n=1)
                rec["while_failing"] = "ok"
            except llmdsdb.errors.LlmdsdbError as exc:
                rec["while_failing"] = [c.__name__ for c in type(exc).__mro__]
        shim.faultshim_disarm()
        try:  # the fault is gone: the handle works again, or says to reopen
            _batch(db, 6, n=1)
            rec["after"] = "ok"
        except llmdsdb.errors.LlmdsdbError as exc:
            rec["after"] = [c.__name__ for c in type(exc).__mro__]
            rec["after_msg"] = str(exc)
        db.close()
        out.append(rec)
        if not rec["fired"]:
            break
    print(json.dumps(out))
"""


@pytest.mark.parametrize("forever", [0, 1], ids=["once", "forever"])
@pytest.mark.parametrize("errname,mask", [("EIO", 3), ("ENOSPC", 1)], ids=["eio", "enospc"])
def test_f03_write_or_sync_error_loop(tmp_path, shim, forever, errname, mask):
    """SQLite's I/O-error loop: for N = 1, 2, ... the Nth write (or sync) of data.mdb fails
    until a batch completes without reaching N. Each time: a typed StorageError, the batch
    absent, every acknowledged batch present, check() clean."""
    base = tmp_path / "base"
    want = make_db(base)
    work = tmp_path / "work"
    work.mkdir()
    recs = run_child(_LOOP.format(work=str(work), base=str(base), forever=forever,
                                  errnum=getattr(errno, errname), mask=mask), preload=shim)
    assert len(recs) >= 2 and not recs[-1]["fired"], recs  # the loop ran past every call
    for rec in recs:
        d = work / f"n{rec['n']}"
        if rec["fired"]:
            assert not rec["acked"] and "StorageError" in rec["error"], rec
            if forever:
                assert "StorageError" in rec["while_failing"], rec
            # a failed commit never reads as a damaged file
            assert rec["after"] == "ok" or "CorruptionError" not in rec["after"], rec
        with llmdsdb.open(str(d), readonly=True) as db:
            assert db.check() == []
            present5 = db.get("b5-0") is not None
            assert present5 == rec["acked"], rec  # visible exactly when acknowledged
            assert (db.get("b6-0") is not None) == (rec["after"] == "ok"), rec
            if not rec["acked"] and rec["after"] != "ok":
                assert state_hash(db) == want


# --- F04: writemap ----------------------------------------------------------------------------


def test_f04_writemap_is_never_used(tmp_path):
    """writemap=True turns ENOSPC into SIGBUS (py-lmdb #161): the API has no way to ask for
    it and the environment never runs with it."""
    path = tmp_path / "db"
    make_db(path, 1)
    with pytest.raises(TypeError):
        llmdsdb.open(str(path), writemap=True)  # type: ignore[call-arg]
    with llmdsdb.open(str(path)) as db:
        flags = db._env._env.flags()
        assert flags["writemap"] is False and flags.get("map_async", False) is False


# --- F05 / F06: read-only filesystem, read-only or inaccessible files --------------------------

_RO = """
    import ctypes, errno, json
    import llmdsdb
    shim = ctypes.CDLL(None)
    shim.faultshim_arm(1, 1, {errnum}, 4)
    out = {{}}
    try:
        with llmdsdb.open({path!r}, readonly=True) as db:
            out["query"] = [r.id for r in db.search("batch", top_k=3)]
            out["count"] = db.count()
            try:
                db.add(["x"], ["y"])
                out["ro_add"] = "ok"
            except llmdsdb.errors.LlmdsdbError as exc:
                out["ro_add"] = [c.__name__ for c in type(exc).__mro__]
    except llmdsdb.errors.LlmdsdbError as exc:
        out["query"] = [c.__name__ for c in type(exc).__mro__]
        out["query_msg"] = str(exc)
    try:
        with llmdsdb.open({path!r}) as db:
            db.add(["x"], ["y"])
            out["rw_add"] = "ok"
    except llmdsdb.errors.LlmdsdbError as exc:
        out["rw_add"] = [c.__name__ for c in type(exc).__mro__]
        out["rw_msg"] = str(exc)
    print(json.dumps(out))
"""


def test_f05_read_only_filesystem_queries_work_and_writes_fail_clearly(tmp_path, shim):
    path = tmp_path / "db"
    want = make_db(path)
    out = run_child(_RO.format(errnum=errno.EROFS, path=str(path)), preload=shim)
    assert out["count"] == 10 and len(out["query"]) == 3, out  # reads work on a RO filesystem
    assert "ReadOnlyError" in out["ro_add"], out
    assert "StorageError" in out["rw_add"] and str(path) in out["rw_msg"], out
    assert "ead-only" in out["rw_msg"], out
    assert path_state_hash(str(path)) == want


def test_f05_read_only_files_give_clear_errors(tmp_path, shim):
    """Files the process may not open for writing (EACCES, what chmod 0444 gives a non-root
    user; root ignores file modes, so the shim stands in): a typed error naming the path and
    what to do, the database unchanged."""
    path = tmp_path / "db"
    want = make_db(path)
    out = run_child(_RO.format(errnum=errno.EACCES, path=str(path)), preload=shim)
    for key, msg in (("query", "query_msg"), ("rw_add", "rw_msg")):
        assert "StorageError" in out[key] and str(path) in out[msg], out
    assert path_state_hash(str(path)) == want


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory modes; the EACCES "
                    "shim row (test_f05_read_only_files_give_clear_errors) covers it")
def test_f06_permission_denied_on_the_directory(tmp_path):
    path = tmp_path / "db"
    make_db(path, 1)
    os.chmod(path, 0)
    try:
        with pytest.raises(StorageError, match=str(path)):
            llmdsdb.open(str(path))
    finally:
        os.chmod(path, 0o700)
    assert_intact(path)


# --- F07 / F08: truncated, zero-length and bit-flipped data.mdb -------------------------------

_OPEN_SCAN = """
    import json, sys
    import llmdsdb
    out = []
    for d in {dirs!r}:
        rec = {{"dir": d}}
        try:
            with llmdsdb.open(d) as db:
                rec["problems"] = db.check()
                rec["count"] = db.count()
                rec["docs"] = sorted((x.id, x.text, x.metadata.get("b")) for x in db.iter_documents())
                rec["hits"] = [[r.id for r in db.search(q, top_k=5)] for q in ("batch", "lorem 1")]
                rec["vec"] = [r.id for r in db.search(vector=[1.0, 0.0, 0.0, 0.0], top_k=5)]
        except llmdsdb.errors.LlmdsdbError as exc:
            rec["error"] = [c.__name__ for c in type(exc).__mro__]
            rec["msg"] = str(exc)
        out.append(rec)
        print("done", d, file=sys.stderr, flush=True)
    print(json.dumps(out))
"""


def _cut_copies(src: Path, tmp: Path) -> dict[str, Path]:
    data = (src / "data.mdb").read_bytes()
    cuts = {"zero": 0, "8k": 8192, "half": len(data) // 2, "minus-page": len(data) - 4096}
    out = {}
    for name, n in cuts.items():
        d = tmp / f"cut-{name}"
        d.mkdir(mode=0o700)
        (d / "data.mdb").write_bytes(data[:n])
        out[name] = d
    return out


def test_f07_truncated_and_zero_length_data_files_never_crash_or_open_empty(tmp_path):
    src = tmp_path / "src"
    want = make_db(src, 4)
    cuts = _cut_copies(src, tmp_path)
    recs = run_child(_OPEN_SCAN.format(dirs=[str(d) for d in cuts.values()]))
    for name, rec in zip(cuts, recs):
        # never an empty database, never SIGBUS (run_child asserts no signal)
        assert "CorruptionError" in rec.get("error", []), (name, rec)
        assert "backup" in rec["msg"] or "verify" in rec["msg"] or "truncat" in rec["msg"], rec
    # the same in this process: detected before LMDB maps the file
    for d in cuts.values():
        with pytest.raises(CorruptionError):
            llmdsdb.open(str(d))
    assert path_state_hash(str(src)) == want


def flipped_copies(data: bytes, rng: np.random.Generator, dirs: list[Path]) -> list[int]:
    """Write ``data`` with one random byte flipped as ``data.mdb`` into each of ``dirs``
    (created 0700); returns the flipped offsets. Shared with tools/fuzz/fuzz_files.py."""
    offs = []
    for d in dirs:
        d.mkdir(mode=0o700)
        b = bytearray(data)
        off = int(rng.integers(0, len(b)))
        b[off] ^= int(rng.integers(1, 256))
        (d / "data.mdb").write_bytes(bytes(b))
        offs.append(off)
    return offs


def test_f08_bit_flips_are_detected_or_harmless_never_silent(tmp_path):
    """Flip one byte (30 trials over the whole file, deterministic seed) in a copy: the
    child opens, checks, reads every document and runs queries. Each trial must end in a
    typed error, or check() reporting a problem, or answers identical to the undamaged
    database: never a crash, never a silently wrong answer."""
    src = tmp_path / "src"
    make_db(src, 4)
    data = (src / "data.mdb").read_bytes()
    rng = np.random.default_rng(2026)
    paths = [tmp_path / f"flip{t}" for t in range(30)]
    flipped_copies(data, rng, paths)
    dirs = [str(d) for d in paths]
    clean = run_child(_OPEN_SCAN.format(dirs=[str(src)]))[0]
    assert clean["problems"] == [] and clean["count"] == 20
    recs = run_child(_OPEN_SCAN.format(dirs=dirs), timeout=300)
    outcomes = {"typed error": 0, "check reports": 0, "harmless": 0}
    for rec in recs:
        if "error" in rec:
            assert "LlmdsdbError" in rec["error"], rec
            outcomes["typed error"] += 1
        elif rec["problems"]:
            outcomes["check reports"] += 1
        else:
            assert {k: rec[k] for k in ("count", "docs", "hits", "vec")} == \
                {k: clean[k] for k in ("count", "docs", "hits", "vec")}, rec["dir"]
            outcomes["harmless"] += 1
    assert sum(outcomes.values()) == 30
    assert outcomes["typed error"] + outcomes["check reports"] > 0  # the seed hits live bytes


# --- F09 / F10: stale and garbage lock files ----------------------------------------------------


def test_f09_stale_reader_of_a_killed_process_is_cleared(tmp_path):
    path = tmp_path / "db"
    want = make_db(path)
    code = textwrap.dedent(f"""
        import sys, time, llmdsdb
        db = llmdsdb.open({str(path)!r})
        it = db.iter_documents()
        next(it)  # a read transaction held open
        print("ready", flush=True)
        time.sleep(600)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "ready"
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait()
    with llmdsdb.open(str(path)) as db:
        readers = db._env._env.readers()
        assert f"{p.pid} " not in readers and f" {p.pid}" not in readers.split("\n", 1)[-1]
        assert state_hash(db) == want
        for b in range(2, 6):
            _batch(db, b)
        assert db.check() == [] and db.count() == 30


def test_f10_garbage_lock_file_with_no_live_opener_opens(tmp_path):
    path = tmp_path / "db"
    want = make_db(path)
    (path / "lock.mdb").write_bytes(np.random.default_rng(3).bytes(8192))
    assert path_state_hash(str(path)) == want
    with llmdsdb.open(str(path)) as db:
        _batch(db, 9, n=1)
        assert db.check() == [] and db.count() == 11


# --- F11: a newer format version ----------------------------------------------------------------


def test_f11_newer_format_version_is_refused_with_an_upgrade_message(tmp_path):
    from llmdsdb.storage import Environment
    from llmdsdb.storage_format import FORMAT_VERSION, u64key

    path = tmp_path / "db"
    make_db(path, 1)
    with Environment.open(str(path)) as env:
        env.run_write(lambda t: t.put("meta", b"format_version", u64key(FORMAT_VERSION + 1)))
    for ro in (False, True):
        with pytest.raises(FormatVersionError, match="upgrade"):
            llmdsdb.open(str(path), readonly=ro)
    p = subprocess.run([sys.executable, "-m", "llmdsdb", "query", str(path), "batch"],
                       check=False, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 1 and "Traceback" not in p.stderr  # the CLI's documented code
    assert "upgrade" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


# --- F12: out of memory ---------------------------------------------------------------------------


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer reserves terabytes of address space: an "
                    "RLIMIT_AS test means nothing under tools/sanitize")
def test_f12_memory_error_mid_batch_aborts_it_and_the_handle_keeps_working(tmp_path):
    path = tmp_path / "db"
    want = make_db(path)
    out = run_child(f"""
        import json, resource
        import numpy as np
        import llmdsdb
        from dbtestutil import state_hash
        out = {{}}
        with llmdsdb.open({str(path)!r}) as db:
            texts = [" ".join(f"w{{i}}x{{j}}" for j in range(60_000)) for i in range(40)]
            ids = [f"big{{i}}" for i in range(40)]
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            with open("/proc/self/status") as f:
                vm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize")][0]
            resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), hard))
            try:
                db.add(ids, texts)
                out["big"] = "ok"
            except MemoryError as exc:
                out["big"] = [c.__name__ for c in type(exc).__mro__]
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            out["hash"] = state_hash(db)
            db.add(["after"], ["the handle still writes"])
            out["count"] = db.count()
            out["problems"] = db.check()
        print(json.dumps(out))
    """)
    if out["big"] == "ok":
        pytest.skip("the batch fitted in the address-space limit on this machine")
    assert "MemoryError" in out["big"]
    assert out["hash"] == want and out["count"] == 11 and out["problems"] == []
    assert_intact(path)


# --- F14 / F15 / F16: writers and handles --------------------------------------------------------


def test_f14_two_writer_processes_interleave_whole_batches(tmp_path):
    path = tmp_path / "db"
    make_db(path, 1)
    code = f"""
        import sys, llmdsdb
        from test_fault_matrix import _batch
        w = int(sys.argv[1])
        with llmdsdb.open({str(path)!r}) as db:
            for b in range(8):
                _batch(db, 100 * w + b, n=4)
        print("{{}}")
    """
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'engine'}")
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(w)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    with llmdsdb.open(str(path)) as db:
        assert db.check() == [] and db.count() == 5 + 2 * 8 * 4
        assert db.generation == 1 + 16  # one commit per batch, none lost, none merged
        by_batch: dict[int, int] = {}
        for d in db.iter_documents():
            by_batch[d.metadata["b"]] = by_batch.get(d.metadata["b"], 0) + 1
        assert all(v == 4 for b, v in by_batch.items() if b >= 100)


def test_f15_same_path_opened_twice_in_one_process(tmp_path):
    path = tmp_path / "db"
    make_db(path, 1)
    a = llmdsdb.open(str(path))
    b = llmdsdb.open(str(path))
    try:
        _batch(a, 1)
        assert b.count() == 10 and b.get("b1-0") is not None
        assert [r.id for r in b.search("batch 1", top_k=1)]
        a.close()
        _batch(b, 2)
        assert b.count() == 15 and b.check() == []
    finally:
        a.close()
        b.close()
    with pytest.raises(ClosedError):
        a.count()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_f16_fork_with_an_open_database(tmp_path):
    path = tmp_path / "db"
    make_db(path, 1)
    with llmdsdb.open(str(path)) as db:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child reports through the pipe and never returns into pytest
            res = "no error"
            try:
                try:
                    db.search("batch")
                except ClosedError as exc:
                    res = "ClosedError:" + str(exc)
                    with llmdsdb.open(str(path)) as mine:
                        _batch(mine, 1)
                        res += "|reopened"
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    res = type(exc).__name__ + ":" + str(exc)
            finally:
                os.write(w, res.encode()[:4000])
                os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            res = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert res.startswith("ClosedError:") and res.endswith("|reopened"), res
        assert "fork" in res.lower() or "open" in res.lower()
        # the parent's handle is unaffected and sees the child's batch
        assert db.count() == 10 and db.check() == []

