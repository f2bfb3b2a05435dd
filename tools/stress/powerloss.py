"""Simulated power loss without root (RELIABILITY.md §4.2): record every write and sync a
workload makes to ``data.mdb``, then build *crash images* - the file as a disk could hold it
if the power failed at a point of the trace - and judge each one.

What is modelled, and what is not:

* **Recording.** The workload (a :mod:`crashkit` ``api`` workload: batches of adds, upserts
  and deletes, and ``optimize`` steps) runs in a child with the ``iotrace`` LD_PRELOAD shim,
  which logs each completed ``write``/``pwrite``/``writev``/``pwritev`` of ``data.mdb`` with
  its offset and bytes, each ``fsync``/``fdatasync``, and - from the child, after each
  commit returned - a MARK with the acknowledged step. liblmdb (bundled in py-lmdb) calls
  libc through the PLT, so the shim sees every one of its writes; the log shows exactly the
  commit protocol of RELIABILITY.md §1.1 (page writes, ``fdatasync``, a 120-byte meta-page
  ``pwrite`` on an ``O_DSYNC`` descriptor). The recording starts after the database was
  created (its creation ends with a synced commit): power loss *during creation* is not
  simulated.
* **Durability rules.** A write is durable once a later ``fsync``/``fdatasync`` of the file
  completed, or on return when its descriptor is ``O_DSYNC``/``O_SYNC``. Every other write
  before the crash point is *pending*: each of its pieces independently reached the disk or
  not. Pieces are 4 KiB pages or (torn mode, half of the images) 512-byte sectors; a write of
  at most 512 bytes inside one sector is atomic (the sector-atomicity assumption LMDB's meta
  page relies on, §1.1). Applied pieces keep trace order where they overlap; the file is
  as long as its furthest applied byte (a hole reads as zeros).
* **Not modelled:** reordering of durable writes (the disk honours the flush), directory
  metadata, lying disks that drop flushed data, bit rot; ``lock.mdb`` (rebuilt by LMDB when
  no process has it open) is left out of the images.

Crash points are every position in the trace (after each record); at each, ``--per-point``
random images are drawn (a point with nothing pending has one possible image). Identical
images are judged once (their count is reported). Each image is judged in a forked child
(:func:`crashkit.judge`): it must open, ``check()`` clean, and hold exactly the state of the
uninterrupted run after k steps with k >= the last step acknowledged before the crash point
(``durability="sync"``); ``metasync`` may lose the last acknowledged step; for ``nosync``
the fraction of images that open and verify is reported, no bound is asserted.

Usage (from the repository root)::

    nice -n 10 python tools/stress/powerloss.py                         # 3 workloads, sync
    python tools/stress/powerloss.py --durability metasync --steps 10
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crashkit
import iotrace

PAGE = 4096
SECTOR = 512


@dataclass
class Recording:
    """A workload's trace: the file before it (``base``), the writes/syncs/marks after."""

    workload: crashkit.Workload
    base: bytes
    records: list[iotrace.Record]
    ref: crashkit.Reference

    def counts(self) -> dict[str, int]:
        c = collections.Counter(r.type for r in self.records)
        return {"writes": c[iotrace.WRITE], "syncs": c[iotrace.SYNC],
                "dsync_writes": sum(1 for r in self.records
                                    if r.type == iotrace.WRITE and r.dsync),
                "marks": c[iotrace.MARK]}


def record(zyg: crashkit.Zygote, w: crashkit.Workload, work: Path) -> Recording:
    """Run ``w`` uninterrupted under the shim (and its reference runs) and keep the trace."""
    if not zyg.preloaded:
        raise RuntimeError("the iotrace shim is not preloaded (no C compiler?)")
    shutil.rmtree(work, ignore_errors=True)
    ref = crashkit.reference(zyg, w, work / "ref")
    files = crashkit._files(work, "rec")
    log, base = str(work / "rec.iolog"), str(work / "rec.base")
    reply = zyg.request({"cmd": "run", "workload": w.as_dict(), "path": str(work / "rec.db"),
                         "input": None, "kill": None, **files, "out": "", "iolog": log,
                         "base": base})
    if reply["rc"] != 0:
        raise RuntimeError(f"the recorded run failed: {reply}\n{Path(files['err']).read_text()}")
    raw = iotrace.read_log(log)
    data = {r.file for r in raw if r.type == iotrace.OPEN and r.data.endswith(b"/data.mdb")}
    if len(data) != 1:
        raise RuntimeError(f"expected one data.mdb in the trace, found {len(data)}")
    recs = [r for r in raw if r.type == iotrace.MARK or r.type != iotrace.OPEN and r.file in data]
    if any(r.type == iotrace.TRUNC for r in recs):
        raise RuntimeError("data.mdb was truncated during the workload: not modelled")
    return Recording(w, Path(base).read_bytes(), recs, ref)


def _pieces(offset: int, data: bytes, grain: int) -> list[tuple[int, bytes]]:
    """``data`` at ``offset`` cut at ``grain``-aligned boundaries; a write within one sector
    is one piece (atomic)."""
    if len(data) <= SECTOR and offset // SECTOR == (offset + len(data) - 1) // SECTOR:
        return [(offset, data)]
    out = []
    pos = offset
    end = offset + len(data)
    while pos < end:
        nxt = min(end, (pos // grain + 1) * grain)
        out.append((pos, data[pos - offset:nxt - offset]))
        pos = nxt
    return out


@dataclass
class Image:
    """One crash image: the file's bytes, the crash point, the last acknowledged step."""

    point: int
    acked: int
    data: bytes
    pending: int  # pending writes at the crash point
    dropped: int  # pieces of them that did not reach the disk
    torn: bool


def crash_image(rec: Recording, point: int, rnd: random.Random) -> Image:
    """The file after a power loss right after record ``point - 1`` (``point`` = how many
    records had completed): durable writes applied, each piece of a pending write kept with
    probability 1/2 (a random per-image keep rate, so that near-empty and near-full subsets
    both occur)."""
    done = rec.records[:point]
    last_sync = max((i for i, r in enumerate(done) if r.type == iotrace.SYNC), default=-1)
    acked = max((r.offset for r in done if r.type == iotrace.MARK), default=0)
    torn = rnd.random() < 0.5
    grain = SECTOR if torn else PAGE
    keep_rate = rnd.random()
    buf = bytearray(rec.base)
    pending = dropped = 0
    for i, r in enumerate(done):
        if r.type != iotrace.WRITE:
            continue
        durable = i < last_sync or r.dsync
        pieces = _pieces(r.offset, r.data, grain)
        if not durable:
            pending += 1
        for off, piece in pieces:
            if not durable and rnd.random() >= keep_rate:
                dropped += 1
                continue
            end = off + len(piece)
            if end > len(buf):
                buf.extend(b"\0" * (end - len(buf)))
            buf[off:end] = piece
    return Image(point, acked, bytes(buf), pending, dropped, torn)


@dataclass
class Outcome:
    """Judged images of one recording."""

    workload: crashkit.Workload
    points: int
    generated: int = 0
    distinct: int = 0  # distinct (image, last acknowledged step) pairs
    judged: int = 0  # distinct images (each opened and checked once)
    opened_clean: int = 0
    held_acked: int = 0
    lost_last: int = 0  # opened at a step before the last acknowledged one
    refused: int = 0  # a typed error or check() problems (an expected outcome only for nosync)
    crashed: int = 0  # the judging process died (a signal): never acceptable
    violations: list[str] = field(default_factory=list)


def judge_images(zyg: crashkit.Zygote, rec: Recording, work: Path, *, per_point: int,
                 seed: int, max_images: int | None = None) -> Outcome:
    """Build ``per_point`` images at every crash point and judge each distinct one."""
    w = rec.workload
    rnd = random.Random(seed)
    out = Outcome(w, len(rec.records) + 1)
    verdicts: dict[bytes, dict] = {}  # image bytes -> verdict (judged once)
    pairs: set[bytes] = set()  # (image, acked) pairs already accounted
    for point in range(len(rec.records) + 1):
        for _ in range(per_point):
            img = crash_image(rec, point, rnd)
            out.generated += 1
            digest = hashlib.sha256(img.data).digest()
            pair = digest + img.acked.to_bytes(8, "little")
            if pair not in pairs:
                verdict = verdicts.get(digest)
                if verdict is None:
                    if max_images is not None and len(verdicts) >= max_images:
                        break
                    verdict = verdicts[digest] = _judge_one(zyg, img, work, len(verdicts))
                pairs.add(pair)
                out.distinct += 1
                _account(out, rec, img, verdict)
            if img.pending == 0:
                break  # only one image is possible at this point
    out.judged = len(verdicts)
    return out


def _judge_one(zyg: crashkit.Zygote, img: Image, work: Path, n: int) -> dict:
    d = work / "img"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / "data.mdb").write_bytes(img.data)
    (d / "llmdsdb.lock").write_bytes(b"1\n")  # a writer's pid, as a crash leaves it
    return crashkit.judge(zyg, str(d), work, f"img{n % 2}")


def _account(out: Outcome, rec: Recording, img: Image, verdict: dict) -> None:
    w = rec.workload
    what = f"point {img.point} (acked {img.acked}, {img.pending} pending, {img.dropped} " \
           f"pieces dropped, {'512 B' if img.torn else '4 KiB'} pieces)"
    if verdict["error"] or verdict["problems"] or verdict["hash"] is None:
        died = str(verdict["error"]).startswith("judge child failed")
        out.crashed += died
        out.refused += not died
        if w.durability != "nosync" or died:
            out.violations.append(f"{what}: {verdict['error'] or verdict['problems'][:3]}")
        return
    out.opened_clean += 1
    lose = {"sync": 0, "metasync": 1}.get(w.durability, img.acked)
    k, why = crashkit.prefix_verdict(rec.ref.hashes, verdict["hash"], img.acked,
                                     may_lose=lose)
    if why:
        out.violations.append(f"{what}: {why}")
        return
    if k >= img.acked:
        out.held_acked += 1
    else:
        out.lost_last += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", type=int, default=3, help="workload seeds (default 3)")
    ap.add_argument("--steps", type=int, default=25, help="steps (commits) per workload")
    ap.add_argument("--per-point", type=int, default=20, help="images per crash point")
    ap.add_argument("--durability", default="sync", choices=["sync", "metasync", "nosync"])
    ap.add_argument("--dir", default=None, help="work directory (default: a new temp dir)")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args(argv)
    base = Path(args.dir or tempfile.mkdtemp(prefix="llmdsdb-powerloss-"))
    t0 = time.monotonic()
    rows = []
    with crashkit.Zygote(iotrace.build()) as zyg:
        for s in range(args.workloads):
            w = crashkit.Workload(kind="api", seed=100 + s, steps=args.steps,
                                  durability=args.durability)
            rec = record(zyg, w, base / f"w{s}")
            o = judge_images(zyg, rec, base / f"w{s}", per_point=args.per_point,
                             seed=args.seed + s)
            rows.append((rec, o))
            print(f"workload {s}: {rec.counts()}; {o.points} crash points, {o.generated} "
                  f"images, {o.distinct} distinct ({o.judged} distinct files): {o.opened_clean} opened clean, "
                  f"{o.held_acked} held every acknowledged step, {o.lost_last} lost acknowledged "
                  f"steps, {o.refused} refused with a typed error or check() problems, "
                  f"{o.crashed} crashed the judging process, {len(o.violations)} violations "
                  f"({time.monotonic() - t0:.0f} s)",
                  flush=True)
            for v in o.violations[:10]:
                print("  VIOLATION", v, flush=True)
    gen = sum(o.generated for _, o in rows)
    dist = sum(o.distinct for _, o in rows)
    bad = sum(len(o.violations) for _, o in rows)
    clean = sum(o.opened_clean for _, o in rows)
    print(f"\ndurability={args.durability}: {len(rows)} workloads x {args.steps} steps, "
          f"{sum(o.points for _, o in rows)} crash points, {gen} images ({dist} distinct "
          f"image/acknowledgement pairs, all judged): {clean}/{dist} opened and verified, "
          f"{sum(o.held_acked for _, o in rows)} held every acknowledged step, "
          f"{sum(o.lost_last for _, o in rows)} lost acknowledged steps, "
          f"{sum(o.refused for _, o in rows)} refused, {sum(o.crashed for _, o in rows)} "
          f"crashed the judging process; {bad} violations; {time.monotonic() - t0:.0f} s"
          + (f"; 0 failures in {dist}: failure rate < "
             f"{100 * crashkit.rule_of_three(dist):.2f}% (95%)"
             if not bad and args.durability != "nosync" else ""))
    shutil.rmtree(base, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
