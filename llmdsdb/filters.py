"""Metadata filters: plain dicts in the Chroma / MongoDB style, parsed into a small typed AST.

A filter is data, never code: :func:`parse_filter` walks the dict, checks every operator,
field name and value against the grammar below and the size limits, and returns an
immutable tree of :class:`Filter` nodes. Nothing in the input is evaluated, imported or
formatted into code. The tree's :meth:`Filter.matches` is the reference semantics that every
faster evaluation (metadata indexes, filtered graph search) must agree with.

Grammar::

    filter    := {clause, ...}                  several clauses: all must hold ($and)
    clause    := field: scalar                  equality
               | field: {op: operand, ...}      several operators: all must hold
               | "$and": [filter, ...]  |  "$or": [filter, ...]  |  "$not": filter
    op        := $eq $ne (scalar) | $in $nin ([scalar, ...]) | $gt $gte $lt $lte (number)
               | $exists (bool)
    scalar    := str | int | float | bool        (finite; None is not a value: use $exists)

Semantics, for a document's metadata dict ``m`` (``v = m[field]``):

* ``$eq``: ``v`` equals the operand; numbers compare by value (``1 == 1.0``), but a bool is
  never equal to a number and a string never equal to a number. If ``v`` is a list, any
  element may match (MongoDB's rule).
* ``$in``: ``$eq`` for some operand. ``$ne`` / ``$nin`` are the negations of ``$eq`` / ``$in``,
  so a document without the field matches them (as in MongoDB).
* ``$gt`` / ``$gte`` / ``$lt`` / ``$lte``: ``v`` (or an element of a list) is a number (not a
  bool) in the range; other values never match.
* ``$exists``: the field is present (its value may be ``None``) — or absent for ``false``.

Invariant: a parsed tree is in canonical form — ``And``/``Or`` have at least two children
and never a child of their own kind, a field's several range operators are merged into one
:class:`Range`, ``$in`` operands are de-duplicated and sorted — so two filters that differ
only in key order or nesting of ``$and`` compare and hash equal.

    >>> f = parse_filter({"lang": "en", "year": {"$gte": 2020, "$lt": 2024}})
    >>> f
    And(children=(Eq(field='lang', value='en'), Range(field='year', lo=2020, lo_incl=True, hi=2024, hi_incl=False)))
    >>> f.matches({"lang": "en", "year": 2021}), f.matches({"lang": "en", "year": 2024})
    (True, False)
    >>> parse_filter({"year": {"$regex": "^19"}})
    Traceback (most recent call last):
    ...
    llmdsdb.errors.FilterError: filter: unknown operator '$regex' at 'year' (valid: $eq, $ne, $in, $nin, $gt, $gte, $lt, $lte, $exists)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from llmdsdb.errors import FilterError

__all__ = [
    "MAX_DEPTH",
    "MAX_IN",
    "MAX_NODES",
    "And",
    "Eq",
    "Exists",
    "Filter",
    "In",
    "Not",
    "Or",
    "Range",
    "Scalar",
    "parse_filter",
]

#: Deepest nesting of ``$and`` / ``$or`` / ``$not`` and operator objects.
MAX_DEPTH = 16
#: Most nodes (clauses and operators) in one filter.
MAX_NODES = 1024
#: Most operands of one ``$in`` / ``$nin``.
MAX_IN = 4096
#: Longest field name or string operand, in characters.
MAX_STR = 1024

Scalar = str | int | float | bool

_VALUE_OPS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists")
_LOGIC_OPS = ("$and", "$or", "$not")
_RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")


class Filter:
    """A node of a parsed filter; immutable and hashable. Thread-safe (immutable).

    Memory: O(number of nodes and operands).
    """

    __slots__ = ()

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Whether a document with this metadata passes the filter (the reference semantics).

        Complexity: O(nodes + operands inspected); ``$in`` is a set lookup.
        """
        raise NotImplementedError

    def fields(self) -> frozenset[str]:
        """The metadata fields the filter reads.

        Complexity: O(nodes).
        """
        raise NotImplementedError

    def _canon(self) -> tuple[object, ...]:
        """The node's value under the filter's typing rule: ``1`` and ``1.0`` alike, ``True``
        and ``1`` apart (plain dataclass equality would merge them, since ``True == 1``)."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._canon() == other._canon()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._canon()))


def _same(a: object, b: object) -> bool:
    """Equality of scalars under the filter's typing rule (bool apart from numbers)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, str) or isinstance(b, str):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return False


def _elements(v: object) -> tuple[object, ...]:
    return tuple(v) if isinstance(v, list) else (v,)


def _key(v: Scalar) -> tuple[int, object]:
    """Sort and hash key that keeps bools, numbers and strings apart (1 and 1.0 together)."""
    if isinstance(v, bool):
        return (0, v)
    if isinstance(v, (int, float)):
        return (1, v)
    return (2, v)


@dataclass(frozen=True, slots=True, eq=False)
class Eq(Filter):
    """``field == value`` (any element, when the stored value is a list)."""

    field: str
    value: Scalar

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.field not in metadata:
            return False
        return any(_same(x, self.value) for x in _elements(metadata[self.field]))

    def _canon(self) -> tuple[object, ...]:
        return (self.field, _key(self.value))

    def fields(self) -> frozenset[str]:
        return frozenset((self.field,))


@dataclass(frozen=True, slots=True, eq=False)
class In(Filter):
    """``field`` equals one of ``values`` (sorted, distinct)."""

    field: str
    values: tuple[Scalar, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.field not in metadata:
            return False
        keys = {_key(v) for v in self.values}
        return any(isinstance(x, (str, int, float)) and _key(x) in keys
                   for x in _elements(metadata[self.field]))

    def _canon(self) -> tuple[object, ...]:
        return (self.field, tuple(_key(v) for v in self.values))

    def fields(self) -> frozenset[str]:
        return frozenset((self.field,))


@dataclass(frozen=True, slots=True, eq=False)
class Range(Filter):
    """``lo <(=) field <(=) hi`` over numbers; ``None`` bounds are open."""

    field: str
    lo: int | float | None
    lo_incl: bool
    hi: int | float | None
    hi_incl: bool

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        if self.field not in metadata:
            return False
        return any(self._holds(x) for x in _elements(metadata[self.field]))

    def _holds(self, x: object) -> bool:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x):
            return False
        if self.lo is not None and (x < self.lo or (x == self.lo and not self.lo_incl)):
            return False
        return not (self.hi is not None and (x > self.hi or (x == self.hi and not self.hi_incl)))

    def _canon(self) -> tuple[object, ...]:
        return (self.field, self.lo, self.lo_incl, self.hi, self.hi_incl)

    def fields(self) -> frozenset[str]:
        return frozenset((self.field,))


@dataclass(frozen=True, slots=True, eq=False)
class Exists(Filter):
    """The field is present (``present=True``) or absent."""

    field: str
    present: bool = True

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return (self.field in metadata) == self.present

    def _canon(self) -> tuple[object, ...]:
        return (self.field, self.present)

    def fields(self) -> frozenset[str]:
        return frozenset((self.field,))


@dataclass(frozen=True, slots=True, eq=False)
class Not(Filter):
    """The child does not hold."""

    child: Filter

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return not self.child.matches(metadata)

    def _canon(self) -> tuple[object, ...]:
        return (self.child,)

    def fields(self) -> frozenset[str]:
        return self.child.fields()


@dataclass(frozen=True, slots=True, eq=False)
class And(Filter):
    """Every child holds (two or more children)."""

    children: tuple[Filter, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return all(c.matches(metadata) for c in self.children)

    def _canon(self) -> tuple[object, ...]:
        return self.children

    def fields(self) -> frozenset[str]:
        return frozenset().union(*(c.fields() for c in self.children))


@dataclass(frozen=True, slots=True, eq=False)
class Or(Filter):
    """Some child holds (two or more children)."""

    children: tuple[Filter, ...]

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return any(c.matches(metadata) for c in self.children)

    def _canon(self) -> tuple[object, ...]:
        return self.children

    def fields(self) -> frozenset[str]:
        return frozenset().union(*(c.fields() for c in self.children))


def parse_filter(spec: object) -> Filter:
    """Parse a filter dict (grammar in the module docstring) into its canonical tree.

    :param spec: the filter, e.g. ``{"lang": "en", "year": {"$gte": 2020}}``; an existing
        :class:`Filter` is returned as it is.
    :returns: the canonical :class:`Filter` tree.
    :raises FilterError: naming the offending token and its place, for anything outside the
        grammar or past :data:`MAX_DEPTH`, :data:`MAX_NODES`, :data:`MAX_IN`.

    Complexity: O(size of ``spec``).
    """
    if isinstance(spec, Filter):
        return spec
    return _Parser().filter(spec, "filter", 0)


class _Parser:
    _OPS_HELP: ClassVar[str] = ", ".join(_VALUE_OPS)

    def __init__(self) -> None:
        self.nodes = 0

    def _count(self, where: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(f"filter: more than {MAX_NODES} clauses and operators "
                              f"(at {where})")

    def filter(self, spec: object, where: str, depth: int) -> Filter:
        if depth > MAX_DEPTH:
            raise FilterError(f"filter: nested deeper than {MAX_DEPTH} (at {where})")
        if not isinstance(spec, Mapping):
            raise FilterError(f"filter: {where} must be a dict, not {type(spec).__name__}")
        if not spec:
            raise FilterError(f"filter: {where} is an empty dict; give at least one clause")
        parts = [self.clause(k, v, where, depth) for k, v in spec.items()]
        return _and(parts)

    def clause(self, key: object, value: object, where: str, depth: int) -> Filter:
        self._count(where)
        if not isinstance(key, str):
            raise FilterError(f"filter: key {key!r} in {where} must be a str")
        if key.startswith("$"):
            if key == "$not":
                return _not(self.filter(value, "'$not'", depth + 1))
            if key in ("$and", "$or"):
                if not isinstance(value, (list, tuple)) or not value:
                    raise FilterError(f"filter: {key!r} takes a non-empty list of filters, "
                                      f"got {_show(value)}")
                kids = [self.filter(v, f"{key!r}[{i}]", depth + 1) for i, v in enumerate(value)]
                return _and(kids) if key == "$and" else _or(kids)
            raise FilterError(f"filter: unknown operator {key!r} in {where} (valid at the top "
                              f"level: {', '.join(_LOGIC_OPS)}, or a field name)")
        field = _field(key)
        if isinstance(value, Mapping):
            return self.operators(field, value, depth + 1)
        return Eq(field, _scalar(value, field, "$eq"))

    def operators(self, field: str, ops: Mapping[object, object], depth: int) -> Filter:
        if depth > MAX_DEPTH:
            raise FilterError(f"filter: nested deeper than {MAX_DEPTH} (at {field!r})")
        if not ops:
            raise FilterError(f"filter: {field!r} has an empty operator dict")
        parts: list[Filter] = []
        bounds: dict[str, int | float] = {}
        for op, operand in ops.items():
            self._count(repr(field))
            if op not in _VALUE_OPS:
                raise FilterError(f"filter: unknown operator {op!r} at {field!r} "
                                  f"(valid: {self._OPS_HELP})")
            if op in _RANGE_OPS:
                bounds[op] = _number(operand, field, op)  # type: ignore[index]
            elif op == "$exists":
                if not isinstance(operand, bool):
                    raise FilterError(f"filter: '$exists' at {field!r} takes true or false, "
                                      f"got {_show(operand)}")
                parts.append(Exists(field, operand))
            elif op in ("$eq", "$ne"):
                eq = Eq(field, _scalar(operand, field, op))  # type: ignore[arg-type]
                parts.append(eq if op == "$eq" else Not(eq))
            else:
                node = _in(field, self.operand_list(operand, field, op))  # type: ignore[arg-type]
                parts.append(node if op == "$in" else _not(node))
        if bounds:
            parts.append(_range(field, bounds))
        return _and(parts)

    def operand_list(self, operand: object, field: str, op: str) -> list[Scalar]:
        if not isinstance(operand, (list, tuple)):
            raise FilterError(f"filter: {op!r} at {field!r} takes a list, got {_show(operand)}")
        if len(operand) > MAX_IN:
            raise FilterError(f"filter: {op!r} at {field!r} has {len(operand)} values; the "
                              f"limit is {MAX_IN}")
        return [_scalar(v, field, op) for v in operand]


def _field(key: str) -> str:
    if not key or len(key) > MAX_STR:
        raise FilterError(f"filter: field name must be 1 to {MAX_STR} characters, got "
                          f"{len(key)}")
    return key


def _show(v: object) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _scalar(v: object, field: str, op: str) -> Scalar:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        if not -(2**63) <= v < 2**63:
            raise FilterError(f"filter: {op!r} at {field!r}: integer {v} is outside int64")
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise FilterError(f"filter: {op!r} at {field!r}: {v} is not a finite number")
        return v
    if isinstance(v, str):
        if len(v) > MAX_STR:
            raise FilterError(f"filter: {op!r} at {field!r}: string of {len(v)} characters; "
                              f"the limit is {MAX_STR}")
        return v
    hint = " (use {'$exists': false} for a missing field)" if v is None else ""
    raise FilterError(f"filter: {op!r} at {field!r} takes a str, number or bool, got "
                      f"{_show(v)}{hint}")


def _number(v: object, field: str, op: str) -> int | float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise FilterError(f"filter: {op!r} at {field!r} takes a number, got {_show(v)}")
    return _scalar(v, field, op)  # type: ignore[return-value]


def _range(field: str, bounds: dict[str, int | float]) -> Filter:
    lo, lo_incl, hi, hi_incl = None, True, None, True
    for op, v in bounds.items():
        if op in ("$gt", "$gte"):
            incl = op == "$gte"
            if lo is None or v > lo or (v == lo and not incl):
                lo, lo_incl = v, incl
        else:
            incl = op == "$lte"
            if hi is None or v < hi or (v == hi and not incl):
                hi, hi_incl = v, incl
    return Range(field, lo, lo_incl, hi, hi_incl)


def _in(field: str, values: list[Scalar]) -> Filter:
    seen: dict[tuple[int, object], Scalar] = {}
    for v in values:
        seen.setdefault(_key(v), v)
    if len(seen) == 1:
        return Eq(field, next(iter(seen.values())))
    return In(field, tuple(seen[k] for k in sorted(seen, key=lambda k: (k[0], k[1]))))


def _flat(kind: type, parts: list[Filter]) -> list[Filter]:
    out: list[Filter] = []
    for p in parts:
        kids = p.children if isinstance(p, kind) else (p,)  # type: ignore[attr-defined]
        for k in kids:
            if k not in out:
                out.append(k)
    return out


def _and(parts: list[Filter]) -> Filter:
    flat = _flat(And, parts)
    return flat[0] if len(flat) == 1 else And(tuple(flat))


def _or(parts: list[Filter]) -> Filter:
    flat = _flat(Or, parts)
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def _not(child: Filter) -> Filter:
    return child.child if isinstance(child, Not) else Not(child)
