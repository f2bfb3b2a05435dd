"""llmdsdb: an embeddable retrieval database and the data structures it is built from.

This module only re-exports; see the submodules for the code.
"""

from llmdsdb._version import __version__
from llmdsdb.backup import backup, restore
from llmdsdb.db import Database, Document, Options, SearchResult, open
from llmdsdb.errors import LlmdsdbError

__all__ = [
    "Database",
    "Document",
    "LlmdsdbError",
    "Options",
    "SearchResult",
    "__version__",
    "backup",
    "open",
    "restore",
]
