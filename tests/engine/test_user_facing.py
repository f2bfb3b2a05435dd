"""What a new user meets in the Python API (issue 16): scores that mean something, no silent
degradation, messages that name the right thing, the README snippet run twice."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import llmdsdb
from llmdsdb.errors import MissingSideError, MissingSideWarning, QueryError
from tests.engine.dbtestutil import unit_vectors

TEXTS = ["vitamin d and bone fractures", "vitamin c and colds", "bone density in the elderly",
         "sleep and memory", "fractures of the hip"]
IDS = [f"d{i}" for i in range(len(TEXTS))]


@pytest.fixture(params=["cosine", "ip", "l2"])
def db(tmp_path, request):
    d = llmdsdb.open(str(tmp_path / "db"), dim=8, metric=request.param)
    d.add(IDS, TEXTS, embeddings=unit_vectors(len(TEXTS), 8, 1))
    yield d
    d.close()


def test_bm25_only_query_returns_bm25_scores_not_normalised(db) -> None:
    hits = db.search("vitamin fractures", top_k=5, explain=True)
    assert hits and all(h.score == h.explain.bm25_score for h in hits)
    assert hits[0].score != 1.0 and hits[-1].score > 0.0  # raw BM25, not min-max
    assert all(h.explain.bm25_norm is None and h.explain.vector_norm is None for h in hits)


def test_vector_only_query_returns_similarity_and_last_hit_is_not_zero(db) -> None:
    emb = unit_vectors(len(TEXTS), 8, 1)
    q = emb[0] + 0.1 * emb[1]
    hits = db.search(vector=q, top_k=5, explain=True)
    metric = db.config["metric"]
    qn = q / np.linalg.norm(q)
    by_id = dict(zip(IDS, emb))
    for h in hits:
        e = by_id[h.id]
        want = {"cosine": float(e @ qn), "ip": float(e @ q),
                "l2": -float(((e - q) ** 2).sum())}[metric]
        assert h.score == pytest.approx(want, abs=1e-4)
        assert h.explain.vector_norm is None
    assert hits[-1].score != 0.0


def test_hybrid_keeps_fused_score_and_each_sides_raw_score(db) -> None:
    q = unit_vectors(1, 8, 2)[0]
    hits = db.search("vitamin fractures", vector=q, top_k=5, explain=True)
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert any(h.explain.bm25_score is not None and h.explain.vector_distance is not None
               for h in hits)
    assert all(h.explain.vector_norm is not None for h in hits)


def test_vector_query_on_text_only_database_is_an_error(tmp_path) -> None:
    with llmdsdb.open(str(tmp_path / "db")) as d:
        d.add(IDS, TEXTS)
        with pytest.raises(MissingSideError, match="no vectors"):
            d.search(vector=np.ones(8, np.float32))
        assert isinstance(MissingSideError("x"), QueryError)


def test_hybrid_query_on_text_only_database_warns_and_scores_bm25(tmp_path) -> None:
    with llmdsdb.open(str(tmp_path / "db")) as d:
        d.add(IDS, TEXTS)
        with pytest.warns(MissingSideWarning, match="no vectors"):
            hits = d.search("vitamin", vector=np.ones(8, np.float32), explain=True)
        assert hits and all(h.score == h.explain.bm25_score for h in hits)
        assert hits[0].score != 0.5


def test_text_query_on_database_without_text_is_an_error(tmp_path) -> None:
    with llmdsdb.open(str(tmp_path / "db"), dim=8) as d:
        d.add(["a", "b"], ["", ""], embeddings=unit_vectors(2, 8, 0))
        with pytest.raises(MissingSideError, match="no text"):
            d.search("vitamin")


def test_empty_database_returns_nothing_without_error(tmp_path) -> None:
    with llmdsdb.open(str(tmp_path / "db"), dim=8) as d, warnings.catch_warnings():
        warnings.simplefilter("error")
        assert d.search("vitamin") == [] and d.search(vector=np.ones(8)) == []


def test_search_with_no_arguments_does_not_speak_of_lists(tmp_path) -> None:
    with llmdsdb.open(str(tmp_path / "db")) as d:
        with pytest.raises(QueryError) as ei:
            d.search()
        assert "queries, vectors" not in str(ei.value) and "query text" in str(ei.value)


def test_upsert_without_embeddings_keeps_the_stored_vector(tmp_path) -> None:
    emb = unit_vectors(2, 8, 3)
    with llmdsdb.open(str(tmp_path / "db"), dim=8) as d:
        d.add(["a", "b"], ["alpha", "beta"], embeddings=emb)
        assert d.upsert(["a"], ["alpha"], metadata=[{"tag": "new"}]) == 1
        got = d.get("a")
        assert got.metadata == {"tag": "new"} and np.array_equal(got.embedding, emb[0])
        assert d.search(vector=emb[0], top_k=1)[0].id == "a"
        assert d.upsert(["a"], ["alpha"], metadata=[{"tag": "new"}]) == 0  # unchanged
        d.upsert(["a"], ["alpha"], embeddings=[None])  # an explicit None drops it
        assert d.get("a").embedding is None
        assert [h.id for h in d.search(vector=emb[0], top_k=2)] == ["b"]
        d.upsert(["c"], ["gamma"])  # a new document without a vector is fine
        assert d.get("c").embedding is None


def test_conveniences_getitem_iteration_get_many_ids(tmp_path) -> None:
    from llmdsdb.errors import DocumentNotFoundError

    emb = unit_vectors(len(TEXTS), 8, 1)
    with llmdsdb.open(str(tmp_path / "db"), dim=8) as d:
        d.add(IDS, TEXTS, embeddings=emb)
        assert d["d1"].text == TEXTS[1] and np.array_equal(d["d1"].embedding, emb[1])
        with pytest.raises(KeyError):  # DocumentNotFoundError is a KeyError
            d["nope"]
        with pytest.raises(DocumentNotFoundError):
            d["nope"]
        assert sorted(doc.id for doc in d) == sorted(IDS)
        got = d.get_many(["d2", "nope", "d0"])
        assert [g.id if g else None for g in got] == ["d2", None, "d0"]
        assert sorted(d.ids()) == sorted(IDS)
        with pytest.raises(llmdsdb.errors.InvalidTypeError):
            d.get_many("d0")


def test_offset_pages_through_the_same_ranking(db) -> None:
    full = [(h.id, h.score) for h in db.search("vitamin fractures bone hip", top_k=5)]
    pages = [(h.id, h.score) for off in range(0, 5, 2)
             for h in db.search("vitamin fractures bone hip", top_k=2, offset=off)]
    assert pages == full
    assert db.search("vitamin", top_k=3, offset=100) == []
    with pytest.raises(QueryError, match="top_k \\+ offset"):
        db.search("vitamin", top_k=10, offset=llmdsdb.db.MAX_TOP_K)
    with pytest.raises(llmdsdb.errors.InvalidArgumentError):
        db.search("vitamin", offset=-1)


def test_include_and_embedding_in_results(db) -> None:
    emb = dict(zip(IDS, unit_vectors(len(TEXTS), 8, 1)))
    hits = db.search("vitamin", top_k=3, include=["embedding", "metadata", "text"])
    assert hits and all(np.allclose(h.embedding, emb[h.id]) for h in hits)
    assert all(h.text == TEXTS[IDS.index(h.id)] for h in hits)
    with pytest.raises(llmdsdb.errors.InvalidArgumentError, match="unknown field"):
        db.search("vitamin", include=["vectors"])


def test_top_k_cap_is_higher_than_1000(db) -> None:
    assert len(db.search("vitamin", top_k=5000)) == 2  # allowed; all the matches
    with pytest.raises(QueryError):
        db.search("vitamin", top_k=llmdsdb.db.MAX_TOP_K + 1)
