"""Every error llmdsdb raises on purpose.

One base class, :class:`LlmdsdbError`. A domain error also inherits the built-in exception
that names the failure, so ``except ValueError`` or ``except KeyError`` keeps working in code
that does not know about llmdsdb::

    >>> from llmdsdb.errors import DimensionError, LlmdsdbError
    >>> issubclass(DimensionError, ValueError) and issubclass(DimensionError, LlmdsdbError)
    True

Exit codes belong to the command-line tool, not to this module. Messages say what was wrong
and, where there is one, what to do about it.
"""

from __future__ import annotations

__all__ = [
    "BackupError",
    "BudgetExceededError",
    "ClosedError",
    "ConfigConflictError",
    "CorruptionError",
    "DimensionError",
    "DocumentNotFoundError",
    "DoubleFreeError",
    "DuplicateIdError",
    "EmptyError",
    "FilterError",
    "FormatVersionError",
    "InputFormatError",
    "InvalidArgumentError",
    "InvalidPathError",
    "InvalidTypeError",
    "LlmdsdbError",
    "LockTimeoutError",
    "MapFullError",
    "MissingDependencyError",
    "MissingSideError",
    "MissingSideWarning",
    "NetworkFilesystemWarning",
    "NonFiniteError",
    "NotFoundError",
    "OutOfPagesError",
    "PageNotFoundError",
    "QueryError",
    "ReadOnlyError",
    "StorageError",
    "ZeroVectorError",
]


class LlmdsdbError(Exception):
    """Base class of every error llmdsdb raises on purpose."""


# --- bad arguments -------------------------------------------------------------------------


class InvalidArgumentError(LlmdsdbError, ValueError):
    """An argument has the right type but a value that is not allowed (a negative size, an
    unknown option, NaN where a number is needed)."""


class InvalidTypeError(LlmdsdbError, TypeError):
    """An argument has the wrong type (a number where text is needed, an object array)."""


class DimensionError(InvalidArgumentError):
    """A vector's dimension differs from the index's."""


class NonFiniteError(InvalidArgumentError):
    """A vector or score holds NaN or an infinity."""


class ZeroVectorError(InvalidArgumentError):
    """A zero-norm vector was given where the metric (cosine) needs a direction."""


class DuplicateIdError(InvalidArgumentError):
    """An id that must be unique is already present, or appears twice in one batch."""


class QueryError(InvalidArgumentError):
    """A query cannot be run as given (empty, too long, too many terms, bad top_k)."""


class MissingSideError(QueryError):
    """A query needs a side the database does not have: a vector query on a database that
    holds no vectors, a text query on one whose documents have no text."""


class MissingSideWarning(UserWarning):
    """A hybrid query ran on one side only because the database lacks the other (the
    message names the missing side)."""


class NetworkFilesystemWarning(UserWarning):
    """The database directory is on a network filesystem (NFS, CIFS/SMB, ...), where LMDB's
    locking and memory-map coherence do not hold (lmdb.h: "Do not use LMDB databases on
    remote filesystems"); keep databases on a local disk."""


class FilterError(QueryError):
    """A metadata filter is malformed: an unknown operator, a value of the wrong type, or
    one past the size limits. The message names the offending token and where it is."""


class BudgetExceededError(InvalidArgumentError):
    """One item is larger than the whole budget of the structure it is put into."""


class DoubleFreeError(InvalidArgumentError):
    """A resource was released twice (a page freed twice)."""


class ConfigConflictError(InvalidArgumentError):
    """An argument conflicts with the configuration stored in the database; the stored
    configuration wins on reopen."""


class InputFormatError(InvalidArgumentError):
    """An input file or record is malformed (a bad JSONL line, invalid UTF-8, a missing
    field). The message starts with ``file:line:`` where the location is known."""


# --- lookups -------------------------------------------------------------------------------


class NotFoundError(LlmdsdbError, KeyError):
    """Something looked up by key or id does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better plain.
        return str(self.args[0]) if self.args else ""


class DocumentNotFoundError(NotFoundError):
    """No document has the given id."""


class PageNotFoundError(NotFoundError):
    """No page has the given page id."""


class EmptyError(LlmdsdbError, IndexError):
    """An element was taken from an empty structure."""


# --- capacity ------------------------------------------------------------------------------


class OutOfPagesError(LlmdsdbError, MemoryError):
    """An allocator has fewer free pages than were asked for; nothing was allocated."""


# --- storage -------------------------------------------------------------------------------


class StorageError(LlmdsdbError, OSError):
    """The storage layer failed (an LMDB error, an I/O error). The original exception is
    chained as ``__cause__``."""


class MapFullError(StorageError):
    """The LMDB map is full and could not be grown; open with a larger ``map_size_bytes=``."""


class ReadOnlyError(StorageError, PermissionError):
    """A write was attempted on a database opened read-only (or on a read-only file)."""


class LockTimeoutError(StorageError, TimeoutError):
    """Another process held the write lock longer than the timeout allowed."""


class InvalidPathError(StorageError):
    """The database path cannot be used: it is a regular file, a symlink, or not accessible."""


class MissingDependencyError(LlmdsdbError, ImportError):
    """An optional extra that a feature needs is not installed; the message names the
    ``pip install`` to run."""


class ClosedError(LlmdsdbError, RuntimeError):
    """The database (or another resource) was used after it was closed, or in a forked child
    process that must open its own handle."""


class CorruptionError(LlmdsdbError, ValueError):
    """Stored data failed a checksum or a structural check. Restore from a backup, or run
    ``llmdsdb verify`` to list every problem."""


class FormatVersionError(CorruptionError):
    """The file was written by a newer (or unknown) on-disk format version."""


class BackupError(LlmdsdbError, ValueError):
    """A backup is incomplete, tampered with, or cannot be restored to the given target."""
