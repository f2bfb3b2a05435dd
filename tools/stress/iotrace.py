"""Build, configure and read the ``iotrace.c`` LD_PRELOAD shim (see its header comment).

The shim is compiled on first use into a cache file named after the source's hash (in
``$TMPDIR``), so tests and tools share one build and a changed source is rebuilt.

    >>> so = build()                                           # doctest: +SKIP
    >>> env = preload_env(so, track="/db/data.mdb", log="/tmp/x.log")    # doctest: +SKIP
    >>> records = read_log("/tmp/x.log")                       # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("iotrace.c")

OPEN, WRITE, SYNC, MARK, TRUNC = 1, 2, 3, 4, 5
_HEAD = struct.Struct("<BBHIqQ")


@dataclass(frozen=True, slots=True)
class Record:
    """One log record: ``type`` (OPEN, WRITE, SYNC, MARK, TRUNC), the file's index, the
    offset (the mark's value for MARK, the size for TRUNC), the data (WRITE; the path for
    OPEN) and ``dsync`` (a write on an O_DSYNC/O_SYNC descriptor: durable on return)."""

    type: int
    file: int
    offset: int
    data: bytes
    dsync: bool


def build(cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Compile the shim (once per source version); its path, or None without a C compiler.

    Complexity: one gcc run (~0.2 s) the first time, O(1) after.
    """
    src = SOURCE.read_bytes()
    tag = hashlib.sha256(src).hexdigest()[:16]
    out = Path(cache_dir or tempfile.gettempdir()) / f"llmdsdb-iotrace-{tag}.so"
    if out.exists():
        return str(out)
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        return None
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    proc = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(SOURCE), "-ldl"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building {SOURCE} failed:\n{proc.stderr}")
    os.replace(tmp, out)  # atomic: concurrent builders each produce the same file
    return str(out)


def preload_env(so: str, *, track: str = "", log: str = "", kill_at: int = 0,
                fail_at: int = 0, fail_errno: int = 0, fail_forever: bool = False,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process that loads the shim with this configuration.

    :param track: the path prefix of the files to track (a directory with a trailing ``/``,
        or one file's path).
    """
    env = dict(os.environ if base is None else base)
    # after what is preloaded already: tools/sanitize preloads libasan, which must come
    # first (its interceptors reach the shim's functions as the next definition)
    env["LD_PRELOAD"] = f"{env.get('LD_PRELOAD', '')} {so}".strip()
    env["IOTRACE_DIR"] = track
    env["IOTRACE_LOG"] = log
    env["IOTRACE_KILL_AT"] = str(kill_at)
    env["IOTRACE_FAIL_AT"] = str(fail_at)
    env["IOTRACE_FAIL_ERRNO"] = str(fail_errno)
    env["IOTRACE_FAIL_FOREVER"] = "1" if fail_forever else "0"
    return env


class Loaded:
    """The shim as loaded into this process by LD_PRELOAD (a forked child reconfigures it).

    :raises OSError: when this process was not started with the shim preloaded.
    """

    def __init__(self) -> None:
        lib = ctypes.CDLL(None)
        self._config = lib.iotrace_config
        self._config.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_longlong,
                                 ctypes.c_longlong, ctypes.c_int, ctypes.c_int]
        self._mark = lib.iotrace_mark
        self._mark.argtypes = [ctypes.c_longlong]
        self._ops = lib.iotrace_ops
        self._ops.restype = ctypes.c_longlong

    @staticmethod
    def available() -> bool:
        """True when the shim is preloaded into this process."""
        try:
            ctypes.CDLL(None).iotrace_config  # noqa: B018 - the lookup is the test
        except AttributeError:
            return False
        return True

    def config(self, *, track: str = "", log: str = "", kill_at: int = 0, fail_at: int = 0,
               fail_errno: int = 0, fail_forever: bool = False) -> None:
        """Reset the operation counter and set what to track, log, kill at and fail."""
        if self._config(os.fsencode(track), os.fsencode(log), kill_at, fail_at, fail_errno,
                        int(fail_forever)) != 0:
            raise OSError(f"iotrace: cannot open the log {log}")

    def mark(self, value: int) -> None:
        """Append a MARK record (e.g. "batch ``value`` was acknowledged")."""
        self._mark(value)

    def ops(self) -> int:
        """Tracked operations counted since the last :meth:`config`."""
        return int(self._ops())


def read_log(path: str | os.PathLike[str]) -> list[Record]:
    """Parse a log; a record cut short by a kill at its end is dropped.

    Complexity: O(size of the log).
    """
    raw = Path(path).read_bytes()
    out: list[Record] = []
    i = 0
    while i + _HEAD.size <= len(raw):
        typ, flags, file, _pad, off, n = _HEAD.unpack_from(raw, i)
        i += _HEAD.size
        body = b""
        if typ in (OPEN, WRITE):
            if i + n > len(raw):
                break
            body = raw[i:i + n]
            i += n
        out.append(Record(typ, file, off, body, bool(flags & 1)))
    return out
