"""One LMDB transaction of the storage layer (:class:`Txn`), values verified through the envelope.

Invariants: every value read through :class:`Txn` is checked by its envelope (checksum,
kind of its table) unless the caller asks for the raw bytes; the entry counts of the
counted tables and the generation counter in ``meta`` are updated exactly once by a write
transaction that commits a change (:meth:`Txn._finish_generation`, called by the
environment just before the commit); LMDB errors surface as :mod:`llmdsdb.errors` types.

Transactions are made only by :class:`llmdsdb.storage.Environment`, which re-exports
:class:`Txn` and :func:`check_format`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import lmdb

from llmdsdb.errors import (
    ClosedError,
    CorruptionError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidTypeError,
    MapFullError,
    ReadOnlyError,
    StorageError,
)
from llmdsdb.storage_format import (
    _COUNTED,
    _KIND_OF_DB,
    _TAG,
    _U64,
    DB_NAMES,
    FORMAT_VERSION,
    KIND_META,
    _as_key,
    decode_value,
    encode_value,
)

if TYPE_CHECKING:
    from llmdsdb.storage import Environment

__all__ = ["Txn", "check_format"]


def _wrap(exc: lmdb.Error, what: str) -> StorageError:
    """Translate an lmdb exception into ours (the caller raises it ``from exc``)."""
    if isinstance(exc, lmdb.MapFullError):
        return MapFullError(f"{what}: the LMDB map is full; open with a larger "
                            f"map_size_bytes= (the map is grown automatically up to the cap)")
    if isinstance(exc, lmdb.ReadonlyError):
        return ReadOnlyError(f"{what}: the database is read-only ({exc})")
    if isinstance(exc, lmdb.TxnFullError):
        return StorageError(f"{what}: the transaction has too many dirty pages; write smaller "
                            f"batches")
    if isinstance(exc, lmdb.ReadersFullError):
        return StorageError(f"{what}: the LMDB reader table is full; close idle readers or "
                            f"processes holding read transactions")
    if isinstance(exc, lmdb.PanicError):  # a failed meta write: the file is as last committed
        return StorageError(f"{what}: an earlier write failed in this process (an I/O error "
                            f"while committing) and LMDB refuses further use of this handle; "
                            f"close every handle of the database and open it again: the "
                            f"last committed state is intact ({exc})")
    # MDB_INCOMPATIBLE: the file's main database flags are not the ones llmdsdb writes
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
                        lmdb.VersionMismatchError, lmdb.IncompatibleError)):
        return CorruptionError(f"{what}: LMDB reports a damaged file ({exc}); restore from a "
                               f"backup")  # type: ignore[return-value]
    if isinstance(exc, lmdb.DiskError):
        return StorageError(f"{what}: disk error ({exc}); check free space and the device")
    return StorageError(f"{what}: LMDB error: {exc}")


def _is_map_full(exc: BaseException) -> bool:
    return isinstance(exc, (lmdb.MapFullError, MapFullError))


class Txn:
    """One LMDB transaction over the named databases, values verified through the envelope.

    Obtained from :meth:`Environment.read` or :meth:`Environment.write` (never constructed
    directly); valid only inside that ``with`` block. Keys are bytes (str is accepted and
    encoded as UTF-8), 1..510 bytes long (the table tag takes one of LMDB's 511).

    Not thread-safe: one thread uses a transaction at a time (a write transaction only on the
    thread that began it).

    Memory: O(1) plus LMDB's dirty pages in a write transaction.
    """

    __slots__ = ("_bump", "_delta", "_dirty", "_env", "_live", "_map_full", "_new_generation",
                 "_txn", "_write", "start_generation")

    def __init__(self, env: Environment, txn: lmdb.Transaction, write: bool) -> None:
        self._env = env
        self._txn = txn
        self._write = write
        self._live = True
        self._dirty = False
        self._bump = False
        self._map_full = False
        self._new_generation: int | None = None
        self._delta: dict[str, int] = {}
        self.start_generation = env._read_generation(txn)

    # -- helpers ---------------------------------------------------------------------------

    @property
    def write(self) -> bool:
        """True for a write transaction."""
        return self._write

    @property
    def env(self) -> Environment:
        """The environment this transaction belongs to."""
        return self._env

    @property
    def dirty(self) -> bool:
        """True once this write transaction has changed something."""
        return self._dirty

    def _handle(self, db: str) -> bytes:
        """The table's tag byte (validates the name and that the txn is live)."""
        if not self._live:
            raise ClosedError("transaction used after its `with` block ended")
        try:
            return _TAG[db]
        except (KeyError, TypeError):
            raise InvalidArgumentError(f"unknown named database {db!r}; one of "
                                       f"{', '.join(DB_NAMES)}") from None

    def _need_write(self) -> None:
        if not self._write:
            raise ReadOnlyError("cannot write in a read transaction; use env.write()")

    @staticmethod
    def _desc(db: str, key: bytes) -> str:
        if len(key) == 8 and db in ("docs", "pages"):
            return f"{db}/{'page' if db == 'pages' else 'doc'} {_U64.unpack(key)[0]}"
        try:
            return f"{db}/{key.decode('utf-8')!r}"
        except UnicodeDecodeError:
            return f"{db}/0x{key[:40].hex()}"

    # -- reads -----------------------------------------------------------------------------

    def get(self, db: str, key: bytes | str) -> bytes | None:
        """The verified value at ``key``, or None.

        Complexity: O(log n) + O(len(value)).

        :raises CorruptionError: when the stored value fails its envelope check.
        """
        k, raw = self._read(db, key)
        if raw is None:
            return None
        return decode_value(raw, key_desc=self._desc(db, k), kind=_KIND_OF_DB[db])

    def raw_many(self, db: str, keys: list[bytes]) -> list[memoryview | None]:
        """The stored values at ``keys`` (None where absent) without verification, as
        buffers valid only inside this transaction: for a caller that verifies them in one
        batch (the search results' records, :func:`llmdsdb.documents.search_results`).

        Complexity: O(k log n) for k keys.
        """
        h = self._handle(db)
        get, txn = self._env._span.get, self._txn  # each value's extent checked first
        out: list[memoryview | None] = []
        for key in keys:
            k = _as_key(key)
            try:
                out.append(get(txn, h + k, lambda k=k: self._desc(db, k)))
            except lmdb.Error as exc:
                raise _wrap(exc, f"get {self._desc(db, k)}") from exc
        return out

    def desc(self, db: str, key: bytes) -> str:
        """How errors name the value at ``key`` of ``db`` (``"docs/doc 42"``)."""
        return self._desc(db, key)

    def raw_get(self, db: str, key: bytes | str) -> bytes | None:
        """The stored bytes at ``key`` without verification (for check and repair tools).

        Complexity: O(log n).
        """
        raw = self._read(db, key)[1]
        return None if raw is None else bytes(raw)

    def _read(self, db: str, key: bytes | str) -> tuple[bytes, bytes | None]:
        """The key as stored and its raw value (None when absent), LMDB errors wrapped."""
        h = self._handle(db)
        k = _as_key(key)
        try:
            return k, self._env._span.get(self._txn, h + k, lambda: self._desc(db, k))
        except lmdb.Error as exc:
            raise _wrap(exc, f"get {self._desc(db, k)}") from exc

    def _iter(self, db: str, prefix: bytes, verify: bool, values: bool
              ) -> Iterator[tuple[bytes, bytes | None]]:
        h = self._handle(db)
        if isinstance(prefix, str):
            prefix = prefix.encode("utf-8")
        elif isinstance(prefix, (bytes, bytearray, memoryview)):
            prefix = bytes(prefix)
        else:  # bytes(5) would be a prefix of five NUL bytes
            raise InvalidTypeError(f"a key prefix must be bytes or str, not "
                                   f"{type(prefix).__name__}")
        kind = _KIND_OF_DB[db]
        full = h + prefix
        try:
            cur = self._txn.cursor()
            ok = cur.set_range(full)
            while ok:
                fk = bytes(cur.key())
                if not fk.startswith(full):
                    break
                k = fk[1:]
                if not values:
                    yield k, None
                else:
                    self._env._span.check(cur.key(), lambda k=k: self._desc(db, k))
                    raw = cur.value()
                    if verify:
                        yield k, decode_value(raw, key_desc=self._desc(db, k), kind=kind)
                    else:
                        yield k, bytes(raw)
                ok = cur.next()
        except lmdb.Error as exc:
            raise _wrap(exc, f"iterate {db}") from exc

    def items(self, db: str, prefix: bytes | str = b"") -> Iterator[tuple[bytes, bytes]]:
        """``(key, verified value)`` pairs in key order, restricted to keys starting with
        ``prefix``. Consume the iterator inside the transaction.

        Complexity: O(log n + k) for k items yielded, plus their lengths.
        """
        return self._iter(db, prefix, True, True)  # type: ignore[return-value]

    def keys(self, db: str, prefix: bytes | str = b"") -> Iterator[bytes]:
        """Keys in order, restricted to ``prefix``.

        Complexity: O(log n + k).
        """
        return (k for k, _ in self._iter(db, prefix, False, False))

    def raw_items(self, db: str, prefix: bytes | str = b"") -> Iterator[tuple[bytes, bytes]]:
        """``(key, stored bytes)`` pairs without verification, for ``check()``.

        Complexity: O(log n + k).
        """
        return self._iter(db, prefix, False, True)  # type: ignore[return-value]

    def around(self, db: str, key: bytes | str) -> list[tuple[bytes, bytes]]:
        """The entries of ``db`` just below ``key`` and at or above it (at most two,
        verified values): where a damaged key would sit if ``key`` was damaged, for the
        document layer's key-integrity check on a miss.

        Complexity: O(log n).
        """
        h = self._handle(db)
        full = h + _as_key(key)
        kind = _KIND_OF_DB[db]
        out: list[tuple[bytes, bytes]] = []
        try:
            cur = self._txn.cursor()
            found = cur.set_range(full)
            for step in range(2):
                ok = found if step == 0 else (cur.prev() if found else cur.last())
                fk = bytes(cur.key()) if ok else b""
                if fk[:1] == h:
                    self._env._span.check(cur.key(), self._desc(db, fk[1:]))
                    raw = cur.value()
                    out.append((fk[1:], decode_value(raw, key_desc=self._desc(db, fk[1:]),
                                                     kind=kind)))
        except lmdb.Error as exc:
            raise _wrap(exc, f"seek {db}") from exc
        return out

    def count(self, db: str) -> int:
        """Number of entries in a table (kept in meta; ``meta`` itself is scanned).

        Complexity: O(1); O(entries) for ``meta``.
        """
        self._handle(db)
        if db not in _COUNTED:
            return sum(1 for _ in self._iter(db, b"", False, False))
        try:
            raw = self._env._span.get(self._txn, _TAG["meta"] + b"count/" + db.encode(),
                                      f"meta/'count/{db}'")
        except lmdb.Error as exc:
            raise _wrap(exc, f"count {db}") from exc
        stored = 0
        if raw is not None:
            v = decode_value(raw, key_desc=f"meta/'count/{db}'", kind=KIND_META)
            if len(v) != 8:
                raise CorruptionError(f"meta/'count/{db}': malformed record")
            stored = _U64.unpack(v)[0]
        return stored + self._delta.get(db, 0)

    def generation(self) -> int:
        """The generation this transaction sees (including its own pending bump).

        Complexity: O(1).
        """
        return self._new_generation if self._new_generation is not None else \
            self.start_generation

    # -- writes ----------------------------------------------------------------------------

    def put(self, db: str, key: bytes | str, value: bytes | bytearray | memoryview, *,
            compress: bool | None = None) -> None:
        """Store ``value`` (wrapped in the envelope) at ``key``, replacing any old value.

        Complexity: O(log n) + O(len(value)).

        :raises ReadOnlyError: in a read transaction.
        :raises MapFullError: when the map is full; the transaction is then dead: leave the
            ``with`` block (``run_write`` grows the map and runs the function again).
        """
        h = self._handle(db)
        self._need_write()
        k = _as_key(key)
        v = encode_value(value, kind=_KIND_OF_DB[db], compress=compress)
        self._put_raw(h, db, k, v)

    def put_many(self, db: str, keys: list[bytes], values: list[bytes], *,
                 compress: bool | None = None) -> None:
        """:meth:`put` of ``values[i]`` at ``keys[i]`` for every i, in one LMDB call (for
        the many pages of one index flush): every key and value is checked and wrapped
        before anything is stored.

        Complexity: O(k log n) + O(total length).

        :raises InvalidArgumentError: when the lists differ in length (or as :meth:`put`).
        :raises MapFullError: as :meth:`put`.
        """
        h = self._handle(db)
        self._need_write()
        if len(keys) != len(values):
            raise InvalidArgumentError(f"{len(keys)} keys but {len(values)} values")
        kind = _KIND_OF_DB[db]
        items = [(h + _as_key(k), encode_value(v, kind=kind, compress=compress))
                 for k, v in zip(keys, values)]
        if not items:
            return
        try:
            self._store(h, db, items)
        except lmdb.Error as exc:
            if isinstance(exc, lmdb.MapFullError):
                self._map_full = True
            raise _wrap(exc, f"put {len(items)} values in {db}") from exc

    def _store(self, h: bytes, db: str, items: list[tuple[bytes, bytes]]) -> None:
        """Put each ``(h + key, value)`` of ``items``, replacing old values, and count the
        new keys of a counted table (also when a put fails part way). An old value is never
        read: the extent its leaf node claims is checked (:mod:`llmdsdb.storage_mapspan`)
        before LMDB replaces it and frees its overflow pages, so a damaged node is a
        CorruptionError, not a crash.

        Complexity: O(len(items) log n) + O(total length).
        """
        added = 0
        check, cut = self._env._span.check, len(h)
        try:
            with self._txn.cursor() as cur:
                for k, v in items:
                    found = cur.set_key(k)
                    if found:
                        check(cur.key(), lambda k=k: self._desc(db, k[cut:]))
                    cur.put(k, v)
                    added += not found
        finally:
            self._dirty = True
            if added and db in _COUNTED:
                self._delta[db] = self._delta.get(db, 0) + added

    def raw_put(self, db: str, key: bytes | str, raw: bytes) -> None:
        """Store ``raw`` as is, bypassing the envelope (tests and repair tools only).

        Complexity: O(log n).
        """
        h = self._handle(db)
        self._need_write()
        self._put_raw(h, db, _as_key(key), bytes(raw))

    def _put_raw(self, h: bytes, db: str, k: bytes, v: bytes) -> None:
        try:
            self._store(h, db, [(h + k, v)])
        except lmdb.Error as exc:
            if isinstance(exc, lmdb.MapFullError):
                self._map_full = True
            raise _wrap(exc, f"put {self._desc(db, k)}") from exc

    def delete(self, db: str, key: bytes | str) -> bool:
        """Delete ``key``; True when it existed.

        Complexity: O(log n).
        """
        h = self._handle(db)
        self._need_write()
        k = _as_key(key)
        try:
            done = bool(self._txn.delete(h + k))
        except lmdb.Error as exc:
            if isinstance(exc, lmdb.MapFullError):
                self._map_full = True
            raise _wrap(exc, f"delete {self._desc(db, k)}") from exc
        if done:
            self._dirty = True
            if db in _COUNTED:
                self._delta[db] = self._delta.get(db, 0) - 1
        return done

    def bump_generation(self) -> int:
        """Make this write transaction count as a commit even if it wrote nothing else.

        The generation is incremented exactly once per committing write transaction whatever
        is called; this returns the generation the commit will have.

        Complexity: O(1).
        """
        self._need_write()
        self._bump = True
        return self.start_generation + 1

    def _finish_generation(self) -> None:
        if self._dirty or self._bump:
            for db, d in list(self._delta.items()):
                if d:
                    n = self.count(db)
                    if n < 0:
                        raise CorruptionError(f"meta/'count/{db}' would become {n}")
                    self._put_raw(_TAG["meta"], "meta", b"count/" + db.encode(),
                                  encode_value(_U64.pack(n), kind=KIND_META, compress=False))
                    self._delta[db] = 0
            new = self.start_generation + 1
            self._put_raw(_TAG["meta"], "meta", b"generation",
                          encode_value(_U64.pack(new), kind=KIND_META, compress=False))
            self._new_generation = new


def check_format(txn: Txn) -> int:
    """Check the format version recorded in ``meta/format_version``.

    Complexity: O(1).

    :returns: the stored format version.
    :raises FormatVersionError: when it is newer than :data:`FORMAT_VERSION` (upgrade
        llmdsdb), missing or malformed (not an llmdsdb database).
    """
    raw = txn.get("meta", b"format_version")
    if raw is None:
        raise FormatVersionError(f"{txn.env.path}: no format_version record: not an llmdsdb "
                                 f"database (or one written before format versions existed)")
    if len(raw) != 8:
        raise FormatVersionError(f"{txn.env.path}: malformed format_version record")
    version = _U64.unpack(raw)[0]
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"{txn.env.path} has on-disk format version {version}, newer "
                                 f"than the {FORMAT_VERSION} this llmdsdb reads; upgrade llmdsdb "
                                 f"(pip install -U llmdsdb)")
    if version < 1:
        raise FormatVersionError(f"{txn.env.path}: invalid format version {version}")
    return version
