"""Diagnosis: warm BM25 queries in the process that built a large index, step by step.

In ``bench_bm25.py --scale 1000000`` our warm queries run 2-4x slower in the process that
built the index than on the same pages opened in a fresh process; bm25s does not show this.
This script builds the same synthetic corpus in one process, frees the corpus, and then
times warm passes of the 300 SciFact queries (CPU time, best of ``--passes``) after each of
these steps, the decoded-term cache rebuilt by one untimed pass before each timing:

1. ``built``: the index as the build left it;
2. ``control``: the decoded-term cache and accumulator dropped and rebuilt (no other change);
3. ``skip packed``: each term's block summaries ("skip rows") copied into one new array, as
   ``InvertedIndex.open`` lays them out. A warm query does not read them (checked: no skip
   access in a warm pass); the build leaves them as ~17,000 separate arrays;
4. ``reopened``: the built index deleted and a new handle opened on its pages.

Each step also reports the minor page faults and system CPU time of its timed passes.
Beside each step, a probe that does not involve the index: ``np.add.at`` of 500,000 sorted
random positions into a freshly allocated 9 MB float64 array (the scoring's scatter), ns per
element, best of 20. It moves with the query speed, so whatever slows the queries slows any
random-access numpy work in the process.

It reaches into private members (``_skip``, ``_invalidate``, ``_tls``): a diagnostic, not an
API. Usage (from the repository root; ~6 minutes at 1M documents)::

    python tools/bench/bm25_build_state.py            # 1,000,000 documents
    python tools/bench/bm25_build_state.py --docs 300000
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from bench_bm25 import build_llmdsdb, synthetic_corpus

from llmdsdb.inverted_index import InvertedIndex

K = 10
_N_PROBE = 500_000


def _probe(n_docs: int, rng: np.random.Generator) -> float:
    """ns per element of np.add.at into a fresh float64 array of ~n_docs * 1.125 entries."""
    size = n_docs + n_docs // 8
    pos = np.sort(rng.choice(n_docs, min(_N_PROBE, n_docs), replace=False)).astype(np.int32)
    val = rng.random(len(pos))
    acc = np.zeros(size)
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        np.add.at(acc, pos, val)
        best = min(best, time.perf_counter() - t0)
    return best / len(pos) * 1e9


def _warm_qps(idx: InvertedIndex, queries: list[str], passes: int) -> dict[str, float]:
    """Drop the decoded-term cache, rebuild it with one pass, then time ``passes`` passes:
    best CPU q/s, and the minor page faults and system CPU seconds per pass."""
    idx._invalidate()
    idx._tls.acc = None
    gc.collect()
    for q in queries:
        idx.search(q, K)
    best = float("inf")
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(passes):
        t0 = time.process_time()
        for q in queries:
            idx.search(q, K)
        best = min(best, time.process_time() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "warm_qps_cpu": len(queries) / best,
        "minflt_per_pass": (r1.ru_minflt - r0.ru_minflt) / passes,
        "sys_s_per_pass": (r1.ru_stime - r0.ru_stime) / passes,
    }


def _pack_skips(idx: InvertedIndex) -> None:
    skip = idx._skip
    lens = [len(s) for s in skip]
    packed = np.concatenate(skip)
    off = np.concatenate(([0], np.cumsum(lens))).tolist()
    idx._skip = [packed[off[i] : off[i + 1]] for i in range(len(skip))]
    gc.collect()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    queries = list(common.load_scifact().queries)
    rng = np.random.default_rng(5)
    rows = [{"step": "fresh process, nothing built", "probe_ns": _probe(args.docs, rng)}]
    print(rows[-1], flush=True)

    texts: list[str] = []
    for _, t in synthetic_corpus(args.docs):
        texts.extend(t)
    t0 = time.process_time()
    idx = build_llmdsdb(texts)
    build_s = time.process_time() - t0
    del texts
    gc.collect()

    def measure(name: str, ix: InvertedIndex) -> None:
        rows.append({
            "step": name,
            **_warm_qps(ix, queries, args.passes),
            "probe_ns": _probe(args.docs, rng),
        })
        print(rows[-1], flush=True)

    measure("built", idx)
    measure("control: cache rebuilt", idx)
    _pack_skips(idx)
    measure("skip rows packed into one array", idx)
    store = idx.store
    del idx
    gc.collect()
    measure("built index deleted, pages reopened", InvertedIndex.open(store))

    body = (
        f"{args.docs:,} synthetic documents (bench_bm25's corpus), built in this process in "
        f"{build_s:.0f} s CPU, the corpus then freed. warm_qps_cpu: the 300 SciFact queries, "
        f"top-{K}, best of {args.passes} passes after a pass that rebuilds the decoded-term "
        f"cache. probe_ns: np.add.at of {_N_PROBE:,} sorted random positions into a fresh "
        "float64 array of 1.125 x docs entries, best of 20, ns per element (no index "
        "involved). minflt_per_pass / sys_s_per_pass: minor page faults and system CPU "
        "seconds per timed pass. The steps run in this order in one process; the machine "
        "is shared, so compare neighbouring rows.\n\n"
        + common.table(
            rows, ["step", "warm_qps_cpu", "minflt_per_pass", "sys_s_per_pass", "probe_ns"]
        )
    )
    path = common.write_result(
        "bm25_build_state", f"python tools/bench/bm25_build_state.py --docs {args.docs}", body, rows
    )
    print(path)


if __name__ == "__main__":
    main()
