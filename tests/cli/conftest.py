"""Fixtures for the command-line tests (helpers live in cli_helpers.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import make_records, run_cli, write_jsonl


@pytest.fixture
def cli_run() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A 60-document JSONL file with 8-d embeddings."""
    return write_jsonl(tmp_path / "docs.jsonl", make_records(60))
