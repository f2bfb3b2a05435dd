"""SciFact end to end through ``llmdsdb.open``, against Chroma and LanceDB in the same run.

For each system, in separate processes:

* **ingest** (one process): the 5,183 SciFact documents with their all-MiniLM-L6-v2
  embeddings, in batches of ``--batch`` documents, at each system's default durability;
  the figure is documents per second until the last call returns (for llmdsdb: documents
  durable - ``durability="sync"`` - and searchable by BM25 and vector search).
* **query** (a new process): cold open to the first result, then the 300 test queries one
  at a time - BM25 (FTS), vector and hybrid where the system has them - nDCG@10 and
  queries per second; peak RSS of that process; bytes on disk.

* **BM25 per call** (``--bm25-per-call``, one process): ``Database.search`` BM25-only
  (``fusion_weight=0``) on the first 1,400 SciFact documents, the 300 test queries one call
  each, against bm25s one query per ``retrieve`` call and against the bare inverted index
  of the same database (the candidates the database asks it for), passes interleaved; the
  difference to the bare index is the database layer's overhead per query.

Run from the repository root::

    python tools/bench/bench_db.py            # full run
    python tools/bench/bench_db.py --quick    # 1,000 documents, 100 queries, ours only
    python tools/bench/bench_db.py --bm25-per-call   # needs bm25s (the [bench] extra)
    python tools/bench/bench_db.py --synthetic 100000   # synthetic ingest vs Chroma

* **Synthetic ingest** (``--synthetic N``): N documents generated from a seed (texts of
  20-60 words drawn from a fixed 5,000-word vocabulary, Zipf-like; 384-d unit vectors made
  from SciFact's MiniLM embeddings cycled plus N(0, 0.03^2) noise, as bench_hnsw.py's
  synthetic sets -- ``--random-vectors`` for i.i.d. random ones), ``Database.upsert`` in batches of ``--batch``
  (``durability="sync"``; ``db.optimize()`` at the end merges whatever the fresh part still
  holds, and its time counts) against Chroma's ``PersistentClient`` (``add`` of the same
  documents, embeddings and batches; its clock stops after one query returns), each in its
  own process, the order alternating between rounds. ``--fresh-limits`` adds llmdsdb runs
  at other ``fresh_max_vectors`` (0: vectors join the graph in the write that adds them),
  ``--ef-constructions`` at other ``hnsw_ef_construction`` (the graph parameters of each
  system are in the table).
  After each of our ingests the same process checks that ``search`` and ``search_many``
  return identical hits (ids and scores) for a sample of hybrid and vector queries; then a
  new process opens the database and runs one hybrid query (cold open -> first result,
  with the time spent loading the vector segment).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import common  # noqa: E402
from common import load_scifact, mean_ndcg, peak_rss_mb, table, write_result  # noqa: E402


def dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def subset(sf, n_docs: int | None, n_queries: int | None):
    """Documents and queries used: the first n_docs documents (plus every relevant one of the
    kept queries, so nDCG stays meaningful) and the first n_queries queries."""
    qids = sf.query_ids[: n_queries or len(sf.query_ids)]
    if n_docs is None:
        keep = list(range(len(sf.doc_ids)))
    else:
        rel = {d for q in qids for d in sf.qrels.get(q, {})}
        pos = {d: i for i, d in enumerate(sf.doc_ids)}
        keep = sorted(set(range(min(n_docs, len(sf.doc_ids)))) | {pos[d] for d in rel
                                                                  if d in pos})
    return keep, qids


# --- phases (each runs in its own process) ---------------------------------------------------


def ingest_ours(path: str, docs: list[int], batch: int, optimize: bool = False) -> dict:
    import llmdsdb

    sf = load_scifact()
    ids = [sf.doc_ids[i] for i in docs]
    texts = [sf.texts[i] for i in docs]
    emb = sf.corpus_emb[docs]
    t0 = time.perf_counter()
    with llmdsdb.open(path) as db:
        for s in range(0, len(ids), batch):
            db.add(ids[s:s + batch], texts[s:s + batch], embeddings=emb[s:s + batch],
                   metadata=[{"title": sf.titles[i]} for i in docs[s:s + batch]])
        dt = time.perf_counter() - t0
        n = db.count()
        out = {"docs": n, "seconds": dt, "docs_per_s": n / dt,
               "fresh_vectors": db.stats()["fresh_vectors"]}
        if optimize:  # what it costs to move the fresh segment into the HNSW graph
            t1 = time.perf_counter()
            moved = db.optimize()
            out["optimize_s"] = time.perf_counter() - t1
            out["optimize_moved"] = moved
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def query_ours(path: str, qidx: list[int], weight: float, fusion: str, norm: str) -> dict:
    import llmdsdb

    sf = load_scifact()
    queries = [sf.queries[i] for i in qidx]
    qids = [sf.query_ids[i] for i in qidx]
    qemb = sf.query_emb[qidx]
    t0 = time.perf_counter()
    db = llmdsdb.open(path, readonly=True)
    db.search(queries[0], vector=qemb[0], top_k=10)
    cold = time.perf_counter() - t0
    out: dict = {"cold_open_first_result_s": cold}
    modes = {
        "bm25": lambda q, v: db.search(q, top_k=10, fusion_weight=0.0),
        "vector": lambda q, v: db.search(vector=v, top_k=10, fusion_weight=1.0),
        "hybrid": lambda q, v: db.search(q, vector=v, top_k=10, fusion_weight=weight,
                                         fusion=fusion, normalization=norm),
    }
    for name, fn in modes.items():
        for q, v in zip(queries[:20], qemb[:20]):  # warm-up
            fn(q, v)
        runs = {}
        t0 = time.perf_counter()
        for qid, q, v in zip(qids, queries, qemb):
            runs[qid] = [r.id for r in fn(q, v)]
        dt = time.perf_counter() - t0
        out[name] = {"ndcg10": mean_ndcg(runs, {q: sf.qrels[q] for q in qids}),
                     "qps": len(qids) / dt}
    t0 = time.perf_counter()
    db.search_many(queries, qemb, top_k=10, fusion_weight=weight)
    out["hybrid_batched_qps"] = len(qids) / (time.perf_counter() - t0)
    db.close()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def ingest_chroma(path: str, docs: list[int], batch: int) -> dict:
    import chromadb

    sf = load_scifact()
    t0 = time.perf_counter()
    client = chromadb.PersistentClient(path=path)
    col = client.create_collection("scifact", metadata={"hnsw:space": "cosine"})
    for s in range(0, len(docs), batch):
        part = docs[s:s + batch]
        col.add(ids=[sf.doc_ids[i] for i in part], documents=[sf.texts[i] for i in part],
                embeddings=sf.corpus_emb[part], metadatas=[{"title": sf.titles[i]}
                                                           for i in part])
    n = col.count()
    dt = time.perf_counter() - t0
    return {"docs": n, "seconds": dt, "docs_per_s": n / dt, "peak_rss_mb": peak_rss_mb()}


def query_chroma(path: str, qidx: list[int]) -> dict:
    import chromadb

    sf = load_scifact()
    qids = [sf.query_ids[i] for i in qidx]
    qemb = sf.query_emb[qidx]
    t0 = time.perf_counter()
    col = chromadb.PersistentClient(path=path).get_collection("scifact")
    col.query(query_embeddings=qemb[:1], n_results=10)
    out: dict = {"cold_open_first_result_s": time.perf_counter() - t0}
    for v in qemb[:20]:
        col.query(query_embeddings=v[None, :], n_results=10)
    runs = {}
    t0 = time.perf_counter()
    for qid, v in zip(qids, qemb):
        runs[qid] = col.query(query_embeddings=v[None, :], n_results=10)["ids"][0]
    dt = time.perf_counter() - t0
    out["vector"] = {"ndcg10": mean_ndcg(runs, {q: sf.qrels[q] for q in qids}),
                     "qps": len(qids) / dt}
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def ingest_lance(path: str, docs: list[int], batch: int) -> dict:
    import lancedb
    import pyarrow as pa

    sf = load_scifact()
    t0 = time.perf_counter()
    db = lancedb.connect(path)
    tbl = None
    for s in range(0, len(docs), batch):
        part = docs[s:s + batch]
        data = pa.table({
            "id": [sf.doc_ids[i] for i in part],
            "text": [sf.texts[i] for i in part],
            "title": [sf.titles[i] for i in part],
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(sf.corpus_emb[part].reshape(-1)), sf.corpus_emb.shape[1]),
        })
        if tbl is None:
            tbl = db.create_table("scifact", data)
        else:
            tbl.add(data)
    n = tbl.count_rows()
    dt_write = time.perf_counter() - t0
    t1 = time.perf_counter()
    tbl.create_fts_index("text")
    dt_fts = time.perf_counter() - t1
    return {"docs": n, "seconds": dt_write, "docs_per_s": n / dt_write,
            "fts_index_s": dt_fts,
            "docs_per_s_with_fts_index": n / (dt_write + dt_fts),
            "peak_rss_mb": peak_rss_mb()}


def query_lance(path: str, qidx: list[int]) -> dict:
    import lancedb

    sf = load_scifact()
    queries = [sf.queries[i] for i in qidx]
    qids = [sf.query_ids[i] for i in qidx]
    qemb = sf.query_emb[qidx]
    t0 = time.perf_counter()
    tbl = lancedb.connect(path).open_table("scifact")
    tbl.search(qemb[0]).metric("cosine").limit(10).to_list()
    out: dict = {"cold_open_first_result_s": time.perf_counter() - t0}
    modes = {
        "bm25": lambda q, v: tbl.search(q, query_type="fts").limit(10).to_list(),
        "vector": lambda q, v: tbl.search(v).metric("cosine").limit(10).to_list(),
        "hybrid": lambda q, v: tbl.search(query_type="hybrid").vector(v).text(q)
        .limit(10).to_list(),
    }
    for name, fn in modes.items():
        try:
            for q, v in zip(queries[:10], qemb[:10]):
                fn(q, v)
            runs = {}
            t0 = time.perf_counter()
            for qid, q, v in zip(qids, queries, qemb):
                runs[qid] = [r["id"] for r in fn(q, v)]
            dt = time.perf_counter() - t0
            out[name] = {"ndcg10": mean_ndcg(runs, {q: sf.qrels[q] for q in qids}),
                         "qps": len(qids) / dt}
        except Exception as exc:  # report, do not hide
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    out["peak_rss_mb"] = peak_rss_mb()
    return out


# --- synthetic ingest (--synthetic) --------------------------------------------------------

SYNTH_DIM = 384
SYNTH_VOCAB = 5000
SYNTH_SIGMA = 0.03
# "scifact": SciFact's all-MiniLM-L6-v2 embeddings cycled with N(0, 0.03^2) noise per row and
# renormalised -- the structure of real embeddings, and the generator of bench_hnsw.py's
# synthetic sets; "random": i.i.d. unit vectors (no neighbourhood structure: every ANN index
# reaches recall@10 ~0.12 at default settings, so it measures nothing but cost). Children of
# this script inherit the choice through the environment.
SYNTH_VECTORS_ENV = "LLMDSDB_BENCH_SYNTH_VECTORS"


def synth_vector_kind() -> str:
    kind = os.environ.get(SYNTH_VECTORS_ENV, "scifact")
    if kind not in ("scifact", "random"):
        raise SystemExit(f"{SYNTH_VECTORS_ENV}={kind!r}: expected 'scifact' or 'random'")
    return kind


_SCIFACT_CACHE: dict[str, np.ndarray] = {}


def scifact_embeddings(which: str) -> np.ndarray:
    """SciFact's corpus or query embeddings (float32, unit rows), loaded once."""
    if which not in _SCIFACT_CACHE:
        path = common.data_dir() / "scifact" / f"{which}_emb.npy"
        if not path.exists():
            raise SystemExit(f"{path} is missing: the structured synthetic vectors need the SciFact "
                             f"embeddings (or set {SYNTH_VECTORS_ENV}=random)")
        _SCIFACT_CACHE[which] = np.load(path).astype(np.float32)
    return _SCIFACT_CACHE[which]


def synth_vectors(rows: np.ndarray, rng: np.random.Generator, which: str = "corpus") -> np.ndarray:
    """Unit vectors for the synthetic rows ``rows`` (see SYNTH_VECTORS_ENV)."""
    if synth_vector_kind() == "random":
        v = rng.standard_normal((len(rows), SYNTH_DIM)).astype(np.float32)
    else:
        base = scifact_embeddings(which)
        v = base[rows % len(base)] + rng.normal(0, SYNTH_SIGMA, (len(rows), SYNTH_DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def synth_vocab(seed: int = 7) -> list[str]:
    """A fixed vocabulary of distinct pronounceable words (deterministic)."""
    rng = np.random.default_rng(seed)
    cons, vow = list("bcdfghjklmnprstvwz"), list("aeiou")
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < SYNTH_VOCAB:
        n = int(rng.integers(2, 5))
        w = "".join(cons[rng.integers(len(cons))] + vow[rng.integers(len(vow))]
                    for _ in range(n))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def synth_batch(start: int, stop: int, seed: int = 11) -> tuple[list[str], list[str],
                                                                 np.ndarray]:
    """Documents ``start .. stop-1`` of the synthetic collection: (ids, texts, unit vectors).
    Each block of 1,000 documents has its own seed, so any batch size gives the same data."""
    vocab = synth_vocab()
    ranks = np.arange(1, SYNTH_VOCAB + 1)
    p = 1.0 / ranks
    p /= p.sum()
    ids, texts, vecs = [], [], []
    for blk in range(start // 1000, (stop - 1) // 1000 + 1):
        rng = np.random.default_rng([seed, blk])
        lo, hi = blk * 1000, blk * 1000 + 1000
        lens = rng.integers(20, 61, size=1000)
        words = rng.choice(SYNTH_VOCAB, size=int(lens.sum()), p=p)
        v = synth_vectors(np.arange(lo, hi), rng)
        offs = np.concatenate([[0], np.cumsum(lens)])
        for j in range(max(lo, start), min(hi, stop)):
            r = j - lo
            ids.append(f"doc{j}")
            texts.append(" ".join(vocab[w] for w in words[offs[r]:offs[r + 1]]))
            vecs.append(v[r])
    return ids, texts, np.asarray(vecs, np.float32).reshape(-1, SYNTH_DIM)


def synth_queries(nq: int, seed: int = 99) -> tuple[list[str], np.ndarray]:
    """Query texts (2-5 vocabulary words) and unit query vectors."""
    vocab = synth_vocab()
    rng = np.random.default_rng(seed)
    texts = [" ".join(vocab[w] for w in rng.integers(0, 500, size=int(rng.integers(2, 6))))
             for _ in range(nq)]
    return texts, synth_vectors(np.arange(nq), rng, "queries")


def cpu_seconds() -> float:
    """User + system CPU of this process so far, all threads (a cost the machine's load
    does not inflate, unlike the wall clock)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def synth_ingest_ours(path: str, n: int, batch: int, fresh: int | None,
                      n_check: int, efc: int | None = None) -> dict:
    import llmdsdb

    c0 = cpu_seconds()
    t0 = time.perf_counter()
    gen_s = gen_cpu = 0.0
    db = llmdsdb.open(path, durability="sync", fresh_max_vectors=fresh,
                      **({"hnsw_ef_construction": efc} if efc else {}))
    for s in range(0, n, batch):
        g0, gc0 = time.perf_counter(), cpu_seconds()
        ids, texts, vecs = synth_batch(s, min(n, s + batch))
        gen_s += time.perf_counter() - g0  # the generator's time is not the database's
        gen_cpu += cpu_seconds() - gc0
        db.upsert(ids, texts, embeddings=vecs)
    fresh_left = db.stats()["fresh_vectors"]
    t1 = time.perf_counter()
    moved = db.optimize()
    opt_s = time.perf_counter() - t1
    qt, qv = synth_queries(1)
    db.search(qt[0], vector=qv[0], top_k=10)
    dt = time.perf_counter() - t0 - gen_s
    cpu = cpu_seconds() - c0 - gen_cpu
    out = {"docs": db.count(), "seconds": dt, "docs_per_s": db.count() / dt, "cpu_s": cpu,
           "fresh_vectors_before_optimize": fresh_left, "optimize_s": opt_s,
           "optimize_moved": moved, "fresh_max_vectors": fresh,
           "graph_count": (db.stats().get("hnsw") or {}).get("count"),
           "fresh_vectors_after": db.stats()["fresh_vectors"],
           "hnsw": {"M": db.config["hnsw_M"], "ef_construction": db.config["hnsw_ef_construction"],
                    "ef_search": (db.stats().get("hnsw") or {}).get("ef_search")}}
    # search and search_many: identical hits (ids and scores) for every sampled query
    qt, qv = synth_queries(n_check)
    mism = 0
    for kind, texts_, vecs_, w in (("hybrid", qt, qv, 0.5), ("vector", None, qv, 1.0),
                                   ("bm25", qt, None, 0.0)):
        many = db.search_many(texts_, vecs_, top_k=10, fusion_weight=w)
        for i in range(n_check):
            one = db.search(None if texts_ is None else texts_[i],
                            vector=None if vecs_ is None else vecs_[i], top_k=10,
                            fusion_weight=w)
            if [(r.id, r.score) for r in one] != [(r.id, r.score) for r in many[i]]:
                mism += 1
    out["search_vs_search_many"] = {"queries": 3 * n_check, "mismatches": mism}
    db.close()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def synth_cold_ours(path: str) -> dict:
    """A new process: open, one hybrid query; the vector segment's load timed apart (the
    graph is read by the first vector query, not by open)."""
    import llmdsdb

    qt, qv = synth_queries(1, seed=5)
    t0 = time.perf_counter()
    db = llmdsdb.open(path, readonly=True)
    t_open = time.perf_counter() - t0
    seg = db._state.ix.vectors
    loaded_at_open = bool(seg is not None and seg.loaded)
    hits = db.search(qt[0], vector=qv[0], top_k=10)
    total = time.perf_counter() - t0
    load_s = seg.load_seconds if seg is not None else 0.0
    db.close()
    return {"cold_open_first_result_s": total, "open_s": t_open,
            "first_query_s": total - t_open, "vector_segment_load_s": load_s,
            "vectors_loaded_at_open": loaded_at_open, "hits": len(hits),
            "peak_rss_mb": peak_rss_mb()}


def synth_cold_bm25_ours(path: str) -> dict:
    """A new process: open, one BM25-only query (the vectors are never read)."""
    import llmdsdb

    qt, _qv = synth_queries(1, seed=5)
    t0 = time.perf_counter()
    db = llmdsdb.open(path, readonly=True)
    hits = db.search(qt[0], top_k=10, fusion_weight=0.0)
    total = time.perf_counter() - t0
    seg = db._state.ix.vectors
    out = {"cold_open_first_bm25_result_s": total,
           "vectors_read": bool(seg is not None and seg.loaded), "hits": len(hits)}
    db.close()
    return out


def synth_ingest_chroma(path: str, n: int, batch: int) -> dict:
    import chromadb

    c0 = cpu_seconds()
    t0 = time.perf_counter()
    gen_s = gen_cpu = 0.0
    client = chromadb.PersistentClient(path=path)
    col = client.create_collection("synthetic", metadata={"hnsw:space": "cosine"})
    for s in range(0, n, batch):
        g0, gc0 = time.perf_counter(), cpu_seconds()
        ids, texts, vecs = synth_batch(s, min(n, s + batch))
        gen_s += time.perf_counter() - g0
        gen_cpu += cpu_seconds() - gc0
        col.add(ids=ids, documents=texts, embeddings=vecs)
    _qt, qv = synth_queries(1)
    col.query(query_embeddings=qv[:1], n_results=10)
    cnt = col.count()
    dt = time.perf_counter() - t0 - gen_s
    h = (col.configuration or {}).get("hnsw") or {}  # the defaults Chroma filled in
    return {"docs": cnt, "seconds": dt, "docs_per_s": cnt / dt,
            "cpu_s": cpu_seconds() - c0 - gen_cpu, "peak_rss_mb": peak_rss_mb(),
            "hnsw": {"M": h.get("max_neighbors"), "ef_construction": h.get("ef_construction"),
                     "ef_search": h.get("ef_search")}}


def synth_cold_chroma(path: str) -> dict:
    import chromadb

    _qt, qv = synth_queries(1, seed=5)
    t0 = time.perf_counter()
    col = chromadb.PersistentClient(path=path).get_collection("synthetic")
    col.query(query_embeddings=qv[:1], n_results=10)
    return {"cold_open_first_result_s": time.perf_counter() - t0,
            "peak_rss_mb": peak_rss_mb()}


def synthetic(args: argparse.Namespace) -> None:
    """The synthetic ingest comparison (module docstring)."""
    n, batch = args.synthetic, args.batch
    variants: list[tuple[str, str, int | None, int | None]] = [("ours", "ours", None, None)]
    for f in [x for x in (args.fresh_limits or "").split(",") if x.strip()]:
        variants.append((f"ours-fresh{int(f)}", "ours", int(f), None))
    for e in [x for x in (args.ef_constructions or "").split(",") if x.strip()]:
        variants.append((f"ours-efc{int(e)}", "ours", None, int(e)))
    if "chroma" in args.systems.split(","):
        variants.append(("chroma", "chroma", None, None))
    rounds = args.rounds or 1
    root = tempfile.mkdtemp(prefix="bench_db-synth-", dir=args.tmpdir)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    res: dict = {"docs": n, "batch": batch, "dim": SYNTH_DIM, "rounds": rounds,
                 "check_queries": args.check_queries, "runs": []}

    def child_run(spec: dict) -> dict:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                              capture_output=True, text=True, timeout=3600, env=env,
                              check=False)
        if proc.returncode != 0:
            return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1],
                    "stderr": proc.stderr[-2000:]}
        return json.loads(proc.stdout.strip().splitlines()[-1])

    try:
        for r in range(rounds):
            order = variants if (r + args.reverse) % 2 == 0 else variants[::-1]
            for name, system, fresh, efc in order:
                path = os.path.join(root, f"{name}-{r}")
                ing = child_run({"system": system, "phase": "synth_ingest", "path": path,
                                 "n": n, "batch": batch, "fresh": fresh, "efc": efc,
                                 "n_check": args.check_queries})
                print(r, name, "ingest", json.dumps(ing)[:500], flush=True)
                cold = (child_run({"system": system, "phase": "synth_cold", "path": path})
                        if "error" not in ing else {})
                if system == "ours" and "error" not in ing:  # BM25-only, another process
                    cold.update(child_run({"system": system, "phase": "synth_cold_bm25",
                                           "path": path}))
                print(r, name, "cold", json.dumps(cold)[:500], flush=True)
                res["runs"].append({"round": r, "variant": name, "ingest": ing, "cold": cold,
                                    "bytes_on_disk": dir_bytes(path)})
                shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary: dict = {}
    for name, _s, _f, _e in variants:
        runs = [x for x in res["runs"] if x["variant"] == name]
        summary[name] = {"ingest": _median_dict([x["ingest"] for x in runs]),
                         "cold": _median_dict([x["cold"] for x in runs]),
                         "bytes_on_disk": float(np.median([x["bytes_on_disk"] for x in runs]))}
    res["summary"] = summary
    rows = []
    for name, _s, _f, _e in variants:
        ing, cold = summary[name]["ingest"], summary[name]["cold"]
        chk = ing.get("search_vs_search_many", {})
        rows.append({
            "system": name, "ingest docs/s": ing.get("docs_per_s", ing.get("error")),
            "graph M / ef_construction / ef_search": "/".join(
                f"{v:.0f}" if isinstance(v, (int, float)) else "?"
                for v in (ing.get("hnsw") or {}).values()) or "-",
            "of which optimize (s)": ing.get("optimize_s", "-"),
            "ingest CPU (s, all threads)": ing.get("cpu_s", "-"),
            "ingest / chroma": (ing["docs_per_s"] / summary["chroma"]["ingest"]["docs_per_s"]
                                if "chroma" in summary and "docs_per_s" in ing
                                and "docs_per_s" in summary["chroma"]["ingest"] else "-"),
            "search vs search_many mismatches": (f"{chk['mismatches']:.0f} of "
                                                 f"{chk['queries']:.0f}" if chk else "-"),
            "cold open->1st (s)": cold.get("cold_open_first_result_s", "-"),
            "vector segment load (s)": cold.get("vector_segment_load_s", "-"),
            "cold open->1st BM25-only (s)": cold.get("cold_open_first_bm25_result_s", "-"),
            "bytes on disk": summary[name]["bytes_on_disk"],
        })
    body = (f"{n:,} synthetic documents (20-60 words from a 5,000-word vocabulary, Zipf-like) "
            f"with {SYNTH_DIM}-d unit embeddings ({synth_vector_kind()}: see SYNTH_VECTORS_ENV), batches of {batch}; llmdsdb: "
            "`Database.upsert`, durability \"sync\", `db.optimize()` at the end (counted), "
            "one hybrid query; Chroma: `PersistentClient` `add`, one query. Each ingest in "
            "its own process, order alternating over "
            f"{rounds} round(s), medians shown; the generator's time is excluded. "
            "Cold open -> first result: a new process opens the database (ours readonly) and "
            "runs one hybrid query (Chroma: one vector query); 'vector segment load' is "
            "the part of it spent reading the HNSW graph and the fresh part, which llmdsdb "
            "reads at the first vector query, not at open; 'BM25-only' is another new "
            "process's open and first BM25-only query (the vectors are never read). "
            "'graph M / ef_construction / ef_search': each system's graph parameters as it "
            "reports them (its defaults here); llmdsdb's vector side asks the graph for the "
            "fusion's candidate depth (100 at top_k=10), so its queries run at ef 100.\n\n"
            + table(rows))
    cmd = "python " + " ".join(["tools/bench/bench_db.py"] + sys.argv[1:])
    suffix = "_random" if synth_vector_kind() == "random" else ""
    p = write_result(args.name or f"bench_db_synthetic_{n}{suffix}", cmd, body, res)
    print(body)
    print("written", p)


PHASES = {
    ("ours", "ingest"): ingest_ours, ("ours", "query"): query_ours,
    ("chroma", "ingest"): ingest_chroma, ("chroma", "query"): query_chroma,
    ("lance", "ingest"): ingest_lance, ("lance", "query"): query_lance,
}


def run_phase(system: str, phase: str, path: str, docs: list[int], qidx: list[int],
              args: argparse.Namespace, optimize: bool = False) -> dict:
    spec = {"system": system, "phase": phase, "path": path, "docs": docs, "qidx": qidx,
            "batch": args.batch, "weight": args.weight, "fusion": args.fusion,
            "norm": args.normalization, "optimize": optimize}
    # One BLAS thread in every child (as tools/bench/bench_hnsw.py does): on this shared
    # 2-core machine OpenBLAS's threads slow a 5k x 384 scan down 3-5x; Chroma and LanceDB
    # do their vector work in their own native code and are not affected.
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                else f"exit {proc.returncode}", "stderr": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_dict(runs: list[dict]) -> dict:
    """Field-wise median of the numeric leaves of ``runs`` (errors kept from the first)."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0] if runs else {"error": "not run"}
    out: dict = {}
    for k, v in ok[0].items():
        if isinstance(v, dict):
            out[k] = _median_dict([r[k] for r in ok if isinstance(r.get(k), dict)])
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(np.median([r[k] for r in ok if isinstance(r.get(k), (int, float))]))
        else:
            out[k] = v
    return out


def bm25_per_call(args: argparse.Namespace) -> None:
    """Database-level BM25-only queries, one per call, against bm25s and the bare index, in
    one process with passes interleaved (see the module docstring)."""
    import statistics

    import Stemmer
    from bench_bm25 import bm25s_retrieve, build_bm25s

    import llmdsdb

    sf = load_scifact()
    n = args.bm25_docs
    texts = [sf.texts[i] for i in range(n)]
    queries = list(sf.queries)
    root = tempfile.mkdtemp(prefix="bench_db-bm25-")
    stemmer = Stemmer.Stemmer("english")
    try:
        db = llmdsdb.open(os.path.join(root, "db"), durability="nosync")
        db.add([sf.doc_ids[i] for i in range(n)], texts)
        ret = build_bm25s(texts)
        depth = 100  # what Database.search asks the index for at top_k=10 (fusion depth)

        def ours() -> None:
            for q in queries:
                db.search(q, top_k=10, fusion_weight=0.0)

        def bare() -> None:
            with db._reading() as (_txn, ix):
                for q in queries:
                    ix.bm25.search(q, top_k=depth)

        def peer() -> None:
            for q in queries:
                bm25s_retrieve(ret, stemmer, [q])

        passes: dict[str, list[float]] = {"ours": [], "bare_index": [], "bm25s": []}
        fns = {"ours": ours, "bare_index": bare, "bm25s": peer}
        for fn in fns.values():  # warm-up
            fn()
        for _ in range(args.rounds or 7):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                passes[name].append((time.perf_counter() - t0) / len(queries))
        us = {k: statistics.median(v) * 1e6 for k, v in passes.items()}
        res = {"docs": n, "queries": len(queries), "passes": args.rounds or 7,
               "us_per_query": us, "qps": {k: 1e6 / v for k, v in us.items()},
               "ours_vs_bm25s": us["bm25s"] / us["ours"],
               "db_overhead_us_per_query": us["ours"] - us["bare_index"]}
        db.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(res, indent=2))
    rows = [{"system": k, "us/query (median of passes)": us[k], "q/s": 1e6 / us[k]}
            for k in ("ours", "bare_index", "bm25s")]
    body = (f"{n} SciFact documents, {len(queries)} test queries one per call, top-10, "
            f"BM25 only (fusion_weight=0); median of {res['passes']} interleaved passes.\n\n"
            + table(rows) + f"\nDatabase.search vs bm25s per call: "
            f"{res['ours_vs_bm25s']:.2f}x; database layer over the bare index search "
            f"(top-{depth} candidates): {res['db_overhead_us_per_query']:.0f} us per query.\n")
    write_result("bench_db_bm25_per_call", "python tools/bench/bench_db.py --bm25-per-call",
                 body, res)


def child(spec_json: str) -> None:
    s = json.loads(spec_json)
    if s["phase"] == "synth_ingest":
        res = (synth_ingest_ours(s["path"], s["n"], s["batch"], s["fresh"], s["n_check"],
                                 s.get("efc"))
               if s["system"] == "ours" else synth_ingest_chroma(s["path"], s["n"], s["batch"]))
        print(json.dumps(res))
        return
    if s["phase"] == "synth_cold_bm25":
        print(json.dumps(synth_cold_bm25_ours(s["path"])))
        return
    if s["phase"] == "synth_cold":
        res = synth_cold_ours(s["path"]) if s["system"] == "ours" else \
            synth_cold_chroma(s["path"])

        print(json.dumps(res))
        return
    fn = PHASES[(s["system"], s["phase"])]
    if s["phase"] == "ingest" and s["system"] == "ours":
        res = fn(s["path"], s["docs"], s["batch"], s.get("optimize", False))
    elif s["phase"] == "ingest":
        res = fn(s["path"], s["docs"], s["batch"])
    elif s["system"] == "ours":
        res = fn(s["path"], s["qidx"], s["weight"], s["fusion"], s["norm"])
    else:
        res = fn(s["path"], s["qidx"])
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 documents, 100 queries")
    ap.add_argument("--systems", default="ours,chroma,lance")
    ap.add_argument("--batch", type=int, default=1000, help="documents per add() call")
    ap.add_argument("--weight", type=float, default=0.5, help="hybrid fusion_weight")
    ap.add_argument("--fusion", default="convex")
    ap.add_argument("--normalization", default="minmax")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds per system (default 3, --quick 1)")
    ap.add_argument("--bm25-per-call", action="store_true",
                    help="Database BM25-only queries one per call vs bm25s and the bare index")
    ap.add_argument("--bm25-docs", type=int, default=1400)
    ap.add_argument("--synthetic", type=int, default=None, metavar="N",
                    help="synthetic ingest of N documents (384-d) vs Chroma")
    ap.add_argument("--ef-constructions", default="",
                    help="with --synthetic: extra llmdsdb runs creating the database at these "
                         "hnsw_ef_construction values")
    ap.add_argument("--fresh-limits", default="",
                    help="with --synthetic: extra llmdsdb runs at these fresh_max_vectors")
    ap.add_argument("--check-queries", type=int, default=50,
                    help="with --synthetic: queries per mode for search vs search_many")
    ap.add_argument("--reverse", action="store_true",
                    help="with --synthetic: the first round runs the systems in reverse order")
    ap.add_argument("--tmpdir", default=None, help="where the databases are written")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--name", default=None, help="result file name")
    ap.add_argument("--random-vectors", action="store_true",
                    help="synthetic sets: i.i.d. random unit vectors instead of SciFact's embeddings "
                         "plus noise (a cost-only case: no ANN structure)")
    args = ap.parse_args()
    if args.random_vectors:
        os.environ[SYNTH_VECTORS_ENV] = "random"
    if args.child:
        child(args.child)
        return
    if args.bm25_per_call:
        bm25_per_call(args)
        return
    if args.synthetic:
        synthetic(args)
        return
    sf = load_scifact()
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.quick:
        docs, qids = subset(sf, 1000, 100)
        systems = args.systems.split(",") if "--systems" in sys.argv else ["ours"]
    else:
        docs, qids = subset(sf, None, None)
        systems = args.systems.split(",")
    qpos = {q: i for i, q in enumerate(sf.query_ids)}
    qidx = [qpos[q] for q in qids]
    root = tempfile.mkdtemp(prefix="bench_db-")
    results: dict = {"docs": len(docs), "queries": len(qidx), "batch": args.batch,
                     "weight": args.weight, "fusion": args.fusion,
                     "normalization": args.normalization}
    # The machine is shared: phases of the systems run interleaved, round after round, and
    # each figure is the median over the rounds.
    rounds: dict[str, dict[str, list[dict]]] = {s: {"ingest": [], "query": []} for s in systems}
    sizes: dict[str, int] = {}
    try:
        for r in range(args.rounds):
            for system in systems:
                path = os.path.join(root, f"{system}-{r}")
                ing = run_phase(system, "ingest", path, docs, qidx, args)
                rounds[system]["ingest"].append(ing)
                print(r, system, "ingest", json.dumps(ing, default=str)[:600], flush=True)
                if "error" in ing:
                    continue
                sizes[system] = dir_bytes(path)
                for _ in range(2):  # two query processes per round
                    q = run_phase(system, "query", path, docs, qidx, args)
                    rounds[system]["query"].append(q)
                    print(r, system, "query", json.dumps(q, default=str)[:800], flush=True)
                shutil.rmtree(path, ignore_errors=True)
        if "ours" in systems:  # the deferred graph build, measured once
            path = os.path.join(root, "ours-optimize")
            results["ours_optimize"] = run_phase("ours", "ingest", path, docs, qidx, args,
                                                 optimize=True)
            print("ours optimize", results["ours_optimize"], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for system in systems:
        results[system] = {"ingest": _median_dict(rounds[system]["ingest"]),
                           "query": _median_dict(rounds[system]["query"]),
                           "bytes_on_disk": sizes.get(system, 0),
                           "rounds": rounds[system]}

    rows = []
    for system in systems:
        r = results[system]
        ing, q = r["ingest"], r.get("query", {})
        row = {"system": system, "ingest docs/s": ing.get("docs_per_s", ing.get("error")),
               "cold open->1st (s)": q.get("cold_open_first_result_s"),
               "bytes on disk": r["bytes_on_disk"],
               "peak RSS query (MiB)": q.get("peak_rss_mb")}
        for mode in ("bm25", "vector", "hybrid"):
            m = q.get(mode) or {}
            row[f"{mode} nDCG@10"] = m.get("ndcg10", m.get("error", "-"))
            row[f"{mode} q/s"] = m.get("qps", "-")
        rows.append(row)
    body = [f"SciFact: {len(docs)} documents with all-MiniLM-L6-v2 embeddings, {len(qidx)} "
            f"test queries, batches of {args.batch}; hybrid = {args.fusion}/"
            f"{args.normalization} at fusion_weight {args.weight}. Queries one at a time "
            "after a warm-up, in a new process (ours opened readonly). Each phase runs in its "
            f"own process with OPENBLAS_NUM_THREADS=1; systems interleaved over "
            f"{args.rounds} round(s) (one ingest and two query processes per system per "
            "round), medians shown.", "",
            table(rows)]
    ours = results.get("ours", {})
    if "hybrid_batched_qps" in ours.get("query", {}):
        body.append(f"\nllmdsdb search_many (all {len(qidx)} hybrid queries in one call): "
                    f"{ours['query']['hybrid_batched_qps']:.0f} q/s\n")
    opt = results.get("ours_optimize", {})
    if "optimize_s" in opt:
        body.append(f"llmdsdb keeps new vectors in an exactly-searched fresh segment "
                    f"({opt.get('fresh_vectors', 0):.0f} of {len(docs)} after this ingest); "
                    f"moving them all into the HNSW graph (db.optimize()) took "
                    f"{opt['optimize_s']:.1f} s more: "
                    f"{len(docs) / (opt['seconds'] + opt['optimize_s']):.0f} docs/s including "
                    "the graph build.\n")
    lance = results.get("lance", {}).get("ingest", {})
    if "fts_index_s" in lance:
        body.append(f"LanceDB writes without any index; its FTS index build took "
                    f"{lance['fts_index_s']:.2f} s more ({lance['docs_per_s_with_fts_index']:.0f}"
                    " docs/s including it).\n")
    ratios = {}
    try:
        ratios["ingest_vs_chroma"] = (results["ours"]["ingest"]["docs_per_s"]
                                      / results["chroma"]["ingest"]["docs_per_s"])
    except (KeyError, TypeError, ZeroDivisionError):
        pass
    try:
        ratios["hybrid_qps_vs_lance"] = (results["ours"]["query"]["hybrid"]["qps"]
                                         / results["lance"]["query"]["hybrid"]["qps"])
    except (KeyError, TypeError, ZeroDivisionError):
        pass
    if ratios:
        body.append("Ratios (same run): " + ", ".join(f"{k} = {v:.2f}x"
                                                      for k, v in ratios.items()) + "\n")
    results["ratios"] = ratios
    cmd = "python " + " ".join(["tools/bench/bench_db.py"] + sys.argv[1:])
    name = args.name or ("bench_db_quick" if args.quick else "bench_db")
    p = write_result(name, cmd, "\n".join(body), results)
    print("\n".join(body))
    print("written", p)


if __name__ == "__main__":
    main()
