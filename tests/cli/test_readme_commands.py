"""Every command of the README's "Command line" section runs as written (issue 16), in a
fresh directory holding small stand-ins for the files it names (corpus.jsonl.gz,
corpus_emb.npy, q.npy), with the commands a new user would repeat run twice."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import shlex
from pathlib import Path

import numpy as np
from cli_helpers import REPO, make_records, run_cli

REPEATABLE = {"ingest", "query", "stats", "verify", "demo"}


def _commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("llmdsdb "):
                for part in line.split("&&"):
                    cmds.append(shlex.split(part))
    return cmds


def test_every_readme_command_runs_as_written(tmp_path: Path) -> None:
    recs = make_records(40)
    with gzip.open(tmp_path / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps({k: r[k] for k in ("id", "title", "text")}) + "\n")
    np.save(tmp_path / "corpus_emb.npy", np.array([r["embedding"] for r in recs], np.float32))
    np.save(tmp_path / "q.npy", np.array(recs[0]["embedding"], np.float32))
    cmds = _commands()
    names = {c[1] for c in cmds}
    assert {"demo", "ingest", "query", "stats", "verify", "export", "backup",
            "restore", "reembed"} <= names
    has_embed = importlib.util.find_spec("sentence_transformers") is not None
    for cmd in cmds:
        assert cmd[0] == "llmdsdb"
        if ("./scifact-text" in cmd or "minilm" in cmd) and not has_embed:
            continue  # the MiniLM examples need the [embed] extra
        # the MiniLM example once: each run loads the model (~10 s)
        twice = cmd[1] in REPEATABLE and "./scifact-text" not in cmd
        for _ in range(2 if twice else 1):
            p = run_cli(*cmd[1:], cwd=tmp_path)
            assert p.returncode == 0, f"{' '.join(cmd)}: {p.stderr}"
            assert "Traceback" not in p.stderr


def test_readme_says_how_to_point_the_data_tests_at_data() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    conftest = (REPO / "tests" / "conftest.py").read_text(encoding="utf-8")
    assert "LLMDSDB_DATA" in text and "skip" in text.split("LLMDSDB_DATA", 1)[1][:400]
    assert "set LLMDSDB_DATA" in conftest and "set LLMDSDB_DATA" in text
