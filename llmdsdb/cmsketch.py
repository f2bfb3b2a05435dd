"""Count-Min sketch: approximate counts of a stream in fixed memory, never under-counting.

A table of ``depth`` rows by ``width`` counters. Adding an item adds its count to one counter
per row; its estimate is the minimum of those counters. With ``N`` the total count added and
``ε = e / width``, the estimate exceeds the true count by more than ``ε·N`` with probability
at most ``δ = e^(-depth)`` (Cormode and Muthukrishnan, 2005). Conservative update (raise
only the counters below ``estimate + count``) keeps the same guarantee with smaller errors.

Hashing is stable across processes and reloads (never Python's salted ``hash``):

* ``str`` keys: BLAKE2b-64 of the UTF-8 bytes; ``bytes`` keys: BLAKE2b-64 of the bytes (a
  different personalisation, so ``"a"`` and ``b"a"`` are different keys);
* ``int`` keys in ``[-2**63, 2**64)``: the splitmix64 finaliser of ``value mod 2**64`` (so
  ``-1`` and ``2**64 - 1`` share a key); other ints: BLAKE2b-64 of their decimal text.
  ``True``/``False`` count as ``1``/``0``, as in a ``dict``;
* that 64-bit base hash is mixed with the seed (splitmix64 again), and row ``r`` uses column
  ``(h1 + r·h2) mod width`` with ``h1``/``h2`` the low/high 32 bits (double hashing).

The integer path is pure numpy for bulk input (:meth:`CountMinSketch.add_many`,
:meth:`CountMinSketch.estimate_many`); single items use Python integer arithmetic on a flat
memoryview of the same table, avoiding numpy's per-call overhead.

Invariant (checked by :meth:`CountMinSketch._check`): the table is a C-contiguous int64
array of shape ``(depth, width)`` with no negative counter; every row sums to at most
``total``, and to exactly ``total`` while neither conservative update nor aging was used.

>>> s = CountMinSketch(width=1024, depth=4)
>>> for word in "the cat sat on the mat the end".split():
...     s.add(word)
>>> s.estimate("the"), s.total
(3, 8)
>>> s.estimate("dog") <= s.get_error_bound()
True
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

import numpy as np

from llmdsdb._validate import as_int as _as_int
from llmdsdb.errors import (
    CorruptionError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidTypeError,
)

__all__ = ["CountMinSketch"]

_M64 = (1 << 64) - 1
_M32 = (1 << 32) - 1
_INT_SALT = 0x9E3779B97F4A7C15
_P_STR = b"llmdsdb.cms.str"
_P_BYTES = b"llmdsdb.cms.byt"
_P_BIGINT = b"llmdsdb.cms.int"
# Copying a pre-built hasher skips parsing the keyword arguments: measured 1.8x faster than
# calling blake2b(data, digest_size=8, person=...) per key (same digests).
_H_STR = blake2b(digest_size=8, person=_P_STR).copy
_H_BYTES = blake2b(digest_size=8, person=_P_BYTES).copy
_H_BIGINT = blake2b(digest_size=8, person=_P_BIGINT).copy
_MAGIC = b"LDCM"
_VERSION = 1
# magic, version, flags, counter itemsize, width, depth, seed, total
_HEADER = struct.Struct("<4sBBBIIQQ")
_CRC = struct.Struct("<I")
#: Largest total the int64 counters can hold: every counter is at most the total.
_MAX_TOTAL = 2**63 - 1
_DTYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.int64}

_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)


def _mix(x: int) -> int:
    """splitmix64 finaliser on a Python int in [0, 2**64)."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _mix_np(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (a new array; multiplication wraps)."""
    x = x ^ (x >> _S30)
    x *= _C1
    x ^= x >> _S27
    x *= _C2
    x ^= x >> _S31
    return x


def _base(item: object) -> int:
    """The stable 64-bit base hash of one key."""
    t = type(item)
    if t is str:
        h = _H_STR()
        h.update(item.encode("utf-8", "surrogatepass"))  # type: ignore[attr-defined]
        return int.from_bytes(h.digest(), "little")
    if t is int or t is bool:
        v: int = item  # type: ignore[assignment]
        if -(1 << 63) <= v <= _M64:
            return _mix((v & _M64) ^ _INT_SALT)
        h = _H_BIGINT()
        h.update(str(v).encode())
        return int.from_bytes(h.digest(), "little")
    if isinstance(item, (bytes, bytearray, memoryview)):
        h = _H_BYTES()
        h.update(bytes(item))
        return int.from_bytes(h.digest(), "little")
    if isinstance(item, str):
        return _base(str(item))
    if isinstance(item, (int, np.integer)):
        return _base(int(item))  # type: ignore[arg-type]
    raise InvalidTypeError(f"sketch keys must be str, bytes or int, not {type(item).__name__}")


def _bases(items: Any) -> np.ndarray:
    """Base hashes of many keys as a uint64 array of shape (n,)."""
    if isinstance(items, np.ndarray):
        if items.ndim != 1:
            raise InvalidArgumentError(f"keys must be a 1-d array, got shape {items.shape}")
        kind = items.dtype.kind
        if kind in "iub":
            if kind == "u" and items.dtype.itemsize == 8:
                arr = items
            elif kind == "u":
                arr = items.astype(np.uint64)
            else:
                arr = items.astype(np.int64, copy=False).view(np.uint64)
            return _mix_np(arr ^ np.uint64(_INT_SALT))
        if kind in "US":
            items = items.tolist()  # numpy strips trailing NULs of 'S': same as its values
        elif kind == "O":
            items = items.tolist()
        else:
            raise InvalidTypeError(
                f"sketch keys must be str, bytes or int, not an array of {items.dtype}"
            )
    elif not isinstance(items, (list, tuple)):
        if isinstance(items, (str, bytes, bytearray, memoryview, int)):
            raise InvalidTypeError("add_many/estimate_many take a sequence of keys, not one key")
        items = list(items)
    n = len(items)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    first = items[0]
    if type(first) is str:
        try:
            new = _H_STR
            parts: list[bytes] = []
            append = parts.append
            for s in items:
                h = new()
                h.update(s.encode("utf-8", "surrogatepass"))
                append(h.digest())
            return np.frombuffer(b"".join(parts), dtype="<u8").astype(np.uint64)
        except (AttributeError, TypeError):
            pass  # mixed types: fall back to one key at a time
    elif type(first) is int:
        try:
            arr = np.array(items)
        except (OverflowError, ValueError, TypeError):  # huge ints, bytes numpy can't decode
            arr = None
        if arr is not None and arr.ndim == 1 and arr.dtype.kind in "iub":
            return _bases(arr)
    return np.fromiter((_base(x) for x in items), dtype=np.uint64, count=n)


class CountMinSketch:
    """Count-Min sketch with stable hashing, conservative update, bulk numpy paths, merge,
    serialisation and aging.

    :param width: counters per row (>= 1); ``ε = e / width``.
    :param depth: rows (1..64); failure probability ``δ = e^(-depth)``.
    :param conservative: use conservative update (smaller over-estimates; sketches built
        this way still merge, but the merged counts are plain sums).
    :param seed: hash seed in ``[0, 2**64)``; sketches merge only with the same seed.
    :raises InvalidArgumentError: on a non-positive or out-of-range size or seed.
    :raises InvalidTypeError: on a non-int size or seed.

    Not thread-safe: guard every call with one lock when several threads share a sketch.

    Memory: ``8 · width · depth`` bytes of int64 counters (64 KiB for the default 2048 × 4)
    plus a few hundred bytes; :meth:`to_bytes` stores counters in the narrowest unsigned type
    that holds the largest one.
    """

    __slots__ = ("_conservative", "_depth", "_flat", "_rowsum_exact", "_seed", "_seedmix",
                 "_table", "_total", "_width")

    def __init__(
        self, width: int = 2048, depth: int = 4, *, conservative: bool = False, seed: int = 0
    ) -> None:
        if isinstance(width, bool) or isinstance(depth, bool):
            raise InvalidTypeError("width and depth must be ints, not bool")
        width = _as_int(width, "width")
        depth = _as_int(depth, "depth")
        seed = _as_int(seed, "seed")
        if not 1 <= width < 2**31:
            raise InvalidArgumentError(f"width must be in [1, 2**31), got {width}")
        if not 1 <= depth <= 64:
            raise InvalidArgumentError(f"depth must be in [1, 64], got {depth}")
        if not 0 <= seed <= _M64:
            raise InvalidArgumentError(f"seed must be in [0, 2**64), got {seed}")
        if not isinstance(conservative, bool):
            raise InvalidTypeError("conservative must be a bool")
        self._width = width
        self._depth = depth
        self._seed = seed
        self._seedmix = _mix(seed ^ 0xD6E8FEB86659FD93)
        self._conservative = conservative
        self._table = np.zeros((depth, width), dtype=np.int64)
        # a flat int64 view of the same buffer: single-item reads/writes at C speed
        self._flat = memoryview(self._table).cast("B").cast("q")
        self._total = 0
        self._rowsum_exact = not conservative

    @classmethod
    def from_error(
        cls, epsilon: float, delta: float, *, conservative: bool = False, seed: int = 0
    ) -> CountMinSketch:
        """A sketch whose error is at most ``epsilon · N`` with probability ``1 - delta``:
        ``width = ceil(e / epsilon)``, ``depth = ceil(ln(1 / delta))``.

        :raises InvalidArgumentError: unless ``0 < epsilon < 1`` and ``0 < delta < 1``.

        Complexity: O(width · depth).

        >>> s = CountMinSketch.from_error(0.001, 0.01)
        >>> s.width, s.depth
        (2719, 5)
        """
        for name, v in (("epsilon", epsilon), ("delta", delta)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidTypeError(f"{name} must be a float, not {type(v).__name__}")
            if not 0.0 < v < 1.0:
                raise InvalidArgumentError(f"{name} must be in (0, 1), got {v}")
        width = math.ceil(math.e / epsilon)
        depth = max(1, math.ceil(math.log(1.0 / delta)))
        return cls(width, depth, conservative=conservative, seed=seed)

    # --- properties -----------------------------------------------------------------------

    @property
    def width(self) -> int:
        """Counters per row."""
        return self._width

    @property
    def depth(self) -> int:
        """Rows."""
        return self._depth

    @property
    def seed(self) -> int:
        """Hash seed."""
        return self._seed

    @property
    def conservative(self) -> bool:
        """Whether conservative update is on."""
        return self._conservative

    @property
    def total(self) -> int:
        """``N``: the total count added (halved by :meth:`age`)."""
        return self._total

    @property
    def epsilon(self) -> float:
        """``e / width``: the relative error bound."""
        return math.e / self._width

    @property
    def delta(self) -> float:
        """``e^(-depth)``: the probability that an estimate exceeds the bound."""
        return math.exp(-self._depth)

    @property
    def table(self) -> np.ndarray:
        """A read-only view of the counters: int64 array of shape (depth, width)."""
        v = self._table.view()
        v.flags.writeable = False
        return v

    def __repr__(self) -> str:
        cu = ", conservative=True" if self._conservative else ""
        return (
            f"CountMinSketch(width={self._width}, depth={self._depth}{cu}, seed={self._seed},"
            f" total={self._total})"
        )

    # --- hashing --------------------------------------------------------------------------

    def _cells(self, item: object) -> list[int]:
        """Flat table positions of one key, one per row."""
        h = _mix(_base(item) ^ self._seedmix)
        h1 = h & _M32
        h2 = (h >> 32) | 1
        w = self._width
        return [r * w + (h1 + r * h2) % w for r in range(self._depth)]

    def _hash_many(self, items: Any) -> np.ndarray:
        """Seeded 64-bit hashes of many keys: uint64 array of shape (n,)."""
        return _mix_np(_bases(items) ^ np.uint64(self._seedmix))

    def _cells_many(self, h: np.ndarray) -> np.ndarray:
        """Flat table positions for seeded hashes: uint64 array of shape (depth, n)."""
        h1 = h & np.uint64(_M32)
        h2 = (h >> np.uint64(32)) | np.uint64(1)
        w = np.uint64(self._width)
        out = np.empty((self._depth, len(h)), dtype=np.uint64)
        acc = h1 % w
        h2 %= w
        for r in range(self._depth):
            if r:
                # (h1 + r*h2) mod w, built incrementally without overflow
                acc += h2
                acc[acc >= w] -= w
            np.add(acc, np.uint64(r * self._width), out=out[r])
        return out

    # --- updates --------------------------------------------------------------------------

    def _room(self, added: int) -> None:
        """Refuse an update that could overflow an int64 counter (each is <= the total)."""
        if self._total + added > _MAX_TOTAL:
            raise InvalidArgumentError(
                f"adding {added} to a sketch holding {self._total} would overflow its int64 "
                f"counters (total limit 2**63 - 1); age() or clear() it first"
            )

    def add(self, item: str | bytes | int, count: int = 1) -> None:
        """Add ``count`` occurrences of ``item``.

        :raises InvalidTypeError: when ``item`` is not str, bytes or int, or ``count`` is
            not an int.
        :raises InvalidArgumentError: when ``count`` is negative, or would take the total
            past ``2**63 - 1`` (the counters are int64); nothing is added then.

        Complexity: O(depth).
        """
        if type(count) is not int:
            count = _as_int(count, "count")
        if count <= 0:
            if count == 0:
                _base(item)  # still reject a bad key
                return
            raise InvalidArgumentError(f"count must be >= 0, got {count}")
        self._room(count)
        cells = self._cells(item)
        flat = self._flat
        if self._conservative:
            new = min([flat[i] for i in cells]) + count
            for i in cells:
                if flat[i] < new:
                    flat[i] = new
        else:
            for i in cells:
                flat[i] += count
        self._total += count

    def add_many(self, items: Sequence[Any] | np.ndarray, counts: Any = None) -> None:
        """Add many keys at once (numpy-vectorised; fastest on an integer array).

        :param items: a sequence or 1-d array of keys (str, bytes or int).
        :param counts: None (each key counts 1), one int for all, or ints of the same length.
        :raises InvalidTypeError: on a key or count of the wrong type; nothing is added.
        :raises InvalidArgumentError: on a negative count, a length mismatch, or counts that
            would overflow the int64 counters; nothing is added.

        With conservative update the batch is applied against the counters as they were
        before it (duplicates within the batch summed first): still never under-counting,
        though not always as tight as adding one by one.

        Complexity: O(n · depth).

        >>> s = CountMinSketch(256, 4)
        >>> s.add_many(np.arange(1000) % 10)
        >>> s.estimate_many([0, 3, 9]).tolist(), s.total
        ([100, 100, 100], 1000)
        """
        h = self._hash_many(items)
        cells = self._cells_many(h)
        n = cells.shape[1]
        cnt: np.ndarray | None = None
        if counts is None:
            added = n
        else:
            if isinstance(counts, (int, np.integer)) and not isinstance(counts, bool):
                c = int(counts)
                if c < 0:
                    raise InvalidArgumentError(f"counts must be >= 0, got {c}")
                self._room(c * n)
                cnt = np.full(n, c, dtype=np.int64)
            else:
                cnt = np.asarray(counts)
                if cnt.size == 0 and cnt.dtype.kind == "f":
                    cnt = cnt.astype(np.int64)  # np.asarray([]) is float64
                if cnt.dtype.kind not in "iu":
                    raise InvalidTypeError(f"counts must be ints, not {cnt.dtype}")
                if cnt.shape != (n,):
                    raise InvalidArgumentError(
                        f"counts has shape {cnt.shape}, expected ({n},) to match the keys"
                    )
                if n and cnt.min() < 0:
                    raise InvalidArgumentError("counts must be >= 0")
                # n * max bounds the sum; near the limit, sum exactly in Python ints (the
                # int64 sum or cast could wrap)
                if n and self._total + int(cnt.max()) * n > _MAX_TOTAL:
                    self._room(sum(cnt.tolist()))
                cnt = cnt.astype(np.int64, copy=False)
            added = int(cnt.sum())
        if n == 0:
            return
        flat = self._table.reshape(-1)
        size = flat.shape[0]
        if self._conservative:
            est = flat[cells].min(axis=0)
            # sum duplicates (same 64-bit hash => same cells) so each key gets its whole
            # batch count once, against the counters as they were before the batch
            uniq, first, inv = np.unique(h, return_index=True, return_inverse=True)
            tot = np.bincount(inv, weights=cnt, minlength=len(uniq)) if cnt is not None \
                else np.bincount(inv, minlength=len(uniq))
            target = est[first] + tot.astype(np.int64)
            for r in range(self._depth):
                np.maximum.at(flat, cells[r, first].astype(np.intp), target)
        elif cnt is None:
            flat += np.bincount(cells.reshape(-1).astype(np.intp), minlength=size)
        else:
            np.add.at(flat, cells.reshape(-1).astype(np.intp), np.tile(cnt, self._depth))
        self._total += added

    def merge(self, other: CountMinSketch) -> None:
        """Add the counts of ``other`` into this sketch (in place).

        :raises InvalidTypeError: when ``other`` is not a CountMinSketch.
        :raises InvalidArgumentError: when width, depth or seed differ, or the summed
            totals would overflow the int64 counters.

        Complexity: O(width · depth).

        >>> a, b = CountMinSketch(64, 3), CountMinSketch(64, 3)
        >>> a.add("x", 2); b.add("x", 5); a.merge(b); a.estimate("x")
        7
        """
        if not isinstance(other, CountMinSketch):
            raise InvalidTypeError(f"can only merge a CountMinSketch, not {type(other).__name__}")
        if (other._width, other._depth, other._seed) != (self._width, self._depth, self._seed):
            raise InvalidArgumentError(
                f"cannot merge a {other._width}x{other._depth} sketch with seed {other._seed} "
                f"into a {self._width}x{self._depth} sketch with seed {self._seed}"
            )
        self._room(other._total)
        self._table += other._table
        self._total += other._total
        self._rowsum_exact = self._rowsum_exact and other._rowsum_exact

    def age(self) -> None:
        """Halve every counter (rounding down) and the total: TinyLFU's reset, so that old
        popularity fades. Estimates stay at or above the halved (rounded down) true counts.

        Complexity: O(width · depth).
        """
        self._table >>= 1
        self._total >>= 1
        self._rowsum_exact = False

    halve = age

    def clear(self) -> None:
        """Reset every counter and the total. Complexity: O(width · depth)."""
        self._table[...] = 0
        self._total = 0
        self._rowsum_exact = not self._conservative

    # --- queries --------------------------------------------------------------------------

    def estimate(self, item: str | bytes | int) -> int:
        """Estimated count of ``item``: never below the true count, and above it by more
        than :meth:`get_error_bound` with probability at most ``delta``.

        :raises InvalidTypeError: when ``item`` is not str, bytes or int.

        Complexity: O(depth).
        """
        flat = self._flat
        return min([flat[i] for i in self._cells(item)])

    def estimate_many(self, items: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Estimates of many keys: int64 array of shape (n,).

        Complexity: O(n · depth).
        """
        cells = self._cells_many(self._hash_many(items))
        if cells.shape[1] == 0:
            return np.zeros(0, dtype=np.int64)
        return self._table.reshape(-1)[cells.astype(np.intp)].min(axis=0)

    def is_hot(self, item: str | bytes | int, threshold: int) -> bool:
        """Whether ``estimate(item) >= threshold``.

        Complexity: O(depth).
        """
        return self.estimate(item) >= threshold

    def get_error_bound(self) -> float:
        """The additive error bound ``ε · N`` (``ε = e / width``) that an estimate stays
        within with probability ``1 - e^(-depth)``.

        Complexity: O(1).
        """
        return math.e / self._width * self._total

    # --- persistence ------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise: a versioned header, the counters in the narrowest unsigned type that
        holds the largest one (little-endian), and a CRC-32.

        Complexity: O(width · depth).

        >>> s = CountMinSketch(128, 2, seed=7); s.add(b"k", 3)
        >>> t = CountMinSketch.from_bytes(s.to_bytes())
        >>> t.estimate(b"k"), t.seed, len(s.to_bytes())
        (3, 7, 291)
        """
        top = int(self._table.max()) if self._table.size else 0
        size = 1 if top < 2**8 else 2 if top < 2**16 else 4 if top < 2**32 else 8
        body = self._table.astype(np.dtype(_DTYPES[size]).newbyteorder("<")).tobytes()
        flags = (1 if self._conservative else 0) | (2 if self._rowsum_exact else 0)
        head = _HEADER.pack(
            _MAGIC, _VERSION, flags, size, self._width, self._depth, self._seed, self._total
        )
        payload = head + body
        return payload + _CRC.pack(zlib.crc32(payload))

    @classmethod
    def from_bytes(cls, data: bytes) -> CountMinSketch:
        """Rebuild a sketch from :meth:`to_bytes` output.

        :raises InvalidTypeError: when ``data`` is not bytes-like.
        :raises FormatVersionError: when written by an unknown format version.
        :raises CorruptionError: when truncated, failing the checksum, or inconsistent.

        Complexity: O(width · depth).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidTypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size + _CRC.size:
            raise CorruptionError(f"sketch state too short ({len(data)} bytes)")
        magic, version, flags, size, width, depth, seed, total = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise CorruptionError(f"not a sketch state (magic {magic!r})")
        if version != _VERSION:
            raise FormatVersionError(
                f"sketch format version {version} is not supported (expected {_VERSION}); "
                "upgrade llmdsdb"
            )
        if size not in _DTYPES or flags > 3 or not 1 <= width < 2**31 or not 1 <= depth <= 64:
            raise CorruptionError("sketch header is inconsistent")
        expect = _HEADER.size + size * width * depth + _CRC.size
        if len(data) != expect:
            raise CorruptionError(f"sketch state is {len(data)} bytes, expected {expect}")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(data[: -_CRC.size]) != crc:
            raise CorruptionError("sketch state failed its checksum")
        dt = np.dtype(_DTYPES[size]).newbyteorder("<")
        table = np.frombuffer(data, dtype=dt, count=width * depth, offset=_HEADER.size)
        if size == 8 and width * depth and table.min() < 0:
            raise CorruptionError("sketch state holds a negative counter")
        if total >= 2**63:
            raise CorruptionError("sketch total is out of range")
        self = cls(width, depth, conservative=bool(flags & 1), seed=seed)
        self._table[...] = table.reshape(depth, width)
        self._total = total
        self._rowsum_exact = bool(flags & 2)
        sums = self._table.sum(axis=1)
        if (sums > total).any() or (self._rowsum_exact and (sums != total).any()):
            raise CorruptionError("sketch counters do not add up to its total")
        return self

    def copy(self) -> CountMinSketch:
        """An independent copy. Complexity: O(width · depth)."""
        other = CountMinSketch(
            self._width, self._depth, conservative=self._conservative, seed=self._seed
        )
        other._table[...] = self._table
        other._total = self._total
        other._rowsum_exact = self._rowsum_exact
        return other

    # --- invariant ------------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the invariant of the module docstring. Complexity: O(width · depth)."""
        t = self._table
        assert t.dtype == np.int64 and t.shape == (self._depth, self._width)
        assert t.flags.c_contiguous
        assert self._flat.obj is t and len(self._flat) == t.size
        assert (t >= 0).all()
        sums = t.sum(axis=1)
        assert (sums <= self._total).all()
        if self._rowsum_exact:
            assert (sums == self._total).all(), (sums, self._total)

