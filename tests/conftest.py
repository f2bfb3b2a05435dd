"""Shared fixtures: hypothesis profiles, a fake clock, temporary database paths, data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LLMDSDB_DATA", REPO.parent / "shared" / "data"))


class FakeClock:
    """A monotonic clock the test advances by hand (seconds, float)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def data_dir() -> Path:
    """The evaluation data; tests that need it skip with a reason when it is absent."""
    if not (DATA / "scifact" / "corpus.jsonl.gz").exists():
        pytest.skip(f"evaluation data not found at {DATA} (set LLMDSDB_DATA)")
    return DATA
