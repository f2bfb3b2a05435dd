"""KVCache: pages used with shared system prompts vs. without sharing, and ops/s.

Workloads (token ids are random ints; sizes in tokens):

* *shared system prompt*: N sequences = one common 1,024-token system prompt + a random user
  turn of 32..512 tokens, attached with ``prefix_tokens=system``. Pages used with
  ``enable_prefix_sharing=True`` vs ``False`` (the in-run baseline), at page sizes 16 (vLLM's
  block size) and 512 (the constructor default).
* *multi-turn chat, automatic dedupe*: C conversations of T turns; every turn re-attaches the
  whole history as a new sequence (a stateless server), with no ``prefix_tokens`` at all, so
  any sharing comes from the chain-hash deduplication of identical full pages.
* *ops/s*: attach, get and detach of the shared-prompt sequences, sharing on vs off, and a
  plain ``dict`` of token lists as the do-nothing peer (no pages, no sharing, no
  accounting); ``append`` of single decode tokens.

Each timing is the median of 5 timed runs after one warm-up (``time.process_time``).
Run from the repository root::

    python tools/bench/bench_kv_cache.py            # 1,000 sequences
    python tools/bench/bench_kv_cache.py --quick    # 200 sequences
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from llmdsdb.kv_cache import KVCache  # noqa: E402

CLOCK = time.process_time
SYSTEM_LEN = 1024
VOCAB = 32_000


def _workload(n: int, seed: int = 0) -> tuple[list[int], list[list[int]]]:
    rng = random.Random(seed)
    system = [rng.randrange(VOCAB) for _ in range(SYSTEM_LEN)]
    turns = [[rng.randrange(VOCAB) for _ in range(rng.randint(32, 512))] for _ in range(n)]
    return system, turns


def _pages_rows(system: list[int], turns: list[list[int]]) -> list[dict[str, Any]]:
    rows = []
    for page_size in (16, 512):
        per: dict[bool, dict[str, Any]] = {}
        for sharing in (False, True):
            kv = KVCache(page_size=page_size, max_pages=10**7, enable_prefix_sharing=sharing)
            for i, turn in enumerate(turns):
                kv.attach(i, turn, prefix_tokens=system)
            per[sharing] = kv.stats()
        off, on = per[False], per[True]
        rows.append({
            "page_size": page_size,
            "sequences": len(turns),
            "tokens_stored": on["tokens_stored"],
            "pages (no sharing)": off["pages_used"],
            "pages (sharing)": on["pages_used"],
            "pages ratio off/on": off["pages_used"] / on["pages_used"],
            "shared_pages": on["shared_pages"],
            "dedup_ratio": on["dedup_ratio"],
            "utilization (sharing)": on["utilization"],
            "hit_rate": on["hit_rate"],
        })
    return rows


def _chat_rows(convs: int, turns: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    histories = []
    for _ in range(convs):
        h: list[list[int]] = []
        cur: list[int] = []
        for _t in range(turns):
            cur = cur + [rng.randrange(VOCAB) for _ in range(rng.randint(64, 256))]
            h.append(cur)
        histories.append(h)
    rows = []
    for page_size in (16, 512):
        per = {}
        for sharing in (False, True):
            kv = KVCache(page_size=page_size, max_pages=10**7, enable_prefix_sharing=sharing)
            sid = 0
            for h in histories:
                for seq in h:
                    kv.attach(sid, seq)
                    sid += 1
            per[sharing] = kv.stats()
        off, on = per[False], per[True]
        rows.append({
            "page_size": page_size,
            "conversations x turns": f"{convs} x {turns}",
            "tokens_stored": on["tokens_stored"],
            "pages (no sharing)": off["pages_used"],
            "pages (sharing)": on["pages_used"],
            "pages ratio off/on": off["pages_used"] / on["pages_used"],
            "dedup_ratio": on["dedup_ratio"],
            "hit_rate": on["hit_rate"],
        })
    return rows


class _DictStore:
    """The do-nothing peer: a dict of token lists."""

    def __init__(self) -> None:
        self.d: dict[int, list[int]] = {}

    def attach(self, seq_id: int, kv_tokens: list, prefix_tokens: list | None = None) -> None:
        self.d[seq_id] = (prefix_tokens or []) + list(kv_tokens)

    def get(self, seq_id: int) -> list | None:
        s = self.d.get(seq_id)
        return None if s is None else list(s)

    def detach(self, seq_id: int) -> None:
        del self.d[seq_id]


def _ops_rows(system, turns, repeat: int) -> list[dict[str, Any]]:
    n = len(turns)
    makers = {
        "KVCache sharing on (page 16)": lambda: KVCache(16, 10**7, True),
        "KVCache sharing off (page 16)": lambda: KVCache(16, 10**7, False),
        "KVCache sharing on (page 512)": lambda: KVCache(512, 10**7, True),
        "dict of lists (no paging)": _DictStore,
    }
    times: dict[str, dict[str, list[float]]] = {k: {"attach": [], "get": [], "detach": []}
                                                for k in makers}
    for run in range(repeat + 1):  # run 0 is the warm-up
        for name, make in makers.items():  # interleaved: the implementations share the noise
            store = make()
            t0 = CLOCK()
            for i, turn in enumerate(turns):
                store.attach(i, turn, prefix_tokens=system)
            t1 = CLOCK()
            for i in range(n):
                store.get(i)
            t2 = CLOCK()
            for i in range(n):
                store.detach(i)
            t3 = CLOCK()
            if run:
                times[name]["attach"].append(t1 - t0)
                times[name]["get"].append(t2 - t1)
                times[name]["detach"].append(t3 - t2)
    rows = []
    base = {op: statistics.median(times["dict of lists (no paging)"][op]) for op in times[
        "dict of lists (no paging)"]}
    for name, ops in times.items():
        row: dict[str, Any] = {"implementation": name}
        for op, samples in ops.items():
            med = statistics.median(samples)
            row[f"{op} ops/s"] = n / med if med else float("inf")
        row["attach time / dict"] = statistics.median(ops["attach"]) / base["attach"]
        row["get time / dict"] = statistics.median(ops["get"]) / base["get"]
        rows.append(row)
    return rows


def _append_row(system, turns, repeat: int) -> dict[str, Any]:
    """Decode: append one token at a time to every sequence, 64 steps."""
    n = min(len(turns), 200)
    steps = 64
    samples = []
    for run in range(repeat + 1):
        kv = KVCache(16, 10**7, True)
        for i in range(n):
            kv.attach(i, turns[i], prefix_tokens=system)
        t0 = CLOCK()
        for step in range(steps):
            tok = [step]
            for i in range(n):
                kv.append(i, tok)
        dt = CLOCK() - t0
        if run:
            samples.append(dt)
    med = statistics.median(samples)
    return {"operation": "append 1 token (page 16, sharing on)", "sequences": n,
            "appends": n * steps, "ops/s": n * steps / med}


def run(quick: bool) -> tuple[str, dict[str, Any]]:
    """Run every workload; return (markdown section, data)."""
    n = 200 if quick else 1000
    repeat = 5
    t_start = time.perf_counter()
    system, turns = _workload(n)
    pages = _pages_rows(system, turns)
    chat = _chat_rows(30 if quick else 100, 5)
    ops = _ops_rows(system, turns, repeat)
    app = _append_row(system, turns, repeat)
    md = [
        f"### Pages used: {n} sequences sharing a {SYSTEM_LEN}-token system prompt",
        "",
        ("Each sequence = the same system prompt (`prefix_tokens`) + a random user turn of "
         "32..512 tokens. Baseline: the same cache with `enable_prefix_sharing=False`."),
        "",
        common.table(pages),
        "### Pages used: multi-turn chat, automatic dedupe only",
        "",
        ("Every turn re-attaches the whole conversation so far as a new sequence, without "
         "`prefix_tokens`; sharing comes only from identical full pages (chain hash)."),
        "",
        common.table(chat),
        f"### Throughput: attach / get / detach of the {n} shared-prompt sequences",
        "",
        (f"Median of {repeat} runs after a warm-up, implementations interleaved in each run "
         "(`time.process_time`). A sequence is ~1,300 tokens; `dict of lists` is the "
         "do-nothing peer (it copies the tokens and nothing else)."),
        "",
        common.table(ops),
        common.table([app]),
        f"Section run time: {time.perf_counter() - t_start:.0f} s.",
        "",
    ]
    data = {"sequences": n, "system_len": SYSTEM_LEN, "pages": pages, "chat": chat,
            "ops": ops, "append": app, "repeat": repeat}
    return "\n".join(md), data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 sequences instead of 1,000")
    args = ap.parse_args()
    md, data = run(args.quick)
    command = "python tools/bench/bench_kv_cache.py" + (" --quick" if args.quick else "")
    name = "bench_kv_cache_quick" if args.quick else "bench_kv_cache"
    path = common.write_result(name, command, md, data)
    print(md)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
