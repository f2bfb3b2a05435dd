"""The input readers of ``llmdsdb ingest`` (no database involved)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from llmdsdb.errors import InputFormatError
from llmdsdb.ingest_io import (
    BadLine,
    EmbeddingRows,
    FieldSpec,
    Record,
    count_records,
    iter_records,
    parse_vector,
    read_query_vector,
    write_jsonl_record,
)


def _lines(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(lines))
    return path


def test_jsonl_defaults_and_blank_lines(tmp_path: Path) -> None:
    p = _lines(tmp_path / "a.jsonl",
               b'{"id": "x", "text": "hello", "metadata": {"k": 1}, "embedding": [1, 0]}\n',
               b"\n",
               b'{"_id": 7, "text": "world"}\n')
    recs = list(iter_records([p]))
    assert [type(r) for r in recs] == [Record, Record]
    a, b = recs
    assert (a.id, a.text, a.metadata, a.where) == ("x", "hello", {"k": 1}, f"{p}:1")
    assert a.embedding.dtype == np.float32 and a.embedding.tolist() == [1.0, 0.0]
    assert (b.id, b.text, b.embedding, b.where, b.ordinal) == ("7", "world", None, f"{p}:3", 1)


def test_text_fields_joined_and_template(tmp_path: Path) -> None:
    p = _lines(tmp_path / "a.jsonl", b'{"id": "1", "title": "T", "text": "body"}\n',
               b'{"id": "2", "title": "", "text": "only"}\n')
    joined = [r.text for r in iter_records([p], FieldSpec(text_fields=("title", "text")))]
    assert joined == ["T body", "only"]
    tmpl = [r.text for r in iter_records([p], FieldSpec(text_template="{title}: {text} {{x}}"))]
    assert tmpl == ["T: body {x}", ": only {x}"]
    with pytest.raises(InputFormatError):
        FieldSpec(text_fields=("a",), text_template="{a}")


def test_metadata_fields_added(tmp_path: Path) -> None:
    p = _lines(tmp_path / "a.jsonl", b'{"id": "1", "text": "t", "lang": "en", "metadata": {"a": 1}}\n')
    (r,) = iter_records([p], FieldSpec(metadata_fields=("lang",)))
    assert r.metadata == {"a": 1, "lang": "en"}


@pytest.mark.parametrize("line,reason", [
    (b"{not json\n", "invalid JSON"),
    (b"[1, 2]\n", "expected a JSON object"),
    (b'{"text": "no id"}\n', "missing id field"),
    (b'{"id": "", "text": "x"}\n', "non-empty"),
    (b'{"id": 1.5, "text": "x"}\n', "must be a string or an integer"),
    (b'{"id": "a", "text": 3}\n', "must be a string"),
    (b'{"id": "a"}\n', "missing text field"),
    (b'{"id": "a", "text": "x", "embedding": [1, "b"]}\n', "not a number"),
    (b'{"id": "a", "text": "x", "embedding": [1, NaN]}\n', "NaN"),
    (b'{"id": "a", "text": "x", "embedding": [1e39]}\n', "overflows float32"),
    # an integer too large for a float was a bare OverflowError that ended the whole run
    (b'{"id": "a", "text": "x", "embedding": [1, ' + b"9" * 400 + b']}\n',
     "overflows float32"),
    (b'{"id": "a", "text": "x", "embedding": []}\n', "empty"),
    (b'{"id": "a", "text": "x", "metadata": [1]}\n', "must be an object"),
    (b"[" * 100_000 + b"\n", "nested too deeply"),  # was a bare RecursionError
])
def test_bad_jsonl_lines_name_file_and_line(tmp_path: Path, line: bytes, reason: str) -> None:
    p = _lines(tmp_path / "a.jsonl", b'{"id": "ok", "text": "fine"}\n', line)
    good, bad = list(iter_records([p]))
    assert isinstance(good, Record) and isinstance(bad, BadLine)
    assert str(bad).startswith(f"{p}:2: ")
    assert reason in bad.reason


def test_invalid_utf8_reports_line_and_byte_offset(tmp_path: Path) -> None:
    first = b'{"id": "ok", "text": "fine"}\n'
    p = _lines(tmp_path / "a.jsonl", first, b'{"id": "b", "text": "caf\xe9"}\n')
    bad = list(iter_records([p]))[1]
    assert isinstance(bad, BadLine)
    offset = len(first) + len(b'{"id": "b", "text": "caf')
    assert str(bad).startswith(f"{p}:2: invalid UTF-8 at byte offset {offset} ")


def test_gzip_input_and_corrupt_gzip(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl.gz"
    with gzip.open(p, "wb") as f:
        f.write(b'{"id": "1", "text": "zipped"}\n')
    assert [r.text for r in iter_records([p])] == ["zipped"]
    broken = tmp_path / "b.jsonl.gz"
    broken.write_bytes(p.read_bytes()[:15])
    with pytest.raises(InputFormatError, match=r"b\.jsonl\.gz"):
        list(iter_records([broken]))


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="no such file"):
        list(iter_records([tmp_path / "nope.jsonl"]))
    (tmp_path / "x.bin").write_bytes(b"x")
    with pytest.raises(InputFormatError, match="unknown input format"):
        list(iter_records([tmp_path / "x.bin"]))


def test_csv_and_tsv(tmp_path: Path) -> None:
    p = _lines(tmp_path / "a.csv", b'id,text,lang,embedding\n', b'1,"hello, world",en,"[1, 2]"\n',
               b'2,"two\nlines",de,0.5 0.25\n', b'3,short\n', b'4,bad\xff,x,1\n')
    recs = list(iter_records([p]))
    assert [type(r) for r in recs] == [Record, Record, BadLine, BadLine]
    assert recs[0].metadata == {"lang": "en"} and recs[0].embedding.tolist() == [1.0, 2.0]
    assert recs[1].text == "two\nlines" and recs[1].where == f"{p}:3"
    assert str(recs[2]).startswith(f"{p}:5: expected 4 columns")
    assert str(recs[3]).startswith(f"{p}:6: invalid UTF-8")
    t = _lines(tmp_path / "a.tsv", b"id\ttext\n", b"a\tb c\n")
    assert [(r.id, r.text, r.metadata) for r in iter_records([t])] == [("a", "b c", {})]


def test_csv_reading_restores_the_process_wide_field_limit(tmp_path: Path) -> None:
    import csv

    p = _lines(tmp_path / "a.csv", b"id,text\n", b"1," + b"x" * 200_000 + b"\n")
    old = csv.field_size_limit(1000)
    try:
        assert len(next(iter_records([p])).text) == 200_000  # read past the 1000 limit
        assert csv.field_size_limit() == 1000  # and the caller's setting is back
    finally:
        csv.field_size_limit(old)


def test_directory_of_text_files(tmp_path: Path) -> None:
    d = tmp_path / "notes"
    (d / "sub").mkdir(parents=True)
    (d / "b.md").write_text("# B\nbee", encoding="utf-8")
    (d / "sub" / "a.txt").write_text("ay", encoding="utf-8")
    (d / "skip.bin").write_bytes(b"\x00")
    (d / "bad.txt").write_bytes(b"line one\nbad \xff\n")
    recs = list(iter_records([d]))
    ok = [(r.id, r.text, r.metadata) for r in recs if isinstance(r, Record)]
    assert ok == [("b.md", "# B\nbee", {"path": "b.md"}), ("sub/a.txt", "ay", {"path": "sub/a.txt"})]
    (bad,) = [r for r in recs if isinstance(r, BadLine)]
    assert str(bad).startswith(f"{d / 'bad.txt'}:2: invalid UTF-8 at byte offset 13")
    assert count_records([d]) == 3


def test_embeddings_file_aligned_by_record(tmp_path: Path) -> None:
    p = _lines(tmp_path / "a.jsonl", b'{"id": "1", "text": "a"}\n', b"bad\n",
               b'{"id": "3", "text": "c"}\n')
    np.save(tmp_path / "e.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    rows = EmbeddingRows(tmp_path / "e.npy")
    recs = list(iter_records([p], embeddings=rows))
    assert recs[0].embedding.tolist() == [0.0, 1.0]
    assert isinstance(recs[1], BadLine)
    assert recs[2].embedding.tolist() == [4.0, 5.0]  # row 2: the bad line keeps its row
    assert count_records([p]) == 3
    np.save(tmp_path / "obj.npy", np.array([1, 2], dtype=np.float32))
    with pytest.raises(InputFormatError, match="2-D"):
        EmbeddingRows(tmp_path / "obj.npy")
    with pytest.raises(InputFormatError, match="no such"):
        EmbeddingRows(tmp_path / "missing.npy")


def test_parse_and_read_query_vector(tmp_path: Path) -> None:
    assert parse_vector("1, 2  3").tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(InputFormatError):
        parse_vector([True])
    np.save(tmp_path / "q.npy", np.ones((1, 3), dtype=np.float32))
    assert read_query_vector(tmp_path / "q.npy").tolist() == [1.0, 1.0, 1.0]
    (tmp_path / "q.json").write_text("[0.5, -1]")
    assert read_query_vector(tmp_path / "q.json").tolist() == [0.5, -1.0]
    np.save(tmp_path / "m.npy", np.ones((2, 3), dtype=np.float32))
    with pytest.raises(InputFormatError, match="one numeric vector"):
        read_query_vector(tmp_path / "m.npy")
    with pytest.raises(InputFormatError, match="no such"):
        read_query_vector(tmp_path / "none.json")


def test_export_line_reads_back_identically(tmp_path: Path) -> None:
    emb = np.array([0.1, 1 / 3, -2.5e-8], dtype=np.float32)
    p = tmp_path / "x.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        write_jsonl_record(f, "id\u00e9", "text \ud800 \x00 end", {"a": [1, {"b": None}]}, emb)
        write_jsonl_record(f, "2", "", {}, None)
    a, b = iter_records([p])
    assert (a.id, a.text, a.metadata) == ("id\u00e9", "text \ud800 \x00 end", {"a": [1, {"b": None}]})
    assert a.embedding.tobytes() == emb.tobytes()
    assert (b.id, b.text, b.embedding, b.metadata) == ("2", "", None, {})
    json.loads(p.read_text().splitlines()[0])


def test_missing_id_names_the_default_field_and_the_fields_found(tmp_path: Path) -> None:
    p = _lines(tmp_path / "noid.jsonl", b'{"doc": "a", "body": "x"}\n')
    (bad,) = list(iter_records([p]))
    assert isinstance(bad, BadLine)
    assert bad.reason == ("missing id field 'id' (or '_id'); fields found: 'doc', 'body'; "
                          "name the id field with --id-field")
    (named,) = list(iter_records([p], FieldSpec(id_field="key")))
    assert named.reason == "missing id field 'key'"


def test_a_non_finite_query_vector_names_the_file_once(tmp_path: Path) -> None:
    p = tmp_path / "qnan.npy"
    np.save(p, np.array([np.nan, 1.0], np.float32))
    with pytest.raises(InputFormatError) as info:
        read_query_vector(p)
    assert str(info.value).count("qnan.npy") == 1 and "vector[0] is not finite" in str(info.value)


def test_byte_meter_follows_the_stored_bytes_of_every_input(tmp_path: Path) -> None:
    from llmdsdb.ingest_io import ByteMeter

    lines = [json.dumps({"id": str(i), "text": "word " * (i % 9 + 1)}) + "\n"
             for i in range(50)]
    plain = tmp_path / "a.jsonl"
    plain.write_text("".join(lines), encoding="utf-8")
    csv_path = tmp_path / "b.csv"
    csv_rows = ["id,text\n"] + [f"c{i},row {i} " + "x" * i + "\n" for i in range(30)]
    csv_path.write_text("".join(csv_rows), encoding="utf-8")
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps({"id": f"g{i}", "text": f"t{i}"}) + "\n"
                        for i in range(2000)))
    paths = [plain, csv_path, gz]
    meter = ByteMeter(paths)
    sizes = [p.stat().st_size for p in paths]
    assert meter.total == sum(sizes) and meter.read == 0
    seen = []
    for rec in iter_records(paths, meter=meter):
        seen.append((rec.id, meter.read))
    # a plain file: exactly the bytes of the lines up to the record yielded
    for i in range(50):
        assert seen[i][1] == sum(len(ln.encode()) for ln in lines[: i + 1])
    for j in range(30):  # CSV: the header and the rows so far
        assert seen[50 + j][1] == sizes[0] + sum(len(r) for r in csv_rows[: j + 2])
    gz_reads = [r for _, r in seen[80:]]
    assert gz_reads == sorted(gz_reads) and sizes[0] + sizes[1] < gz_reads[0]
    assert meter.read == meter.total  # every file finished


def test_ingest_progress_estimates_from_bytes_when_the_count_is_unknown(
        tmp_path: Path) -> None:
    from llmdsdb.ingest import ingest

    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "text": f"text {i}"}) + "\n"
                           for i in range(100)), encoding="utf-8")
    got = []
    ingest(tmp_path / "db", [src], batch_size=25, on_progress=got.append)
    assert [p.total for p in got] == [None] * 4
    assert all(p.bytes_total == src.stat().st_size for p in got)
    fractions = [p.fraction for p in got]
    assert fractions == sorted(fractions) and 0.2 < fractions[0] < 0.3 and fractions[-1] == 1.0
    np.save(tmp_path / "e.npy", np.ones((100, 4), np.float32))
    got.clear()  # an embeddings file fixes the count: exact, no byte estimate
    ingest(tmp_path / "db2", [src], embeddings_file=tmp_path / "e.npy", batch_size=50,
           on_progress=got.append)
    assert [(p.total, p.bytes_total, p.fraction) for p in got] == [(100, None, 0.5),
                                                                  (100, None, 1.0)]
