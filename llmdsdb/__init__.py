"""llmdsdb: an embeddable retrieval database and the data structures it is built from.

This module only re-exports; see the submodules for the code.
"""

from llmdsdb._version import __version__
from llmdsdb.errors import LlmdsdbError

__all__ = ["LlmdsdbError", "__version__"]
