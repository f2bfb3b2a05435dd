"""The Database's default ``ef_construction``: recall and build cost at 100 against 200.

For each set (SciFact MiniLM embeddings, siftsmall, fmnistsmall - bench_hnsw.py's sets and
ground truth; ``--scale N`` adds bench_hnsw's synthetic N x 384 set) and each
``ef_construction`` in ``--efc`` (M=16, level multiplier 1/ln M as the Database builds it),
graphs are built with ``threads=1`` for ``--seeds`` seeds, the builds of the two values in
alternation. Reported per value: build vectors/s (the fastest seed), and recall@10 averaged
over the seeds at the query settings the Database uses:

* ``ef=50, k=10`` - the graph's default ``ef_search`` for a 10-nearest query;
* ``k=100`` (so ``ef=100``), first 10 kept - what ``Database.search`` asks the vector side
  for at ``top_k=10`` (the fusion's candidate depth, 100), so its recall of the true 10;

plus the smallest swept ``ef`` where each graph reaches recall@10 >= 0.95 (k=10).

Run from the repository root::

    python tools/bench/bench_efc.py                  # the three real sets
    python tools/bench/bench_efc.py --scale 20000    # plus a 20k synthetic set
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_hnsw import exact_gt, load_sets, synthetic  # noqa: E402

from llmdsdb.hnsw import HNSW  # noqa: E402

M = 16
K = 10
SWEEP = (10, 16, 24, 32, 50, 64, 100, 128, 200)


def recall_of(h: HNSW, Q: np.ndarray, gt: np.ndarray, k: int, ef: int) -> float:
    found = np.array([[i for i, _ in h.search(q, k=k, ef=ef)][:K] for q in Q])
    return common.recall_at_k(found, gt, K)


def run_set(ds: dict, efcs: list[int], seeds: int) -> dict:
    X, Q, metric = ds["X"], ds["Q"], ds["metric"]
    gt = ds["gt"] if ds["gt"] is not None else exact_gt(X, Q, metric)
    gt = np.asarray(gt)[:, :K]
    best = dict.fromkeys(efcs, math.inf)
    rec: dict[int, dict[str, list[float]]] = {e: {"ef50": [], "k100": []} for e in efcs}
    sweep: dict[int, dict[int, list[float]]] = {e: {ef: [] for ef in SWEEP} for e in efcs}
    for seed in range(1, seeds + 1):
        for efc in efcs:  # alternate the values within a seed
            h = HNSW(X.shape[1], M=M, ef_construction=efc, seed=seed, ml=1 / math.log(M),
                     metric=metric)
            t = time.perf_counter()
            h.add_many(X, np.arange(len(X)), threads=1)
            best[efc] = min(best[efc], time.perf_counter() - t)
            rec[efc]["ef50"].append(recall_of(h, Q, gt, K, 50))
            rec[efc]["k100"].append(recall_of(h, Q, gt, 100, 100))
            for ef in SWEEP:
                sweep[efc][ef].append(recall_of(h, Q, gt, K, ef))
            del h
    out = {"set": ds["name"], "n": len(X), "dim": X.shape[1], "metric": metric, "seeds": seeds,
           "by_efc": {}}
    for efc in efcs:
        curve = {ef: float(np.mean(v)) for ef, v in sweep[efc].items()}
        out["by_efc"][efc] = {
            "build_vec_s": len(X) / best[efc],
            "recall10_ef50": float(np.mean(rec[efc]["ef50"])),
            "recall10_k100": float(np.mean(rec[efc]["k100"])),
            "min_ef_recall95": next((ef for ef in SWEEP if curve[ef] >= 0.95), None),
            "curve": curve,
        }
        print(ds["name"], efc, {k: v for k, v in out["by_efc"][efc].items() if k != "curve"},
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--efc", default="100,200", help="ef_construction values")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--scale", type=int, default=None, help="add a synthetic N x 384 set")
    ap.add_argument("--name", default="bench_efc")
    args = ap.parse_args()
    efcs = [int(x) for x in args.efc.split(",")]
    sets = load_sets(False)
    if args.scale:
        sets.append(synthetic(args.scale))
    results = [run_set(ds, efcs, args.seeds) for ds in sets]
    rows = []
    base = efcs[-1]
    for r in results:
        for efc in efcs:
            b = r["by_efc"][efc]
            rows.append({
                "set": f"{r['set']} ({r['n']}x{r['dim']}, {r['metric']})", "ef_construction": efc,
                "build vec/s (1 thread)": b["build_vec_s"],
                "build vs efc " + str(base): b["build_vec_s"] / r["by_efc"][base]["build_vec_s"],
                "recall@10 ef=50": b["recall10_ef50"],
                "recall@10 k=100 (Database depth)": b["recall10_k100"],
                "smallest ef with recall@10 >= 0.95": b["min_ef_recall95"],
            })
    body = (f"HNSW M={M}, level multiplier 1/ln M, threads=1, {args.seeds} seed(s) per value "
            f"(recall averaged over seeds; build: fastest seed), ef_construction values built "
            f"in alternation. Recall@10 against exact ground truth, k=10 at ef=50 (the graph's "
            f"default ef_search) and k=100 (ef=100, what Database.search asks the vector side "
            f"for at top_k=10), the first 10 kept.\n\n" + common.table(rows))
    cmd = "python " + " ".join(["tools/bench/bench_efc.py"] + sys.argv[1:])
    p = common.write_result(args.name, cmd, body, results)
    print(body)
    print("written", p)


if __name__ == "__main__":
    main()
