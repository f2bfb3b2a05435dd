"""How a database is configured: the runtime :class:`Options` and the stored :class:`Config`.

Two kinds of setting, kept apart:

* **Options** (:class:`Options`) belong to one open handle: cache size, durability, read-only,
  map size, lock timeout, the query-time ``ef`` of the graph, the size of the fresh vector
  segment. They are never written to disk.
* **Configuration** (:class:`Config`) belongs to the database: dimension, metric, analyzer,
  graph parameters. It is written with the first batch (``meta/config``) and never changes
  afterwards, except that a database created without a dimension gets one with its first
  embeddings. An argument of :func:`llmdsdb.open` that names a configuration value is an
  *explicit* setting (:class:`Explicit`); it must agree with the stored value, wherever and
  whenever this handle meets it (at open, or later when another handle stored it first):
  a disagreement is :class:`~llmdsdb.errors.ConfigConflictError`.

Invariant: a :class:`Config` is immutable; ``stored`` says whether ``meta/config`` holds it
(a handle on a new database runs with defaults until its first batch stores them). Every
value of a stored configuration agrees with every explicit setting of the handle that holds it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from llmdsdb._validate import (
    DURABILITIES,
    MAX_DIM,
    METRICS,
    Durability,
    Metric,
    as_bool,
    check_choice,
    check_int,
)
from llmdsdb.errors import (
    ConfigConflictError,
    CorruptionError,
    InvalidArgumentError,
    InvalidTypeError,
    LlmdsdbError,
)

__all__ = ["DEFAULT_CACHE_BYTES", "HNSW_SEED", "RECORD_VERSION", "Config", "Explicit", "Options",
           "parse_open_args"]

#: Format of the document records and the ``config`` meta record (see storage/FORMAT.md).
RECORD_VERSION = 1
#: Fixed seed of the graph's level generator, so that two databases built from the same
#: batches hold the same graph.
HNSW_SEED = 0x11D5DB
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
META_CONFIG = b"config"
#: The stored settings, in the order :func:`llmdsdb.open` names them.
_STORED = ("dim", "metric", "analyzer", "hnsw_M", "hnsw_ef_construction", "embedder")


@dataclass(frozen=True)
class Options:
    """How a database was opened (the runtime options; the stored configuration is in
    :attr:`Database.config`).

    ``durability`` maps to the flags of ``lmdb.open`` (see :mod:`llmdsdb.storage`):

    * ``"sync"`` (default): ``sync=True, metasync=True`` - data and meta pages are fsynced
      at every commit; a batch that returned survives power loss;
    * ``"metasync"``: ``sync=True, metasync=False`` - the meta page is not fsynced; after
      power loss the last committed batch may roll back, the file stays consistent;
    * ``"nosync"``: ``sync=False, metasync=False`` - nothing is fsynced; after power loss
      or an OS crash recent batches may be lost and, unless the filesystem keeps write
      order, the file may be damaged (only for data you can rebuild).

    ``cache_bytes`` bounds the one page cache (TinyLFU over an LRU), which holds the graph's
    decoded pages and the inverted index's postings lists (as their verified compressed
    blocks, decoded by the C kernels at query time); ``stats()["cache"]`` reports it.

    In every mode a process crash (``kill -9``) loses no committed batch; ``writemap`` is
    never used. Frozen, so safe to share between threads.
    """

    cache_bytes: int = DEFAULT_CACHE_BYTES
    durability: Durability = "sync"
    readonly: bool = False
    map_size_bytes: int | None = None
    lock_timeout_s: float = 30.0
    hnsw_ef_search: int | None = None
    fresh_max_vectors: int | None = None
    #: compact after a write once the compaction debt passes this fraction (None: never;
    #: see :mod:`llmdsdb.compaction`)
    auto_compact_debt: float | None = 0.5
    #: the embedder object given to :func:`llmdsdb.open` (its identity is configuration)
    embedder: Any = None


@dataclass(frozen=True)
class Explicit:
    """The configuration values a caller named in :func:`llmdsdb.open` (None: not named).

    Frozen, so safe to share between threads.
    """

    dim: int | None = None
    metric: Metric | None = None
    analyzer: dict | None = None
    hnsw_M: int | None = None
    hnsw_ef_construction: int | None = None
    #: :meth:`llmdsdb.embedders.EmbedderIdentity.as_dict` of the embedder given
    embedder: dict | None = None

    def items(self) -> list[tuple[str, Any]]:
        """The named values as ``(name, value)`` pairs. Complexity: O(1)."""
        return [(k, getattr(self, k)) for k in _STORED if getattr(self, k) is not None]


@dataclass(frozen=True)
class Config:
    """The configuration of one database (see the module docstring).

    Memory: a few small fields and the analyzer's dict. Frozen, so safe to share.
    """

    dim: int | None
    metric: Metric
    analyzer: dict
    hnsw_M: int
    hnsw_ef_construction: int
    hnsw_seed: int = HNSW_SEED
    stored: bool = False
    #: the identity of the embedder whose vectors the database holds (None: vectors, if
    #: any, are the caller's own)
    embedder: dict | None = None

    @classmethod
    def defaults(cls, explicit: Explicit) -> Config:
        """The configuration a new database gets: the explicit values, defaults for the
        rest (cosine, the default analyzer, M=16, ef_construction=200).

        Complexity: O(1).
        """
        from llmdsdb.analysis import Analyzer

        return cls(dim=explicit.dim, metric=explicit.metric or "cosine",
                   analyzer=explicit.analyzer if explicit.analyzer is not None
                   else Analyzer().to_dict(),
                   hnsw_M=explicit.hnsw_M or 16,
                   hnsw_ef_construction=explicit.hnsw_ef_construction or 200,
                   embedder=explicit.embedder)

    @classmethod
    def read(cls, txn: Any) -> Config | None:
        """The stored configuration in the snapshot of ``txn``, or None when there is none.

        Complexity: O(1).

        :raises CorruptionError: when the record is malformed or of another version.
        """
        raw = txn.get("meta", META_CONFIG)
        if raw is None:
            return None
        try:
            rec = msgpack.unpackb(bytes(raw), raw=False, strict_map_key=True)
        except Exception as exc:  # msgpack raises several unrelated types
            raise CorruptionError(f"meta/config: malformed record ({exc})") from exc
        if not isinstance(rec, dict) or rec.get("v") != RECORD_VERSION:
            raise CorruptionError("meta/config: unknown or malformed configuration record")
        try:
            return cls(dim=rec["dim"], metric=rec["metric"], analyzer=rec["analyzer"],
                       hnsw_M=rec["hnsw_M"], hnsw_ef_construction=rec["hnsw_ef_construction"],
                       hnsw_seed=rec.get("hnsw_seed", HNSW_SEED), stored=True,
                       embedder=rec.get("embedder"))
        except KeyError as exc:
            raise CorruptionError(f"meta/config: missing field {exc}") from None

    def write(self, txn: Any, dim: int | None) -> Config:
        """Store this configuration with dimension ``dim`` in the write transaction ``txn``;
        returns the stored configuration.

        Complexity: O(1).
        """
        rec = {"v": RECORD_VERSION, "dim": dim, "metric": self.metric, "analyzer": self.analyzer,
               "hnsw_M": self.hnsw_M, "hnsw_ef_construction": self.hnsw_ef_construction,
               "hnsw_seed": self.hnsw_seed}
        if self.embedder is not None:  # absent, not None, so v1 records stay byte-identical
            rec["embedder"] = self.embedder
        txn.put("meta", META_CONFIG, msgpack.packb(rec, use_bin_type=True))
        return dataclasses.replace(self, dim=dim, stored=True)

    def adopt(self, stored: Config | None, explicit: Explicit) -> Config:
        """The configuration a handle runs with once it has read ``stored`` (None: the
        database has none yet, keep this one). A dimension this handle was given but did not
        store yet is kept while the stored one is None.

        Complexity: O(1).

        :raises ConfigConflictError: when an explicit setting disagrees with ``stored``.
        """
        if stored is None:
            return self
        # the embedder first: its conflict explains a dimension conflict too
        for name, value in sorted(explicit.items(), key=lambda kv: kv[0] != "embedder"):
            have = getattr(stored, name)
            if name == "dim" and have is None:
                continue  # the dimension is not fixed yet: the argument will fix it
            if name == "embedder" and have is None and stored.dim is None:
                continue  # no vectors yet: this embedder will make them
            if name == "embedder" and have != value:
                raise ConfigConflictError(_embedder_conflict(have, value))
            if have != value:
                raise ConfigConflictError(
                    f"{name}={value!r} conflicts with the stored configuration "
                    f"({name}={have!r}); the stored configuration wins: omit the argument")
        if stored.dim is None and stored.embedder is None and self.embedder is not None:
            # not in meta/config yet: the next batch writes it
            return dataclasses.replace(stored, dim=self.dim, embedder=self.embedder,
                                       stored=False)
        if stored.dim is None and self.dim is not None:
            return dataclasses.replace(stored, dim=self.dim)
        return stored

    def public(self) -> dict:
        """The configuration as :attr:`Database.config` shows it. Complexity: O(1)."""
        return {"dim": self.dim, "metric": self.metric, "analyzer": self.analyzer,
                "hnsw_M": self.hnsw_M, "hnsw_ef_construction": self.hnsw_ef_construction,
                "hnsw_seed": self.hnsw_seed, "embedder": self.embedder}


def _embedder_conflict(have: dict | None, value: dict) -> str:
    if have is None:
        return (f"embedder {value['name']!r} given, but this database's vectors were added "
                "by the caller, not by an embedder: their model is unknown, so vectors of "
                "the two cannot be mixed. Pass query vectors yourself, or re-embed the "
                "database with this embedder")
    return (f"embedder {value['name']!r} (model {value['model']}, dim {value['dim']}) "
            f"conflicts with the database's embedder {have['name']!r} (model "
            f"{have['model']}, dim {have['dim']}): vectors of different models cannot be "
            "mixed. Open it without embedder= (its own embedder is used), or re-embed it")


def resolve_embedder(embedder: object, dim: int | None) -> tuple[Any, dict | None]:
    """The embedder object and identity for :func:`llmdsdb.open`'s ``embedder=`` (a
    registered name or an :class:`~llmdsdb.embedders.Embedder`).

    :raises InvalidArgumentError: for an unknown name, or a ``dim`` the embedder does not
        make.
    """
    if embedder is None:
        return None, None
    from llmdsdb.embedders import get_embedder

    obj = get_embedder(embedder)  # type: ignore[arg-type]
    ident = obj.identity().as_dict()
    if dim is not None and dim != ident["dim"]:
        raise InvalidArgumentError(f"dim={dim} but embedder {ident['name']!r} makes "
                                   f"{ident['dim']}-dimensional vectors; omit dim")
    return obj, ident


def parse_open_args(path: object, *, dim: object, metric: object, analyzer: object,
                    hnsw_M: object, hnsw_ef_construction: object, hnsw_ef_search: object,
                    cache_bytes: object, durability: object, readonly: object,
                    map_size_bytes: object, lock_timeout_s: object,
                    fresh_max_vectors: object, embedder: object = None,
                    auto_compact_debt: object = 0.5) -> tuple[str, Options, Explicit]:
    """Validate the arguments of :func:`llmdsdb.open`: the path, the runtime options and the
    explicit configuration.

    Complexity: O(1).

    :raises InvalidTypeError, InvalidArgumentError: for a bad argument.
    """
    dim = None if dim is None else check_int("dim", dim, 1, MAX_DIM)
    emb_obj, emb_id = resolve_embedder(embedder, dim)
    explicit = Explicit(
        dim=emb_id["dim"] if emb_id is not None else dim,
        metric=None if metric is None else check_choice("metric", metric, METRICS),  # type: ignore[arg-type]
        analyzer=None if analyzer is None else _analyzer_dict(analyzer),
        hnsw_M=None if hnsw_M is None else check_int("hnsw_M", hnsw_M, 2, 256),
        hnsw_ef_construction=None if hnsw_ef_construction is None
        else check_int("hnsw_ef_construction", hnsw_ef_construction, 1, 4096),
        embedder=emb_id,
    )
    if isinstance(lock_timeout_s, bool) or not isinstance(lock_timeout_s, (int, float)) \
            or not 0 <= lock_timeout_s < math.inf:
        raise InvalidArgumentError(f"lock_timeout_s must be a finite number >= 0, "
                                   f"got {lock_timeout_s!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    options = Options(
        cache_bytes=check_int("cache_bytes", cache_bytes, 1, 2**48),
        durability=check_choice("durability", durability, DURABILITIES),  # type: ignore[arg-type]
        readonly=as_bool("readonly", readonly),
        map_size_bytes=None if map_size_bytes is None
        else check_int("map_size_bytes", map_size_bytes, 1 << 16, 2**50),
        lock_timeout_s=float(lock_timeout_s),
        hnsw_ef_search=None if hnsw_ef_search is None
        else check_int("hnsw_ef_search", hnsw_ef_search, 1, 4096),
        fresh_max_vectors=None if fresh_max_vectors is None
        else check_int("fresh_max_vectors", fresh_max_vectors, 0, 2**31),
        embedder=emb_obj,
        auto_compact_debt=_fraction("auto_compact_debt", auto_compact_debt),
    )
    return os.fspath(path), options, explicit


def _fraction(name: str, v: object) -> float | None:
    """None, or a number in (0, 1]."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidTypeError(f"{name} must be a number or None, not {type(v).__name__}")
    if not 0 < v <= 1:
        raise InvalidArgumentError(f"{name} must lie in (0, 1] (or be None), got {v!r}")
    return float(v)


def _analyzer_dict(analyzer: Any) -> dict:
    if isinstance(analyzer, Mapping):
        from llmdsdb.analysis import Analyzer

        try:
            return Analyzer.from_dict(dict(analyzer)).to_dict()
        except (LlmdsdbError, TypeError, ValueError, KeyError) as exc:
            # an argument, not a stored record: not a CorruptionError/FormatVersionError
            raise InvalidArgumentError(f"analyzer: {exc} (pass an llmdsdb.analysis.Analyzer "
                                       "or its to_dict())") from exc
    to_dict: Callable[[], dict] | None = getattr(analyzer, "to_dict", None)
    if to_dict is None:
        raise InvalidTypeError("analyzer must be an llmdsdb.analysis.Analyzer or its to_dict()")
    return to_dict()
