"""Faults from issue 13 that must give a clear, typed error and leave every database as it
was: a data file deleted beside its lock files, a hard-linked data file, a path with a NUL
byte, the read-only error's advice, two processes creating one new database at once, and
restores that would destroy data (a target another process holds open, a backup inside its
own target, a full disk)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import llmdsdb
from llmdsdb import storage
from llmdsdb.backup import read_manifest
from llmdsdb.errors import (
    BackupError,
    CorruptionError,
    InvalidPathError,
    ReadOnlyError,
)
from llmdsdb.storage import Environment


def make_db(path, n: int = 3) -> None:
    with llmdsdb.open(str(path)) as db:
        db.add([f"d{i}" for i in range(n)], [f"document number {i}" for i in range(n)])


def count(path) -> int:
    with llmdsdb.open(str(path), readonly=True) as db:
        return db.count()


# --- finding 6: data.mdb deleted, lock files left ---------------------------------------------


def test_data_file_deleted_beside_lock_file_is_refused(tmp_path):
    p = tmp_path / "db"
    make_db(p)
    os.unlink(p / "data.mdb")
    for readonly in (False, True):
        with pytest.raises(CorruptionError, match="data.mdb.*deleted"):
            llmdsdb.open(str(p), readonly=readonly)
    assert not (p / "data.mdb").exists()  # nothing was created in its place
    # also with only llmdsdb's own write lock left behind
    os.unlink(p / "lock.mdb")
    with pytest.raises(CorruptionError, match="llmdsdb.lock"):
        Environment.open(str(p))
    assert sorted(os.listdir(p)) == ["llmdsdb.lock"]


def test_new_and_empty_directories_still_create_a_database(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    for p in (tmp_path / "new" / "db", empty):
        with llmdsdb.open(str(p)) as db:
            db.add(["a"], ["alpha"])
        assert count(p) == 1


# --- finding 8 (hard links) -------------------------------------------------------------------


def test_hard_linked_data_file_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_db(a)
    b.mkdir(mode=0o700)
    os.link(a / "data.mdb", b / "data.mdb")
    for p in (a, b):
        with pytest.raises(InvalidPathError, match="hard links"):
            llmdsdb.open(str(p))
    os.unlink(b / "data.mdb")
    assert count(a) == 3


# --- finding 9: typed errors ------------------------------------------------------------------


def test_path_with_nul_byte_is_invalid_path():
    with pytest.raises(InvalidPathError, match="NUL"):
        llmdsdb.open("a\x00b")
    for path in ("a\x00b", b"a\x00b"):
        with pytest.raises(InvalidPathError, match="NUL"):
            Environment.open(path)


def test_readonly_error_does_not_advise_readonly_when_it_was_given(tmp_path):
    p = tmp_path / "db"
    make_db(p)
    lock = p / "lock.mdb"
    # root ignores file modes; an immutable lock file refuses even root's write access
    if subprocess.run(["chattr", "+i", str(lock)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(ReadOnlyError) as info:
            llmdsdb.open(str(p), readonly=True)
        assert "readonly=True" not in str(info.value)
        assert "lock.mdb" in str(info.value)
        with pytest.raises(ReadOnlyError, match="readonly=True"):
            llmdsdb.open(str(p))
    finally:
        subprocess.run(["chattr", "-i", str(lock)], check=True)
    assert count(p) == 3


CREATOR = r"""
import sys
import llmdsdb
base, who = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    path = f"{base}/{line.strip()}"
    try:
        with llmdsdb.open(path) as db:
            db.add([who], [f"written by {who}"])
        print("ok", flush=True)
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}".replace("\n", " "), flush=True)
"""


def test_two_processes_creating_one_new_path_at_once(tmp_path):
    runs = 20
    kids = [subprocess.Popen([sys.executable, "-c", CREATOR, str(tmp_path), who],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for who in ("p", "q")]
    outcomes = []
    try:
        for i in range(runs):
            for k in kids:  # both get the name of a path that does not exist yet
                k.stdin.write(f"new{i}/db\n")
            for k in kids:
                k.stdin.flush()
            outcomes += [k.stdout.readline().strip() for k in kids]
    finally:
        for k in kids:
            k.stdin.close()
            k.wait(timeout=60)
    assert outcomes == ["ok"] * (2 * runs), [o for o in outcomes if o != "ok"]
    for i in range(runs):
        with llmdsdb.open(str(tmp_path / f"new{i}" / "db"), readonly=True) as db:
            assert db.count() == 2 and db.check() == []


# --- finding 7: restores that would destroy data ----------------------------------------------

HOLDER = r"""
import sys
import llmdsdb
with llmdsdb.open(sys.argv[1]) as db:
    print("open", flush=True)
    sys.stdin.readline()
    db.add(["late"], ["written after the refused restore"])
print("done", flush=True)
"""


def test_restore_refuses_a_target_another_process_holds_open(tmp_path):
    target, other = tmp_path / "db", tmp_path / "other"
    make_db(target, 3)
    make_db(other, 7)
    bk = tmp_path / "bk"
    llmdsdb.backup(str(other), str(bk))
    writer = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(BackupError, match=f"open in process {writer.pid}"):
            llmdsdb.restore(str(bk), str(target), force=True)
        assert storage.holders(target) == [f"process {writer.pid}"]
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "done"
    finally:
        writer.stdin.close()
        assert writer.wait(timeout=60) == 0
    with llmdsdb.open(str(target), readonly=True) as db:  # nothing the writer did was lost
        assert db.count() == 4 and "late" in db
    assert storage.holders(target) == []
    llmdsdb.restore(str(bk), str(target), force=True)  # once it is closed, it goes
    assert count(target) == 7


def test_restore_refuses_a_target_this_process_holds_open(tmp_path):
    target = tmp_path / "db"
    make_db(target, 3)
    bk = tmp_path / "bk"
    llmdsdb.backup(str(target), str(bk))
    with llmdsdb.open(str(target)) as db:
        with pytest.raises(BackupError, match="open in this process"):
            llmdsdb.restore(str(bk), str(target), force=True)
        db.add(["more"], ["still writable"])
    assert count(target) == 4


def test_a_backup_inside_its_target_is_never_destroyed(tmp_path):
    target = tmp_path / "db"
    make_db(target, 3)
    outside = tmp_path / "bk"
    llmdsdb.backup(str(target), str(outside))
    with pytest.raises(BackupError, match="inside the database directory"):
        llmdsdb.backup(str(target), str(target / "bk"))
    inside = target / "bk"
    shutil.copytree(outside, inside)  # put there by hand
    for dest in (inside, target):
        with pytest.raises(BackupError, match="inside the restore target"):
            llmdsdb.restore(str(inside), str(dest), force=True)
    assert sorted(os.listdir(inside)) == ["data.mdb", "manifest.json"]
    assert read_manifest(str(inside))["count"] == 3
    assert count(target) == 3


FULL_DISK_RESTORE = r"""
import resource, signal, sys
import llmdsdb
from llmdsdb.errors import StorageError
bk, target, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
try:
    llmdsdb.restore(bk, target, force=True)
except StorageError as exc:
    print("StorageError", exc.errno, exc, flush=True)
"""


def test_restore_on_a_full_disk_is_a_storage_error_and_keeps_the_old_database(tmp_path):
    target, big = tmp_path / "db", tmp_path / "big"
    make_db(target, 3)
    with llmdsdb.open(str(big)) as db:
        db.add([f"b{i}" for i in range(300)], [os.urandom(400).hex() for _ in range(300)])
    bk = tmp_path / "bk"
    info = llmdsdb.backup(str(big), str(bk))
    limit = info.size_bytes // 2  # the file-size limit stands in for a full file system
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(FULL_DISK_RESTORE), str(bk),
                           str(target), str(limit)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("StorageError 27 "), proc.stdout + proc.stderr  # EFBIG
    assert "no space left" in proc.stdout
    assert count(target) == 3  # the old database is intact
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".db")) == []

