"""The metadata filter grammar: fuzzed, and checked against a direct dict evaluator."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmdsdb.errors import FilterError
from llmdsdb.filters import MAX_DEPTH, MAX_IN, And, Eq, In, Not, Range, parse_filter

FIELDS = ["a", "b", "c"]
# few distinct values, so that stored values hit operands and range bounds exactly
scalars = st.one_of(st.booleans(), st.integers(-1, 1), st.sampled_from([0.5, 1.0]),
                    st.sampled_from(["x", "1"]))
numbers = st.one_of(st.integers(-1, 1), st.sampled_from([0.5, 1.0]))
meta_values = st.one_of(scalars, st.none(), st.lists(scalars, max_size=3))
metadata = st.dictionaries(st.sampled_from(FIELDS), meta_values, max_size=3)


def _ops(scalars: st.SearchStrategy = scalars, numbers: st.SearchStrategy = numbers
         ) -> st.SearchStrategy[dict[str, Any]]:
    one = st.one_of(
        st.tuples(st.sampled_from(["$eq", "$ne"]), scalars),
        st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(scalars, min_size=1, max_size=4)),
        st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), numbers),
        st.tuples(st.just("$exists"), st.booleans()),
    )
    return st.lists(one, min_size=1, max_size=3).map(dict)


def _filters(scalars: st.SearchStrategy = scalars, numbers: st.SearchStrategy = numbers,
             max_leaves: int = 6) -> st.SearchStrategy[dict[str, Any]]:
    """Random filter dicts over FIELDS (also used by test_metadata_index.py)."""
    leaf = st.dictionaries(st.sampled_from(FIELDS), st.one_of(scalars, _ops(scalars, numbers)),
                           min_size=1, max_size=2)
    return st.recursive(
        leaf,
        lambda kids: st.one_of(
            st.lists(kids, min_size=1, max_size=3).map(lambda k: {"$and": k}),
            st.lists(kids, min_size=1, max_size=3).map(lambda k: {"$or": k}),
            kids.map(lambda k: {"$not": k}),
        ),
        max_leaves=max_leaves,
    )


# --- the reference: the documented semantics, evaluated straight from the dict ---------------


def _eq(x: Any, v: Any) -> bool:
    if isinstance(x, bool) or isinstance(v, bool):
        return isinstance(x, bool) and isinstance(v, bool) and x == v
    if isinstance(x, str) or isinstance(v, str):
        return isinstance(x, str) and isinstance(v, str) and x == v
    return isinstance(x, (int, float)) and isinstance(v, (int, float)) and x == v


def _any(m: dict, field: str, pred: Any) -> bool:
    if field not in m:
        return False
    v = m[field]
    return any(pred(x) for x in (v if isinstance(v, list) else [v]))


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def ref(f: dict, m: dict) -> bool:
    for key, val in f.items():
        if key == "$and":
            ok = all(ref(g, m) for g in val)
        elif key == "$or":
            ok = any(ref(g, m) for g in val)
        elif key == "$not":
            ok = not ref(val, m)
        elif isinstance(val, dict):
            ok = all(ref_op(key, op, arg, m) for op, arg in val.items())
        else:
            ok = _any(m, key, lambda x, v=val: _eq(x, v))
        if not ok:
            return False
    return True


def ref_op(field: str, op: str, arg: Any, m: dict) -> bool:
    if op == "$eq":
        return _any(m, field, lambda x: _eq(x, arg))
    if op == "$ne":
        return not _any(m, field, lambda x: _eq(x, arg))
    if op == "$in":
        return _any(m, field, lambda x: any(_eq(x, a) for a in arg))
    if op == "$nin":
        return not _any(m, field, lambda x: any(_eq(x, a) for a in arg))
    if op == "$exists":
        return (field in m) == arg
    cmp = {"$gt": lambda x: x > arg, "$gte": lambda x: x >= arg, "$lt": lambda x: x < arg,
           "$lte": lambda x: x <= arg}[op]
    return _any(m, field, lambda x: _num(x) and cmp(x))


@settings(max_examples=400, deadline=None)
@given(_filters(), st.lists(metadata, min_size=1, max_size=8))
def test_parsed_filter_matches_the_reference(spec: dict, docs: list[dict]) -> None:
    f = parse_filter(spec)
    for m in docs:
        assert f.matches(m) == ref(spec, m), (spec, m, f)
    assert f.fields() <= set(FIELDS)


@settings(max_examples=200, deadline=None)
@given(_filters())
def test_canonical_form_ignores_key_order_and_and_nesting(spec: dict) -> None:
    f = parse_filter(spec)
    reordered = dict(reversed(list(spec.items())))
    assert parse_filter(reordered).matches({}) == f.matches({})
    assert parse_filter({"$and": [spec]}) == f
    assert parse_filter(f) is f
    assert hash(parse_filter(spec)) == hash(f)


json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=5), st.sampled_from(
            ["$and", "$or", "$not", "$in", "$gt", "$eq", "$exists", "$regex", "$where"])),
            kids, max_size=4),
    ),
    max_leaves=25,
)


@settings(max_examples=500, deadline=None)
@given(json_like)
def test_fuzzed_input_parses_or_raises_filter_error(spec: Any) -> None:
    try:
        f = parse_filter(spec)
    except FilterError as exc:
        assert str(exc).startswith("filter: ")
        return
    f.matches({"a": 1})  # a parsed filter always evaluates


def test_canonical_examples() -> None:
    assert parse_filter({"a": {"$in": [2, 1, 2.0, "1"]}}) == In("a", (1, 2, "1"))
    assert parse_filter({"a": {"$in": [3]}}) == Eq("a", 3)
    assert parse_filter({"a": {"$gt": 1, "$gte": 1, "$lt": 9, "$lte": 5}}) == \
        Range("a", 1, False, 5, True)
    assert parse_filter({"$not": {"$not": {"a": 1}}}) == Eq("a", 1)
    assert parse_filter({"$and": [{"a": 1}, {"$and": [{"b": 2}, {"a": 1}]}]}) == \
        And((Eq("a", 1), Eq("b", 2)))
    assert parse_filter({"a": {"$ne": "x"}}) == Not(Eq("a", "x"))
    # True == 1 in Python, but not in a filter: the two clauses must both stay
    both = parse_filter({"$and": [{"a": 0}, {"a": False}]})
    assert both == And((Eq("a", 0), Eq("a", False))) and Eq("a", 0) != Eq("a", False)
    assert not both.matches({"a": 0}) and Eq("a", 1) == Eq("a", 1.0)


def test_semantics_examples() -> None:
    f = parse_filter({"tags": "cat"})
    assert f.matches({"tags": ["dog", "cat"]}) and not f.matches({"tags": "dog"})
    assert parse_filter({"n": 1}).matches({"n": 1.0})
    assert not parse_filter({"n": 1}).matches({"n": True})
    assert not parse_filter({"n": "1"}).matches({"n": 1})
    assert parse_filter({"n": {"$ne": 1}}).matches({})  # a missing field passes $ne
    assert not parse_filter({"n": {"$gte": 0}}).matches({"n": "5"})
    assert parse_filter({"n": {"$exists": True}}).matches({"n": None})
    assert parse_filter({"n": {"$exists": False}}).matches({"m": 1})
    lt, lte = parse_filter({"n": {"$lt": 2}}), parse_filter({"n": {"$lte": 2}})
    gt, gte = parse_filter({"n": {"$gt": 2}}), parse_filter({"n": {"$gte": 2.0}})
    assert (lt.matches({"n": 2}), lte.matches({"n": 2}), gt.matches({"n": 2}),
            gte.matches({"n": 2})) == (False, True, False, True)


@pytest.mark.parametrize(("spec", "message"), [
    ({"year": {"$regex": "^19"}}, "unknown operator '$regex' at 'year'"),
    ({"$where": "1"}, "unknown operator '$where' in filter"),
    ({"year": {"$gt": "2020"}}, "'$gt' at 'year' takes a number, got '2020'"),
    ({"year": {"$gt": True}}, "'$gt' at 'year' takes a number, got True"),
    ({"year": None}, "use {'$exists': false} for a missing field"),
    ({"year": {"$in": 5}}, "'$in' at 'year' takes a list, got 5"),
    ({"year": {"$exists": 1}}, "'$exists' at 'year' takes true or false, got 1"),
    ({"year": float("nan")}, "nan is not a finite number"),
    ({"$and": []}, "'$and' takes a non-empty list of filters"),
    ({"$or": {"a": 1}}, "'$or' takes a non-empty list of filters"),
    ({}, "filter is an empty dict"),
    ([{"a": 1}], "filter must be a dict, not list"),
    ({"a": {}}, "'a' has an empty operator dict"),
    ({"": 1}, "field name must be 1 to"),
    ({1: 1}, "key 1 in filter must be a str"),
    ({"a": 2**64}, "outside int64"),
    ({"a": {"$in": list(range(MAX_IN + 1))}}, f"the limit is {MAX_IN}"),
])
def test_errors_name_the_token(spec: Any, message: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(spec)
    assert message in str(info.value)


def test_depth_and_size_limits() -> None:
    deep: dict = {"a": 1}
    for _ in range(MAX_DEPTH + 1):
        deep = {"$not": deep}
    with pytest.raises(FilterError, match="nested deeper than"):
        parse_filter(deep)
    wide = {"$or": [{"a": i} for i in range(2000)]}
    with pytest.raises(FilterError, match="more than 1024 clauses"):
        parse_filter(wide)
