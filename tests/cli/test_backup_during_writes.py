"""Hot backups taken while another process ingests (RELIABILITY.md §4.4).

A writer subprocess upserts batches (new documents and changed ones) and, after each commit,
prints the generation and a digest of its whole state. Backups are taken at many points
while it runs, a third of them through the installed ``llmdsdb``, the rest through the Python API.
Every backup must restore, verify clean, and equal the writer's state at exactly the
generation its manifest names.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cli_helpers import REPO, db_digest, run_cli

import llmdsdb.db as dbmod
from llmdsdb.backup import backup, check_in_subprocess, read_manifest, restore

WRITER = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from cli_helpers import doc_digest, make_records
import llmdsdb.db as dbmod

path, batches = sys.argv[1], int(sys.argv[2])
state = {}
with dbmod.open(path, dim=8, durability="nosync") as db:
    print(json.dumps({"generation": db.generation, "digest": doc_digest([])}), flush=True)
    for b in range(batches):
        recs = make_records(15, dim=8, seed=b, start=b * 10)  # overlaps: updates 5 docs
        for r in recs:
            r["metadata"]["batch"] = b
        db.upsert([r["id"] for r in recs], [r["text"] for r in recs],
                  [r["embedding"] for r in recs], [r["metadata"] for r in recs])
        for r in recs:
            state[r["id"]] = (r["id"], r["text"], np.asarray(r["embedding"], np.float32),
                              r["metadata"])
        print(json.dumps({"generation": db.generation,
                          "digest": doc_digest(state.values())}), flush=True)
"""

TRIALS = 10
BATCHES = 40


def test_backups_during_ingest_restore_to_a_committed_batch(tmp_path: Path) -> None:
    db = tmp_path / "live"
    with dbmod.open(db, dim=8):
        pass  # create it, so backups can start at once
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(BATCHES), str(Path(__file__).parent)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    log: dict[int, str] = {}
    backups: list[Path] = []
    assert writer.stdout is not None
    every = BATCHES // TRIALS
    for n, line in enumerate(writer.stdout):
        entry = json.loads(line)
        log[entry["generation"]] = entry["digest"]
        if n % every == 1 and len(backups) < TRIALS:  # the writer keeps going meanwhile
            dest = tmp_path / f"bk{len(backups)}"
            if len(backups) % 3 == 1:
                run_cli("backup", db, dest, check=True)
            else:
                backup(db, dest)
            backups.append(dest)
    assert writer.wait(timeout=300) == 0, writer.stderr.read() if writer.stderr else ""
    assert len(backups) >= 10

    def restore_one(i: int) -> int:
        target = tmp_path / f"restored{i}"
        restore(backups[i], target)  # checks sha256, verifies in a subprocess, renames
        return read_manifest(backups[i])["generation"]

    with ThreadPoolExecutor(2) as pool:  # the work is in the checker subprocesses
        generations = list(pool.map(restore_one, range(len(backups))))
    for i, gen in enumerate(generations):
        assert db_digest(tmp_path / f"restored{i}") == log[gen], f"backup {i} at {gen}"
    # at least two distinct states were captured while writing
    assert len(set(generations)) >= 2
    report = check_in_subprocess(tmp_path / "restored0")
    assert report.ok, report.problems
