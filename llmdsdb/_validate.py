"""Validation rules shared by every layer: one home for each rule.

The database, the in-memory pipeline, the fusion spec and the index wrappers check their
arguments here, so a value is refused by the same rule (and with the same error class)
whichever door it comes through. Every function either returns the value normalised to a
plain Python / numpy type or raises an :mod:`llmdsdb.errors` class; none has side effects.

Invariant: a vector accepted by :func:`vectors` can be stored and searched by every index
of the project: its components are finite float32 values, its norm is finite, it is not a
zero vector under cosine, and (for ``ip`` and ``l2``) its norm is at most
:data:`MAX_VECTOR_NORM`, so the float32 squared norms and dot products the graph computes
cannot overflow.

>>> vectors([[3.0, 4.0]], dim=2, metric="l2", what="v").tolist()
[[3.0, 4.0]]
>>> vectors([[1e19, 0.0]], dim=2, metric="l2", what="v")
Traceback (most recent call last):
...
llmdsdb.errors.NonFiniteError: v: vector norm 1e+19 (row 0) is too large for float32 distances (limit 4.61e+18); rescale the vectors
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

from llmdsdb.errors import (
    DimensionError,
    InvalidArgumentError,
    InvalidTypeError,
    NonFiniteError,
    ZeroVectorError,
)

if TYPE_CHECKING:  # numpy is imported by the vector rules only: the int and choice rules
    import numpy as np  # serve the pure structures too, which need no numpy

__all__ = [
    "DURABILITIES", "FUSION_METHODS", "INT64_MAX", "INT64_MIN", "MAX_DIM", "MAX_VECTOR_NORM", "METRICS",
    "NORMALIZATIONS", "Durability", "FusionMethod", "Metric", "Normalization", "as_bool",
    "as_int", "check_choice", "check_int", "fusion_weight", "utf8", "vector", "vectors",
]

Metric = Literal["cosine", "ip", "l2"]
Durability = Literal["sync", "metasync", "nosync"]
FusionMethod = Literal["convex", "rrf"]
Normalization = Literal["minmax", "zscore", "theoretical"]

METRICS: tuple[str, ...] = get_args(Metric)
DURABILITIES: tuple[str, ...] = get_args(Durability)
FUSION_METHODS: tuple[str, ...] = get_args(FusionMethod)
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Largest dimension of an embedding.
MAX_DIM = 65536
#: Largest norm of an ``ip`` / ``l2`` vector: the graph computes squared norms and dot
#: products in float32, whose largest finite value is ~3.4e38; a quarter of its square root
#: (~4.6e18) keeps ``|a|^2 + |b|^2 + 2|a||b|`` finite for any two accepted vectors.
MAX_VECTOR_NORM = math.sqrt(3.4028234663852886e38) / 4  # float32's largest finite value


def _is_bool(value: object) -> bool:
    """A Python bool or a numpy bool (without importing numpy)."""
    t = type(value)
    return t is bool or (t.__module__ == "numpy" and t.__name__ in ("bool", "bool_"))


def as_int(value: object, what: str) -> int:
    """``value`` as an int (anything with ``__index__``, numpy integers too); bools and
    non-integers are refused.

    Complexity: O(1).

    :raises InvalidTypeError: when ``value`` is not an integer.
    """
    if type(value) is int:
        return value  # type: ignore[return-value]
    if _is_bool(value):
        raise InvalidTypeError(f"{what} must be an int, not bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidTypeError(f"{what} must be an int, not {type(value).__name__}") from None


def check_int(what: str, value: object, lo: int, hi: int | None = None) -> int:
    """:func:`as_int`, then ``lo <= value <= hi`` (no upper bound when ``hi`` is None).

    Complexity: O(1).

    :raises InvalidArgumentError: when the value is out of range.
    """
    v = as_int(value, what)
    if v < lo or (hi is not None and v > hi):
        bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise InvalidArgumentError(f"{what} must be {bound}, got {v}")
    return v


def check_choice(what: str, value: object, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices``; the error lists the valid choices.

    Complexity: O(len(choices)).

    :raises InvalidArgumentError: otherwise.
    """
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(
            f"{what} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def as_bool(what: str, value: object) -> bool:
    """``value`` when it is a bool (numpy bools too).

    Complexity: O(1).

    :raises InvalidTypeError: otherwise.
    """
    if not _is_bool(value):
        raise InvalidTypeError(f"{what} must be a bool, not {type(value).__name__}")
    return bool(value)


def fusion_weight(value: object) -> float:
    """The weight of the vector side, a number in [0, 1] (0 = BM25 only, 1 = vector only).

    Complexity: O(1).

    :raises InvalidTypeError: when it is not a number.
    :raises InvalidArgumentError: when it is NaN or outside [0, 1].
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(
            f"fusion_weight must be a number in [0, 1]; got {type(value).__name__}")
    w = float(value)  # type: ignore[arg-type]
    if math.isnan(w) or not 0.0 <= w <= 1.0:
        raise InvalidArgumentError(
            f"fusion_weight must be in [0, 1] (0 = BM25 only, 1 = vector only); got {w!r}")
    return w


def utf8(s: str, what: str) -> bytes:
    """The UTF-8 bytes of ``s``.

    Complexity: O(len(s)).

    :raises InvalidArgumentError: when ``s`` holds a lone surrogate.
    """
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"{what} is not valid Unicode (lone surrogate at index {exc.start})") from None


def _numeric_array(x: object, what: str) -> np.ndarray:
    import numpy as np

    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InvalidTypeError(f"{what} is not an array of numbers ({exc})") from None
    if a.dtype == object:
        raise InvalidTypeError(f"{what} must be numeric, got an object array (ragged or mixed)")
    if a.dtype.kind not in "fiu":
        raise InvalidTypeError(f"{what} must hold real numbers (float or int), got dtype "
                               f"{a.dtype}")
    return a


def _norms(a64: np.ndarray) -> np.ndarray:
    """Row norms in float64, scaled so that 1e200 does not overflow when squared."""
    import numpy as np

    ss = np.einsum("ij,ij->i", a64, a64)
    if ss.size and np.isfinite(ss).all() and ss.min() > 1e-290:
        return np.sqrt(ss)
    scale = np.abs(a64).max(axis=1) if a64.size else np.zeros(0)
    safe = np.where(scale > 0, scale, 1.0)
    scaled = a64 / safe[:, None]
    return np.sqrt(np.einsum("ij,ij->i", scaled, scaled)) * safe


def vectors(x: object, *, dim: int | None, metric: str, what: str) -> np.ndarray:
    """Validate a batch of vectors; returns them as a C-contiguous float32 array (n, d).

    The rule (the module invariant): real numbers, 2-D, dimension ``dim`` (any in
    1..:data:`MAX_DIM` when None), finite in float32, not all-zero under cosine, norm at most
    :data:`MAX_VECTOR_NORM` under ``ip`` and ``l2``. Stored as given (cosine vectors are
    normalised by the index, not here).

    Complexity: O(n * d).

    :raises InvalidTypeError: not an array of real numbers.
    :raises DimensionError: wrong shape or dimension.
    :raises NonFiniteError: NaN, an infinity (also from float32 overflow) or a norm too large.
    :raises ZeroVectorError: a zero vector under cosine.
    """
    import numpy as np

    a = _numeric_array(x, what)
    if a.ndim != 2:
        raise DimensionError(f"{what} must be a 2-D array (n, dim), got shape {a.shape}")
    d = a.shape[1]
    if d == 0:
        raise DimensionError(f"{what}: vectors must have dimension >= 1, got 0")
    if d > MAX_DIM:
        raise DimensionError(f"{what}: dimension {d} exceeds {MAX_DIM}")
    if dim is not None and d != dim:
        raise DimensionError(f"{what}: expected dimension {dim}, got {d}")
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.ascontiguousarray(a, dtype=np.float32)
    finite = np.isfinite(v)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise NonFiniteError(f"{what}: non-finite value {a[r, c]} in row {r} at index {c}")
    if not len(v):
        return v
    norms = _norms(v.astype(np.float64))
    if metric == "cosine":
        zero = np.flatnonzero(norms == 0)
        if zero.size:
            raise ZeroVectorError(f"{what}: row {int(zero[0])} is a zero-norm vector "
                                  "(metric is cosine)")
    else:
        big = np.flatnonzero(norms > MAX_VECTOR_NORM)
        if big.size:
            raise NonFiniteError(
                f"{what}: vector norm {norms[big[0]]:.3g} (row {int(big[0])}) is too large "
                f"for float32 distances (limit {MAX_VECTOR_NORM:.3g}); rescale the vectors")
    return v


def vector(x: object, *, dim: int | None, metric: str, what: str) -> np.ndarray:
    """:func:`vectors` for one 1-D vector; returns float32 of shape (d,).

    Complexity: O(d).
    """
    a = _numeric_array(x, what)
    if a.ndim != 1:
        raise DimensionError(f"{what} must be 1-D, got shape {a.shape}")
    return vectors(a[None, :], dim=dim, metric=metric, what=what)[0]
