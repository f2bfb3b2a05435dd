"""File-level checks of a database directory, done before liblmdb sees a file.

Invariants (``RELIABILITY.md`` §0-§1):

* **Paths are checked before liblmdb sees them** (:func:`_check_dir`). A symlink, a regular
  file or a FIFO where the database directory should be raises
  :class:`~llmdsdb.errors.InvalidPathError`; a missing directory is created with mode
  ``0o700``; a ``data.mdb`` or ``lock.mdb`` with more than one hard link raises
  :class:`~llmdsdb.errors.InvalidPathError`.
* **A data file is checked before it is mapped** (:func:`check_lmdb_file`): one of size 0,
  too short, whose LMDB meta pages are not there (magic ``0xBEEFC0DE``) or that is shorter
  than the pages its meta page says exist raises :class:`~llmdsdb.errors.CorruptionError`
  instead of opening as an empty database (size 0) or killing the process with SIGBUS.
* **A network filesystem is named** (:func:`_warn_network_fs`): a directory whose mount
  (``/proc/self/mounts``) is NFS, CIFS/SMB or another remote type gets a
  :class:`~llmdsdb.errors.NetworkFilesystemWarning` (lmdb.h: unsupported there).
* **A structural check that cannot crash the caller**: :func:`check_structure_in_subprocess`
  walks every page of the file with LMDB in a child process (a damaged page header trips
  an assertion that aborts the process that reads it).

Also here, as functions of a path: who else holds the files (:func:`_other_holders`), the
write-lock wait (:func:`_flock_until`), the meta records of a finished copy
(:func:`_read_copy_info`), and releasing py-lmdb's record of files inherited through fork
(:func:`_release_orphan`). The public names are re-exported by :mod:`llmdsdb.storage`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import stat as stat_mod
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import BinaryIO

import lmdb

from llmdsdb.errors import (
    CorruptionError,
    InvalidPathError,
    LockTimeoutError,
    NetworkFilesystemWarning,
    StorageError,
)
from llmdsdb.storage_format import _TAG, _U64, decode_value

__all__ = [
    "check_lmdb_file",
    "check_structure_in_subprocess",
]

_LOCK_FILE = "llmdsdb.lock"
_DATA_FILE = "data.mdb"
_LMDB_LOCK_FILE = "lock.mdb"


# --------------------------------------------------------------------------------------------
# file checks done before liblmdb sees a file
# --------------------------------------------------------------------------------------------

_MDB_MAGIC = 0xBEEFC0DE
_P_META = 0x08
# MDB_page header is 16 bytes on 64-bit; MDB_meta follows (all little-endian on x86/arm).
_META = struct.Struct("<IIQQ")  # magic, version, address, mapsize   at page offset 16
_META_PSIZE_OFF = 16 + 24  # mm_dbs[FREE_DBI].md_pad holds the page size
_META_LAST_OFF = 16 + 24 + 96  # mm_last_pg, mm_txnid


def check_lmdb_file(data_path: str) -> dict[str, int]:
    """Check that ``data_path`` looks like an LMDB data file that liblmdb can map safely:
    see :func:`_check_lmdb_file_once`. A writer in another process may commit (and reuse
    pages of older snapshots) while the main database's pages are read; a problem found
    while the newest transaction id moved is therefore read again, a few times, before it
    is reported.

    Complexity: O(pages of the main database).
    """
    for _ in range(4):
        try:
            return _check_lmdb_file_once(data_path)
        except CorruptionError as exc:
            first = exc
            try:
                again = _check_lmdb_file_once(data_path, walk=False)
            except CorruptionError:
                raise first from None
            if again["txnid"] == getattr(exc, "llmdsdb_txnid", again["txnid"]):
                raise
    raise first


def _check_lmdb_file_once(data_path: str, *, walk: bool = True) -> dict[str, int]:
    """Check that ``data_path`` looks like an LMDB data file that liblmdb can map safely.

    Reads the two meta pages: both must carry the LMDB magic ``0xBEEFC0DE`` and the meta
    page flag, and the file must be at least as long as the pages the newer meta page says are
    in use. This catches an empty file (which LMDB would silently open as a new, empty
    database), a foreign file, and a truncated one (which would crash the process with SIGBUS
    on the first read of a missing page). Then it follows the page numbers liblmdb follows
    while opening (:func:`_check_main_tree`), so that a damaged page number there is an error
    rather than a SIGBUS. It is not a full verification (:func:`check_structure_in_subprocess`
    walks every page).

    Complexity: O(pages of the main database): a handful of page reads.

    :returns: ``{"page_size", "last_page", "txnid", "file_bytes"}``.
    :raises CorruptionError: when the file is empty, foreign or truncated.
    """
    try:
        size = os.stat(data_path).st_size
        with open(data_path, "rb") as fh:
            head = fh.read(4096)
            if size == 0:
                raise CorruptionError(f"{data_path} is empty (0 bytes): the database was "
                                      f"truncated; restore from a backup")
            if len(head) < 48 or _META.unpack_from(head, 16)[0] != _MDB_MAGIC:
                raise CorruptionError(f"{data_path} is not an LMDB data file (no LMDB magic "
                                      f"0xBEEFC0DE in the first meta page)")
            psize = struct.unpack_from("<I", head, _META_PSIZE_OFF)[0]
            if psize < 512 or psize > 65536 or psize & (psize - 1):
                raise CorruptionError(f"{data_path}: implausible LMDB page size {psize}")
            if size < 2 * psize:
                raise CorruptionError(f"{data_path} is {size} bytes, shorter than its two meta "
                                      f"pages: truncated; restore from a backup")
            fh.seek(0)
            pages = fh.read(2 * psize)
            # A writer may have committed since the stat: LMDB writes a commit's pages
            # (growing the file) before its meta page, so the size taken after reading the
            # meta pages covers every page they name.
            size = max(size, os.fstat(fh.fileno()).st_size)
    except OSError as exc:
        raise InvalidPathError(f"cannot read {data_path}: {exc.strerror or exc}") from exc
    best = None
    for i in range(2):
        off = i * psize
        flags = struct.unpack_from("<H", pages, off + 10)[0]
        magic, version, _addr, _mapsize = _META.unpack_from(pages, off + 16)
        if magic != _MDB_MAGIC or not flags & _P_META:
            raise CorruptionError(f"{data_path}: LMDB meta page {i} is damaged (magic "
                                  f"0x{magic:08x}, flags 0x{flags:04x}); restore from a backup")
        if version != 1:
            raise CorruptionError(f"{data_path}: unsupported LMDB data version {version}")
        last_pg, txnid = struct.unpack_from("<QQ", pages, off + _META_LAST_OFF)
        if best is None or txnid > best[1]:
            best = (last_pg, txnid, off)
    assert best is not None
    last_pg, txnid, meta_off = best
    if (last_pg + 1) * psize > size:
        raise CorruptionError(f"{data_path} is {size} bytes but its meta page uses "
                              f"{(last_pg + 1) * psize}: the file is truncated; restore from a "
                              f"backup (opening it would crash the process)")
    if walk:
        try:
            _check_main_tree(data_path, pages[meta_off:meta_off + psize], psize,
                             size // psize)
        except CorruptionError as exc:
            exc.llmdsdb_txnid = txnid  # type: ignore[attr-defined]
            raise
    return {"page_size": psize, "last_page": last_pg, "txnid": txnid, "file_bytes": size}


_P_INVALID = (1 << 64) - 1
_P_BRANCH, _P_LEAF, _P_OVERFLOW, _P_LEAF2 = 0x01, 0x02, 0x04, 0x20
_F_BIGDATA = 0x01  # a leaf node whose value is on overflow pages
_NODE = struct.Struct("<HHHH")  # a node's header: data size lo/hi (or child pgno), flags, key size
_DB_ROOT_OFF = 40  # md_root within an MDB_db record (48 bytes)
_META_DBS_OFF = 16 + 24  # mm_dbs[FREE_DBI], then mm_dbs[MAIN_DBI] 48 bytes further


def _check_main_tree(data_path: str, meta: bytes, psize: int, npages: int) -> None:
    """Check the pages whose damage liblmdb would turn into a SIGBUS or SIGSEGV of the
    process that opens the file, from the newest meta page down:

    * the free-page database's and the main database's roots, and every child page number
      named by a branch page of either (liblmdb follows them without checking them against
      the file's length), with each branch node inside its page;
    * every leaf page of the free-page database (liblmdb reads its records, overflow ones
      included, when a writer allocates pages): nodes, keys and values inside the page,
      overflow values inside the file;
    * the leaf pages of the main database among the last pages of the file
      (:func:`_tail_pages`): a node offset or a key size is at most 65,535 bytes, so only
      there can a damaged one send liblmdb's key comparisons past the end of the file
      (anywhere else it stays inside the mapped file: garbage, which the envelopes catch).
      Values of the main database are checked as they are read (:mod:`llmdsdb.storage_mapspan`).

    Complexity: O(branch pages + free-database pages + a few dozen leaf pages).
    """
    def bad(what: str) -> CorruptionError:
        return CorruptionError(f"{data_path} is damaged: {what}; restore from a backup "
                               f"(opening it would crash the process)")

    def in_file(pgno: int, what: str) -> None:
        if pgno != _P_INVALID and pgno >= npages:
            raise bad(f"{what} names page {pgno} but the file has {npages}")

    tail = npages - _tail_pages(psize)
    with open(data_path, "rb") as fh:
        for dbi, name in ((0, "free-page database"), (1, "main database")):
            rec = _META_DBS_OFF + 48 * dbi
            root = struct.unpack_from("<Q", meta, rec + _DB_ROOT_OFF)[0]
            depth = struct.unpack_from("<H", meta, rec + 6)[0]
            in_file(root, f"the {name}'s root")
            if root == _P_INVALID:
                continue
            if depth > 64 or depth < 1:
                raise bad(f"the {name} claims a depth of {depth}")
            for pgno in _walk_branches(fh, root, depth, psize, npages, name, bad, in_file,
                                       0 if dbi == 0 else tail):
                _check_leaf(fh, pgno, psize, npages, name, bad)


def _tail_pages(psize: int) -> int:
    """How many pages at the end of the file a damaged node offset, key size or key count
    of a page can reach past: 16 + 2 * 32,767 (the pointer array) or 65,535 + 8 + 65,535
    (a node and its key) bytes past the page's start."""
    return (2 * 65535 + 8) // psize + 2


def _read_page(fh: BinaryIO, pgno: int, psize: int, name: str,
               bad: Callable[[str], CorruptionError]) -> tuple[bytes, int, int, int]:
    fh.seek(pgno * psize)
    page = fh.read(psize)
    if len(page) < psize:
        raise bad(f"page {pgno} of the {name} is past the end of the file")
    flags, lower, upper = struct.unpack_from("<HHH", page, 10)
    if lower < 16 or lower > upper or upper > psize or lower & 1:
        raise bad(f"page {pgno} of the {name} has a bad header")
    return page, flags, lower, upper


def _walk_branches(fh: BinaryIO, root: int, depth: int, psize: int, npages: int, name: str,
                   bad: Callable[[str], CorruptionError],
                   in_file: Callable[[int, str], None], keep_from: int = 0) -> list[int]:
    """Read the branch pages of a tree of ``depth`` levels from ``root``; their nodes and
    child page numbers are checked. Returns the leaf page numbers from ``keep_from`` on."""
    if depth == 1:
        return [root] if root >= keep_from else []
    seen: set[int] = set()
    leaves: list[int] = []
    todo = [(root, 1)]
    while todo:
        pgno, level = todo.pop()
        if pgno in seen or len(seen) >= npages:
            raise bad(f"page {pgno} is reached twice in the {name}")
        seen.add(pgno)
        page, flags, lower, upper = _read_page(fh, pgno, psize, name, bad)
        if flags & (_P_BRANCH | _P_LEAF | _P_OVERFLOW | _P_LEAF2) != _P_BRANCH:
            raise bad(f"page {pgno} at level {level} of {depth} of the {name} is not a "
                      f"branch page (flags 0x{flags:04x})")
        last = level + 1 == depth
        n = (lower - 16) // 2
        for i, off in enumerate(struct.unpack_from(f"<{n}H", page, 16)):
            if off < upper or off + 8 > psize:
                raise bad(f"page {pgno} of the {name}: node {i} out of bounds")
            lo, hi, nflags, ksize = _NODE.unpack_from(page, off)
            if off + 8 + ksize > psize:
                raise bad(f"page {pgno} of the {name}: the key of node {i} runs past the page")
            child = lo | (hi << 16) | (nflags << 32)
            if child >= npages:
                in_file(child, f"a branch of the {name} (page {pgno})")
            if not last:
                todo.append((child, level + 1))
            elif child >= keep_from:
                leaves.append(child)
    return leaves


def _check_leaf(fh: BinaryIO, pgno: int, psize: int, npages: int, name: str,
                bad: Callable[[str], CorruptionError]) -> None:
    """Every node, key and value of leaf page ``pgno`` inside its page (an overflow value
    inside the file)."""
    if pgno == _P_INVALID:
        return
    page, flags, lower, upper = _read_page(fh, pgno, psize, name, bad)
    if flags & (_P_BRANCH | _P_LEAF | _P_OVERFLOW) != _P_LEAF:
        raise bad(f"page {pgno} of the {name} is not a leaf page (flags 0x{flags:04x})")
    if flags & _P_LEAF2:
        return  # fixed-size keys, no nodes (the project uses no DUPFIXED tables)
    for i in range((lower - 16) // 2):
        off = struct.unpack_from("<H", page, 16 + 2 * i)[0]
        if off < upper or off + 8 > psize:
            raise bad(f"page {pgno} of the {name}: node {i} out of bounds")
        lo, hi, nflags, ksize = _NODE.unpack_from(page, off)
        dsize = lo | (hi << 16)
        data = off + 8 + ksize
        if nflags & _F_BIGDATA:
            if data + 8 > psize:
                raise bad(f"page {pgno} of the {name}: node {i} runs past the page")
            ov = struct.unpack_from("<Q", page, data)[0]
            if ov < 2 or ov >= npages or dsize > (npages - ov) * psize - 16:
                raise bad(f"page {pgno} of the {name}: the overflow value of node {i} runs "
                          f"past the end of the file")
        elif data + dsize > psize:
            raise bad(f"page {pgno} of the {name}: node {i} runs past the page")


#: The structural walk run by :func:`check_structure_in_subprocess`: a fresh interpreter
#: (``-I -S``: no user site, no ``PYTHON*`` variables; py-lmdb's directory is the only
#: path added) that opens the environment read-only and reads every key and every byte of
#: every value with a cursor, in key order and then backwards, so that every branch, leaf
#: and overflow page of the snapshot is visited. It prints one JSON line; liblmdb's
#: assertions and SIGBUS can only kill this child.
_WALKER = r"""
import json, sys, zlib
sys.path.insert(0, sys.argv[3])
import lmdb
path, lock = sys.argv[1], sys.argv[2] == "1"
try:
    env = lmdb.open(path, readonly=True, lock=lock, subdir=True, create=False, max_dbs=0,
                    max_spare_txns=0, readahead=False)
    for _ in range(16):
        try:
            txn = env.begin(buffers=True)
            break
        except lmdb.MapResizedError:
            env.set_mapsize(0)
    else:
        raise lmdb.Error("the map keeps being resized")
    n = crc = 0
    cur = txn.cursor()
    ok = cur.first()
    while ok:
        crc = zlib.crc32(cur.value(), zlib.crc32(cur.key(), crc))
        n += 1
        ok = cur.next()
    back = 0
    ok = cur.last()
    while ok:
        back += 1
        ok = cur.prev()
    txn.abort()
    env.close()
    out = {"entries": n, "problems": [] if back == n else
           [f"a forward walk saw {n} entries, a backward walk {back}"]}
except lmdb.Error as exc:
    out = {"entries": None, "problems": [f"{type(exc).__name__}: {exc}"]}
print(json.dumps(out), flush=True)
"""


def check_structure_in_subprocess(path: str | os.PathLike[str], *, lock: bool = True,
                                  timeout_s: float | None = None) -> list[str]:
    """Walk every entry of the LMDB environment in directory ``path`` in a child process,
    so that a damaged file (a page header that trips an LMDB assertion, which calls
    ``abort()``; a page beyond the end of the file, SIGBUS) kills only the child. Each
    problem is one string; an empty list means that liblmdb read every page of the newest
    snapshot without complaint (it says nothing about the values: their checksums are the
    in-process checks' job).

    Complexity: O(size of the database), plus ~30 ms to start an interpreter.

    :param lock: False when the environment is opened without LMDB's lock file (a
        read-only file system).
    :param timeout_s: kill the walk after this long (default: 60 s plus 1 s per 20 MiB).
    """
    p = os.path.abspath(os.fspath(path))
    data = os.path.join(p, _DATA_FILE)
    if timeout_s is None:
        try:
            timeout_s = 60.0 + os.path.getsize(data) / (20 << 20)
        except OSError:
            timeout_s = 60.0
    lmdb_dir = os.path.dirname(os.path.dirname(os.path.abspath(lmdb.__file__)))
    cmd = [sys.executable, "-I", "-S", "-c", _WALKER, p, "1" if lock else "0", lmdb_dir]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired:
        return [(f"{data}: the structural walk did not finish in {timeout_s:g} s (a cycle "
                 f"in the page tree?); restore from a backup")]
    except OSError as exc:
        raise StorageError(f"cannot start the structural check of {p}: "
                           f"{exc.strerror or exc}") from exc
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        said = proc.stderr.strip().splitlines()[-1:] or [""]
        return [(f"{data} is damaged: reading it through LMDB kills the process ({name}"
                 f"{': ' + said[0] if said[0] else ''}); restore from a backup")]
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else None
    except ValueError:
        out = None
    if not isinstance(out, dict) or not isinstance(out.get("problems"), list):
        said = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return [f"{data}: the structural walk failed: {said[0]}"]
    return [f"{data}: LMDB structure: {q}" for q in out["problems"]]


_FLOCK = struct.Struct("hhqqi4x")  # struct flock (Linux): type, whence, start, len, pid


def _other_holders(p: str) -> list[str]:
    """The processes other than this one that have the database in directory ``p``
    open, as phrases (the file-level half of :func:`llmdsdb.storage.holders`, which
    documents it)."""
    out: list[str] = []
    try:
        fd = os.open(os.path.join(p, _LMDB_LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW
                     | os.O_CLOEXEC)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            got = fcntl.fcntl(fd, fcntl.F_GETLK, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0))
            kind, _, _, _, pid = _FLOCK.unpack(got)
            if kind != fcntl.F_UNLCK:
                out.append(f"process {pid}")
        except OSError:
            pass
        finally:
            os.close(fd)
    try:
        fd = os.open(os.path.join(p, _LOCK_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return out
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        try:
            writer = os.pread(fd, 32, 0).decode("ascii").strip()
            out.append(f"a writer (process {int(writer)})")
        except (OSError, ValueError):
            out.append("a writer")
    finally:
        os.close(fd)
    return out


def _check_dir(path: str, *, create: bool, readonly: bool) -> bool:
    """Validate the database directory; create it 0700 when allowed. True when created."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InvalidPathError(f"cannot access {path}: {exc.strerror or exc}") from exc
    if st is None:
        if readonly or not create:
            raise InvalidPathError(f"no database at {path} (the directory does not exist)")
        try:
            os.makedirs(path, mode=0o700, exist_ok=False)
            _warn_network_fs(path)
            return True
        except FileExistsError:
            # Another process created it an instant ago (two processes creating one new
            # database at once): check what is there like any existing directory.
            st = os.lstat(path)
        except OSError as exc:
            raise InvalidPathError(f"cannot create database directory {path}: "
                                   f"{exc.strerror or exc}") from exc
    if stat_mod.S_ISLNK(st.st_mode):
        raise InvalidPathError(f"{path} is a symbolic link; open the real directory "
                               f"({os.path.realpath(path)}) instead")
    if not stat_mod.S_ISDIR(st.st_mode):
        what = ("a regular file" if stat_mod.S_ISREG(st.st_mode) else
                "a FIFO" if stat_mod.S_ISFIFO(st.st_mode) else
                "a socket" if stat_mod.S_ISSOCK(st.st_mode) else "not a directory")
        raise InvalidPathError(f"{path} is {what}; a database is a directory")
    if not readonly and os.geteuid() != 0 and st.st_uid != os.geteuid():
        raise InvalidPathError(f"{path} is owned by uid {st.st_uid}, not by this user; "
                               f"open it readonly=True or copy it")
    for name in (_DATA_FILE, _LMDB_LOCK_FILE, _LOCK_FILE):
        p = os.path.join(path, name)
        try:
            fst = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InvalidPathError(f"cannot access {p}: {exc.strerror or exc}") from exc
        if not stat_mod.S_ISREG(fst.st_mode):
            raise InvalidPathError(f"{p} is not a regular file (symlink or special file); "
                                   f"refusing to open")
        if fst.st_nlink > 1 and name != _LOCK_FILE:
            # Two directory entries for one data file would give it two lock files: two
            # reader tables and two writer mutexes, so neither side's readers are seen by
            # the other's writers, which then overwrite pages still being read.
            raise InvalidPathError(f"{p} has {fst.st_nlink} hard links: the same LMDB file "
                                   f"reached through two paths has two lock tables and is "
                                   f"corrupted by concurrent use; open it through one path "
                                   f"only (remove the other links, or take a copy with "
                                   f"`llmdsdb backup`)")
    _warn_network_fs(path)
    return False


#: Filesystem types (``/proc/self/mounts``) on which LMDB's locks and map are not safe.
NETWORK_FS_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p",
                              "ceph", "glusterfs", "fuse.sshfs", "fuse.glusterfs", "lustre",
                              "gpfs", "beegfs", "virtiofs"})


def _fs_type(path: str, mounts: str = "/proc/self/mounts") -> str | None:
    """The filesystem type of the mount holding ``path`` (the longest mount point that is a
    prefix of its real path), or None when the mount table cannot be read."""
    real = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ").replace("\\011", "\t")
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        return None
    return fstype


def _warn_network_fs(path: str) -> None:
    fstype = _fs_type(path)
    if fstype in NETWORK_FS_TYPES:
        warnings.warn(f"{path} is on a {fstype} filesystem: LMDB does not support network "
                      f"filesystems (its locks and memory map are not kept coherent across "
                      f"hosts, and concurrent use can corrupt the database); keep it on a "
                      f"local disk", NetworkFilesystemWarning, stacklevel=4)


#: What ``llmdsdb.lock`` holds while a new database is being created, until the first write
#: transaction (the format records) replaces it with the writer's pid.
_CREATING = b"creating\n"


def _mark_creating(lock_fd: int) -> None:
    """Say in the write lock file that the database in its directory is being created."""
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, _CREATING, 0)


def _interrupted_creation(path: str) -> bool:
    """True when the directory ``path`` holds what a creation killed before its first commit
    leaves: the lock file still says "creating" and ``data.mdb`` is missing or empty (LMDB
    creates ``lock.mdb`` first, then the data file, then writes its meta pages). Only
    meaningful under the write lock (a live creator holds it)."""
    try:
        with open(os.path.join(path, _LOCK_FILE), "rb") as fh:
            if fh.read(len(_CREATING) + 1) != _CREATING:
                return False
    except OSError:
        return False
    data = os.path.join(path, _DATA_FILE)
    return not os.path.lexists(data) or _empty_file(data)


def _undo_interrupted_creation(path: str) -> None:
    """Remove what an interrupted creation left (an empty ``data.mdb``, LMDB's
    ``lock.mdb``), so that the directory is created again; nothing was ever committed."""
    for name in (_DATA_FILE, _LMDB_LOCK_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))
    os.truncate(os.path.join(path, _LOCK_FILE), 0)


def _empty_file(path: str) -> bool:
    try:
        return os.stat(path).st_size == 0
    except OSError:
        return False


def _missing_data_file(path: str) -> str | None:
    """Why ``path`` (a directory without ``data.mdb``) looks like a database whose data file
    was removed, or None for a new or empty directory."""
    if os.path.lexists(os.path.join(path, _LMDB_LOCK_FILE)):
        return f"{_LMDB_LOCK_FILE} is there"
    try:
        if os.path.getsize(os.path.join(path, _LOCK_FILE)) > 0:
            return f"{_LOCK_FILE} names a writer"
    except OSError:
        pass
    return None


def _flock_until(fd: int, deadline: float, timeout_s: float, what: Callable[[], str]) -> None:
    """Take an exclusive ``flock`` on ``fd``, polling until ``deadline`` (``time.monotonic``).

    :raises LockTimeoutError: with ``what()`` in the message, at the deadline.
    """
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeoutError(
                    f"{what()} for more than lock_timeout_s={timeout_s:g} s; wait for that "
                    f"writer or raise lock_timeout_s") from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_copy_info(dest: str) -> dict[str, object]:
    env = lmdb.open(dest, readonly=True, lock=False, subdir=True)
    try:
        with env.begin(buffers=True) as t:
            out: dict[str, object] = {}
            for key, name in ((b"generation", "generation"), (b"count/docs", "count"),
                              (b"format_version", "format_version")):
                raw = t.get(_TAG["meta"] + key)
                out[name] = (_U64.unpack(decode_value(raw, key_desc=f"meta/{name}"))[0]
                             if raw is not None else 0)
        return out
    finally:
        env.close()


def _release_orphan(path: str) -> None:
    """Let this (forked) process open ``path`` again although an environment on the same
    files, inherited from the parent, was never closed.

    py-lmdb refuses a second open of the same files in one process ("already open in this
    process"), keeping the file identities of every open environment in a process-wide
    set that only ``Environment.close()`` empties, and that close must not run after a
    fork (see :meth:`Environment._forget_after_fork`). The inherited environment stays
    mapped and its descriptors stay open for the life of the process (closing one would
    drop this process's ``fcntl`` locks on ``lock.mdb``), so the new open is the only
    user of the files here: the stale identities are removed from that set. Only sets
    whose entries are all py-lmdb file identities are touched.
    """
    import gc

    try:
        from lmdb import _envid
    except ImportError:  # a py-lmdb without the guard: nothing to release
        return
    keys = frozenset(_envid.env_keys(path, True))
    if not keys:
        return
    for obj in gc.get_objects():
        if type(obj) is set and keys & obj and all(
                type(k) is tuple and k and k[0] in ("ino", "path") for k in obj):
            obj.difference_update(keys)
