"""Examples and bad input for llmdsdb.kv_cache.KVCache."""

from __future__ import annotations

from array import array

import pytest

import llmdsdb.kv_cache as kv_cache_module
from llmdsdb.errors import (
    DuplicateIdError,
    InvalidArgumentError,
    InvalidTypeError,
    LlmdsdbError,
    NotFoundError,
    OutOfPagesError,
)
from llmdsdb.kv_cache import KVCache, chain_hash

SYSTEM = list(range(100, 108))  # two pages of 4


def state(kv: KVCache):
    return kv.stats(), {s: kv.get(s) for s in kv}


def test_prefix_sharing_counts_and_round_trip() -> None:
    kv = KVCache(page_size=4, max_pages=32)
    for i in range(5):
        kv.attach(i, [i, i, i], prefix_tokens=SYSTEM)
    for i in range(5):
        assert kv.get(i) == SYSTEM + [i, i, i]
    s = kv.stats()
    assert s["pages_used"] == 2 + 5  # the two prefix pages once, one tail each
    assert s["shared_pages"] == 2 and s["hits"] == 8 and s["prefix_hits"] == 8
    assert s["misses"] == 2 and s["hit_rate"] == 0.8
    assert s["page_refs"] == 15 and s["pages_saved"] == 8
    assert s["tokens_stored"] == 55 and s["tokens_unique"] == 8 + 15
    assert s["capacity_tokens"] == 28 and s["dedup_ratio"] == pytest.approx(55 / 23)
    kv._check()


def test_without_sharing_every_sequence_has_its_own_pages() -> None:
    kv = KVCache(page_size=4, max_pages=32, enable_prefix_sharing=False)
    for i in range(5):
        kv.attach(i, [i, i, i], prefix_tokens=SYSTEM)
    s = kv.stats()
    assert s["pages_used"] == 15 and s["shared_pages"] == 0 and s["hits"] == 0
    assert s["dedup_ratio"] == 1.0
    kv._check()


def test_identical_full_pages_dedupe_automatically_but_not_without_dedupe() -> None:
    tokens = list(range(12))
    auto = KVCache(page_size=4, max_pages=32)
    auto.attach(1, tokens)
    auto.attach(2, tokens + [99])
    assert auto.stats()["pages_used"] == 4 and auto.stats()["prefix_hits"] == 0
    explicit = KVCache(page_size=4, max_pages=32, dedupe=False)
    explicit.attach(1, tokens)
    explicit.attach(2, tokens + [99])
    assert explicit.stats()["pages_used"] == 7  # nothing is a prefix: no sharing
    explicit.attach(3, [5], prefix_tokens=tokens[:8])
    explicit.attach(4, [6], prefix_tokens=tokens[:8])
    assert explicit.stats()["pages_used"] == 7 + 2 + 2  # prefix pages shared once
    for kv in (auto, explicit):
        kv._check()


def test_same_page_after_a_different_prefix_is_not_shared() -> None:
    kv = KVCache(page_size=2, max_pages=8)
    kv.attach(1, [1, 1, 5, 5])
    kv.attach(2, [2, 2, 5, 5])  # page [5, 5] follows a different parent: chain differs
    assert kv.stats()["pages_used"] == 4 and kv.stats()["hits"] == 0


def test_detach_frees_when_last_reference_goes() -> None:
    kv = KVCache(page_size=4, max_pages=8)
    kv.attach(1, [1], prefix_tokens=SYSTEM)
    kv.attach(2, [2], prefix_tokens=SYSTEM)
    kv.detach(1)
    assert kv.stats()["pages_used"] == 3 and kv.get(1) is None
    kv.detach(2)
    s = kv.stats()
    assert s["pages_used"] == 0 and s["pages_free"] == 8 and s["sequences"] == 0
    kv.attach(3, SYSTEM)  # the table entries were dropped with the pages
    assert kv.stats()["hits"] == 2 and kv.stats()["misses"] == 4
    kv._check()


def test_out_of_pages_leaves_cache_unchanged() -> None:
    kv = KVCache(page_size=4, max_pages=3)
    kv.attach(1, [1, 2, 3, 4, 5])
    before = state(kv)
    with pytest.raises(OutOfPagesError) as exc:
        kv.attach(2, list(range(20, 32)))
    assert isinstance(exc.value, MemoryError) and isinstance(exc.value, LlmdsdbError)
    assert state(kv) == before
    kv.attach(2, [1, 2, 3, 4, 9])  # the shared page makes it fit
    assert kv.stats()["pages_used"] == 3
    with pytest.raises(OutOfPagesError):
        kv.append(1, [6, 7, 8, 9])
    kv._check()


def test_append_fills_private_tail_in_place_and_dedupes_full_page() -> None:
    kv = KVCache(page_size=4, max_pages=8)
    kv.attach(1, [1, 2, 3, 4])
    kv.attach(2, [1, 2])
    tail = kv.page_table(2)[-1]
    kv.append(2, [3])
    assert kv.page_table(2) == [tail] and kv.get(2) == [1, 2, 3]
    kv.append(2, [4, 5])  # tail becomes [1, 2, 3, 4]: same as seq 1's page, deduped
    assert kv.page_table(2)[0] == kv.page_table(1)[0]
    assert kv.get(2) == [1, 2, 3, 4, 5]
    assert kv.stats()["pages_used"] == 2 and kv.stats()["cow_copies"] == 0
    kv.append(2, [])
    assert kv.seq_len(2) == 5
    kv._check()


def test_fork_shares_tail_and_copies_on_write() -> None:
    kv = KVCache(page_size=4, max_pages=8)
    kv.attach(1, [1, 2, 3, 4, 5, 6])
    kv.fork(1, 2)
    assert kv.page_table(1) == kv.page_table(2) and kv.stats()["shared_pages"] == 2
    kv.append(2, [7])
    assert kv.get(1) == [1, 2, 3, 4, 5, 6] and kv.get(2) == [1, 2, 3, 4, 5, 6, 7]
    assert kv.page_table(1)[-1] != kv.page_table(2)[-1]
    assert kv.stats()["cow_copies"] == 1 and kv.stats()["pages_used"] == 3
    kv.append(1, [8])  # now private again: written in place
    assert kv.stats()["cow_copies"] == 1 and kv.stats()["pages_used"] == 3
    kv._check()


def test_hash_collision_never_returns_wrong_data(monkeypatch) -> None:
    monkeypatch.setattr(kv_cache_module, "chain_hash", lambda parent, tokens: bytes(16))
    kv = KVCache(page_size=2, max_pages=16)
    kv.attach(1, [1, 1, 2, 2])
    kv.attach(2, [3, 3, 2, 2])
    kv.attach(3, [1, 1, 2, 2])
    assert kv.get(1) == [1, 1, 2, 2] and kv.get(2) == [3, 3, 2, 2]
    assert kv.get(3) == [1, 1, 2, 2]
    s = kv.stats()
    assert s["collisions"] >= 1 and s["hits"] == 1  # seq 3 still shares seq 1's first page
    kv._check()


def test_chain_hash_is_stable() -> None:
    # fixed value: the same in every process and on every machine
    assert chain_hash(bytes(16), array("q", [1, 2, 3])).hex() == (
        chain_hash(bytes(16), array("q", [1, 2, 3])).hex()
    )
    assert chain_hash(bytes(16), array("q", [1, 2, 3])) != chain_hash(
        bytes(16), array("q", [1, 2, 4])
    )
    import hashlib

    le = (1).to_bytes(8, "little", signed=True) + (-1).to_bytes(8, "little", signed=True)
    expected = hashlib.blake2b(bytes(16) + le, digest_size=16).digest()
    assert chain_hash(bytes(16), array("q", [1, -1])) == expected


def test_tokens_are_normalised_to_plain_ints() -> None:
    kv = KVCache(page_size=3, max_pages=4)
    kv.attach(1, (5, 6, True), prefix_tokens=array("q", [1]))
    got = kv.get(1)
    assert got == [1, 5, 6, 1] and all(type(t) is int for t in got)
    kv.attach(2, [])
    assert kv.get(2) == [] and kv.page_table(2) == []


def test_mapping_helpers_and_repr() -> None:
    kv = KVCache()
    kv.attach(10, [1])
    assert 10 in kv and "x" not in kv and [] not in kv and list(kv) == [10] and len(kv) == 1
    assert kv.get("nope") is None and kv.get([1]) is None
    assert "KVCache(page_size=512" in repr(kv)
    assert kv.page_size == 512 and kv.allocator.stats().used == 1


@pytest.mark.parametrize(
    "kw, err",
    [
        ({"page_size": 0}, InvalidArgumentError),
        ({"page_size": -4}, InvalidArgumentError),
        ({"max_pages": 0}, InvalidArgumentError),
        ({"page_size": 2.5}, InvalidTypeError),
        ({"max_pages": "10"}, InvalidTypeError),
        ({"enable_prefix_sharing": 1}, InvalidTypeError),
        ({"dedupe": None}, InvalidTypeError),
    ],
)
def test_bad_constructor_arguments(kw, err) -> None:
    with pytest.raises(err):
        KVCache(**kw)


@pytest.mark.parametrize(
    "args, err",
    [
        (("1", [1]), InvalidTypeError),
        ((1.0, [1]), InvalidTypeError),
        ((True, [1]), InvalidTypeError),
        ((5, [1.5]), InvalidTypeError),
        ((5, ["a"]), InvalidTypeError),
        ((5, "abc"), InvalidTypeError),
        ((5, b"abcdefgh"), InvalidTypeError),
        ((5, None), InvalidTypeError),
        ((5, 7), InvalidTypeError),
        ((5, [2**63]), InvalidArgumentError),
        ((5, [1], [None]), InvalidTypeError),
        ((5, [1], "x"), InvalidTypeError),
        ((1, [4]), DuplicateIdError),
    ],
)
def test_bad_attach_leaves_cache_unchanged(args, err) -> None:
    kv = KVCache(page_size=2, max_pages=8)
    kv.attach(1, [1, 2, 3])
    before = state(kv)
    with pytest.raises(err):
        kv.attach(*args)
    assert state(kv) == before
    kv._check()


def test_unknown_and_bad_ids() -> None:
    kv = KVCache(page_size=2, max_pages=8)
    kv.attach(1, [1, 2, 3])
    before = state(kv)
    for call in (lambda: kv.detach(2), lambda: kv.append(2, [1]), lambda: kv.fork(2, 3),
                 lambda: kv.page_table(2), lambda: kv.seq_len(2)):
        with pytest.raises(NotFoundError):
            call()
    # True == 1 as a dict key: detach/append/fork(True, ...) used to act on sequence 1
    for call in (lambda: kv.detach("1"), lambda: kv.detach([1]), lambda: kv.fork(1, "b"),
                 lambda: kv.append(1, [1.5]), lambda: kv.detach(True),
                 lambda: kv.append(True, [9]), lambda: kv.fork(True, 5)):
        with pytest.raises(InvalidTypeError):
            call()
    with pytest.raises(DuplicateIdError):
        kv.fork(1, 1)
    assert state(kv) == before
    kv._check()
