"""Hybrid fusion on BEIR SciFact: which fusion function should the database use by default?

For each of the 300 test queries we retrieve BM25 candidates and exact dense (cosine)
candidates to a depth of D per side, fuse them with :func:`llmdsdb.fusion.fuse`, and score
nDCG@10. Swept: method (min-max convex, z-score convex, theoretical-min convex, RRF k=60) x
fusion_weight 0.0..1.0 x depth D x the treatment of a candidate one side did not retrieve
("worst" = the worst score seen on that side; "exact" = its real BM25 score / distance via the
``fill_missing`` hook). Then, to judge what generalises rather than what wins on SciFact:

* robustness: mean and worst nDCG@10 over a band of weights around 0.5 (0.3..0.7);
* paired bootstrap (2,000 resamples of the queries) of the differences that matter;
* split-half tuning: tune the weight on a random half of the queries, test on the other
  half, vs. the fixed default weight (does tuning the weight buy anything out of sample?).

BM25 comes from ``llmdsdb.inverted_index.InvertedIndex`` when it is importable (``--bm25
ours``), else from bm25s (k1=1.2, b=0.75, English stopwords + Snowball stemmer), the
reference implementation in ../shared/data/README.md.

Run from the repository root::

    python tools/bench/bench_fusion.py            # full sweep (a few minutes)
    python tools/bench/bench_fusion.py --quick    # 100 queries, fewer points
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from llmdsdb.fusion import fuse

METHODS: list[tuple[str, str, str]] = [
    # (label, method, normalization)
    ("minmax", "convex", "minmax"),
    ("zscore", "convex", "zscore"),
    ("theoretical", "convex", "theoretical"),
    ("rrf", "rrf", "minmax"),
]


class Runs:
    """Per-query candidate lists and, for the "exact" fill, the full score matrices."""

    def __init__(self, sf: common.SciFact, bm25_backend: str, n_queries: int) -> None:
        self.sf = sf
        self.nq = n_queries
        self.qids = sf.query_ids[:n_queries]
        t0 = time.perf_counter()
        self.bm25_full, self.bm25_name = _bm25_scores(sf, bm25_backend, n_queries)
        self.bm25_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cos = sf.query_emb[:n_queries].astype(np.float64) @ sf.corpus_emb.T.astype(np.float64)
        self.dist_full = 1.0 - cos  # what HNSW(metric="cosine") returns
        self.dense_s = time.perf_counter() - t0
        self.bm25_order = np.argsort(-self.bm25_full, axis=1, kind="stable")
        self.dense_order = np.argsort(self.dist_full, axis=1, kind="stable")

    def lists(self, qi: int, depth: int) -> tuple[list, list]:
        bi = self.bm25_order[qi, :depth]
        bs = self.bm25_full[qi, bi]
        keep = bs > 0  # an inverted index only returns documents matching a query term
        bm25 = list(zip(bi[keep].tolist(), bs[keep].tolist()))
        di = self.dense_order[qi, :depth]
        dense = list(zip(di.tolist(), self.dist_full[qi, di].tolist()))
        return bm25, dense

    def filler(self, qi: int, which: str) -> Callable[[str, Sequence[int]], list]:
        """fill_missing hook: "exact" fills both sides, "vector" / "bm25" only that side."""

        def fill(side: str, keys: Sequence[int]) -> list:
            if which != "exact" and side != which:
                return [None] * len(keys)
            idx = np.asarray(keys, dtype=np.int64)
            row = self.bm25_full[qi] if side == "bm25" else self.dist_full[qi]
            return row[idx].tolist()

        return fill

    def single_side_ndcg(self) -> dict[str, float]:
        out = {}
        for name, order in (("bm25", self.bm25_order), ("dense", self.dense_order)):
            runs = {q: [self.sf.doc_ids[j] for j in order[i, :10]] for i, q in enumerate(self.qids)}
            out[name] = common.mean_ndcg(runs, {q: self.sf.qrels[q] for q in self.qids})
        return out


def _bm25_scores(sf: common.SciFact, backend: str, nq: int) -> tuple[np.ndarray, str]:
    """Full BM25 score matrix (nq, n_docs), float64."""
    if backend in ("auto", "ours"):
        try:
            from llmdsdb.inverted_index import InvertedIndex
        except ImportError:
            if backend == "ours":
                raise
        else:
            idx = InvertedIndex()
            ids = list(range(len(sf.texts)))
            if hasattr(idx, "add_documents"):
                idx.add_documents(ids, sf.texts)
            else:
                for i, t in zip(ids, sf.texts):
                    idx.add_document(i, t)
            full = np.zeros((nq, len(sf.texts)))
            for qi, q in enumerate(sf.queries[:nq]):
                for doc, score in idx.search(q, top_k=len(sf.texts)):
                    full[qi, doc] = score
            return full, "llmdsdb.InvertedIndex (defaults)"
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    tok = bm25s.tokenize(sf.texts, stopwords="en", stemmer=stemmer, show_progress=False)
    r = bm25s.BM25(k1=1.2, b=0.75)
    r.index(tok, show_progress=False)
    qtok = bm25s.tokenize(
        sf.queries[:nq], stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False
    )
    full = np.stack([np.asarray(r.get_scores(q), dtype=np.float64) for q in qtok])
    return full, f"bm25s {bm25s.__version__} (k1=1.2, b=0.75, en stopwords, Snowball)"


def per_query_ndcg(
    R: Runs, label: str, method: str, norm: str, weight: float, depth: int, fill: str,
    rrf_k: float = 60,
) -> np.ndarray:
    out = np.empty(R.nq)
    for qi, q in enumerate(R.qids):
        bm25, dense = R.lists(qi, depth)
        hits = fuse(
            bm25,
            dense,
            fusion_weight=weight,
            method=method,  # type: ignore[arg-type]
            normalization=norm,  # type: ignore[arg-type]
            top_k=10,
            fill_missing=R.filler(qi, fill) if fill != "worst" else None,
            rrf_k=rrf_k,
        )
        out[qi] = common.ndcg_at_k([R.sf.doc_ids[h.key] for h in hits], R.sf.qrels[q], 10)
    return out


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap of mean(a - b) over queries: mean, 95% interval, P(diff <= 0)."""
    rng = np.random.default_rng(seed)
    d = a - b
    idx = rng.integers(0, len(d), size=(n, len(d)))
    means = d[idx].mean(axis=1)
    return {
        "diff": float(d.mean()),
        "lo95": float(np.percentile(means, 2.5)),
        "hi95": float(np.percentile(means, 97.5)),
        "p_le_0": float((means <= 0).mean()),
    }


def pipeline_section(sf: common.SciFact) -> list[dict]:
    """Build a RetrievalPipeline over SciFact (texts + embeddings) and score it end to end."""
    from llmdsdb.retrieval_pipeline import RetrievalPipeline

    t0 = time.perf_counter()
    p = RetrievalPipeline(embedding_dim=sf.corpus_emb.shape[1], seed=0)
    p.add_documents(list(range(len(sf.texts))), sf.texts, sf.corpus_emb)
    build_s = time.perf_counter() - t0
    print(f"pipeline built in {build_s:.0f} s", flush=True)
    rows = []
    for label, w, fusion in (("BM25 only", 0.0, "convex"), ("vector only", 1.0, "convex"),
                             ("hybrid default (min-max convex, w=0.5)", 0.5, "convex"),
                             ("hybrid RRF (w=0.5)", 0.5, "rrf")):
        runs = {}
        t0 = time.perf_counter()
        for i, q in enumerate(sf.query_ids):
            res = p.search(sf.queries[i], sf.query_emb[i], top_k=10, fusion_weight=w,
                           fusion=fusion)  # type: ignore[arg-type]
            runs[q] = [sf.doc_ids[d] for d, _ in res]
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(len(sf.query_ids)):
            p.search(sf.queries[i], sf.query_emb[i], top_k=10, fusion_weight=w,
                     fusion=fusion)  # type: ignore[arg-type]
        warm = time.perf_counter() - t0
        rows.append({"run": label, "nDCG@10": common.mean_ndcg(runs, sf.qrels),
                     "q/s (cache miss)": len(sf.query_ids) / cold,
                     "q/s (cache hit)": len(sf.query_ids) / warm})
        print(rows[-1], flush=True)
    rows.append({"run": f"build: {len(sf.texts)} docs + embeddings", "nDCG@10": "",
                 "q/s (cache miss)": f"{build_s:.0f} s", "q/s (cache hit)": ""})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 queries, fewer points")
    ap.add_argument("--bm25", choices=["auto", "ours", "bm25s"], default="auto")
    ap.add_argument("--no-pipeline", action="store_true",
                    help="skip the RetrievalPipeline end-to-end section (its HNSW build)")
    args = ap.parse_args()
    command = "python tools/bench/bench_fusion.py" + (" --quick" if args.quick else "")
    if args.bm25 != "auto":
        command += f" --bm25 {args.bm25}"
    if args.no_pipeline:
        command += " --no-pipeline"

    sf = common.load_scifact()
    nq = 100 if args.quick else len(sf.query_ids)
    R = Runs(sf, args.bm25, nq)
    weights = [0.0, 0.3, 0.5, 0.7, 1.0] if args.quick else [round(0.1 * i, 1) for i in range(11)]
    depths = [100] if args.quick else [10, 50, 100, 200, 1000]

    def fills_for(label: str) -> list[str]:
        if label == "rrf":
            return ["worst"]  # RRF uses ranks only
        if label == "minmax" and not args.quick:
            return ["worst", "exact", "vector", "bm25"]
        return ["worst", "exact"]

    single = R.single_side_ndcg()
    print(f"BM25: {R.bm25_name}; single sides nDCG@10: {single}", flush=True)

    scores: dict[tuple, np.ndarray] = {}
    t_start = time.perf_counter()
    for depth in depths:
        for label, method, norm in METHODS:
            for fill in fills_for(label):
                for w in weights:
                    scores[(label, depth, fill, w)] = per_query_ndcg(
                        R, label, method, norm, w, depth, fill
                    )
                curve = [scores[(label, depth, fill, w)].mean() for w in weights]
                print(f"depth={depth:5d} {label:12s} fill={fill:5s} "
                      + " ".join(f"{c:.3f}" for c in curve), flush=True)
    sweep_s = time.perf_counter() - t_start

    # Latency of one fuse call at the default (depth 100 per side, top 10).
    lat = []
    for qi in range(R.nq):
        bm25, dense = R.lists(qi, 100)
        t0 = time.perf_counter()
        fuse(bm25, dense, fusion_weight=0.5, top_k=10)
        lat.append(time.perf_counter() - t0)
    fuse_lat = common.percentiles(lat)

    # Peer reference in the same run: the figures fuse bm25s with exact dense.
    peer_rows = []
    if R.bm25_name.startswith("llmdsdb"):
        try:
            Rp = Runs(sf, "bm25s", nq)
        except ImportError:
            Rp = None
        if Rp is not None:
            for label, method, norm in (("minmax", "convex", "minmax"), ("rrf", "rrf", "minmax")):
                peer_rows.append({
                    "BM25": Rp.bm25_name.split(" (")[0], "fusion (w=0.5, depth 100)": label,
                    "nDCG@10": float(per_query_ndcg(Rp, label, method, norm, 0.5, 100,
                                                    "worst").mean()),
                })
            peer_rows.append({"BM25": "bm25s alone", "fusion (w=0.5, depth 100)": "-",
                              "nDCG@10": Rp.single_side_ndcg()["bm25"]})
        for label in ("minmax", "rrf"):
            peer_rows.append({"BM25": "llmdsdb InvertedIndex",
                              "fusion (w=0.5, depth 100)": label,
                              "nDCG@10": float(scores[(label, 100 if 100 in depths else depths[0],
                                                       "worst", 0.5)].mean())})

    pipe_rows = [] if args.quick or args.no_pipeline else pipeline_section(sf)

    # --- report ----------------------------------------------------------------------------
    body: list[str] = []
    body.append(f"Data: BEIR SciFact, {nq} test queries, {len(sf.doc_ids)} documents. ")
    body.append(f"BM25: {R.bm25_name}. Dense: exact cosine over the all-MiniLM-L6-v2 "
                "embeddings (numpy), passed to fuse() as distances 1 - cos.\n")
    body.append(f"Single sides: BM25 nDCG@10 = {single['bm25']:.4f}, "
                f"dense = {single['dense']:.4f}.\n")
    body.append("## nDCG@10 over fusion_weight (0 = BM25 only, 1 = vector only)\n")
    rows = []
    for depth in depths:
        for label, method, _ in METHODS:
            for fill in fills_for(label):
                row: dict[str, object] = {"depth": depth, "method": label, "missing": fill}
                for w in weights:
                    row[f"w={w}"] = float(scores[(label, depth, fill, w)].mean())
                rows.append(row)
    body.append(common.table(rows))

    # Robustness over a band of weights, at each depth.
    band = [w for w in weights if 0.3 <= w <= 0.7]
    body.append(f"\n## Robustness: nDCG@10 over the weight band {band}\n")
    rrows = []
    for depth in depths:
        for label, method, _ in METHODS:
            for fill in fills_for(label):
                vals = [float(scores[(label, depth, fill, w)].mean()) for w in band]
                allv = [float(scores[(label, depth, fill, w)].mean()) for w in weights]
                best_w = weights[int(np.argmax(allv))]
                rrows.append({
                    "depth": depth, "method": label, "missing": fill,
                    "at 0.5": float(scores[(label, depth, fill, 0.5)].mean()),
                    "band mean": statistics.fmean(vals), "band min": min(vals),
                    "best w": best_w, "best": max(allv),
                })
    body.append(common.table(rrows))

    # Paired bootstrap of the comparisons behind the default.
    d0 = 100
    ref = scores[("minmax", d0, "worst", 0.5)]
    comps = [
        ("minmax/worst vs rrf", ("rrf", d0, "worst", 0.5)),
        ("minmax/worst vs zscore/worst", ("zscore", d0, "worst", 0.5)),
        ("minmax/worst vs theoretical/worst", ("theoretical", d0, "worst", 0.5)),
        ("minmax/worst vs minmax/exact", ("minmax", d0, "exact", 0.5)),
        ("minmax/worst vs minmax/vector-only fill", ("minmax", d0, "vector", 0.5)),
        ("minmax/worst vs minmax/bm25-only fill", ("minmax", d0, "bm25", 0.5)),
        ("minmax/worst vs BM25 only", ("minmax", d0, "worst", 0.0)),
        ("minmax/worst vs dense only", ("minmax", d0, "worst", 1.0)),
    ]
    if 50 in depths:
        comps.append(("depth 100 vs depth 50", ("minmax", 50, "worst", 0.5)))
    if 200 in depths:
        comps.append(("depth 100 vs depth 200", ("minmax", 200, "worst", 0.5)))
    brows = []
    for name, key in comps:
        if key not in scores:
            continue
        brows.append({"comparison (w=0.5, depth 100)": name,
                      **bootstrap_diff(ref, scores[key])})
    body.append("\n## Paired bootstrap over queries (2,000 resamples): mean nDCG@10 "
                "difference, 95% interval, share of resamples <= 0\n")
    body.append(common.table(brows))

    # RRF's constant: is k = 60 a fair setting for the RRF side of the comparison?
    krows = []
    for kk in (1, 5, 20, 60, 100, 200):
        row = {"rrf k": kk}
        for w in (0.3, 0.5, 0.7):
            row[f"w={w}"] = float(per_query_ndcg(R, "rrf", "rrf", "minmax", w, d0, "worst",
                                                 rrf_k=kk).mean())
        krows.append(row)
    body.append("\n## RRF constant k, depth 100\n")
    body.append(common.table(krows))

    # Split-half: tune the weight on half the queries, evaluate on the other half.
    rng = np.random.default_rng(1)
    srows = []
    for label, method, _ in METHODS:
        fixed, tuned, picked = [], [], []
        for _ in range(50):
            perm = rng.permutation(R.nq)
            a, b = perm[: R.nq // 2], perm[R.nq // 2:]
            means_a = [scores[(label, d0, "worst", w)][a].mean() for w in weights]
            wbest = weights[int(np.argmax(means_a))]
            picked.append(wbest)
            tuned.append(scores[(label, d0, "worst", wbest)][b].mean())
            fixed.append(scores[(label, d0, "worst", 0.5)][b].mean())
        srows.append({"method": label, "fixed w=0.5 (held-out)": statistics.fmean(fixed),
                      "tuned w (held-out)": statistics.fmean(tuned),
                      "tuned w picked (median)": statistics.median(picked),
                      "min picked": min(picked), "max picked": max(picked)})
    body.append("\n## Split-half tuning, depth 100 (50 random splits; weight tuned on one "
                "half, scored on the other)\n")
    body.append(common.table(srows))

    if peer_rows:
        body.append("\n## Same run, the issue's reference: bm25s + exact dense\n")
        body.append(common.table(peer_rows))
    if pipe_rows:
        body.append("\n## RetrievalPipeline end to end (our InvertedIndex + our HNSW, "
                    "defaults, embeddings given)\n")
        body.append(common.table(pipe_rows))
    body.append(f"\n## Cost\n\nfuse() at depth 100 per side, top_k=10, default options: "
                f"p50 {fuse_lat['p50_ms'] * 1e3:.0f} µs, p99 {fuse_lat['p99_ms'] * 1e3:.0f} µs "
                f"per query (BM25 scoring of all {nq} queries took {R.bm25_s:.2f} s, exact "
                f"dense {R.dense_s:.3f} s; whole sweep {sweep_s:.0f} s).\n")
    path = common.write_result(
        "fusion_quick" if args.quick else "fusion",
        command,
        "\n".join(body),
        data={
            "bm25": R.bm25_name,
            "single": single,
            "curves": {f"{k[0]}|{k[1]}|{k[2]}|{k[3]}": float(v.mean()) for k, v in scores.items()},
            "robustness": rrows,
            "bootstrap": brows,
            "split_half": srows,
            "rrf_k": krows,
            "fuse_latency": fuse_lat,
            "peer": peer_rows,
            "pipeline": pipe_rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
