"""CountMinSketch: examples, stable hashing, bulk paths, merge, aging, bytes, bad input."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from llmdsdb.cmsketch import CountMinSketch
from llmdsdb.errors import (
    CorruptionError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidTypeError,
)


def _zipf(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).zipf(1.3, n) % 50_000


def test_small_stream_is_exact_and_bound_is_epsilon_n() -> None:
    s = CountMinSketch(1024, 4)
    for w in "a b a c a b".split():
        s.add(w)
    assert (s.estimate("a"), s.estimate("b"), s.estimate("c"), s.total) == (3, 2, 1, 6)
    assert s.get_error_bound() == pytest.approx(math.e / 1024 * 6)
    assert s.epsilon == pytest.approx(math.e / 1024) and s.delta == pytest.approx(math.exp(-4))
    assert s.is_hot("a", 3) and not s.is_hot("b", 3)
    s.add("a", 0)
    assert s.estimate("a") == 3


@pytest.mark.parametrize("conservative", [False, True])
def test_never_under_and_error_within_bound_on_zipf(conservative: bool) -> None:
    keys = _zipf(100_000)
    s = CountMinSketch(512, 4, conservative=conservative)
    s.add_many(keys)
    truth = Counter(keys.tolist())
    est = s.estimate_many(np.fromiter(truth, dtype=np.int64))
    exact = np.fromiter(truth.values(), dtype=np.int64)
    assert (est >= exact).all()
    share = float(np.mean(est - exact <= s.get_error_bound()))
    assert share >= 1 - s.delta
    s._check()


def test_conservative_is_tighter_one_by_one() -> None:
    keys = _zipf(5000, seed=1).tolist()
    plain, cu = CountMinSketch(64, 3), CountMinSketch(64, 3, conservative=True)
    for k in keys:
        plain.add(k)
        cu.add(k)
    truth = Counter(keys)
    err_plain = sum(plain.estimate(k) - c for k, c in truth.items())
    err_cu = sum(cu.estimate(k) - c for k, c in truth.items())
    assert all(cu.estimate(k) >= c for k, c in truth.items())
    assert err_cu <= err_plain
    cu._check()


def test_scalar_and_bulk_paths_agree_for_every_key_type() -> None:
    keys = ["", "a", "été", "\ud800", b"", b"a", b"a\x00", 0, 1, -1, 2**63, 2**64 - 1, 2**70,
            -(2**70), True]
    for conservative in (False, True):
        one, bulk = CountMinSketch(97, 5, conservative=conservative, seed=11), CountMinSketch(
            97, 5, conservative=conservative, seed=11)
        for k in keys:
            one.add(k, 2)
        bulk.add_many(keys, 2)
        assert one.estimate_many(keys).tolist() == [one.estimate(k) for k in keys]
        assert bulk.estimate_many(keys).tolist() == [bulk.estimate(k) for k in keys]
        assert all(one.estimate(k) >= 2 for k in keys)
    # ints in numpy arrays of any integer dtype hash like Python ints
    s = CountMinSketch(97, 3)
    s.add_many(np.array([5, 7], dtype=np.int32))
    s.add_many(np.array([5], dtype=np.uint64))
    s.add_many(np.array(["x", "yy"]))
    assert s.estimate(5) == 2 and s.estimate(np.int16(7)) == 1 and s.estimate("yy") == 1
    assert s.estimate_many([]).tolist() == []


def test_str_and_bytes_are_different_keys_and_bools_are_ints() -> None:
    s = CountMinSketch(4096, 4)
    s.add("a", 5)
    assert s.estimate(b"a") == 0
    s.add(True)
    assert s.estimate(1) == 1


def test_hashing_is_stable_across_processes() -> None:
    code = (
        "from llmdsdb.cmsketch import CountMinSketch as C;"
        "s=C(1000, 4, seed=5); print(s._cells('hello'), s._cells(b'hello'), s._cells(12345))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    s = CountMinSketch(1000, 4, seed=5)
    assert outs.pop().strip() == f"{s._cells('hello')} {s._cells(b'hello')} {s._cells(12345)}"
    # a golden value pins the hash scheme itself: changing it breaks stored sketches
    g = CountMinSketch(1000, 4)
    assert g._cells("llmdsdb") == [189, 1130, 2071, 3012]
    assert g._cells(b"llmdsdb") == [82, 1679, 2276, 3873]
    assert g._cells(42) == [413, 1800, 2187, 3574]
    assert g._cells(2**70) == [306, 1235, 2164, 3093]


def test_add_many_with_counts() -> None:
    s = CountMinSketch(256, 4)
    s.add_many(["a", "b", "a"], [1, 2, 3])
    assert s.estimate("a") == 4 and s.estimate("b") == 2 and s.total == 6
    s.add_many(np.arange(3), counts=np.array([0, 1, 2], dtype=np.uint8))
    assert s.estimate_many(np.arange(3)).tolist() == [0, 1, 2]
    s._check()


def test_merge() -> None:
    a, b = CountMinSketch(128, 3, seed=1), CountMinSketch(128, 3, seed=1)
    a.add_many(["x"] * 3)
    b.add_many(["x", "y"])
    a.merge(b)
    assert (a.estimate("x"), a.estimate("y"), a.total) == (4, 1, 5)
    a._check()
    before = a.to_bytes()
    for other, err in [
        (CountMinSketch(128, 3, seed=2), InvalidArgumentError),
        (CountMinSketch(64, 3, seed=1), InvalidArgumentError),
        (CountMinSketch(128, 4, seed=1), InvalidArgumentError),
        ("sketch", InvalidTypeError),
    ]:
        with pytest.raises(err):
            a.merge(other)  # type: ignore[arg-type]
        assert a.to_bytes() == before


def test_age_halves_counters_and_total() -> None:
    s = CountMinSketch(64, 2)
    s.add("k", 9)
    s.add("j", 4)
    s.age()
    assert (s.estimate("k"), s.estimate("j"), s.total) == (4, 2, 6)
    s.halve()
    assert s.estimate("k") == 2
    s._check()
    s.clear()
    assert s.total == 0 and s.estimate("k") == 0


def test_from_error_and_copy() -> None:
    s = CountMinSketch.from_error(0.01, 0.001)
    assert s.width == math.ceil(math.e / 0.01) and s.depth == 7
    assert s.get_error_bound() == 0.0
    s.add("q")
    c = s.copy()
    c.add("q")
    assert (s.estimate("q"), c.estimate("q")) == (1, 2)
    for eps, delta, err in [(0, 0.1, InvalidArgumentError), (1.5, 0.1, InvalidArgumentError),
                            (0.1, 1, InvalidArgumentError), ("0.1", 0.1, InvalidTypeError)]:
        with pytest.raises(err):
            CountMinSketch.from_error(eps, delta)  # type: ignore[arg-type]


def test_bytes_round_trip_uses_narrow_counters() -> None:
    for top in (3, 300, 70_000, 5_000_000_000):
        s = CountMinSketch(100, 3, conservative=True, seed=2**64 - 1)
        s.add("k", top)
        data = s.to_bytes()
        t = CountMinSketch.from_bytes(data)
        t._check()
        assert (t.table == s.table).all() and t.total == top and t.conservative
        assert t.seed == 2**64 - 1 and t.estimate("k") == top
    assert len(CountMinSketch(100, 3).to_bytes()) < 400


def test_from_bytes_rejects_malformed_input() -> None:
    s = CountMinSketch(50, 2)
    s.add("a", 3)
    good = s.to_bytes()
    for bad in (b"", good[:-1], b"NOPE" + good[4:], good + b"\x00"):
        with pytest.raises(CorruptionError):
            CountMinSketch.from_bytes(bad)
    flipped = bytearray(good)
    flipped[40] ^= 0xFF
    with pytest.raises(CorruptionError):
        CountMinSketch.from_bytes(bytes(flipped))
    newer = bytearray(good)
    newer[4] = 2
    with pytest.raises(FormatVersionError):
        CountMinSketch.from_bytes(bytes(newer))
    with pytest.raises(InvalidTypeError):
        CountMinSketch.from_bytes(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "err"),
    [
        ({"width": 0}, InvalidArgumentError),
        ({"width": -4}, InvalidArgumentError),
        ({"depth": 0}, InvalidArgumentError),
        ({"depth": 65}, InvalidArgumentError),
        ({"seed": -1}, InvalidArgumentError),
        ({"width": 10.0}, InvalidTypeError),
        ({"depth": "4"}, InvalidTypeError),
        ({"width": True}, InvalidTypeError),
        ({"conservative": 1}, InvalidTypeError),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict, err: type) -> None:
    with pytest.raises(err):
        CountMinSketch(**kwargs)


def test_bad_input_leaves_sketch_unchanged() -> None:
    s = CountMinSketch(64, 3)
    s.add("a", 2)
    before = s.to_bytes()
    for fn, err in [
        (lambda: s.add(1.5), InvalidTypeError),
        (lambda: s.add(None), InvalidTypeError),
        (lambda: s.add("a", -1), InvalidArgumentError),
        (lambda: s.add("a", 1.0), InvalidTypeError),
        (lambda: s.add(1.5, 0), InvalidTypeError),
        (lambda: s.add_many(["a", 1.5]), InvalidTypeError),
        (lambda: s.add_many([1, 2.5]), InvalidTypeError),
        (lambda: s.add_many(np.array([1.0, 2.0])), InvalidTypeError),
        (lambda: s.add_many(np.zeros((2, 2), dtype=np.int64)), InvalidArgumentError),
        (lambda: s.add_many(["a", "b"], [1]), InvalidArgumentError),
        (lambda: s.add_many(["a", "b"], [1, -1]), InvalidArgumentError),
        (lambda: s.add_many(["a", "b"], [1.0, 2.0]), InvalidTypeError),
        (lambda: s.add_many(["a"], -2), InvalidArgumentError),
        (lambda: s.add_many("abc"), InvalidTypeError),
        (lambda: s.estimate(3.0), InvalidTypeError),
        (lambda: s.estimate_many([object()]), InvalidTypeError),
    ]:
        with pytest.raises(err):
            fn()
        assert s.to_bytes() == before
    assert "CountMinSketch(width=64" in repr(s)
    with pytest.raises(ValueError):
        s.table[0, 0] = 5  # the public table view is read-only


@pytest.mark.parametrize("conservative", [False, True])
def test_counts_that_would_overflow_int64_are_refused_unchanged(conservative: bool) -> None:
    # Each counter is at most the total, so refusing totals past 2**63 - 1 keeps every
    # counter in range; before, add() raised a bare ValueError from the memoryview midway.
    s = CountMinSketch(16, 3, conservative=conservative)
    s.add("a", 2**62)
    before = s.to_bytes()
    for fn in (
        lambda: s.add("a", 2**62),
        lambda: s.add("b", 2**63),
        lambda: s.add_many(["a", "b"], 2**61 + 1),
        lambda: s.add_many(["a", "b"], [2**62, 2**62]),
        lambda: s.add_many(["a", "b"], np.array([2**63, 1], dtype=np.uint64)),
        lambda: s.merge(s.copy()),
    ):
        with pytest.raises(InvalidArgumentError, match="overflow"):
            fn()
        assert s.to_bytes() == before
        s._check()
    s.add("a", 2**62 - 1)  # exactly up to the limit is fine
    assert s.total == 2**63 - 1
    s._check()
