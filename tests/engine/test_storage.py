"""The storage layer on real LMDB files in tmp dirs: paths, envelopes, durability, map
growth, the cross-process write lock, readonly, generations, copies, fork."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import zlib

import lmdb
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from llmdsdb import storage
from llmdsdb.errors import (
    ClosedError,
    CorruptionError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidPathError,
    InvalidTypeError,
    LockTimeoutError,
    MapFullError,
    ReadOnlyError,
    StorageError,
)
from llmdsdb.storage import (
    DB_NAMES,
    FORMAT_VERSION,
    KIND_DOC,
    KIND_PAGE,
    Envelope,
    Environment,
    check_format,
    from_u64key,
    id_key,
    is_hashed_id_key,
    u64key,
)

MiB = 1 << 20
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def dbdir(tmp_path):
    return str(tmp_path / "db")


@pytest.fixture
def env(dbdir):
    e = Environment.open(dbdir, map_size_bytes=4 * MiB)
    yield e
    e.close()


# --- keys -------------------------------------------------------------------------------------


def test_u64key_roundtrip_and_order():
    ids = [0, 1, 255, 256, 2**32, 2**64 - 1]
    keys = [u64key(i) for i in ids]
    assert keys == sorted(keys)
    assert [from_u64key(k) for k in keys] == ids
    for bad in (-1, 2**64):
        with pytest.raises(InvalidArgumentError):
            u64key(bad)
    with pytest.raises(InvalidTypeError):
        u64key(True)
    with pytest.raises(CorruptionError):
        from_u64key(b"\x00" * 7)


def test_id_key_plain_hashed_and_invalid():
    assert id_key("abc") == b"abc"
    assert id_key("é" * 200) == ("é" * 200).encode()  # exactly 400 bytes: stored as is
    long_key = id_key("é" * 201)
    assert is_hashed_id_key(long_key) and len(long_key) == 34
    assert id_key("\x00x") != b"\x00x" and is_hashed_id_key(id_key("\x00x"))
    assert id_key("x" * 1000) != id_key("x" * 1001)
    with pytest.raises(InvalidArgumentError):
        id_key("")
    with pytest.raises(InvalidArgumentError):
        id_key("\ud800")
    with pytest.raises(InvalidTypeError):
        id_key(5)  # type: ignore[arg-type]


# --- envelope ---------------------------------------------------------------------------------


@given(st.binary(max_size=3000), st.sampled_from([None, True, False]), st.integers(0, 255))
def test_envelope_roundtrip(payload, compress, kind):
    raw = Envelope.encode_value(payload, kind=kind, compress=compress)
    assert Envelope.decode_value(raw, key_desc="k", kind=kind) == payload
    assert Envelope.decode_value(memoryview(raw), key_desc="k") == payload


def test_envelope_compresses_when_it_pays():
    raw = Envelope.encode_value(b"abc" * 1000, kind=KIND_DOC)
    assert len(raw) < 200 and raw[3] & 1
    rnd = os.urandom(2000)
    assert len(Envelope.encode_value(rnd, kind=KIND_DOC)) == 2000 + Envelope.HEADER_SIZE


@given(st.binary(min_size=1, max_size=600), st.data())
def test_envelope_detects_any_single_byte_flip(payload, data):
    raw = bytearray(Envelope.encode_value(payload, kind=KIND_PAGE))
    i = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    raw[i] ^= 1 << bit
    with pytest.raises(CorruptionError, match="pages/page 7"):
        Envelope.decode_value(bytes(raw), key_desc="pages/page 7", kind=KIND_PAGE)


def test_envelope_rejections():
    good = Envelope.encode_value(b"hello", kind=KIND_DOC)
    with pytest.raises(CorruptionError, match="shorter"):
        Envelope.decode_value(good[:5], key_desc="d")
    with pytest.raises(CorruptionError, match="kind"):
        Envelope.decode_value(good, key_desc="d", kind=KIND_PAGE)
    newer = bytearray(good)
    newer[1] = FORMAT_VERSION + 1
    with pytest.raises(FormatVersionError, match="upgrade"):
        Envelope.decode_value(bytes(newer), key_desc="d")
    with pytest.raises(InvalidTypeError):
        Envelope.encode_value("text", kind=KIND_DOC)  # type: ignore[arg-type]


def _forge(body: bytes, length: int, flags: int = 1) -> bytes:
    """An envelope with a valid checksum around an arbitrary body (a hostile writer)."""
    head = bytes((0xD5, FORMAT_VERSION, KIND_DOC, flags))
    ln = length.to_bytes(4, "big")
    crc = zlib.crc32(body, zlib.crc32(ln, zlib.crc32(head)))
    return head + crc.to_bytes(4, "big") + ln + body


def test_envelope_bounded_decompression():
    bomb = zstandard.ZstdCompressor().compress(b"\x00" * (8 * MiB))
    # The envelope says 10 bytes but the frame declares 8 MiB: refused before allocating.
    with pytest.raises(CorruptionError, match="declares"):
        Envelope.decode_value(_forge(bomb, 10), key_desc="d")
    # A frame without a content size is refused too.
    cobj = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    nosize = cobj.compress(b"a" * 100) + cobj.flush()
    with pytest.raises(CorruptionError):
        Envelope.decode_value(_forge(nosize, 100), key_desc="d")
    with pytest.raises(CorruptionError, match="decompress"):
        Envelope.decode_value(_forge(b"\x28\xb5\x2f\xfd\x20\x05garbage", 5), key_desc="d")
    with pytest.raises(CorruptionError, match="flags"):
        Envelope.decode_value(_forge(b"abc", 3, flags=0x80), key_desc="d")
    # Flagged as zstd but not a frame at all: was a bare zstandard.ZstdError.
    for body in (b"garbage!", b""):
        with pytest.raises(CorruptionError, match="frame header"):
            Envelope.decode_value(_forge(body, 300), key_desc="d")


# --- open, paths, files -----------------------------------------------------------------------


def test_create_reopen_and_permissions(dbdir):
    with Environment.open(dbdir, map_size_bytes=MiB) as env:
        env.run_write(lambda t: t.put("docs", u64key(1), b"one"))
        assert env.readonly is False
    assert oct(os.stat(dbdir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.join(dbdir, "data.mdb")).st_mode & 0o777) == "0o600"
    with Environment.open(dbdir) as env:
        with env.read() as txn:
            assert txn.get("docs", u64key(1)) == b"one"
            assert env.generation(txn) == 1
            assert check_format(txn) == FORMAT_VERSION
        env._check()


def test_same_path_shares_one_environment(dbdir):
    a = Environment.open(dbdir)
    b = Environment.open(dbdir + "/")
    assert a is b
    with pytest.raises(InvalidArgumentError, match="already open"):
        Environment.open(dbdir, durability="nosync")
    a.close()
    with b.read() as txn:  # still open: b holds a reference
        assert txn.count("docs") == 0
    b.close()
    assert b.closed
    with pytest.raises(ClosedError):
        b.read().__enter__()
    b.close()  # idempotent


@pytest.mark.parametrize("mode,sync,metasync", [("sync", True, True), ("metasync", True, False),
                                                 ("nosync", False, False)])
def test_durability_flags(dbdir, mode, sync, metasync):
    with Environment.open(dbdir, durability=mode) as env:
        flags = env._env.flags()
        assert (flags["sync"], flags["metasync"], flags["writemap"]) == (sync, metasync, False)
        env.run_write(lambda t: t.put("meta", b"x", b"y"))
        env.sync()
    with Environment.open(dbdir, durability=mode) as env, env.read() as txn:
        assert txn.get("meta", b"x") == b"y"


def test_bad_options(dbdir):
    for kwargs in ({"durability": "fast"}, {"map_size_bytes": 10}, {"lock_timeout_s": -1}):
        with pytest.raises(InvalidArgumentError):
            Environment.open(dbdir, **kwargs)
    assert not os.path.exists(dbdir)


def test_path_errors(tmp_path):
    real = tmp_path / "real"
    Environment.open(str(real)).close()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(InvalidPathError, match="symbolic link"):
        Environment.open(str(link))
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InvalidPathError, match="regular file"):
        Environment.open(str(f))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidPathError, match="FIFO"):
        Environment.open(str(fifo))
    with pytest.raises(InvalidPathError, match="does not exist"):
        Environment.open(str(tmp_path / "missing"), create=False)
    with pytest.raises(InvalidPathError, match="does not exist"):
        Environment.open(str(tmp_path / "missing"), readonly=True)
    assert not (tmp_path / "missing").exists()
    # a symlinked data.mdb inside a real directory is refused as well
    d2 = tmp_path / "d2"
    d2.mkdir(mode=0o700)
    (d2 / "data.mdb").symlink_to(real / "data.mdb")
    with pytest.raises(InvalidPathError, match="not a regular file"):
        Environment.open(str(d2))


def test_empty_foreign_and_truncated_data_files(tmp_path):
    good = tmp_path / "good"
    with Environment.open(str(good)) as env:
        env.run_write(lambda t: [t.put("docs", u64key(i), os.urandom(3000)) for i in range(50)])
    data = (good / "data.mdb").read_bytes()

    def make(name: str, content: bytes):
        d = tmp_path / name
        d.mkdir(mode=0o700)
        (d / "data.mdb").write_bytes(content)
        return str(d)

    with pytest.raises(CorruptionError, match="empty"):
        Environment.open(make("empty", b""))
    with pytest.raises(CorruptionError, match="not an LMDB"):
        Environment.open(make("foreign", b"SQLite format 3\x00" + b"\x00" * 9000))
    with pytest.raises(CorruptionError, match="truncated"):
        Environment.open(make("half", data[: len(data) // 2]))
    with pytest.raises(CorruptionError, match="truncated"):
        Environment.open(make("short", data[:5000]))
    broken_meta = bytearray(data)
    broken_meta[4096 + 16] ^= 0xFF  # second meta page's magic
    with pytest.raises(CorruptionError, match="meta page 1"):
        Environment.open(make("meta", bytes(broken_meta)))
    # none of these were handed to liblmdb, and the good one still opens
    with Environment.open(str(good), readonly=True) as env, env.read() as txn:
        assert txn.count("docs") == 50


def test_foreign_lmdb_environment_and_newer_format(tmp_path):
    other = tmp_path / "other"
    e = lmdb.open(str(other))
    with e.begin(write=True) as t:
        t.put(b"someone-else", b"1")
    e.close()
    with pytest.raises(FormatVersionError, match="not written by llmdsdb"):
        Environment.open(str(other))

    newer = str(tmp_path / "newer")
    with Environment.open(newer) as env:
        env.run_write(lambda t: t.put("meta", b"format_version", u64key(FORMAT_VERSION + 1)))
    with pytest.raises(FormatVersionError, match=f"format version {FORMAT_VERSION + 1}.*upgrade"):
        Environment.open(newer)
    with pytest.raises(FormatVersionError):
        Environment.open(newer, readonly=True)


# --- transactions -----------------------------------------------------------------------------


def test_txn_operations(env):
    with env.write() as txn:
        for i in range(5):
            txn.put("pages", u64key(i), b"p%d" % i * 100)
        txn.put("ids", "doc-ä", u64key(3))
        assert txn.delete("pages", u64key(4)) is True
        assert txn.delete("pages", u64key(99)) is False
        assert txn.get("pages", u64key(0)) == b"p0" * 100  # sees its own writes
    with env.write() as txn:  # an overwrite does not change the count
        txn.put("pages", u64key(0), b"p0" * 100)
        assert txn.count("pages") == 4
    with pytest.raises(ZeroDivisionError), env.write() as txn:  # an abort neither
        txn.put("pages", u64key(77), b"x")
        assert txn.count("pages") == 5
        raise ZeroDivisionError
    with env.read() as txn:
        assert [from_u64key(k) for k, _ in txn.items("pages")] == [0, 1, 2, 3]
        assert txn.count("meta") == 4  # format_version, generation, count/pages, count/ids

        assert list(txn.keys("ids", "doc")) == ["doc-ä".encode()]
        assert txn.count("pages") == 4 and txn.get("pages", u64key(4)) is None
        assert len(list(txn.raw_items("pages"))) == 4
        with pytest.raises(ReadOnlyError):
            txn.put("pages", u64key(9), b"x")
        with pytest.raises(InvalidArgumentError, match="unknown named database"):
            txn.get("nope", b"k")
        with pytest.raises(InvalidArgumentError):
            txn.get("docs", b"")
        with pytest.raises(InvalidArgumentError):
            txn.get("docs", b"k" * 512)
        with pytest.raises(InvalidTypeError):
            txn.get("docs", 5)  # type: ignore[arg-type]
        with pytest.raises(InvalidTypeError):  # was read as a prefix of five NUL bytes
            list(txn.items("pages", 5))  # type: ignore[arg-type]
    with pytest.raises(ClosedError):
        txn.get("pages", u64key(0))


def test_corrupted_value_is_detected_with_its_key(env):
    env.run_write(lambda t: t.put("pages", u64key(42), b"payload " * 50))
    with env.read() as txn:
        raw = bytearray(txn.raw_get("pages", u64key(42)))
    raw[len(raw) // 2] ^= 0x10
    env.run_write(lambda t: t.raw_put("pages", u64key(42), bytes(raw)))
    with env.read() as txn:
        with pytest.raises(CorruptionError, match="pages/page 42.*checksum"):
            txn.get("pages", u64key(42))
        with pytest.raises(CorruptionError, match="page 42"):
            list(txn.items("pages"))


def test_generation_counts_commits_not_puts(env):
    def gen():
        with env.read() as txn:
            return env.generation(txn)

    assert gen() == 0
    env.run_write(lambda t: [t.put("docs", u64key(i), b"x") for i in range(10)])
    assert gen() == 1
    with env.write() as txn:
        txn.put("docs", u64key(1), b"y")
        txn.put("docs", u64key(2), b"y")
        assert txn.generation() == 1
    assert gen() == 2
    with env.write() as txn:  # nothing written: no commit, no bump
        txn.get("docs", u64key(1))
    assert gen() == 2
    with env.write() as txn:
        assert txn.bump_generation() == 3
    assert gen() == 3
    with pytest.raises(ZeroDivisionError), env.write() as txn:
        txn.put("docs", u64key(5), b"lost")
        raise ZeroDivisionError
    assert gen() == 3
    with env.read() as txn:
        assert txn.get("docs", u64key(5)) == b"x"


def test_hooks_and_nested_write(env):
    events = []
    env.before_commit.append(lambda t: events.append(("before", t.generation())))
    env.on_commit.append(lambda g: events.append(("commit", g)))
    env.on_abort.append(lambda: events.append(("abort",)))
    env.run_write(lambda t: t.put("meta", b"a", b"1"))
    with pytest.raises(KeyError):
        env.run_write(lambda t: (t.put("meta", b"b", b"2"), {}["missing"]))
    assert events == [("before", 0), ("commit", 1), ("abort",)]
    with env.write(), pytest.raises(InvalidArgumentError, match="nested"), env.write():
        pass


# --- map growth -------------------------------------------------------------------------------


def test_map_full_grows_and_reruns_whole_function(dbdir):
    aborts = []
    with Environment.open(dbdir, map_size_bytes=MiB) as env:
        env.on_abort.append(lambda: aborts.append(1))
        calls = []

        def fill(txn):
            calls.append(1)
            for i in range(300):  # ~3 MiB of incompressible values
                txn.put("pages", u64key(i), os.urandom(10_000))
            return len(calls)

        assert env.run_write(fill) == len(calls) >= 2
        assert len(aborts) == len(calls) - 1
        assert env.map_size_bytes >= 4 * MiB
        with env.read() as txn:
            assert txn.count("pages") == 300 and env.generation(txn) == 1
    with Environment.open(dbdir, map_size_bytes=MiB) as env:  # reopened: room to write
        used = os.path.getsize(os.path.join(dbdir, "data.mdb"))
        assert env.map_size_bytes >= 2 * used > 2 * 3_000_000


def test_map_full_in_write_grows_then_raises(dbdir):
    with Environment.open(dbdir, map_size_bytes=MiB) as env:
        with pytest.raises(MapFullError, match="grown") as info, env.write() as txn:
            for i in range(300):
                txn.put("pages", u64key(i), os.urandom(10_000))
        assert info.value.grown is True
        assert isinstance(info.value.__cause__, lmdb.MapFullError)
        with env.read() as txn:
            assert txn.count("pages") == 0 and env.generation(txn) == 0


def test_map_full_at_cap_leaves_data_unchanged(dbdir):
    with Environment.open(dbdir, map_size_bytes=MiB, max_map_size_bytes=MiB) as env:
        env.run_write(lambda t: t.put("docs", u64key(1), b"kept"))
        with pytest.raises(MapFullError, match="map_size_bytes") as info:
            env.run_write(lambda t: [t.put("pages", u64key(i), os.urandom(10_000))
                                     for i in range(300)])
        assert info.value.grown is False
        with env.read() as txn:
            assert txn.count("pages") == 0 and txn.get("docs", u64key(1)) == b"kept"


# --- other processes --------------------------------------------------------------------------


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_write_lock_times_out_while_another_process_writes(dbdir):
    Environment.open(dbdir).close()
    holder = _spawn(f"""
        import sys
        from llmdsdb.storage import Environment, u64key
        env = Environment.open({dbdir!r})
        with env.write() as txn:
            txn.put("docs", u64key(1), b"from child")
            print("holding", flush=True)
            sys.stdin.readline()
        print("done", flush=True)
    """)
    try:
        assert holder.stdout.readline().strip() == "holding"
        # opening (for writing too) does not wait for the other process's batch
        with Environment.open(dbdir, lock_timeout_s=0.05) as env:
            with pytest.raises(LockTimeoutError, match=f"process {holder.pid}"):
                env.run_write(lambda t: t.put("docs", u64key(2), b"parent"))
            holder.stdin.write("go\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "done"
            env.lock_timeout_s = 30.0
            env.run_write(lambda t: t.put("docs", u64key(2), b"parent"))
            with env.read() as txn:
                assert txn.get("docs", u64key(1)) == b"from child"
                assert env.generation(txn) == 2
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0


def test_reader_adopts_map_grown_by_another_process(dbdir):
    with Environment.open(dbdir, map_size_bytes=MiB) as env:
        child = _spawn(f"""
            import os
            from llmdsdb.storage import Environment, u64key
            env = Environment.open({dbdir!r}, map_size_bytes=1 << 20)
            env.run_write(lambda t: [t.put("pages", u64key(i), os.urandom(10_000))
                                     for i in range(300)])
            print(env.map_size_bytes, flush=True)
        """)
        grown = int(child.stdout.readline())
        assert child.wait(timeout=30) == 0 and grown > MiB
        with env.read() as txn:
            assert txn.count("pages") == 300
            assert sum(len(v) for _, v in txn.items("pages")) == 3_000_000
        assert env.map_size_bytes == grown


def test_readonly_refuses_writes(dbdir):
    with Environment.open(dbdir) as env:
        env.run_write(lambda t: t.put("docs", u64key(1), b"x"))
    with Environment.open(dbdir, readonly=True) as env:
        with pytest.raises(ReadOnlyError, match="readonly"):
            env.run_write(lambda t: t.put("docs", u64key(2), b"y"))
        with pytest.raises(ReadOnlyError), env.write():
            pass
        with env.read() as txn:
            assert txn.get("docs", u64key(1)) == b"x"
    assert not os.path.exists(os.path.join(dbdir, "nothing"))


def test_readonly_on_fresh_directory_is_refused(tmp_path):
    d = tmp_path / "empty"
    d.mkdir(mode=0o700)
    with pytest.raises(InvalidPathError, match="no database"):
        Environment.open(str(d), readonly=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_use_after_fork_raises_and_child_can_reopen(env, dbdir):
    env.run_write(lambda t: t.put("docs", u64key(1), b"x"))
    pid = os.fork()
    if pid == 0:  # child: exit code encodes the outcome
        code = 1
        try:
            try:
                with env.read():
                    pass
            except ClosedError:
                code = 2
                with Environment.open(dbdir) as mine:
                    mine.run_write(lambda t: t.put("docs", u64key(2), b"child"))
                    code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with env.read() as txn:  # the parent's handle is unaffected
        assert txn.get("docs", u64key(2)) == b"child"


# --- copies and stats -------------------------------------------------------------------------


def test_copy_to_is_a_valid_consistent_environment(env, tmp_path):
    env.run_write(lambda t: [t.put("docs", u64key(i), b"d%d" % i) for i in range(20)])
    env.run_write(lambda t: t.delete("docs", u64key(0)))
    dest = tmp_path / "copy"
    info = env.copy_to(str(dest))
    assert info["generation"] == 2 and info["count"] == 19
    assert info["format_version"] == FORMAT_VERSION
    info2 = env.copy_to(str(tmp_path / "copy2"), compact=False)
    assert (info2["generation"], info2["count"]) == (2, 19)
    with Environment.open(str(dest), readonly=True) as copy, copy.read() as txn:
        assert txn.count("docs") == 19 and txn.get("docs", u64key(7)) == b"d7"
        assert copy.generation(txn) == 2
    with pytest.raises(InvalidPathError, match="not empty"):
        env.copy_to(str(dest))
    (tmp_path / "lnk").symlink_to(tmp_path / "copy3-target", target_is_directory=True)
    with pytest.raises(InvalidPathError):
        env.copy_to(str(tmp_path / "lnk"))


def test_stat(env):
    env.run_write(lambda t: t.put("pages", u64key(1), b"x" * 100))
    s = env.stat()
    assert s["entries"]["pages"] == 1 and s["generation"] == 1
    assert set(s["entries"]) == set(DB_NAMES)
    assert s["bytes_on_disk"] > 0 and s["map_size_bytes"] == 4 * MiB
    assert s["max_readers"] == 512 and s["durability"] == "sync"
    assert "Environment" in repr(env)


def test_module_constants():
    assert storage.FORMAT_VERSION == 1
    assert DB_NAMES == ("meta", "docs", "ids", "pages", "idxmeta")


def test_reader_table_full_gives_a_clear_error(tmp_path):
    from llmdsdb.errors import StorageError

    with Environment.open(str(tmp_path / "db"), max_readers=2) as env:
        with env.read(), env.read(), pytest.raises(StorageError, match="reader table is full"), \
                env.read():
            pass
        with env.read() as txn:  # slots come back when the readers end
            assert txn.count("docs") == 0


def test_failed_begin_aborts_the_lmdb_transaction(env, monkeypatch):
    # A corrupt generation record makes wrapping a new transaction fail. The LMDB
    # transaction must be aborted there and then: a leaked write txn would hold LMDB's
    # writer lock for as long as the exception (and its frames) lived.
    with env._env.begin(write=True) as raw:  # behind the Txn layer, which rewrites it
        raw.put(b"\x01generation", b"junk")
    begun = []
    real_begin = env._begin

    def spy(write):
        t = real_begin(write)
        begun.append(t)
        return t

    monkeypatch.setattr(env, "_begin", spy)
    with pytest.raises(CorruptionError, match="generation"), env.read():
        pass
    with pytest.raises(CorruptionError, match="generation"), env.write():
        pass
    assert len(begun) == 2
    for t in begun:
        with pytest.raises(lmdb.Error, match="closed"):
            t.id()


def test_copy_to_wraps_os_errors(env, tmp_path, monkeypatch):
    # An I/O error while finishing a copy (fsync) is a StorageError naming the copy, not
    # a bare OSError from the os module.
    from llmdsdb.errors import StorageError

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage.os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="copy is incomplete"):
        env.copy_to(str(tmp_path / "copy"))


# --- the map guard: resizes never run under a live transaction of the process ------------


def _wait_until(pred, what: str) -> None:
    for _ in range(10_000):  # ~10 s at most; returns as soon as it holds
        if pred():
            return
        threading.Event().wait(0.001)
    raise AssertionError(f"timed out waiting until {what}")


def test_readers_hold_transactions_at_the_same_time(env):
    env.run_write(lambda t: t.put("docs", u64key(1), b"x"))
    inside = [threading.Event(), threading.Event()]
    seen = []

    def reader(me: int) -> None:
        with env.read() as txn:
            inside[me].set()
            assert inside[1 - me].wait(30), "the other reader never got in: reads serialised"
            seen.append(txn.get("docs", u64key(1)))

    ts = [threading.Thread(target=reader, args=(i,)) for i in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert seen == [b"x", b"x"]


def test_growth_waits_for_live_transactions_and_nested_ones_do_not_wait(env):
    env.run_write(lambda t: t.put("docs", u64key(1), b"x" * 3000))
    before = env.map_size_bytes
    in_read, released, grown = threading.Event(), threading.Event(), []

    def reader() -> None:
        with env.read() as txn:
            in_read.set()
            _wait_until(lambda: env._guard._pending == 1, "the growth is pending")
            with env.read() as nested:  # a nested transaction does not wait for it
                assert nested.get("docs", u64key(1)) == b"x" * 3000
            assert txn.get("docs", u64key(1)) == b"x" * 3000
            released.set()

    def grower() -> None:
        in_read.wait(30)
        grown.append((env._grow(), released.is_set()))

    ts = [threading.Thread(target=reader), threading.Thread(target=grower)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert grown == [(2 * before, True)]  # grown only after the reader's transaction ended
    assert env.map_size_bytes == 2 * before
    with env.read() as txn:
        assert txn.get("docs", u64key(1)) == b"x" * 3000
        with pytest.raises(StorageError, match="holds a transaction"):
            env._grow()  # never waits for itself


@pytest.mark.parametrize("cls", [lmdb.IncompatibleError, lmdb.CorruptedError,
                                 lmdb.PageNotFoundError, lmdb.InvalidError])
def test_lmdb_reports_of_a_damaged_file_are_corruption_errors(cls):
    """What LMDB says of a file it cannot use as stored (MDB_INCOMPATIBLE included: main
    database flags llmdsdb never writes) reaches the caller as a CorruptionError."""
    from llmdsdb.storage_txn import _wrap

    err = _wrap(cls("mdb_txn_begin", -30784), "read x")
    assert isinstance(err, CorruptionError) and "backup" in str(err)
