"""Fixtures of the crash tests: one zygote process (tools/stress/crashkit.py) that forks the
writers, with the iotrace shim preloaded when a C compiler is there, and a work directory
(tmpfs when there is one: a kill -9 keeps the page cache either way, and fsync is free)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "stress"))
import crashkit
import iotrace


@pytest.fixture(scope="session")
def crash_work():
    root = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="llmdsdb-crash-", dir=root))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def zygote():
    try:
        so = iotrace.build()
    except RuntimeError:
        so = None
    with crashkit.Zygote(so) as z:
        yield z
