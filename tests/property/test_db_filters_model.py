"""Filtered search, count, delete(filter=) and update_metadata against brute force.

A stateful machine writes random documents (text, vector, metadata) into a real database,
changes metadata, deletes by id and by filter, reopens, and checks every filtered query
against a model: the same top-k ids as an exact filtered search - for BM25 the unfiltered
ranking of every document restricted to the allowed ones (the scores do not depend on the
filter), for vectors the exact distances computed with numpy - and exactly
``min(k, matching)`` hits.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_filters import json_like

import llmdsdb
from llmdsdb.errors import MissingSideError, MissingSideWarning
from llmdsdb.filters import parse_filter

DIM = 6
IDS = st.sampled_from([f"id{i}" for i in range(40)])
WORDS = ["apple", "banana", "cherry", "delta", "echo", "golf"]
TEXT = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)
VEC = st.one_of(st.none(), st.lists(st.floats(-1, 1, width=32), min_size=DIM, max_size=DIM)
                .filter(lambda v: sum(x * x for x in v) > 0.01)
                .map(lambda v: np.array(v, dtype=np.float32)))
META = st.fixed_dictionaries({"b": st.integers(0, 4)},
                             optional={"t": st.lists(st.sampled_from(["x", "y", "z"]),
                                                     max_size=2),
                                       "y": st.one_of(st.integers(1990, 1995),
                                                      st.floats(1990, 1995))})
FILTER = st.one_of(
    st.builds(lambda b: {"b": b}, st.integers(0, 4)),
    st.builds(lambda b: {"b": {"$ne": b}}, st.integers(0, 4)),
    st.builds(lambda bs: {"b": {"$in": bs}}, st.lists(st.integers(0, 5), min_size=1,
                                                       max_size=3)),
    st.builds(lambda lo: {"y": {"$gte": lo}}, st.floats(1989, 1996)),
    st.builds(lambda t: {"t": t}, st.sampled_from(["x", "y", "z"])),
    st.just({"t": {"$exists": False}}),
    st.builds(lambda b, t: {"$or": [{"b": b}, {"t": t}]}, st.integers(0, 4),
              st.sampled_from(["x", "y"])),
    st.builds(lambda b: {"$not": {"b": {"$lte": b}}}, st.integers(0, 4)),
)


class FilteredDatabaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="dbfilters-")
        self.path = self.dir + "/db"
        self.db = llmdsdb.open(self.path, dim=DIM, fresh_max_vectors=8)
        self.model: dict[str, tuple[str, np.ndarray | None, dict]] = {}

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _matching(self, spec: dict) -> set[str]:
        f = parse_filter(spec)
        return {i for i, (_t, _v, m) in self.model.items() if f.matches(m)}

    @rule(items=st.dictionaries(IDS, st.tuples(TEXT, VEC, META), min_size=1, max_size=6))
    def upsert(self, items):
        ids = list(items)
        self.db.upsert(ids, [d[0] for d in items.values()], [d[1] for d in items.values()],
                       [d[2] for d in items.values()])
        for i, (t, v, m) in items.items():
            self.model[i] = (t, v, dict(m))

    @rule(ids=st.lists(IDS, max_size=3))
    def delete(self, ids):
        self.db.delete(ids)
        for i in ids:
            self.model.pop(i, None)

    @rule(spec=FILTER)
    def delete_filter(self, spec):
        gone = self._matching(spec)
        assert self.db.delete(filter=spec) == len(gone)
        for i in gone:
            del self.model[i]

    @rule(data=st.data(), meta=META, merge=st.booleans())
    def update_metadata(self, data, meta, merge):
        if not self.model:
            return
        i = data.draw(st.sampled_from(sorted(self.model)))
        t, v, old = self.model[i]
        self.db.update_metadata([i], [meta], merge=merge)
        self.model[i] = (t, v, {**old, **meta} if merge else dict(meta))

    @rule()
    def reopen(self):
        self.db.close()
        self.db = llmdsdb.open(self.path)

    @rule(spec=FILTER, k=st.integers(1, 8), word=st.sampled_from(WORDS))
    def search_text(self, spec, k, word):
        allowed = self._matching(spec)
        full = self.db.search(word, top_k=100, fusion_weight=0.0)
        want = [r for r in full if r.id in allowed][:k]
        got = self.db.search(word, top_k=k, fusion_weight=0.0, filter=spec, explain=True)
        assert [r.id for r in got] == [r.id for r in want], (spec, word)
        assert np.allclose([r.score for r in got], [r.score for r in want])
        assert all(r.plan.exact and r.plan.allowed == len(allowed) for r in got)

    @rule(spec=FILTER, k=st.integers(1, 8), q=VEC.filter(lambda v: v is not None))
    def search_vector(self, spec, k, q):
        allowed = [(i, v) for i, (_t, v, m) in sorted(self.model.items())
                   if v is not None and i in self._matching(spec)]
        if self.model and all(v is None for _t, v, _m in self.model.values()):
            with pytest.raises(MissingSideError):
                self.db.search(vector=q, top_k=k, fusion_weight=1.0, filter=spec)
            return
        got = self.db.search(vector=q, top_k=k, fusion_weight=1.0, filter=spec)
        assert len(got) == min(k, len(allowed))
        if not allowed:
            return
        V = np.stack([v for _, v in allowed]).astype(np.float64)
        sims = (V / np.linalg.norm(V, axis=1)[:, None]) @ (q / np.linalg.norm(q))
        want = np.sort(sims)[::-1][:k]
        assert np.allclose([r.score for r in got], want, atol=1e-5), (spec, got, want)
        # the ids: those of the exact top k, up to ties within float32 precision
        by_id = dict(zip([i for i, _ in allowed], sims))
        for r in got:
            assert abs(by_id[r.id] - r.score) < 1e-5

    @rule(spec=FILTER, word=st.sampled_from(WORDS))
    def search_hybrid_returns_k(self, spec, word):
        allowed = self._matching(spec)
        q = np.ones(DIM, np.float32)
        n_vec = sum(1 for i in allowed if self.model[i][1] is not None)
        n_txt = sum(1 for i in allowed if word in self.model[i][0].split())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingSideWarning)
            got = self.db.search(word, vector=q, top_k=5, filter=spec)
        assert {r.id for r in got} <= allowed
        assert len(got) >= min(5, max(n_vec, n_txt))

    @invariant()
    def counts(self):
        for spec in ({"b": 1}, {"t": {"$exists": True}}, {"y": {"$lt": 1993}}):
            assert self.db.count(spec) == len(self._matching(spec))
        assert self.db.count() == len(self.model)


FilteredDatabaseMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20,
                                                     deadline=None)
TestFilteredDatabase = FilteredDatabaseMachine.TestCase


def test_healthy_after_filtered_writes(tmp_path):
    rng = np.random.default_rng(3)
    with llmdsdb.open(str(tmp_path / "db"), dim=DIM) as db:
        db.add([f"d{i}" for i in range(300)], ["apple banana"] * 300,
               rng.standard_normal((300, DIM)).astype(np.float32),
               [{"b": i % 5} for i in range(300)])
        db.delete(filter={"b": 2})
        db.update_metadata([f"d{i}" for i in range(0, 300, 7) if i % 5 != 2],
                           [{"b": 9}] * len([i for i in range(0, 300, 7) if i % 5 != 2]))
        assert db.check() == []
        assert db.count({"b": 2}) == 0


_FUZZ_DB: dict = {}


def _fuzz_db() -> llmdsdb.Database:
    """One small database shared by the fuzz examples (read-only use)."""
    if "db" not in _FUZZ_DB:
        d = tempfile.mkdtemp(prefix="dbfilters-fuzz-")
        db = llmdsdb.open(d + "/db", dim=DIM)
        rng = np.random.default_rng(5)
        db.add([f"f{i}" for i in range(40)], [" ".join(WORDS[: 1 + i % 6]) for i in range(40)],
               rng.standard_normal((40, DIM)).astype(np.float32),
               [{"a": i % 3, "b": [i % 2, "x"], "": None, "$x": i} for i in range(40)])
        _FUZZ_DB["db"], _FUZZ_DB["gen"] = db, db.generation
    return _FUZZ_DB["db"]


@settings(max_examples=200, deadline=None)
@given(json_like)
def test_fuzzed_filters_through_the_database(spec):
    """Any JSON-like filter given to count / search / delete either works - with the
    semantics of Filter.matches - or raises FilterError naming where; nothing is written
    (delete runs inside a batch that is rolled back)."""
    from llmdsdb.errors import FilterError

    if spec is None:
        return  # None is "no filter" in the database API
    db = _fuzz_db()
    try:
        f = parse_filter(spec)
    except FilterError as exc:
        for call in (lambda: db.count(spec), lambda: db.search("apple", filter=spec)):
            with pytest.raises(FilterError) as got:
                call()
            assert str(got.value) == str(exc)
        return
    want = {d.id for d in db.iter_documents() if f.matches(d.metadata)}
    assert db.count(spec) == len(want)
    assert {r.id for r in db.search("apple", top_k=40, fusion_weight=0.0, filter=spec)} == want
    with pytest.raises(RuntimeError), db.batch():
        db.delete(filter=spec)
        raise RuntimeError("roll back")
    assert db.generation == _FUZZ_DB["gen"]
