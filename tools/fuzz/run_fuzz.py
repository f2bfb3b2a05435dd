"""Long fuzzing of every C kernel entry point and every stored-bytes decoder.

The targets are those of ``tests/fuzz_targets.py`` (the unit suite runs each for a few
seconds under hypothesis; this runs each for minutes). Engine: atheris (libFuzzer, coverage
of the Python harness and decoders guides the mutations) when it imports, else a
hypothesis-free random driver over the same byte-level targets. Each target runs in its own
child process, so a crash (SIGSEGV, an ASan report) of one is reported and the next still
runs. ``--sanitize`` runs the children against the ASan/UBSan build of the extension (built
once into a scratch copy, as tools/sanitize does).

Usage (repository root, venv active)::

    nice -n 10 python tools/fuzz/run_fuzz.py --minutes 10 --kernels --sanitize \\
        --out tools/fuzz/results/run.md
    python tools/fuzz/run_fuzz.py --minutes 1 --targets envelope,records

Writes one line per target (executions, seconds, result) to ``--out`` and the terminal;
a finding's input is kept under ``tools/fuzz/findings/<target>/`` (reproduce with
``python tools/fuzz/run_fuzz.py --repro FILE --targets NAME``). Exit status 1 when any
target found something.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _child(name: str, seconds: float, corpus: Path, findings: Path, engine: str) -> None:
    """Run one target in this process (the child)."""
    sys.path[:0] = [str(ROOT / "tests")]
    from llmdsdb._native import _core

    print(f"extension under test: {_core.__file__}", file=sys.stderr)
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["llmdsdb", "fuzz_targets", "codec_reference"]):
            import fuzz_targets
        fn = fuzz_targets.TARGETS[name]
        findings.mkdir(parents=True, exist_ok=True)
        corpus.mkdir(parents=True, exist_ok=True)
        argv = [sys.argv[0], f"-max_total_time={int(seconds)}", "-timeout=20",
                "-rss_limit_mb=3072", "-max_len=8192", "-print_final_stats=1",
                f"-artifact_prefix={findings}/", str(corpus)]
        atheris.Setup(argv, fn)
        atheris.Fuzz()
        return
    import random
    import traceback

    import fuzz_targets

    fn = fuzz_targets.TARGETS[name]
    rnd = random.Random(int.from_bytes(os.urandom(8), "little"))
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        data = rnd.randbytes(rnd.choice([16, 64, 256, 1024, 4096]))
        try:
            fn(data)
        except Exception:  # noqa: BLE001 - any exception is a finding
            findings.mkdir(parents=True, exist_ok=True)
            path = findings / f"crash-{n}"
            path.write_bytes(data)
            traceback.print_exc()
            print(f"finding written to {path}", file=sys.stderr)
            sys.exit(1)
        n += 1
    print(f"stat::number_of_executed_units: {n}", file=sys.stderr)


def _sanitized_tree() -> tuple[Path, dict[str, str]]:
    """A scratch copy of the package with the extension built under ASan/UBSan, and the
    environment that runs it."""
    work = Path(tempfile.mkdtemp(prefix="llmdsdb-fuzz-asan."))
    for part in ("llmdsdb", "tests", "setup.py", "pyproject.toml", "README.md"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / part)
    for so in work.rglob("*.so"):
        so.unlink()
    env = dict(os.environ, LLMDSDB_SANITIZE="1")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=work,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    cc = os.environ.get("CC", "gcc")
    libs = [subprocess.run([cc, f"-print-file-name={lib}"], capture_output=True, text=True,
                           check=True).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
    run_env = dict(os.environ, PYTHONPATH=str(work), LD_PRELOAD=" ".join(libs),
                   ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:"
                                "allocator_may_return_null=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    return work, run_env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="per target")
    ap.add_argument("--targets", default="", help="comma-separated names (default: all)")
    ap.add_argument("--kernels", action="store_true", help="only the C kernel entry points")
    ap.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    ap.add_argument("--sanitize", action="store_true", help="run against the ASan/UBSan build")
    ap.add_argument("--out", default="", help="append the result table here")
    ap.add_argument("--repro", default="", help="run one saved input through --targets")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    sys.path[:0] = [str(ROOT / "tests")]
    import fuzz_targets

    if args.child:
        _child(args.child, args.minutes * 60, ROOT / "tools/fuzz/corpus" / args.child,
               ROOT / "tools/fuzz/findings" / args.child, engine)
        return 0
    names = [n for n in args.targets.split(",") if n] or list(
        fuzz_targets.KERNEL_TARGETS if args.kernels else fuzz_targets.TARGETS)
    if args.repro:
        for n in names:
            fuzz_targets.TARGETS[n](Path(args.repro).read_bytes())
        print("no finding")
        return 0
    env = dict(os.environ)
    work = None
    if args.sanitize:
        work, env = _sanitized_tree()
    rows = []
    failed = False
    header = (f"\n## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: engine {engine}"
              f"{', ASan/UBSan build' if args.sanitize else ''}, {args.minutes:g} min per target\n\n"
              f"Command: `{' '.join(['python', 'tools/fuzz/run_fuzz.py'] + sys.argv[1:])}`\n\n"
              "| target | executions | seconds | result |\n|---|---|---|---|\n")
    print(header, end="", flush=True)
    try:
        for n in names:
            t0 = time.monotonic()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", n,
                   "--minutes", str(args.minutes), "--engine", engine]
            p = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True,
                               cwd=ROOT)
            secs = time.monotonic() - t0
            log = p.stdout + p.stderr
            m = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
            execs = m[-1] if m else "?"
            if p.returncode == 0:
                result = "no finding"
            else:
                failed = True
                logdir = ROOT / "tools/fuzz/findings" / n
                logdir.mkdir(parents=True, exist_ok=True)
                (logdir / "log.txt").write_text(log)
                lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
                key = [ln for ln in lines if "runtime error" in ln or "ERROR: " in ln
                       or ln.startswith(("AssertionError", "Error", "==", "Traceback"))
                       or "Error:" in ln][:2] or lines[-3:]
                result = f"FINDING (exit {p.returncode}; {logdir}/log.txt): " + " / ".join(key)[:300]
            row = f"| {n} | {execs} | {secs:.0f} | {result} |"
            rows.append(row)
            print(row, flush=True)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(header + "\n".join(rows) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
