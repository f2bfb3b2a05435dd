"""llmdsdb.backup / llmdsdb.restore: manifests, refusals, tampering, and restores killed at
every step (the target is always the old or the new database; the next run leaves no
debris)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import db_digest, make_records, run_cli

import llmdsdb.db as dbmod
from llmdsdb.backup import backup, read_manifest, restore
from llmdsdb.errors import BackupError, InvalidPathError


def build(path: Path, n: int, start: int = 0) -> Path:
    recs = make_records(n, dim=8, start=start)
    with dbmod.open(path) as db:
        db.upsert([r["id"] for r in recs], [r["text"] for r in recs],
                  [r["embedding"] for r in recs], [r["metadata"] for r in recs])
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return build(tmp_path / "src", 40)


@pytest.fixture
def bk(tmp_path: Path, source: Path) -> Path:
    backup(source, tmp_path / "bk")
    return tmp_path / "bk"


def debris(parent: Path) -> list[str]:
    return sorted(n for n in os.listdir(parent) if ".llmdsdb-" in n)


def test_backup_manifest_and_restore(tmp_path: Path, source: Path, bk: Path) -> None:
    m = read_manifest(bk)
    with dbmod.open(source, readonly=True) as db:
        assert (m["count"], m["generation"]) == (db.count(), db.generation)
    assert sorted(os.listdir(bk)) == ["data.mdb", "manifest.json"]
    assert m["size_bytes"] == (bk / "data.mdb").stat().st_size and len(m["sha256"]) == 64
    info = restore(bk, tmp_path / "r")
    assert (info.count, info.replaced) == (40, False)
    assert db_digest(tmp_path / "r") == db_digest(source)
    assert debris(tmp_path) == []
    # an existing empty directory is a fine target too
    (tmp_path / "empty").mkdir()
    restore(bk, tmp_path / "empty")
    assert db_digest(tmp_path / "empty") == db_digest(source)


def test_backup_from_an_open_database_and_refusals(tmp_path: Path, source: Path) -> None:
    with dbmod.open(source) as db:
        info = backup(db, tmp_path / "b1")
        assert info.count == 40
        info = backup(source, tmp_path / "b0")  # by path while open here: shares it
        assert info.count == 40
        db.add(["after"], ["the caller's handle still works"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BackupError, match="not an empty directory"):
        backup(source, tmp_path / "full")
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    with pytest.raises(BackupError, match="symlink"):
        backup(source, tmp_path / "link")
    with pytest.raises(InvalidPathError):
        backup(tmp_path / "missing", tmp_path / "b2")
    assert not (tmp_path / "b2").exists() and debris(tmp_path) == []


def test_restore_refusals_leave_the_target_unchanged(tmp_path: Path, bk: Path) -> None:
    other = build(tmp_path / "other", 5, start=100)
    before = db_digest(other)
    with pytest.raises(BackupError, match="not empty; pass force=True"):
        restore(bk, other)
    assert db_digest(other) == before
    (tmp_path / "userdir").mkdir()
    (tmp_path / "userdir" / "notes.txt").write_text("mine")
    with pytest.raises(BackupError, match="not an llmdsdb database"):
        restore(bk, tmp_path / "userdir", force=True)
    assert (tmp_path / "userdir" / "notes.txt").read_text() == "mine"
    os.symlink(other, tmp_path / "link")
    with pytest.raises(BackupError, match="symlink"):
        restore(bk, tmp_path / "link", force=True)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BackupError, match="not a directory"):
        restore(bk, tmp_path / "afile", force=True)
    assert db_digest(other) == before and debris(tmp_path) == []
    info = restore(bk, other, force=True)
    assert info.replaced and db_digest(other) != before and debris(tmp_path) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest-count", "no-manifest",
                                    "manifest-version", "manifest-junk", "no-data"])
def test_tampered_backups_are_refused(tmp_path: Path, bk: Path, damage: str) -> None:
    target = build(tmp_path / "target", 3, start=200)
    before = db_digest(target)
    data, man = bk / "data.mdb", bk / "manifest.json"
    m = json.loads(man.read_text())
    if damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        data.write_bytes(bytes(raw))
    elif damage == "truncate":
        data.write_bytes(data.read_bytes()[:8192])
    elif damage == "manifest-count":
        m["count"] += 1
        man.write_text(json.dumps(m))
    elif damage == "no-manifest":
        man.unlink()
    elif damage == "manifest-version":
        m["manifest_version"] = 99
        man.write_text(json.dumps(m))
    elif damage == "manifest-junk":
        man.write_text("{not json")
    else:
        data.unlink()
    with pytest.raises(BackupError):
        restore(bk, target, force=True)
    assert db_digest(target) == before and debris(tmp_path) == []


def test_a_consistent_but_lying_backup_fails_verification(tmp_path: Path, bk: Path) -> None:
    """sha256 and size match (the attacker rewrote the manifest), but the contents differ:
    the subprocess check compares count and generation."""
    m = json.loads((bk / "manifest.json").read_text())
    m["generation"] += 5
    (bk / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BackupError, match="the manifest says"):
        restore(bk, tmp_path / "t")
    assert not (tmp_path / "t").exists() and debris(tmp_path) == []


def test_restore_cli_messages(tmp_path: Path, bk: Path) -> None:
    from click.testing import CliRunner

    from llmdsdb.cli import cli

    target = build(tmp_path / "t", 2, start=300)
    res = CliRunner().invoke(cli, ["restore", str(bk), str(target)])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert "not empty; use --force" in res.stderr
    before = db_digest(target)
    raw = bytearray((bk / "data.mdb").read_bytes())
    raw[-100] ^= 1
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "data.mdb").write_bytes(bytes(raw))
    (tampered / "manifest.json").write_bytes((bk / "manifest.json").read_bytes())
    proc = run_cli("restore", tampered, target, "--force")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "sha256 does not match" in proc.stderr
    assert db_digest(target) == before and debris(tmp_path) == []
    res = CliRunner().invoke(cli, ["restore", str(bk), str(target), "--force"])
    assert res.exit_code == 0 and "replaced the database" in res.stdout


KILL_SCRIPT = """
import os, signal, sys
import llmdsdb.backup
B = sys.modules["llmdsdb.backup"]
bk, target, point, fallback = sys.argv[1:5]
if fallback == "1":
    B._renameat2_exchange = lambda a, b: False
def hook(p):
    if p == point:
        os.kill(os.getpid(), signal.SIGKILL)
B.restore(bk, target, force=True, _hook=hook)
"""


@pytest.mark.parametrize("point,fallback", [
    ("copying", False), ("verifying", False), ("swapping", False), ("exchanged", False),
    ("old-aside", True), ("new-in", True),
])
def test_restore_killed_at_each_point(tmp_path: Path, bk: Path, source: Path, point: str,
                                      fallback: bool) -> None:
    target = build(tmp_path / "target", 7, start=400)
    old, new = db_digest(target), db_digest(source)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(bk), str(target), point,
                           "1" if fallback else "0"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = db_digest(target) if target.exists() else None
    if point == "old-aside":
        assert state is None  # the one gap of the fallback: the next run puts it back
    else:
        assert state in (old, new)
    # the next run first cleans up (puts the old one back if needed), then restores
    restore(bk, target, force=True)
    assert db_digest(target) == new
    assert debris(tmp_path) == []


def test_next_run_puts_back_an_old_database_left_aside(tmp_path: Path, bk: Path) -> None:
    """Killed between "old aside" and "new in": a restore that is then refused (no --force
    needed to clean up) still puts the old database back."""
    target = build(tmp_path / "target", 3, start=500)
    old = db_digest(target)
    aside = tmp_path / ".target.llmdsdb-old-abc123"
    os.rename(target, aside)
    (tmp_path / ".target.llmdsdb-restore-xyz").mkdir()
    with pytest.raises(BackupError, match="not empty"):
        restore(bk, target)
    assert db_digest(target) == old and debris(tmp_path) == []


def test_package_exports_backup_and_restore() -> None:
    import llmdsdb

    assert llmdsdb.backup is backup and llmdsdb.restore is restore
    assert {"backup", "restore"} <= set(llmdsdb.__all__)
