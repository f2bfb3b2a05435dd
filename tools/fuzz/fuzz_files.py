"""File-level fuzzing of a database (RELIABILITY.md §4.5 "bit-flipped byte", §4.7 "file-level
fuzz"): flip one random byte of a small database's ``data.mdb`` per trial, then open, check,
read every document and run text and vector queries in a child process.

Each trial must end in one of: a typed llmdsdb error, ``check()`` reporting a problem, or
answers identical to the undamaged database's. A child killed by a signal, another
exception, or different answers with a clean ``check()`` (a silently wrong answer) is a
failure. The unit suite runs 30 such trials (tests/engine/test_fault_matrix.py, test_f08).

Usage (repository root, venv active)::

    nice -n 10 python tools/fuzz/fuzz_files.py --trials 1000 --seed 1 \\
        --out tools/fuzz/results/files.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "engine"), str(ROOT)]

from test_fault_matrix import _OPEN_SCAN, flipped_copies, make_db


def run_batch(dirs: list[str]) -> tuple[list[dict], int, str]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'engine'}")
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(_OPEN_SCAN.format(dirs=dirs))],
                       capture_output=True, text=True, env=env, timeout=3600, check=False)
    recs = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else []
    return recs, p.returncode, p.stderr[-2000:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=50, help="trials per child process")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0 = time.monotonic()
    counts = {"typed error": 0, "check reports": 0, "harmless": 0, "silent wrong": 0,
              "crash": 0}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="llmdsdb-filefuzz.") as tmp:
        src = Path(tmp) / "src"
        make_db(src, 4)
        data = (src / "data.mdb").read_bytes()
        clean, rc, err = run_batch([str(src)])
        assert rc == 0 and clean[0]["problems"] == [], err
        keys = ("count", "docs", "hits", "vec")
        done = 0
        while done < args.trials:
            n = min(args.batch, args.trials - done)
            paths = [Path(tmp) / f"t{done + i}" for i in range(n)]
            flips = flipped_copies(data, rng, paths)
            dirs = [str(d) for d in paths]
            recs, rc, err = run_batch(dirs)
            if rc != 0:  # find the trial that killed the child: one per child
                for d, off in zip(dirs, flips):
                    r1, rc1, err1 = run_batch([d])
                    if rc1 != 0:
                        counts["crash"] += 1
                        failures.append(f"offset {off}: child exit {rc1}: {err1[-300:]}")
                    else:
                        recs.append(r1[0])
            for rec in recs:
                if "error" in rec:
                    if "LlmdsdbError" in rec["error"]:
                        counts["typed error"] += 1
                    else:
                        counts["crash"] += 1
                        failures.append(f"{rec['dir']}: untyped {rec['error']}")
                elif rec["problems"]:
                    counts["check reports"] += 1
                elif all(rec[k] == clean[0][k] for k in keys):
                    counts["harmless"] += 1
                else:
                    counts["silent wrong"] += 1
                    failures.append(f"{rec['dir']}: different answers, check() clean")
            for d in dirs:
                for f in Path(d).iterdir():
                    f.unlink()
                Path(d).rmdir()
            done += n
            print(f"{done}/{args.trials} {counts}", flush=True)
    secs = time.monotonic() - t0
    line = (f"| bit flips in data.mdb | {args.trials} | {secs:.0f} | "
            + ", ".join(f"{v} {k}" for k, v in counts.items()) + " |")
    table = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: file fuzz, seed "
             f"{args.seed}, data.mdb {len(data)} bytes\n\nCommand: `python tools/fuzz/fuzz_files.py "
             f"{' '.join(sys.argv[1:])}`\n\n| what | trials | seconds | outcome |\n|---|---|---|---|\n"
             f"{line}\n" + "".join(f"\n- {f}" for f in failures))
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table + "\n")
    return 1 if counts["silent wrong"] or counts["crash"] else 0


if __name__ == "__main__":
    sys.exit(main())
