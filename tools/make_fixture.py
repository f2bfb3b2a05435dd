"""Regenerate storage/fixtures/v1/data.mdb: a small database written with on-disk format
version 1, opened by tests/engine/test_fixture_v1.py so that files written by this version
keep opening (and reading the same) in every later one.

Run from the repository root: ``python tools/make_fixture.py``. Only ``data.mdb`` is kept;
commit it only when the format version changes (a new version gets a new directory).

The contents are fixed by :func:`fixture_spec` (the test imports the same function): 12
documents in 3 batches - ids short and long, text with non-ASCII characters, 8-dimensional
embeddings on most documents, metadata of every supported type - then one upsert that changes
a document and one delete, so the file holds replaced and freed pages too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DIR = REPO / "storage" / "fixtures" / "v1"
DIM = 8


def fixture_spec() -> dict:
    """What the fixture holds: the batches written, and the final documents expected."""
    rng = np.random.default_rng(20260101)
    vecs = rng.standard_normal((12, DIM)).astype(np.float32)
    words = ["lattice", "enzyme", "protein", "quantum", "river", "glacier", "neuron",
             "catalyst", "orbit", "mineral", "vaccine", "genome"]
    ids = [f"doc-{i:02d}" for i in range(11)] + ["long-" + "ä" * 300]
    texts = [f"{words[i]} study number {i} of the {words[(i + 3) % 12]} effect — Größe"
             for i in range(12)]
    metas = [{"n": i, "f": i / 4, "ok": i % 2 == 0, "tags": [words[i], "x"],
              "nested": {"k": str(i)}, "none": None} for i in range(12)]
    embs = [vecs[i] if i % 4 != 3 else None for i in range(12)]
    batches = [("add", slice(0, 4)), ("add", slice(4, 8)), ("add", slice(8, 12))]
    final = {ids[i]: (texts[i], embs[i], metas[i]) for i in range(12)}
    upsert = (ids[2], "replaced text about a glacier", vecs[2] * -1, {"n": 99})
    final[upsert[0]] = upsert[1:]
    deleted = ids[5]
    del final[deleted]
    return {"ids": ids, "texts": texts, "embs": embs, "metas": metas, "batches": batches,
            "upsert": upsert, "delete": deleted, "final": final, "generation": 5,
            "dim": DIM}


def write(path: str) -> None:
    import llmdsdb

    spec = fixture_spec()
    # fresh_max_vectors=4: some vectors move into the graph, the last ones stay in the fresh
    # segment, so the fixture holds both kinds of vector storage
    with llmdsdb.open(path, dim=DIM, metric="cosine", hnsw_M=8, hnsw_ef_construction=50,
                      fresh_max_vectors=4) as db:
        for _kind, sl in spec["batches"]:
            db.add(spec["ids"][sl], spec["texts"][sl], embeddings=spec["embs"][sl],
                   metadata=spec["metas"][sl])
        i, t, e, m = spec["upsert"]
        db.upsert([i], [t], embeddings=[e], metadata=[m])
        db.delete([spec["delete"]])
        assert db.generation == spec["generation"], db.generation
        assert db.check() == [], db.check()


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="fixture-")
    try:
        src = os.path.join(tmp, "db")
        write(src)
        import llmdsdb

        with llmdsdb.open(src) as db:  # compact copy: no free pages, smallest file
            db.copy_to(os.path.join(tmp, "copy"), compact=True)
        FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(tmp, "copy", "data.mdb"), FIXTURE_DIR / "data.mdb")
        print(f"wrote {FIXTURE_DIR / 'data.mdb'} "
              f"({(FIXTURE_DIR / 'data.mdb').stat().st_size} bytes)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
