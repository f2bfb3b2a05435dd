"""``llmdsdb reembed``: a database of the caller's vectors gets an embedder (then a text
query runs hybrid), a second run has nothing to do, ``--abort`` drops an unfinished one,
and usage and lookup errors are one line."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import run_cli
from click.testing import CliRunner

import llmdsdb
from llmdsdb.cli import cli
from llmdsdb.embedders import HashingEmbedder


def _invoke(*args: object):  # click's Result
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_reembed_gives_a_vector_database_an_embedder(tmp_path: Path, corpus: Path) -> None:
    db = tmp_path / "db"
    assert _invoke("ingest", db, corpus, "-q").exit_code == 0  # the caller's 8-d vectors
    before = _invoke("query", db, "alpha", "--json")
    assert json.loads(before.stdout)["mode"] == "bm25"  # text alone: no query vector
    res = _invoke("reembed", db, "--embedder", "hashing", "--batch-size", "16", "--progress")
    assert res.exit_code == 0, res.output
    assert "re-embedded 60 documents" in res.stdout and "'hashing'" in res.stdout
    assert "\r  16/60 docs embedded (27%)" in res.stderr and "ETA" in res.stderr
    after = json.loads(_invoke("query", db, "alpha", "--json").stdout)
    assert after["mode"] == "hybrid"
    with llmdsdb.open(db, readonly=True) as h:
        assert h.dim == 256 and h.check() == []
        doc = next(iter(h))
        assert (doc.embedding == HashingEmbedder(256).embed_documents([doc.text])[0]).all()
    again = _invoke("reembed", db, "--embedder", "hashing")
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert "no unfinished re-embed" in _invoke("reembed", db, "--abort").stdout


def test_reembed_errors_are_one_line(tmp_path: Path, corpus: Path) -> None:
    db = tmp_path / "db"
    assert _invoke("ingest", db, corpus, "-q").exit_code == 0
    assert _invoke("reembed", db).exit_code == 2  # neither --embedder nor --abort
    assert _invoke("reembed", db, "--embedder", "hashing", "--abort").exit_code == 2
    p = run_cli("reembed", db, "--embedder", "no-such")
    assert p.returncode == 1 and p.stderr.startswith("Error: unknown embedder 'no-such'")
    assert "Traceback" not in p.stderr
    p = run_cli("reembed", tmp_path / "missing", "--embedder", "hashing")
    assert p.returncode == 1 and "no such database" in p.stderr
    assert not (tmp_path / "missing").exists()
