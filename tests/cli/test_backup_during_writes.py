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
import json, os, sys
import numpy as np
sys.path.insert(0, sys.argv[4])
from cli_helpers import doc_digest, make_records
import llmdsdb.db as dbmod

path, max_batches, stop_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
state = {}
with dbmod.open(path, dim=8, durability="nosync") as db:
    print(json.dumps({"generation": db.generation, "digest": doc_digest([])}), flush=True)
    for b in range(max_batches):
        if os.path.exists(stop_file):  # the test has taken its backups
            break
        recs = make_records(6, dim=8, seed=b, start=b * 4)  # overlaps: updates 2 docs
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

TRIALS = 10  # issue 6 asks for >= 10; three through the installed CLI, each restore verified in a checker process
MAX_BATCHES = 3000  # a cap only: the writer stops when the test says so


def test_backups_during_ingest_restore_to_a_committed_batch(tmp_path: Path) -> None:
    db = tmp_path / "live"
    with dbmod.open(db, dim=8):
        pass  # create it, so backups can start at once
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(MAX_BATCHES), str(stop),
         str(Path(__file__).parent)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    log: dict[int, str] = {}
    backups: list[Path] = []
    assert writer.stdout is not None
    for line in writer.stdout:
        entry = json.loads(line)
        log[entry["generation"]] = entry["digest"]
        if len(backups) < TRIALS and entry["generation"] >= 1:
            # taken while the writer keeps committing batches
            dest = tmp_path / f"bk{len(backups)}"
            if len(backups) % 3 == 1:
                run_cli("backup", db, dest, check=True)
            else:
                backup(db, dest)
            backups.append(dest)
            if len(backups) == TRIALS:
                stop.touch()
    assert writer.wait(timeout=300) == 0, writer.stderr.read() if writer.stderr else ""
    final = max(log)
    assert final < MAX_BATCHES, "the writer finished before the backups were taken"

    def restore_one(i: int) -> int:
        target = tmp_path / f"restored{i}"
        restore(backups[i], target)  # checks sha256, verifies in a subprocess, renames
        return read_manifest(backups[i])["generation"]

    with ThreadPoolExecutor(2) as pool:  # the work is in the checker subprocesses
        generations = list(pool.map(restore_one, range(len(backups))))
    for i, gen in enumerate(generations):
        assert db_digest(tmp_path / f"restored{i}") == log[gen], f"backup {i} at {gen}"
    # every backup was taken before the writer was told to stop, while it committed batches
    assert len(set(generations)) >= TRIALS // 2, generations
    report = check_in_subprocess(tmp_path / "restored0")
    assert report.ok, report.problems
