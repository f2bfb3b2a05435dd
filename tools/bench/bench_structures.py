"""Throughput of the core structures against the libraries people would use instead.

* IndexedHeap vs ``heapq`` with lazy deletion (the recipe of the heapq docs), ``pqdict``
  and ``heapdict``: push, pop, decrease_key and a scheduler-like mix, at 10^3..10^5 entries.
* TokenLRU vs ``cachetools.LRUCache(getsizeof=len)`` and a hand-written OrderedDict LRU
  with size accounting: put, get, and a cache-aside mix on a Zipf key stream.
* CountMinSketch: add/estimate per item and vectorised (numpy int64 array, str list), with
  ``collections.Counter`` as the exact reference; observed over-estimate vs the bound ε·N on
  a Zipf stream (share of keys within ε·N, which should be >= 1 - δ).
* KVCache (structures-2's tools/bench/bench_kv_cache.py, when present): pages used with
  shared system prompts vs. without sharing.

Every figure is the median of >= 5 timed runs after one warm-up run, the implementations
interleaved within each run so that they share the machine's noise; ratios are ours / peer
in the same run. Run from the repository root::

    python tools/bench/bench_structures.py            # full (a few minutes)
    python tools/bench/bench_structures.py --quick    # smaller sizes
"""

from __future__ import annotations

import argparse
import heapq
import importlib.util
import itertools
import math
import random
import statistics
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from llmdsdb.cmsketch import CountMinSketch  # noqa: E402
from llmdsdb.indexed_heap import IndexedHeap  # noqa: E402
from llmdsdb.token_lru import TokenLRU  # noqa: E402

try:
    import pqdict as _pqdict
except ImportError:  # pragma: no cover
    _pqdict = None
try:
    import heapdict as _heapdict
except ImportError:  # pragma: no cover
    _heapdict = None
try:
    import cachetools as _cachetools
except ImportError:  # pragma: no cover
    _cachetools = None


CLOCK = time.process_time


def bench(
    impls: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]], repeat: int,
    inner: int = 1,
) -> dict[str, float]:
    """Median seconds of ``run(setup())`` per implementation (setup not timed), after one
    warm-up; implementations interleaved within each of ``repeat`` rounds. Each timed run
    sums ``inner`` setup+run pairs (so small sizes still run for tens of milliseconds) and
    is divided by ``inner``. Timed with the process CPU clock: on the shared machine, time
    spent descheduled while other processes run is not charged to any implementation."""
    times: dict[str, list[float]] = {name: [] for name in impls}
    for rnd in range(repeat + 1):
        order = list(impls.items())
        if rnd % 2:
            order.reverse()  # no implementation always runs right after another
        for name, (setup, run) in order:
            dt = 0.0
            for _ in range(inner):
                state = setup()
                t0 = CLOCK()
                run(state)
                dt += CLOCK() - t0
            if rnd:
                times[name].append(dt / inner)
    return {name: statistics.median(ts) for name, ts in times.items()}


# --- heaps ----------------------------------------------------------------------------------


class LazyHeapq:
    """heapq with lazy deletion, as in the heapq documentation's priority-queue recipe."""

    REMOVED = object()

    def __init__(self) -> None:
        self.heap: list[list[Any]] = []
        self.entry: dict[Any, list[Any]] = {}
        self.counter = itertools.count()

    def push(self, key: Any, score: float) -> None:
        e = [score, next(self.counter), key]
        self.entry[key] = e
        heapq.heappush(self.heap, e)

    def decrease_key(self, key: Any, score: float) -> None:
        self.entry.pop(key)[-1] = self.REMOVED
        e = [score, next(self.counter), key]
        self.entry[key] = e
        heapq.heappush(self.heap, e)

    def pop(self) -> tuple[float, Any]:
        heap = self.heap
        while heap:
            score, _, key = heapq.heappop(heap)
            if key is not self.REMOVED:
                del self.entry[key]
                return score, key
        raise KeyError("pop from an empty priority queue")


def heap_impls() -> dict[str, dict[str, Callable[..., Any]]]:
    """name -> {new, push, pop, decrease} using each library's fastest idiomatic calls."""
    impls: dict[str, dict[str, Callable[..., Any]]] = {
        "IndexedHeap": {
            "new": IndexedHeap,
            "push": lambda h: h.push,
            "pop": lambda h: h.pop,
            "decrease": lambda h: h.decrease_key,
        },
        "heapq+lazy": {
            "new": LazyHeapq,
            "push": lambda h: h.push,
            "pop": lambda h: h.pop,
            "decrease": lambda h: h.decrease_key,
        },
    }
    if _pqdict is not None:
        impls["pqdict"] = {
            "new": _pqdict.pqdict,
            "push": lambda h: h.additem,
            "pop": lambda h: h.popitem,
            "decrease": lambda h: h.updateitem,
        }
    if _heapdict is not None:
        impls["heapdict"] = {
            "new": _heapdict.heapdict,
            "push": lambda h: h.__setitem__,
            "pop": lambda h: h.popitem,
            "decrease": lambda h: h.__setitem__,
        }
    return impls


def bench_heaps(sizes: list[int], repeat: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rng = random.Random(42)
    impls = heap_impls()
    rows: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    for n in sizes:
        scores = [rng.random() for _ in range(n)]
        dec_keys = [rng.randrange(n) for _ in range(n)]
        # mixed: 40% push of a new key, 30% pop, 30% decrease_key of a live key
        mix_ops = [rng.random() for _ in range(n)]

        def filled(impl: dict[str, Callable[..., Any]]) -> Callable[[], Any]:
            def setup() -> Any:
                h = impl["new"]()
                push = impl["push"](h)
                for k in range(n):
                    push(k, scores[k])
                return h

            return setup

        workloads: dict[str, dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]]] = {}
        for op in ("push", "pop", "decrease_key", "mixed"):
            workloads[op] = {}
        for name, impl in impls.items():

            def run_push(h: Any, impl: dict = impl) -> None:
                push = impl["push"](h)
                for k in range(n):
                    push(k, scores[k])

            def run_pop(h: Any, impl: dict = impl) -> None:
                pop = impl["pop"](h)
                for _ in range(n):
                    pop()

            def run_dec(h: Any, impl: dict = impl) -> None:
                dec = impl["decrease"](h)
                cur = list(scores)
                for k in dec_keys:
                    s = cur[k] - 0.01
                    cur[k] = s
                    dec(k, s)

            def run_mixed(h: Any, impl: dict = impl, name: str = name) -> None:
                push, pop, dec = impl["push"](h), impl["pop"](h), impl["decrease"](h)
                live = list(range(n))  # keys of the filled heap; pops remove arbitrary ones
                cur = dict(zip(range(n), scores))
                nxt = n
                for u in mix_ops:
                    if u < 0.4:
                        cur[nxt] = u
                        push(nxt, u)
                        live.append(nxt)
                        nxt += 1
                    elif u < 0.7:
                        r = pop()
                        key = r[1] if name in ("IndexedHeap", "heapq+lazy") else r[0]
                        del cur[key]
                    else:
                        k = live[int(u * 7919) % len(live)]
                        if k in cur:
                            s = cur[k] - 0.01
                            cur[k] = s
                            dec(k, s)

            new = impl["new"]
            workloads["push"][name] = (new, run_push)
            workloads["pop"][name] = (filled(impl), run_pop)
            workloads["decrease_key"][name] = (filled(impl), run_dec)
            workloads["mixed"][name] = (filled(impl), run_mixed)
        for op, w in workloads.items():
            med = bench(w, repeat, inner=max(1, 30_000 // n))
            ops = {name: n / t for name, t in med.items()}
            row: dict[str, Any] = {"n": f"10^{round(math.log10(n))}", "op": op}
            for name in impls:
                row[name] = ops[name]
            for peer in impls:
                if peer != "IndexedHeap":
                    row[f"ours/{peer}"] = ops["IndexedHeap"] / ops[peer]
            rows.append(row)
            data[f"{op}@{n}"] = ops
            print(f"heap n={n} {op}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in ops.items()),
                  flush=True)
    return rows, data


# --- LRU caches -----------------------------------------------------------------------------


class OrderedDictLRU:
    """The textbook OrderedDict LRU with a size budget (what people write by hand)."""

    def __init__(self, budget: int, sizeof: Callable[[Any], int]) -> None:
        self.d: OrderedDict[Any, Any] = OrderedDict()
        self.size: dict[Any, int] = {}
        self.budget = budget
        self.total = 0
        self.sizeof = sizeof

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            v = self.d[key]
        except KeyError:
            return default
        self.d.move_to_end(key)
        return v

    def put(self, key: Any, value: Any) -> None:
        s = self.sizeof(value)
        if key in self.d:
            self.total -= self.size[key]
            self.d.move_to_end(key)
        self.d[key] = value
        self.size[key] = s
        self.total += s
        while self.total > self.budget:
            k, _ = self.d.popitem(last=False)
            self.total -= self.size.pop(k)


def bench_lru(n_ops: int, repeat: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rng = np.random.default_rng(7)
    universe = 100_000
    keys = ((rng.zipf(1.1, n_ops) - 1) % universe).tolist()
    size_of = [int(s) for s in rng.integers(16, 2048, universe)]
    values = {k: bytes(size_of[k]) for k in set(keys)}
    pairs = [(k, values[k]) for k in keys]
    # budget: roughly a tenth of the distinct working set's bytes
    budget = sum(len(v) for v in values.values()) // 10

    def peers() -> dict[str, tuple[Callable[[], Any], Callable[[Any], Callable], Callable]]:
        out = {
            "TokenLRU": (lambda: TokenLRU(budget, len), lambda c: c.put, lambda c: c.get),
            "OrderedDict LRU": (
                lambda: OrderedDictLRU(budget, len), lambda c: c.put, lambda c: c.get,
            ),
        }
        if _cachetools is not None:
            out["cachetools.LRUCache"] = (
                lambda: _cachetools.LRUCache(budget, getsizeof=len),
                lambda c: c.__setitem__,
                lambda c: c.get,
            )
        return out

    impls = peers()
    workloads: dict[str, dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]]] = {
        "put": {}, "get": {}, "get-or-put": {},
    }
    for name, (new, put_of, get_of) in impls.items():

        def warm(new: Callable = new, put_of: Callable = put_of) -> Any:
            c = new()
            put = put_of(c)
            for k, v in pairs:
                put(k, v)
            return c

        def run_put(c: Any, put_of: Callable = put_of) -> None:
            put = put_of(c)
            for k, v in pairs:
                put(k, v)

        def run_get(c: Any, get_of: Callable = get_of) -> None:
            get = get_of(c)
            for k in keys:
                get(k)

        def run_aside(c: Any, put_of: Callable = put_of, get_of: Callable = get_of) -> None:
            get, put = get_of(c), put_of(c)
            for k, v in pairs:
                if get(k) is None:
                    put(k, v)

        workloads["put"][name] = (new, run_put)
        workloads["get"][name] = (warm, run_get)
        workloads["get-or-put"][name] = (new, run_aside)
    rows: list[dict[str, Any]] = []
    data: dict[str, Any] = {"budget_bytes": budget, "n_ops": n_ops, "distinct": len(values)}
    probe = TokenLRU(budget, len)
    for k, v in pairs:
        if probe.get(k) is None:
            probe.put(k, v)
    data["hit_rate_get_or_put"] = probe.stats().hit_rate
    for op, w in workloads.items():
        med = bench(w, repeat)
        ops = {name: n_ops / t for name, t in med.items()}
        row: dict[str, Any] = {"op": op}
        row.update(ops)
        for peer in impls:
            if peer != "TokenLRU":
                row[f"ours/{peer}"] = ops["TokenLRU"] / ops[peer]
        rows.append(row)
        data[op] = ops
        print(f"lru {op}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in ops.items()), flush=True)
    return rows, data


# --- Count-Min sketch -----------------------------------------------------------------------


def bench_cms(
    n_scalar: int, n_bulk: int, n_error: int, repeat: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    rng = np.random.default_rng(11)
    ints_scalar = rng.integers(0, 10**9, n_scalar).tolist()
    strs_scalar = [f"term-{i}" for i in ints_scalar]
    ints_bulk = rng.integers(0, 10**9, n_bulk)
    strs_bulk = [f"term-{i}" for i in ints_bulk[: n_bulk // 4].tolist()]

    def loop_add(items: list[Any]) -> Callable[[Any], None]:
        def run(s: Any) -> None:
            add = s.add
            for k in items:
                add(k)

        return run

    def loop_est(items: list[Any]) -> Callable[[Any], None]:
        def run(s: Any) -> None:
            est = s.estimate
            for k in items:
                est(k)

        return run

    def counter_add(items: Any) -> Callable[[Any], None]:
        return lambda c: c.update(items)

    new = CountMinSketch
    thr: list[dict[str, Any]] = []
    cases: list[tuple[str, int, dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]]]] = [
        ("add, per item, int keys", n_scalar,
         {"CountMinSketch": (new, loop_add(ints_scalar)),
          "Counter (exact)": (Counter, counter_add(ints_scalar))}),
        ("add, per item, str keys", n_scalar,
         {"CountMinSketch": (new, loop_add(strs_scalar)),
          "Counter (exact)": (Counter, counter_add(strs_scalar))}),
        ("estimate, per item, int keys", n_scalar,
         {"CountMinSketch": (new, loop_est(ints_scalar))}),
        ("estimate, per item, str keys", n_scalar,
         {"CountMinSketch": (new, loop_est(strs_scalar))}),
        ("add_many, int64 array", n_bulk,
         {"CountMinSketch": (new, lambda s: s.add_many(ints_bulk)),
          "CountMinSketch conservative": (lambda: CountMinSketch(conservative=True),
                                          lambda s: s.add_many(ints_bulk)),
          "Counter (exact)": (Counter, counter_add(ints_bulk.tolist()))}),
        ("estimate_many, int64 array", n_bulk,
         {"CountMinSketch": (new, lambda s: s.estimate_many(ints_bulk))}),
        ("add_many, str list", len(strs_bulk),
         {"CountMinSketch": (new, lambda s: s.add_many(strs_bulk)),
          "Counter (exact)": (Counter, counter_add(strs_bulk))}),
        ("estimate_many, str list", len(strs_bulk),
         {"CountMinSketch": (new, lambda s: s.estimate_many(strs_bulk))}),
    ]
    data: dict[str, Any] = {}
    for label, n, impls in cases:
        med = bench(impls, repeat)
        row: dict[str, Any] = {"operation": label, "n": n}
        for name, t in med.items():
            row[f"{name} items/s"] = n / t
        thr.append(row)
        data[label] = {name: n / t for name, t in med.items()}
        print(f"cms {label}: " + ", ".join(f"{k} {n / v:,.0f}/s" for k, v in med.items()),
              flush=True)

    # observed error vs eps*N on a Zipf stream, against an exact Counter
    err_rows: list[dict[str, Any]] = []
    for alpha in (1.1, 1.5):
        stream = rng.zipf(alpha, n_error) % 1_000_000
        truth = Counter(stream.tolist())
        keys = np.fromiter(truth.keys(), dtype=np.int64, count=len(truth))
        exact = np.fromiter(truth.values(), dtype=np.int64, count=len(truth))
        for width, depth, cu in ((2048, 4, False), (2048, 4, True), (272, 5, False)):
            s = CountMinSketch(width, depth, conservative=cu)
            if cu:
                for chunk in np.array_split(stream, 100):  # CU is applied per batch
                    s.add_many(chunk)
            else:
                s.add_many(stream)
            over = s.estimate_many(keys) - exact
            bound = s.get_error_bound()
            share = float(np.mean(over <= bound))
            err_rows.append({
                "zipf a": alpha, "width x depth": f"{width}x{depth}",
                "conservative": cu, "N": n_error, "distinct": len(truth),
                "eps*N": bound, "mean over": float(over.mean()), "max over": int(over.max()),
                "under-counts": int((over < 0).sum()), "share within eps*N": share,
                "1-delta": 1 - s.delta, "holds": share >= 1 - s.delta and (over >= 0).all(),
            })
    data["error"] = err_rows
    return thr, err_rows, data


# --- main -----------------------------------------------------------------------------------


def kv_section(quick: bool) -> tuple[str, dict[str, Any]] | None:
    path = Path(__file__).resolve().parent / "bench_kv_cache.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_kv_cache", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    md, data = mod.run(quick)
    return md, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, same repeats")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per figure (>= 5)")
    args = ap.parse_args()
    repeat = max(5, args.repeat)
    command = "python tools/bench/bench_structures.py" + (" --quick" if args.quick else "")
    t_start = time.perf_counter()

    heap_sizes = [10**3, 10**4] if args.quick else [10**3, 10**4, 10**5]
    heap_rows, heap_data = bench_heaps(heap_sizes, repeat)
    lru_rows, lru_data = bench_lru(10**5 if args.quick else 10**6, repeat)
    cms_thr, cms_err, cms_data = bench_cms(
        10**4 if args.quick else 10**5, 10**5 if args.quick else 10**6,
        10**5 if args.quick else 10**6, repeat,
    )
    kv = kv_section(args.quick)

    # acceptance lines
    acc: list[dict[str, Any]] = []
    big = f"10^{round(math.log10(heap_sizes[-1]))}"
    for r in heap_rows:
        if r["op"] in ("push", "pop", "decrease_key") and "ours/pqdict" in r:
            acc.append({"line": f"IndexedHeap {r['op']} >= pqdict (n={r['n']})",
                        "measured": f"{r['IndexedHeap']:,.0f} vs {r['pqdict']:,.0f} ops/s",
                        "ratio": r["ours/pqdict"], "holds": r["ours/pqdict"] >= 1.0})
    for r in lru_rows:
        if r["op"] in ("put", "get") and "ours/cachetools.LRUCache" in r:
            acc.append({"line": f"TokenLRU {r['op']} >= cachetools.LRUCache(getsizeof=len)",
                        "measured": f"{r['TokenLRU']:,.0f} vs {r['cachetools.LRUCache']:,.0f}"
                                    " ops/s",
                        "ratio": r["ours/cachetools.LRUCache"],
                        "holds": r["ours/cachetools.LRUCache"] >= 1.0})
    vec = cms_data["add_many, int64 array"]["CountMinSketch"]
    acc.append({"line": "CountMinSketch add_many >= 1,000,000 items/s (int64 array)",
                "measured": f"{vec:,.0f} items/s", "ratio": vec / 1e6, "holds": vec >= 1e6})
    for r in cms_err:
        acc.append({"line": f"share within eps*N >= 1-delta (zipf {r['zipf a']}, "
                            f"{r['width x depth']}{', CU' if r['conservative'] else ''})",
                    "measured": f"{r['share within eps*N']:.5f} (1-delta={r['1-delta']:.5f},"
                                f" under-counts={r['under-counts']})",
                    "ratio": r["share within eps*N"] / r["1-delta"], "holds": r["holds"]})

    heap_cols = ["n", "op"] + list(heap_impls()) + [
        c for c in heap_rows[0] if c.startswith("ours/")]
    body = [
        "Ops/s are medians of "
        f"{repeat} timed runs after a warm-up; implementations interleaved in each run; ratio ="
        " ours / peer in the same run. The machine is shared (2 cores, several processes),",
        "so runs are timed with the process CPU clock (time.process_time) and small sizes are",
        "repeated inside a run; absolute numbers still vary, the ratios are the figures to read.",
        "",
        "## Acceptance lines (issue 2)",
        "",
        common.table(acc, ["line", "measured", "ratio", "holds"]),
        "## IndexedHeap vs heapq + lazy deletion, pqdict, heapdict (ops/s)",
        "",
        f"push: n pushes into an empty heap; pop: n pops from a heap of n; decrease_key: n "
        f"decreases (random keys) in a heap of n; mixed: n ops (40% push, 30% pop, 30% "
        f"decrease_key) on a heap of n. Largest size: {big}.",
        "",
        common.table(heap_rows, heap_cols),
        "## TokenLRU vs cachetools.LRUCache(getsizeof=len) and an OrderedDict LRU (ops/s)",
        "",
        f"{lru_data['n_ops']:,} ops on Zipf(1.1) keys over 100,000 ids, values bytes of 16..2047"
        f" bytes, budget {lru_data['budget_bytes']:,} bytes (~1/10 of the "
        f"{lru_data['distinct']:,} distinct values). put: every op a put; get: every op a get on"
        f" a warmed cache; get-or-put: cache-aside (hit rate "
        f"{lru_data['hit_rate_get_or_put']:.3f}).",
        "",
        common.table(lru_rows),
        "## CountMinSketch throughput (items/s; default 2048 x 4)",
        "",
        "`Counter (exact)` is collections.Counter.update on the same keys: the exact, unbounded-"
        "memory reference.",
        "",
        common.table(cms_thr),
        "## CountMinSketch observed error vs eps*N against an exact Counter",
        "",
        "over = estimate - true count over every distinct key; eps = e/width, delta = "
        "e^-depth; CU rows add the stream in 100 batches (conservative update is applied per "
        "batch). 272 x 5 is `from_error(0.01, 0.01)`.",
        "",
        common.table(cms_err),
    ]
    data: dict[str, Any] = {"heap": heap_data, "lru": lru_data, "cms": cms_data,
                            "acceptance": acc}
    if kv is not None:
        body += ["## KVCache (from tools/bench/bench_kv_cache.py)", "", kv[0].strip(), ""]
        data["kv_cache"] = kv[1]
    else:
        body += ["## KVCache", "", "tools/bench/bench_kv_cache.py was not present.", ""]
    body.append(f"Total run time: {time.perf_counter() - t_start:.0f} s.")
    path = common.write_result(
        "bench_structures_quick" if args.quick else "bench_structures", command,
        "\n".join(body), data,
    )
    print(f"wrote {path}")
    for a in acc:
        print(f"{'OK ' if a['holds'] else 'NO '} {a['line']}: {a['measured']} "
              f"(ratio {a['ratio']:.2f})")


if __name__ == "__main__":
    main()
