"""Readers for ``llmdsdb ingest``: JSONL, CSV/TSV and directories of text files into records.

Every reader yields, in file order, one :class:`Record` per input record or one
:class:`BadLine` for a record it cannot use, so the caller decides whether a bad line stops
the run (the default of ``llmdsdb ingest``) or is skipped and counted (``--skip-bad``).
Nothing here touches a database.

Formats (a trailing ``.gz`` is decompressed on the fly):

* ``.jsonl`` / ``.ndjson``: one JSON object per line; blank lines are ignored.
* ``.csv`` / ``.tsv``: a header row names the fields.
* a directory: every ``.txt`` / ``.md`` / ``.markdown`` file below it, in sorted order; the
  id is the path relative to that directory, the text is the whole file, the metadata is
  ``{"path": <relative path>}``. A single ``.txt`` / ``.md`` file works the same way.

Invariant: a record's location ``where`` is ``"file:line"`` (1-based physical line of the
record's first line), and every problem is reported as ``file:line: reason``. The ordinal of
a record (0-based, counted over all inputs, bad records included) is the row of the
``--embeddings`` ``.npy`` file that belongs to it.

    >>> import json, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = os.path.join(d, "docs.jsonl")
    >>> with open(p, "w", encoding="utf-8") as f:
    ...     _ = f.write(json.dumps({"id": "a", "title": "Cats", "text": "purr"}) + "\\n")
    ...     _ = f.write("{not json\\n")
    >>> spec = FieldSpec(text_fields=("title", "text"))
    >>> [type(r).__name__ for r in iter_records([p], spec)]
    ['Record', 'BadLine']
    >>> next(iter_records([p], spec)).text
    'Cats purr'
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from llmdsdb.errors import InputFormatError

__all__ = [
    "BadLine",
    "ByteMeter",
    "EmbeddingRows",
    "FieldSpec",
    "Record",
    "count_records",
    "input_kind",
    "iter_records",
    "parse_vector",
    "read_query_vector",
    "write_jsonl_record",
]

#: A single input line (or text file) longer than this is rejected without reading it whole.
MAX_LINE_BYTES = 64 * 1024 * 1024
#: Suffixes read as text documents when a directory (or a single file) is ingested.
TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_TEMPLATE_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


@dataclass(frozen=True, slots=True)
class Record:
    """One input record, ready for :meth:`Database.upsert`.

    ``embedding`` is a float32 array of shape (dim,) or ``None``; ``ordinal`` is the record's
    position over all inputs (bad records counted), ``where`` is ``"file:line"``.
    """

    id: str
    text: str
    embedding: np.ndarray | None
    metadata: dict[str, Any]
    where: str
    ordinal: int


@dataclass(frozen=True, slots=True)
class BadLine:
    """A record that could not be read; ``str()`` gives ``file:line: reason``."""

    where: str
    reason: str
    ordinal: int

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class ByteMeter:
    """How far :func:`iter_records` has read, in bytes of the input files as stored (a
    ``.gz`` file counts its compressed bytes): ``total`` is their size, ``read`` the bytes
    of the finished files plus the position in the current one. The position is the
    reader's, which runs a buffer ahead of the last record yielded, so ``read / total`` is
    an estimate of the share done - what a progress line's percentage and ETA need when the
    number of records is not known before reading.

    Not thread-safe: one reader updates it.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self.total = sum(_input_bytes(str(p)) for p in paths)
        self._done = 0
        self._pos = 0

    @property
    def read(self) -> int:
        """Bytes read so far (at most ``total``). Complexity: O(1)."""
        return min(self._done + self._pos, self.total)

    def _at(self, pos: int) -> None:
        self._pos = pos

    def _finish(self, size: int) -> None:
        self._done += size
        self._pos = 0


@dataclass(frozen=True)
class FieldSpec:
    """Which input fields make up a record.

    :param id_field: field holding the id; ``None`` means ``"id"``, else ``"_id"``. Integer
        ids are turned into their decimal string.
    :param text_fields: fields joined with ``text_separator`` into the text (empty parts are
        left out); ``()`` means ``("text",)``.
    :param text_template: instead of ``text_fields``: a template such as
        ``"{title}: {text}"`` (``{{`` and ``}}`` for literal braces).
    :param embedding_field: field holding the vector (a JSON list, or in CSV a JSON list or
        whitespace/comma separated numbers); ``None`` means ``"embedding"`` when present.
    :param metadata_fields: top-level fields copied into the metadata. For JSONL they are
        added to the record's ``"metadata"`` object (if any); for CSV, when none are named,
        every column that is not the id, text or embedding becomes metadata.
    """

    id_field: str | None = None
    text_fields: tuple[str, ...] = ()
    text_template: str | None = None
    text_separator: str = " "
    embedding_field: str | None = None
    metadata_fields: tuple[str, ...] = ()
    metadata_object: str = "metadata"

    def __post_init__(self) -> None:
        if self.text_template is not None and self.text_fields:
            raise InputFormatError("give either text fields or a text template, not both")
        if self.text_template is not None:
            for m in _TEMPLATE_FIELD.finditer(self.text_template):
                if m.group(0) not in ("{{", "}}") and not m.group(1).strip():
                    raise InputFormatError(
                        f"text template {self.text_template!r} has an empty '{{}}' field"
                    )


class EmbeddingRows:
    """Rows of a 2-D ``.npy`` file, one per record (row i belongs to record ordinal i).

    Memory: the file is memory-mapped; one row is copied (as float32) per record.
    Not thread-safe (read-only use from one thread).

    :raises InputFormatError: when the file is missing, pickled, not 2-D or not numeric.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise InputFormatError(f"{self.path}: no such embeddings file") from None
        except (OSError, ValueError, EOFError) as exc:
            raise InputFormatError(f"{self.path}: not a readable .npy array ({exc})") from None
        if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype.kind not in "fiu":
            shape = getattr(arr, "shape", None)
            dtype = getattr(arr, "dtype", None)
            raise InputFormatError(
                f"{self.path}: expected a 2-D numeric array (rows, dim), got shape {shape} "
                f"dtype {dtype}"
            )
        self.rows = arr

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def dim(self) -> int:
        return int(self.rows.shape[1])

    def row(self, i: int) -> np.ndarray:
        """Row ``i`` as a float32 array of shape (dim,).

        Complexity: O(dim).
        """
        return np.array(self.rows[i], dtype=np.float32)


def input_kind(path: str | os.PathLike[str]) -> str:
    """``"jsonl"``, ``"csv"``, ``"tsv"``, ``"text"`` or ``"dir"`` for an input path.

    :raises InputFormatError: when the path is missing or of an unknown kind.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputFormatError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    import stat as _stat

    if _stat.S_ISDIR(st.st_mode):
        return "dir"
    if not _stat.S_ISREG(st.st_mode):
        raise InputFormatError(f"{path}: not a regular file or directory")
    name = p.name.lower()
    name = name.removesuffix(".gz")
    for suffix, kind in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv"),
                         (".tsv", "tsv")):
        if name.endswith(suffix):
            return kind
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    raise InputFormatError(
        f"{path}: unknown input format (expected .jsonl, .ndjson, .csv, .tsv, .txt, .md, "
        "optionally .gz, or a directory)"
    )


def _open_binary(path: str) -> IO[bytes]:
    try:
        if path.lower().endswith(".gz"):
            return gzip.open(path, "rb")
        return open(path, "rb")
    except FileNotFoundError:
        raise InputFormatError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot open ({exc.strerror or exc})") from None


def _input_bytes(path: str) -> int:
    """The stored size of an input (a directory: of the text files below it)."""
    try:
        if Path(path).is_dir():
            return sum(f.stat().st_size for f in _text_files(Path(path)))
        return os.stat(path).st_size
    except OSError:
        return 0


def _raw_lines(path: str, meter: ByteMeter | None = None
               ) -> Iterator[tuple[int, int, bytes | None]]:
    """Yield ``(line_no, byte_offset, line)``; ``line`` is ``None`` for an over-long line.
    ``meter`` learns the position in the stored file after every line."""
    f = _open_binary(path)
    offset = 0
    line_no = 0
    stored = getattr(f, "fileobj", f)  # a gzip stream's compressed file
    try:
        with f:
            while True:
                try:
                    line = f.readline(MAX_LINE_BYTES + 1)
                except (OSError, EOFError, zlib.error) as exc:
                    raise InputFormatError(
                        f"{path}:{line_no + 1}: cannot read compressed input ({exc})"
                    ) from None
                if meter is not None:
                    meter._at(stored.tell())
                if not line:
                    return
                line_no += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    start = offset
                    while line and not line.endswith(b"\n"):  # skip the rest of the line
                        offset += len(line)
                        line = f.readline(MAX_LINE_BYTES)
                    offset += len(line)
                    yield line_no, start, None
                    continue
                yield line_no, offset, line
                offset += len(line)
    except OSError as exc:
        raise InputFormatError(f"{path}: read error ({exc.strerror or exc})") from None


def _utf8(raw: bytes, offset: int, *, gz: bool) -> str:
    """Decode one line strictly; the error names the byte offset in the file."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = "of the decompressed data" if gz else "in the file"
        raise _LineError(
            f"invalid UTF-8 at byte offset {offset + exc.start} {where} "
            f"(byte {exc.start + 1} of the line: {raw[exc.start:exc.start + 1]!r})"
        ) from None


class _LineError(Exception):
    """Internal: a problem with one record; turned into a BadLine with its location."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (not valid JSON)")


def _json_loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # a bad line, like any other invalid JSON: never end the run
        raise ValueError("nested too deeply") from None


def parse_vector(value: Any, what: str = "embedding") -> np.ndarray:
    """A list of finite numbers (or a string of them) as a float32 array of shape (dim,).

    >>> parse_vector([1, 2.5]).tolist()
    [1.0, 2.5]
    >>> parse_vector("0.5 1").tolist()
    [0.5, 1.0]

    Complexity: O(dim).

    :raises InputFormatError: on non-numbers, an empty vector or non-finite values.
    """
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = _json_loads(s)
            except ValueError as exc:
                raise InputFormatError(f"{what} is not a JSON list of numbers ({exc})") from None
        else:
            try:
                value = [float(x) for x in re.split(r"[\s,]+", s) if x]
            except ValueError:
                raise InputFormatError(f"{what} is not a list of numbers") from None
    if not isinstance(value, list):
        raise InputFormatError(f"{what} must be a list of numbers, got {type(value).__name__}")
    if not value:
        raise InputFormatError(f"{what} is empty")
    for i, x in enumerate(value):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise InputFormatError(f"{what}[{i}] is not a number: {x!r}")
        if isinstance(x, float) and not math.isfinite(x):
            raise InputFormatError(f"{what}[{i}] is not finite: {x!r}")
        if isinstance(x, int) and x.bit_length() > 128:  # numpy would raise OverflowError
            raise InputFormatError(f"{what}[{i}] overflows float32 (a {x.bit_length()}-bit "
                                   "integer)")
    with np.errstate(over="ignore"):
        vec = np.asarray(value, dtype=np.float64).astype(np.float32)
    if not np.isfinite(vec).all():
        i = int(np.flatnonzero(~np.isfinite(vec))[0])
        raise InputFormatError(f"{what}[{i}] = {value[i]!r} overflows float32")
    return vec


def read_query_vector(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one query vector from ``.npy`` (shape (dim,) or (1, dim)) or a JSON list file.

    :raises InputFormatError: when the file is missing or does not hold exactly one vector.
    """
    p = str(path)
    if p.lower().endswith(".npy"):
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            raise InputFormatError(f"{p}: no such vector file") from None
        except (OSError, ValueError, EOFError) as exc:
            raise InputFormatError(f"{p}: not a readable .npy array ({exc})") from None
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 1 or arr.dtype.kind not in "fiu":
            raise InputFormatError(
                f"{p}: expected one numeric vector (dim,) or (1, dim), got shape {arr.shape} "
                f"dtype {arr.dtype}"
            )
        try:
            return parse_vector(arr.astype(np.float64).tolist(), what="vector")
        except InputFormatError as exc:
            raise InputFormatError(f"{p}: {exc}") from None
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_LINE_BYTES + 1)
    except FileNotFoundError:
        raise InputFormatError(f"{p}: no such vector file") from None
    except OSError as exc:
        raise InputFormatError(f"{p}: cannot read ({exc.strerror or exc})") from None
    try:
        value = _json_loads(_utf8(raw, 0, gz=False))
    except _LineError as exc:
        raise InputFormatError(f"{p}: {exc}") from None
    except ValueError as exc:
        raise InputFormatError(f"{p}: not a JSON list of numbers ({exc})") from None
    return parse_vector(value, what=p)


# --- turning a parsed object into a record -------------------------------------------------


def _field_str(obj: dict[str, Any], name: str, what: str) -> str:
    if name not in obj:
        raise _LineError(f"missing {what} field {name!r}")
    v = obj[name]
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _LineError(f"{what} field {name!r} must be a string, got {type(v).__name__}")
    return v


def _field_list(obj: dict[str, Any], most: int = 8) -> str:
    names = [repr(k) for k in list(obj)[:most]]
    more = f" and {len(obj) - most} more" if len(obj) > most else ""
    return (", ".join(names) + more) if names else "none"


def _make_id(obj: dict[str, Any], spec: FieldSpec) -> str:
    if spec.id_field is not None:
        name = spec.id_field
    else:
        name = "id" if "id" in obj else "_id"
    if name not in obj:
        if spec.id_field is not None:
            raise _LineError(f"missing id field {name!r}")
        raise _LineError(f"missing id field 'id' (or '_id'); fields found: "
                         f"{_field_list(obj)}; name the id field with --id-field")
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise _LineError(f"id field {name!r} must be a string or an integer, got {v!r}")
    s = str(v)
    if not s:
        raise _LineError("doc id must be non-empty")
    return s


def _make_text(obj: dict[str, Any], spec: FieldSpec) -> str:
    if spec.text_template is not None:
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "{{":
                return "{"
            if m.group(0) == "}}":
                return "}"
            name = m.group(1).strip()
            v = obj.get(name)
            if name not in obj:
                raise _LineError(f"missing field {name!r} used in the text template")
            return "" if v is None else str(v)

        return _TEMPLATE_FIELD.sub(sub, spec.text_template)
    names = spec.text_fields or ("text",)
    for n in names:
        if n not in obj:
            hint = ("name the text field with --text-field" if not spec.text_fields else
                    "check the --text-field names")
            raise _LineError(f"missing text field {n!r}; fields found: {_field_list(obj)}; "
                             f"{hint}")
    parts = [_field_str(obj, n, "text") for n in names]
    return spec.text_separator.join(p for p in parts if p)


def _make_embedding(
    obj: dict[str, Any], spec: FieldSpec, rows: EmbeddingRows | None, ordinal: int
) -> np.ndarray | None:
    if rows is not None:
        if ordinal >= len(rows):
            raise _LineError(
                f"no row {ordinal} in the embeddings file {rows.path} (it has {len(rows)} rows)"
            )
        vec = rows.row(ordinal)
        if not np.isfinite(vec).all():
            raise _LineError(f"row {ordinal} of {rows.path} holds a non-finite value")
        return vec
    name = spec.embedding_field or "embedding"
    if name not in obj:
        if spec.embedding_field is not None:
            raise _LineError(f"missing embedding field {name!r}")
        return None
    v = obj[name]
    if v is None and spec.embedding_field is None:
        return None
    try:
        return parse_vector(v, what=f"embedding field {name!r}")
    except InputFormatError as exc:
        raise _LineError(str(exc)) from None


def _make_metadata(obj: dict[str, Any], spec: FieldSpec, default_rest: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    mo = obj.get(spec.metadata_object)
    if spec.metadata_object in obj and not default_rest:
        if mo is None:
            pass
        elif not isinstance(mo, dict):
            raise _LineError(
                f"field {spec.metadata_object!r} must be an object, got {type(mo).__name__}"
            )
        else:
            meta.update(mo)
    if spec.metadata_fields:
        for name in spec.metadata_fields:
            if name not in obj:
                raise _LineError(f"missing metadata field {name!r}")
            meta[name] = obj[name]
    elif default_rest:
        used = {spec.id_field or ("id" if "id" in obj else "_id")}
        used.update(spec.text_fields or (() if spec.text_template else ("text",)))
        if spec.text_template:
            used.update(
                m.group(1).strip() for m in _TEMPLATE_FIELD.finditer(spec.text_template)
                if m.group(1) is not None
            )
        used.add(spec.embedding_field or "embedding")
        meta.update({k: v for k, v in obj.items() if k not in used})
    return meta


def _record(
    obj: Any, spec: FieldSpec, rows: EmbeddingRows | None, where: str, ordinal: int,
    *, default_rest: bool = False,
) -> Record:
    if not isinstance(obj, dict):
        raise _LineError(f"expected a JSON object, got {type(obj).__name__}")
    return Record(
        id=_make_id(obj, spec),
        text=_make_text(obj, spec),
        embedding=_make_embedding(obj, spec, rows, ordinal),
        metadata=_make_metadata(obj, spec, default_rest),
        where=where,
        ordinal=ordinal,
    )


# --- readers -------------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        n = self.n
        self.n += 1
        return n


def _read_jsonl(
    path: str, spec: FieldSpec, rows: EmbeddingRows | None, counter: _Counter,
    meter: ByteMeter | None = None
) -> Iterator[Record | BadLine]:
    gz = path.lower().endswith(".gz")
    for line_no, offset, raw in _raw_lines(path, meter):
        where = f"{path}:{line_no}"
        if raw is not None and not raw.strip():
            continue
        ordinal = counter.next()
        try:
            if raw is None:
                raise _LineError(f"line longer than {MAX_LINE_BYTES} bytes")
            text = _utf8(raw, offset, gz=gz)
            try:
                obj = _json_loads(text)
            except ValueError as exc:
                raise _LineError(f"invalid JSON: {exc}") from None
            yield _record(obj, spec, rows, where, ordinal)
        except _LineError as exc:
            yield BadLine(where, str(exc), ordinal)


def _read_csv(
    path: str, spec: FieldSpec, rows: EmbeddingRows | None, counter: _Counter, delimiter: str,
    meter: ByteMeter | None = None
) -> Iterator[Record | BadLine]:
    # The csv module's field limit is process-wide: raise it for our long lines, and give
    # the caller's setting back when the file is done (or abandoned).
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, MAX_LINE_BYTES))
    try:
        yield from _read_csv_rows(path, spec, rows, counter, delimiter, meter)
    finally:
        csv.field_size_limit(limit)


def _read_csv_rows(
    path: str, spec: FieldSpec, rows: EmbeddingRows | None, counter: _Counter, delimiter: str,
    meter: ByteMeter | None = None
) -> Iterator[Record | BadLine]:
    gz = path.lower().endswith(".gz")
    pending: list[BadLine] = []
    state = {"line": 0}

    def lines() -> Iterator[str]:
        for line_no, offset, raw in _raw_lines(path, meter):
            state["line"] = line_no
            if raw is None:
                pending.append(BadLine(f"{path}:{line_no}",
                                       f"line longer than {MAX_LINE_BYTES} bytes", -1))
                yield "\n"
                continue
            try:
                yield _utf8(raw, offset, gz=gz)
            except _LineError as exc:
                pending.append(BadLine(f"{path}:{line_no}", str(exc), -1))
                yield "\n"

    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputFormatError(f"{path}:1: bad CSV header ({exc})") from None
    if pending:
        raise InputFormatError(str(pending[0]))
    if len(set(header)) != len(header):
        raise InputFormatError(f"{path}:1: the header repeats a column name")
    start = 2
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            where = f"{path}:{state['line']}"
            yield BadLine(where, f"bad CSV ({exc})", counter.next())
            start = state["line"] + 1
            continue
        for bad in pending:
            yield BadLine(bad.where, bad.reason, counter.next())
        pending.clear()
        where = f"{path}:{start}"
        start = state["line"] + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        ordinal = counter.next()
        if len(row) != len(header):
            yield BadLine(where, f"expected {len(header)} columns, got {len(row)}", ordinal)
            continue
        try:
            yield _record(dict(zip(header, row)), spec, rows, where, ordinal, default_rest=True)
        except _LineError as exc:
            yield BadLine(where, str(exc), ordinal)
    for bad in pending:
        yield BadLine(bad.where, bad.reason, counter.next())


def _text_files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.lower().endswith(TEXT_SUFFIXES) and not name.startswith("."):
                out.append(Path(dirpath) / name)
    return out


def _read_text_file(
    file: Path, rel: str, spec: FieldSpec, rows: EmbeddingRows | None, counter: _Counter
) -> Record | BadLine:
    where = f"{file}:1"
    ordinal = counter.next()
    try:
        try:
            with open(file, "rb") as f:
                raw = f.read(MAX_LINE_BYTES + 1)
        except OSError as exc:
            raise _LineError(f"cannot read ({exc.strerror or exc})") from None
        if len(raw) > MAX_LINE_BYTES:
            raise _LineError(f"file larger than {MAX_LINE_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            where = f"{file}:{line}"
            raise _LineError(f"invalid UTF-8 at byte offset {exc.start} in the file") from None
        text = text.removeprefix("\ufeff")
        emb = _make_embedding({}, spec, rows, ordinal) if rows is not None else None
        return Record(id=rel, text=text, embedding=emb, metadata={"path": rel}, where=where,
                      ordinal=ordinal)
    except _LineError as exc:
        return BadLine(where, str(exc), ordinal)


def iter_records(
    paths: Sequence[str | os.PathLike[str]],
    spec: FieldSpec | None = None,
    *,
    embeddings: EmbeddingRows | None = None,
    meter: ByteMeter | None = None,
) -> Iterator[Record | BadLine]:
    """Yield every record of every input in order (see the module docstring for formats);
    ``meter`` (a :class:`ByteMeter` of the same paths) follows the bytes read.

    Complexity: O(total input size); memory O(longest line).

    :raises InputFormatError: for problems that are not tied to one record (a missing file,
        an unknown format, an unreadable gzip stream, a bad CSV header).
    """
    spec = spec or FieldSpec()
    counter = _Counter()
    for path in paths:
        p = str(path)
        kind = input_kind(p)
        if kind == "jsonl":
            yield from _read_jsonl(p, spec, embeddings, counter, meter)
        elif kind in ("csv", "tsv"):
            yield from _read_csv(p, spec, embeddings, counter, "," if kind == "csv" else "\t",
                                 meter)
        elif kind == "text":
            yield _read_text_file(Path(p), Path(p).name, spec, embeddings, counter)
        else:
            root = Path(p)
            for file in _text_files(root):
                rel = file.relative_to(root).as_posix()
                yield _read_text_file(file, rel, spec, embeddings, counter)
                if meter is not None:
                    meter._finish(_input_bytes(str(file)))
            continue
        if meter is not None:
            meter._finish(_input_bytes(p))


def count_records(paths: Iterable[str | os.PathLike[str]]) -> int:
    """How many records (bad ones included) :func:`iter_records` will yield; used to check
    that an ``--embeddings`` file has one row per record before anything is written.

    Complexity: O(total input size).
    """
    n = 0
    for path in paths:
        p = str(path)
        kind = input_kind(p)
        if kind == "jsonl":
            n += sum(1 for _, _, raw in _raw_lines(p) if raw is None or raw.strip())
        elif kind in ("csv", "tsv"):
            # every row fails fast on the absent id field: counted, not parsed further
            n += sum(1 for _ in iter_records([p], FieldSpec(id_field="\x00")))
        elif kind == "text":
            n += 1
        else:
            n += len(_text_files(Path(p)))
    return n


def write_jsonl_record(out: io.TextIOBase | IO[str], doc_id: str, text: str,
                       metadata: dict[str, Any], embedding: np.ndarray | None) -> None:
    """Write one document as a JSONL line that :func:`iter_records` reads back identically
    (float32 values are written exactly: as the float64 holding the same value)."""
    obj: dict[str, Any] = {"id": doc_id, "text": text, "metadata": metadata}
    if embedding is not None:
        obj["embedding"] = np.asarray(embedding, dtype=np.float32).astype(np.float64).tolist()
    out.write(json.dumps(obj, allow_nan=False) + "\n")
