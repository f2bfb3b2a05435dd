"""BM25 benchmark: llmdsdb.InvertedIndex vs tantivy, bm25s, rank_bm25 and SQLite FTS5.

SciFact (BEIR, 5,183 abstracts, 300 test queries; title + text indexed as
tools/bench/common does): nDCG@10, build docs/s, single-thread queries/s (query string ->
top-10 ids, all 300 queries, warm-up pass then median of 5 passes), bytes per posting.
tantivy (tantivy-py, Lucene's design in Rust: block-max WAND over bit-packed blocks) runs
with the closest analyzer it offers (simple tokenizer, lowercase, its English stop words,
the Snowball English stemmer), term frequencies without positions, one segment, and
``count=False`` so that its top-k can prune; it has no batch call, so its one-query-per-call
figure stands in both comparisons.

Scale run (``--scale N``, default 1,000,000 documents): a synthetic corpus drawn from
SciFact's word and document-length distributions (each document: a length drawn from the
SciFact lengths in words, then that many words drawn from the SciFact unigram
distribution), queried with the 300 SciFact test queries: build time, queries/s, p50/p99
latency, peak memory, pruned vs exhaustive speed-up; beside bm25s. Each system builds in its
own subprocess so that peak RSS is its own; a third process then loads both built indexes
and interleaves their warm query passes (CPU time, best of five rounds), which is the query
speed comparison: the two build processes run one after the other, and the load on this
shared machine moved bm25s's own speed by 40 % between such runs. That third process also
times each system's first pass right after loading (nothing decoded or cached: what a CLI
query meets) before the warm rounds.

Usage (from the repository root)::

    python tools/bench/bench_bm25.py            # SciFact, all peers
    python tools/bench/bench_bm25.py --quick    # SciFact, fewer repeats, no rank_bm25
    python tools/bench/bench_bm25.py --scale    # the 1,000,000-document run
    python tools/bench/bench_bm25.py --scale 100000
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pickle
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

from llmdsdb.analysis import Analyzer
from llmdsdb.inverted_index import InvertedIndex

K = 10


def _qps(fn, n_queries: int, repeat: int) -> tuple[float, float]:
    """(median queries/s over ``repeat`` passes after one warm-up pass, cold first pass q/s)."""
    t0 = time.perf_counter()
    fn()
    cold = n_queries / (time.perf_counter() - t0)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n_queries / statistics.median(times), cold


# --- systems on SciFact -----------------------------------------------------------------------


def build_llmdsdb(texts: list[str], step: int = 100_000) -> InvertedIndex:
    """Index ``texts`` (doc ids 0..n-1) in add_documents calls of ``step`` documents, then
    flush."""
    idx = InvertedIndex()
    for s in range(0, len(texts), step):
        idx.add_documents(range(s, min(s + step, len(texts))), texts[s : s + step])
    idx.flush()
    return idx


def build_bm25s(texts: list[str]):
    import bm25s
    import Stemmer

    tok = bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"),
                         show_progress=False)
    ret = bm25s.BM25(k1=1.2, b=0.75)
    ret.index(tok, show_progress=False)
    return ret


def bm25s_retrieve(ret, stemmer, queries: list[str]):
    """bm25s's top-K for ``queries`` in one retrieve call, one thread, from the query strings
    (tokenised with the same stop words and stemmer as the index)."""
    import bm25s

    qt = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
    return ret.retrieve(qt, k=K, show_progress=False, n_threads=1)


_TANTIVY_CLEAN = re.compile(r"[^\w]+")


def tantivy_analyzer():
    import tantivy

    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def build_tantivy(texts: list[str], path: str | None = None):
    """A tantivy index of ``texts`` (doc ids 0..n-1 as the integer field ``id``), one
    writer thread, committed and merged."""
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_text_field("body", stored=False, tokenizer_name="en_stop_stem", index_option="freq")
    sb.add_integer_field("id", stored=True, fast=True)
    index = tantivy.Index(sb.build(), path=path)
    index.register_tokenizer("en_stop_stem", tantivy_analyzer())
    w = index.writer(heap_size=1 << 30, num_threads=1)
    for i, t in enumerate(texts):
        w.add_document(tantivy.Document(id=i, body=t))
    w.commit()
    w.wait_merging_threads()
    index.reload()
    return index


def open_tantivy(path: str):
    import tantivy

    index = tantivy.Index.open(path)
    index.register_tokenizer("en_stop_stem", tantivy_analyzer())
    return index


def tantivy_search(index, searcher, q: str):
    """tantivy's top-K hits (score, DocAddress) for a query string: punctuation removed
    and lowercased so that its query parser reads plain words (a disjunction)."""
    text = _TANTIVY_CLEAN.sub(" ", q).lower().strip()
    if not text:
        return []
    return searcher.search(index.parse_query(text, ["body"]), K, count=False).hits


CPU_TIMES: dict[str, list[float]] = {}


def interleaved(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Run each function once as warm-up, then ``repeat`` rounds of all of them in turn
    (the machine is shared: interleaving spreads load changes evenly over the systems).
    Wall times are returned; process CPU times are kept in CPU_TIMES."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            c0 = time.process_time()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            CPU_TIMES.setdefault(name, []).append(time.process_time() - c0)
    return times


def scifact_core(sf: common.SciFact, repeat: int) -> tuple[list[dict], dict]:
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    texts, queries = sf.texts, sf.queries
    built: dict[str, object] = {}

    def b_ours():
        built["ours"] = build_llmdsdb(texts)

    def b_bm25s():
        built["bm25s"] = build_bm25s(texts)

    def b_tantivy():
        built["tantivy"] = build_tantivy(texts)

    build_t = interleaved({"llmdsdb": b_ours, "bm25s": b_bm25s, "tantivy": b_tantivy},
                          max(3, repeat - 2))
    idx: InvertedIndex = built["ours"]  # type: ignore[assignment]
    ret = built["bm25s"]
    tv = built["tantivy"]
    tv_searcher = tv.searcher()

    def bm25s_one(q: str):
        return bm25s_retrieve(ret, stemmer, [q])[0][0]

    def bm25s_all():
        return bm25s_retrieve(ret, stemmer, queries)[0]

    # quality (and first-pass speed: nothing decoded or cached yet)
    fresh = InvertedIndex.open(idx.store)
    t0 = time.perf_counter()
    ours_res = [fresh.search(q, K) for q in queries]
    first_pass = len(queries) / (time.perf_counter() - t0)
    ndcg_ours = common.mean_ndcg(
        {qid: [sf.doc_ids[d] for d, _ in r] for qid, r in zip(sf.query_ids, ours_res)}, sf.qrels
    )
    res = bm25s_all()
    ndcg_bm25s = common.mean_ndcg(
        {qid: [sf.doc_ids[d] for d in res[i]] for i, qid in enumerate(sf.query_ids)}, sf.qrels
    )
    tv_runs = {
        qid: [sf.doc_ids[tv_searcher.doc(a)["id"][0]] for _, a in tantivy_search(tv, tv_searcher, q)]
        for qid, q in zip(sf.query_ids, queries)
    }
    ndcg_tantivy = common.mean_ndcg(tv_runs, sf.qrels)
    same_batch = idx.search_many(queries, K) == [idx.search(q, K) for q in queries]
    same_modes = all(
        idx.search(q, K, mode="pruned") == idx.search(q, K, mode="exhaustive") for q in queries
    )
    db_root = tempfile.mkdtemp(prefix="bench_bm25_db_")
    db = _scifact_db(sf, os.path.join(db_root, "db"))
    row_of = {d: i for i, d in enumerate(sf.doc_ids)}
    same_db = [[row_of[h.id] for h in r] for r in
               db.search_many(queries, top_k=K, fusion_weight=0.0)] == \
        [[d for d, _ in r] for r in idx.search_many(queries, K)]
    fns = {
        "llmdsdb search (one query per call)": lambda: [idx.search(q, K) for q in queries],
        "llmdsdb search_many (all queries in one call)": lambda: idx.search_many(queries, K),
        "llmdsdb search mode=pruned": lambda: [idx.search(q, K, mode="pruned") for q in queries],
        "bm25s (one query per call)": lambda: [bm25s_one(q) for q in queries],
        "bm25s (all queries in one call)": bm25s_all,
        "tantivy (one query per call)": lambda: [
            tantivy_search(tv, tv_searcher, q) for q in queries
        ],
        "llmdsdb search_many threads=2": lambda: idx.search_many(queries, K, threads=2),
        "llmdsdb search, 2 Python threads": lambda: _two_threads(idx, queries),
        "llmdsdb Database.search (one query per call)": lambda: [
            db.search(q, top_k=K, fusion_weight=0.0) for q in queries
        ],
        "llmdsdb Database.search_many (all queries in one call)": lambda: db.search_many(
            queries, top_k=K, fusion_weight=0.0
        ),
    }
    q_t = interleaved(fns, repeat)
    fresh = _fresh_process_queries(sf, texts, db, db_root, max(3, repeat - 2))
    db.close()
    st = idx.stats()
    page_bytes = sum(
        len(idx.store.get(p)) for sk in idx._skip for p in sk[:, 0].tolist()
    )
    b_ours = statistics.median(build_t["llmdsdb"])
    b_peer = statistics.median(build_t["bm25s"])
    rows = []
    b_tv = statistics.median(build_t["tantivy"])
    for name, ts in q_t.items():
        sysname = name.split()[0]
        ndcg = {"llmdsdb": ndcg_ours, "bm25s": ndcg_bm25s, "tantivy": ndcg_tantivy}[sysname]
        b_sys = {"llmdsdb": b_ours, "bm25s": b_peer, "tantivy": b_tv}[sysname]
        rows.append({
            "system": name,
            "ndcg@10": ndcg,
            "build_s": b_sys,
            "build_docs_per_s": len(texts) / b_sys,
            "qps": len(queries) / statistics.median(ts),
            "qps_cpu": len(queries) / statistics.median(CPU_TIMES[name]),
        })
    qps = {r["system"]: r["qps"] for r in rows}
    details = {
        "postings": st.total_postings,
        "blocks": st.num_blocks,
        "bytes_per_posting": page_bytes / st.total_postings,
        "qps_first_pass_after_open": first_pass,
        "pruned_equals_exhaustive": same_modes,
        "search_many_equals_search": same_batch,
        "build_times_s": build_t,
    }
    ratios = {
        "one_query_per_call_vs_bm25s_one_query_per_call":
            qps["llmdsdb search (one query per call)"] / qps["bm25s (one query per call)"],
        "all_queries_vs_bm25s_all_queries":
            qps["llmdsdb search_many (all queries in one call)"]
            / qps["bm25s (all queries in one call)"],
        "one_query_per_call_vs_bm25s_all_queries":
            qps["llmdsdb search (one query per call)"] / qps["bm25s (all queries in one call)"],
        "build_vs_bm25s": b_peer / b_ours,
        "cpu_one_query_per_call_vs_bm25s_one_query_per_call":
            rows[0]["qps_cpu"] / rows[3]["qps_cpu"],
        "cpu_all_queries_vs_bm25s_all_queries": rows[1]["qps_cpu"] / rows[4]["qps_cpu"],
        "cpu_one_query_per_call_vs_bm25s_all_queries": rows[0]["qps_cpu"] / rows[4]["qps_cpu"],
        "cpu_build_vs_bm25s": statistics.median(CPU_TIMES["bm25s"])
        / statistics.median(CPU_TIMES["llmdsdb"]),
        "one_query_per_call_vs_tantivy":
            qps["llmdsdb search (one query per call)"] / qps["tantivy (one query per call)"],
        "search_many_vs_tantivy":
            qps["llmdsdb search_many (all queries in one call)"]
            / qps["tantivy (one query per call)"],
        "cpu_one_query_per_call_vs_tantivy": rows[0]["qps_cpu"] / rows[5]["qps_cpu"],
        "cpu_search_many_vs_tantivy": rows[1]["qps_cpu"] / rows[5]["qps_cpu"],
        "build_vs_tantivy": b_tv / b_ours,
        "wall_search_many_threads2_vs_threads1":
            qps["llmdsdb search_many threads=2"]
            / qps["llmdsdb search_many (all queries in one call)"],
        "wall_two_python_threads_vs_one":
            qps["llmdsdb search, 2 Python threads"] / qps["llmdsdb search (one query per call)"],
        "cpu_database_search_vs_bm25s_one_query_per_call":
            rows[8]["qps_cpu"] / rows[3]["qps_cpu"],
        "cpu_database_search_many_vs_bm25s_all_queries": rows[9]["qps_cpu"] / rows[4]["qps_cpu"],
        "cpu_database_search_vs_tantivy": rows[8]["qps_cpu"] / rows[5]["qps_cpu"],
        "fresh_process_query_vs_bm25s": fresh["bm25s_s"] / fresh["llmdsdb_cli_s"],
        "fresh_process_query_vs_tantivy": fresh["tantivy_s"] / fresh["llmdsdb_cli_s"],
    }
    details["database_search_many_same_hits_as_index"] = same_db
    details["fresh_process_one_query_s"] = fresh
    details["build_cpu_s"] = {
        k: statistics.median(CPU_TIMES[k]) for k in ("llmdsdb", "bm25s", "tantivy")
    }
    return rows, {"details": details, "ratios": ratios}


def _scifact_db(sf: common.SciFact, path: str):
    """A Database holding the SciFact texts (no vectors), ids as in the corpus."""
    import llmdsdb

    db = llmdsdb.open(path, durability="nosync")
    db.add(list(sf.doc_ids), list(sf.texts))
    return db


_FRESH_BM25S = """
import sys, bm25s, Stemmer
ret = bm25s.BM25.load(sys.argv[1], show_progress=False)
qt = bm25s.tokenize([sys.argv[2]], stopwords="en", stemmer=Stemmer.Stemmer("english"),
                    show_progress=False)
docs, scores = ret.retrieve(qt, k=10, show_progress=False, n_threads=1)
print(docs[0].tolist())
"""

_FRESH_TANTIVY = """
import sys
sys.path.insert(0, sys.argv[3])
import bench_bm25
ix = bench_bm25.open_tantivy(sys.argv[1])
s = ix.searcher()
print([s.doc(a)["id"][0] for _, a in bench_bm25.tantivy_search(ix, s, sys.argv[2])])
"""


def _fresh_process_queries(sf: common.SciFact, texts: list[str], db, root: str,
                           rounds: int) -> dict:
    """One query in a new process, start to printed result: ``llmdsdb query DB TEXT`` (the
    CLI: interpreter start, imports, open, query, print) against a new Python process that
    loads bm25s's saved index and runs the same query, and one that opens tantivy's index
    (the CLI runs as ``python -m llmdsdb``, what the ``llmdsdb`` script runs);
    the three interleaved for each of a few queries, median wall seconds."""
    bm_dir = os.path.join(root, "bm25s")
    build_bm25s(texts).save(bm_dir, show_progress=False)
    tv_dir = os.path.join(root, "tantivy")
    os.mkdir(tv_dir)
    build_tantivy(texts, tv_dir)
    db_path = os.path.join(root, "db")
    here = str(Path(__file__).resolve().parent)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    times: dict[str, list[float]] = {"llmdsdb_cli_s": [], "bm25s_s": [], "tantivy_s": []}
    cmds = {
        "llmdsdb_cli_s": lambda q: [sys.executable, "-m", "llmdsdb", "query", db_path, q,
                                    "--mode", "bm25", "-k", "10", "--json"],
        "bm25s_s": lambda q: [sys.executable, "-c", _FRESH_BM25S, bm_dir, q],
        "tantivy_s": lambda q: [sys.executable, "-c", _FRESH_TANTIVY, tv_dir, q, here],
    }
    for q in sf.queries[:rounds]:
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd(q), check=True, stdout=subprocess.DEVNULL, env=env)
            times[name].append(time.perf_counter() - t0)
    out: dict = {name: statistics.median(ts) for name, ts in times.items()}
    out["runs_each"] = rounds
    return out


def _two_threads(idx: InvertedIndex, queries: list[str]) -> None:
    """The queries split between two Python threads calling search (the kernel releases
    the GIL): wall time against one thread shows how much runs in parallel."""
    import threading

    half = len(queries) // 2
    ts = [threading.Thread(target=lambda qs=qs: [idx.search(q, K) for q in qs])
          for qs in (queries[:half], queries[half:])]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def run_rank_bm25(sf: common.SciFact) -> dict:
    from rank_bm25 import BM25Okapi

    an = Analyzer()
    gc.collect()
    t0 = time.perf_counter()
    bm = BM25Okapi(an.analyze_many(sf.texts), k1=1.2, b=0.75)
    build = time.perf_counter() - t0
    runs = {}
    t0 = time.perf_counter()
    for qid, q in zip(sf.query_ids, sf.queries):
        scores = bm.get_scores(an.analyze(q))
        top = np.argsort(-scores, kind="stable")[:K]
        runs[qid] = [sf.doc_ids[d] for d in top]
    qps = len(sf.queries) / (time.perf_counter() - t0)
    return {
        "system": "rank_bm25 BM25Okapi (same analyzer)",
        "ndcg@10": common.mean_ndcg(runs, sf.qrels),
        "build_s": build,
        "build_docs_per_s": len(sf.texts) / build,
        "qps": qps,
    }


_FTS_WORD = re.compile(r"\w+")


def run_fts5(sf: common.SciFact, repeat: int) -> dict:
    con = sqlite3.connect(":memory:")
    gc.collect()
    t0 = time.perf_counter()
    con.execute("CREATE VIRTUAL TABLE docs USING fts5(body, tokenize='porter unicode61')")
    with con:
        con.executemany("INSERT INTO docs(rowid, body) VALUES (?, ?)", enumerate(sf.texts))
    build = time.perf_counter() - t0
    stop = Analyzer().stopwords

    def match(q: str) -> str:
        words = [w for w in _FTS_WORD.findall(q.lower()) if w not in stop]
        return " OR ".join('"' + w.replace('"', '""') + '"' for w in words) or '""'

    sql = "SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY bm25(docs) LIMIT ?"

    def one(q: str) -> list[int]:
        return [r[0] for r in con.execute(sql, (match(q), K))]

    runs = {qid: [sf.doc_ids[d] for d in one(q)] for qid, q in zip(sf.query_ids, sf.queries)}
    qps, _ = _qps(lambda: [one(q) for q in sf.queries], len(sf.queries), repeat)
    return {
        "system": f"SQLite FTS5 {sqlite3.sqlite_version} (porter, bm25())",
        "ndcg@10": common.mean_ndcg(runs, sf.qrels),
        "build_s": build,
        "build_docs_per_s": len(sf.texts) / build,
        "qps": qps,
    }


def scifact(args: argparse.Namespace) -> None:
    sf = common.load_scifact()
    repeat = 3 if args.quick else 7
    rows, extra = scifact_core(sf, repeat)
    if not args.quick:
        rows.append(run_rank_bm25(sf))
    rows.append(run_fts5(sf, repeat))
    cols = ["system", "ndcg@10", "build_s", "build_docs_per_s", "qps", "qps_cpu"]
    body = [
        (
            "BEIR SciFact, 5,183 documents (title + text), 300 test queries, top-10, k1=1.2 b=0.75,"
        " English stop words (Lucene list) + Snowball stemmer for llmdsdb, bm25s, rank_bm25;"
        " FTS5 uses its porter tokenizer. One process, one thread, same run. llmdsdb and"
        " bm25s are timed interleaved (warm-up, then rounds of every variant in turn;"
        f" {repeat} rounds for queries, {max(3, repeat - 2)} for builds), median reported:"
        " the machine is shared and its load drifts. qps = all 300 queries, query string ->"
        " top-10 ids; qps_cpu = the same from process CPU time, steadier on this shared"
        f" machine (load average {os.getloadavg()[0]:.1f} on 2 cores at the end of the run)."
        " llmdsdb build includes"
        " flush() (postings encoded into pages)."
        ),
        "",
        common.table(rows, cols),
        "llmdsdb details: " + json.dumps(extra["details"], default=str),
        "",
        "Ratios (llmdsdb / bm25s): "
        + json.dumps({k: round(v, 3) for k, v in extra["ratios"].items()}),
    ]
    cmd = "python tools/bench/bench_bm25.py" + (" --quick" if args.quick else "")
    path = common.write_result(
        "bench_bm25" + ("_quick" if args.quick else ""), cmd, "\n".join(body),
        {"rows": rows, **extra},
    )
    print(path.read_text())


# --- scale run ----------------------------------------------------------------------------------


def synthetic_corpus(n_docs: int, seed: int = 7):
    """Yield (start, texts) chunks of a corpus drawn from SciFact's word and length
    distributions (deterministic for a given seed)."""
    sf = common.load_scifact()
    an = Analyzer()
    docs_words = [an.words(t) for t in sf.texts]
    lengths = np.array([len(w) for w in docs_words])
    freq = Counter(w for ws in docs_words for w in ws)
    vocab = np.array(list(freq.keys()), dtype=object)
    p = np.array(list(freq.values()), dtype=np.float64)
    p /= p.sum()
    cdf = np.cumsum(p)
    rng = np.random.default_rng(seed)
    chunk = 50_000
    for start in range(0, n_docs, chunk):
        n = min(chunk, n_docs - start)
        lens = lengths[rng.integers(0, len(lengths), n)]
        words = vocab[np.minimum(np.searchsorted(cdf, rng.random(int(lens.sum()))), len(vocab) - 1)]
        offs = np.concatenate(([0], np.cumsum(lens)))
        texts = [" ".join(words[offs[i] : offs[i + 1]]) for i in range(n)]
        yield start, texts


def scale_child(system: str, n_docs: int, save_dir: Path) -> dict:
    sf = common.load_scifact()
    queries = sf.queries
    texts_all: list[str] = []
    for _, texts in synthetic_corpus(n_docs):
        texts_all.extend(texts)
    gc.collect()
    rss_corpus = common.peak_rss_mb()
    out: dict = {"system": system, "docs": n_docs, "rss_after_corpus_mb": rss_corpus}
    if system == "llmdsdb":
        import resource

        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        c0 = time.process_time()
        idx = build_llmdsdb(texts_all)
        out["build_s"] = time.perf_counter() - t0
        out["build_cpu_s"] = time.process_time() - c0
        # where wall time beyond CPU time goes: blocking waits (voluntary switches) or
        # other processes taking the core (involuntary); and the system time of faults
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        out["build_rusage"] = {
            "sys_s": r1.ru_stime - r0.ru_stime,
            "minor_faults": r1.ru_minflt - r0.ru_minflt,
            "voluntary_switches": r1.ru_nvcsw - r0.ru_nvcsw,
            "involuntary_switches": r1.ru_nivcsw - r0.ru_nivcsw,
        }
        print(f"llmdsdb build {out['build_s']:.1f} s", file=sys.stderr, flush=True)
        st = idx.stats()
        page_bytes = sum(
            len(idx.store.get(p)) for sk in idx._skip for p in sk[:, 0].tolist()
        )
        out["bytes_per_posting"] = page_bytes / st.total_postings
        out["postings"] = st.total_postings
        del texts_all
        gc.collect()

        def run(mode: str) -> list[float]:
            lat = []
            c0 = time.process_time()
            for q in queries:
                t = time.perf_counter()
                idx.search(q, K, mode=mode)
                lat.append(time.perf_counter() - t)
            cpu[mode] = min(cpu.get(mode, math.inf), time.process_time() - c0)
            return lat

        cpu: dict[str, float] = {}

        first = run("auto")
        out["qps_first_pass"] = len(queries) / sum(first)
        out["qps_cpu_first_pass"] = len(queries) / cpu["auto"]
        lat = min((run("auto") for _ in range(2)), key=sum)
        out["qps"] = len(queries) / sum(lat)
        out.update(common.percentiles(lat))
        # all queries in one call (search_many), warm, in the default mode's cache state
        # (before the pruned passes, whose extra cached lists crowd the cache): best of 3
        many_wall, many_cpu = math.inf, math.inf
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            got = idx.search_many(queries, K)
            many_wall = min(many_wall, time.perf_counter() - t0)
            many_cpu = min(many_cpu, time.process_time() - c0)
        out["qps_search_many"] = len(queries) / many_wall
        out["qps_cpu_search_many"] = len(queries) / many_cpu
        pr = min((run("pruned") for _ in range(2)), key=sum)
        ex = min((run("exhaustive") for _ in range(2)), key=sum)
        out["qps_pruned"] = len(queries) / sum(pr)
        out["qps_exhaustive"] = len(queries) / sum(ex)
        out["pruned_speedup_vs_exhaustive"] = sum(ex) / sum(pr)
        out["qps_cpu"] = len(queries) / cpu["auto"]
        out["qps_cpu_pruned"] = len(queries) / cpu["pruned"]
        out["qps_cpu_exhaustive"] = len(queries) / cpu["exhaustive"]
        ref = [idx.search(q, K, mode="exhaustive") for q in queries]
        out["pruned_equals_exhaustive"] = ref == [idx.search(q, K, mode="pruned") for q in queries]
        out["search_many_equals_search"] = got == ref
        # cold again, from a fresh handle on the same pages (nothing decoded yet): one
        # query per call, then search_many on another fresh handle; the warm handle's
        # decoded lists are dropped first so that both fit in memory as in the first pass
        idx._invalidate()
        gc.collect()
        cold = InvertedIndex.open(idx.store)
        t0 = time.perf_counter()
        for q in queries:
            cold.search(q, K)
        out["qps_first_pass_after_open"] = len(queries) / (time.perf_counter() - t0)
        del cold
        gc.collect()
        cold = InvertedIndex.open(idx.store)
        t0 = time.perf_counter()
        cold_many = cold.search_many(queries, K)
        out["qps_search_many_first_pass_after_open"] = len(queries) / (
            time.perf_counter() - t0
        )
        out["cold_equals_warm"] = cold_many == ref
        del cold
        with open(save_dir / "llmdsdb.pages", "wb") as f:  # for the interleaved duel
            pickle.dump(idx.store, f, protocol=pickle.HIGHEST_PROTOCOL)
    elif system == "tantivy":
        t0 = time.perf_counter()
        c0 = time.process_time()
        tv_dir = save_dir / "tantivy"
        tv_dir.mkdir()
        tv = build_tantivy(texts_all, str(tv_dir))
        out["build_s"] = time.perf_counter() - t0
        out["build_cpu_s"] = time.process_time() - c0
        print(f"tantivy build {out['build_s']:.1f} s", file=sys.stderr, flush=True)
        del texts_all
        gc.collect()
        searcher = tv.searcher()
        cpu_tv: list[float] = []
        for _ in range(3):
            c0 = time.process_time()
            for q in queries:
                tantivy_search(tv, searcher, q)
            cpu_tv.append(time.process_time() - c0)
        out["qps_cpu_first_pass"] = len(queries) / cpu_tv[0]
        out["qps_cpu"] = len(queries) / min(cpu_tv[1:])
    else:
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        t0 = time.perf_counter()
        c0 = time.process_time()
        tok = bm25s.tokenize(texts_all, stopwords="en", stemmer=stemmer, show_progress=False)
        del texts_all
        ret = bm25s.BM25(k1=1.2, b=0.75)
        ret.index(tok, show_progress=False)
        out["build_s"] = time.perf_counter() - t0
        out["build_cpu_s"] = time.process_time() - c0
        print(f"bm25s build {out['build_s']:.1f} s", file=sys.stderr, flush=True)
        del tok
        gc.collect()

        def run() -> list[float]:
            lat = []
            c0 = time.process_time()
            for q in queries:
                t = time.perf_counter()
                bm25s_retrieve(ret, stemmer, [q])
                lat.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c0)
            return lat

        cpu: list[float] = []
        first = run()
        out["qps_first_pass"] = len(queries) / sum(first)
        first_cpu = cpu[0]
        lat = run()
        out["qps"] = len(queries) / sum(lat)
        out.update(common.percentiles(lat))
        # all queries in one retrieve call: best of three, like search_many
        all_wall, all_cpu = math.inf, math.inf
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            bm25s_retrieve(ret, stemmer, queries)
            all_wall = min(all_wall, time.perf_counter() - t0)
            all_cpu = min(all_cpu, time.process_time() - c0)
        out["qps_all_queries_in_one_call"] = len(queries) / all_wall
        out["qps_cpu_all_queries_in_one_call"] = len(queries) / all_cpu
        out["qps_cpu"] = len(queries) / min(cpu[1:])
        out["qps_cpu_first_pass"] = len(queries) / first_cpu
        ret.save(str(save_dir / "bm25s"), show_progress=False)
    out["build_docs_per_s"] = n_docs / out["build_s"]
    out["peak_rss_mb"] = common.peak_rss_mb()
    out["load_average_1min_at_end"] = os.getloadavg()[0]
    return out


def duel_child(save_dir: Path, rounds: int = 5) -> dict:
    """Both warm indexes in one process, their query passes interleaved: ours one query per
    call, bm25s one query per call, our search_many, bm25s's all-queries call, repeated
    ``rounds`` times; the best CPU time of each mode counts. Load drifts on this shared
    machine move both systems alike here, unlike the two build processes, which run one
    after the other."""
    import bm25s
    import Stemmer

    queries = common.load_scifact().queries
    first: dict[str, float] = {}

    def first_pass(name: str, load, run) -> object:
        # load, then one pass with nothing decoded or cached (CPU time, load included)
        c0 = time.process_time()
        obj = load()
        run(obj)
        first[name] = len(queries) / (time.process_time() - c0)
        return obj

    def load_ours() -> InvertedIndex:
        with open(save_dir / "llmdsdb.pages", "rb") as f:
            return InvertedIndex.open(pickle.load(f))

    stemmer = Stemmer.Stemmer("english")
    ours = first_pass("ours", load_ours, lambda o: [o.search(q, K) for q in queries])
    ret = first_pass(
        "bm25s", lambda: bm25s.BM25.load(str(save_dir / "bm25s"), show_progress=False),
        lambda r: [bm25s_retrieve(r, stemmer, [q]) for q in queries],
    )
    tv = first_pass(
        "tantivy", lambda: open_tantivy(str(save_dir / "tantivy")),
        lambda t: [tantivy_search(t, t.searcher(), q) for q in queries],
    )
    tv_searcher = tv.searcher()

    def ours_single() -> object:
        return [ours.search(q, K) for q in queries]

    def ours_many() -> object:
        return ours.search_many(queries, K)

    def peer_single() -> object:
        return [bm25s_retrieve(ret, stemmer, [q]) for q in queries]

    def peer_many() -> object:
        return bm25s_retrieve(ret, stemmer, queries)

    def tantivy_single() -> object:
        return [tantivy_search(tv, tv_searcher, q) for q in queries]

    modes = {"ours_single": ours_single, "bm25s_single": peer_single,
             "ours_many": ours_many, "bm25s_many": peer_many, "tantivy_single": tantivy_single}
    for fn in modes.values():  # warm-up: every term decoded and cached once
        fn()
    best = dict.fromkeys(modes, math.inf)
    for _ in range(rounds):
        for name, fn in modes.items():
            c0 = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - c0)
    out = {f"qps_cpu_{name}": len(queries) / t for name, t in best.items()}
    out.update({f"qps_cpu_first_pass_after_load_{name}": v for name, v in first.items()})
    # threads: wall time of search_many on one and on two kernel threads, interleaved
    wall = {1: math.inf, 2: math.inf}
    for _ in range(rounds):
        for n, best_n in wall.items():
            t0 = time.perf_counter()
            ours.search_many(queries, K, threads=n)
            wall[n] = min(best_n, time.perf_counter() - t0)
    out["qps_wall_ours_many_threads1"] = len(queries) / wall[1]
    out["qps_wall_ours_many_threads2"] = len(queries) / wall[2]
    # several Python threads calling search at once (the kernel releases the GIL)
    pyw = {1: math.inf, 2: math.inf}
    for _ in range(rounds):
        t0 = time.perf_counter()
        ours_single()
        pyw[1] = min(pyw[1], time.perf_counter() - t0)
        t0 = time.perf_counter()
        _two_threads(ours, queries)
        pyw[2] = min(pyw[2], time.perf_counter() - t0)
    out["qps_wall_ours_search_1_python_thread"] = len(queries) / pyw[1]
    out["qps_wall_ours_search_2_python_threads"] = len(queries) / pyw[2]
    out["rounds"] = rounds
    out["load_average_1min_at_end"] = os.getloadavg()[0]
    return out


def scale(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_bm25_") as tmp:
        for system in ("llmdsdb", "bm25s", "tantivy", "duel"):
            proc = subprocess.run(
                [sys.executable, __file__, "--scale-child", system, str(args.scale), tmp],
                stdout=subprocess.PIPE,
                text=True,
                check=False,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            if proc.returncode != 0:
                raise SystemExit(f"{system} child failed")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    ours, peer, tv, duel = rows
    rows = [ours, peer, tv]
    ratios = {
        "interleaved_cpu_one_query_per_call_vs_tantivy":
            duel["qps_cpu_ours_single"] / duel["qps_cpu_tantivy_single"],
        "interleaved_cpu_search_many_vs_tantivy":
            duel["qps_cpu_ours_many"] / duel["qps_cpu_tantivy_single"],
        "fresh_process_first_pass_after_load_vs_bm25s":
            duel["qps_cpu_first_pass_after_load_ours"]
            / duel["qps_cpu_first_pass_after_load_bm25s"],
        "fresh_process_first_pass_after_load_vs_tantivy":
            duel["qps_cpu_first_pass_after_load_ours"]
            / duel["qps_cpu_first_pass_after_load_tantivy"],
        "wall_search_many_threads2_vs_threads1":
            duel["qps_wall_ours_many_threads2"] / duel["qps_wall_ours_many_threads1"],
        "wall_search_2_python_threads_vs_1":
            duel["qps_wall_ours_search_2_python_threads"]
            / duel["qps_wall_ours_search_1_python_thread"],
        "reopened_process_vs_building_process_warm_cpu":
            duel["qps_cpu_ours_single"] / ours["qps_cpu"],
        "build_vs_tantivy": ours["build_docs_per_s"] / tv["build_docs_per_s"],
        "interleaved_cpu_one_query_per_call": duel["qps_cpu_ours_single"] / duel["qps_cpu_bm25s_single"],
        "interleaved_cpu_search_many_vs_all_queries_in_one_call":
            duel["qps_cpu_ours_many"] / duel["qps_cpu_bm25s_many"],
        "interleaved_cpu_one_query_per_call_vs_all_queries_in_one_call":
            duel["qps_cpu_ours_single"] / duel["qps_cpu_bm25s_many"],
        "qps_vs_bm25s_one_query_per_call": ours["qps"] / peer["qps"],
        "search_many_vs_bm25s_all_queries_in_one_call":
            ours["qps_search_many"] / peer["qps_all_queries_in_one_call"],
        "cpu_search_many_vs_bm25s_all_queries_in_one_call":
            ours["qps_cpu_search_many"] / peer["qps_cpu_all_queries_in_one_call"],
        "first_pass_vs_bm25s_first_pass": ours["qps_first_pass"] / peer["qps_first_pass"],
        "first_pass_after_open_vs_bm25s_first_pass":
            ours["qps_first_pass_after_open"] / peer["qps_first_pass"],
        "search_many_first_pass_after_open_vs_bm25s_all_queries_in_one_call":
            ours["qps_search_many_first_pass_after_open"] / peer["qps_all_queries_in_one_call"],
        "qps_vs_bm25s_all_queries_in_one_call": ours["qps"] / peer["qps_all_queries_in_one_call"],
        "build_vs_bm25s": ours["build_docs_per_s"] / peer["build_docs_per_s"],
        "cpu_qps_vs_bm25s_one_query_per_call": ours["qps_cpu"] / peer["qps_cpu"],
        "cpu_qps_vs_bm25s_all_queries_in_one_call":
            ours["qps_cpu"] / peer["qps_cpu_all_queries_in_one_call"],
        "cpu_build_vs_bm25s": peer["build_cpu_s"] / ours["build_cpu_s"],
    }
    cols = ["system", "build_s", "build_cpu_s", "qps", "qps_cpu", "qps_first_pass", "p50_ms",
            "p99_ms", "peak_rss_mb", "rss_after_corpus_mb"]
    body = [
        (
            f"Synthetic corpus of {args.scale:,} documents drawn from SciFact's word and length"
        " distributions (seed 7), queried with the 300 SciFact test queries, top-10,"
        " k1=1.2 b=0.75, one thread. Each system in its own process (peak RSS includes the"
        " corpus strings, shown separately). qps = best of two warm passes (query string ->"
        " top-10 ids), latencies from that pass. The machine is shared (each row's details"
        " give the load average when its process ended; 2 cores) and the two systems run one"
        " after the other, so wall"
        " times drift with the load: the process CPU times (build_cpu_s, qps_cpu) are the"
        " steadier comparison. qps_first_pass = the first pass right after the build (nothing"
        " decoded yet: every term is read from its pages the first time); llmdsdb's"
        " qps_first_pass_after_open is the same on a fresh handle opened on the built pages."
        " qps_search_many = all 300 queries in one search_many call (warm, best of three),"
        " against bm25s's all-queries-in-one-retrieve-call mode (qps_all_queries_in_one_call,"
        " best of three)."
        ),
        "",
        common.table(rows, cols),
        "llmdsdb: " + json.dumps({k: v for k, v in ours.items() if k not in cols}),
        "",
        "bm25s: " + json.dumps({k: v for k, v in peer.items() if k not in cols}),
        "",
        "tantivy: " + json.dumps({k: v for k, v in tv.items() if k not in cols}),
        "",
        "Interleaved warm passes (both indexes in one process, loaded from the builds above): "
        + json.dumps(duel),
        "",
        "Ratios (llmdsdb / bm25s; the interleaved_* ones are the query-speed comparison"
        " least moved by load): " + json.dumps({k: round(v, 3) for k, v in ratios.items()}),
    ]
    name = "bench_bm25_scale" if args.scale == 1_000_000 else f"bench_bm25_scale_{args.scale}"
    path = common.write_result(
        name, f"python tools/bench/bench_bm25.py --scale {args.scale}", "\n".join(body),
        {"rows": rows, "duel": duel, "ratios": ratios},
    )
    print(path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip rank_bm25")
    ap.add_argument("--scale", type=int, nargs="?", const=1_000_000, default=None,
                    help="run the synthetic scale benchmark with N documents (default 1M)")
    ap.add_argument("--scale-child", nargs=3, metavar=("SYSTEM", "N", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        import warnings

        warnings.filterwarnings("ignore")
        system, n, tmp = args.scale_child
        if system == "duel":
            print(json.dumps(duel_child(Path(tmp))))
        else:
            print(json.dumps(scale_child(system, int(n), Path(tmp))))
    elif args.scale:
        scale(args)
    else:
        scifact(args)


if __name__ == "__main__":
    main()
