"""Filtered hybrid search on SciFact with synthetic metadata, beside Chroma and LanceDB.

Every SciFact document (5,183, all-MiniLM-L6-v2 embeddings) gets synthetic metadata: a
uniform ``bucket`` in 0..999 and a numeric ``year`` in 1950..2024 (seeded). Filters of
selectivity 50% -> 0.1% (``bucket < 500``, ``< 100``, ``< 10``, ``== 7``, plus a ``year``
range) restrict the 300 test queries, and each system answers them with ``top_k=10``:

* **llmdsdb**: hybrid (text + vector, ``fusion_weight=0.5``, convex/min-max) with
  ``filter=``, and vector-only with ``filter=``; the same queries unfiltered in the same
  run. Recall@10 against the *exact filtered search*, computed here independently: the
  exact allowed BM25 ranking (the unfiltered ranking of every document, restricted) and
  the exact allowed cosine ranking (numpy), 100 candidates each, fused by the same
  :class:`~llmdsdb.fusion.FusionSpec`; vector-only recall against the numpy top-10.
* **Chroma** (``PersistentClient``, defaults, ``hnsw:space=cosine``): vector queries with
  the equivalent ``where=`` (Chroma has no BM25 hybrid); recall@10 against the exact
  filtered vector top-10.
* **LanceDB** (when installed): vector queries with ``where(...)`` over an IVF-PQ index
  (cosine), pre-filter (``prefilter=True``) and post-filter (``prefilter=False``).

All systems live in one process and the passes are interleaved (ours, Chroma, LanceDB, per
round; median q/s of ``--rounds``), so the ratios hold under the shared machine's load.

``--synthetic N`` runs the same on N synthetic documents (``bench_db.py``'s generator:
Zipf-like texts over a 5,000-word vocabulary; 384-d unit vectors that are SciFact's
embeddings cycled with N(0, 0.03^2) noise per component, the queries SciFact's query
embeddings with the same noise) with 100 queries. ``--random-vectors`` uses i.i.d. random
unit vectors instead (no neighbourhood structure for any ANN index: a cost-only case; the
result file gets the suffix ``_random``).

Run from the repository root::

    python tools/bench/bench_filters.py              # full run (3 rounds)
    python tools/bench/bench_filters.py --quick      # 100 queries, 1 round
    python tools/bench/bench_filters.py --synthetic 100000 --rounds 1
    python tools/bench/bench_filters.py --synthetic 100000 --random-vectors
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from common import load_scifact, table, write_result

SELECTIVITIES = [
    ("50%", {"bucket": {"$lt": 500}}, "bucket < 500"),
    ("10%", {"bucket": {"$lt": 100}}, "bucket < 100"),
    ("1%", {"bucket": {"$lt": 10}}, "bucket < 10"),
    ("0.1%", {"bucket": 7}, "bucket = 7"),
    ("year>=2015", {"year": {"$gte": 2015}}, "year >= 2015"),
]
DEPTH = 100  # candidates per side (the database's default depth at top_k=10)


def synthetic_metadata(n: int, seed: int = 2026) -> list[dict]:
    rng = np.random.default_rng(seed)
    buckets = rng.integers(0, 1000, n)
    years = rng.integers(1950, 2025, n)
    return [{"bucket": int(b), "year": int(y)} for b, y in zip(buckets, years)]


def qps(fn, queries) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = [fn(i) for i in queries]
    return len(queries) / (time.perf_counter() - t0), out


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    num = sum(len(set(f) & set(t)) for f, t in zip(found, truth))
    den = sum(len(t) for t in truth)
    return num / den if den else 1.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--systems", default="ours,chroma,lance")
    ap.add_argument("--synthetic", type=int, default=0, metavar="N")
    ap.add_argument("--random-vectors", action="store_true",
                    help="with --synthetic: i.i.d. random unit vectors instead of SciFact's "
                         "embeddings plus noise (a cost-only case: no ANN structure)")
    args = ap.parse_args()
    if args.random_vectors:
        if not args.synthetic:
            ap.error("--random-vectors needs --synthetic N")
        os.environ["LLMDSDB_BENCH_SYNTH_VECTORS"] = "random"
    systems = args.systems.split(",")
    nq = 100 if args.quick or args.synthetic else 300
    rounds = 1 if args.quick else args.rounds

    import llmdsdb
    from llmdsdb.filters import parse_filter
    from llmdsdb.fusion import FusionSpec

    vector_kind = "SciFact all-MiniLM-L6-v2 embeddings"
    if args.synthetic:
        from bench_db import SYNTH_SIGMA, synth_batch, synth_queries, synth_vector_kind

        vector_kind = ("i.i.d. random unit vectors (no ANN structure)"
                       if synth_vector_kind() == "random" else
                       f"SciFact embeddings cycled + N(0, {SYNTH_SIGMA}^2) noise, renormalised")
        ids, texts, emb = synth_batch(0, args.synthetic)
        queries, qemb = synth_queries(nq)
        sf = _Data(ids, texts, emb)
    else:
        sf = load_scifact()
        queries, qemb = sf.queries[:nq], sf.query_emb[:nq]
    n = len(sf.doc_ids)
    metas = synthetic_metadata(n)
    tmp = tempfile.mkdtemp(prefix="bench-filters-")
    notes: list[str] = []
    try:
        # --- build ------------------------------------------------------------------------
        t0 = time.perf_counter()
        db = llmdsdb.open(f"{tmp}/ours")
        for s in range(0, n, 1000):
            db.add(sf.doc_ids[s:s + 1000], sf.texts[s:s + 1000],
                   embeddings=sf.corpus_emb[s:s + 1000], metadata=metas[s:s + 1000])
        db.optimize()
        build = {"ours_s": time.perf_counter() - t0}
        col = tbl = None
        if "chroma" in systems:
            import chromadb

            t0 = time.perf_counter()
            client = chromadb.PersistentClient(path=f"{tmp}/chroma")
            col = client.create_collection("scifact", metadata={"hnsw:space": "cosine"})
            step = 5000 if n > 20000 else 1000
            for s in range(0, n, step):
                col.add(ids=sf.doc_ids[s:s + step], documents=sf.texts[s:s + step],
                        embeddings=sf.corpus_emb[s:s + step], metadatas=metas[s:s + step])
            build["chroma_s"] = time.perf_counter() - t0
        if "lance" in systems:
            try:
                import lancedb
                import pyarrow as pa

                t0 = time.perf_counter()
                ldb = lancedb.connect(f"{tmp}/lance")
                tbl = ldb.create_table("scifact", pa.table({
                    "id": sf.doc_ids, "bucket": [m["bucket"] for m in metas],
                    "year": [m["year"] for m in metas],
                    "vector": pa.FixedSizeListArray.from_arrays(
                        pa.array(sf.corpus_emb.reshape(-1)), sf.corpus_emb.shape[1])}))
                tbl.create_index(metric="cosine", num_partitions=16, num_sub_vectors=48,
                                 vector_column_name="vector")
                build["lance_s"] = time.perf_counter() - t0
                notes.append(f"LanceDB {lancedb.__version__}: IVF-PQ index (16 partitions, "
                             "48 sub-vectors, cosine), default nprobes/refine.")
            except Exception as exc:  # noqa: BLE001 - report, do not hide
                notes.append(f"LanceDB not run: {type(exc).__name__}: {exc}"[:300])
                tbl = None

        # --- exact filtered references ----------------------------------------------------
        # the whole BM25 ranking of each query, unfiltered, from the database's inverted
        # index (internal id i is the i-th document added); restricted below
        with db._reading() as (_txn, ix):
            full = [ix.bm25.search(q, top_k=n) for q in queries]
        full_bm25 = [[sf.doc_ids[i] for i, _ in r] for r in full]
        full_bm25_scores = [[sc for _, sc in r] for r in full]
        sims = qemb @ sf.corpus_emb.T  # unit vectors: cosine similarity
        spec = FusionSpec.of(0.5, "convex", "minmax")
        pos = {d: i for i, d in enumerate(sf.doc_ids)}

        def truths(flt: dict | None) -> tuple[list[list[str]], list[list[str]]]:
            f = parse_filter(flt) if flt is not None else None
            ok = np.array([f is None or f.matches(m) for m in metas])
            hyb, vec = [], []
            for qi in range(nq):
                s = np.where(ok, sims[qi], -np.inf)
                order = np.argsort(-s, kind="stable")[:DEPTH]
                order = order[np.isfinite(s[order])]
                vlist = [(sf.doc_ids[j], float(1.0 - s[j])) for j in order]
                blist = [(d, sc) for d, sc in zip(full_bm25[qi], full_bm25_scores[qi])
                         if ok[pos[d]]][:DEPTH]
                fused = spec.fuse(blist or None, vlist or None, top_k=10, metric="cosine")
                hyb.append([h.key for h in fused])
                vec.append([d for d, _ in vlist[:10]])
            return hyb, vec

        rows = []
        raw: dict = {"build": build, "rounds": []}
        cases = [("none", None, None)] + SELECTIVITIES
        refs = {label: truths(flt) for label, flt, _ in cases}
        allowed = {label: (n if flt is None else db.count(flt)) for label, flt, _ in cases}
        per_round: dict[tuple[str, str], list[float]] = {}
        found: dict[tuple[str, str], list] = {}
        for _r in range(rounds):
            for label, flt, where_sql in cases:
                runs = {
                    ("ours", "hybrid"): lambda i, f=flt: [
                        h.id for h in db.search(queries[i], vector=qemb[i], top_k=10,
                                                fusion_weight=0.5, filter=f)],
                    ("ours", "vector"): lambda i, f=flt: [
                        h.id for h in db.search(vector=qemb[i], top_k=10, fusion_weight=1.0,
                                                filter=f)],
                }
                if col is not None:
                    where = None if flt is None else _chroma_where(flt)
                    runs[("chroma", "vector")] = lambda i, w=where: col.query(
                        query_embeddings=qemb[i:i + 1], n_results=10, where=w)["ids"][0]
                if tbl is not None:
                    for pre in (True, False):
                        runs[("lance", f"vector prefilter={pre}")] = \
                            lambda i, w=where_sql, p=pre: [r["id"] for r in (
                                tbl.search(qemb[i]).metric("cosine").where(w, prefilter=p)
                                if w else tbl.search(qemb[i]).metric("cosine"))
                                .limit(10).to_list()]
                for (system, mode), fn in runs.items():
                    fn(0)  # warm
                    rate, out = qps(fn, range(nq))
                    per_round.setdefault((label, f"{system}/{mode}"), []).append(rate)
                    found[(label, f"{system}/{mode}")] = out
        unf = statistics.median(per_round[("none", "ours/hybrid")])
        unf_v = statistics.median(per_round[("none", "ours/vector")])
        for (label, name), rates in per_round.items():
            hyb_truth, vec_truth = refs[label]
            truth = hyb_truth if name.endswith("hybrid") else vec_truth
            out = found[(label, name)]
            short = sum(1 for o, t in zip(out, truth) if len(o) < len(t))
            q = statistics.median(rates)
            base = unf if name.endswith("hybrid") else unf_v
            rows.append({"filter": label, "allowed": allowed[label], "system/mode": name,
                         "recall@10": recall(out, truth), "queries short of k": short,
                         "q/s": q, "q/s vs ours unfiltered (same mode)": q / base})
        raw["rows"] = rows
        stats = db.stats()
        db.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    body = [__doc__.split("Run from")[0].strip(), "",
            f"{nq} queries, top_k=10, {rounds} round(s), median q/s; build seconds: "
            + ", ".join(f"{k} {v:.1f}" for k, v in build.items()), ""]
    body += [f"- vectors: {vector_kind}"] + [f"- {x}" for x in notes]
    body += ["", table(rows), "",
             ("`queries short of k`: queries that returned fewer hits than the exact "
              "filtered search has (k whenever >= k documents match)."), "",
             f"llmdsdb metadata index: {stats.get('documents')} documents."]
    name = "bench_filters_quick" if args.quick else "bench_filters"
    if args.synthetic:
        name = f"bench_filters_synthetic_{args.synthetic}" + ("_random" if args.random_vectors else "")
    cmd = "python tools/bench/bench_filters.py" + (" --quick" if args.quick else "") + \
        (f" --synthetic {args.synthetic}" if args.synthetic else "") + \
        (" --random-vectors" if args.random_vectors else "") + \
        (f" --rounds {args.rounds}" if args.rounds != 3 and not args.quick else "") + \
        (f" --systems {args.systems}" if args.systems != "ours,chroma,lance" else "")
    print(write_result(name, cmd, "\n".join(body), raw).read_text())


class _Data:
    """The documents of a synthetic run, shaped like the SciFact record."""

    def __init__(self, ids: list[str], texts: list[str], emb: np.ndarray) -> None:
        self.doc_ids, self.texts, self.corpus_emb = ids, texts, emb


def _chroma_where(flt: dict) -> dict:
    """The filter in Chroma's where syntax (the same Mongo-style operators)."""
    return flt


if __name__ == "__main__":
    main()
