"""Compaction on SciFact: space given back, results kept, repair against a rebuild.

One process, one database in a temp dir:

1. ingest the 5,183 SciFact documents with their all-MiniLM-L6-v2 embeddings (batches of
   500) and ``optimize()`` (every vector in the graph);
2. record the 300 test queries' BM25 top-10 (ids, scores) and vector top-10, then delete a
   random half of the documents (seed 0) and record them again (the reference: what the
   database answers for the remaining documents);
3. ``compact()`` (``max_batch`` as given) and compare: BM25 ids and scores, vector hits,
   recall@10 of the vector side against an exact search over the remaining documents, each
   remaining document found by its own vector (top-1);
4. space: LMDB pages in use (branch + leaf + overflow of the main database, where every
   table lives), bytes stored (keys + values, a scan), and the size of a compacting copy
   (``env.copy(compact=True)``: the live data packed densely) - full, after the deletes,
   after compaction;
5. repair against rebuild: the graph of step 2 rebuilt by ``HNSW.compact()`` (re-insert every
   live node) in memory, its time and recall@10, beside the repair phase's time.

Run from the repository root::

    python tools/bench/bench_compact.py [--max-batch 2000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import load_scifact, table, write_result  # noqa: E402


def stored_bytes(db) -> int:
    """Keys + values of every entry (the live size the tables hold)."""
    total = 0
    with db._env.read() as txn:
        for name in ("meta", "docs", "ids", "pages", "idxmeta"):
            for k, v in txn.raw_items(name):
                total += len(k) + len(v)
    return total


def copy_bytes(db) -> int:
    with tempfile.TemporaryDirectory() as d:
        db.copy_to(os.path.join(d, "c"), compact=True)
        return os.path.getsize(os.path.join(d, "c", "data.mdb"))


def token_bytes(db) -> float:
    """Bytes (values + keys) of the postings and forward-list pages per token."""
    from llmdsdb.storage import u64key

    with db._state.reading() as (txn, ix):
        bm = ix.bm25
        pages = [int(p) for sk in bm._skip for p in sk[:, 0].tolist()] + list(bm._fwd_pages)
        total = sum(len(txn.raw_get("pages", u64key(p))) + 9 for p in pages)
        return total / bm._total_len


def space(db) -> dict:
    from llmdsdb.compaction import pages_in_use

    p = pages_in_use(db._env)
    return {"pages_in_use": p["in_use"], "leaf": p["leaf"], "overflow": p["overflow"],
            "stored_bytes": stored_bytes(db), "compact_copy_bytes": copy_bytes(db)}


def main() -> None:
    import llmdsdb
    from llmdsdb.hnsw import HNSW

    ap = argparse.ArgumentParser()
    ap.add_argument("--max-batch", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="2,000 documents, 100 queries")
    ap.add_argument("--fraction", type=float, default=0.5, help="fraction deleted")
    args = ap.parse_args()
    sf = load_scifact()
    n = 2000 if args.quick else len(sf.doc_ids)
    nq = 100 if args.quick else len(sf.queries)
    ids, texts, emb = sf.doc_ids[:n], sf.texts[:n], sf.corpus_emb[:n]
    queries, qemb = sf.queries[:nq], sf.query_emb[:nq]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = llmdsdb.open(os.path.join(tmp, "db"), auto_compact_debt=None)
        for s in range(0, n, 500):
            db.add(ids[s:s + 500], texts[s:s + 500], emb[s:s + 500])
        db.optimize()
        full = space(db)
        rng = np.random.default_rng(0)
        tok_bytes = token_bytes(db)
        dead = set(rng.choice(n, int(n * args.fraction), replace=False).tolist())
        db.delete([ids[i] for i in sorted(dead)])
        rest = np.array([i for i in range(n) if i not in dead])
        after_delete = space(db)

        def bm25() -> list:
            return [[(h.id, h.score) for h in db.search(q, top_k=10, fusion_weight=0.0)]
                    for q in queries]

        def vec() -> list:
            return [[h.id for h in db.search(vector=v, top_k=10, fusion_weight=1.0)]
                    for v in qemb]

        exact = [[ids[rest[j]] for j in np.argsort(-(emb[rest] @ v), kind="stable")[:10]]
                 for v in qemb]

        def recall(hits: list) -> float:
            return float(np.mean([len(set(h) & set(e)) / 10 for h, e in zip(hits, exact)]))

        def self_found() -> float:
            got = [db.search(vector=emb[i], top_k=1, fusion_weight=1.0)[0].id == ids[i]
                   for i in rest.tolist()]
            return float(np.mean(got))

        b0, v0, s0 = bm25(), vec(), self_found()
        # rebuild for comparison, on a copy of the graph in memory
        with db._state.reading() as (_txn, ix):
            g = ix.vectors.graph
            copy = HNSW(g.dim, M=g.M, ef_construction=g.ef_construction, ml=g.ml,
                        seed=g.seed, metric=g.metric)
            copy._reserve(g._n)
            for name in ("_vecs", "_adj0", "_ext", "_norms", "_levels", "_deleted"):
                getattr(copy, name)[: g._n] = getattr(g, name)[: g._n]
            copy._n, copy._live = g._n, g._live
        t = time.perf_counter()
        keep = np.flatnonzero(~copy._deleted[: copy._n])
        rebuilt = HNSW(g.dim, M=g.M, ef_construction=g.ef_construction, ml=g.ml, seed=g.seed,
                       metric=g.metric)
        rebuilt.add_many(copy._vecs[keep], copy._ext[keep], threads=1)
        rebuild_s = time.perf_counter() - t
        rb_hits = rebuilt.search_many(qemb, k=10)
        iid = {}
        with db._env.read() as txn:
            from llmdsdb import documents
            for i in rest.tolist():
                key = documents.id_key(ids[i])
                iid[int.from_bytes(txn.get("ids", key), "big")] = ids[i]
        rb_recall = recall([[iid[v] for v, _ in h] for h in rb_hits])

        phase_s: dict[str, float] = {}
        last = [time.perf_counter()]

        def prog(p: dict) -> None:
            now = time.perf_counter()
            phase_s[p["phase"]] = phase_s.get(p["phase"], 0.0) + now - last[0]
            last[0] = now

        t = time.perf_counter()
        rep = db.compact(max_batch=args.max_batch, progress=prog)
        compact_s = time.perf_counter() - t
        b1, v1, s1 = bm25(), vec(), self_found()
        compacted = space(db)
        problems = db.check()
        db.close()
    same_ids = sum([h for h, _ in a] == [h for h, _ in b] for a, b in zip(b0, b1))
    bit_same = sum(a == b for a, b in zip(b0, b1))
    max_rel = max((abs(x[1] - y[1]) / abs(x[1]) for a, b in zip(b0, b1) for x, y in zip(a, b)),
                  default=0.0)
    for r, name in ((full, "full"), (after_delete, "after the deletes"), (compacted, "compacted")):
        rows.append({"state": name, **r})
    pages_drop = 1 - compacted["pages_in_use"] / full["pages_in_use"]
    pages_drop_del = 1 - compacted["pages_in_use"] / after_delete["pages_in_use"]
    body = [
        f"SciFact: {n:,} documents with all-MiniLM-L6-v2 vectors (384-d), {len(dead):,} "
        f"deleted (random, seed 0), {nq} test queries; compact(max_batch={args.max_batch}); "
        "durability sync.",
        "", table(rows), "",
        f"- LMDB pages in use: {pages_drop:.1%} fewer than the full database, "
        f"{pages_drop_del:.1%} fewer than right after the deletes",
        f"- compaction: {compact_s:.2f} s in {rep['steps']} write transactions; per phase (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in phase_s.items()),
        f"- BM25 top-10: ids identical for {same_ids}/{nq} queries, scores bit-identical for "
        f"{bit_same}/{nq}, largest relative score difference {max_rel:.2e}",
        f"- vector top-10 identical for {sum(a == b for a, b in zip(v0, v1))}/{nq} queries; "
        f"recall@10 against exact search over the remaining documents: {recall(v0):.4f} "
        f"before compaction, {recall(v1):.4f} after (repair), {rb_recall:.4f} for a rebuild",
        f"- each remaining document's own vector finds it first: {s0:.4f} before, {s1:.4f} after",
        f"- graph: repair phase {phase_s.get('graph_repair', 0):.2f} s against a rebuild of "
        f"the live nodes (HNSW.add_many, one thread) {rebuild_s:.2f} s",
        f"- check() after compaction: {problems or 'clean'}",
        f"- inverted index bytes per token (postings + forward pages, keys included), full "
        f"database: {tok_bytes:.2f} (compaction.TOKEN_BYTES estimates debt with it)",
    ]
    cmd = "python tools/bench/bench_compact.py" + (" --quick" if args.quick else "") + \
        (f" --max-batch {args.max_batch}" if args.max_batch != 2000 else "") + \
        (f" --fraction {args.fraction}" if args.fraction != 0.5 else "")
    name = "bench_compact" + ("_quick" if args.quick else "") + \
        (f"_{int(round(args.fraction * 100))}pct" if args.fraction != 0.5 else "")
    path = write_result(name, cmd, "\n".join(body),
                        {"rows": rows, "compact_s": compact_s, "phase_s": phase_s,
                         "rebuild_s": rebuild_s})
    print(path.read_text())


if __name__ == "__main__":
    main()
