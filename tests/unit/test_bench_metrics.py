"""tools/bench/common.ndcg_at_k on hand-computed examples."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))
import common


def test_perfect_ranking_is_one() -> None:
    assert common.ndcg_at_k(["a", "b", "c"], {"a": 2, "b": 1}) == pytest.approx(1.0)


def test_nothing_relevant_is_zero() -> None:
    assert common.ndcg_at_k(["x", "y"], {}) == 0.0
    assert common.ndcg_at_k(["x", "y"], {"a": 1}) == 0.0


def test_graded_relevance_by_hand() -> None:
    # ranking b(1), a(2): DCG = 1/log2(2) + 2/log2(3); ideal a(2), b(1) = 2 + 1/log2(3)
    got = common.ndcg_at_k(["b", "a"], {"a": 2, "b": 1})
    want = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert got == pytest.approx(want)


def test_cutoff_k() -> None:
    ranked = [f"x{i}" for i in range(10)] + ["a"]
    assert common.ndcg_at_k(ranked, {"a": 1}, k=10) == 0.0
    assert common.ndcg_at_k(ranked, {"a": 1}, k=11) == pytest.approx(1 / math.log2(12))


def test_mean_counts_missing_queries_as_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    assert common.mean_ndcg({"q1": ["a"]}, qrels) == pytest.approx(0.5)
