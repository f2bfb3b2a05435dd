"""Helpers for the command-line tests: running the installed ``llmdsdb``, small corpora,
and an order-independent digest of a database's documents."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def llmdsdb_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m llmdsdb``
    (``LLMDSDB_TEST_CLI=module`` forces the latter, e.g. to test a checkout on PYTHONPATH)."""
    if os.environ.get("LLMDSDB_TEST_CLI") == "module":
        return [sys.executable, "-m", "llmdsdb"]
    script = Path(sys.executable).parent / "llmdsdb"
    if script.exists():
        return [str(script)]
    found = shutil.which("llmdsdb")
    return [found] if found else [sys.executable, "-m", "llmdsdb"]


def run_cli(*args: Any, input: str | None = None, check: bool = False,
            cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``llmdsdb ARGS...`` as a real subprocess (stdout/stderr captured as text)."""
    proc = subprocess.run([*llmdsdb_command(), *map(str, args)], capture_output=True,
                          text=True, input=input, cwd=cwd, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"llmdsdb {args} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def doc_digest(docs: Iterable[tuple[str, str, np.ndarray | None, dict]]) -> str:
    """sha256 over (id, text, float32 embedding bytes, canonical metadata), sorted by id."""
    lines = []
    for doc_id, text, emb, meta in docs:
        eb = b"" if emb is None else np.asarray(emb, dtype="<f4").tobytes()
        h = hashlib.sha256()
        for part in (doc_id.encode("utf-8", "surrogatepass"),
                     text.encode("utf-8", "surrogatepass"), eb,
                     json.dumps(meta, sort_keys=True).encode()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        lines.append((doc_id, h.hexdigest()))
    lines.sort()
    return hashlib.sha256("\n".join(f"{i}\t{h}" for i, h in lines).encode(
        "utf-8", "surrogatepass")).hexdigest()


def db_digest(path: str | os.PathLike[str]) -> str | None:
    """Digest of the database at ``path`` (None when there is none)."""
    import llmdsdb.db as dbmod

    if not (Path(path) / "data.mdb").exists():
        return None
    with dbmod.open(os.fspath(path), readonly=True) as db:
        return doc_digest((d.id, d.text, d.embedding, d.metadata) for d in db.iter_documents())


def write_jsonl(path: Path, records: Iterable[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return path


def make_records(n: int, dim: int = 8, seed: int = 0, start: int = 0) -> list[dict]:
    """``n`` small documents with unit-length embeddings and metadata."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega", "river", "cat", "moon", "bread"]
    out = []
    for i in range(start, start + n):
        v = rng.standard_normal(dim)
        v /= np.linalg.norm(v)
        text = " ".join(rng.choice(words, size=8))
        out.append({"id": f"doc-{i}", "title": f"title {i}", "text": text,
                    "metadata": {"n": i, "even": i % 2 == 0},
                    "embedding": v.astype(np.float32).astype(float).tolist()})
    return out
