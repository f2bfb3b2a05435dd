"""The database: ``llmdsdb.open(path) -> Database``, a facade over modules with one job each.

One directory holds one LMDB environment (see ``storage/FORMAT.md``). :class:`Database`
owns the handle's lifecycle, its locks and the order of things; the work is done by

* :mod:`llmdsdb.options` - runtime options and the stored configuration;
* :mod:`llmdsdb.records` / :mod:`llmdsdb.documents` - document records, their keys, lookups;
* :mod:`llmdsdb.write_batch` - recorded write calls and applying them in one transaction;
* :mod:`llmdsdb.index_state` - the in-memory indexes as of one generation;
* :mod:`llmdsdb.vector_segment` - the graph plus the exactly searched fresh vectors;
* :mod:`llmdsdb.retrieval_pipeline` - the one hybrid query path (:class:`HybridSearcher`);
* :mod:`llmdsdb.db_check` - :meth:`Database.check`;
* :mod:`llmdsdb._validate` - the validation rules every layer shares.

Every write is a *batch*: a call to :meth:`Database.add`, :meth:`~Database.upsert` or
:meth:`~Database.delete` (or every call inside ``with db.batch():``) is validated when it is
made - bad input raises at the call and nothing is written - and recorded; the recorded
operations then run inside one LMDB write transaction (``Environment.run_write``), which
re-runs the whole batch after growing a full map. Documents, postings pages, graph pages,
allocator state and the generation commit together or not at all. On any abort the
in-memory indexes are discarded and reloaded from the last committed state.

Readers see whole batches only (LMDB snapshots). A search takes the read side of the
handle's readers-writer lock and its own read transaction, so threads sharing a handle
search in parallel; a write takes the write side only while its transaction runs. When the
stored generation differs from the one the in-memory indexes reflect (another process
committed), the indexes are reloaded under the write side. Document reads (get, ``in``,
count, iter_documents) use only the ``docs`` and ``ids`` databases and take no lock.

Invariant (checked by :meth:`Database.check`): every ``ids`` entry points at a ``docs``
record whose ``id`` maps back to it, and vice versa; the inverted index holds exactly the
live documents, the vector segment exactly the live documents that have an embedding; the
generation counts the committed write batches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self

import numpy as np

from llmdsdb._validate import Durability, FusionMethod, Metric, Normalization, as_bool
from llmdsdb.errors import (
    ClosedError,
    DocumentNotFoundError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    LlmdsdbError,
    MissingSideError,
    MissingSideWarning,
    QueryError,
    ReadOnlyError,
)
from llmdsdb.fusion import Explain, FusionSpec
from llmdsdb.options import DEFAULT_CACHE_BYTES, Config, Explicit, Options, parse_open_args
from llmdsdb.records import Document, SearchResult

__all__ = ["Database", "Document", "Explain", "Options", "SearchResult", "open"]

#: Largest query text (UTF-8 bytes) and top_k + offset. A query's cost grows with it: each
#: side returns max(top_k + offset, 100) candidates (BM25: a heap of that size; vectors: an
#: exact scan or a graph walk with ef at least that), fused in O(c log c), and each hit
#: returned costs one document read. A hybrid query on SciFact (5,183 documents, 384-d) took
#: about 2 ms at top_k=10, 15 ms at 1,000 and 60 ms at 5,000 (2-core VM, one process).
MAX_QUERY_BYTES = 16 * 1024
MAX_TOP_K = 10_000
#: What ``search(include=...)`` may name.
INCLUDE_FIELDS = ("embedding", "metadata", "text")
#: Documents read per read transaction by iter_documents.
ITER_CHUNK = 512


class Database:
    """A retrieval database in one directory: documents, BM25 postings and an HNSW graph in
    one LMDB environment. Open it with :func:`llmdsdb.open`.

    Thread safety: threads may share a handle. Searches run in parallel, each in its own
    read transaction; write calls are serialised (a ``with db.batch():`` block holds the
    write lock until it ends) and exclude searches only while their transaction runs.
    Processes each open their own handle (any number of readers, one writer at a time).

    Memory: the in-memory index directories (the term dictionary, the graph's arrays, the
    fresh vectors), plus the decoded-page cache bounded by ``cache_bytes``.
    """

    def __init__(self, path: str, options: Options, explicit: Explicit) -> None:
        from llmdsdb import write_batch
        from llmdsdb.index_state import IndexHolder
        from llmdsdb.storage import Environment

        self._path, self._options, self._explicit = path, options, explicit
        self._embedder_obj = options.embedder
        self._wb = write_batch
        self._write_lock = threading.RLock()  # one write call (or batch block) at a time
        self._pid = os.getpid()
        self._closed = True
        self._env = Environment.open(
            path, durability=options.durability, readonly=options.readonly,
            map_size_bytes=options.map_size_bytes, lock_timeout_s=options.lock_timeout_s,
            create=not options.readonly)
        try:
            self._batch: Any = None
            with self._env.read() as txn:
                config = Config.defaults(explicit).adopt(Config.read(txn), explicit)
            self._state = IndexHolder(self._env, config, explicit, options)
            self._closed = False
            with self._state.rw.write(), self._env.read() as txn:
                self._state.refresh(txn)
        except BaseException:
            self._env.close()
            raise

    # --- properties and lifecycle -----------------------------------------------------------

    @property
    def config(self) -> dict:
        """The configuration: dim, metric, analyzer, hnsw_M, hnsw_ef_construction. Complexity: O(1)."""
        return self._state.ix.config.public()

    @property
    def options(self) -> Options:
        """The runtime options the database was opened with. Complexity: O(1)."""
        return self._options

    @property
    def path(self) -> str:
        """The database directory. Complexity: O(1)."""
        return self._path

    @property
    def readonly(self) -> bool:
        """Whether the database was opened read-only. Complexity: O(1)."""
        return self._options.readonly

    @property
    def dim(self) -> int | None:
        """The embedding dimension (None until the first embeddings are added). Complexity: O(1)."""
        return self._state.ix.config.dim

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"database {self._path} is closed")
        if os.getpid() != self._pid:
            raise ClosedError(f"database {self._path} was opened in another process (before "
                              "fork); open it again in this process")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise ReadOnlyError(f"database {self._path} was opened read-only")

    def close(self) -> None:
        """Close the database (idempotent). A pending ``batch()`` is discarded.

        Complexity: O(1) (waits for running searches).
        """
        if os.getpid() != self._pid:
            # A forked child: its locks may be held by parent threads that do not exist
            # here (waiting would hang); the environment was dropped at the fork.
            self._closed = True
            return
        with self._write_lock, self._state.rw.write():
            if self._closed:
                return
            self._closed = True
            self._batch = None
            self._state.close()
            if os.getpid() == self._pid:
                self._env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("readonly" if self.readonly else "open")
        return f"<Database {self._path!r} {state}>"

    # --- the in-memory index state (index_state.IndexHolder) --------------------------------

    @contextmanager
    def _reading(self) -> Iterator[tuple[Any, Any]]:
        """A read transaction and the indexes as of its snapshot (see
        :meth:`~llmdsdb.index_state.IndexHolder.reading`)."""
        self._check_open()
        with self._state.reading() as got:
            yield got

    @contextmanager
    def _reading_docs(self) -> Iterator[Any]:
        """A read transaction for the document layer only (no index reload, no lock)."""
        self._check_open()
        with self._env.read() as txn:
            yield txn

    # --- document reads ---------------------------------------------------------------------

    def get(self, id: str) -> Document | None:
        """The document with external id ``id``, or None.

        Complexity: O(log n) (two B-tree lookups).

        :raises CorruptionError: when the document's records or keys are damaged.
        """
        from llmdsdb import documents, records

        key = records.check_id(id, "get", documents.id_key)
        with self._reading_docs() as txn:
            found = documents.lookup(txn, id, key)
        return records.document(found[1]) if found else None

    def __contains__(self, id: object) -> bool:
        """``id in db``. Complexity: O(log n)."""
        from llmdsdb import documents, records

        try:
            key = records.check_id(id, "contains", documents.id_key)
        except LlmdsdbError:
            return False
        with self._reading_docs() as txn:
            return documents.contains(txn, key)

    def count(self, filter: Mapping | None = None) -> int:
        """Number of documents, or of those that pass ``filter`` (see :meth:`search`).

        :raises FilterError: on a filter outside the grammar of :mod:`llmdsdb.filters`.

        Complexity: O(1) without a filter; with one, O(rows of the metadata index lists it
        reads) (the first filtered call on a database written before metadata indexes
        builds them: O(n) once).
        """
        if filter is None:
            with self._reading_docs() as txn:
                return txn.count("docs")
        from llmdsdb.filters import parse_filter
        from llmdsdb.index_state import ensure_metadata_index

        f = parse_filter(filter)
        with self._reading() as (txn, ix):
            ensure_metadata_index(txn, ix)
            return len(ix.meta.evaluate(f))

    def __len__(self) -> int:
        """``len(db)``: the number of documents. Complexity: O(1)."""
        return self.count()

    @property
    def generation(self) -> int:
        """Number of committed write batches. Complexity: O(1)."""
        with self._reading_docs() as txn:
            return self._env.generation(txn)

    def iter_documents(self) -> Iterator[Document]:
        """Every document, in the order of their last write (an upsert that changes a
        document moves it to the end). Reads in chunks of :data:`ITER_CHUNK` documents, one
        short read transaction each, so a long iteration never pins an old snapshot; a
        concurrent write may therefore be seen part-way.

        Complexity: O(n) overall, O(chunk) per read transaction.
        """
        from llmdsdb.documents import iter_documents

        return iter_documents(self._reading_docs, ITER_CHUNK)

    def __iter__(self) -> Iterator[Document]:
        """``for doc in db``: :meth:`iter_documents`. Complexity: O(n) overall."""
        return self.iter_documents()

    def __getitem__(self, id: str) -> Document:
        """``db[id]``: the document with external id ``id``.

        Complexity: O(log n).

        :raises DocumentNotFoundError: (a ``KeyError``) when there is none.
        """
        doc = self.get(id)
        if doc is None:
            raise DocumentNotFoundError(f"no document with id {id!r}")
        return doc

    def get_many(self, ids: Sequence[str]) -> list[Document | None]:
        """The document of each id, in order (None where there is none), read under one
        read transaction (one snapshot).

        Complexity: O(len(ids) · log n).

        :raises InvalidTypeError: when ``ids`` is a single string or not a sequence.
        """
        from llmdsdb import documents, records

        if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
            raise InvalidTypeError(f"ids must be a list of str, not {type(ids).__name__}")
        keys = [records.check_id(i, "get_many", documents.id_key) for i in ids]
        with self._reading_docs() as txn:
            found = [documents.lookup(txn, i, k) for i, k in zip(ids, keys)]
        return [records.document(f[1]) if f else None for f in found]

    def ids(self) -> Iterator[str]:
        """Every document id, in :meth:`iter_documents` order.

        Complexity: O(n) overall (each record is decoded).
        """
        return (d.id for d in self.iter_documents())

    # --- write calls ------------------------------------------------------------------------

    def _sync_config(self) -> None:
        """Adopt the configuration another handle stored since this one opened (see
        :func:`llmdsdb.index_state.adopt_stored`), so that write calls validate against the
        right metric and dimension."""
        from llmdsdb.index_state import adopt_stored

        new = adopt_stored(self._env, self._state.ix.config, self._explicit)
        if new is not None:
            self._state.adopt(new)

    def embedder(self) -> Any:
        """The embedder of this database (the one given to :func:`open`, else the one its
        stored identity names, loaded on first use), or None when it has none.

        :raises MissingDependencyError: when the stored embedder's extra is not installed.
        :raises ConfigConflictError: when the stored identity names a callable embedder
            this handle was not given.

        Complexity: O(1) once loaded (loading a neural model takes seconds).
        """
        ident = self._state.ix.config.embedder
        if ident is None:
            return None
        obj = self._embedder_obj
        if obj is None or obj.identity().as_dict() != ident:  # none yet, or re-embedded
            from llmdsdb.embedders import embedder_for

            obj = self._embedder_obj = embedder_for(ident)
        return obj

    def _embed(self, texts: object, embeddings: object, ids: object = None) -> object:
        """``embeddings``, or the texts embedded when none were given and the database has
        an embedder (bad texts are left for the row check to report). With ``ids`` (an
        upsert), a document stored with the same text keeps its stored vector - made by
        this embedder - instead of being embedded again, so a re-run ingest embeds only
        what changed.

        Complexity: O(n) document reads plus the embedding of the changed texts.
        """
        if embeddings is not None or self._state.ix.config.embedder is None:
            return embeddings
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence) \
                or not all(isinstance(t, str) for t in texts) or not texts:
            return embeddings
        texts = list(texts)
        vecs: list[Any] = [None] * len(texts)
        if isinstance(ids, Sequence) and not isinstance(ids, (str, bytes)) \
                and len(ids) == len(texts):
            try:
                docs = self.get_many(ids)
            except LlmdsdbError:
                docs = []  # bad ids: the row check reports them
            for j, d in enumerate(docs):
                if d is not None and d.embedding is not None and d.text == texts[j]:
                    vecs[j] = d.embedding
        todo = [j for j, v in enumerate(vecs) if v is None]
        if todo:
            new = self.embedder().embed_documents([texts[j] for j in todo])
            for j, v in zip(todo, new):
                vecs[j] = v
        return np.stack(vecs)

    def _kept_vectors(self, ids: object, embeddings: object) -> object:
        """``embeddings``, or - when None, on a database that holds vectors and has no
        embedder - the stored vector of each id that has one (None for the others), so an
        upsert without ``embeddings=`` keeps them. Bad ids are left for the row check.

        Complexity: O(n) document reads when it applies, else O(1).
        """
        cfg = self._state.ix.config
        if embeddings is not None or cfg.dim is None or cfg.embedder is not None \
                or isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            return embeddings
        try:
            kept = [None if d is None else d.embedding for d in map(self.get, ids)]
        except (LlmdsdbError, TypeError):
            return embeddings
        return kept if any(v is not None for v in kept) else embeddings

    def _rows(self, name: str, *args: object) -> list:
        return self._wb.validate_rows(name, *args, self._state.ix.config, self._batch)

    def validate(self, ids: Sequence[str], texts: Sequence[str],
                 embeddings: np.ndarray | Sequence[np.ndarray | None] | None = None,
                 metadata: Sequence[Mapping | None] | None = None) -> None:
        """Check a batch exactly as :meth:`add` / :meth:`upsert` would, writing nothing.

        :raises InvalidArgumentError: (or a subclass) for the first bad value, as the write
            calls raise it.
        :raises InvalidTypeError: for a value of the wrong type.

        Complexity: O(total size of the batch).
        """
        self._check_open()
        self._sync_config()
        self._rows("validate", ids, texts, embeddings, metadata)

    def add(self, ids: Sequence[str], texts: Sequence[str],
            embeddings: np.ndarray | Sequence[np.ndarray | None] | None = None,
            metadata: Sequence[Mapping | None] | None = None) -> int:
        """Add new documents; the whole call is atomic.

        :param ids: external ids (non-empty str, unique in the call and the database).
        :param texts: one str per id (may be empty).
        :param embeddings: float array of shape (n, dim), or a list of 1-D vectors / None,
            or None. The first embeddings ever added fix the dimension.
        :param metadata: one dict (or None) per id: str keys; None, bool, int64, finite
            float, str, list and dict values.
        :returns: the number of documents added (``len(ids)``).
        :raises DuplicateIdError: when an id exists or repeats in the call.
        :raises DimensionError, NonFiniteError, ZeroVectorError: on a bad embedding.
        :raises InvalidTypeError, InvalidArgumentError: on other bad input.
        :raises ReadOnlyError: when opened read-only.

        Complexity: O(total text + n·log n) plus the vector segment's work (an append; a
        merge into the graph costs O(f·log n·ef) now and then).
        """
        with self._write_lock:
            self._check_writable()
            self._sync_config()
            by = self._state.ix.config.embedder if embeddings is None else None
            rows = self._rows("add", ids, texts, self._embed(texts, embeddings), metadata)
            current = self._wb.current_hashes(self._env, self._batch, [r.key for r in rows])
            for r in rows:
                if current[r.key] is not None:
                    raise DuplicateIdError(f"add: id {r.id!r} already exists (use upsert)")
            return self._submit(self._wb.Op("add", tuple(rows), by), len(rows))

    def upsert(self, ids: Sequence[str], texts: Sequence[str],
               embeddings: np.ndarray | Sequence[np.ndarray | None] | None = None,
               metadata: Sequence[Mapping | None] | None = None) -> int:
        """Insert or replace documents; the whole call is atomic. A document whose content
        hash (text, embedding bytes, metadata) is unchanged is skipped, which is what makes
        a repeated ingest cheap and resumable.

        The vector rule: with ``embeddings=None`` (and no embedder on the database) an
        existing document keeps its stored vector - new text or metadata does not drop it
        from vector search. To replace a vector pass it in ``embeddings``; to drop one pass
        ``None`` in its place in an ``embeddings`` list. A database with an embedder embeds
        the new text instead.

        :returns: the number of documents actually written.
        :raises DuplicateIdError: when an id repeats in the call.
        :raises: as :meth:`add` for bad input.

        Complexity: O(total text + n·log n) plus the index work of changed documents.
        """
        with self._write_lock:
            self._check_writable()
            self._sync_config()
            by = self._state.ix.config.embedder if embeddings is None else None
            rows = self._rows("upsert", ids, texts,
                              self._embed(texts, self._kept_vectors(ids, embeddings), ids),
                              metadata)
            current = self._wb.current_hashes(self._env, self._batch, [r.key for r in rows])
            changed = sum(1 for r in rows if current[r.key] != r.hash)
            return self._submit(self._wb.Op("upsert", tuple(rows), by), changed)

    def delete(self, ids: Sequence[str] | None = None, *, filter: Mapping | None = None) -> int:
        """Delete documents by id (unknown ids are ignored), or every document that passes
        ``filter`` (see :meth:`search`) - one of the two.

        The filter is evaluated inside the write transaction, against the state the delete
        applies to (inside ``batch()``, after the calls recorded before it). Inside a batch
        the returned count is that of the committed state (what the filter matches there).

        :returns: the number of documents deleted.
        :raises InvalidArgumentError: when both ``ids`` and ``filter`` are given, or neither.
        :raises FilterError: on a filter outside the grammar.

        Complexity: O(n·log N) plus the postings and graph updates of the deleted documents
        (with a filter, plus its evaluation over the metadata index).
        """
        from llmdsdb import documents, records

        if (ids is None) == (filter is None):
            raise InvalidArgumentError("delete: give ids or filter= (exactly one of them)")
        if filter is not None:
            from llmdsdb.filters import parse_filter

            f = parse_filter(filter)
            with self._write_lock:
                self._check_writable()
                n = self.count(f)
                return self._submit(self._wb.Op("delete_where", (f,)), n)
        with self._write_lock:
            self._check_writable()
            keys = records.check_ids("delete", ids, documents.id_key, unique=False)
            pairs = list({k: (i, k) for i, k in zip(ids, keys)}.values())  # type: ignore[call-overload]
            current = self._wb.current_hashes(self._env, self._batch, [k for _, k in pairs])
            n = sum(1 for _, k in pairs if current[k] is not None)
            return self._submit(self._wb.Op("delete", tuple(pairs)), n)

    def update_metadata(self, ids: Sequence[str], metadata: Sequence[Mapping | None], *,
                        merge: bool = False) -> int:
        """Change the metadata of existing documents without re-sending their text or
        vectors: one write transaction, the metadata indexes kept in step; the text and
        vector indexes are not touched.

        :param ids: existing external ids (unique in the call).
        :param metadata: one dict (or None: empty) per id, the values :meth:`add` accepts.
        :param merge: False (default) replaces each document's metadata; True updates its
            top-level keys (keys not named keep their values).
        :returns: the number of documents whose metadata changed.
        :raises DocumentNotFoundError: when an id does not exist (nothing is written).
        :raises DuplicateIdError: when an id repeats in the call.
        :raises InvalidTypeError, InvalidArgumentError: on bad ids or metadata.
        :raises ReadOnlyError: when opened read-only.

        Complexity: O(n·log N + total metadata) plus the metadata index blocks touched.
        """
        from llmdsdb import documents, records

        merge = as_bool("merge", merge)
        with self._write_lock:
            self._check_writable()
            keys = records.check_ids("update_metadata", ids, documents.id_key, unique=True)
            metas = records.check_metadata("update_metadata", metadata, len(keys))
            current = self._wb.current_hashes(self._env, self._batch, keys)
            missing = [i for i, k in zip(ids, keys) if current[k] is None]
            if missing:
                raise DocumentNotFoundError(
                    f"update_metadata: no document with id {missing[0]!r}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + "; nothing was written")
            rows = tuple((i, k, m, merge) for i, k, m in zip(ids, keys, metas))
            return self._submit(self._wb.Op("meta", rows), len(rows))

    def _submit(self, op: Any, result: int) -> int:
        if self._batch is not None:
            self._batch.record(op, result)
            return result
        if result == 0:
            return 0  # nothing would change: no write transaction, no new generation
        return self._execute([op])[0]

    @contextmanager
    def batch(self) -> Iterator[Database]:
        """Group write calls into one LMDB write transaction::

            with db.batch():
                db.add(["a"], ["first"])
                db.delete(["b"])

        Each call is validated when it is made (and raises there, recording nothing);
        everything is written when the block ends without an exception, and nothing when
        it raises. A nested ``batch()`` block joins the outer one like a savepoint: when an
        exception leaves the inner block, the calls made in it are dropped and the outer
        batch keeps the others. The block holds the database's write lock: other threads'
        writes wait for it (their searches do not).

        :raises ClosedError: at the end of the block when :meth:`close` discarded the
            recorded calls (nothing was written).

        Complexity: O(1) to open (a nested block copies the outer one's id overlay); the
        writes cost what the calls would cost.
        """
        with self._write_lock:
            self._check_writable()
            if self._batch is not None:  # nested: a savepoint of the outer batch
                with self._batch.savepoint():
                    yield self
                return
            state = self._batch = self._wb.BatchState()
            try:
                yield self
            finally:
                self._batch = None
            if state.ops and state.changes:
                if self._closed:
                    raise ClosedError(f"database {self._path} was closed inside batch(); "
                                      "its calls were not written")
                self._execute(state.ops)

    def _execute(self, ops: list) -> list[int]:
        """Run ``ops`` in one write transaction (see
        :meth:`~llmdsdb.index_state.IndexHolder.writing`), then compact when the debt
        passed ``auto_compact_debt``."""
        out = self._state.writing(lambda txn: self._apply(txn, ops))
        if self._options.auto_compact_debt is not None:
            from llmdsdb.compaction import auto_compact

            auto_compact(self._state, self._options.auto_compact_debt)
        return out

    def _apply(self, txn: Any, ops: list) -> list[int]:
        st = self._state
        return self._wb.apply(txn, st.store, st.ix, ops, self._explicit, self._options)

    # --- search -----------------------------------------------------------------------------

    def search(self, query: str | None = None, vector: np.ndarray | None = None,
               top_k: int = 10, fusion_weight: float = 0.5,
               fusion: FusionMethod = "convex", normalization: Normalization = "minmax",
               filter: Mapping | None = None, explain: bool = False, *, offset: int = 0,
               include: Sequence[str] | None = None) -> list[SearchResult]:
        """Hybrid search: BM25 candidates for ``query``, nearest neighbours of ``vector``,
        fused (``fusion_weight`` weighs the vector side: 0 = BM25 only, 1 = vector only; a
        missing or blank side falls back to the other).

        An empty or whitespace-only query (with no vector) returns no results. A hit's
        ``text`` and ``metadata`` are decoded when first read.

        Scores (higher is better): when both sides run, the fused score (convex: in [0, 1];
        ``explain`` holds each side's raw score); when one side runs, that side's own score
        and no fusion parts - the BM25 score for text, and for vectors the cosine similarity
        (metric cosine), the dot product (ip) or minus the squared L2 distance (l2).

        A side the database lacks is never silently empty: a query that needs only it raises
        :class:`~llmdsdb.errors.MissingSideError`; a hybrid query runs on the other side and
        warns (:class:`~llmdsdb.errors.MissingSideWarning`).

        :param filter: a metadata filter, a dict in the grammar of :mod:`llmdsdb.filters`
            (``{"lang": "en", "year": {"$gte": 2020}}``; ``$eq $ne $in $nin $gt $gte $lt
            $lte $exists $and $or $not``): only documents that pass it are returned. Never a
            post-filter: each side ranks only the allowed documents, so ``top_k`` hits come
            back whenever ``top_k`` allowed documents match the query. With ``explain``,
            each hit's ``plan`` (:class:`~llmdsdb.filtered_search.SearchPlan`) names the
            strategy each side ran and whether the hits are exact.
        :param offset: skip the first ``offset`` hits (paging: ``offset=20, top_k=10`` is
            the third page of ten); ``top_k + offset`` is at most :data:`MAX_TOP_K`.
        :param include: fields to decode up front, any of ``"embedding"``, ``"metadata"``,
            ``"text"`` (each is also decoded lazily on first access; ``hit.embedding`` is
            the stored vector or None).
        :raises QueryError: when neither side is given, the query is too long, top_k is not
            positive or top_k + offset exceeds :data:`MAX_TOP_K` (10,000; see its cost).
        :raises MissingSideError: a vector-only query on a database with no vectors, a
            text-only query on one with no text.
        :raises DimensionError, NonFiniteError, ZeroVectorError: on a bad vector.
        :raises FilterError: on a filter outside the grammar (the message names the token).

        Complexity: O(|query| · postings scored) + O(log n · ef) (graph) + O(top_k log n);
        with a filter, plus its evaluation over the metadata index and the filtered sides
        (see :mod:`llmdsdb.filtered_search`).
        """
        from llmdsdb._validate import check_int
        from llmdsdb.filters import parse_filter

        if filter is not None:
            filter = parse_filter(filter)  # one query: one filter dict, never a list

        skip = check_int("offset", offset, 0)
        fields = _include(include)
        k = int(top_k) if isinstance(top_k, (int, np.integer)) \
            and not isinstance(top_k, bool) else None
        if k is not None and k >= 1 and k + skip > MAX_TOP_K:
            raise QueryError(f"top_k + offset must be at most {MAX_TOP_K:,}, got "
                             f"{k} + {skip}")
        hits = self.search_many(
            None if query is None else [query], None if vector is None else [vector],
            top_k=top_k if k is None else k + skip, fusion_weight=fusion_weight, fusion=fusion,
            normalization=normalization, filter=filter, explain=explain)[0][skip:]
        for h in hits if fields else ():
            for f in fields:
                getattr(h, f)
        return hits

    def search_many(self, queries: Sequence[str | None] | None = None,
                    vectors: np.ndarray | Sequence[np.ndarray | None] | None = None,
                    top_k: int = 10, fusion_weight: float = 0.5,
                    fusion: FusionMethod = "convex", normalization: Normalization = "minmax",
                    filter: Mapping | None = None, explain: bool = False
                    ) -> list[list[SearchResult]]:
        """:meth:`search` for many queries under one read transaction (one snapshot);
        ``queries[i]`` pairs with ``vectors[i]`` and either list may be None. Each query
        gets exactly the hits :meth:`search` gives it.

        ``filter`` is one filter dict for every query, or a list with one filter (or None)
        per query; each distinct filter is evaluated once.

        Complexity: that of :meth:`search` per query; each side runs batched.
        """
        from llmdsdb.documents import search_results
        from llmdsdb.retrieval_pipeline import HybridSearcher, make_query

        self._check_open()
        spec = FusionSpec.of(fusion_weight, fusion, normalization)
        explain = as_bool("explain", explain)
        qs, given = _pairs(queries, vectors)
        flts = _query_filters(filter, len(qs))
        vs, used = self._query_vectors(spec, qs, given)
        with self._reading() as (txn, ix):
            # validated against the configuration of this snapshot: another handle may have
            # created the database (fixing its metric and dimension) after this one opened
            cfg = ix.config
            if used is not None and cfg.embedder != used:  # re-embedded since: embed again
                vs, used = self._query_vectors(spec, qs, given)
            qq = [make_query(q, v, top_k, spec, dim=cfg.dim, metric=cfg.metric,
                             max_top_k=MAX_TOP_K, max_text_bytes=MAX_QUERY_BYTES)
                  for q, v in zip(qs, vs)]
            qq = _present_sides(qq, ix, lambda: txn.count("docs"))
            searcher = HybridSearcher(ix.bm25, ix.vectors, metric=cfg.metric)
            if any(f is not None for f in flts) or explain:
                qq = _with_allowed(txn, ix, qq, flts)
                hits, plans = searcher.search_many_planned(qq, explain=explain)
            else:
                hits, plans = searcher.search_many(qq), None
            out = search_results(txn, hits, explain)  # one pass for all queries
        for res, p in zip(out, plans) if explain and plans is not None else ():
            for r in res:
                r.plan = p
        return out

    def _query_vectors(self, spec: FusionSpec, qs: list, vs: list) -> tuple[list, Any]:
        """The query vectors of a search: ``vs``, with the texts of a database that has an
        embedder embedded where no vector was given; and the identity used (None if none)."""
        ident = self._state.ix.config.embedder
        if spec.weight <= 0 or ident is None:
            return vs, None
        emb = self.embedder()
        return [emb.embed_query(q) if v is None and isinstance(q, str) and q.strip() else v
                for q, v in zip(qs, vs)], ident

    # --- maintenance ------------------------------------------------------------------------

    def optimize(self) -> int:
        """Move every vector of the fresh segment into the graph now (one write batch).

        :returns: the number of vectors moved.

        Complexity: O(f · log n · ef_construction) for f fresh vectors.
        """
        with self._write_lock:
            self._check_writable()
            if self._batch is not None:
                raise InvalidArgumentError("optimize() cannot run inside batch()")
            with self._reading() as (_txn, ix):
                n = len(ix.vectors.fresh) if ix.vectors is not None else 0
            return self._execute([self._wb.Op("merge", ())])[0] if n else 0

    def reembed(self, embedder: Any, *, batch_size: int = 256,
                progress: Callable[[Any], None] | None = None) -> Any:
        """Rebuild every document's vector and the graph with ``embedder`` (a registered
        name or an :class:`~llmdsdb.embedders.Embedder`), in bounded batches; the old
        vectors serve every search until one last transaction switches to the new ones and
        stores the new embedder's identity. Resumable: after a kill, the same call goes on
        from the last committed batch. See :mod:`llmdsdb.reembed`.

        :param batch_size: documents embedded per write transaction.
        :param progress: called with a :class:`~llmdsdb.reembed.ReembedProgress` after
            every committed batch and after the switch.
        :returns: a :class:`~llmdsdb.reembed.ReembedResult`.
        :raises ConfigConflictError: when a re-embed with another embedder is staged.

        Complexity: O(n) embeddings and graph inserts in O(n / batch_size) transactions,
        plus one switch transaction of O(n) record writes.
        """
        from llmdsdb import reembed

        return reembed.run(self, embedder, batch_size=batch_size, progress=progress)

    def abort_reembed(self) -> bool:
        """Drop a staged, unfinished :meth:`reembed` (the database stays as it was);
        False when none was staged. Complexity: O(staged pages)."""
        from llmdsdb import reembed

        return reembed.abort(self)

    def compact(self, *, max_batch: int = 2000, progress: Any = None) -> dict:
        """Give back the space of deleted documents: postings rewritten without them, the
        graph's deleted nodes unlinked (neighbourhoods repaired) and dropped, the fresh part
        rewritten, pages freed and the page ids defragmented - in write transactions of at
        most ``max_batch`` items each, so searches and writes go on between them. A killed
        compaction resumes at the next call. See :mod:`llmdsdb.compaction`.

        :param progress: called after each step with ``{"phase", "step", "done", "todo"}``.
        :returns: ``{"steps", "phases", "before", "after", "resumed"}`` (``before`` and
            ``after``: live/dead bytes and debt as in ``stats()["compaction"]``).
        :raises InvalidArgumentError: when called inside ``batch()`` or ``max_batch`` < 1.

        Complexity: O(postings of the terms that hold dead documents + rows pointing at
        deleted nodes · M² · dim + live nodes · M) overall.
        """
        from llmdsdb.compaction import compact

        with self._write_lock:
            self._check_writable()
            if self._batch is not None:
                raise InvalidArgumentError("compact() cannot run inside batch()")
        # the write-call lock per step only: other threads' writes run between steps
        return compact(self._state, max_batch=max_batch, progress=progress,
                       lock=self._write_lock)

    def stats(self) -> dict:
        """Figures about the database: documents, terms, pages, bytes on disk, generation,
        configuration, index and cache statistics.

        Complexity: O(1) plus the indexes' stats().
        """
        from llmdsdb.index_state import index_stats

        with self._reading() as (txn, ix):
            out: dict[str, Any] = {
                "path": self._path, "generation": self._env.generation(txn),
                "documents": txn.count("docs"), "pages": txn.count("pages"),
                "config": self.config, "readonly": self.readonly, **index_stats(ix)}
        from llmdsdb.compaction import compaction_stats

        out["compaction"] = compaction_stats(self._state)
        out["storage"] = self._env.stat()
        out["bytes_on_disk"] = out["storage"].get("bytes_on_disk")
        out["cache"] = self._state.cache.stats()
        if self._embedder_obj is not None and hasattr(self._embedder_obj, "stats"):
            out["embedder"] = self._embedder_obj.stats()
        return out

    def check(self) -> list[str]:
        """Verify the whole database; returns a list of problems (empty when healthy).

        See :mod:`llmdsdb.db_check` for what is checked: value checksums, document records
        and the id map (keys included), counts, that the indexes hold exactly the live
        documents and keep their invariants, and the page store against the allocator.
        An index record that cannot be loaded is a problem to report, not an exception.

        Complexity: O(size of the database).
        """
        from llmdsdb.db_check import check_database

        self._check_open()
        # A damaged page can trip an assertion in liblmdb that aborts the process: walk the
        # whole file in a child process first, and go on in-process only if that passed.
        problems = self._env.check_structure()
        if problems:
            return problems
        st = self._state
        with st.rw.write(), self._env.read() as txn:
            try:
                st.refresh(txn)
                ix, err = st.ix, None
            except LlmdsdbError as exc:
                st.dirty = True
                ix, err = None, str(exc)
            return check_database(txn, st.store, ix, err)

    def _check(self) -> None:
        """Invariant (for tests): :meth:`check` finds nothing."""
        problems = self.check()
        assert not problems, problems

    def copy_to(self, dest_dir: str | os.PathLike, *, compact: bool = True) -> dict:
        """Hot, consistent copy of the whole environment under one read transaction into
        the new or empty directory ``dest_dir``.

        :returns: ``{"generation", "count", "format_version"}`` of the copied snapshot.

        :raises InvalidPathError: when ``dest_dir`` exists and is not an empty directory.
        :raises InvalidTypeError: when ``dest_dir`` is not a str or os.PathLike.

        Complexity: O(size of the database).
        """
        if not isinstance(dest_dir, (str, os.PathLike)):
            raise InvalidTypeError(
                f"dest_dir must be a str or os.PathLike, not {type(dest_dir).__name__}")
        self._check_open()
        info = dict(self._env.copy_to(os.fspath(dest_dir), compact=compact))
        info.setdefault("count", info.get("documents"))
        return info


def _include(include: object) -> tuple[str, ...]:
    """The validated ``include=`` of a search."""
    if include is None:
        return ()
    if isinstance(include, (str, bytes)) or not isinstance(include, (Sequence, set, frozenset)):
        raise InvalidTypeError(f"include must be a list of field names, not "
                               f"{type(include).__name__}")
    bad = [f for f in include if f not in INCLUDE_FIELDS]
    if bad:
        raise InvalidArgumentError(f"include: unknown field {bad[0]!r}; choose from "
                                   f"{', '.join(INCLUDE_FIELDS)}")
    return tuple(include)


def _present_sides(queries: list, ix: Any, count_documents: Callable[[], int]) -> list:
    """The queries with a side the database lacks taken out: a query that needs only that
    side raises :class:`MissingSideError`; a hybrid query runs on the other side with a
    :class:`MissingSideWarning` naming the missing one. An empty database has nothing to
    miss (its queries return no hits).

    Complexity: O(len(queries)).
    """
    import dataclasses
    import warnings

    from llmdsdb.retrieval_pipeline import plan

    plans = [plan(q, 1) for q in queries]
    no_text = ix.bm25 is None or ix.bm25._avgdl() == 0.0
    # the vector count only when a query has a vector side: it reads a lazily opened graph
    no_vec = ix.vectors is None or (
        any(p.vector is not None for p in plans) and len(ix.vectors) == 0)
    if not any((p.vector is not None and no_vec) or (p.text is not None and no_text)
               for p in plans):
        return queries  # no query lacks a side (the document count is not read)
    documents = count_documents()
    if not documents:
        return queries
    out = []
    for q, p in zip(queries, plans):
        lack_vec, lack_text = p.vector is not None and no_vec, p.text is not None and no_text
        if lack_vec and (p.text is None or no_text):
            raise MissingSideError(
                f"vector query on a database with no vectors ({documents:,} documents, none "
                "with an embedding); query by text, or add embeddings first")
        if lack_text and p.vector is None:
            raise MissingSideError(
                f"text query on a database with no text ({documents:,} documents, all with "
                "empty text); query by vector instead")
        if lack_vec or lack_text:
            side = "vector" if lack_vec else "text"
            warnings.warn(f"hybrid query on a database with no {'vectors' if lack_vec else 'text'}"
                          f": the {side} side was skipped, results are "
                          f"{'BM25' if lack_vec else 'vector'} only", MissingSideWarning,
                          stacklevel=4)
            q = dataclasses.replace(q, vector=None) if lack_vec else \
                dataclasses.replace(q, text=None)
        out.append(q)
    return out


def _query_filters(filter: object, n: int) -> list:
    """The parsed filter of each of ``n`` queries: one filter (a dict) for all of them, or
    a list of filters (or None) with one per query."""
    if filter is None:
        return [None] * n
    from llmdsdb.filters import parse_filter

    if isinstance(filter, (list, tuple)):
        if len(filter) != n:
            raise InvalidArgumentError(f"{n} queries but {len(filter)} filters (give one "
                                       "filter dict for all, or one per query)")
        return [None if f is None else parse_filter(f) for f in filter]
    f = parse_filter(filter)
    return [f] * n


def _with_allowed(txn: Any, ix: Any, queries: list, flts: list) -> list:
    """The queries with their filters evaluated into allowed sets (each distinct filter
    once) over the metadata index of the snapshot."""
    import dataclasses

    from llmdsdb.documents import next_id
    from llmdsdb.index_state import ensure_metadata_index

    if all(f is None for f in flts):
        return queries
    ensure_metadata_index(txn, ix)
    universe = next_id(txn)
    done: dict[Any, Any] = {}
    out = []
    for q, f in zip(queries, flts):
        if f is not None and f not in done:
            done[f] = ix.meta.allow(f, universe)
        out.append(q if f is None else dataclasses.replace(q, filter=done[f]))
    return out


def _pairs(queries: object, vectors: object) -> tuple[list, list]:
    """The (query, vector) pairs of a search_many call."""
    n = None
    for name, seq in (("queries", queries), ("vectors", vectors)):
        if seq is None:
            continue
        if isinstance(seq, (str, bytes)) or not isinstance(seq, (Sequence, np.ndarray)):
            raise InvalidTypeError(f"{name} must be a list, not {type(seq).__name__}")
        if n is not None and len(seq) != n:
            raise InvalidArgumentError(f"{n} queries but {len(seq)} vectors")
        n = len(seq)
    if n is None:
        raise QueryError("give a query text, a vector, or both")
    qs = list(queries) if queries is not None else [None] * n  # type: ignore[call-overload]
    vs = list(vectors) if vectors is not None else [None] * n  # type: ignore[call-overload]
    for q, v in zip(qs, vs):
        if q is None and v is None:
            raise QueryError("give a query text, a vector, or both")
    return qs, vs


def open(  # the public name is llmdsdb.open, shadowing the builtin on purpose
    path: str | os.PathLike,
    *,
    dim: int | None = None,
    metric: Metric | None = None,
    analyzer: Any = None,
    hnsw_M: int | None = None,
    hnsw_ef_construction: int | None = None,
    hnsw_ef_search: int | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    durability: Durability = "sync",
    readonly: bool = False,
    map_size_bytes: int | None = None,
    lock_timeout_s: float = 30.0,
    fresh_max_vectors: int | None = None,
    embedder: Any = None,
    auto_compact_debt: float | None = 0.5,
) -> Database:
    """Open (creating it when absent) the database in directory ``path``.

    The configuration (``dim``, ``metric`` (default ``"cosine"``), ``analyzer``, ``hnsw_M``
    (16), ``hnsw_ef_construction`` (200)) is stored with the first write; on reopen the
    stored configuration wins and an argument that conflicts with it raises
    :class:`~llmdsdb.errors.ConfigConflictError` (leave it out) - at open, or at the first
    call that sees it when another handle stores a conflicting configuration later. ``dim``
    may be left None: the first embeddings added fix it. The other options are runtime only
    (see :class:`Options`).

    ``embedder`` (a name from :func:`llmdsdb.embedders.available_embedders`, such as
    ``"minilm"`` or ``"hashing"``, or an :class:`~llmdsdb.embedders.Embedder`) makes the
    database embed for you: ``add``/``upsert`` without ``embeddings=`` embed the texts, and
    a text query also runs the vector side (hybrid) unless ``fusion_weight=0``. Its identity
    is stored with the first vectors; later handles reuse it without the argument, and a
    different embedder - or one on a database whose vectors the caller made - is a
    :class:`~llmdsdb.errors.ConfigConflictError`. Vectors passed explicitly to an embedder
    database are taken to come from that model (only their dimension can be checked).

    ``auto_compact_debt`` (default 0.5; None turns it off): after a write, when the dead
    part of the indexes (deleted documents' postings, graph nodes, fresh rows) passes this
    fraction of their bytes (``stats()["compaction"]["debt"]``) and 1 MiB, the write call
    runs :meth:`Database.compact` before it returns. At 0.5 the indexes hold at most about
    twice their live size, and each compaction rewrites at most one live byte per byte it
    gives back.

    :raises InvalidPathError: when ``path`` is a symlink, a regular file or a FIFO.
    :raises CorruptionError: when it holds a damaged or foreign database.
    :raises FormatVersionError: when written by a newer format version.
    :raises ConfigConflictError: when an argument conflicts with the stored configuration.
    :raises LockTimeoutError: never here; a write waits ``lock_timeout_s`` for another
        writer and raises it then.

    Complexity: O(1) for the inverted index (its directory is loaded, postings lazily) plus
    O(n) to load the graph's arrays.

    >>> import tempfile, llmdsdb
    >>> with llmdsdb.open(tempfile.mkdtemp() + "/db") as db:
    ...     db.add(["a", "b"], ["the cat sat", "a dog barked"])
    ...     [r.id for r in db.search("cat")]
    2
    ['a']
    """
    p, options, explicit = parse_open_args(
        path, dim=dim, metric=metric, analyzer=analyzer, hnsw_M=hnsw_M,
        hnsw_ef_construction=hnsw_ef_construction, hnsw_ef_search=hnsw_ef_search,
        cache_bytes=cache_bytes, durability=durability, readonly=readonly,
        map_size_bytes=map_size_bytes, lock_timeout_s=lock_timeout_s,
        fresh_max_vectors=fresh_max_vectors, embedder=embedder,
        auto_compact_debt=auto_compact_debt)
    return Database(p, options, explicit)
