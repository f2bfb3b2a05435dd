"""Metadata indexes: which documents hold which metadata values, persisted beside the others.

A parsed filter (:mod:`llmdsdb.filters`) is evaluated here into an
:class:`~llmdsdb.allow.AllowSet` of internal document ids, without reading any document.
Four kinds of sorted lists make that possible, each a :class:`BlockList`:

* ``all`` - every live document;
* per field, ``exists`` - the documents whose metadata has the field (any value);
* per (field, value) - *equality postings*: the documents where the field's value, or an
  element of its list value, equals the scalar (bools, numbers and strings kept apart, ``1``
  and ``1.0`` together: the value key of :func:`value_key`); these serve ``$eq``, ``$ne``,
  ``$in`` and ``$nin``;
* per field, two *numeric indexes* of ``(value, id)`` rows sorted by value: one of the int
  values (int64, compared exactly) and one of the floats (float64), for the ranges
  ``$gt``, ``$gte``, ``$lt``, ``$lte``. Bounds are converted into each domain exactly
  (:func:`_int_bounds`, :func:`_float_bounds`), so ``2**53 + 1`` is never confused with
  ``2**53``.

``$not`` is ``all`` minus its child; ``$and`` / ``$or`` intersect / unite. The semantics are
those of :meth:`llmdsdb.filters.Filter.matches` exactly (a hypothesis test compares the two
over random metadata and random filters).

Storage (``storage/FORMAT.md``, "metadata indexes"): a list of up to :data:`INLINE_MAX` ids
lives inline in its directory record; a longer one is blocks of at most
:data:`BLOCK_MAX` rows, one page each - postings pages in the BM25 postings codec
(:func:`llmdsdb.codec.encode_postings`, every tf 1), numeric pages as
:func:`~llmdsdb.codec.encode_arrays` ``[values, ids]``. Directory records in ``idxmeta``
(msgpack): ``mi/state`` (format, field numbers, the ``all`` list), ``mi/f/<fid>`` (a field's
``exists`` list and numeric indexes), ``mi/e/<fid>/<value key>`` (one equality list). A
write rewrites only the blocks and records it touches, in the write transaction of the
documents (``write_batch.update_indexes``).

A database written before these indexes existed (format 1 has no ``mi/`` records) still
opens: the index is *unbuilt* until first needed - the first filtered read builds it in
memory from the documents (O(n) record decodes; a read-only handle does that after every
reload), and the first write batch of a writable handle builds it in its transaction and
persists it with the batch.

Invariant (:meth:`MetadataIndex._check`): every list is sorted, without duplicate rows,
and its blocks' directory entries (min, max, count) describe their rows; after
:meth:`MetadataIndex.flush` every block is a page of the store and the directory records
describe the in-memory lists.

Not thread-safe for writes (the database's reader/writer lock guards it); concurrent reads
are safe (lazy loads only add to dicts).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import struct
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
import numpy as np

from llmdsdb.allow import AllowSet, sorted_unique
from llmdsdb.codec import decode_arrays, decode_postings, encode_arrays, encode_postings
from llmdsdb.errors import CorruptionError
from llmdsdb.filters import And, Eq, Exists, Filter, In, Not, Or, Range
from llmdsdb.records import unpack

__all__ = ["BLOCK_MAX", "INLINE_MAX", "BlockList", "MetadataIndex", "value_key"]

#: Ids kept inline in an equality list's directory record (no page) - most values of a
#: high-cardinality field (a URL, a chunk id) have one or a few documents.
INLINE_MAX = 32
#: Most rows in one block (one page).
BLOCK_MAX = 4096
#: Bytes of evaluated filters (allowed ids and bitmaps) kept per index between queries; a
#: set larger than a quarter of it is not kept (one filter of 1M allowed ids: ~8 MB).
ALLOW_CACHE_BYTES = 64 << 20
#: The on-disk version of the ``mi/`` records.
MI_VERSION = 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EMPTY = np.empty(0, np.int64)


def value_key(v: object) -> bytes | None:
    """The equality key of a scalar metadata value, or None for values equality never
    matches (None, lists, dicts): bools ``b``, numbers ``i`` (an int, or an integral float
    inside int64) or ``f`` (other floats), strings ``s`` + UTF-8.

    >>> value_key(1) == value_key(1.0), value_key(True) == value_key(1), value_key(None)
    (True, False, None)

    Complexity: O(len(v)).
    """
    if isinstance(v, bool):
        return b"b\x01" if v else b"b\x00"
    if isinstance(v, int):
        return b"i" + struct.pack(">q", v)
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer() and _INT64_MIN <= v <= _INT64_MAX \
                and v != 2.0**63:
            return b"i" + struct.pack(">q", int(v))
        return b"f" + struct.pack(">d", v)
    if isinstance(v, str):
        return b"s" + v.encode("utf-8", "surrogatepass")
    return None


def _elements(v: object) -> tuple:
    return tuple(v) if isinstance(v, list) else (v,)


def _unpack(raw: bytes, what: str) -> Any:
    return unpack(raw, f"idxmeta/{what}")


# --- block lists ------------------------------------------------------------------------------


class _Block:
    """One block: ``pid`` (its page, or None before the first flush), the directory figures,
    and the rows once decoded (``vals``/``ids``; for postings ``vals is ids``)."""

    __slots__ = ("count", "dirty", "ids", "maxk", "mink", "pid", "vals")

    def __init__(self, pid: int | None, mink: tuple, maxk: tuple, count: int,
                 vals: np.ndarray | None = None, ids: np.ndarray | None = None) -> None:
        self.pid, self.mink, self.maxk, self.count = pid, mink, maxk, count
        self.vals, self.ids = vals, ids
        self.dirty = pid is None


class BlockList:
    """A sorted list of ``(value, id)`` rows in blocks: kind ``"p"`` postings (the value is
    the id), ``"i"`` int64 values, ``"f"`` float64 values.

    Not thread-safe for writes. Memory: the directory, plus decoded blocks of dirty lists
    (clean blocks are read through the page cache).
    """

    __slots__ = ("blocks", "freed", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.blocks: list[_Block] = []
        self.freed: list[int] = []

    def __len__(self) -> int:
        return sum(b.count for b in self.blocks)

    # -- records -------------------------------------------------------------------------

    @classmethod
    def from_record(cls, kind: str, rec: object, what: str) -> BlockList:
        """The list a directory record describes (inline rows decoded now).

        Complexity: O(blocks + inline rows).

        :raises CorruptionError: on a malformed record.
        """
        bl = cls(kind)
        try:
            if rec is None:
                return bl
            if isinstance(rec, (bytes, bytearray)):
                if not rec or len(rec) % 8 or len(rec) > 8 * INLINE_MAX:
                    raise ValueError(f"inline ids of {len(rec)} bytes")
                ids = np.frombuffer(rec, "<i8").astype(np.int64)
                if ids[0] < 0 or (len(ids) > 1 and not (ids[1:] > ids[:-1]).all()):
                    raise ValueError("inline ids not increasing")
                b = _Block(None, (int(ids[0]),) * 2, (int(ids[-1]),) * 2, len(ids), ids, ids)
                b.dirty = False  # inline: rewritten with the record, never a page
                bl.blocks.append(b)
                return bl
            for e in rec:
                minv, minid, maxv, maxid, count, pid = e
                if not (isinstance(count, int) and isinstance(pid, int) and count > 0
                        and pid >= 0 and isinstance(minid, int) and isinstance(maxid, int)):
                    raise ValueError(f"bad block entry {e!r}")
                bl.blocks.append(_Block(pid, (minv, minid), (maxv, maxid), count))
        except CorruptionError:
            raise
        except Exception as exc:
            raise CorruptionError(f"idxmeta/{what}: malformed list ({exc})") from exc
        return bl

    def _inline(self) -> bool:
        return self.kind == "p" and len(self.blocks) == 1 and self.blocks[0].pid is None \
            and self.blocks[0].count <= INLINE_MAX

    def to_record(self) -> object:
        """The directory record (call after :meth:`write_pages`). Complexity: O(blocks)."""
        if not self.blocks:
            return None
        if self._inline():
            return self.blocks[0].ids.astype("<i8").tobytes()  # type: ignore[union-attr]
        return [[b.mink[0], b.mink[1], b.maxk[0], b.maxk[1], b.count, b.pid]
                for b in self.blocks]

    def _decode(self, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "p":
            ids, _ = decode_postings(raw)
            ids = ids.astype(np.int64)
            return ids, ids
        arrs = decode_arrays(raw)
        if len(arrs) != 2 or len(arrs[0]) != len(arrs[1]):
            raise CorruptionError("metadata numeric block: wrong shape")
        want = np.int64 if self.kind == "i" else np.float64
        return arrs[0].astype(want, copy=False), arrs[1].astype(np.int64, copy=False)

    def _rows(self, store: Any, b: _Block) -> tuple[np.ndarray, np.ndarray]:
        if b.ids is not None:
            return b.vals, b.ids  # type: ignore[return-value]
        vals, ids = store.load(b.pid, self._decode)
        if len(ids) != b.count:
            raise CorruptionError(f"page {b.pid}: metadata block holds {len(ids)} rows, its "
                                  f"directory says {b.count}")
        return vals, ids

    # -- reads ---------------------------------------------------------------------------

    def ids(self, store: Any) -> np.ndarray:
        """Every id of the list, sorted by (value, id) - sorted ids for postings.

        Complexity: O(rows) (blocks through the page cache).
        """
        if not self.blocks:
            return _EMPTY
        parts = [self._rows(store, b)[1] for b in self.blocks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def range_ids(self, store: Any, lo: float | None, lo_incl: bool,
                  hi: float | None, hi_incl: bool) -> np.ndarray:
        """Ids of the rows with value in the range (numeric lists; bounds already in the
        list's domain, None open). Unsorted, possibly repeated (a list value).

        Complexity: O(blocks + rows in the overlapping blocks).
        """
        parts = []
        for b in self.blocks:
            if lo is not None and (b.maxk[0] < lo or (b.maxk[0] == lo and not lo_incl)):
                continue
            if hi is not None and (b.mink[0] > hi or (b.mink[0] == hi and not hi_incl)):
                continue
            vals, ids = self._rows(store, b)
            s = 0 if lo is None else int(np.searchsorted(vals, lo, "left" if lo_incl else "right"))
            e = len(vals) if hi is None else int(np.searchsorted(vals, hi,
                                                                 "right" if hi_incl else "left"))
            if e > s:
                parts.append(ids[s:e])
        return np.concatenate(parts) if parts else _EMPTY

    # -- writes --------------------------------------------------------------------------

    def update(self, store: Any, remove: Iterable[tuple], add: Iterable[tuple]) -> None:
        """Remove every row of the ids of ``remove`` (``(value, id)`` rows as they are in
        the list, so the blocks holding them are found) and add the rows of ``add``. Only
        the blocks touched are decoded; they become dirty (written by :meth:`write_pages`).

        Complexity: O((r + a) log blocks + rows of the touched blocks).
        """
        remove, add = list(remove), list(add)
        if not remove and not add:
            return
        if self.kind == "p" and len(self.blocks) <= 1 and (
                not self.blocks or self.blocks[0].pid is None):
            # a short list held in memory (most values of a high-cardinality field): plain
            # Python sets, ~10x cheaper than the numpy path for a few ids
            cur = self.blocks[0].ids.tolist() if self.blocks else []  # type: ignore[union-attr]
            gone = {k[1] for k in remove}
            new = sorted({x for x in cur if x not in gone} | {k[1] for k in add})
            if len(new) <= INLINE_MAX:
                arr = np.array(new, np.int64)
                self.blocks = [_Block(None, (new[0],) * 2, (new[-1],) * 2, len(new), arr,
                                      arr)] if new else []
                return
        keys = [b.mink for b in self.blocks]
        touched: dict[int, tuple[set, list]] = {}

        def slot(k: tuple) -> tuple[set, list]:
            i = max(bisect.bisect_right(keys, k) - 1, 0)
            return touched.setdefault(i, (set(), []))

        for k in remove:
            slot(k)[0].add(k[1])
        for k in add:
            slot(k)[1].append(k)
        if not self.blocks:
            if not add:
                return
            self.blocks.append(_Block(None, add[0], add[0], 0, _EMPTY, _EMPTY))
        out: list[_Block] = []
        last = len(self.blocks) - 1
        for i, b in enumerate(self.blocks):
            t = touched.get(i)
            if t is None:
                out.append(b)
                continue
            vals, ids = self._rows(store, b) if b.count else (_EMPTY, _EMPTY)
            if t[0]:
                keep = ~np.isin(ids, np.fromiter(t[0], np.int64, len(t[0])))
                vals, ids = vals[keep], ids[keep]
            if t[1]:
                dt = np.int64 if self.kind != "f" else np.float64
                av = np.array([k[0] for k in t[1]], dt)
                ai = np.array([k[1] for k in t[1]], np.int64)
                vals, ids = np.concatenate([vals.astype(dt), av]), np.concatenate([ids, ai])
                order = np.lexsort((ids, vals))
                vals, ids = vals[order], ids[order]
                dup = np.zeros(len(ids), bool)
                dup[1:] = (vals[1:] == vals[:-1]) & (ids[1:] == ids[:-1])
                if dup.any():
                    vals, ids = vals[~dup], ids[~dup]
            if b.pid is not None:
                self.freed.append(b.pid)
            out.extend(self._chunk(vals, ids, append=(i == last)))
        self.blocks = out
        if self.kind == "p" and 0 < len(self) <= INLINE_MAX and len(self.blocks) > 1:
            ids = self.ids(store)
            self.freed += [b.pid for b in self.blocks if b.pid is not None]
            self.blocks = [_Block(None, (int(ids[0]),) * 2, (int(ids[-1]),) * 2, len(ids),
                                  ids, ids)]

    def _chunk(self, vals: np.ndarray, ids: np.ndarray, append: bool) -> list[_Block]:
        n = len(ids)
        if n == 0:
            return []
        if n <= BLOCK_MAX:
            cuts = [0, n]
        elif append:  # ids grow at the end: fill blocks from the start
            cuts = list(range(0, n, BLOCK_MAX)) + [n]
        else:
            parts = -(-n // (3 * BLOCK_MAX // 4))
            cuts = [n * j // parts for j in range(parts + 1)]
        out = []
        for s, e in itertools.pairwise(cuts):
            v, d = vals[s:e], ids[s:e]
            if self.kind == "p":
                v = d
            mk = (v[0].item(), int(d[0]))
            xk = (v[-1].item(), int(d[-1]))
            out.append(_Block(None, mk, xk, e - s, v, d))
        return out

    def write_pages(self, store: Any) -> None:
        """Write the dirty blocks as new pages and free the pages they replace.

        Complexity: O(rows of the dirty blocks).
        """
        if self._inline():
            b = self.blocks[0]
            b.dirty = False
        else:
            dirty = [b for b in self.blocks if b.dirty]
            pids = store.alloc(len(dirty)) if dirty else []
            for b, pid in zip(dirty, pids):
                if self.kind == "p":
                    data = encode_postings(b.ids, np.ones(b.count, np.int64))
                else:
                    data = encode_arrays([b.vals, b.ids])  # type: ignore[list-item]
                store.put(pid, data)
                b.pid, b.dirty, b.vals, b.ids = pid, False, None, None
        if self.freed:
            store.free(self.freed)
            self.freed = []

    def page_ids(self) -> list[int]:
        """The pages of the list. Complexity: O(blocks)."""
        return [b.pid for b in self.blocks if b.pid is not None]

    def _check(self, store: Any) -> None:
        """Assert the invariants (module docstring). Complexity: O(rows)."""
        prev: tuple | None = None
        for b in self.blocks:
            vals, ids = self._rows(store, b)
            assert len(ids) == b.count > 0, (len(ids), b.count)
            rows = list(zip(vals.tolist(), ids.tolist()))
            assert rows == sorted(rows) and len(set(rows)) == len(rows), "unsorted block"
            assert tuple(rows[0]) == tuple(b.mink) and tuple(rows[-1]) == tuple(b.maxk), \
                (rows[0], b.mink, rows[-1], b.maxk)
            assert prev is None or prev < tuple(rows[0]), "blocks overlap"
            prev = tuple(rows[-1])


# --- the metadata index ---------------------------------------------------------------------


def _int_bounds(r: Range) -> tuple[int | None, int | None] | None:
    """The range as inclusive int64 bounds (None when no int can match)."""
    lo = hi = None
    if r.lo is not None:
        if isinstance(r.lo, int):
            lo = r.lo if r.lo_incl else r.lo + 1
        else:
            lo = math.ceil(r.lo) if r.lo_incl else math.floor(r.lo) + 1
        if lo > _INT64_MAX:
            return None
        lo = max(lo, _INT64_MIN)
    if r.hi is not None:
        if isinstance(r.hi, int):
            hi = r.hi if r.hi_incl else r.hi - 1
        else:
            hi = math.floor(r.hi) if r.hi_incl else math.ceil(r.hi) - 1
        if hi < _INT64_MIN:
            return None
        hi = min(hi, _INT64_MAX)
    if lo is not None and hi is not None and lo > hi:
        return None
    return lo, hi


def _float_bound(b: float, incl: bool, upper: bool) -> tuple[float, bool]:
    """A bound in the float64 domain, exact: ``x >= b`` over floats is ``x >= f`` for the
    smallest float ``f >= b`` (mirrored for upper bounds)."""
    if isinstance(b, float):
        return b, incl
    f = float(b)
    if f == b:
        return f, incl
    if not upper:
        if f < b:
            f = math.nextafter(f, math.inf)
        return f, True  # b is no float: x > b and x >= b are both x >= f
    if f > b:
        f = math.nextafter(f, -math.inf)
    return f, True


def doc_rows(meta: Mapping) -> tuple[list[str], list[tuple[str, bytes]], list[tuple[str, int]],
                                     list[tuple[str, float]]]:
    """What one document contributes: its fields, its (field, value key) pairs, its int and
    its float (field, value) rows. Complexity: O(size of the metadata's top level)."""
    fields, eq, ints, floats = [], [], [], []
    for f, v in meta.items():
        fields.append(f)
        seen: set[bytes] = set()
        for x in _elements(v):
            k = value_key(x)
            if k is None or k in seen:
                continue
            seen.add(k)
            eq.append((f, k))
            if isinstance(x, bool):
                continue
            if isinstance(x, int):
                ints.append((f, x))
            elif isinstance(x, float):
                floats.append((f, x))
    return fields, eq, ints, floats


class _Field:
    __slots__ = ("exists", "floats", "ints")

    def __init__(self, exists: BlockList, ints: BlockList, floats: BlockList) -> None:
        self.exists, self.ints, self.floats = exists, ints, floats


class MetadataIndex:
    """The metadata indexes of one database (see the module docstring).

    Not thread-safe for writes; reads may run in parallel (a lock guards the lazy build).
    Memory: the field table and the directory records read so far, plus dirty blocks.
    """

    def __init__(self, store: Any, built: bool = True) -> None:
        self.store = store
        self.built = built
        self.fields: dict[str, int] = {}
        self.all = BlockList("p")
        self._fields: dict[int, _Field] = {}
        self._eq: dict[tuple[int, bytes], BlockList] = {}
        self._dirty_fields: set[int] = set()
        self._dirty_eq: set[tuple[int, bytes]] = set()
        self._dirty_state = built  # a new, empty index still has its state to write
        self._lock = threading.Lock()
        # updates not applied yet, composed into one net change (see update)
        self._pend_rm: dict[int, Mapping] = {}
        self._pend_add: dict[int, Mapping] = {}
        # evaluated filters: (filter, universe) -> AllowSet, emptied by every change
        self._allowed: dict[tuple[Filter, int], AllowSet] = {}
        self._allowed_bytes = 0
        self._allowed_lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def open(cls, store: Any) -> MetadataIndex:
        """The index of the store bound to a transaction; unbuilt when the database has no
        ``mi/state`` record (written before metadata indexes existed, or empty).

        Complexity: O(fields + blocks of ``all``).

        :raises CorruptionError: on a malformed state record.
        """
        raw = store.get_meta("mi/state")
        if raw is None:
            return cls(store, built=False)
        rec = _unpack(raw, "mi/state")
        if not isinstance(rec, dict) or rec.get("v") != MI_VERSION \
                or not isinstance(rec.get("fields"), dict):
            raise CorruptionError("idxmeta/mi/state: malformed or of another version")
        ix = cls(store)
        for name, fid in rec["fields"].items():
            if not isinstance(name, str) or not isinstance(fid, int) or fid < 0:
                raise CorruptionError("idxmeta/mi/state: malformed field table")
            ix.fields[name] = fid
        ix.all = BlockList.from_record("p", rec.get("all"), "mi/state")
        ix._dirty_state = False
        return ix

    def ensure(self, docs: Iterable[tuple[int, Mapping]]) -> None:
        """Build the index from ``docs`` (``(internal id, metadata)`` of every live
        document) when it is unbuilt; a no-op otherwise. Everything built is dirty, so the
        next :meth:`flush` (a writable handle's next batch) persists it.

        Complexity: O(total metadata) once.
        """
        if self.built:
            return
        with self._lock:
            if self.built:
                return
            self._forget_allowed()
            self._apply({}, dict(docs))
            self._dirty_state = True
            self.built = True

    def _field(self, name: str, create: bool = False) -> _Field | None:
        fid = self.fields.get(name)
        if fid is None:
            if not create:
                return None
            fid = self.fields[name] = max(self.fields.values(), default=-1) + 1
            self._dirty_state = True
            fl = self._fields[fid] = _Field(BlockList("p"), BlockList("i"), BlockList("f"))
            return fl
        fl = self._fields.get(fid)
        if fl is None:
            raw = self.store.get_meta(f"mi/f/{fid}")
            what = f"mi/f/{fid}"
            rec = _unpack(raw, what) if raw is not None else {}
            if not isinstance(rec, dict):
                raise CorruptionError(f"idxmeta/{what}: malformed record")
            fl = _Field(BlockList.from_record("p", rec.get("x"), what),
                        BlockList.from_record("i", rec.get("i"), what),
                        BlockList.from_record("f", rec.get("f"), what))
            self._fields[fid] = fl
        return fl

    @staticmethod
    def _eq_name(fid: int, vkey: bytes) -> str:
        h = vkey.hex() if len(vkey) <= 100 else "h" + hashlib.sha256(vkey).hexdigest()
        return f"mi/e/{fid}/{h}"

    def _eq_list(self, name: str, vkey: bytes, create: bool = False) -> BlockList | None:
        fid = self.fields.get(name)
        if fid is None:
            return BlockList("p") if create else None
        got = self._eq.get((fid, vkey))
        if got is None:
            rname = self._eq_name(fid, vkey)
            raw = self.store.get_meta(rname)
            if raw is None:
                got = BlockList("p")
            else:
                rec = _unpack(raw, rname)
                if not isinstance(rec, dict) or rec.get("k") != vkey:
                    raise CorruptionError(f"idxmeta/{rname}: malformed or of another value")
                got = BlockList.from_record("p", rec.get("l"), rname)
            self._eq[(fid, vkey)] = got
        return got

    # -- writes ----------------------------------------------------------------------------

    def update(self, removed: Mapping[int, Mapping], added: Mapping[int, Mapping]) -> None:
        """Take the documents of ``removed`` (internal id -> the metadata they had) out and
        put those of ``added`` in (an id in both: its metadata changed).

        Updates are composed into one net change and applied when the index is next read
        or flushed, so a write batch of many documents sorts each touched block once
        (one block per document would cost O(block) each).

        Complexity: O(len(removed) + len(added)); the deferred work is that of
        :meth:`_apply`.
        """
        self._forget_allowed()
        rm, ad = self._pend_rm, self._pend_add
        for iid, meta in removed.items():
            if iid in ad:
                del ad[iid]  # added (or changed) since the last apply: only that is undone
            else:
                rm[iid] = meta
        ad.update(added)

    def _settle(self) -> None:
        """Apply the pending updates. Complexity: that of :meth:`_apply`."""
        if self._pend_rm or self._pend_add:
            rm, ad = self._pend_rm, self._pend_add
            self._pend_rm, self._pend_add = {}, {}
            self._apply(rm, ad)

    def _apply(self, removed: Mapping[int, Mapping], added: Mapping[int, Mapping]) -> None:
        """:meth:`update` now: only touched blocks are decoded; :meth:`flush` writes them.

        Complexity: O(total metadata + rows of the touched blocks).
        """
        if not removed and not added:
            return
        rm: dict[tuple, list] = {}
        ad: dict[tuple, list] = {}
        for src, out in ((removed, rm), (added, ad)):
            for iid, meta in src.items():
                out.setdefault(("all",), []).append((iid, iid))
                fields, eq, ints, floats = doc_rows(meta)
                for f in fields:
                    out.setdefault(("x", f), []).append((iid, iid))
                for f, k in eq:
                    out.setdefault(("e", f, k), []).append((iid, iid))
                for f, x in ints:
                    out.setdefault(("i", f), []).append((x, iid))
                for f, x in floats:
                    out.setdefault(("f", f), []).append((x, iid))
        for key in set(rm) | set(ad):
            r, a = rm.get(key, []), ad.get(key, [])
            if key[0] == "all":
                self.all.update(self.store, r, a)
                self._dirty_state = True
                continue
            fl = self._field(key[1], create=bool(a))
            if fl is None:
                continue  # removing from a field the index never had: nothing to do
            fid = self.fields[key[1]]
            if key[0] == "e":
                bl = self._eq_list(key[1], key[2], create=True)
                self._eq[(fid, key[2])] = bl  # type: ignore[assignment]
                bl.update(self.store, r, a)  # type: ignore[union-attr]
                self._dirty_eq.add((fid, key[2]))
            else:
                {"x": fl.exists, "i": fl.ints, "f": fl.floats}[key[0]].update(self.store, r, a)
                self._dirty_fields.add(fid)

    def flush(self) -> None:
        """Write the dirty blocks and directory records through the store (inside the write
        transaction it is bound to).

        Complexity: O(rows of the dirty blocks + the dirty records).
        """
        if not self.built:
            return
        self._settle()
        st = self.store
        for fid, vkey in sorted(self._dirty_eq):
            bl = self._eq[(fid, vkey)]
            bl.write_pages(st)
            name = self._eq_name(fid, vkey)
            if bl.blocks:
                st.put_meta(name, msgpack.packb({"k": vkey, "l": bl.to_record()},
                                                use_bin_type=True))
            else:
                st.delete_meta(name)
        for fid in sorted(self._dirty_fields):
            fl = self._fields[fid]
            for bl in (fl.exists, fl.ints, fl.floats):
                bl.write_pages(st)
            st.put_meta(f"mi/f/{fid}", msgpack.packb(
                {"x": fl.exists.to_record(), "i": fl.ints.to_record(),
                 "f": fl.floats.to_record()}, use_bin_type=True))
        if self._dirty_state or self._dirty_fields or self._dirty_eq:
            self.all.write_pages(st)
            st.put_meta("mi/state", msgpack.packb(
                {"v": MI_VERSION, "fields": self.fields, "all": self.all.to_record()},
                use_bin_type=True))
        self._dirty_eq.clear()
        self._dirty_fields.clear()
        self._dirty_state = False

    # -- reads -----------------------------------------------------------------------------

    def live_ids(self) -> np.ndarray:
        """Every live document's id, sorted. Complexity: O(n)."""
        self._settle()
        return self.all.ids(self.store)

    def evaluate(self, f: Filter) -> np.ndarray:
        """The sorted ids of the live documents that pass ``f`` (a parsed filter), the
        semantics of :meth:`Filter.matches` exactly.

        Complexity: O(rows of the lists the filter reads).
        """
        self._settle()
        if isinstance(f, Eq):
            bl = self._eq_list(f.field, value_key(f.value))  # type: ignore[arg-type]
            return bl.ids(self.store) if bl is not None else _EMPTY
        if isinstance(f, In):
            parts = [self.evaluate(Eq(f.field, v)) for v in f.values]
            return sorted_unique(np.concatenate(parts)) if parts else _EMPTY
        if isinstance(f, Range):
            return self._range(f)
        if isinstance(f, Exists):
            fl = self._field(f.field)
            has = fl.exists.ids(self.store) if fl is not None else _EMPTY
            return has if f.present else np.setdiff1d(self.live_ids(), has, assume_unique=True)
        if isinstance(f, Not):
            return np.setdiff1d(self.live_ids(), self.evaluate(f.child), assume_unique=True)
        if isinstance(f, And):
            # the most selective children first: cheap ones (no complement) before $not
            kids = sorted(f.children, key=lambda c: isinstance(c, Not))
            out = self.evaluate(kids[0])
            for c in kids[1:]:
                if not len(out):
                    break
                out = np.intersect1d(out, self.evaluate(c), assume_unique=True)
            return out
        if isinstance(f, Or):
            return sorted_unique(np.concatenate([self.evaluate(c) for c in f.children]))
        raise TypeError(f"not a filter node: {type(f).__name__}")

    def _range(self, r: Range) -> np.ndarray:
        fl = self._field(r.field)
        if fl is None:
            return _EMPTY
        parts = []
        ib = _int_bounds(r)
        if ib is not None and fl.ints.blocks:
            parts.append(fl.ints.range_ids(self.store, ib[0], True, ib[1], True))
        if fl.floats.blocks:
            lo = _float_bound(r.lo, r.lo_incl, False) if r.lo is not None else (None, True)
            hi = _float_bound(r.hi, r.hi_incl, True) if r.hi is not None else (None, True)
            parts.append(fl.floats.range_ids(self.store, lo[0], lo[1], hi[0], hi[1]))
        return sorted_unique(np.concatenate(parts)) if parts else _EMPTY

    def allow(self, f: Filter, universe: int) -> AllowSet:
        """:meth:`evaluate` as an :class:`AllowSet` over ids ``[0, universe)``. The sets of
        recent filters are kept (up to :data:`ALLOW_CACHE_BYTES`) until the index next
        changes: queries under one filter (a tenant, a user, a date range) evaluate it once.

        Complexity: O(rows read + universe / 8); O(1) for a kept set.
        """
        key = (f, universe)
        got = self._allowed.get(key)
        if got is not None:
            return got
        got = AllowSet.from_ids(self.evaluate(f), universe)
        size = got.ids.nbytes + got.bits.nbytes
        if size <= ALLOW_CACHE_BYTES // 4:
            with self._allowed_lock:
                while self._allowed and self._allowed_bytes + size > ALLOW_CACHE_BYTES:
                    old = self._allowed.pop(next(iter(self._allowed)))  # the oldest
                    self._allowed_bytes -= old.ids.nbytes + old.bits.nbytes
                if key not in self._allowed:
                    self._allowed[key] = got
                    self._allowed_bytes += size
        return got

    def _forget_allowed(self) -> None:
        """Drop the kept allowed sets (the index is about to change)."""
        with self._allowed_lock:
            self._allowed = {}
            self._allowed_bytes = 0

    def __len__(self) -> int:
        self._settle()
        return len(self.all)

    def page_ids(self) -> list[int]:
        """Every page the index holds as stored (call after :meth:`flush`; reads every
        directory record). Complexity: O(records)."""
        out = self.all.page_ids()
        for fid in self.fields.values():
            self._field_by_id(fid)
        for fl in self._fields.values():
            out += fl.exists.page_ids() + fl.ints.page_ids() + fl.floats.page_ids()
        for name in self.store.meta_names("mi/e/"):
            rec = _unpack(self.store.get_meta(name), name)
            out += BlockList.from_record("p", rec.get("l") if isinstance(rec, dict) else None,
                                         name).page_ids()
        return out

    def _field_by_id(self, fid: int) -> None:
        for name, f in self.fields.items():
            if f == fid:
                self._field(name)
                return

    def _check(self) -> None:
        """Assert the invariants of the lists read so far (the module docstring).

        Complexity: O(rows of those lists).
        """
        self._settle()
        self.all._check(self.store)
        for fl in self._fields.values():
            for bl in (fl.exists, fl.ints, fl.floats):
                bl._check(self.store)
        for bl in self._eq.values():
            bl._check(self.store)
