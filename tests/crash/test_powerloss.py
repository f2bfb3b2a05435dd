"""Simulated power loss (tools/stress/powerloss.py): the writes and syncs of a workload are
recorded by the iotrace LD_PRELOAD shim and replayed into crash images - the durable writes
plus a random subset of the pending ones, in 4 KiB or 512-byte pieces. At the default
durability every image opens, passes ``check()`` and holds every acknowledged step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "stress"))
import crashkit
import iotrace
import powerloss


@pytest.fixture
def needs_shim(zygote):
    if not zygote.preloaded:
        pytest.skip("no C compiler for the iotrace shim")


def test_every_sync_crash_image_holds_every_acknowledged_step(zygote, crash_work, needs_shim):
    w = crashkit.Workload(kind="api", seed=11, steps=5)
    rec = powerloss.record(zygote, w, crash_work / "pl-sync")
    c = rec.counts()
    # the commit protocol: page writes, an fdatasync, then the meta page on an O_DSYNC fd
    assert c["marks"] == 5 and c["syncs"] >= 4 and c["dsync_writes"] == c["syncs"]
    assert all(len(r.data) <= 512 for r in rec.records if r.type == iotrace.WRITE and r.dsync)
    out = powerloss.judge_images(zygote, rec, crash_work / "pl-sync", per_point=3, seed=1)
    assert out.violations == []
    assert out.distinct > 10 and out.opened_clean == out.held_acked == out.distinct


def test_without_syncs_the_images_show_the_loss(zygote, crash_work, needs_shim):
    """Control: with durability="nosync" nothing is ever durable, so images lose
    acknowledged steps or fail to verify - the simulator does drop unsynced writes - yet
    every one is refused with a typed error or check() problems, never a crash."""
    w = crashkit.Workload(kind="api", seed=11, steps=5, durability="nosync")
    rec = powerloss.record(zygote, w, crash_work / "pl-nosync")
    assert rec.counts()["syncs"] == 0
    out = powerloss.judge_images(zygote, rec, crash_work / "pl-nosync", per_point=2, seed=1,
                                 max_images=25)
    assert out.crashed == 0 and out.violations == []
    assert out.lost_last + out.refused > 0


def test_pieces_keep_a_small_aligned_write_whole():
    assert powerloss._pieces(32, b"m" * 120, 512) == [(32, b"m" * 120)]
    pieces = powerloss._pieces(4096, bytes(range(256)) * 32, 512)
    assert [off for off, _ in pieces] == list(range(4096, 4096 + 8192, 512))
    assert b"".join(p for _, p in pieces) == bytes(range(256)) * 32
    assert [len(p) for _, p in powerloss._pieces(100, b"x" * 5000, 4096)] == [3996, 1004]
