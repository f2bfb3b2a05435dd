"""``llmdsdb.ingest``: streaming ingest as a library function, on real LMDB files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import llmdsdb
from llmdsdb.errors import InputFormatError
from llmdsdb.ingest import BadRowError, IngestInterrupted, IngestProgress, ingest


def _jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def _docs(n: int, dim: int | None = None, start: int = 0) -> list[dict]:
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        r: dict = {"id": f"d{i}", "text": f"document number {i} about topic {i % 7}"}
        if dim is not None:
            r["embedding"] = rng.standard_normal(dim).tolist()
        out.append(r)
    return out


def test_every_record_accounted_for_and_rerun_resumes(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "a.jsonl", _docs(25, dim=4))
    db_path = tmp_path / "db"
    first = ingest(db_path, [src], batch_size=10)
    assert (first.read, first.written, first.unchanged, first.bad) == (25, 25, 0, 0)
    assert first.batches == 3 and first.count == 25
    again = ingest(db_path, [src], batch_size=10)
    assert (again.read, again.written, again.unchanged, again.bad) == (25, 0, 25, 0)
    with llmdsdb.open(db_path, readonly=True) as db:
        assert db.count() == 25 and db.get("d7").text.startswith("document number 7")


def test_rows_the_database_refuses_are_reported_with_their_position(tmp_path: Path) -> None:
    rows = _docs(6, dim=3)
    rows[2]["embedding"] = [1.0, 2.0, 3.0, 4.0]       # wrong dimension: the reader accepts it
    rows[4]["metadata"] = {"n": 2**70}                  # outside int64: the database refuses
    src = _jsonl(tmp_path / "mixed.jsonl", rows)
    res = ingest(tmp_path / "db", [src], bad_rows="skip", batch_size=100)
    assert (res.read, res.written, res.bad) == (6, 4, 2)
    assert [(b.where, b.ordinal) for b in res.bad_examples] == [
        (f"{src}:3", 2), (f"{src}:5", 4)]
    assert "dimension 3" in res.bad_examples[0].reason
    assert "int64" in res.bad_examples[1].reason
    with llmdsdb.open(tmp_path / "db", readonly=True) as db:
        assert sorted(d.id for d in db.iter_documents()) == ["d0", "d1", "d3", "d5"]


def test_raise_policy_stops_before_the_bad_batch(tmp_path: Path) -> None:
    rows = _docs(12, dim=3)
    rows[9]["embedding"] = [0.0, float("1e39"), 1.0]  # overflows float32: not finite
    src = _jsonl(tmp_path / "b.jsonl", rows)
    with pytest.raises(BadRowError) as info:
        ingest(tmp_path / "db", [src], batch_size=5)
    err = info.value
    assert err.bad.where == f"{src}:10" and err.bad.ordinal == 9
    assert err.written == 5 and "5 documents written by earlier batches" in str(err)
    with llmdsdb.open(tmp_path / "db", readonly=True) as db:
        assert db.count() == 5  # the first batch only: nothing of the failing one


def test_reader_errors_are_bad_rows_too(tmp_path: Path) -> None:
    src = tmp_path / "c.jsonl"
    src.write_text('{"id": "a", "text": "x"}\n{broken\n{"id": "b", "text": "y"}\n')
    res = ingest(tmp_path / "db", [src], bad_rows="skip")
    assert (res.written, res.bad) == (2, 1)
    assert res.bad_examples[0].where == f"{src}:2"
    with pytest.raises(BadRowError, match=r"c\.jsonl:2: "):
        ingest(tmp_path / "db2", [src])
    assert not (tmp_path / "db2").exists()  # created by the failed call, so removed again


def test_interrupt_reports_what_was_committed_and_rerun_completes(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "d.jsonl", _docs(30))
    seen: list[IngestProgress] = []

    def stop_after_two(p: IngestProgress) -> None:
        seen.append(p)
        if p.batches == 2:
            raise KeyboardInterrupt

    with pytest.raises(IngestInterrupted) as info:
        ingest(tmp_path / "db", [src], batch_size=10, on_progress=stop_after_two)
    assert info.value.written == 20 and "re-run the same command to resume" in str(info.value)
    with llmdsdb.open(tmp_path / "db", readonly=True) as db:
        assert db.count() == 20
    res = ingest(tmp_path / "db", [src], batch_size=10)
    assert (res.written, res.unchanged, res.count) == (10, 20, 30)


def test_progress_knows_the_total_with_an_embeddings_file(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "e.jsonl", _docs(7))
    emb = tmp_path / "e.npy"
    np.save(emb, np.random.default_rng(1).standard_normal((7, 5)).astype(np.float32))
    seen: list[IngestProgress] = []
    res = ingest(tmp_path / "db", [src], embeddings_file=emb, batch_size=3,
                 on_progress=seen.append)
    assert res.written == 7 and [p.read for p in seen] == [3, 6, 7]
    assert {p.total for p in seen} == {7}
    np.save(emb, np.zeros((6, 5), np.float32))
    with pytest.raises(InputFormatError, match="6 rows but the input has 7 records"):
        ingest(tmp_path / "db", [src], embeddings_file=emb)


def test_an_open_database_stays_open(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "f.jsonl", _docs(4))
    with llmdsdb.open(tmp_path / "db") as db:
        res = ingest(db, [src])
        assert res.written == 4 and db.count() == 4  # still usable after the call


def test_a_run_where_every_record_is_bad_fails(tmp_path: Path) -> None:
    src = tmp_path / "notext.csv"
    src.write_text("id,body\n1,hello\n2,world\n")
    with pytest.raises(InputFormatError, match=r"all 2 records were bad.*missing text field "
                       r"'text'; fields found: 'id', 'body'; name the text field with "
                       r"--text-field"):
        ingest(tmp_path / "db", [src], bad_rows="skip")
    assert not (tmp_path / "db").exists()


def test_an_embeddings_file_of_another_dimension_is_named(tmp_path: Path) -> None:
    src = _jsonl(tmp_path / "g.jsonl", _docs(3))
    emb = tmp_path / "g.npy"
    np.save(emb, np.ones((3, 4), np.float32))
    ingest(tmp_path / "db", [src], embeddings_file=emb)
    np.save(emb, np.ones((3, 8), np.float32))
    with pytest.raises(InputFormatError, match=r"g\.npy: vectors have dimension 8, but the "
                       r"database's vectors have dimension 4"):
        ingest(tmp_path / "db", [src], embeddings_file=emb)
