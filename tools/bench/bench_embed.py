"""SciFact end to end from raw text: ``llmdsdb ingest --embedder``, then hybrid queries.

No precomputed vector is used: the corpus JSONL goes through the CLI with an embedder, the
database stores the embedder's identity, and the queries are plain text. Measures ingest
docs/s (embedding included, the CLI as a user runs it), nDCG@10 of BM25, vector and hybrid
search in a fresh process that reopens the database (the stored embedder is rebuilt from
its identity), and checks that a sample of queries run through ``llmdsdb query --json``
return exactly the hits of ``Database.search``.

Peers: Chroma's default embedding function downloads its ONNX model at first use, which
this offline machine cannot do, so no peer runs here; the precomputed-vector figures of
``bench_db.py`` (same model, all-MiniLM-L6-v2) are the reference.

    python tools/bench/bench_embed.py                  # minilm (needs the [embed] extra)
    python tools/bench/bench_embed.py --embedder hashing --cli-checks 3
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
from common import data_dir, load_scifact, mean_ndcg, table, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--cli-checks", type=int, default=5,
                    help="queries also run through `llmdsdb query --json` and compared")
    ap.add_argument("--keep", metavar="DIR", help="keep the database in DIR")
    args = ap.parse_args()

    sf = load_scifact()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-embed-"))
    db_path = work / "scifact-db"
    if db_path.exists():
        shutil.rmtree(db_path)
    corpus = data_dir() / "scifact" / "corpus.jsonl.gz"
    llmdsdb_cli = [sys.executable, "-m", "llmdsdb"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    subprocess.run(llmdsdb_cli + ["ingest", str(db_path), str(corpus), "--text-field", "title",
                                  "--text-field", "text", "--embedder", args.embedder,
                                  "--batch-size", "512", "-q"], check=True, env=env)
    ingest_s = time.perf_counter() - t0

    import llmdsdb

    runs: dict[str, dict[str, list[str]]] = {"bm25": {}, "vector": {}, "hybrid": {}}
    weights = {"bm25": 0.0, "vector": 1.0, "hybrid": 0.5}
    with llmdsdb.open(db_path, readonly=True) as db:
        ident = db.config["embedder"]
        t1 = time.perf_counter()
        for mode, w in weights.items():
            for qid, q in zip(sf.query_ids, sf.queries):
                runs[mode][qid] = [h.id for h in db.search(q, top_k=10, fusion_weight=w)]
        query_s = time.perf_counter() - t1
        count = db.count()
    qrels = {q: sf.qrels[q] for q in sf.query_ids}
    ndcg = {mode: mean_ndcg(r, qrels) for mode, r in runs.items()}

    same = 0
    for qid, q in list(zip(sf.query_ids, sf.queries))[:args.cli_checks]:
        out = subprocess.run(llmdsdb_cli + ["query", str(db_path), q, "--json"], check=True,
                             env=env, capture_output=True, text=True).stdout
        res = json.loads(out)
        same += [r["id"] for r in res["results"]] == runs["hybrid"][qid] \
            and res["mode"] == "hybrid"
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)

    rows = [{"embedder": args.embedder, "documents": count,
             "ingest s (CLI, embedding included)": round(ingest_s, 1),
             "ingest docs/s": round(count / ingest_s, 1),
             "nDCG@10 bm25": round(ndcg["bm25"], 4), "nDCG@10 vector": round(ndcg["vector"], 4),
             "nDCG@10 hybrid (0.5)": round(ndcg["hybrid"], 4),
             "queries/s (3 x 300, query embedding included)": round(900 / query_s, 1),
             f"CLI == API hybrid hits ({args.cli_checks} queries)": f"{same}/{args.cli_checks}"}]
    body = (f"SciFact (5,183 docs, 300 test queries) from raw text: `llmdsdb ingest "
            f"--embedder {args.embedder}`, then text-only queries in a fresh process; the "
            f"stored embedder identity is {json.dumps(ident)}.\n\n" + table(rows))
    cmd = "python tools/bench/bench_embed.py" + (
        f" --embedder {args.embedder}" if args.embedder != "minilm" else "")
    path = write_result(f"bench_embed_{args.embedder}", cmd, body, {"rows": rows, "ident": ident})
    print(path.read_text())


if __name__ == "__main__":
    main()
