"""``llmdsdb demo``: build a small database from the shipped sample and query it three ways.

The sample (``llmdsdb/data/demo_corpus.jsonl``) is 200 short paragraphs written for this
project. Its vectors come from :class:`HashingEmbedder`, a deterministic feature-hashing
embedder (no neural model, no download): word unigrams and bigrams and character trigrams
are hashed into a fixed number of signed buckets and the vector is L2-normalised. Its
"similarity" is shared words and word pieces, not meaning; it exists so the demo can show
vector and hybrid search on any machine. Real applications pass embeddings from a model.

    >>> e = HashingEmbedder(dim=64)
    >>> v = e.embed(["Owls hunt at night", "owls hunt at night!"])
    >>> v.shape, v.dtype.name
    ((2, 64), 'float32')
    >>> bool(abs(float(v[0] @ v[1]) - 1.0) < 1e-6)   # same words -> same vector
    True
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from llmdsdb.embedders import HashingEmbedder

__all__ = ["DEMO_QUERIES", "HashingEmbedder", "load_sample", "run_demo"]


#: (query text, what it shows)
DEMO_QUERIES: tuple[tuple[str, str], ...] = (
    ("why is the sea salty", "words in common with one paragraph"),
    ("birds that hunt at night", "a paraphrase: 'hunt' and 'night' carry it"),
    ("how do volcanoes erupt", "stemming matches 'erupt' and 'eruptions'"),
)


def load_sample() -> list[dict[str, Any]]:
    """The shipped sample: a list of ``{"id", "title", "text", "metadata"}`` dicts."""
    raw = resources.files("llmdsdb").joinpath("data/demo_corpus.jsonl").read_text("utf-8")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def _short(text: str, width: int = 72) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def run_demo(
    path: str | Path | None = None,
    *,
    echo: Callable[[str], None] = print,
    top_k: int = 3,
    dim: int = 256,
) -> Path:
    """Build the demo database at ``path`` (a fresh temporary directory when ``None``, removed
    afterwards) and print BM25, vector and hybrid results for :data:`DEMO_QUERIES`.

    Returns the database path (already deleted when it was temporary).

    :raises InvalidPathError: when ``path`` exists and is not an empty directory or a demo
        database built earlier.
    """
    import llmdsdb.db as dbmod
    from llmdsdb.errors import InvalidPathError

    docs = load_sample()
    embedder = HashingEmbedder(dim)
    temp = path is None
    target = Path(tempfile.mkdtemp(prefix="llmdsdb-demo-")) if temp else Path(path)  # type: ignore[arg-type]
    if not temp and target.exists():
        if target.is_symlink() or not target.is_dir():
            raise InvalidPathError(f"{target}: exists and is not a directory")
        if any(target.iterdir()) and not (target / "data.mdb").exists():
            raise InvalidPathError(
                f"{target}: directory is not empty and is not an llmdsdb database"
            )
    try:
        texts = [f"{d['title']} {d['text']}" for d in docs]
        t0 = time.perf_counter()
        vectors = embedder.embed(texts)
        with dbmod.open(target, dim=dim, metric="cosine") as db:
            written = db.upsert([d["id"] for d in docs], texts, vectors,
                                [d["metadata"] for d in docs])
            elapsed = time.perf_counter() - t0
            echo(f"Built a demo database at {target}{' (temporary)' if temp else ''}:")
            echo(f"  {len(db)} documents from the sample shipped in llmdsdb/data "
                 f"({written} written now, {len(docs) - written} already there), "
                 f"{elapsed:.2f} s.")
            echo(f"  Vectors: a deterministic feature-hashing embedder ({dim} dimensions;")
            echo("  word unigrams, bigrams and character trigrams), not a neural model, so")
            echo("  vector similarity here means shared words and word pieces, not meaning.")
            echo("  Scores: BM25 score, cosine similarity, and the hybrid's fused score")
            echo("  (min-max normalised sides, weight 0.5 each).")
            for query, note in DEMO_QUERIES:
                qvec = embedder.embed([query])[0]
                echo("")
                echo(f"Query: {query!r}  ({note})")
                for label, kwargs in (
                    ("BM25", {"query": query}),
                    ("vector", {"vector": qvec}),
                    ("hybrid", {"query": query, "vector": qvec, "fusion_weight": 0.5}),
                ):
                    hits = db.search(top_k=top_k, **kwargs)
                    echo(f"  {label}:")
                    name = {"BM25": "bm25 ", "vector": "cos  "}.get(label, "fused")
                    for rank, hit in enumerate(hits, 1):  # the API's score, as the CLI shows
                        echo(f"    {rank}. {name} {hit.score:6.3f}  {hit.id:<16} "
                             f"{_short(hit.text, 60)}")
                    if not hits:
                        echo("    (no results)")
            echo("")
            echo("Try the same from the shell:")
            echo("  llmdsdb demo --path ./llmdsdb-demo && "
                 "llmdsdb query ./llmdsdb-demo 'why is the sea salty' --top-k 3")
    finally:
        if temp:
            shutil.rmtree(target, ignore_errors=True)
    return target
