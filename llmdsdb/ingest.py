"""Streaming ingest: records from files into a database, in batches, with a bad-row policy.

:func:`ingest` reads JSONL, CSV/TSV and text files with :mod:`llmdsdb.ingest_io`, groups
the records into batches and upserts each batch in one write transaction, so an
interrupted run leaves whole batches only and a re-run resumes it (unchanged documents
are skipped by the upsert). ``llmdsdb ingest`` is a thin shell over this function.

Invariant: every record read is accounted for exactly once, as written, unchanged or bad
(``read == written + unchanged + bad``), and a bad record is reported with its position as
data (:class:`~llmdsdb.ingest_io.BadLine`: ``where`` = ``"file:line"``, ``ordinal``) —
never found by parsing an error message. Under ``bad_rows="raise"`` the first bad record
stops the run before anything of its batch is written (earlier batches stay committed).

    >>> import json, os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> src = os.path.join(d, "docs.jsonl")
    >>> with open(src, "w", encoding="utf-8") as f:
    ...     for i, t in enumerate(["cats purr", "dogs bark", ""]):
    ...         _ = f.write(json.dumps({"id": str(i), "text": t}) + "\\n")
    ...     _ = f.write('{"text": "no id"}\\n')
    >>> r = ingest(os.path.join(d, "db"), [src], bad_rows="skip")
    >>> (r.read, r.written, r.bad, r.count), str(r.bad_examples[0])
    ((4, 3, 1, 3), "...docs.jsonl:4: missing id field 'id' (or '_id'); fields found: 'text'; ...")
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from llmdsdb.errors import (
    InputFormatError,
    InvalidArgumentError,
    InvalidPathError,
    InvalidTypeError,
)
from llmdsdb.ingest_io import (
    BadLine,
    ByteMeter,
    EmbeddingRows,
    FieldSpec,
    Record,
    count_records,
    input_kind,
    iter_records,
)

if TYPE_CHECKING:
    from llmdsdb.db import Database

__all__ = ["BadRowError", "BadRowPolicy", "IngestInterrupted", "IngestProgress",
           "IngestResult", "ingest"]

BadRowPolicy = Literal["raise", "skip"]
_POLICIES = ("raise", "skip")
#: How many bad records an :class:`IngestResult` keeps as examples.
MAX_BAD_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """Counts so far, handed to the ``on_progress`` callback after every batch.

    ``total`` is the number of records when it is known before reading (an ``embeddings``
    file fixes it), else ``None``; then ``bytes_read`` / ``bytes_total`` (the input files'
    stored bytes, see :class:`~llmdsdb.ingest_io.ByteMeter`) give an estimate of the share
    done.
    """

    read: int
    written: int
    bad: int
    batches: int
    total: int | None
    elapsed_s: float
    bytes_read: int | None = None
    bytes_total: int | None = None

    @property
    def fraction(self) -> float | None:
        """The share of the input done (exact from ``total``, else estimated from the
        bytes read), or None when neither is known. Complexity: O(1)."""
        if self.total:
            return min(self.read / self.total, 1.0)
        if self.bytes_total:
            return min((self.bytes_read or 0) / self.bytes_total, 1.0)
        return None


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one :func:`ingest` run did.

    ``unchanged`` counts records whose text, vector and metadata were already stored;
    ``count`` and ``generation`` describe the database after the run.
    """

    read: int
    written: int
    unchanged: int
    bad: int
    batches: int
    bad_examples: tuple[BadLine, ...]
    count: int
    generation: int


class BadRowError(InputFormatError):
    """A bad record stopped an ingest run (``bad_rows="raise"``).

    :ivar bad: the record's position and reason.
    :ivar written: documents written by the batches committed before it.
    """

    def __init__(self, bad: BadLine, written: int, batches: int) -> None:
        self.bad = bad
        self.written = written
        tail = (f" ({written} documents written by earlier batches; nothing of this batch "
                "was; fix the line and re-run to resume, or skip bad lines)"
                if batches else " (nothing was written; skip bad lines to go on without it)")
        super().__init__(f"{bad}{tail}")


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`ingest`; ``str()`` says what was committed.

    :ivar written: documents committed before the interrupt (whole batches only).
    """

    def __init__(self, written: int, batches: int) -> None:
        self.written = written
        self.batches = batches
        super().__init__(f"{written} documents committed in {batches} batches; re-run the "
                         "same command to resume")


@dataclass
class _Counts:
    read: int = 0
    written: int = 0
    bad: int = 0
    batches: int = 0


def ingest(
    target: str | os.PathLike[str] | Database,
    files: Sequence[str | os.PathLike[str]],
    *,
    spec: FieldSpec | None = None,
    embeddings_file: str | os.PathLike[str] | None = None,
    batch_size: int = 1000,
    bad_rows: BadRowPolicy = "raise",
    metric: str | None = None,
    embedder: object = None,
    on_progress: Callable[[IngestProgress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> IngestResult:
    """Upsert every record of ``files`` into a database, one write transaction per batch.

    :param target: a database path (created if missing; a new directory this call made is
        removed again when it fails before the first commit) or an open
        :class:`~llmdsdb.db.Database` (left open).
    :param files: JSONL, CSV/TSV, ``.txt``/``.md`` files or directories of them (``.gz``
        too); see :mod:`llmdsdb.ingest_io`.
    :param spec: which fields make up a record (default: ``id``/``_id``, ``text``).
    :param embeddings_file: a 2-D ``.npy`` file whose row *i* is record *i*'s vector; its row
        count must equal the number of records.
    :param batch_size: records per write transaction.
    :param bad_rows: ``"raise"`` stops at the first bad record (:class:`BadRowError`);
        ``"skip"`` leaves it out and counts it.
    :param metric: the vector metric when the database is created.
    :param embedder: an embedder name or object for :func:`llmdsdb.open` (records without
        vectors are then embedded; see :mod:`llmdsdb.embedders`); only with a path.
    :param on_progress: called with an :class:`IngestProgress` after every batch.
    :param clock: the time source for ``elapsed_s``.
    :returns: an :class:`IngestResult`.
    :raises BadRowError: a bad record under ``bad_rows="raise"``.
    :raises InputFormatError: an input problem not tied to one record (missing file,
        unknown format, embeddings rows that do not match the records).
    :raises IngestInterrupted: on Ctrl-C, after the batch being written was committed or
        rolled back.

    Complexity: O(total input size) reads plus one upsert per batch.
    """
    if bad_rows not in _POLICIES:
        raise InvalidArgumentError(f"bad_rows must be one of {_POLICIES}, got {bad_rows!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    spec = spec or FieldSpec()
    for f in files:
        input_kind(f)  # a missing or unknown input fails before anything is opened
    rows = None
    total = None
    meter = None
    if embeddings_file is not None:
        rows = EmbeddingRows(embeddings_file)
        total = count_records(files)
        if total != len(rows):
            raise InputFormatError(
                f"{embeddings_file}: has {len(rows)} rows but the input has {total} records; "
                "they must match one to one"
            )
    else:
        meter = ByteMeter(files)
    owned = not _is_database(target)
    if not owned and embedder is not None:
        raise InvalidArgumentError("embedder= goes with a path; an open database already has "
                                   "its embedder (llmdsdb.open(path, embedder=...))")
    path = None if not owned else Path(target)  # type: ignore[arg-type]
    if path is not None:
        _check_target(path)
    existed = path is None or path.exists() or path.is_symlink()
    counts = _Counts()
    examples: list[BadLine] = []
    start = clock()
    db = None if owned else target
    if db is not None:
        _check_embeddings_dim(db, rows)  # type: ignore[arg-type]

    def bad(line: BadLine) -> None:
        if bad_rows == "raise":
            raise BadRowError(line, counts.written, counts.batches)
        counts.bad += 1
        if len(examples) < MAX_BAD_EXAMPLES:
            examples.append(line)

    try:
        for batch in _batches(iter_records(files, spec, embeddings=rows, meter=meter),
                              batch_size, bad, counts):
            if db is None:
                db = _open(path, metric, embedder)
                _check_embeddings_dim(db, rows)  # type: ignore[arg-type]
            _write(db, batch, bad, counts)  # type: ignore[arg-type]
            if on_progress is not None:
                on_progress(IngestProgress(
                    counts.read, counts.written, counts.bad, counts.batches, total,
                    clock() - start, None if meter is None else meter.read,
                    None if meter is None else meter.total))
        if counts.bad and counts.bad == counts.read:
            raise InputFormatError(
                f"all {counts.read:,} records were bad, nothing was written; the first: "
                f"{examples[0]}"
            )
        if db is None:  # no records at all: still create the database, as asked
            db = _open(path, metric, embedder)
        count, gen = db.count(), db.generation  # type: ignore[union-attr]
    except BaseException as exc:
        if owned and db is not None:
            db.close()  # type: ignore[union-attr]
            db = None
        if not existed and counts.batches == 0 and path is not None and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)  # we created it; leave nothing behind
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, IngestInterrupted):
            raise IngestInterrupted(counts.written, counts.batches) from exc
        raise
    finally:
        if owned and db is not None:
            db.close()  # type: ignore[union-attr]
    return IngestResult(counts.read, counts.written, counts.read - counts.bad - counts.written,
                        counts.bad, counts.batches, tuple(examples), count, gen)


def _open(path: Path | None, metric: str | None, embedder: object) -> Database:
    import llmdsdb.db as dbmod

    kwargs: dict[str, object] = {}
    if metric:
        kwargs["metric"] = metric
    if embedder is not None:
        kwargs["embedder"] = embedder
    return dbmod.open(path, **kwargs)  # type: ignore[arg-type]


def _is_database(obj: object) -> bool:
    from llmdsdb.db import Database

    return isinstance(obj, Database)


def _check_embeddings_dim(db: Database, rows: EmbeddingRows | None) -> None:
    if rows is not None and db.dim is not None and rows.dim != db.dim:
        raise InputFormatError(f"{rows.path}: vectors have dimension {rows.dim}, but the "
                               f"database's vectors have dimension {db.dim}")


def _check_target(path: Path) -> None:
    if path.is_dir() and not path.is_symlink() and not (path / "data.mdb").exists() \
            and any(path.iterdir()):
        raise InvalidPathError(f"{path}: a non-empty directory that holds no database; give "
                               "a new or empty directory (or an existing database)")


def _batches(items: Iterator[Record | BadLine], batch_size: int,
             bad: Callable[[BadLine], None], counts: _Counts) -> Iterator[list[Record]]:
    """Group records into batches of distinct ids; a repeated id closes the batch first, so
    the later record wins as it would line by line."""
    batch: list[Record] = []
    ids: set[str] = set()
    for item in items:
        counts.read += 1
        if isinstance(item, BadLine):
            bad(item)
            continue
        if item.id in ids:
            yield batch
            batch, ids = [], set()
        batch.append(item)
        ids.add(item.id)
        if len(batch) >= batch_size:
            yield batch
            batch, ids = [], set()
    if batch:
        yield batch


def _upsert(db: Database, batch: Sequence[Record]) -> int:
    embs = None
    if any(r.embedding is not None for r in batch):
        embs = [r.embedding for r in batch]
    return db.upsert([r.id for r in batch], [r.text for r in batch], embs,
                     [r.metadata for r in batch])


def _write(db: Database, batch: list[Record], bad: Callable[[BadLine], None],
           counts: _Counts) -> None:
    """Upsert one batch; if the database refuses it (nothing was written: the call is
    atomic), find the records it refuses one by one, report them, and write the rest."""
    try:
        counts.written += _upsert(db, batch)
    except (InvalidArgumentError, InvalidTypeError) as exc:
        good = _without_bad_rows(db, batch, bad)
        if len(good) == len(batch):
            span = f"{batch[0].where}..{batch[-1].where.rsplit(':', 1)[-1]}"
            raise InvalidArgumentError(f"{span}: {exc} (nothing of this batch was written)"
                                       ) from None
        if not good:
            return
        counts.written += _upsert(db, good)
    counts.batches += 1


def _without_bad_rows(db: Database, batch: list[Record],
                      bad: Callable[[BadLine], None]) -> list[Record]:
    """The records of ``batch`` that the database accepts on their own, in order; each
    refused one goes to ``bad`` with the database's reason. Vectors must also agree in
    dimension with the database (or, while it has none, with the first vector accepted)."""
    good: list[Record] = []
    dim = db.dim
    for r in batch:
        reason = None
        if r.embedding is not None and dim is not None and r.embedding.shape[-1] != dim:
            reason = f"expected dimension {dim}, got {r.embedding.shape[-1]}"
        else:
            try:
                db.validate([r.id], [r.text],
                                 None if r.embedding is None else [r.embedding],
                                 [r.metadata])
            except (InvalidArgumentError, InvalidTypeError) as exc:
                reason = _reason(str(exc))
        if reason is not None:
            bad(BadLine(r.where, reason, r.ordinal))
            continue
        if r.embedding is not None and dim is None:
            dim = int(r.embedding.shape[-1])
        good.append(r)
    return good


def _reason(msg: str) -> str:
    """The database's message without its call-site prefix (``"upsert: ids[0]: "``), which
    names a position in the one-row check, not in the input."""
    head, sep, rest = msg.partition(": ")
    if sep and head in ("upsert", "add", "validate"):
        head2, sep2, rest2 = rest.partition(": ")
        if sep2 and "[" in head2 and head2.endswith("]"):
            return rest2
        return rest
    return msg
