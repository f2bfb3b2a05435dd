"""BM25 benchmark: llmdsdb.InvertedIndex vs bm25s, rank_bm25 and SQLite FTS5.

SciFact (BEIR, 5,183 abstracts, 300 test queries; title + text indexed as
tools/bench/common does): nDCG@10, build docs/s, single-thread queries/s (query string ->
top-10 ids, all 300 queries, warm-up pass then median of 5 passes), bytes per posting.

Scale run (``--scale N``, default 1,000,000 documents): a synthetic corpus drawn from
SciFact's word and document-length distributions (each document: a length drawn from the
SciFact lengths in words, then that many words drawn from the SciFact unigram
distribution), queried with the 300 SciFact test queries: build time, queries/s, p50/p99
latency, peak memory, pruned vs exhaustive speed-up; beside bm25s. Each system runs in its
own subprocess so that peak RSS is its own.

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
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from llmdsdb.analysis import Analyzer  # noqa: E402
from llmdsdb.inverted_index import InvertedIndex  # noqa: E402

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


def run_llmdsdb(sf: common.SciFact, repeat: int) -> dict:
    gc.collect()
    t0 = time.perf_counter()
    idx = InvertedIndex()
    idx.add_documents(range(len(sf.texts)), sf.texts)
    idx.flush()
    build = time.perf_counter() - t0
    st = idx.stats()
    page_bytes = sum(
        len(idx.store.get(p)) for sk in idx._skip for p in sk[:, 0].tolist()  # noqa: SLF001
    )
    runs = {qid: [sf.doc_ids[d] for d, _ in idx.search(q, K)] for qid, q in zip(sf.query_ids, sf.queries)}
    qps, cold = _qps(lambda: [idx.search(q, K) for q in sf.queries], len(sf.queries), repeat)
    # a fresh index from the store: cold pages, decoded on first use
    reopened = InvertedIndex.open(idx.store)
    t0 = time.perf_counter()
    for q in sf.queries:
        reopened.search(q, K)
    cold_open = len(sf.queries) / (time.perf_counter() - t0)
    qps_pruned, _ = _qps(
        lambda: [idx.search(q, K, mode="pruned") for q in sf.queries], len(sf.queries), repeat
    )
    same = all(
        idx.search(q, K, mode="pruned") == idx.search(q, K, mode="exhaustive") for q in sf.queries
    )
    return {
        "system": "llmdsdb",
        "ndcg@10": common.mean_ndcg(runs, sf.qrels),
        "build_s": build,
        "build_docs_per_s": len(sf.texts) / build,
        "qps": qps,
        "qps_first_pass": cold,
        "qps_after_open": cold_open,
        "qps_pruned_mode": qps_pruned,
        "pruned_equals_exhaustive": same,
        "postings": st.total_postings,
        "blocks": st.num_blocks,
        "bytes_per_posting": page_bytes / st.total_postings,
    }


def run_bm25s(sf: common.SciFact, repeat: int) -> list[dict]:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    gc.collect()
    t0 = time.perf_counter()
    tok = bm25s.tokenize(sf.texts, stopwords="en", stemmer=stemmer, show_progress=False)
    ret = bm25s.BM25(k1=1.2, b=0.75)
    ret.index(tok, show_progress=False)
    build = time.perf_counter() - t0

    def one(q: str):
        qt = bm25s.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False)
        return ret.retrieve(qt, k=K, show_progress=False, n_threads=1)[0][0]

    def batch():
        qt = bm25s.tokenize(sf.queries, stopwords="en", stemmer=stemmer, show_progress=False)
        return ret.retrieve(qt, k=K, show_progress=False, n_threads=1)[0]

    res = batch()
    runs = {qid: [sf.doc_ids[d] for d in res[i]] for i, qid in enumerate(sf.query_ids)}
    ndcg = common.mean_ndcg(runs, sf.qrels)
    qps_loop, cold = _qps(lambda: [one(q) for q in sf.queries], len(sf.queries), repeat)
    qps_batch, _ = _qps(batch, len(sf.queries), repeat)
    base = {"ndcg@10": ndcg, "build_s": build, "build_docs_per_s": len(sf.texts) / build}
    return [
        {"system": "bm25s (one query per call)", **base, "qps": qps_loop, "qps_first_pass": cold},
        {"system": "bm25s (all queries in one call)", **base, "qps": qps_batch},
    ]


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
    repeat = 3 if args.quick else 5
    rows = [run_llmdsdb(sf, repeat)]
    rows += run_bm25s(sf, repeat)
    if not args.quick:
        rows.append(run_rank_bm25(sf))
    rows.append(run_fts5(sf, repeat))
    ours = rows[0]
    loop, batch = rows[1], rows[2]
    ratios = {
        "qps_vs_bm25s_one_query_per_call": ours["qps"] / loop["qps"],
        "qps_vs_bm25s_all_queries_in_one_call": ours["qps"] / batch["qps"],
        "build_vs_bm25s": ours["build_docs_per_s"] / loop["build_docs_per_s"],
    }
    cols = ["system", "ndcg@10", "build_s", "build_docs_per_s", "qps", "qps_first_pass"]
    body = [
        "BEIR SciFact, 5,183 documents (title + text), 300 test queries, top-10, k1=1.2 b=0.75,"
        " English stop words (Lucene list) + Snowball stemmer for llmdsdb, bm25s, rank_bm25;"
        " FTS5 uses its porter tokenizer. One process, one thread, same run. qps = median of"
        f" {repeat} passes over all 300 queries after a warm-up pass (query string -> top-10"
        " ids); first pass = the warm-up pass. llmdsdb build includes flush() (postings"
        " encoded into pages).",
        "",
        common.table(rows, cols),
        "llmdsdb details: " + json.dumps({k: v for k, v in ours.items() if k not in cols}),
        "",
        "Ratios (llmdsdb / bm25s): " + json.dumps({k: round(v, 3) for k, v in ratios.items()}),
    ]
    cmd = "python tools/bench/bench_bm25.py" + (" --quick" if args.quick else "")
    path = common.write_result(
        "bench_bm25" + ("_quick" if args.quick else ""), cmd, "\n".join(body),
        {"rows": rows, "ratios": ratios},
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


def scale_child(system: str, n_docs: int) -> dict:
    sf = common.load_scifact()
    queries = sf.queries
    texts_all: list[str] = []
    for _, texts in synthetic_corpus(n_docs):
        texts_all.extend(texts)
    gc.collect()
    rss_corpus = common.peak_rss_mb()
    out: dict = {"system": system, "docs": n_docs, "rss_after_corpus_mb": rss_corpus}
    if system == "llmdsdb":
        t0 = time.perf_counter()
        idx = InvertedIndex()
        step = 100_000
        for s in range(0, n_docs, step):
            idx.add_documents(range(s, min(s + step, n_docs)), texts_all[s : s + step])
        idx.flush()
        out["build_s"] = time.perf_counter() - t0
        print(f"llmdsdb build {out['build_s']:.1f} s", file=sys.stderr, flush=True)
        st = idx.stats()
        page_bytes = sum(
            len(idx.store.get(p)) for sk in idx._skip for p in sk[:, 0].tolist()  # noqa: SLF001
        )
        out["bytes_per_posting"] = page_bytes / st.total_postings
        out["postings"] = st.total_postings
        del texts_all
        gc.collect()

        def run(mode: str) -> list[float]:
            lat = []
            for q in queries:
                t = time.perf_counter()
                idx.search(q, K, mode=mode)
                lat.append(time.perf_counter() - t)
            return lat

        first = run("auto")
        out["qps_first_pass"] = len(queries) / sum(first)
        lat = min((run("auto") for _ in range(2)), key=sum)
        out["qps"] = len(queries) / sum(lat)
        out.update(common.percentiles(lat))
        pr = min((run("pruned") for _ in range(2)), key=sum)
        ex = min((run("exhaustive") for _ in range(2)), key=sum)
        out["qps_pruned"] = len(queries) / sum(pr)
        out["qps_exhaustive"] = len(queries) / sum(ex)
        out["pruned_speedup_vs_exhaustive"] = sum(ex) / sum(pr)
        out["pruned_equals_exhaustive"] = all(
            idx.search(q, K, mode="pruned") == idx.search(q, K, mode="exhaustive")
            for q in queries
        )
    else:
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        t0 = time.perf_counter()
        tok = bm25s.tokenize(texts_all, stopwords="en", stemmer=stemmer, show_progress=False)
        del texts_all
        ret = bm25s.BM25(k1=1.2, b=0.75)
        ret.index(tok, show_progress=False)
        out["build_s"] = time.perf_counter() - t0
        print(f"bm25s build {out['build_s']:.1f} s", file=sys.stderr, flush=True)
        del tok
        gc.collect()

        def run() -> list[float]:
            lat = []
            for q in queries:
                t = time.perf_counter()
                qt = bm25s.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False)
                ret.retrieve(qt, k=K, show_progress=False, n_threads=1)
                lat.append(time.perf_counter() - t)
            return lat

        first = run()
        out["qps_first_pass"] = len(queries) / sum(first)
        lat = run()
        out["qps"] = len(queries) / sum(lat)
        out.update(common.percentiles(lat))
        t0 = time.perf_counter()
        qt = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
        ret.retrieve(qt, k=K, show_progress=False, n_threads=1)
        out["qps_all_queries_in_one_call"] = len(queries) / (time.perf_counter() - t0)
    out["build_docs_per_s"] = n_docs / out["build_s"]
    out["peak_rss_mb"] = common.peak_rss_mb()
    return out


def scale(args: argparse.Namespace) -> None:
    rows = []
    for system in ("llmdsdb", "bm25s"):
        proc = subprocess.run(
            [sys.executable, __file__, "--scale-child", system, str(args.scale)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if proc.returncode != 0:
            raise SystemExit(f"{system} child failed")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    ours, peer = rows
    ratios = {
        "qps_vs_bm25s_one_query_per_call": ours["qps"] / peer["qps"],
        "qps_vs_bm25s_all_queries_in_one_call": ours["qps"] / peer["qps_all_queries_in_one_call"],
        "build_vs_bm25s": ours["build_docs_per_s"] / peer["build_docs_per_s"],
    }
    cols = ["system", "build_s", "build_docs_per_s", "qps", "qps_first_pass", "p50_ms",
            "p99_ms", "peak_rss_mb", "rss_after_corpus_mb"]
    body = [
        f"Synthetic corpus of {args.scale:,} documents drawn from SciFact's word and length"
        " distributions (seed 7), queried with the 300 SciFact test queries, top-10,"
        " k1=1.2 b=0.75, one thread. Each system in its own process (peak RSS includes the"
        " corpus strings, shown separately). qps = best of two warm passes (query string ->"
        " top-10 ids), latencies from that pass.",
        "",
        common.table(rows, cols),
        "llmdsdb: " + json.dumps({k: v for k, v in ours.items() if k not in cols}),
        "",
        "bm25s: " + json.dumps({k: v for k, v in peer.items() if k not in cols}),
        "",
        "Ratios (llmdsdb / bm25s): " + json.dumps({k: round(v, 3) for k, v in ratios.items()}),
    ]
    name = "bench_bm25_scale" if args.scale == 1_000_000 else f"bench_bm25_scale_{args.scale}"
    path = common.write_result(
        name, f"python tools/bench/bench_bm25.py --scale {args.scale}", "\n".join(body),
        {"rows": rows, "ratios": ratios},
    )
    print(path.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip rank_bm25")
    ap.add_argument("--scale", type=int, nargs="?", const=1_000_000, default=None,
                    help="run the synthetic scale benchmark with N documents (default 1M)")
    ap.add_argument("--scale-child", nargs=2, metavar=("SYSTEM", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        import warnings

        warnings.filterwarnings("ignore")
        print(json.dumps(scale_child(args.scale_child[0], int(args.scale_child[1]))))
    elif args.scale:
        scale(args)
    else:
        scifact(args)


if __name__ == "__main__":
    main()
