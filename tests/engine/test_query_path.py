"""The one hybrid query path: Database and RetrievalPipeline give the same ids and scores
for the same documents and queries, and ``search`` equals ``search_many`` per query at every
collection size (the exact/graph threshold crossed)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import llmdsdb
from llmdsdb.retrieval_pipeline import RetrievalPipeline

from dbtestutil import unit_vectors

SCIFACT = Path("/work/shared/data/scifact")
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango").split()
SETTINGS = [  # (fusion_weight, fusion, normalization)
    (0.0, "convex", "minmax"), (0.3, "convex", "minmax"), (0.5, "convex", "zscore"),
    (0.7, "convex", "theoretical"), (1.0, "convex", "minmax"), (0.5, "rrf", "minmax"),
]


def _both(tmp_path, texts, emb, fresh_max_vectors=None, batch=None):
    """The same documents (ids 0..n-1, in order, in the same batches) in a database and a
    pipeline."""
    n = len(texts)
    batch = batch or n
    db = llmdsdb.open(str(tmp_path / "db"), fresh_max_vectors=fresh_max_vectors)
    pipe = RetrievalPipeline(embedding_dim=emb.shape[1], fresh_max_vectors=fresh_max_vectors)
    for s in range(0, n, batch):
        e = min(n, s + batch)
        db.add([str(i) for i in range(s, e)], texts[s:e], embeddings=emb[s:e])
        pipe.add_documents(list(range(s, e)), texts[s:e], emb[s:e])
    return db, pipe


def _same(db, pipe, queries, qvecs, top_k=10):
    for q, v in zip(queries, qvecs):
        for w, fusion, norm in SETTINGS:
            got = [(int(r.id), r.score) for r in db.search(
                q, v, top_k=top_k, fusion_weight=w, fusion=fusion, normalization=norm)]
            want = pipe.search(q, v, top_k=top_k, fusion_weight=w, fusion=fusion,
                               normalization=norm)
            assert got == want, (q, w, fusion, norm)


def test_database_and_pipeline_agree_on_random_data(tmp_path):
    rng = np.random.default_rng(3)
    n, dim = 300, 16
    texts = [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(n)]
    emb = unit_vectors(n, dim, 4)
    # a small fresh part: vectors move into the graph in batches, in both
    db, pipe = _both(tmp_path, texts, emb, fresh_max_vectors=64, batch=50)
    try:
        queries = [" ".join(rng.choice(WORDS, 3)) for _ in range(12)] + ["   ", "zulu"]
        qvecs = list(unit_vectors(len(queries), dim, 5))
        _same(db, pipe, queries, qvecs)
        _same(db, pipe, queries, [None] * len(queries))  # text only
        _same(db, pipe, [None] * 5, qvecs[:5])  # vector only
    finally:
        db.close()


def test_database_and_pipeline_agree_on_scifact(tmp_path):
    if not (SCIFACT / "corpus_emb.npy").exists():
        pytest.skip(f"SciFact is not in {SCIFACT} (see /work/shared/data/README.md)")
    n = 1000
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(next(f)) for _ in range(n)]
    texts = [(d["title"] + " " + d["text"]).strip() for d in docs]
    emb = np.load(SCIFACT / "corpus_emb.npy")[:n]
    with gzip.open(SCIFACT / "queries.jsonl.gz", "rt", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for line in f][:20]
    qvecs = list(np.load(SCIFACT / "queries_emb.npy")[:20])
    db, pipe = _both(tmp_path, texts, emb)
    try:
        _same(db, pipe, queries, qvecs)
    finally:
        db.close()


def test_search_equals_search_many_across_the_exact_graph_threshold(tmp_path, monkeypatch):
    import llmdsdb.hnsw as hnsw

    dim = 8
    # the graph scans exactly up to 40 vectors here (40 * 8 floats), walks itself above
    monkeypatch.setattr(hnsw, "EXACT_COMPONENTS", 40 * dim)
    rng = np.random.default_rng(7)
    emb = unit_vectors(400, dim, 8)
    texts = [" ".join(rng.choice(WORDS, 5)) for _ in range(400)]
    queries = [" ".join(rng.choice(WORDS, 2)) for _ in range(8)]
    qvecs = unit_vectors(8, dim, 9)
    with llmdsdb.open(str(tmp_path / "db"), fresh_max_vectors=16, hnsw_ef_construction=40
                      ) as db:
        for s in range(0, 400, 25):  # 25, 50, ... 400 vectors: below and above the threshold
            db.add([str(i) for i in range(s, s + 25)], texts[s:s + 25],
                   embeddings=emb[s:s + 25])
            for w in (0.5, 1.0):
                many = db.search_many(queries, qvecs, top_k=10, fusion_weight=w)
                one = [db.search(q, v, top_k=10, fusion_weight=w)
                       for q, v in zip(queries, qvecs)]
                assert [[(r.id, r.score) for r in hits] for hits in many] == \
                       [[(r.id, r.score) for r in hits] for hits in one], (s, w)
        graph = db.stats()["hnsw"]
        assert graph["count"] * dim > hnsw.EXACT_COMPONENTS  # the graph was walked



def test_text_only_queries_read_top_k_plus_one_and_equal_the_full_depth(tmp_path, monkeypatch):
    """A text-only query asks BM25 for top_k + 1 candidates; where the last one ties with
    the top_k-th it takes the full depth again. With keys that do not follow the insertion
    order (the pipeline's ids here, descending), ties ordered by key differ from the index's
    own order: the hits must be those of the full depth all the same - and the database's
    too (its keys follow the insertion order)."""
    from llmdsdb import retrieval_pipeline as rp

    rng = np.random.default_rng(11)
    n = 120
    texts = [" ".join(rng.choice(WORDS[:6], rng.integers(1, 4))) for _ in range(n)]
    pipe = RetrievalPipeline(embedding_dim=4, token_budget=0)
    for i, t in enumerate(texts):
        pipe.add_document(n - i, t)
    db = llmdsdb.open(str(tmp_path / "db"))
    try:
        db.add([str(i) for i in range(n)], texts)
        queries = [" ".join(rng.choice(WORDS[:6], rng.integers(1, 3))) for _ in range(25)]
        calls = []
        real = rp._tie_past
        monkeypatch.setattr(rp, "_tie_past", lambda h, k: calls.append(real(h, k)) or calls[-1])

        def run(k):
            return ([pipe.search(q, None, top_k=k, fusion_weight=0.0) for q in queries],
                    [[(r.id, r.score) for r in db.search(q, top_k=k, fusion_weight=0.0)]
                     for q in queries],
                    [[(r.id, r.score) for r in hits]
                     for hits in db.search_many(queries, top_k=k, fusion_weight=0.0)])

        for k in (1, 3, 10):
            shallow = run(k)
            with monkeypatch.context() as m:
                m.setattr(rp, "_text_only_depths", lambda plans, qs: plans)
                full = run(k)
            assert shallow == full, k
            assert shallow[1] == shallow[2], k
        assert any(calls) and not all(calls)  # both paths ran
    finally:
        db.close()
