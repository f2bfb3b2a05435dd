"""A damaged value size or overflow page number in a leaf node of ``data.mdb`` is a
CorruptionError on the ordinary read paths, never a SIGBUS (llmdsdb/storage_mapspan.py); a damaged
node offset or key size in a leaf page near the end of the file is one at open
(llmdsdb/storage_files.py).

LMDB 0.9 refuses an overflow page number at or past the last page in use
(MDB_PAGE_NOTFOUND), but trusts one inside the file and trusts the value size: py-lmdb then
touches every page of a value that runs past the end of the file. Each damaged copy is
opened first in a child process (a crash there fails the test with the signal), then in
this one.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from test_fault_matrix import run_child

import llmdsdb
from llmdsdb import storage_files
from llmdsdb.errors import CorruptionError

_F_BIGDATA = 1
_DOCS = 0x02  # the docs table's one-byte key prefix (storage_format._TAG)


def _leaf_nodes(data: bytes, psize: int = 4096) -> list[tuple[int, int, int, int, int]]:
    """``(node offset, flags, key size, data size, offset of its pointer)`` of every node of
    every leaf page."""
    out = []
    for pg in range(2, len(data) // psize):
        base = pg * psize
        flags, lower, _upper = struct.unpack_from("<HHH", data, base + 10)
        if flags & 0x02 and not flags & 0x20:  # leaf, not LEAF2
            for i in range((lower - 16) // 2):
                off = base + struct.unpack_from("<H", data, base + 16 + 2 * i)[0]
                lo, hi, nflags, ks = struct.unpack_from("<HHHH", data, off)
                out.append((off, nflags, ks, lo | hi << 16, base + 16 + 2 * i))
    return out


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict[str, Path]:
    """Copies of a small database, each with one leaf node of the docs table damaged."""
    root = tmp_path_factory.mktemp("bounds")
    src = root / "src"
    with llmdsdb.open(str(src)) as db:
        db.add(["big"] + [f"d{i}" for i in range(5)],
               ["lorem ipsum " * 3000] + [f"small doc {i}" for i in range(5)],
               embeddings=[[1.0, 0.0, 0.0, 0.0]] + [[0.0, 1.0, 0.0, float(i)] for i in range(5)])
    data = (src / "data.mdb").read_bytes()
    npages = len(data) // 4096
    nodes = [n for n in _leaf_nodes(data) if data[n[0] + 8] == _DOCS]
    big = next(n for n in nodes if n[1] & _F_BIGDATA)
    small = next(n for n in nodes if not n[1] & _F_BIGDATA)
    cases = {
        # an overflow page number inside the file: the value runs past its end
        "overflow-pgno-last-page": (big[0] + 8 + big[2], struct.pack("<Q", npages - 1)),
        # past the last page: LMDB's own check (MDB_PAGE_NOTFOUND)
        "overflow-pgno-past-end": (big[0] + 8 + big[2], struct.pack("<Q", npages + 3)),
        "overflow-size-huge": (big[0], struct.pack("<HH", 0xFFFF, 0x7FFF)),
        "inline-size-huge": (small[0], struct.pack("<HH", small[3], 2)),  # + 128 KiB
        # liblmdb itself reads these while searching: refused at open (file fuzz, trial 204)
        "open-leaf-node-offset": (small[4], struct.pack("<H", 0xD24C)),
        "open-leaf-key-size": (small[0] + 6, struct.pack("<H", 0xFFFF)),
    }
    out = {}
    for name, (off, patch) in cases.items():
        b = bytearray(data)
        b[off:off + len(patch)] = patch
        d = root / name
        d.mkdir(mode=0o700)
        (d / "data.mdb").write_bytes(bytes(b))
        out[name] = d
    return out


_READ_ALL = """
    import json, llmdsdb, llmdsdb.storage_files
    if {no_tail}:  # as in a large file, where these leaf pages are not among the last ones
        llmdsdb.storage_files._tail_pages = lambda psize: 0
    out = {{}}
    for d in {dirs!r}:
        try:
            with llmdsdb.open(d) as db:
                [x.id for x in db.iter_documents()]
                db.get("big")
                db.search("lorem", top_k=3)
            out[d] = "read"
        except llmdsdb.errors.LlmdsdbError as exc:
            out[d] = type(exc).__name__ + ": " + str(exc)
    print(json.dumps(out))
"""


def test_damaged_value_size_or_overflow_page_is_an_error_not_a_crash(damaged, monkeypatch):
    """Checked as the values are read. In a small file every leaf page is among the last
    ones, which open checks whole; the read-time check is what covers a large file's
    other leaf pages, so open's tail check is turned off here."""
    cases = {n: str(d) for n, d in damaged.items() if not n.startswith("open-")}
    got = run_child(_READ_ALL.format(dirs=list(cases.values()), no_tail=True))
    for d in cases.values():
        assert got[d].startswith("CorruptionError"), (d, got[d])
        assert "backup" in got[d] and "opening it" not in got[d], got[d]
    # an overflow value's size reaches the read-time check (liblmdb sees nothing wrong
    # with it; it refuses an inline value larger than its page itself: MDB_CORRUPTED)
    assert "runs past the end of the file" in got[cases["overflow-size-huge"]]
    monkeypatch.setattr(storage_files, "_tail_pages", lambda psize: 0)
    for name, d in cases.items():
        with llmdsdb.open(d) as db:
            with pytest.raises(CorruptionError):
                [x.id for x in db.iter_documents()]
            if name.startswith("overflow"):
                with pytest.raises(CorruptionError):
                    db.get("big")
            assert db.check(), name  # check() reports it too


def test_damaged_pages_near_the_end_of_the_file_are_refused_at_open(damaged):
    """A node offset or key size liblmdb reads while searching (file fuzz, trial 204), and
    the value cases too: in a small file every leaf page is among the last ones."""
    dirs = [str(d) for d in damaged.values()]
    got = run_child(_READ_ALL.format(dirs=dirs, no_tail=False))  # fails on a signal
    for name, d in damaged.items():
        assert got[str(d)].startswith("CorruptionError"), (name, got[str(d)])
        if name != "overflow-pgno-past-end":  # liblmdb's own check on the read finds it
            with pytest.raises(CorruptionError, match="opening it would crash"):
                llmdsdb.open(str(d))


def test_the_bounds_check_leaves_a_sound_database_alone(tmp_path):
    """Values in the map (read transactions) and on a write transaction's own pages (not in
    the map) read as before, across a map resize."""
    with llmdsdb.open(str(tmp_path / "db"), map_size_bytes=1 << 16) as db:
        for b in range(3):  # grows the 64 KiB map several times
            db.add([f"b{b}-{i}" for i in range(20)], [f"text {b} {i} " * 200 for i in range(20)],
                   embeddings=[[1.0, float(b), float(i), 0.0] for i in range(20)])
        with db.batch():  # the upsert reads a value on the batch's own pages
            db.add(["new"], ["fresh " * 500], embeddings=[[0.0, 0.0, 1.0, 0.0]])
            db.upsert(["b0-1", "new"], ["changed " * 500, "fresh " * 400],
                      embeddings=[[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
        assert db.count() == 61
        assert db.get("b0-1").text.startswith("changed")
        assert db.get("new").text == "fresh " * 400
        assert db.check() == []


_OVERWRITE = """
    import json, llmdsdb.storage_files
    from llmdsdb.errors import CorruptionError
    from llmdsdb.storage import Environment
    llmdsdb.storage_files._tail_pages = lambda psize: 0  # as in a large file
    out = {{}}
    for d, key in {cases!r}:
        env = Environment.open(d)
        got = []
        for how in ("put", "put_many"):
            try:
                with env.write() as txn:
                    if how == "put":
                        txn.put("docs", bytes.fromhex(key), b"replaced")
                    else:
                        txn.put_many("docs", [bytes.fromhex(key)], [b"replaced"])
                got.append("stored")
            except CorruptionError as exc:
                got.append("CorruptionError: " + str(exc))
        env.close()
        out[d] = got
    print(json.dumps(out))
"""


def test_overwriting_a_damaged_value_is_an_error_not_a_crash(damaged):
    """A put over a value whose node is damaged never reads the old value (LMDB would copy
    it, or free its overflow pages, past the end of the file): the node's extent is checked
    first and the write fails with a CorruptionError, leaving the file as it was."""
    cases = []
    for name in ("overflow-pgno-last-page", "overflow-size-huge"):
        data = (damaged[name] / "data.mdb").read_bytes()
        off, _fl, ks, _size, _ptr = next(n for n in _leaf_nodes(data)
                                         if data[n[0] + 8] == _DOCS and n[1] & _F_BIGDATA)
        cases.append((str(damaged[name]), data[off + 9:off + 8 + ks].hex()))
    before = {d: (Path(d) / "data.mdb").read_bytes() for d, _ in cases}
    got = run_child(_OVERWRITE.format(cases=cases))
    for d, _ in cases:
        assert all(g.startswith("CorruptionError") and "past the end" in g
                   for g in got[d]), got[d]
        assert (Path(d) / "data.mdb").read_bytes() == before[d]


_BACKUP = """
    import json, os, llmdsdb.storage_files
    from llmdsdb.backup import backup
    from llmdsdb.errors import LlmdsdbError
    llmdsdb.storage_files._tail_pages = lambda psize: 0  # as in a large file
    out = {{}}
    for d in {dirs!r}:
        try:
            backup(d, d + "-backup")
            out[d] = "written"
        except LlmdsdbError as exc:
            out[d] = type(exc).__name__ + ": " + str(exc)
        out[d + "/dest"] = os.path.exists(d + "-backup")
    print(json.dumps(out))
"""


def test_a_backup_of_a_damaged_value_is_refused(damaged):
    """The copy is read back before the manifest is written: a damaged value in the source
    is a BackupError naming it (or LMDB's copy refuses it already), and no backup appears."""
    dirs = [str(damaged[n]) for n in ("overflow-size-huge", "overflow-pgno-last-page",
                                      "inline-size-huge")]
    got = run_child(_BACKUP.format(dirs=dirs))
    for d in dirs:
        if d.endswith("pgno-last-page"):  # LMDB's compacting copy follows the page number
            assert got[d].startswith("CorruptionError") and "MDB_INCOMPATIBLE" in got[d]
        else:  # the copy carries the damage; reading it back finds it
            assert got[d].startswith("BackupError") and "llmdsdb check" in got[d], got[d]
        assert got[d + "/dest"] is False
