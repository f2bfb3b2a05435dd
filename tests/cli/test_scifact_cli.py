"""Acceptance: ``llmdsdb ingest`` of SciFact (corpus.jsonl.gz with its embeddings file,
text = title + " " + text) and then ``llmdsdb query --json`` give the same results as the
Python API. A subset keeps the test quick; ``LLMDSDB_SCIFACT_FULL=1`` runs it on all 5,183
documents and more queries (the check done by hand for the acceptance)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
from cli_helpers import db_digest, doc_digest, run_cli

import llmdsdb.db as dbmod

FULL = os.environ.get("LLMDSDB_SCIFACT_FULL") == "1"
SUBSET = 5183 if FULL else 120
QUERIES = range(0, 300, 15) if FULL else (0, 42)


def test_scifact_cli_matches_python_api(tmp_path: Path, data_dir: Path) -> None:
    sf = data_dir / "scifact"
    lines = []
    with gzip.open(sf / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            if len(lines) == SUBSET:
                break
    corpus = tmp_path / "corpus.jsonl.gz"
    with gzip.open(corpus, "wt", encoding="utf-8") as f:
        f.writelines(lines)
    emb = np.load(sf / "corpus_emb.npy")[:SUBSET]
    np.save(tmp_path / "corpus_emb.npy", emb)

    cli_db = tmp_path / "cli"
    run_cli("ingest", cli_db, corpus, "--text-field", "title", "--text-field", "text",
            "--embeddings", tmp_path / "corpus_emb.npy", "--batch-size", 128, check=True)

    # what the CLI stored is exactly what the Python API would have been given
    docs = [json.loads(line) for line in lines]
    expected = doc_digest((d["_id"], d["title"] + " " + d["text"], emb[i], d["metadata"])
                          for i, d in enumerate(docs))
    assert db_digest(cli_db) == expected

    qids = (sf / "queries_ids.txt").read_text().split()
    qtext = {}
    with gzip.open(sf / "queries.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            qtext[q["_id"]] = q["text"]
    qemb = np.load(sf / "queries_emb.npy")
    with dbmod.open(cli_db, readonly=True) as c:
        assert c.count() == SUBSET
        for i in QUERIES:
            text, vec = qtext[qids[i]], qemb[i]
            np.save(tmp_path / "q.npy", vec)
            for mode, kwargs, extra in (
                ("bm25", {"query": text, "fusion_weight": 0.0}, []),
                ("vector", {"vector": vec, "fusion_weight": 1.0}, []),
                ("hybrid", {"query": text, "vector": vec, "fusion_weight": 0.5}, []),
                ("hybrid", {"query": text, "vector": vec, "fusion_weight": 0.3,
                            "fusion": "rrf"}, ["--fusion", "rrf", "--fusion-weight", "0.3"]),
            ):
                args = ["query", cli_db, "--mode", mode, "--top-k", 10, "--json", *extra]
                if mode != "vector":
                    args.insert(2, text)
                if mode != "bm25":
                    args += ["--vector-file", tmp_path / "q.npy"]
                out = json.loads(run_cli(*args, check=True).stdout)
                got = [(r["id"], r["score"]) for r in out["results"]]
                want = [(r.id, r.score) for r in c.search(top_k=10, **kwargs)]
                assert got == want, (mode, i)
                assert len(got) == 10
