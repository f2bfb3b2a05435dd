"""Hot backup, verified restore and out-of-process verification of a database.

A *backup* is a directory holding exactly two files, never an archive:

* ``data.mdb``: LMDB's compacting copy of the environment, taken under one read transaction
  (:meth:`Database.copy_to`), so it is one committed batch even while writers run;
* ``manifest.json``: ``{"format": "llmdsdb-backup", "manifest_version", "format_version",
  "generation", "count", "data_file", "size_bytes", "sha256", "created_utc",
  "llmdsdb_version", "source"}`` describing exactly that snapshot.

:func:`backup` builds it in a temporary directory beside ``dest`` and renames it into place,
so ``dest`` either does not exist or holds a complete backup, every value of which was read
back and verified (a source with a damaged value gets no backup, but an error that says
so); a killed backup leaves only
``.DEST.llmdsdb-backup-*``, removed by the next backup to the same ``dest``.

:func:`restore` treats the backup as untrusted input (RELIABILITY.md §3.1):

1. read and check the manifest, check ``data.mdb`` is a regular file of the recorded size;
2. copy it into a fresh private temporary directory *in the target's parent directory* (so
   on the same filesystem), hashing while copying, and compare the sha256 with the
   manifest;
3. verify the copy in a **subprocess** (LMDB's pure-Python structural verifier, then open it
   read-only, run :meth:`Database.check`, compare the count and the generation with the
   manifest); a corrupt file can crash only that subprocess, never the caller;
4. fsync the file and the directory, then move the copy into place atomically.

Replacing an existing database (``force=True``) swaps the two directories with one
``renameat2(RENAME_EXCHANGE)`` where the kernel has it (Linux >= 3.15), else renames the old
directory aside and the new one in. What a kill (SIGKILL, power loss) at each point leaves,
and what the next :func:`restore` into the same target does about it:

========================================  ====================================  ===========
killed                                    the target path holds                 next run
========================================  ====================================  ===========
while copying / verifying                 the old database (or nothing)         deletes the
                                                                                temp dir
after the exchange, before cleanup        the new database; the old one is in   deletes it
                                          the temp dir
(fallback) after renaming the old aside   nothing; the old database is at       renames it
                                          ``.NAME.llmdsdb-old-*``               back first
(fallback) after renaming the new in      the new database                      deletes the
                                                                                old one
========================================  ====================================  ===========

So the target is always the whole old database or the whole new one (in the fallback's one
gap it is absent and the next run puts the old one back), and debris is only ever
``.NAME.llmdsdb-restore-*`` / ``.NAME.llmdsdb-old-*`` beside it, removed by the next run.
Two restores into the same parent directory are serialised by an ``flock`` on that
directory.

A restore refuses to replace a database that any process has open (this process, another
process holding LMDB's lock file, or a writer holding the write lock; see
:func:`llmdsdb.storage.holders`), checked before copying and again just before the swap:
such a process would go on reading, and writing into, the old, deleted file, and its
acknowledged batches would be lost. It also refuses a backup that is its own target or lies
inside it (the swap would delete it), and :func:`backup` refuses a destination inside the
database directory. A full disk (or any other ``OSError``) is a
:class:`~llmdsdb.errors.StorageError` carrying the ``errno`` and a hint; the old database
stays as it was.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmdsdb._version import __version__
from llmdsdb.errors import (
    BackupError,
    CorruptionError,
    InvalidArgumentError,
    InvalidPathError,
    LlmdsdbError,
    StorageError,
)

__all__ = [
    "BackupInfo",
    "CheckReport",
    "RestoreInfo",
    "backup",
    "check_in_subprocess",
    "read_manifest",
    "restore",
]

MANIFEST = "manifest.json"
DATA_FILE = "data.mdb"
BACKUP_FORMAT = "llmdsdb-backup"
MANIFEST_VERSION = 1
#: A manifest larger than this is not a manifest.
MAX_MANIFEST_BYTES = 64 * 1024
_CHUNK = 1 << 20
_RESTORE_TMP = ".llmdsdb-restore-"
_RESTORE_OLD = ".llmdsdb-old-"
_BACKUP_TMP = ".llmdsdb-backup-"
#: The checker subprocess (not ``-m llmdsdb.backup``: the package re-exports this module's
#: functions, and runpy warns when a module runs as __main__ after its package imported it).
_CHECKER = "import sys; from llmdsdb.backup import _main; sys.exit(_main(sys.argv[1:]))"


@dataclass(frozen=True)
class BackupInfo:
    """What :func:`backup` wrote: the manifest's figures."""

    dest: str
    generation: int
    count: int
    format_version: Any
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class RestoreInfo:
    """What :func:`restore` put in place; ``replaced`` is True when an old database was
    swapped out (``force=True``)."""

    path: str
    generation: int
    count: int
    replaced: bool


@dataclass(frozen=True)
class CheckReport:
    """The result of checking a database in a subprocess. ``problems`` is empty when the
    database is healthy; ``count``/``generation`` are None when it could not be opened."""

    path: str
    problems: list[str]
    count: int | None
    generation: int | None
    format_version: Any = None

    @property
    def ok(self) -> bool:
        return not self.problems


# --- small filesystem helpers ------------------------------------------------------------------


def _fsync_path(path: str | Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: str | Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False when the
    platform does not offer it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


class _DirLock:
    """An exclusive ``flock`` on a directory, held while the ``with`` block runs (leaves no
    lock file behind; released by the kernel if the process dies)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd = -1

    def __enter__(self) -> _DirLock:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # may wait: a Ctrl-C here must not leak the fd
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _make_locked_tmp(parent: Path, prefix: str) -> tuple[Path, _DirLock]:
    """A fresh private (0700) temporary directory in ``parent``, flock'ed by this process
    for as long as it works in it, so a concurrent cleanup can tell it is not debris."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        lock = _DirLock(tmp).__enter__()  # a brand-new directory: never waits
    except BaseException:
        _rmtree(tmp)
        raise
    return tmp, lock


def _in_use(path: Path) -> bool:
    """True when another live process holds the flock of directory ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _debris(target: Path, marker: str) -> list[Path]:
    prefix = f".{target.name}{marker}"
    try:
        names = os.listdir(target.parent)
    except FileNotFoundError:
        return []
    return sorted(target.parent / n for n in names if n.startswith(prefix))


def _cleanup_restore_debris(target: Path) -> None:
    """Finish or undo what a killed restore into ``target`` left (see the module table).
    Call with the parent directory locked; directories a live restore works in are kept."""
    for tmp in _debris(target, _RESTORE_TMP):
        if not _in_use(tmp):
            _rmtree(tmp)
    for old in _debris(target, _RESTORE_OLD):
        if _lstat(target) is None:
            os.rename(old, target)  # killed between "old aside" and "new in": put it back
            _fsync_path(target.parent, directory=True)
        else:
            _rmtree(old)


# --- checking a database out of process ------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"]
                                      if env.get("PYTHONPATH") else "")
    return env


def check_in_subprocess(path: str | os.PathLike[str], *, structural: bool = False,
                        timeout_s: float | None = None) -> CheckReport:
    """Open the database at ``path`` read-only in a child process and run
    :meth:`Database.check`; with ``structural=True`` run LMDB's offline structural verifier
    (``lmdb.verify``, pure Python) on ``data.mdb`` first. A file that would crash the
    process (SIGBUS on a truncated file, an assertion in liblmdb) kills only the child; that
    is reported as a problem, together with what the structural verifier finds.

    Complexity: O(size of the database), plus the start of a Python process.

    :raises InvalidPathError: when ``path`` holds no database.
    """
    p = Path(path)
    st = _lstat(p)
    if st is None:
        raise InvalidPathError(f"{p}: no such database")
    if stat.S_ISLNK(st.st_mode):
        raise InvalidPathError(f"{p}: is a symlink; give the real path")
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidPathError(f"{p}: not a database directory")
    if not (p / DATA_FILE).exists():
        raise InvalidPathError(f"{p}: no database here (no {DATA_FILE})")
    report = _run_checker(p, structural=structural, timeout_s=timeout_s)
    if report.count is None and not structural and report.problems:
        # The open itself failed or crashed: say what the structural verifier sees.
        deeper = _run_checker(p, structural=True, only_structural=True, timeout_s=timeout_s)
        extra = [q for q in deeper.problems if q not in report.problems]
        report = CheckReport(str(p), report.problems + extra, None, None)
    return report


def _run_checker(path: Path, *, structural: bool, only_structural: bool = False,
                 timeout_s: float | None = None) -> CheckReport:
    cmd = [sys.executable, "-c", _CHECKER, "_check", str(path)]
    if structural:
        cmd.append("--structural")
    if only_structural:
        cmd.append("--only-structural")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(),
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return CheckReport(str(path), [f"checking {path} took longer than {timeout_s} s"],
                           None, None)
    if proc.returncode < 0:
        import signal

        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        msg = (f"opening {path / DATA_FILE} crashed the checker process ({name}): the file "
               "is corrupt or truncated; restore it from a backup")
        return CheckReport(str(path), [msg], None, None)
    last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    try:
        out = json.loads(last[0]) if last else None
    except ValueError:
        out = None
    if not isinstance(out, dict):
        err = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return CheckReport(str(path), [f"the checker failed: {err[0]}"], None, None)
    return CheckReport(str(path), list(out.get("problems", [])), out.get("count"),
                       out.get("generation"), out.get("format_version"))


def _check_main(path: str, structural: bool, only_structural: bool) -> dict[str, Any]:
    """Runs in the child: never raises, returns what to print as JSON."""
    problems: list[str] = []
    if structural:
        try:
            import lmdb.verify as lmdb_verify

            try:
                problems += [f"lmdb structure: {q}" for q in
                             lmdb_verify.verify(os.path.join(path, DATA_FILE))]
            except lmdb_verify.VerifyError as exc:
                problems.append(f"lmdb structure: {exc}")
        except ImportError:  # py-lmdb < 3.0 has no offline verifier
            pass
        if problems or only_structural:
            return {"problems": problems, "count": None, "generation": None}
    try:
        import llmdsdb.db as dbmod

        with dbmod.open(path, readonly=True) as db:
            problems += db.check()
            count = db.count()
            generation = db.generation
            fmt = None
            try:
                fmt = (db.stats().get("storage") or {}).get("format_version")
            except Exception:  # noqa: BLE001 - informative only
                pass
    except LlmdsdbError as exc:
        return {"problems": problems + [f"{type(exc).__name__}: {exc}"], "count": None,
                "generation": None}
    except Exception as exc:  # noqa: BLE001 - a damaged file may raise anything
        return {"problems": problems + [f"cannot open: {type(exc).__name__}: {exc}"],
                "count": None, "generation": None}
    return {"problems": problems, "count": count, "generation": generation,
            "format_version": fmt}


# --- backup ----------------------------------------------------------------------------------


def backup(path: Any, dest: str | os.PathLike[str]) -> BackupInfo:
    """Take a hot, consistent backup of the database at ``path`` (a path, or an open
    :class:`~llmdsdb.db.Database`) into the new directory ``dest``.

    Writers may keep running: the copy is LMDB's compacting copy under one read
    transaction, so it holds exactly one committed batch, and the manifest records that
    batch's generation and document count.

    Complexity: O(size of the database).

    :raises InvalidPathError: when ``path`` holds no database.
    :raises BackupError: when ``dest`` exists (other than as an empty directory) or is a
        symlink, or when the copy holds a damaged value (the source's damage).
    :raises CorruptionError: when LMDB's copy itself finds the source damaged.
    """
    from llmdsdb.db import Database

    target = Path(dest)
    st = _lstat(target)
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise BackupError(f"{target}: backup destination is a symlink; refusing")
        if not stat.S_ISDIR(st.st_mode) or any(os.scandir(target)):
            raise BackupError(f"{target}: backup destination exists and is not an empty "
                              "directory")
    parent = target.parent

    source = path.path if isinstance(path, Database) else os.fspath(path)
    if _inside(target, Path(os.path.abspath(source))):
        raise BackupError(f"{target}: a backup inside the database directory {source} would "
                          "be deleted by a restore over that database; put it elsewhere")
    if not isinstance(path, Database):
        sst = _lstat(Path(source))
        if sst is None or not stat.S_ISDIR(sst.st_mode) or \
                not (Path(source) / DATA_FILE).exists():
            raise InvalidPathError(f"{source}: no database here")
    if not parent.is_dir():  # like ingest, create the missing parent folders
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackupError(f"{parent}: cannot create the destination's parent directory "
                              f"({exc.strerror or exc})") from None
    try:
        return _backup(path, source, target, parent)
    except OSError as exc:
        if isinstance(exc, LlmdsdbError):
            raise
        raise _storage_error(exc, f"the backup of {source}", parent) from exc


def _verify_copy(copy: Path, source: str) -> None:
    """Read back every value of the copy just taken, each checked (extent and envelope
    checksum) as reads always are: a backup never carries a damaged value unnoticed.

    Complexity: O(size of the copy).

    :raises BackupError: naming the first damaged value; the source database needs
        ``llmdsdb check`` (and a restore from an older backup), and no backup is written.
    """
    from llmdsdb.storage import Environment
    from llmdsdb.storage_format import DB_NAMES

    env = Environment.open(copy, readonly=True)
    try:
        with env.read() as txn:
            for table in DB_NAMES:
                for _ in txn.items(table):
                    pass
    except CorruptionError as exc:
        raise BackupError(f"{source} holds a damaged value, so its backup would too; no "
                          f"backup was written. Run `llmdsdb check {source}` and restore "
                          f"from an earlier backup ({exc})") from None
    finally:
        env.close()


def _backup(path: Any, source: str, target: Path, parent: Path) -> BackupInfo:
    from llmdsdb.db import Database

    if isinstance(path, Database):
        db, own = path, False
    else:
        sst = _lstat(Path(source))
        if sst is None or not stat.S_ISDIR(sst.st_mode) or \
                not (Path(source) / DATA_FILE).exists():
            raise InvalidPathError(f"{source}: no database here")
        import llmdsdb.db as dbmod

        try:
            db = dbmod.open(source, readonly=True)
        except InvalidArgumentError:
            # Already open in this process with other options: share that environment.
            try:
                db = dbmod.open(source)
            except InvalidArgumentError as exc:
                raise BackupError(f"{source} is open in this process with other options; "
                                  f"pass that Database object to backup() ({exc})") from None
        own = True
    try:
        with _DirLock(parent):
            for old in _debris(target, _BACKUP_TMP):
                if not _in_use(old):
                    _rmtree(old)
            tmp, tmp_lock = _make_locked_tmp(parent, f".{target.name}{_BACKUP_TMP}")
    except BaseException:
        if own:
            db.close()
        raise
    try:
        try:
            info = db.copy_to(tmp, compact=True)
        finally:
            if own:
                db.close()
        _verify_copy(tmp, source)
        for extra in os.listdir(tmp):  # a copy has no lock file; keep only data.mdb
            if extra != DATA_FILE:
                os.unlink(tmp / extra)
        data = tmp / DATA_FILE
        _fsync_path(data)
        digest, size = _sha256_file(data)
        manifest = {
            "format": BACKUP_FORMAT,
            "manifest_version": MANIFEST_VERSION,
            "format_version": info.get("format_version"),
            "generation": int(info["generation"]),
            "count": int(info["count"]),
            "data_file": DATA_FILE,
            "size_bytes": size,
            "sha256": digest,
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "llmdsdb_version": __version__,
            "source": os.path.abspath(source),
        }
        fd = os.open(tmp / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_path(tmp, directory=True)
        with _DirLock(parent):
            st = _lstat(target)
            if st is not None and (not stat.S_ISDIR(st.st_mode) or any(os.scandir(target))):
                raise BackupError(f"{target}: appeared while the backup was taken; "
                                  "refusing to replace it")
            os.rename(tmp, target)  # onto nothing or an empty directory: atomic
            _fsync_path(parent, directory=True)
    except BaseException:
        _rmtree(tmp)
        raise
    finally:
        tmp_lock.release()
    return BackupInfo(str(target), manifest["generation"], manifest["count"],
                      manifest["format_version"], size, digest)


# --- restore ---------------------------------------------------------------------------------


def read_manifest(backup_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a backup's ``manifest.json``.

    :raises BackupError: when it is missing, malformed or from a newer manifest version.
    """
    b = Path(backup_dir)
    st = _lstat(b)
    if st is None:
        raise BackupError(f"{b}: no such backup")
    if not stat.S_ISDIR(st.st_mode):
        raise BackupError(f"{b}: a backup is a directory (data.mdb + manifest.json)")
    mpath = b / MANIFEST
    mst = _lstat(mpath)
    if mst is None:
        raise BackupError(f"{b}: not a backup (no {MANIFEST}); refusing to restore it")
    if not stat.S_ISREG(mst.st_mode):
        raise BackupError(f"{mpath}: not a regular file")
    if mst.st_size > MAX_MANIFEST_BYTES:
        raise BackupError(f"{mpath}: too large to be a manifest")
    try:
        manifest = json.loads(mpath.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        raise BackupError(f"{mpath}: not an llmdsdb backup manifest")
    version = manifest.get("manifest_version")
    if not isinstance(version, int) or version > MANIFEST_VERSION:
        raise BackupError(f"{mpath}: manifest version {version!r} is newer than this llmdsdb "
                          f"({__version__}) understands; upgrade llmdsdb")
    for key, typ in (("generation", int), ("count", int), ("size_bytes", int),
                     ("sha256", str), ("data_file", str)):
        v = manifest.get(key)
        if not isinstance(v, typ) or isinstance(v, bool):
            raise BackupError(f"{mpath}: field {key!r} is missing or has the wrong type")
    if manifest["data_file"] != DATA_FILE:
        raise BackupError(f"{mpath}: unexpected data file name {manifest['data_file']!r}")
    return manifest


def _copy_hashing(src: Path, dst: Path, limit: int) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    fin = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            while True:
                chunk = os.read(fin, _CHUNK)
                if not chunk:
                    break
                n += len(chunk)
                if n > limit:
                    raise BackupError(f"{src}: larger than the manifest says; tampered with")
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fout, view):]
            os.fsync(fout)
        finally:
            os.close(fout)
    finally:
        os.close(fin)
    return h.hexdigest(), n


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _storage_error(exc: OSError, what: str, where: Path, need: int | None = None
                   ) -> StorageError:
    """An OSError of a backup or a restore as a StorageError (same errno) with a hint."""
    if exc.errno in _NO_SPACE:
        more = f" (it needs {need} bytes there)" if need else ""
        hint = (f"no space left for {what} in {where}{more}: free some space or use "
                f"another file system")
    else:
        hint = f"{what} failed in {where}: {exc.strerror or exc}"
    return StorageError(exc.errno or errno.EIO, hint)


def _inside(path: Path, directory: Path) -> bool:
    """True when ``path`` is ``directory`` or lies below it (symlinks resolved)."""
    p, d = os.path.realpath(path), os.path.realpath(directory)
    return p == d or p.startswith(d.rstrip(os.sep) + os.sep)


def _refuse_open_target(target: Path) -> None:
    """A database that some process has open must not be replaced: that process would go
    on reading (and writing, losing what it writes) the old, deleted file."""
    from llmdsdb.storage import holders

    who = holders(target)
    if who:
        raise BackupError(f"{target}: the database is open in {' and '.join(who)}; close it "
                          f"there (stop the writers and readers) before restoring over it")


def _check_restore_target(target: Path, force: bool) -> bool:
    """Refuse a target restore must not touch; True when an existing database will be
    replaced."""
    tst = _lstat(target)
    if tst is None:
        return False
    if stat.S_ISLNK(tst.st_mode):
        raise BackupError(f"{target}: restore target is a symlink; refusing")
    if not stat.S_ISDIR(tst.st_mode):
        raise BackupError(f"{target}: restore target exists and is not a directory")
    if not any(os.scandir(target)):
        return False
    if not force:
        raise BackupError(f"{target}: restore target is not empty; pass force=True to "
                          "replace the database there")
    if not (target / DATA_FILE).exists():
        raise BackupError(f"{target}: not an llmdsdb database (no {DATA_FILE}); "
                          "refusing to replace it even with --force")
    _refuse_open_target(target)
    return True


def restore(backup_dir: str | os.PathLike[str], path: str | os.PathLike[str], *,
            force: bool = False, _hook: Callable[[str], None] | None = None) -> RestoreInfo:
    """Restore the backup in ``backup_dir`` to the database directory ``path``.

    The backup is checked (manifest, size, sha256), copied next to ``path``, verified in a
    subprocess (structure, :meth:`Database.check`, count and generation against the
    manifest), fsynced and moved into place atomically; see the module docstring for what a
    kill at each step leaves. Leftovers of an earlier killed restore into ``path`` are
    cleaned up first.

    Complexity: O(size of the backup).

    :param force: replace an existing database at ``path``. Without it a non-empty ``path``
        is refused; even with it, a non-empty directory that holds no database is refused.
    :raises BackupError: on a missing/tampered/corrupt backup or a refused target.
    """
    hook = _hook or (lambda point: None)
    bdir = Path(backup_dir)
    if _inside(bdir, Path(os.path.abspath(path))):
        raise BackupError(f"{bdir}: the backup is inside the restore target {path}; "
                          "restoring would delete the backup itself. Move the backup "
                          "out of the database directory first")
    manifest = read_manifest(bdir)
    data = bdir / DATA_FILE
    dst = _lstat(data)
    if dst is None or not stat.S_ISREG(dst.st_mode):
        raise BackupError(f"{data}: missing or not a regular file; the backup is incomplete")
    if dst.st_size != manifest["size_bytes"]:
        raise BackupError(f"{data}: {dst.st_size} bytes, the manifest says "
                          f"{manifest['size_bytes']}; truncated or tampered with")

    target = Path(os.path.abspath(path))
    parent = target.parent
    if not parent.is_dir():
        raise BackupError(f"{parent}: the target's parent directory does not exist")
    try:
        return _restore(bdir, manifest, data, target, force, hook)
    except OSError as exc:
        if isinstance(exc, LlmdsdbError):
            raise
        raise _storage_error(exc, f"restoring {bdir}", parent,
                             manifest["size_bytes"]) from exc


def _restore(bdir: Path, manifest: dict[str, Any], data: Path, target: Path, force: bool,
             hook: Callable[[str], None]) -> RestoreInfo:
    parent = target.parent
    try:
        fs = os.statvfs(parent)
    except OSError:
        fs = None
    if fs is not None and fs.f_bavail * fs.f_frsize < manifest["size_bytes"]:
        raise StorageError(errno.ENOSPC, f"no space left for restoring {bdir} in {parent}: "
                           f"it needs {manifest['size_bytes']} bytes, "
                           f"{fs.f_bavail * fs.f_frsize} are free; free some space or use "
                           f"another file system (the database at {target} is unchanged)")
    with _DirLock(parent):
        _cleanup_restore_debris(target)
        replacing = _check_restore_target(target, force)
        tmp, tmp_lock = _make_locked_tmp(parent, f".{target.name}{_RESTORE_TMP}")
    try:
        hook("copying")
        digest, size = _copy_hashing(data, tmp / DATA_FILE, manifest["size_bytes"])
        if size != manifest["size_bytes"] or digest != manifest["sha256"]:
            raise BackupError(f"{data}: sha256 does not match the manifest; the backup "
                              "is damaged or was tampered with")
        hook("verifying")
        report = _run_checker(tmp, structural=True)
        if report.problems:
            more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 \
                else ""
            raise BackupError(f"{bdir}: the backup fails verification: "
                              f"{report.problems[0]}{more}")
        if report.count != manifest["count"] or report.generation != manifest["generation"]:
            raise BackupError(
                f"{bdir}: holds {report.count} documents at generation {report.generation}"
                f", the manifest says {manifest['count']} at {manifest['generation']}")
        for extra in os.listdir(tmp):  # the checker's lock files: regenerated on open
            if extra != DATA_FILE:
                os.unlink(tmp / extra)
        os.chmod(tmp, 0o700)
        _fsync_path(tmp, directory=True)
        with _DirLock(parent):
            hook("swapping")
            # the target may have changed while we verified: decide again, under the lock
            replacing = _check_restore_target(target, force)
            if not replacing:
                os.rename(tmp, target)  # onto nothing or an empty directory: atomic
                _fsync_path(parent, directory=True)
            elif _renameat2_exchange(tmp, target):
                _fsync_path(parent, directory=True)
                hook("exchanged")
                _rmtree(tmp)  # now the old database
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}{_RESTORE_OLD}",
                                            dir=parent))
                os.rename(target, old)  # onto the empty directory just made
                _fsync_path(parent, directory=True)
                hook("old-aside")
                os.rename(tmp, target)
                _fsync_path(parent, directory=True)
                hook("new-in")
                _rmtree(old)
    except BaseException:
        if _lstat(tmp) is not None:
            _rmtree(tmp)
        raise
    finally:
        tmp_lock.release()
    return RestoreInfo(str(target), manifest["generation"], manifest["count"], replacing)


def _main(argv: list[str]) -> int:
    """``_check PATH [--structural] [--only-structural]``: the checker the functions above
    start in a subprocess (see ``_CHECKER``); prints one JSON line."""
    if len(argv) >= 2 and argv[0] == "_check":
        out = _check_main(argv[1], "--structural" in argv, "--only-structural" in argv)
        sys.stdout.write(json.dumps(out, default=str) + "\n")
        sys.stdout.flush()
        return 0
    sys.stderr.write("usage: _check PATH [--structural] [--only-structural]\n")
    return 2
