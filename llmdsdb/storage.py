"""The storage layer: one LMDB environment per database directory, checksummed values.

Everything the database keeps on disk goes through this module, the layer's public home. It
owns the rules that make LMDB safe to use from Python (see ``RELIABILITY.md`` §0-§1 and
``storage/FORMAT.md``), with the parts that need no environment in their own modules, all
re-exported here: :mod:`llmdsdb.storage_format` (keys, the value envelope),
:mod:`llmdsdb.storage_files` (checks of the directory and files, and
:func:`check_structure_in_subprocess`, a walk that cannot crash the caller),
:mod:`llmdsdb.storage_txn` (:class:`Txn`) and :mod:`llmdsdb._mapguard` (the map-resize guard).

* **Paths and files are checked before liblmdb sees them**: a symlink, a regular file or a
  FIFO where the database directory should be raises
  :class:`~llmdsdb.errors.InvalidPathError`; an empty, foreign or truncated ``data.mdb``
  raises :class:`~llmdsdb.errors.CorruptionError` instead of opening as an empty database
  or killing the process with SIGBUS.
* **Every value is wrapped in a checksummed envelope** (:class:`Envelope`), so a flipped bit
  inside a value is reported as :class:`~llmdsdb.errors.CorruptionError` naming the key.
* **A directory that lost its data file is refused**: ``lock.mdb`` (or a write lock file
  naming a writer) without ``data.mdb`` raises :class:`~llmdsdb.errors.CorruptionError`
  instead of silently starting a new, empty database; a ``data.mdb`` or ``lock.mdb`` with
  more than one hard link (one file, two lock tables) raises
  :class:`~llmdsdb.errors.InvalidPathError`. Creating a new database is serialised by the
  write lock, so two processes creating one path at the same instant both succeed; the lock
  file says "creating" until the format records are committed, so a creation killed before
  that (which leaves ``lock.mdb`` and no or an empty ``data.mdb``) is started again, not
  taken for a lost data file.
* **One :class:`Environment` per real path per process** (a second open shares it, reference
  counted; py-lmdb refuses a second handle and LMDB's fcntl locks break with two), with fork
  detection: an environment used in a forked child raises :class:`~llmdsdb.errors.ClosedError`
  and the child may open its own. An ``os.register_at_fork`` handler drops inherited
  environments in the child without any LMDB call and without taking a lock a parent thread
  may have held.
* **The map is never resized under a live transaction of the process** (LMDB's rule for
  ``mdb_env_set_mapsize``): every transaction holds the shared side of a readers-writer
  guard, every resize (growth, ``set_mapsize(0)`` after ``MDB_MAP_RESIZED`` from another
  process, a larger ``map_size_bytes`` from a second handle) the exclusive side. Readers
  run concurrently; a pending resize holds back new transactions until it is done.
* **Writes are serialised across processes by a lock file** (``llmdsdb.lock``, ``flock``) taken
  with a timeout before the LMDB write transaction begins (LMDB's own writer mutex waits
  forever); a second writer gets :class:`~llmdsdb.errors.LockTimeoutError` naming the holder.
* **A full map is grown, never resumed.** ``MDB_MAP_FULL`` kills the transaction; the write is
  aborted, the map doubled, and :meth:`Environment.run_write` re-runs the whole function.
* **A generation counter** in the ``meta`` database is incremented exactly once by every write
  transaction that commits a change, so readers in other processes can tell that the data
  changed (the page cache uses it to drop stale pages).

Durability modes (``durability=``), mapped to LMDB flags:

========== =========================== ====================================================
mode       LMDB flags                  after a power loss / OS crash
========== =========================== ====================================================
``sync``   ``sync=True, metasync=True`` every committed transaction survives (default)
``metasync`` ``sync=True, metasync=False`` the last committed transaction may be lost;
                                       the database stays consistent
``nosync`` ``sync=False, metasync=False`` the last transactions may be lost and, unless the
                                       filesystem preserves write order, the file may be
                                       corrupt; only for rebuildable data
========== =========================== ====================================================

A process crash (``kill -9``) loses nothing that was committed, in every mode. ``writemap``
is never used (a full disk would crash the process with SIGBUS).

    >>> import tempfile, os
    >>> d = os.path.join(tempfile.mkdtemp(), "db")
    >>> env = Environment.open(d, map_size_bytes=1 << 20)
    >>> with env.write() as txn:
    ...     txn.put("docs", u64key(1), b"hello")
    >>> with env.read() as txn:
    ...     txn.get("docs", u64key(1)), env.generation(txn)
    (b'hello', 1)
    >>> env.close()
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, Self, TypeVar

import lmdb

from llmdsdb._mapguard import _MapGuard
from llmdsdb.storage_mapspan import MapSpan
from llmdsdb._validate import DURABILITIES, check_choice
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
from llmdsdb.storage_files import (
    _DATA_FILE,
    _LMDB_LOCK_FILE,
    _LOCK_FILE,
    _check_dir,
    _empty_file,
    _flock_until,
    _fsync_dir,
    _interrupted_creation,
    _mark_creating,
    _missing_data_file,
    _other_holders,
    _read_copy_info,
    _release_orphan,
    _undo_interrupted_creation,
    check_lmdb_file,
    check_structure_in_subprocess,
)
from llmdsdb.storage_format import (
    _TAG,
    _TAGS,
    _U64,
    DB_NAMES,
    FORMAT_VERSION,
    KIND_DOC,
    KIND_ID,
    KIND_IDXMETA,
    KIND_META,
    KIND_PAGE,
    KIND_RAW,
    MAX_KEY_BYTES,
    MAX_PLAIN_ID_BYTES,
    MAX_VALUE_BYTES,
    Envelope,
    decode_value,
    encode_value,
    from_u64key,
    id_key,
    is_hashed_id_key,
    meta_key,
    u64key,
)
from llmdsdb.storage_txn import Txn, _is_map_full, _wrap, check_format

__all__ = [
    "DB_NAMES",
    "DEFAULT_MAP_SIZE_BYTES",
    "FORMAT_VERSION",
    "KIND_DOC",
    "KIND_ID",
    "KIND_IDXMETA",
    "KIND_META",
    "KIND_PAGE",
    "KIND_RAW",
    "MAX_KEY_BYTES",
    "MAX_MAP_SIZE_BYTES",
    "MAX_PLAIN_ID_BYTES",
    "MAX_VALUE_BYTES",
    "Durability",
    "Envelope",
    "Environment",
    "Txn",
    "check_format",
    "check_lmdb_file",
    "check_structure_in_subprocess",
    "decode_value",
    "encode_value",
    "from_u64key",
    "holders",
    "id_key",
    "is_hashed_id_key",
    "meta_key",
    "u64key",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Durability = Literal["sync", "metasync", "nosync"]

#: Initial map size for a new database (the map is sparse; it is grown x2 on demand).
DEFAULT_MAP_SIZE_BYTES = 1 << 30
#: The map is never grown beyond this without an explicit, larger ``map_size_bytes``.
MAX_MAP_SIZE_BYTES = 1 << 40
_DEFAULT_MAX_READERS = 512


def holders(path: str | os.PathLike[str]) -> list[str]:
    """Who has the database in directory ``path`` open right now, as phrases (``"this
    process"``, ``"process 1234"``, ``"a writer (process 1234)"``); empty when nobody does.

    * this process: the environment registry;
    * another process: every process that has the environment open holds a shared
      ``fcntl`` lock on byte 0 of ``lock.mdb`` for as long as it is open (LMDB takes it in
      ``mdb_env_open``), reported by ``F_GETLK`` without taking any lock;
    * a writer in the middle of a batch holds llmdsdb's write lock (``flock``).

    ``lock.mdb`` is opened only when this process does not have the environment open: a
    process loses all its ``fcntl`` locks on a file when it closes any descriptor of it.
    A reader that opened the database without LMDB's lock file (a read-only file system)
    cannot be seen. Linux ``struct flock`` layout.

    Complexity: O(1).
    """
    p = os.path.abspath(os.fspath(path))
    with _REGISTRY_LOCK:
        env = _REGISTRY.get(os.path.realpath(p))
        if env is not None and not env.closed:
            return ["this process"]
    return _other_holders(p)


# --------------------------------------------------------------------------------------------
# the environment
# --------------------------------------------------------------------------------------------

_REGISTRY: dict[str, Environment] = {}
_REGISTRY_LOCK = threading.Lock()
_DURABILITY: dict[str, dict[str, bool]] = {
    "sync": {"sync": True, "metasync": True},
    "metasync": {"sync": True, "metasync": False},
    "nosync": {"sync": False, "metasync": False},
}


class Environment:
    """One LMDB environment (a database directory), shared by everything in the process.

    Open with :meth:`open`. Read with ``with env.read() as txn``; write with
    ``with env.write() as txn`` or ``env.run_write(fn)``. Close with :meth:`close` (or use it
    as a context manager); a second :meth:`open` of the same path shares this object and needs
    its own :meth:`close`.

    Hooks (lists the database appends to):

    * ``before_commit``: ``fn(txn)`` called inside every write transaction just before it
      commits (the page store saves its allocator there); an exception aborts.
    * ``on_commit``: ``fn(generation)`` after a write transaction committed a change.
    * ``on_abort``: ``fn()`` after a write transaction was aborted (an exception, a full map,
      a failed commit), so in-memory state derived from it can be dropped.

    Thread-safe: any number of threads may read at once; writers are serialised by an internal
    lock plus the cross-process lock file. Not fork-safe: a forked child gets
    :class:`~llmdsdb.errors.ClosedError` and must open its own.

    Memory: the LMDB map is address space, not RAM (pages are cached by the OS); O(1) here.
    """

    def __init__(self, *, _token: object = None) -> None:
        if _token is not _OPEN_TOKEN:
            raise InvalidArgumentError("use Environment.open(path, ...)")
        self._env: lmdb.Environment
        self._refs = 1
        self._pid = os.getpid()
        self._closed = False
        self._lock_fd: int | None = None
        self._write_mutex = threading.Lock()
        self._write_owner: int | None = None
        self._guard = _MapGuard()
        self._span = MapSpan("")
        self.before_commit: list[Callable[[Txn], None]] = []
        self.on_commit: list[Callable[[int], None]] = []
        self.on_abort: list[Callable[[], None]] = []
        self.path = ""
        self.readonly = False
        self.durability: str = "sync"
        self.lock_timeout_s = 30.0
        self.max_map_size_bytes = MAX_MAP_SIZE_BYTES
        self.file_info: dict[str, int] = {}

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, durability: Durability = "sync",
             readonly: bool = False, map_size_bytes: int | None = None,
             lock_timeout_s: float = 30.0, create: bool = True,
             max_readers: int = _DEFAULT_MAX_READERS,
             max_map_size_bytes: int | None = None) -> Environment:
        """Open (creating when allowed) the database directory ``path``.

        Complexity: O(1) (two page reads to check the file, one short transaction).

        :param durability: ``"sync"`` (default), ``"metasync"`` or ``"nosync"``; see the module
            docstring for what each survives.
        :param readonly: open for reading only: writes raise ReadOnlyError; nothing is created.
        :param map_size_bytes: initial map size (default 1 GiB; the map only reserves address
            space). Grown x2 when a write finds it full, up to ``max_map_size_bytes`` (default
            1 TiB, or ``map_size_bytes`` if larger).
        :param lock_timeout_s: how long a writer waits for another process's write lock.
        :param create: create the directory and database when missing.
        :param max_readers: LMDB reader slots (only the first process to open sets it).
        :raises InvalidPathError: for a symlink, a regular file or FIFO, a missing directory
            with ``create=False`` or ``readonly=True``, or one owned by another user.
        :raises CorruptionError: for an empty, foreign or truncated ``data.mdb``.
        :raises FormatVersionError: for a database written by a newer format version.
        :raises InvalidArgumentError: for a bad option, or when the path is already open in
            this process with a different ``readonly``/``durability``.
        """
        check_choice("durability", durability, DURABILITIES)
        if map_size_bytes is not None and (
                not isinstance(map_size_bytes, int) or map_size_bytes < 1 << 16):
            raise InvalidArgumentError(f"map_size_bytes must be an int >= 65536, got "
                                       f"{map_size_bytes!r}")
        if not isinstance(lock_timeout_s, (int, float)) or not lock_timeout_s >= 0:
            raise InvalidArgumentError(f"lock_timeout_s must be a number >= 0, got "
                                       f"{lock_timeout_s!r}")
        if not isinstance(max_readers, int) or max_readers < 1:
            raise InvalidArgumentError(f"max_readers must be a positive int, got {max_readers!r}")
        try:
            p = os.path.abspath(os.fsdecode(os.fspath(path)))
        except TypeError as exc:
            raise InvalidTypeError(f"path must be str or os.PathLike, not "
                                   f"{type(path).__name__}") from exc
        if "\x00" in p:
            raise InvalidPathError(f"database path {os.fspath(path)!r} contains a NUL byte; "
                                   f"no file system accepts one")
        _check_dir(p, create=create, readonly=readonly)
        real = os.path.realpath(p)
        with _REGISTRY_LOCK:
            env = _REGISTRY.get(real)
            if env is not None and env._pid != os.getpid():
                # Inherited through fork (the at-fork handler normally dropped it already).
                env._forget_after_fork()
                env = None
            if env is None or env._closed:
                env = cls(_token=_OPEN_TOKEN)
                env._open_new(p, create=create, durability=durability, readonly=readonly,
                              map_size_bytes=map_size_bytes,
                              lock_timeout_s=float(lock_timeout_s), max_readers=max_readers,
                              max_map_size_bytes=max_map_size_bytes)
                _REGISTRY[real] = env
                env._real = real
                return env
            if env.readonly != readonly or env.durability != durability:
                raise InvalidArgumentError(
                    f"{p} is already open in this process with readonly={env.readonly}, "
                    f"durability={env.durability!r}; close it first")
            env._refs += 1
        # A larger map asked for by this handle: grown like any growth, under the exclusive
        # side, and outside the registry lock (waiting for other threads' transactions must
        # not hold up opens of other databases).
        if map_size_bytes and not readonly and not env._guard.depth():
            with contextlib.suppress(StorageError), env._guard.exclusive("open"):
                if not env._closed and map_size_bytes > int(env._env.info()["map_size"]):
                    env._set_mapsize(map_size_bytes)
        return env

    def _open_new(self, p: str, *, create: bool, durability: str, readonly: bool,
                  map_size_bytes: int | None, lock_timeout_s: float, max_readers: int,
                  max_map_size_bytes: int | None) -> None:
        self.path = p
        self.readonly = readonly
        self.durability = durability
        self.lock_timeout_s = lock_timeout_s
        self.max_map_size_bytes = max(max_map_size_bytes or MAX_MAP_SIZE_BYTES,
                                      map_size_bytes or 0)
        if p in _ORPHANED_PATHS:  # inherited through fork and never closed
            _ORPHANED_PATHS.discard(p)
            _release_orphan(p)
        data = os.path.join(p, _DATA_FILE)
        if not readonly:
            try:
                self._lock_fd = os.open(os.path.join(p, _LOCK_FILE),
                                        os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                                        0o600)
            except OSError as exc:
                raise InvalidPathError(f"cannot open the write lock file in {p}: "
                                       f"{exc.strerror or exc}") from exc
        try:
            creating = not os.path.lexists(data)
            if (creating or _empty_file(data)) and not readonly:
                # Creation is serialised by the write lock, held until the format records
                # are committed, so a directory with LMDB's lock file but no data file (or
                # an empty one) is never a creation in progress: it is a database whose data
                # file is gone (or truncated).
                assert self._lock_fd is not None
                _flock_until(self._lock_fd, time.monotonic() + lock_timeout_s, lock_timeout_s,
                             lambda: f"{p} is being created by {self._lock_holder()}")
                if _interrupted_creation(p):  # its creator was killed before committing
                    _undo_interrupted_creation(p)
                creating = not os.path.lexists(data)
            self._open_env(p, data, creating=creating, durability=durability,
                           readonly=readonly, create=create, map_size_bytes=map_size_bytes,
                           max_readers=max_readers)
        except BaseException:
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)  # also drops the creation lock
                self._lock_fd = None
            raise
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _open_env(self, p: str, data: str, *, creating: bool, durability: str,
                  readonly: bool, create: bool, map_size_bytes: int | None,
                  max_readers: int) -> None:
        if creating:
            why = _missing_data_file(p)
            if why is not None:
                raise CorruptionError(
                    f"{p} holds no {_DATA_FILE} but {why}: the database file was deleted or "
                    f"moved; restore it from a backup (llmdsdb restore), or remove the "
                    f"directory to start a new, empty database")
            if readonly or not create:
                raise InvalidPathError(f"no database at {p} (no {_DATA_FILE})")
            assert self._lock_fd is not None
            _mark_creating(self._lock_fd)  # until the format records are committed
        else:
            self.file_info = check_lmdb_file(data)
        lock = True
        if readonly:
            try:
                lock = not os.statvfs(p).f_flag & os.ST_RDONLY
            except OSError:
                lock = True
        self._lmdb_lock = lock
        self._span = MapSpan(data)
        try:
            self._env = lmdb.open(
                p, map_size=map_size_bytes or DEFAULT_MAP_SIZE_BYTES, subdir=True,
                readonly=readonly, create=not readonly, mode=0o600, max_dbs=0,
                max_readers=max_readers, writemap=False, map_async=False, lock=lock,
                max_spare_txns=0, readahead=True, meminit=True,
                **_DURABILITY[durability])
        except lmdb.Error as exc:
            code = getattr(exc, "code", None) or getattr(exc, "errno", None)  # py-lmdb: code
            if isinstance(exc, lmdb.ReadonlyError) or code in (errno.EACCES, errno.EROFS,
                                                               errno.EPERM):
                if readonly:
                    raise ReadOnlyError(
                        f"cannot open {p} even read-only ({exc}): a reader needs write access "
                        f"to {_LMDB_LOCK_FILE} (LMDB's reader table) unless the whole file "
                        f"system is read-only; get write access to the directory, or open a "
                        f"copy (llmdsdb backup)") from exc
                raise ReadOnlyError(f"cannot open {p} for writing ({exc}); open it with "
                                    f"readonly=True") from exc
            raise _wrap(exc, f"open {p}") from exc
        try:
            self._span.invalidate(int(self._env.stat()["psize"]))
            if lock:
                with contextlib.suppress(lmdb.Error):
                    self._env.reader_check()
            if not readonly:
                # LMDB shrinks a requested map to the data size when reopening a large file;
                # leave room to write without an immediate abort-grow-retry.
                info = self._env.info()
                used = (int(info["last_pgno"]) + 1) * int(self._env.stat()["psize"])
                want = min(max(map_size_bytes or DEFAULT_MAP_SIZE_BYTES, 2 * used),
                           self.max_map_size_bytes)
                if want > int(info["map_size"]):
                    self._set_mapsize(want)
            self._open_dbs()
        except BaseException:
            self._close_native()
            raise

    def _open_dbs(self) -> None:
        """Check the layout; a brand-new environment gets its format records (this is the
        only open that takes the write lock: an existing database opens without waiting for
        another process's write batch)."""
        try:
            t = self._begin(write=False)
            try:
                cur = t.cursor()
                empty = not cur.first()
                first_tag = bytes(cur.key())[:1] if not empty else b""
                has_version = self._span.get(t, _TAG["meta"] + b"format_version",
                                             "meta/'format_version'") is not None
            finally:
                self._end(t)
        except lmdb.Error as exc:
            raise _wrap(exc, f"read {self.path}") from exc
        if empty:
            if self.readonly:
                raise CorruptionError(f"{self.path} is not an llmdsdb database (the LMDB "
                                      f"environment is empty)")
            self._init_new()
        elif not has_version or first_tag[0] not in _TAGS:
            raise FormatVersionError(f"{self.path} holds an LMDB environment not written by "
                                     f"llmdsdb (no format_version record); refusing to use it")
        with self.read() as txn:
            check_format(txn)

    def _init_new(self) -> None:
        with self._write_lock():
            try:
                t = self._begin(write=True)
                try:
                    if t.cursor().first():
                        return  # another process initialised it while we waited
                    meta = _TAG["meta"]
                    t.put(meta + b"format_version",
                          encode_value(_U64.pack(FORMAT_VERSION), kind=KIND_META,
                                       compress=False))
                    t.put(meta + b"generation", encode_value(_U64.pack(0), kind=KIND_META,
                                                             compress=False))
                    t.commit()
                finally:
                    self._end(t)
            except lmdb.Error as exc:
                raise _wrap(exc, f"initialise {self.path}") from exc

    # -- state -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"environment {self.path} is closed")
        if os.getpid() != self._pid:
            raise ClosedError(f"environment {self.path} was opened in process {self._pid} and "
                              f"cannot be used after fork(); open the database again in this "
                              f"process")

    @property
    def closed(self) -> bool:
        """True after the last :meth:`close` (or in a forked child)."""
        return self._closed or os.getpid() != self._pid

    @property
    def map_size_bytes(self) -> int:
        """The current LMDB map size."""
        self._check_open()
        self._guard.acquire_shared()  # info() reads a meta page of the map
        try:
            return int(self._env.info()["map_size"])
        finally:
            self._guard.release_shared()

    def _read_generation(self, t: lmdb.Transaction) -> int:
        raw = self._span.get(t, _TAG["meta"] + b"generation", "meta/'generation'")
        if raw is None:
            return 0
        v = decode_value(raw, key_desc="meta/'generation'", kind=KIND_META)
        if len(v) != 8:
            raise CorruptionError("meta/'generation': malformed record")
        return int(_U64.unpack(v)[0])

    def generation(self, txn: Txn) -> int:
        """The number of committed write transactions, as seen by ``txn``.

        Complexity: O(1).
        """
        return txn.generation()

    # -- transactions ----------------------------------------------------------------------

    def _begin(self, write: bool) -> lmdb.Transaction:
        """Begin an LMDB transaction holding the shared side of the map guard; the caller
        ends it with :meth:`_end` (which releases the guard)."""
        checked = False
        for _ in range(16):
            self._guard.acquire_shared()
            if self._closed:  # closed by another thread while this one waited
                self._guard.release_shared()
                raise ClosedError(f"environment {self.path} is closed")
            try:
                return self._env.begin(write=write, buffers=True)
            except lmdb.MapResizedError:
                # Another process grew the map past ours: adopt its size (under the
                # exclusive side: no transaction of this process may be live) and retry.
                self._guard.release_shared()
                self._adopt_map_size()
            except lmdb.ReadersFullError as exc:
                self._guard.release_shared()
                if checked:
                    raise _wrap(exc, f"begin on {self.path}") from exc
                checked = True
                self._env.reader_check()
            except BaseException:
                self._guard.release_shared()
                raise
        raise StorageError(f"{self.path}: could not begin a transaction: the map keeps being "
                           f"resized by another process; retry")

    def _end(self, t: lmdb.Transaction) -> None:
        """Abort ``t`` (a no-op after its commit) and release the map guard."""
        try:
            with contextlib.suppress(lmdb.Error):
                t.abort()
        finally:
            self._guard.release_shared()

    def _adopt_map_size(self) -> None:
        """``set_mapsize(0)``: take the map size another process recorded in the file."""
        what = f"adopt the map size of {self.path} grown by another process"
        with self._guard.exclusive(what):
            try:
                self._env.set_mapsize(0)
            except lmdb.Error as exc:
                raise _wrap(exc, what) from exc
            finally:
                self._span.invalidate()

    def _start(self, write: bool) -> tuple[lmdb.Transaction, Txn]:
        """Begin an LMDB transaction and wrap it; the LMDB one is aborted if wrapping fails
        (a corrupt generation record), so a dead write txn never keeps LMDB's writer lock."""
        what = f"begin {'write' if write else 'read'} on {self.path}"
        try:
            t = self._begin(write=write)
        except lmdb.Error as exc:
            raise _wrap(exc, what) from exc
        try:
            return t, Txn(self, t, write=write)
        except BaseException as exc:
            self._end(t)
            if isinstance(exc, lmdb.Error):
                raise _wrap(exc, what) from exc
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[Txn]:
        """A read transaction (a consistent snapshot). Keep it short: a long-lived reader
        stops LMDB from reusing pages and the file grows.

        Complexity: O(1) to begin.
        """
        self._check_open()
        t, txn = self._start(write=False)
        try:
            yield txn
        finally:
            txn._live = False
            self._end(t)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        if self.readonly:
            raise ReadOnlyError(f"{self.path} was opened readonly=True; writes are refused")
        me = threading.get_ident()
        if self._write_owner == me:
            raise InvalidArgumentError("a write transaction is already open in this thread; "
                                       "nested writes are not supported (use the outer txn)")
        timeout = self.lock_timeout_s
        deadline = time.monotonic() + timeout
        ok = (self._write_mutex.acquire(timeout=timeout) if timeout > 0
              else self._write_mutex.acquire(blocking=False))
        if not ok:
            raise LockTimeoutError(f"another thread held the write lock on {self.path} for "
                                   f"more than {timeout:g} s")
        try:
            fd = self._lock_fd
            assert fd is not None
            _flock_until(fd, deadline, timeout, lambda: f"the write lock on {self.path} is held "
                                                        f"by {self._lock_holder()}")
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass  # the pid is only informative
            self._write_owner = me
            try:
                yield
            finally:
                self._write_owner = None
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._write_mutex.release()

    def _lock_holder(self) -> str:
        try:
            with open(os.path.join(self.path, _LOCK_FILE), encoding="ascii") as fh:
                pid = fh.read(32).strip()
            return f"process {int(pid)}"
        except (OSError, ValueError):
            return "another process"

    @contextlib.contextmanager
    def _txn_ctx(self) -> Iterator[Txn]:
        """One write transaction; the write lock is held by the caller. Commits when the body
        returns (if anything changed), aborts on an exception; a full map becomes _MapFull."""
        t, txn = self._start(write=True)
        try:
            try:
                yield txn
                for hook in list(self.before_commit):
                    hook(txn)
                if not (txn._dirty or txn._bump):
                    return  # nothing to commit (not an abort of user work): aborted below
                txn._finish_generation()
                txn._live = False
                try:
                    t.commit()
                except lmdb.Error as exc:
                    if isinstance(exc, lmdb.MapFullError):
                        txn._map_full = True
                    raise _wrap(exc, f"commit on {self.path}") from exc
            finally:
                txn._live = False
                self._end(t)  # the abort is a no-op after the commit; releases the guard
        except BaseException as exc:
            self._run_abort_hooks()
            if txn._map_full or _is_map_full(exc):
                root: BaseException = exc
                while not isinstance(root, lmdb.Error) and root.__cause__ is not None:
                    root = root.__cause__
                raise _MapFull(str(exc)) from root
            if isinstance(exc, lmdb.Error):
                raise _wrap(exc, f"write on {self.path}") from exc
            raise
        gen = txn._new_generation
        assert gen is not None
        for hook in list(self.on_commit):
            try:
                hook(gen)
            except Exception:  # the data is committed; a failing observer must not say otherwise
                logger.exception("on_commit hook %r failed", hook)

    def _run_abort_hooks(self) -> None:
        for hook in list(self.on_abort):
            try:
                hook()
            except Exception:
                logger.exception("on_abort hook %r failed", hook)

    def _grow(self) -> int | None:
        """Double the map (up to the cap); the new size, or None at the cap. Runs under the
        exclusive side of the map guard: it waits until no transaction of this environment
        is live in the process (every handle of the process shares this environment)."""
        with self._guard.exclusive(f"grow the map of {self.path}"):
            cur = int(self._env.info()["map_size"])
            if cur >= self.max_map_size_bytes:
                return None
            new = min(cur * 2, self.max_map_size_bytes)
            self._set_mapsize(new)
        logger.info("LMDB map of %s grown from %d to %d bytes", self.path, cur, new)
        return new

    def _set_mapsize(self, new: int) -> None:
        try:
            self._env.set_mapsize(new)
        except lmdb.Error as exc:
            raise _wrap(exc, f"grow map of {self.path} to {new}") from exc
        finally:
            self._span.invalidate()

    def _full_error(self, cause: BaseException, grown: int | None) -> MapFullError:
        if grown is None:
            err = MapFullError(f"the LMDB map of {self.path} is full at "
                               f"{self.map_size_bytes} bytes, the cap; reopen with a larger "
                               f"map_size_bytes= (the batch was rolled back)")
        else:
            err = MapFullError(f"the LMDB map of {self.path} was full; it was grown to {grown} "
                               f"bytes; the batch was rolled back: run it again")
        err.grown = grown is not None  # type: ignore[attr-defined]
        return err

    @contextlib.contextmanager
    def write(self) -> Iterator[Txn]:
        """A write transaction under the cross-process write lock; commits on normal exit
        (incrementing the generation once if anything changed), aborts on an exception.

        On a full map the transaction is aborted, the map is grown x2 and
        :class:`~llmdsdb.errors.MapFullError` is raised (with ``.grown = True``): run the batch
        again, or use :meth:`run_write`, which does that for you.

        Complexity: O(1) plus the commit (an fsync with ``durability="sync"``).

        :raises ReadOnlyError: when opened ``readonly=True``.
        :raises LockTimeoutError: when another process holds the write lock longer than
            ``lock_timeout_s``.
        """
        self._check_open()
        with self._write_lock():
            try:
                with self._txn_ctx() as txn:
                    yield txn
            except _MapFull as exc:
                raise self._full_error(exc, self._grow()) from (exc.__cause__ or exc)

    def run_write(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn(txn)`` in a write transaction and commit. When the map fills up, the
        transaction is aborted (``on_abort`` hooks run), the map doubled, and ``fn`` run again
        from scratch, so ``fn`` must be re-runnable (no side effects outside ``txn`` that it
        does not redo). An exception from ``fn`` aborts and propagates.

        Complexity: O(cost of fn) per attempt; at most log2(cap / map size) attempts.

        :raises MapFullError: when the map cannot grow any more.
        :raises ReadOnlyError, LockTimeoutError: as :meth:`write`.
        """
        self._check_open()
        with self._write_lock():
            while True:
                try:
                    with self._txn_ctx() as txn:
                        result = fn(txn)
                    return result
                except _MapFull as exc:
                    grown = self._grow()
                    if grown is None:
                        raise self._full_error(exc, None) from (exc.__cause__ or exc)

    # -- maintenance -----------------------------------------------------------------------

    def copy_to(self, dest_dir: str | os.PathLike[str], *, compact: bool = True
                ) -> dict[str, object]:
        """Hot, consistent copy of the environment into ``dest_dir`` (new or empty; created
        0700), taken under one read transaction, fsynced.

        Complexity: O(size of the database).

        :returns: ``{"generation", "count", "format_version", "path", "bytes"}`` of exactly the
            copied snapshot (``count`` = entries in ``docs``).
        :raises InvalidPathError: when ``dest_dir`` is a symlink, a file or a non-empty
            directory.
        """
        self._check_open()
        dest = os.path.abspath(os.fspath(dest_dir))
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat_mod.S_ISLNK(st.st_mode) or not stat_mod.S_ISDIR(st.st_mode):
                raise InvalidPathError(f"copy target {dest} is not a plain directory")
            try:
                nonempty = bool(os.listdir(dest))
            except OSError as exc:
                raise InvalidPathError(f"cannot read {dest}: {exc.strerror or exc}") from exc
            if nonempty:
                raise InvalidPathError(f"copy target {dest} is not empty")
        else:
            try:
                os.makedirs(dest, mode=0o700)
            except OSError as exc:
                raise InvalidPathError(f"cannot create {dest}: {exc.strerror or exc}") from exc
        with self.read() as txn:
            info: dict[str, object] = {"generation": txn.generation(),
                                       "count": txn.count("docs"),
                                       "format_version": check_format(txn)}
            try:
                if compact:
                    self._env.copy(dest, compact=True, txn=txn._txn)
                else:
                    self._env.copy(dest, compact=False)
            except lmdb.Error as exc:
                raise _wrap(exc, f"copy {self.path} to {dest}") from exc
        data = os.path.join(dest, _DATA_FILE)
        try:
            if not compact:  # the copy may be newer than our snapshot: read what it holds
                info.update(_read_copy_info(dest))
            fd = os.open(data, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _fsync_dir(dest)
            info["bytes"] = os.path.getsize(data)
        except OSError as exc:
            raise StorageError(f"copy of {self.path} to {dest}: {exc.strerror or exc}; the "
                               f"copy is incomplete") from exc
        except lmdb.Error as exc:
            raise _wrap(exc, f"read back the copy in {dest}") from exc
        info["path"] = dest
        return info

    def check_structure(self, *, timeout_s: float | None = None) -> list[str]:
        """Walk every page of the newest snapshot in a child process
        (:func:`check_structure_in_subprocess`): problems as strings, empty when LMDB reads
        the whole file without complaint. Run it before in-process checks of a suspect file:
        a damaged page header trips an assertion in liblmdb that aborts the process.

        Complexity: O(size of the database), in another process.
        """
        self._check_open()
        return check_structure_in_subprocess(self.path, lock=self._lmdb_lock,
                                             timeout_s=timeout_s)

    def stat(self) -> dict[str, object]:
        """Sizes and counts: ``bytes_on_disk`` (data.mdb), ``map_size_bytes``, ``page_size``,
        ``last_txnid``, ``readers``, ``max_readers``, ``generation``, ``entries`` per named
        database, ``durability``, ``readonly``, ``path``.

        Complexity: O(number of named databases).
        """
        self._check_open()
        with self.read() as txn:  # info() and stat() read the map: under the guard
            info = self._env.info()
            st = self._env.stat()
            entries = {name: txn.count(name) for name in DB_NAMES}
            gen = txn.generation()
        return {
            "path": self.path,
            "bytes_on_disk": os.path.getsize(os.path.join(self.path, _DATA_FILE)),
            "map_size_bytes": int(info["map_size"]),
            "page_size": int(st["psize"]),
            "last_txnid": int(info["last_txnid"]),
            "readers": int(info["num_readers"]),
            "max_readers": int(info["max_readers"]),
            "generation": gen,
            "entries": entries,
            "durability": self.durability,
            "readonly": self.readonly,
        }

    def sync(self) -> None:
        """Flush to disk (useful with ``durability="nosync"``).

        Complexity: O(dirty OS pages).
        """
        self._check_open()
        if not self.readonly:
            self._guard.acquire_shared()
            try:
                self._env.sync(True)
            except lmdb.Error as exc:
                raise _wrap(exc, f"sync {self.path}") from exc
            finally:
                self._guard.release_shared()

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Release this handle; the environment closes when the last sharer closes it, after
        the transactions other threads still hold on it have ended. Idempotent.

        Complexity: O(1), plus the wait for live transactions.
        """
        with _REGISTRY_LOCK:
            if self._closed:
                return
            if os.getpid() != self._pid:
                self._forget_after_fork()
                return
            self._refs -= 1
            if self._refs > 0:
                return
            self._closed = True  # new transactions now raise ClosedError
            if _REGISTRY.get(getattr(self, "_real", "")) is self:
                del _REGISTRY[self._real]
        if self._guard.depth():  # closed inside one of its own transactions
            self._close_native()
        else:
            with self._guard.exclusive(f"close {self.path}"):
                self._close_native()

    def _close_native(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._env.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the inherited environment without any LMDB call.

        LMDB forbids using an environment after fork(), closing included: py-lmdb's close()
        waits for the write transaction of a parent thread that does not exist here (a
        hang), and aborting a parent thread's read transaction would free the *parent's*
        slot in the shared reader table. The lmdb object is kept referenced for the life of
        the process so that nothing ever finalises it; our copy of the write-lock fd is
        closed (an ``flock`` belongs to the open file description the parent still holds,
        so closing a copy releases nothing). No lock is taken: one may be held by a parent
        thread that does not exist in the child.
        """
        if self._pid == os.getpid() or getattr(self, "_forked", False):
            return
        self._forked = True
        self._closed = True
        _ORPHANED.append(self.__dict__.pop("_env", None))
        if self.path:
            _ORPHANED_PATHS.add(self.path)
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("readonly" if self.readonly else "open")
        return f"<Environment {self.path!r} {state} durability={self.durability}>"

    def _check(self) -> None:
        """Invariants: open, a lock fd when writable, a positive reference count."""
        if self._closed:
            return
        assert self.readonly or self._lock_fd is not None
        assert self._refs >= 1


_OPEN_TOKEN = object()
#: lmdb environments inherited through fork(), kept alive so that nothing finalises them.
_ORPHANED: list[object] = []
#: Their paths: py-lmdb still counts them as open in this process (see _release_orphan).
_ORPHANED_PATHS: set[str] = set()


def _after_fork_in_child() -> None:
    """``os.register_at_fork`` handler: the child starts with no open environment.

    The registry lock may have been held by a parent thread at the moment of the fork; it
    is replaced, never acquired. Every inherited environment is dropped without an LMDB
    call (:meth:`Environment._forget_after_fork`); a handle the child still holds raises
    :class:`~llmdsdb.errors.ClosedError`, and ``open()`` in the child opens its own.
    """
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    for env in list(_REGISTRY.values()):
        env._forget_after_fork()
    _REGISTRY.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _MapFull(Exception):
    """Internal: the attempt died of MDB_MAP_FULL (cause chained)."""
