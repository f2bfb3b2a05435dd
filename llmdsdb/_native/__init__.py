"""The compiled kernels of llmdsdb (C, built by the package's own build).

Hot loops only: postings decode, BM25 top-k, distances, HNSW search and insert. Every
function checks the buffers it is given, releases the GIL around its kernel and raises
an ``llmdsdb.errors`` class on bad input; corrupt data is a ``CorruptionError``, never a
crash. There is no pure-Python fallback: a missing build is an ImportError that says how
to build it.
"""

from __future__ import annotations

try:
    from llmdsdb._native import _core
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "llmdsdb's compiled kernels (llmdsdb._native._core) are not built or do not load: "
        f"{exc}. Install the package with its build step, e.g. `pip install -e .` in a "
        "checkout (needs a C compiler and the Python headers)."
    ) from exc


def kernel_info() -> dict[str, object]:
    """The instruction set the kernels dispatch to, the kernels built in, the compiler.

    :returns: ``{"isa": "avx2", "kernels": [...], "compiler": "..."}``.
    """
    return _core.kernel_info()


__all__ = ["kernel_info"]
