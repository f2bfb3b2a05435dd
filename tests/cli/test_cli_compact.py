"""`llmdsdb compact PATH`: progress on stderr, a summary, nothing left to do afterwards."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

import llmdsdb
from llmdsdb.cli import cli


def test_compact_command(tmp_path) -> None:
    path = str(tmp_path / "db")
    vecs = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    with llmdsdb.open(path, auto_compact_debt=None, durability="nosync") as db:
        db.add([f"d{i}" for i in range(300)], [f"text {i} word{i % 7}" for i in range(300)],
               vecs)
        db.optimize()
        db.delete([f"d{i}" for i in range(0, 300, 2)])
        before = [(h.id, h.score) for h in db.search("word3", top_k=20)]
    runner = CliRunner()
    out = runner.invoke(cli, ["stats", path])
    assert out.exit_code == 0 and "debt 50%" in out.output
    out = runner.invoke(cli, ["compact", path, "--max-batch", "50"])
    assert out.exit_code == 0, out.output
    assert "step 1: postings" in out.stderr and "graph_repair" in out.stderr
    assert out.stdout.startswith(f"compacted {path} in ") and "debt 50% -> 0%" in out.stdout
    out = runner.invoke(cli, ["compact", path])
    assert out.exit_code == 0 and out.stdout.strip() == f"{path}: nothing to compact"
    with llmdsdb.open(path) as db:
        assert [(h.id, h.score) for h in db.search("word3", top_k=20)] == before
        assert db.stats()["hnsw"]["nodes"] == 150 and db.check() == []
