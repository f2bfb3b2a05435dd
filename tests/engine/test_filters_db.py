"""Filters in the database: count(filter=), delete(filter=), update_metadata, on real LMDB
files; the metadata index kept in step with every write, across reopen."""

from __future__ import annotations

import numpy as np
import pytest

import llmdsdb
from llmdsdb.errors import (
    DocumentNotFoundError,
    DuplicateIdError,
    FilterError,
    InvalidArgumentError,
    InvalidTypeError,
    ReadOnlyError,
)
from llmdsdb.filters import parse_filter


def _meta(i: int) -> dict:
    return {"bucket": i % 10, "year": 1990 + i % 30, "lang": "en" if i % 3 else "de",
            "tags": ["a", "b"] if i % 4 == 0 else ["c"]}


@pytest.fixture
def db(tmp_path):
    rng = np.random.default_rng(7)
    n = 200
    with llmdsdb.open(str(tmp_path / "db"), dim=8) as d:
        d.add([f"d{i}" for i in range(n)], [f"doc {i} about cats and dogs {i % 7}"
                                             for i in range(n)],
              embeddings=rng.standard_normal((n, 8)).astype(np.float32),
              metadata=[_meta(i) for i in range(n)])
        yield d


def _want(db, spec) -> set[str]:
    f = parse_filter(spec)
    return {d.id for d in db.iter_documents() if f.matches(d.metadata)}


SPECS = [{"bucket": 3}, {"year": {"$gte": 2000, "$lt": 2005}}, {"tags": "a"},
         {"lang": {"$ne": "en"}}, {"$or": [{"bucket": 1}, {"tags": {"$in": ["b"]}}]},
         {"missing": {"$exists": False}}, {"bucket": {"$nin": [1, 2, 3]}, "lang": "de"}]


@pytest.mark.parametrize("spec", SPECS)
def test_count_filter_matches_brute_force(db, spec):
    assert db.count(spec) == len(_want(db, spec))


def test_update_metadata_replaces_and_merges(db):
    before = db["d5"]
    assert db.update_metadata(["d5", "d6"], [{"bucket": 777}, None]) == 2
    after = db["d5"]
    assert after.metadata == {"bucket": 777}
    assert after.text == before.text and np.array_equal(after.embedding, before.embedding)
    assert db["d6"].metadata == {}
    assert db.count({"bucket": 777}) == 1
    assert db.count({"bucket": 5}) == len(_want(db, {"bucket": 5}))
    assert db.update_metadata(["d5"], [{"year": 1}], merge=True) == 1
    assert db["d5"].metadata == {"bucket": 777, "year": 1}
    assert db.update_metadata(["d5"], [{"year": 1}], merge=True) == 0  # unchanged
    gen = db.generation
    # upsert with the same content after update_metadata is a no-op (hash in step)
    assert db.upsert(["d5"], [after.text], [after.embedding], [{"bucket": 777, "year": 1}]) == 0
    assert db.generation == gen
    db._check()


def test_update_metadata_missing_id_writes_nothing(db):
    gen = db.generation
    with pytest.raises(DocumentNotFoundError, match="'nope'"):
        db.update_metadata(["d1", "nope"], [{"x": 1}, {"x": 2}])
    with pytest.raises(DuplicateIdError):
        db.update_metadata(["d1", "d1"], [{}, {}])
    with pytest.raises(InvalidTypeError):
        db.update_metadata(["d1"], [[1, 2]])
    with pytest.raises(InvalidArgumentError):
        db.update_metadata(["d1"], [{}, {}])
    assert db.generation == gen and db.count({"x": {"$exists": True}}) == 0


def test_update_metadata_in_batch_then_delete(db):
    with db.batch():
        db.update_metadata(["d1"], [{"bucket": 555}])
        db.add(["new"], ["fresh doc"], metadata=[{"bucket": 555}])
        db.delete(filter={"bucket": 555})
    assert "d1" not in db and "new" not in db
    assert db.count({"bucket": 555}) == 0
    db._check()


def test_delete_filter(db):
    want = _want(db, {"lang": "de", "bucket": {"$lt": 5}})
    assert db.delete(filter={"lang": "de", "bucket": {"$lt": 5}}) == len(want)
    assert not any(i in db for i in want)
    assert db.count({"lang": "de", "bucket": {"$lt": 5}}) == 0
    assert db.delete(filter={"bucket": 12345}) == 0
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        db.delete(["d1"], filter={"bucket": 1})
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        db.delete()
    with pytest.raises(FilterError, match=r"\$regex"):
        db.delete(filter={"bucket": {"$regex": "x"}})
    db._check()


def test_index_survives_reopen_and_upserts(tmp_path, db):
    path = db.path
    db.upsert(["d0"], ["changed"], metadata=[{"bucket": 4242}])
    db.delete(["d1"])
    db.close()
    with llmdsdb.open(path, readonly=True) as ro:
        assert ro.count({"bucket": 4242}) == 1
        assert ro.count({"bucket": 1}) == len(_want(ro, {"bucket": 1}))
        with pytest.raises(ReadOnlyError):
            ro.update_metadata(["d2"], [{}])
        with pytest.raises(ReadOnlyError):
            ro.delete(filter={"bucket": 1})
        assert ro.check() == []


def test_filter_errors_name_the_token(db):
    with pytest.raises(FilterError, match="'year'"):
        db.count({"year": {"$gt": "x"}})
    with pytest.raises(FilterError, match="dict"):
        db.count(["bucket"])  # type: ignore[arg-type]


def test_readme_filter_example_runs(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    readme = Path(__file__).resolve().parents[2] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.DOTALL)
    example = next(b for b in blocks if "filter=" in b)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(blocks[0], "README-tour", "exec"), ns)  # noqa: S102 - our own README
    exec(compile(example, "README-filters", "exec"), ns)  # noqa: S102
    assert "SearchPlan(" in capsys.readouterr().out
    with llmdsdb.open(str(tmp_path / "my-db")) as db:
        assert db["a"].metadata == {"lang": "fr"}
        assert db.count({"lang": "en"}) == len(db) - 1


def test_explain_names_a_walk_that_handed_over_to_the_exact_scan(tmp_path, monkeypatch):
    """A planned filtered walk that runs past its budget is answered by the exact scan:
    the hit's plan says so (not the planned "filtered-graph") and the hits are exact."""
    import llmdsdb.hnsw as hnsw_mod

    rng = np.random.default_rng(3)
    n, dim = 2000, 32
    X = rng.normal(size=(n, dim)).astype(np.float32)  # i.i.d.: the walk wanders
    with llmdsdb.open(tmp_path / "db", dim=dim, fresh_max_vectors=1) as db:
        db.add([f"d{i}" for i in range(n)], [""] * n, embeddings=X,
               metadata=[{"b": i % 3} for i in range(n)])
        db.optimize()  # every vector in the graph
        q = rng.normal(size=dim).astype(np.float32)
        exact = db.search(vector=q, top_k=10, filter={"b": 0}, explain=True)
        assert {r.plan.vector for r in exact} == {"allowed-scan"} and exact[0].plan.exact
        monkeypatch.setattr(hnsw_mod, "FILTER_EXACT_MAX", 0)
        monkeypatch.setattr(hnsw_mod, "FILTER_EXACT_FRACTION", 0.0)
        monkeypatch.setattr(hnsw_mod, "EXACT_COMPONENTS", 0)
        monkeypatch.setattr(hnsw_mod, "FILTER_WALK_BUDGET", 0.001)
        got = db.search(vector=q, top_k=10, filter={"b": 0}, explain=True)
        assert {r.plan.vector for r in got} == {"walk-budget-scan"}
        assert all(r.plan.exact for r in got)
        assert [r.id for r in got] == [r.id for r in exact]


def test_a_kept_filter_follows_every_change(tmp_path):
    """The allowed set of a repeated filter is kept between queries, and every change of
    the metadata (add, update_metadata, delete, a batch, a failed batch) is seen by the
    next query under the same filter (a batch's calls are written when it ends)."""
    with llmdsdb.open(tmp_path / "db") as db:
        db.add(["a", "b"], ["apple pie", "apple tart"], metadata=[{"k": 1}, {"k": 2}])
        f = {"k": 1}

        def ids():
            return sorted(r.id for r in db.search("apple", top_k=10, filter=f))

        assert ids() == ["a"] and ids() == ["a"]  # the second from the kept set
        db.add(["c"], ["apple crumble"], metadata=[{"k": 1}])
        assert ids() == ["a", "c"]
        db.update_metadata(["a"], [{"k": 2}])
        assert ids() == ["c"]
        db.delete(["c"])
        assert ids() == []
        with db.batch():
            db.update_metadata(["b"], [{"k": 1}])
            assert ids() == []  # recorded, not written yet
        assert ids() == ["b"]
        with pytest.raises(RuntimeError), db.batch():
            db.update_metadata(["a"], [{"k": 1}])
            raise RuntimeError("abandon the batch")
        assert ids() == ["b"]
        assert db.count(filter=f) == 1
