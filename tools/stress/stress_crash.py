"""kill -9 during ingest, hundreds of trials: three kill strategies, two ingest paths, the
prefix oracle, ``check()`` and resume-to-the-same-state after every trial (RELIABILITY.md
§4.1). The machinery and the exact checks are in :mod:`crashkit` (beside this file).

Each round picks a fresh workload seed; per strategy the trials alternate between the Python
API workload and ``llmdsdb ingest`` (forked from the zygote); a third of the ``time``
trials of the ``cli`` workload run the command as a new process (``python -m llmdsdb
ingest``), killed after a random delay that includes the interpreter's start.

Usage (from the repository root)::

    nice -n 10 python tools/stress/stress_crash.py                 # 3 x 200 = 600 trials
    python tools/stress/stress_crash.py --trials 20 --seeds 2      # a quick look

Exit status 0 when no trial had a violation. ``--json FILE`` keeps every trial's record.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crashkit
import iotrace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200, help="trials per strategy (default 200)")
    ap.add_argument("--seeds", type=int, default=10, help="workload seeds (each workload kind)")
    ap.add_argument("--steps", type=int, default=10, help="steps (commits) per workload")
    ap.add_argument("--batch", type=int, default=5, help="records per cli batch")
    ap.add_argument("--dir", default=None, help="work directory (default: a new temp dir)")
    ap.add_argument("--json", default=None, help="write every trial's record here")
    ap.add_argument("--seed", type=int, default=2026, help="seed of the kill points")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)

    base = Path(args.dir or tempfile.mkdtemp(prefix="llmdsdb-crash-"))
    base.mkdir(parents=True, exist_ok=True)
    so = iotrace.build()
    rnd = random.Random(args.seed)
    t0 = time.monotonic()
    trials: list[crashkit.Trial] = []
    with crashkit.Zygote(so) as zyg:
        refs: dict[str, list[crashkit.Reference]] = {"api": [], "cli": []}
        for kind, have in refs.items():
            for s in range(args.seeds):
                w = crashkit.Workload(kind=kind, seed=s, steps=args.steps, batch=args.batch)
                ref = crashkit.reference(zyg, w, base / f"ref-{kind}-{s}")
                if kind == "cli":
                    ref.exec_elapsed_s = crashkit.measure_exec(ref, base / f"ref-{kind}-{s}")
                have.append(ref)
        print(f"references: {2 * args.seeds} workloads, {time.monotonic() - t0:.0f} s; shim "
              f"{'preloaded' if zyg.preloaded else 'missing (no commit-inside kills)'}",
              flush=True)
        n = 0
        for strategy in crashkit.STRATEGIES:
            for i in range(args.trials):
                kind = ("api", "cli")[i % 2]
                ref = refs[kind][(i // 2) % args.seeds]
                exec_cli = kind == "cli" and strategy == "time" and i % 6 == 1
                work = base / f"t{n}"
                trial = crashkit.run_trial(zyg, ref, strategy, rnd, work, "trial",
                                           exec_cli=exec_cli)
                trials.append(trial)
                if trial.violations:
                    print(f"VIOLATION trial {n} ({trial.workload}, {trial.kill}): "
                          f"{trial.violations}", flush=True)
                    keep = base / f"violation-{n}"
                    shutil.copytree(work, keep, dirs_exist_ok=True)
                shutil.rmtree(work, ignore_errors=True)
                n += 1
                if n % 50 == 0:
                    bad = sum(1 for t in trials if t.violations)
                    print(f"{n} trials, {bad} with violations, {time.monotonic() - t0:.0f} s",
                          flush=True)
    elapsed = time.monotonic() - t0
    print(report(trials, elapsed, args))
    if args.json:
        Path(args.json).write_text(json.dumps([t.__dict__ for t in trials], indent=1))
    if not args.keep and not any(t.violations for t in trials):
        shutil.rmtree(base, ignore_errors=True)
    return 1 if any(t.violations for t in trials) else 0


def report(trials: list[crashkit.Trial], elapsed: float, args: argparse.Namespace) -> str:
    """A markdown table: one row per workload and kill point."""
    rows: dict[tuple[str, str], list[crashkit.Trial]] = collections.defaultdict(list)
    for t in trials:
        rows[(t.workload, t.kill["at"])].append(t)
    out = [("| workload | kill point | trials | killed | k = acked + 1 | resumed to the "
            "reference state | violations |"), "|---|---|---|---|---|---|---|"]
    for (wl, at), ts in sorted(rows.items()):
        out.append(f"| {wl} | {at} | {len(ts)} | {sum(t.killed for t in ts)} | "
                   f"{sum(1 for t in ts if t.k is not None and t.k == t.acked + 1)} | "
                   f"{sum(1 for t in ts if t.resumed_ok)} | "
                   f"{sum(1 for t in ts if t.violations)} |")
    n = len(trials)
    bad = sum(1 for t in trials if t.violations)
    out.append("")
    out.append(f"{n} trials ({args.trials} per strategy, {args.seeds} seeds x 2 workloads, "
               f"{args.steps} steps each) in {elapsed:.0f} s: {bad} with violations; "
               f"{sum(t.killed for t in trials)} killed mid-run; 0 failures in {n} bounds the "
               f"failure rate below {100 * crashkit.rule_of_three(n):.2f}% (95%, rule of three)"
               if not bad else f"{n} trials: {bad} WITH VIOLATIONS")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
