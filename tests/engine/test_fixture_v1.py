"""The format-version-1 fixture (storage/fixtures/v1/data.mdb, written by
tools/make_fixture.py) opens read-only and reads back exactly what was written."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import llmdsdb

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "storage" / "fixtures" / "v1" / "data.mdb"
sys.path.insert(0, str(REPO / "tools"))

from make_fixture import fixture_spec  # noqa: E402


@pytest.fixture
def fixture_db(tmp_path):
    if not FIXTURE.exists():
        pytest.fail(f"missing {FIXTURE}; run python tools/make_fixture.py")
    d = tmp_path / "v1"
    d.mkdir(mode=0o700)
    shutil.copyfile(FIXTURE, d / "data.mdb")
    with llmdsdb.open(str(d), readonly=True) as db:
        yield db


def test_fixture_v1_contents(fixture_db):
    db = fixture_db
    spec = fixture_spec()
    assert db.generation == spec["generation"]
    assert db.count() == len(spec["final"])
    assert db.dim == spec["dim"]
    assert db.config["metric"] == "cosine" and db.config["hnsw_M"] == 8
    assert db.copy_to  # the API is there; copying needs a writable target (tested elsewhere)
    got = {d.id: d for d in db.iter_documents()}
    assert set(got) == set(spec["final"])
    for i, (text, emb, meta) in spec["final"].items():
        d = got[i]
        assert d.text == text and d.metadata == meta
        if emb is None:
            assert d.embedding is None
        else:
            np.testing.assert_array_equal(d.embedding, emb)
    assert spec["delete"] not in db
    assert db.check() == []


def test_fixture_v1_search(fixture_db):
    db = fixture_db
    spec = fixture_spec()
    assert [r.id for r in db.search("glacier replaced", top_k=1, fusion_weight=0.0)] == \
        [spec["upsert"][0]]
    e = spec["final"]["doc-04"][1]
    assert db.search(vector=e, top_k=1, fusion_weight=1.0)[0].id == "doc-04"
    long_id = spec["ids"][-1]
    assert db.get(long_id).id == long_id


def _matching(spec: dict, f) -> set[str]:
    return {i for i, (_t, _e, m) in spec["final"].items() if f.matches(m)}


FIXTURE_FILTERS = [{"ok": True}, {"n": {"$gte": 4, "$lt": 9}}, {"tags": "x"},
                   {"f": {"$gt": 0.5}}, {"none": {"$exists": True}},
                   {"$not": {"tags": {"$in": ["orbit", "river"]}}}, {"n": 99}]


def test_fixture_v1_filters_without_stored_metadata_indexes(fixture_db):
    """Format 1 files written before the metadata indexes: a read-only handle builds them
    in memory and filters agree with the reference semantics."""
    from llmdsdb.filters import parse_filter

    spec = fixture_spec()
    for spec_f in FIXTURE_FILTERS:
        f = parse_filter(spec_f)
        want = _matching(spec, f)
        assert fixture_db.count(spec_f) == len(want), spec_f
        got = {r.id for r in fixture_db.search("study effect", top_k=20, fusion_weight=0.0,
                                                filter=spec_f)}
        assert got == {i for i in want if "study" in spec["final"][i][0]}, spec_f
        vec = fixture_db.search(vector=spec["embs"][0], top_k=20, fusion_weight=1.0,
                                filter=spec_f)
        assert {r.id for r in vec} == {i for i in want if spec["final"][i][1] is not None}


def test_fixture_v1_first_write_persists_metadata_indexes(tmp_path):
    from llmdsdb.filters import parse_filter

    d = tmp_path / "v1w"
    d.mkdir(mode=0o700)
    shutil.copyfile(FIXTURE, d / "data.mdb")
    spec = fixture_spec()
    with llmdsdb.open(str(d)) as db:
        assert db.count({"n": 99}) == 1
        db.update_metadata(["doc-00"], [{"n": 1000}])
        assert db.check() == []
    with llmdsdb.open(str(d), readonly=True) as db:
        assert db._state.ix.meta.built  # stored now: no rebuild on open
        for spec_f in FIXTURE_FILTERS:
            want = _matching(spec, parse_filter(spec_f)) - {"doc-00"}
            if parse_filter(spec_f).matches({"n": 1000}):
                want.add("doc-00")
            assert db.count(spec_f) == len(want), spec_f
