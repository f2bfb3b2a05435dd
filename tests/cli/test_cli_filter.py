"""``llmdsdb query --filter``: the hits pass the filter, --explain shows the plan, and a bad
filter is one clear error line naming the token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmdsdb.cli import cli


def invoke(*args: object) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def db_path(tmp_path: Path, corpus: Path) -> Path:
    path = tmp_path / "db"
    res = invoke("ingest", path, corpus, "--batch-size", 25)
    assert res.exit_code == 0, res.output
    return path


def test_query_filter_json(db_path: Path) -> None:
    res = invoke("query", db_path, "alpha river", "--json", "--top-k", 5,
                 "--filter", '{"even": true, "n": {"$lt": 30}}', "--explain")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert 0 < len(out["results"]) <= 5
    for r in out["results"]:
        assert r["metadata"]["even"] is True and r["metadata"]["n"] < 30
    assert out["plan"]["allowed"] == 15 and out["plan"]["exact"] is True
    assert out["plan"]["text"] in ("bitmap", "candidates")


def test_query_filter_returns_k_among_allowed(db_path: Path) -> None:
    vec = db_path.parent / "q.json"
    vec.write_text(json.dumps([1.0] * 8))
    res = invoke("query", db_path, "--vector-file", vec, "--json", "--top-k", 7,
                 "--filter", '{"n": {"$in": [1, 2, 3, 4, 5, 6, 7, 8, 9]}}')
    assert res.exit_code == 0, res.output
    ids = [r["id"] for r in json.loads(res.output)["results"]]
    assert len(ids) == 7 and set(ids) <= {f"doc-{i}" for i in range(1, 10)}


def test_query_filter_plain_explain(db_path: Path) -> None:
    res = invoke("query", db_path, "alpha", "--filter", '{"even": false}', "--explain")
    assert res.exit_code == 0, res.output
    assert "plan: filter allows 30; text:" in res.output and "exact" in res.output


@pytest.mark.parametrize(("flt", "needle"), [
    ('{"n": {"$regex": "x"}}', "'$regex'"),
    ('{"n": {"$gt": "ten"}}', "'$gt' at 'n'"),
    ('{"n": ', "not valid JSON"),
    ('["n"]', "must be a dict"),
])
def test_bad_filter_is_one_error_line(db_path: Path, cli_run, flt: str, needle: str) -> None:
    proc = cli_run("query", db_path, "alpha", "--filter", flt, check=False)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], \
        proc.stderr
    assert "Traceback" not in proc.stderr
