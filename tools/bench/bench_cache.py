"""Hit ratio of the decoded-page cache: TinyLFU admission vs plain LRU, same budget, same run.

Both policies are ``llmdsdb.pages.PageCache`` (``policy="tinylfu"`` and ``policy="lru"``), fed
the same access streams; a miss is followed by a ``put`` of the page with its decoded size,
as ``LmdbPageStore.load`` does. The budget is 10% of the data (``--budget``).

Workloads:

1. **BM25 page stream** — a synthetic corpus drawn from SciFact's word and document-length
   distributions (``bench_bm25.synthetic_corpus``, seed 7; ``--docs`` documents) indexed by
   ``InvertedIndex`` into a page store that records every ``load(page_id)``. The query pool
   is all 1,109 SciFact queries; a stream of ``--queries`` queries is drawn Zipf(1.0) over the
   pool (rank r with probability proportional to 1/r, ranks shuffled). The page stream is the
   pages each query loads, in order. Page cost = the decoded page's bytes
   (``sizeof_decoded``); data = all postings pages' decoded bytes.
2. **Direct Zipf page stream** — ``--pages`` page ids, sizes log-normal around 16 KiB
   (4 KiB..256 KiB), 1,000,000 accesses drawn Zipf(1.0).
3. **CloudPhysics trace** — ``/work/shared/data/traces/cloudphysics_io_sample.csv.gz``
   (113,872 requests, 48,974 distinct ``lbn``), ``lbn`` as the key, every block one unit
   (4 KiB), budget 10% of the distinct blocks.

Usage (from the repository root)::

    python tools/bench/bench_cache.py            # 100,000 documents, 20,000 queries
    python tools/bench/bench_cache.py --quick    # 20,000 documents, 5,000 queries
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

from llmdsdb.pages import MemoryPageStore, PageCache, sizeof_decoded


class RecordingStore(MemoryPageStore):
    """A MemoryPageStore that logs every ``load`` (the page accesses a cache would see)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[int] | None = None
        self.cost: dict[int, int] = {}

    def load(self, page_id, decode):  # type: ignore[override]
        obj = super().load(page_id, decode)
        if self.log is not None:
            self.log.append(page_id)
        if page_id not in self.cost:
            self.cost[page_id] = sizeof_decoded(obj, len(self.get(page_id)))
        return obj


def simulate(stream: np.ndarray, cost: dict[int, int] | np.ndarray, budget: int,
             policy: str) -> dict:
    cache = PageCache(budget, policy=policy)  # type: ignore[arg-type]
    get, put = cache.get, cache.put
    t0 = time.perf_counter()
    for pid in stream.tolist():
        if get(pid) is None:
            put(pid, True, int(cost[pid]))
    dt = time.perf_counter() - t0
    s = cache.stats()
    return {"policy": policy, "hit_ratio": s.hit_ratio, "hits": s.hits, "misses": s.misses,
            "rejected": s.rejected, "evictions": s.evictions, "accesses": len(stream),
            "us_per_access": dt / max(1, len(stream)) * 1e6}


def zipf_ranks(n: int, size: int, rng: np.random.Generator, s: float = 1.0) -> np.ndarray:
    """``size`` draws from ranks 0..n-1 with P(r) proportional to 1/(r+1)**s."""
    p = 1.0 / np.arange(1, n + 1) ** s
    p /= p.sum()
    return rng.choice(n, size=size, p=p)


def bm25_workload(n_docs: int, n_queries: int, seed: int) -> dict:
    from bench_bm25 import synthetic_corpus

    from llmdsdb.codec import decode_arrays, decode_postings
    from llmdsdb.errors import CorruptionError
    from llmdsdb.inverted_index import InvertedIndex

    queries = []
    with gzip.open(common.data_dir() / "scifact" / "queries.jsonl.gz", "rt") as fh:
        for line in fh:
            queries.append(json.loads(line)["text"])
    store = RecordingStore()
    idx = InvertedIndex(store=store)
    t0 = time.perf_counter()
    for start, texts in synthetic_corpus(n_docs):
        idx.add_documents(range(start, start + len(texts)), texts)
    idx.flush()
    build_s = time.perf_counter() - t0
    idx = InvertedIndex.open(store)  # only the directory in memory: postings via load()
    # decoded cost of every page (the "data")
    total = 0
    for pid, raw in store._pages.items():
        try:
            obj = decode_postings(raw)
        except CorruptionError:  # not a postings page
            try:
                obj = decode_arrays(raw)
            except CorruptionError:
                obj = raw
        c = sizeof_decoded(obj, len(raw))
        store.cost[pid] = c
        total += c
    store._decoded.clear()
    # the pages each distinct query loads (search is deterministic given the index)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(queries))  # rank -> query
    per_query: list[list[int]] = []
    for q in queries:
        store.log = []
        idx.search(q, top_k=10)
        per_query.append(store.log)
        store._decoded.clear()
    store.log = None
    ranks = zipf_ranks(len(queries), n_queries, rng)
    stream = np.fromiter((p for r in ranks for p in per_query[order[r]]), dtype=np.int64)
    return {"stream": stream, "cost": store.cost, "data_bytes": total,
            "pages": len(store._pages), "build_s": build_s,
            "distinct_pages_touched": len(np.unique(stream)), "queries": len(queries)}


def direct_zipf_workload(n_pages: int, n_access: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.lognormal(np.log(16384), 0.8, n_pages), 4096, 262144).astype(np.int64)
    perm = rng.permutation(n_pages)
    stream = perm[zipf_ranks(n_pages, n_access, rng)]
    return {"stream": stream, "cost": sizes, "data_bytes": int(sizes.sum()), "pages": n_pages}


def trace_workload() -> dict | None:
    path = common.data_dir() / "traces" / "cloudphysics_io_sample.csv.gz"
    if not path.exists():
        return None
    lbns = []
    with gzip.open(path, "rt") as fh:
        next(fh)
        for line in fh:
            lbns.append(int(line.rsplit(",", 1)[1]))
    arr = np.array(lbns, dtype=np.int64)
    uniq, stream = np.unique(arr, return_inverse=True)
    cost = np.full(len(uniq), 4096, dtype=np.int64)
    return {"stream": stream.astype(np.int64), "cost": cost, "data_bytes": int(cost.sum()),
            "pages": len(uniq)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run")
    ap.add_argument("--docs", type=int, default=None, help="synthetic documents (100,000)")
    ap.add_argument("--queries", type=int, default=None, help="queries in the stream (20,000)")
    ap.add_argument("--pages", type=int, default=100_000, help="pages of the direct stream")
    ap.add_argument("--budget", type=float, default=0.10, help="budget / data (0.10)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    n_docs = args.docs or (20_000 if args.quick else 100_000)
    n_queries = args.queries or (5_000 if args.quick else 20_000)
    n_access = 200_000 if args.quick else 1_000_000

    rows, info = [], {}
    workloads = []
    try:
        w = bm25_workload(n_docs, n_queries, args.seed)
        workloads.append(
            (f"BM25 pages, {n_docs:,} synthetic docs, {n_queries:,} Zipf(1.0) queries", w))
    except FileNotFoundError as exc:
        print(f"skipping the BM25 workload: {exc}", file=sys.stderr)
    workloads.append(
        (f"direct Zipf(1.0), {args.pages:,} pages of 4-256 KiB, {n_access:,} accesses",
         direct_zipf_workload(args.pages, n_access, args.seed)))
    t = trace_workload()
    if t is not None:
        workloads.append(("CloudPhysics trace (lbn keys, 4 KiB blocks)", t))
    for name, w in workloads:
        budget = max(1, int(w["data_bytes"] * args.budget))
        res = {p: simulate(w["stream"], w["cost"], budget, p) for p in ("tinylfu", "lru")}
        ratio = res["tinylfu"]["hit_ratio"] / max(res["lru"]["hit_ratio"], 1e-12)
        for p in ("tinylfu", "lru"):
            r = res[p]
            rows.append({"workload": name, "policy": p, "hit_ratio": r["hit_ratio"],
                         "rejected": r["rejected"], "evictions": r["evictions"],
                         "accesses": r["accesses"], "us_per_access": r["us_per_access"]})
        info[name] = {"budget_bytes": budget, "data_bytes": w["data_bytes"],
                      "pages": w["pages"], "tinylfu_over_lru": ratio,
                      **{k: v for k, v in w.items()
                         if k not in ("stream", "cost", "data_bytes", "pages")}}
        print(f"{name}: tinylfu {res['tinylfu']['hit_ratio']:.4f} lru "
              f"{res['lru']['hit_ratio']:.4f} (x{ratio:.3f})", flush=True)

    cmd = "python tools/bench/bench_cache.py" + (" --quick" if args.quick else "")
    intro = (f"Hit ratio of `PageCache` with W-TinyLFU admission (1% window) vs plain LRU (the "
             f"same class, `policy=\"lru\"`), budget = {args.budget:.0%} of the data, same "
             "streams, same run. A miss is followed by a put of the page with its decoded "
             "size. See the module docstring of tools/bench/bench_cache.py for the workloads.")
    body = [
        intro, "",
        common.table(rows), "",
        "| workload | budget bytes | data bytes | pages | TinyLFU / LRU hit ratio |",
        "|---|---|---|---|---|",
    ]
    body += [f"| {k} | {v['budget_bytes']:,} | {v['data_bytes']:,} | {v['pages']:,} | "
             f"{v['tinylfu_over_lru']:.3f} |" for k, v in info.items()]
    body += ["", "Details: " + json.dumps(info, default=str)]
    common.write_result("bench_cache" + ("_quick" if args.quick else ""), cmd,
                        "\n".join(body), {"rows": rows, "workloads": info})


if __name__ == "__main__":
    main()
