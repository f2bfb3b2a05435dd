"""Shared helpers of the benchmarks: data loading, metrics, timing, result files.

Run benchmarks from the repository root, for example ``python tools/bench/bench_bm25.py``.
Data comes from ``../shared/data`` beside the checkout, or from ``$LLMDSDB_DATA``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "tools" / "bench" / "results"


def data_dir() -> Path:
    """Directory of the evaluation data (``../shared/data`` unless ``$LLMDSDB_DATA``)."""
    env = os.environ.get("LLMDSDB_DATA")
    if env:
        return Path(env)
    return REPO.parent / "shared" / "data"


@dataclass(frozen=True)
class SciFact:
    """BEIR SciFact: corpus, the 300 test queries with embeddings, and the test qrels."""

    doc_ids: list[str]  # corpus ids, row order of corpus_emb
    titles: list[str]
    texts: list[str]  # title + " " + text, stripped (BEIR's convention)
    query_ids: list[str]  # the 300 test queries, row order of queries_emb
    queries: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: relevance}
    corpus_emb: np.ndarray  # float32 (5183, 384), unit length
    query_emb: np.ndarray  # float32 (300, 384), unit length


def load_scifact(root: Path | None = None) -> SciFact:
    """Load SciFact from ``root`` (default ``data_dir() / 'scifact'``)."""
    root = root or data_dir() / "scifact"
    doc_ids, titles, texts = [], [], []
    with gzip.open(root / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            doc_ids.append(rec["_id"])
            titles.append(rec["title"])
            texts.append((rec["title"] + " " + rec["text"]).strip())
    all_queries = {}
    with gzip.open(root / "queries.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            all_queries[rec["_id"]] = rec["text"]
    query_ids = (root / "queries_ids.txt").read_text().split()
    qrels: dict[str, dict[str, int]] = {}
    with open(root / "qrels_test.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    return SciFact(
        doc_ids=doc_ids,
        titles=titles,
        texts=texts,
        query_ids=query_ids,
        queries=[all_queries[q] for q in query_ids],
        qrels=qrels,
        corpus_emb=np.load(root / "corpus_emb.npy"),
        query_emb=np.load(root / "queries_emb.npy"),
    )


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k of one ranking with graded relevance (trec_eval's formula: gain = rel,
    discount = log2(rank + 1)). Returns 0.0 when nothing is relevant.

    >>> round(ndcg_at_k(["a", "b", "c"], {"a": 1}), 6)
    1.0
    >>> round(ndcg_at_k(["x", "a"], {"a": 1}), 6)  # 1/log2(3)
    0.63093
    >>> round(ndcg_at_k(["b", "x", "a"], {"a": 1, "b": 1}), 6)  # (1 + 1/2) / (1 + 1/log2(3))
    0.919721
    """
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mean_ndcg(
    runs: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], k: int = 10
) -> float:
    """Mean nDCG@k over the queries of ``qrels`` (a query missing from ``runs`` scores 0)."""
    return statistics.fmean(ndcg_at_k(runs.get(q, []), rel, k) for q, rel in qrels.items())


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean recall@k: share of the true k nearest found among the returned k, per query.

    ``found`` and ``truth`` are int arrays of shape (n_queries, >= k); compared as sets.
    """
    hits = 0
    for f, t in zip(found, truth):
        hits += len(set(f[:k].tolist()) & set(t[:k].tolist()))
    return hits / (k * len(truth))


def timeit(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time in seconds of ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def percentiles(samples_s: Iterable[float]) -> dict[str, float]:
    """p50/p90/p99/max of latencies given in seconds, returned in milliseconds."""
    a = np.asarray(list(samples_s), dtype=np.float64) * 1e3
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss is KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": str(os.cpu_count()),
        "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    return info


def write_result(name: str, command: str, body: str, data: object | None = None) -> Path:
    """Write ``results/<name>.md`` (and ``.json`` with ``data``) with the command and machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    head = [f"# {name}", "", f"Command: `{command}`", "", "Machine:", ""]
    head += [f"- {k}: {v}" for k, v in machine().items()]
    head += ["", time.strftime("Measured: %Y-%m-%d %H:%M UTC", time.gmtime()), ""]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(head) + "\n" + body.rstrip() + "\n", encoding="utf-8")
    if data is not None:
        (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (floats shown with 4 significant digits)."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns or rows[0].keys())

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"
