"""The dependency direction of DESIGN.md: each layer imports only from the layers below."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "llmdsdb"

STRUCTURES = {
    "paged_allocator", "token_lru", "cmsketch", "indexed_heap", "kv_cache", "scheduler",
    "admissions",
}
# module -> the llmdsdb modules and third-party packages it must never import
FORBIDDEN_THIRD_PARTY = {"lmdb", "click"}
ENGINE = {"db", "cli", "backup", "retrieval_pipeline", "inverted_index", "hnsw", "pages"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_structures_import_no_io_and_no_engine(name: str) -> None:
    path = PKG / f"{name}.py"
    if not path.exists():
        pytest.skip(f"{name}.py not written yet")
    for mod in _imports(path):
        top = mod.split(".")[0]
        assert top not in FORBIDDEN_THIRD_PARTY, f"{name} imports {mod}"
        if top == "llmdsdb":
            sub = mod.split(".")[1] if "." in mod else ""
            assert sub not in ENGINE, f"{name} imports the engine module {mod}"


@pytest.mark.parametrize("name", ["analysis", "codec", "pages", "inverted_index", "hnsw"])
def test_lower_layers_do_not_import_cli_or_db(name: str) -> None:
    path = PKG / f"{name}.py"
    if not path.exists():
        pytest.skip(f"{name}.py not written yet")
    for mod in _imports(path):
        assert mod.split(".")[0] != "click", f"{name} imports click"
        assert mod not in {"llmdsdb.db", "llmdsdb.cli", "llmdsdb.backup"}, f"{name} imports {mod}"


def test_lmdb_only_in_storage_modules() -> None:
    allowed = {"backup.py", "cli.py", "storage.py", "storage_files.py", "storage_mapspan.py",
               "storage_txn.py"}
    for path in PKG.glob("*.py"):
        if path.name in allowed:
            continue
        assert "lmdb" not in {m.split(".")[0] for m in _imports(path)}, path.name


@pytest.mark.parametrize("module", ["llmdsdb", "llmdsdb.inverted_index",
                                    "llmdsdb.retrieval_pipeline", "llmdsdb.vector_segment",
                                    "llmdsdb.pages", "llmdsdb.hnsw"])
def test_in_memory_layers_load_no_lmdb(module: str) -> None:
    # DESIGN.md: the in-memory indexes and the pipeline sit below the storage layer; the
    # LMDB page store lives in llmdsdb.lmdb_pages, loaded only by the database
    import subprocess
    import sys

    code = f"import sys, {module}; print('lmdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False", f"importing {module} loads lmdb"


def test_lmdb_page_store_still_reachable_from_pages() -> None:
    from llmdsdb import lmdb_pages, pages

    assert pages.LmdbPageStore is lmdb_pages.LmdbPageStore
