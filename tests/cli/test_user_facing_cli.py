"""What a new user meets on the command line (issue 16): a score header and aligned
columns, one-sided JSON without fusion fields, the demo/CLI/API agreeing on scores, clear
errors for a missing side, and messages that name the right thing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from cli_helpers import make_records, run_cli, write_jsonl

import llmdsdb


def _db(tmp_path: Path, vectors: bool = True) -> Path:
    recs = make_records(30)
    if not vectors:
        for r in recs:
            del r["embedding"]
    src = write_jsonl(tmp_path / "docs.jsonl", recs)
    db = tmp_path / "db"
    run_cli("ingest", db, src, check=True)
    return db


def test_query_prints_a_header_naming_the_score_and_aligned_columns(tmp_path) -> None:
    db = _db(tmp_path)
    out = run_cli("query", db, "river cat", "-k", "5", check=True).stdout.splitlines()
    assert out[0].split()[:3] == ["rank", "bm25", "id"]
    widths = {line.index("doc-") for line in out[1:]}
    assert len(widths) == 1  # the id column starts at the same place on every line
    np.save(tmp_path / "q.npy", np.array(make_records(1)[0]["embedding"], np.float32))
    out = run_cli("query", db, "--vector-file", tmp_path / "q.npy", check=True).stdout
    assert out.splitlines()[0].split()[1] == "cosine"
    out = run_cli("query", db, "river", "--vector-file", tmp_path / "q.npy", check=True).stdout
    assert out.splitlines()[0].split()[1] == "fused"


def test_one_sided_json_has_the_sides_own_score_and_no_fusion_fields(tmp_path) -> None:
    db = _db(tmp_path)
    got = json.loads(run_cli("query", db, "river cat", "--json", "--explain",
                             check=True).stdout)
    assert got["mode"] == "bm25" and got["score"] == "bm25"
    assert not {"fusion", "fusion_weight", "normalization"} & set(got)
    for r in got["results"]:
        assert r["score"] == r["explain"]["bm25_score"]
        assert set(r["explain"]) == {"bm25_score", "bm25_rank"}
    with llmdsdb.open(str(db), readonly=True) as d:  # the API gives the same scores
        api = [(h.id, h.score) for h in d.search("river cat")]
    assert [(r["id"], r["score"]) for r in got["results"]] == api


def test_hybrid_json_keeps_fusion_fields_and_each_sides_raw_score(tmp_path) -> None:
    db = _db(tmp_path)
    np.save(tmp_path / "q.npy", np.array(make_records(1)[0]["embedding"], np.float32))
    got = json.loads(run_cli("query", db, "river", "--vector-file", tmp_path / "q.npy",
                             "--json", "--explain", check=True).stdout)
    assert got["mode"] == "hybrid" and got["fusion"] == "convex"
    assert all("vector_norm" in r["explain"] and "bm25_score" in r["explain"]
               for r in got["results"])


def test_vector_query_on_text_only_database_fails_clearly(tmp_path) -> None:
    db = _db(tmp_path, vectors=False)
    np.save(tmp_path / "q.npy", np.ones(8, np.float32))
    p = run_cli("query", db, "--vector-file", tmp_path / "q.npy")
    assert p.returncode == 1 and "no vectors" in p.stderr and "no results" not in p.stdout
    p = run_cli("query", db, "river", "--vector-file", tmp_path / "q.npy", "--json")
    assert p.returncode == 0 and "warning:" in p.stderr and "no vectors" in p.stderr
    got = json.loads(p.stdout)
    assert got["mode"] == "bm25" and all(r["score"] != 0.5 for r in got["results"])


def test_query_with_nothing_does_not_blame_a_mode_never_given(tmp_path) -> None:
    db = _db(tmp_path)
    p = run_cli("query", db)
    assert p.returncode == 2 and "--mode" not in p.stderr and "TEXT" in p.stderr


def test_restore_message_names_only_the_flag(tmp_path) -> None:
    db = _db(tmp_path)
    run_cli("backup", db, tmp_path / "bk", check=True)
    target = tmp_path / "t"
    target.mkdir()
    (target / "x").write_text("x")
    p = run_cli("restore", tmp_path / "bk", target)
    assert p.returncode == 1 and "use --force" in p.stderr and "force=True" not in p.stderr


def test_text_separator_help_says_a_space(tmp_path) -> None:
    out = run_cli("ingest", "--help", check=True).stdout
    assert "[default:  ]" not in out and "a space" in out


def test_backup_creates_missing_parent_folders(tmp_path) -> None:
    db = _db(tmp_path)
    p = run_cli("backup", db, tmp_path / "backups" / "deeper" / "sf1")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "backups" / "deeper" / "sf1" / "manifest.json").exists()
    p = run_cli("backup", tmp_path / "nodb", tmp_path / "b2" / "x")
    assert p.returncode == 1 and not (tmp_path / "b2").exists()  # no folders for a failure


def test_demo_cli_and_api_print_the_same_scores(tmp_path) -> None:
    import re

    from llmdsdb.demo import DEMO_QUERIES

    demo_db = tmp_path / "demo"
    out = run_cli("demo", "--path", demo_db, "-k", "2", "--embedder", "hashing",
                  check=True).stdout
    query = DEMO_QUERIES[0][0]
    block = out.split(f"Query: {query!r}")[1]
    bm25_lines = block.split("  BM25:")[1].split("  vector:")[0].strip().splitlines()
    demo = [(m.group(2), float(m.group(1))) for m in
            (re.search(r"bm25\s+(-?[\d.]+)\s+(\S+)", ln) for ln in bm25_lines)]
    cli = json.loads(run_cli("query", demo_db, query, "-k", "2", "--json", "--mode", "bm25",
                             check=True).stdout)
    assert [(r["id"], round(r["score"], 3)) for r in cli["results"]] == demo
    with llmdsdb.open(str(demo_db), readonly=True) as d:
        assert [(h.id, round(h.score, 3))
                for h in d.search(query, top_k=2, fusion_weight=0.0)] == demo


def _stats_db(tmp_path: Path, data_dir: Path, n: int = 400) -> Path:
    """The first ``n`` SciFact documents with their embeddings, ingested as the README
    does (the report's length does not depend on the corpus size)."""
    import gzip
    import itertools

    sf = data_dir / "scifact"
    with gzip.open(sf / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        (tmp_path / "sf.jsonl").write_text("".join(itertools.islice(f, n)), encoding="utf-8")
    np.save(tmp_path / "emb.npy", np.load(sf / "corpus_emb.npy", mmap_mode="r")[:n])
    db = tmp_path / "sf-db"
    run_cli("ingest", db, tmp_path / "sf.jsonl", "--text-field", "title", "--text-field",
            "text", "--embeddings", tmp_path / "emb.npy", check=True)
    return db


def test_stats_is_a_short_readable_report(tmp_path, data_dir) -> None:
    db = _stats_db(tmp_path, data_dir)
    out = run_cli("stats", db, check=True).stdout
    lines = out.splitlines()
    assert len(lines) <= 40
    for section in ("Documents", "Text index (BM25)", "Vector index", "Storage"):
        assert section in lines
    for internal in ("entry_node", "hnsw.ml", "readonly", "layer_sizes", "kernel_isa"):
        assert internal not in out
    assert "with a vector      400" in out and "not yet indexed" in out
    assert "MiB" in out or "KiB" in out  # human sizes, not raw byte counts
    verbose = run_cli("stats", db, "--verbose", check=True).stdout
    assert "hnsw.entry_node" in verbose and verbose.startswith(out)


def test_stats_json_has_no_duplicate_figures(tmp_path) -> None:
    db = _db(tmp_path)
    st = json.loads(run_cli("stats", db, "--json", check=True).stdout)
    assert "bytes_on_disk" not in st and "terms" not in st
    assert not {"generation", "path", "readonly"} & set(st["storage"])
    assert st["storage"]["bytes_on_disk"] > 0 and st["bm25"]["num_terms"] > 0
    assert st["generation"] >= 1 and st["documents"] == 30


def test_explain_shows_the_vector_side_as_the_score_a_vector_query_gives(tmp_path) -> None:
    db = _db(tmp_path)
    np.save(tmp_path / "q.npy", np.array(make_records(1)[0]["embedding"], np.float32))
    vec = json.loads(run_cli("query", db, "--vector-file", tmp_path / "q.npy", "--json",
                             "--explain", check=True).stdout)["results"]
    assert all(r["score"] == r["explain"]["vector_score"] for r in vec)
    assert "distance" not in run_cli("query", db, "river", "--vector-file",
                                     tmp_path / "q.npy", "--explain", check=True).stdout
    hyb = json.loads(run_cli("query", db, "river", "--vector-file", tmp_path / "q.npy",
                             "--json", "--explain", "-k", "30", check=True).stdout)["results"]
    by_id = {r["id"]: r["score"] for r in vec}
    for r in hyb:  # each side's raw score in a hybrid explain, in the one-sided units
        if r["explain"]["vector_score"] is not None and r["id"] in by_id:
            assert abs(r["explain"]["vector_score"] - by_id[r["id"]]) < 1e-6


def test_hybrid_at_weight_zero_is_named_by_the_side_that_ran(tmp_path) -> None:
    db = _db(tmp_path)
    np.save(tmp_path / "q.npy", np.array(make_records(1)[0]["embedding"], np.float32))
    got = json.loads(run_cli("query", db, "river", "--vector-file", tmp_path / "q.npy",
                             "--fusion-weight", "0", "--json", check=True).stdout)
    assert got["score"] == "bm25" and "fusion" not in got
    with llmdsdb.open(str(db), readonly=True) as d:
        assert [r["score"] for r in got["results"]] == [h.score for h in d.search("river")]
