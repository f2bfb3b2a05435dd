"""PagedAllocator: examples, bad input (error type and state unchanged), persistence."""

from __future__ import annotations

import pytest

from llmdsdb.errors import (
    CorruptionError,
    DoubleFreeError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidTypeError,
    OutOfPagesError,
    PageNotFoundError,
)
from llmdsdb.paged_allocator import PagedAllocator, PageStats


def test_alloc_is_contiguous_and_lowest_first() -> None:
    a = PagedAllocator(4096, 100)
    assert a.alloc(3) == [0, 1, 2]
    assert a.alloc(2) == [3, 4]
    assert a.alloc(0) == []
    a.free([1, 2])
    # a 2-page request fits the hole exactly
    assert a.alloc(2) == [1, 2]
    a._check()


def test_multi_page_alloc_prefers_a_slab_that_fits() -> None:
    a = PagedAllocator(4096, 100)
    ids = a.alloc(20)
    a.free([1])  # 1-page hole
    a.free(ids[5:9])  # 4-page hole
    assert a.alloc(3) == [5, 6, 7]
    assert a.alloc(1) in ([1], [8])
    a._check()


def test_alloc_gathers_pieces_when_no_run_fits() -> None:
    a = PagedAllocator(4096, 6)
    a.alloc(6)
    a.free([0, 2, 4])
    got = a.alloc(3)
    assert sorted(got) == [0, 2, 4]
    assert a.stats().used == 6
    a._check()


def test_free_coalesces_and_lowers_high_water() -> None:
    a = PagedAllocator(4096, 2**40)
    ids = a.alloc(10)
    a.free([3, 5, 4])
    s = a.stats()
    assert (s.slabs, s.high_water, s.used) == (1, 10, 7)
    a.free([9, 8, 7, 6])
    assert a.stats().high_water == 3  # 3..9 merged into the tail
    a.free([0, 1, 2])
    assert a.stats() == PageStats(2**40, 0, 2**40, 0, 0.0, 0, 4096)
    assert ids == list(range(10))
    a._check()


def test_stats_fields() -> None:
    a = PagedAllocator(512, 50)
    a.alloc(10)
    a.free([0, 1, 5])
    s = a.stats()
    assert s.total == 50 and s.used == 7 and s.free == 43
    assert s.slabs == 2 and s.high_water == 10
    assert s.fragmentation == pytest.approx(0.3)
    assert s.used_bytes == 7 * 512
    assert len(a) == 7 and 2 in a and 0 not in a and "x" not in a


def test_huge_id_space_is_not_materialised() -> None:
    a = PagedAllocator(4096, 2**40)
    a.alloc(1000)
    assert a.stats().free == 2**40 - 1000
    assert len(a._bits) == 1000
    assert not a.is_allocated(2**40 - 1)


def test_out_of_pages_allocates_nothing() -> None:
    a = PagedAllocator(4096, 8)
    a.alloc(5)
    a.free([1])
    before = a.to_bytes()
    with pytest.raises(OutOfPagesError):
        a.alloc(5)
    assert a.to_bytes() == before
    assert len(a.alloc(4)) == 4
    with pytest.raises(OutOfPagesError):
        a.alloc(1)
    assert isinstance(OutOfPagesError("x"), MemoryError)


@pytest.mark.parametrize(
    ("args", "err"),
    [
        ((0, 10), InvalidArgumentError),
        ((-1, 10), InvalidArgumentError),
        ((4096, 0), InvalidArgumentError),
        ((4096, -5), InvalidArgumentError),
        ((4096, 2**64), InvalidArgumentError),
        ((4096.0, 10), InvalidTypeError),
        ((4096, "10"), InvalidTypeError),
        ((True, 10), InvalidTypeError),
    ],
)
def test_constructor_rejects_bad_sizes(args: tuple, err: type) -> None:
    with pytest.raises(err):
        PagedAllocator(*args)


def test_bad_free_leaves_state_unchanged() -> None:
    a = PagedAllocator(4096, 100)
    a.alloc(10)
    a.free([4])
    before = a.to_bytes()
    cases = [
        ([1, 4], DoubleFreeError),  # 4 already free; 1 must not be freed either
        ([2, 2], DoubleFreeError),
        ([3, 50], PageNotFoundError),  # never allocated
        ([3, 100], PageNotFoundError),  # outside the id space
        ([3, -1], PageNotFoundError),
        ([3, "7"], InvalidTypeError),
        ([3, 1.0], InvalidTypeError),
        ([4], DoubleFreeError),
        ([11], PageNotFoundError),
    ]
    for ids, err in cases:
        with pytest.raises(err):
            a.free(ids)
        assert a.to_bytes() == before, ids
        a._check()
    assert isinstance(PageNotFoundError("x"), KeyError)


def test_bad_alloc_arguments() -> None:
    a = PagedAllocator(4096, 10)
    for n, err in [(-1, InvalidArgumentError), (1.5, InvalidTypeError), ("2", InvalidTypeError)]:
        with pytest.raises(err):
            a.alloc(n)
    with pytest.raises(InvalidTypeError):
        a.is_allocated("3")
    assert a.stats().used == 0


def test_numpy_ints_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    a = PagedAllocator(4096, 10)
    a.alloc(np.int64(3))
    a.free(np.array([0, 2]))
    assert a.is_allocated(np.int64(1)) and not a.is_allocated(np.int32(0))


def test_defragment_moves_top_pages_into_holes() -> None:
    a = PagedAllocator(4096, 1000)
    a.alloc(10)
    a.free([1, 3, 4])
    seen: list[tuple[int, int]] = []
    moves = a.defragment(lambda old, new: seen.append((old, new)))
    assert moves == {7: 1, 8: 3, 9: 4}
    assert seen == sorted(moves.items())
    assert all(a.is_allocated(i) for i in range(7)) and not a.is_allocated(7)
    assert a.stats().fragmentation == 0.0 and a.stats().slabs == 0
    assert a.defragment() == {}
    a._check()


def test_defragment_callback_error_leaves_state() -> None:
    a = PagedAllocator(4096, 100)
    a.alloc(5)
    a.free([0])
    before = a.to_bytes()

    def boom(old: int, new: int) -> None:
        raise RuntimeError("relocation failed")

    with pytest.raises(RuntimeError):
        a.defragment(boom)
    assert a.to_bytes() == before


def test_bytes_round_trip_is_exact_and_compact() -> None:
    a = PagedAllocator(8192, 2**40)
    a.alloc(100_000)
    a.free(list(range(10, 20)) + [500, 501, 99_000])
    data = a.to_bytes()
    assert len(data) < 200  # O(slabs), not O(pages)
    b = PagedAllocator.from_bytes(data)
    b._check()
    assert b.stats() == a.stats()
    assert b.to_bytes() == data
    assert b.alloc(3) == a.alloc(3)


def test_from_bytes_rejects_malformed_input() -> None:
    a = PagedAllocator(4096, 100)
    a.alloc(10)
    a.free([2, 3])
    good = a.to_bytes()
    with pytest.raises(CorruptionError):
        PagedAllocator.from_bytes(good[:-1])
    with pytest.raises(CorruptionError):
        PagedAllocator.from_bytes(b"")
    with pytest.raises(CorruptionError):
        PagedAllocator.from_bytes(b"XXXX" + good[4:])
    flipped = bytearray(good)
    flipped[20] ^= 1
    with pytest.raises(CorruptionError):
        PagedAllocator.from_bytes(bytes(flipped))
    newer = bytearray(good)
    newer[4] = 99
    with pytest.raises(FormatVersionError):
        PagedAllocator.from_bytes(bytes(newer))
    with pytest.raises(InvalidTypeError):
        PagedAllocator.from_bytes("not bytes")  # type: ignore[arg-type]


def test_from_bytes_rejects_a_consistent_checksum_over_an_impossible_state() -> None:
    import struct
    import zlib

    head = struct.pack("<4sBQQQQQ", b"LDPA", 1, 4096, 100, 10, 9, 1)
    body = struct.pack("<2Q", 8, 2)  # a slab ending at the high-water mark is impossible
    payload = head + body
    with pytest.raises(CorruptionError):
        PagedAllocator.from_bytes(payload + struct.pack("<I", zlib.crc32(payload)))


def test_defragment_in_parts_with_pinned_pages() -> None:
    """defragment(max_moves=, pinned=) in several calls ends as one call would: the live
    ids dense below ``used`` except pinned ones, every live page moved exactly once."""
    import random

    from llmdsdb.paged_allocator import PagedAllocator

    for seed in range(30):
        rng = random.Random(seed)
        a = PagedAllocator(4096, 10_000)
        ids = a.alloc(rng.randint(1, 300))
        dead = rng.sample(ids, rng.randint(0, len(ids)))
        a.free(dead)
        live = set(ids) - set(dead)
        pinned = set(rng.sample(sorted(live), min(len(live), rng.randint(0, 3))))
        where = {p: p for p in live}  # original id -> current id
        while True:
            moves = a.defragment(max_moves=rng.randint(1, 20), pinned=pinned)
            a._check()
            if not moves:
                break
            assert not set(moves) & pinned and not set(moves.values()) & set(where.values())
            back = {v: k for k, v in where.items()}
            for old, new in moves.items():
                where[back[old]] = new
        assert len(set(where.values())) == len(where)  # no two pages share an id
        assert all(a.is_allocated(p) for p in where.values()) and a.used == len(live)
        assert all(where[p] == p for p in pinned)
        free_below = [p for p in range(a.used) if not a.is_allocated(p)]
        pinned_above = [p for p in pinned if p >= a.used]
        assert len(free_below) == len(pinned_above)  # only pinned pages keep holes open
