"""End-to-end runs of the command-line tool: the installed ``llmdsdb`` as a subprocess and
click's CliRunner; round trips, resumable ingest, and the bad-input corpus (RELIABILITY.md
§4.6) at the CLI: each bad input exits non-zero with one clear line, no traceback, and leaves
the database unchanged."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import db_digest, make_records, run_cli, write_jsonl
from click.testing import CliRunner

import llmdsdb.db as dbmod
from llmdsdb.cli import cli


def invoke(*args: object) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def db_path(tmp_path: Path, corpus: Path) -> Path:
    path = tmp_path / "db"
    res = invoke("ingest", path, corpus, "--batch-size", 25)
    assert res.exit_code == 0, res.output
    return path


def test_subprocess_round_trip(tmp_path: Path, corpus: Path) -> None:
    db = tmp_path / "db"
    proc = run_cli("ingest", db, corpus, "--batch-size", 16, check=True)
    assert "60 records" in proc.stdout and "60 written" in proc.stdout
    assert proc.stderr == ""  # piped: no progress line
    again = run_cli("ingest", db, corpus, check=True)
    assert "0 written, 60 unchanged" in again.stdout  # resumable: unchanged docs skipped

    q = run_cli("query", db, "alpha river", "--json", "--top-k", 5, check=True)
    out = json.loads(q.stdout)
    assert out["mode"] == "bm25" and out["top_k"] == 5
    with dbmod.open(db, readonly=True) as h:
        api = h.search("alpha river", top_k=5, fusion_weight=0.0)
        vec = h.get("doc-3").embedding
        api_h = h.search("alpha river", vector=vec, top_k=5, fusion_weight=0.5)
    assert [(r["id"], r["score"]) for r in out["results"]] == [(r.id, r.score) for r in api]

    np.save(tmp_path / "q.npy", vec)
    hy = json.loads(run_cli("query", db, "alpha river", "--vector-file", tmp_path / "q.npy",
                            "--json", "--top-k", 5, "--explain", check=True).stdout)
    assert hy["mode"] == "hybrid"
    assert [(r["id"], r["score"]) for r in hy["results"]] == [(r.id, r.score) for r in api_h]
    assert set(hy["results"][0]["explain"]) >= {"bm25_score", "vector_distance", "bm25_rank"}
    vo = json.loads(run_cli("query", db, "--vector-file", tmp_path / "q.npy", "--json",
                            check=True).stdout)
    assert vo["mode"] == "vector" and vo["results"][0]["id"] == "doc-3"

    exported = tmp_path / "out.jsonl.gz"
    run_cli("export", db, "-o", exported, check=True)
    db2 = tmp_path / "db2"
    run_cli("ingest", db2, exported, check=True)
    assert db_digest(db2) == db_digest(db)
    with dbmod.open(db, readonly=True) as a, dbmod.open(db2, readonly=True) as b:
        assert [d.id for d in a.iter_documents()] == [d.id for d in b.iter_documents()]

    run_cli("backup", db, tmp_path / "bk", check=True)
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert manifest["count"] == 60 and sorted(os.listdir(tmp_path / "bk")) == [
        "data.mdb", "manifest.json"]
    run_cli("restore", tmp_path / "bk", tmp_path / "restored", check=True)
    v = run_cli("verify", tmp_path / "restored", check=True)
    assert v.stdout.startswith("ok:") and "60 documents" in v.stdout
    assert db_digest(tmp_path / "restored") == db_digest(db)
    st = json.loads(run_cli("stats", db, "--json", check=True).stdout)
    assert st["documents"] == 60


def test_export_to_stdout_reads_back(tmp_path: Path, db_path: Path) -> None:
    res = invoke("export", db_path)
    assert res.exit_code == 0
    (tmp_path / "x.jsonl").write_text(res.stdout, encoding="utf-8")
    assert invoke("ingest", tmp_path / "c", tmp_path / "x.jsonl").exit_code == 0
    assert db_digest(tmp_path / "c") == db_digest(db_path)


def test_text_fields_template_csv_and_directory(tmp_path: Path) -> None:
    recs = make_records(5, dim=4)
    src = write_jsonl(tmp_path / "r.jsonl", recs)
    assert invoke("ingest", tmp_path / "a", src, "--text-field", "title", "--text-field",
                  "text").exit_code == 0
    with dbmod.open(tmp_path / "a", readonly=True) as h:
        assert h.get("doc-1").text == f"title 1 {recs[1]['text']}"
    assert invoke("ingest", tmp_path / "b", src, "--text-template", "{title}: {text}",
                  "--metadata-field", "title").exit_code == 0
    with dbmod.open(tmp_path / "b", readonly=True) as h:
        d = h.get("doc-2")
        assert d.text == f"title 2: {recs[2]['text']}"
        assert d.metadata == {"n": 2, "even": True, "title": "title 2"}
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("id,text,lang\nx,hello world,en\ny,\"good, bye\",fr\n", encoding="utf-8")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "n.md").write_text("a note about rivers", encoding="utf-8")
    res = invoke("ingest", tmp_path / "c", csv_path, notes)
    assert res.exit_code == 0, res.output
    with dbmod.open(tmp_path / "c", readonly=True) as h:
        assert h.get("y").metadata == {"lang": "fr"} and h.get("n.md").text.endswith("rivers")
        assert [r.id for r in h.search("rivers")] == ["n.md"]


def test_skip_bad_counts_and_commits_the_rest(tmp_path: Path) -> None:
    recs = make_records(30, dim=4)
    lines = [json.dumps(r) for r in recs]
    lines[7] = "{broken"
    bad_dim = dict(recs[12], embedding=[0.5, 0.5, 0.5])
    lines[12] = json.dumps(bad_dim)
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = invoke("ingest", tmp_path / "db", src, "--skip-bad", "--batch-size", 10)
    assert res.exit_code == 0, res.output
    assert "2 bad lines skipped" in res.stdout and "28 documents" in res.stdout
    assert f"skipped: {src}:8: invalid JSON" in res.stderr
    assert f"skipped: {src}:13: expected dimension 4, got 3" in res.stderr


def test_bad_line_stops_before_its_batch(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in make_records(30, dim=4)]
    lines[24] = '{"id": "x"}'
    src = tmp_path / "s.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = CliRunner().invoke(cli, ["ingest", str(tmp_path / "db"), str(src), "--batch-size", "10"])
    assert res.exit_code == 1
    msg = one_error_line(res.stderr)
    assert f"{src}:25: missing text field 'text'" in msg and "20 documents written" in msg
    with dbmod.open(tmp_path / "db", readonly=True) as h:
        assert h.count() == 20  # two whole batches, nothing of the third


def test_bad_first_batch_on_a_new_path_creates_nothing(tmp_path: Path) -> None:
    src = tmp_path / "s.jsonl"
    src.write_text('{"id": "a", "text": "x", "embedding": [1, 0]}\n'
                   '{"id": "b", "text": "y", "embedding": [1, 0, 0]}\n', encoding="utf-8")
    proc = run_cli("ingest", tmp_path / "new", src)
    assert proc.returncode == 1
    assert f"{src}:2: expected dimension 2, got 3" in one_error_line(proc.stderr)
    assert not (tmp_path / "new").exists()


def _bad_inputs(tmp: Path, db: Path) -> dict[str, tuple[list[object], str]]:
    """name -> (llmdsdb arguments, text the one error line must contain)."""
    good = json.dumps(make_records(1, dim=8, start=500)[0])
    (tmp / "badline.jsonl").write_text(good + "\n{oops\n", encoding="utf-8")
    (tmp / "utf8.jsonl").write_bytes(good.encode() + b'\n{"id": "u", "text": "\xff"}\n')
    wrong = dict(make_records(1, dim=8, start=501)[0], embedding=[1.0] * 7)
    (tmp / "dim.jsonl").write_text(good + "\n" + json.dumps(wrong) + "\n", encoding="utf-8")
    nan = good.replace("[", "[NaN, ", 1)
    (tmp / "nan.jsonl").write_text(nan + "\n", encoding="utf-8")
    with gzip.open(tmp / "trunc.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write((good + "\n") * 50)
    data = (tmp / "trunc.jsonl.gz").read_bytes()
    (tmp / "trunc.jsonl.gz").write_bytes(data[: len(data) // 2])
    np.save(tmp / "rows.npy", np.ones((3, 8), dtype=np.float32))
    np.save(tmp / "q7.npy", np.ones(7, dtype=np.float32))
    (tmp / "empty_id.jsonl").write_text('{"id": "", "text": "x"}\n', encoding="utf-8")
    return {
        "bad JSONL line": (["ingest", db, tmp / "badline.jsonl"],
                           f"{tmp / 'badline.jsonl'}:2: invalid JSON"),
        "invalid UTF-8": (["ingest", db, tmp / "utf8.jsonl"],
                          f"{tmp / 'utf8.jsonl'}:2: invalid UTF-8 at byte offset"),
        "wrong dimension": (["ingest", db, tmp / "dim.jsonl"],
                            f"{tmp / 'dim.jsonl'}:2: expected dimension 8, got 7"),
        "NaN in vector": (["ingest", db, tmp / "nan.jsonl"], "nan.jsonl:1: invalid JSON"),
        "truncated gzip": (["ingest", db, tmp / "trunc.jsonl.gz"], "trunc.jsonl.gz"),
        "missing file": (["ingest", db, tmp / "nope.jsonl"], "no such file"),
        "misaligned embeddings": (["ingest", db, tmp / "badline.jsonl", "--embeddings",
                                   tmp / "rows.npy"], "has 3 rows but the input has 2"),
        "empty id": (["ingest", db, tmp / "empty_id.jsonl"], "doc id must be non-empty"),
        "query vector file holding a matrix": (["query", db, "--vector-file",
                                                tmp / "rows.npy"], "one numeric vector"),
        "query vector of wrong dimension": (["query", db, "--vector-file", tmp / "q7.npy"],
                                            "expected dimension 8, got 7"),
        "query on a missing database": (["query", tmp / "nodb", "x"], "no such database"),
        "ingest into a directory that is not a database": (
            ["ingest", tmp, tmp / "badline.jsonl"], "holds no database"),
    }


def test_bad_inputs_exit_nonzero_with_one_line_and_leave_the_db_unchanged(
        tmp_path: Path, db_path: Path) -> None:
    before = db_digest(db_path)
    gen = dbmod.open(db_path, readonly=True)
    generation = gen.generation
    gen.close()
    cases = _bad_inputs(tmp_path, db_path)
    for name, (args, expected) in cases.items():
        res = CliRunner().invoke(cli, [str(a) for a in args])
        assert res.exit_code == 1, (name, res.output, res.exception)
        line = one_error_line(res.stderr)
        assert expected in line, (name, line)
        assert db_digest(db_path) == before, name
    with dbmod.open(db_path, readonly=True) as h:
        assert h.generation == generation


def test_bad_inputs_through_the_installed_script(tmp_path: Path, db_path: Path) -> None:
    before = db_digest(db_path)
    cases = _bad_inputs(tmp_path, db_path)
    for name in ("bad JSONL line", "invalid UTF-8", "wrong dimension", "missing file"):
        args, expected = cases[name]
        proc = run_cli(*args)
        assert proc.returncode == 1, (name, proc.stderr)
        assert expected in one_error_line(proc.stderr), name
    assert db_digest(db_path) == before


def test_usage_errors_exit_2(db_path: Path) -> None:
    for args in (["query", db_path], ["query", db_path, "x", "--mode", "vector"],
                 ["query", db_path, "x", "--top-k", "0"], ["ingest", db_path],
                 ["nosuchcommand"]):
        res = CliRunner().invoke(cli, [str(a) for a in args])
        assert res.exit_code == 2, (args, res.output)


def test_verify_reports_corruption_without_crashing(tmp_path: Path, db_path: Path) -> None:
    assert invoke("verify", db_path).exit_code == 0
    data = db_path / "data.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as f:  # truncate: liblmdb would SIGBUS; only the checker dies
        f.truncate(size // 2)
    proc = run_cli("verify", db_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout.startswith("problem: ")
    assert proc.stderr.strip().endswith("problem(s) found")
    with open(data, "r+b") as f:
        f.truncate(0)
    proc = run_cli("verify", db_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout


def test_demo_runs(tmp_path: Path) -> None:
    proc = run_cli("demo", "--path", tmp_path / "demo", "--embedder", "hashing", check=True)
    out = proc.stdout
    assert "200 documents" in out and "feature-hashing" in out
    for label in ("BM25:", "vector:", "hybrid:"):
        assert label in out
    assert "oceans-04" in out  # 'why is the sea salty' finds the paragraph on salty seas
    again = invoke("demo", "--path", tmp_path / "demo")  # reruns on the same database
    assert "0 written now, 200 already there" in again.stdout
    assert "feature-hashing" in again.stdout  # a demo database keeps its embedder


def test_duplicate_ids_in_one_file_the_later_line_wins(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text('{"id": "a", "text": "first"}\n{"id": "b", "text": "bee"}\n'
                   '{"id": "a", "text": "second"}\n', encoding="utf-8")
    assert invoke("ingest", tmp_path / "db", src).exit_code == 0
    with dbmod.open(tmp_path / "db", readonly=True) as h:
        assert h.count() == 2 and h.get("a").text == "second"


def test_progress_line_when_asked(tmp_path: Path, corpus: Path) -> None:
    res = CliRunner().invoke(cli, ["ingest", str(tmp_path / "db"), str(corpus), "--progress",
                                   "--batch-size", "20"])
    assert res.exit_code == 0, res.output
    assert "\r  60 docs read (~100% of the input), 60 written" in res.stderr
    assert "\r  20 docs read (~" in res.stderr and "docs/s, ETA ~" in res.stderr
    quiet = CliRunner().invoke(cli, ["ingest", str(tmp_path / "db"), str(corpus), "-q"])
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_ingest_summary_counts_in_words(tmp_path: Path) -> None:
    src = tmp_path / "one.jsonl"
    src.write_text('{"id": "a", "text": "only one"}\n')
    res = CliRunner().invoke(cli, ["ingest", str(tmp_path / "db"), str(src)])
    assert res.exit_code == 0, res.output
    assert ("ingested 1 record into" in res.stdout and "0 bad lines skipped; 1 document,"
            in res.stdout)
