"""Every bad input of RELIABILITY.md §4.6 that applies to the Python API: a typed error, the
database unchanged (canonical dump and generation), and check() clean. Run with
``pytest -k badinput``."""

from __future__ import annotations

import numpy as np
import pytest

import llmdsdb
from llmdsdb.errors import (
    DimensionError,
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    LlmdsdbError,
    NonFiniteError,
    QueryError,
    ZeroVectorError,
)

from dbtestutil import dump, unit_vectors

DIM = 4


def _vec(*vals: float) -> np.ndarray:
    return np.array(vals, dtype=np.float32)


GOOD = np.ones(DIM, dtype=np.float32)

# (case id (§4.6 number where there is one), call, expected error)
CASES = [
    ("02-empty-id", lambda db: db.add([""], ["x"]), InvalidArgumentError),
    ("02-empty-id-upsert", lambda db: db.upsert([""], ["x"]), InvalidArgumentError),
    ("02-empty-id-delete", lambda db: db.delete([""]), InvalidArgumentError),
    ("03-id-too-long", lambda db: db.add(["x" * (64 * 1024 + 1)], ["x"]), InvalidArgumentError),
    ("04-duplicate-in-call", lambda db: db.add(["n", "n"], ["a", "b"]), DuplicateIdError),
    ("04-duplicate-upsert", lambda db: db.upsert(["n", "n"], ["a", "b"]), DuplicateIdError),
    ("04-existing-id", lambda db: db.add(["n", "a0"], ["a", "b"]), DuplicateIdError),
    ("05-bytes-text", lambda db: db.add(["n"], [b"\xff\xfe"]), InvalidTypeError),
    ("05-bytes-id", lambda db: db.add([b"n"], ["x"]), InvalidTypeError),
    ("06-lone-surrogate-text", lambda db: db.add(["n"], ["a\ud800b"]), InvalidArgumentError),
    ("06-lone-surrogate-id", lambda db: db.add(["\udfff"], ["x"]), InvalidArgumentError),
    ("07-giant-document", lambda db: db.add(["n"], ["x" * (10 * 1024 * 1024 + 1)]),
     InvalidArgumentError),
    ("10-nan-vector", lambda db: db.add(["n"], ["x"], embeddings=[_vec(1, np.nan, 0, 0)]),
     NonFiniteError),
    ("11-inf-vector", lambda db: db.add(["n"], ["x"], embeddings=[_vec(1, np.inf, 0, 0)]),
     NonFiniteError),
    ("11-neg-inf-vector", lambda db: db.add(["n"], ["x"], embeddings=[_vec(-np.inf, 1, 0, 0)]),
     NonFiniteError),
    ("12-dim-plus-one", lambda db: db.add(["n"], ["x"], embeddings=[np.ones(DIM + 1)]),
     DimensionError),
    ("12-dim-minus-one", lambda db: db.add(["n"], ["x"], embeddings=[np.ones(DIM - 1)]),
     DimensionError),
    ("12-dim-zero", lambda db: db.add(["n"], ["x"], embeddings=[np.ones(0)]), DimensionError),
    ("12-matrix-wrong-dim", lambda db: db.add(["n"], ["x"], embeddings=np.ones((1, 7))),
     DimensionError),
    ("12-one-bad-row-of-many", lambda db: db.add(["n", "m"], ["x", "y"],
                                                 embeddings=[GOOD, np.ones(DIM + 1)]),
     DimensionError),
    ("13-zero-vector", lambda db: db.add(["n"], ["x"], embeddings=[np.zeros(DIM)]),
     ZeroVectorError),
    ("14-object-dtype", lambda db: db.add(["n"], ["x"], embeddings=[np.array([1, "a", 2, 3],
                                                                             dtype=object)]),
     InvalidTypeError),
    ("14-complex-dtype", lambda db: db.add(["n"], ["x"], embeddings=[np.ones(DIM) * 1j]),
     InvalidTypeError),
    ("14-2d-row", lambda db: db.add(["n"], ["x"], embeddings=[np.ones((1, DIM))]),
     DimensionError),
    ("14-ragged", lambda db: db.add(["n"], ["x"], embeddings=np.array([[1.0, 2.0], [1.0]],
                                                                      dtype=object)),
     InvalidTypeError),
    ("15-overflow", lambda db: db.add(["n"], ["x"], embeddings=[np.full(DIM, 1e39)]),
     NonFiniteError),
    ("17-query-10MB", lambda db: db.search("word " * 2_000_000), QueryError),
    ("18-k-zero", lambda db: db.search("x", top_k=0), QueryError),
    ("18-k-negative", lambda db: db.search("x", top_k=-3), QueryError),
    ("18-k-huge", lambda db: db.search("x", top_k=10**9), QueryError),
    ("18-k-float", lambda db: db.search("x", top_k=2.5), QueryError),
    ("18-k-bool", lambda db: db.search("x", top_k=True), QueryError),
    ("19-filter-unsupported", lambda db: db.search("x", filter={"a": {"$regex": "x"}}),
     InvalidArgumentError),
    ("22-filter-code", lambda db: db.search("x", filter="__import__('os')"),
     InvalidArgumentError),
    ("35-metadata-2pow64", lambda db: db.add(["n"], ["x"], metadata=[{"v": 2**64}]),
     InvalidArgumentError),
    ("35-metadata-nan", lambda db: db.add(["n"], ["x"], metadata=[{"v": float("nan")}]),
     NonFiniteError),
    ("35-metadata-inf-nested", lambda db: db.add(["n"], ["x"],
                                                 metadata=[{"v": [1, {"w": float("inf")}]}]),
     NonFiniteError),
    ("35-metadata-bad-key", lambda db: db.add(["n"], ["x"], metadata=[{1: "a"}]),
     InvalidTypeError),
    ("35-metadata-bad-type", lambda db: db.add(["n"], ["x"], metadata=[{"v": object()}]),
     InvalidTypeError),
    ("35-metadata-bytes", lambda db: db.add(["n"], ["x"], metadata=[{"v": b"\x80pickle"}]),
     InvalidTypeError),
    ("35-metadata-too-deep", lambda db: db.add(["n"], ["x"], metadata=[_deep(40)]),
     InvalidArgumentError),
    ("text-not-str", lambda db: db.add(["n"], [42]), InvalidTypeError),
    ("text-none", lambda db: db.add(["n"], [None]), InvalidTypeError),
    ("ids-bare-str", lambda db: db.add("abc", ["a", "b", "c"]), InvalidTypeError),
    ("ids-texts-length", lambda db: db.add(["n", "m"], ["a"]), InvalidArgumentError),
    ("embeddings-length", lambda db: db.add(["n", "m"], ["a", "b"], embeddings=[GOOD]),
     InvalidArgumentError),
    ("metadata-length", lambda db: db.add(["n", "m"], ["a", "b"], metadata=[{}]),
     InvalidArgumentError),
    ("metadata-not-dict", lambda db: db.add(["n"], ["a"], metadata=["x"]), InvalidTypeError),
    ("metadata-dict-not-list", lambda db: db.add(["n"], ["a"], metadata={"a": 1}),
     InvalidTypeError),
    ("delete-not-list", lambda db: db.delete("a0"), InvalidTypeError),
    ("query-not-str", lambda db: db.search(12), InvalidTypeError),
    ("query-nothing", lambda db: db.search(), QueryError),
    ("query-vector-nan", lambda db: db.search(vector=_vec(1, np.nan, 0, 0)), NonFiniteError),
    ("query-vector-dim", lambda db: db.search(vector=np.ones(DIM + 1)), DimensionError),
    ("query-vector-zero", lambda db: db.search(vector=np.zeros(DIM)), ZeroVectorError),
    ("fusion-weight-range", lambda db: db.search("x", fusion_weight=1.5), InvalidArgumentError),
    ("fusion-weight-nan", lambda db: db.search("x", fusion_weight=float("nan")),
     InvalidArgumentError),
    ("fusion-unknown", lambda db: db.search("x", fusion="max"), InvalidArgumentError),
    ("normalization-unknown", lambda db: db.search("x", normalization="l2"),
     InvalidArgumentError),
    ("search-many-lengths", lambda db: db.search_many(["a", "b"], [GOOD]),
     InvalidArgumentError),
    ("batch-bad-call", lambda db: _batch_with_bad_call(db), DimensionError),
    ("explain-not-bool", lambda db: db.search("x", explain="no"), InvalidTypeError),
    ("copy-to-not-a-path", lambda db: db.copy_to(5), InvalidTypeError),
    ("open-analyzer-bad-dict", lambda db: llmdsdb.open(db.path + "-x", analyzer={"stem": 1}),
     InvalidArgumentError),
]


def _deep(n: int) -> dict:
    d: dict = {}
    for _ in range(n):
        d = {"a": d}
    return d


def _batch_with_bad_call(db: llmdsdb.Database) -> None:
    with db.batch():
        db.add(["ok"], ["fine"], embeddings=[GOOD])
        db.add(["bad"], ["x"], embeddings=[np.ones(DIM + 2)])


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("badinput") / "db"
    with llmdsdb.open(str(path)) as d:
        d.add([f"a{i}" for i in range(5)], [f"alpha text {i}" for i in range(5)],
              embeddings=unit_vectors(5, DIM, 0), metadata=[{"i": i} for i in range(5)])
        yield d


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_badinput(db, case):
    _, call, expected = case
    before = dump(db)
    with pytest.raises(expected) as info:
        call(db)
    assert isinstance(info.value, LlmdsdbError)
    assert str(info.value)  # a message, not an empty error
    assert dump(db) == before
    assert db.check() == []


def test_badinput_accepted_edge_cases(tmp_path):
    """Inputs §4.6 allows to be accepted: empty text (1), long ids (3), NUL and control
    characters (6), one giant token (9), float64/int vectors (14), huge finite values (15),
    an empty query (16)."""
    with llmdsdb.open(str(tmp_path / "db")) as db:
        long_id = "ü" * 600
        db.add(["empty", long_id, "ctrl", "tok"],
               ["", "long id", "nul\x00and\x07bell text", "y" * 1_000_000],
               embeddings=[np.ones(DIM, dtype=np.float64), np.arange(1, DIM + 1),
                           np.full(DIM, 1e37), None])
        assert db.get("empty").text == "" and db.get(long_id).id == long_id
        assert db.get("ctrl").text == "nul\x00and\x07bell text"
        assert db.get("empty").embedding.dtype == np.float32
        assert db.search("") == [] and db.search(" \t\n ") == []
        assert [r.id for r in db.search("bell")] == ["ctrl"]
        assert db.check() == []


# --- issue 13, finding 2: one vector rule, applied before anything is written -------------

# finite in float32, but its norm (~6e18) is above what the graph's float32 arithmetic holds
TOO_LARGE = np.full(DIM, 3e18, dtype=np.float32)
JUST_BELOW = np.full(DIM, 2.3e18, dtype=np.float32)  # norm ~4.6e18 * 0.998


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_a_vector_the_graph_cannot_hold_is_refused_by_every_layer(tmp_path, metric):
    from llmdsdb._validate import MAX_VECTOR_NORM
    from llmdsdb.hnsw import HNSW
    from llmdsdb.retrieval_pipeline import RetrievalPipeline

    assert float(np.linalg.norm(TOO_LARGE.astype(np.float64))) > MAX_VECTOR_NORM
    assert float(np.linalg.norm(JUST_BELOW.astype(np.float64))) <= MAX_VECTOR_NORM
    with llmdsdb.open(str(tmp_path / "db"), metric=metric, fresh_max_vectors=4) as db:
        db.add(["a"], ["x"], embeddings=[GOOD])
        before = dump(db)
        for call in (lambda: db.add(["b"], ["y"], embeddings=[TOO_LARGE]),
                     lambda: db.upsert(["a"], ["x"], embeddings=TOO_LARGE[None, :]),
                     lambda: db.search(vector=TOO_LARGE)):
            with pytest.raises(NonFiniteError):
                call()
        assert dump(db) == before
        # the same rule in the index and the pipeline: refused there too, accepted below it
        with pytest.raises(NonFiniteError):
            HNSW(DIM, metric=metric).add(TOO_LARGE, 1)
        with pytest.raises(NonFiniteError):
            RetrievalPipeline(embedding_dim=DIM, metric=metric).add_document(1, "t", TOO_LARGE)
        HNSW(DIM, metric=metric).add(JUST_BELOW, 1)
        db.add(["c"], ["z"], embeddings=[JUST_BELOW])
        # nothing wedged: vector search, the merge into the graph and later writes work
        assert db.search(vector=GOOD, fusion_weight=1.0, top_k=2)
        db.add([f"n{i}" for i in range(6)], ["w"] * 6, embeddings=np.tile(GOOD, (6, 1)))
        assert db.optimize() >= 0 and db.search(vector=JUST_BELOW, top_k=1)
        assert db.check() == []
