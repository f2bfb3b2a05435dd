"""LmdbPageStore on real LMDB files: a stateful model test (dict of committed pages, with
aborted batches and reopen), corruption naming the page, cache invalidation across
processes, and the PageStore protocol."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from llmdsdb.errors import (
    ClosedError,
    CorruptionError,
    DoubleFreeError,
    InvalidTypeError,
    PageNotFoundError,
    ReadOnlyError,
)
from llmdsdb.pages import LmdbPageStore, PageCache, PageStore
from llmdsdb.storage import Environment, u64key

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Abort(Exception):
    """Raised inside a batch to make it roll back."""


# an op: ("alloc", n) | ("put", pick, data) | ("free", pick) | ("meta", name, data)
op_strategy = st.one_of(
    st.tuples(st.just("alloc"), st.integers(1, 4)),
    st.tuples(st.just("put"), st.integers(0, 10**6), st.binary(max_size=300)),
    st.tuples(st.just("free"), st.integers(0, 10**6)),
    st.tuples(st.just("meta"), st.sampled_from(["a", "b", "bm25/dir"]), st.binary(max_size=50)),
    st.tuples(st.just("put_many"), st.lists(st.tuples(st.integers(0, 10**6),
                                                      st.binary(max_size=300)), max_size=5),
              st.sampled_from([None, False])),
)


class PageStoreMachine(RuleBasedStateMachine):
    """Model: committed pages {id: bytes}, allocated ids without a page yet, meta records."""

    @initialize()
    def setup(self):
        self.tmp = tempfile.mkdtemp(prefix="llmdsdb-pages-")
        self.path = os.path.join(self.tmp, "db")
        self._open()
        self.pages: dict[int, bytes] = {}
        self.empty: set[int] = set()  # allocated, never written
        self.meta: dict[str, bytes] = {}

    def _open(self):
        self.env = Environment.open(self.path, map_size_bytes=1 << 20)
        self.cache = PageCache(2000)  # small: admission and eviction both happen
        self.store = LmdbPageStore(self.env, self.cache, name_prefix="t/")

    def teardown(self):
        self.store.close()
        self.env.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _apply(self, ops, pages, empty, meta, abort):
        """Run the ops against the store (in the bound txn) and against copies of the
        model; returns the new model state."""
        pages, empty, meta = dict(pages), set(empty), dict(meta)

        def fn(txn):
            p, e, m = dict(pages), set(empty), dict(meta)
            with self.store.bound(txn):
                for op in ops:
                    live = sorted(set(p) | e)
                    if op[0] == "alloc":
                        ids = self.store.alloc(op[1])
                        assert len(ids) == op[1] and not set(ids) & set(live)
                        e.update(ids)
                    elif op[0] == "put" and live:
                        pid = live[op[1] % len(live)]
                        self.store.put(pid, op[2])
                        p[pid] = op[2]
                        e.discard(pid)
                        assert self.store.load(pid, bytes) == op[2]  # sees its own write
                    elif op[0] == "put_many" and live:
                        items = {live[k % len(live)]: d for k, d in op[1]}  # one per id
                        self.store.put_many(list(items), list(items.values()), compress=op[2])
                        for pid, data in items.items():
                            p[pid] = data
                            e.discard(pid)
                            assert self.store.load(pid, bytes) == data
                    elif op[0] == "free" and live:
                        pid = live[op[1] % len(live)]
                        self.store.free([pid])
                        p.pop(pid, None)
                        e.discard(pid)
                    elif op[0] == "meta":
                        self.store.put_meta(op[1], op[2])
                        m[op[1]] = op[2]
                if abort:
                    raise Abort
            return p, e, m

        try:
            return self.env.run_write(fn)
        except Abort:
            return pages, empty, meta

    @rule(ops=st.lists(op_strategy, max_size=8))
    def commit_batch(self, ops):
        self.pages, self.empty, self.meta = self._apply(ops, self.pages, self.empty,
                                                        self.meta, abort=False)

    @rule(ops=st.lists(op_strategy, min_size=1, max_size=8))
    def aborted_batch(self, ops):
        before = (dict(self.pages), set(self.empty), dict(self.meta))
        assert self._apply(ops, self.pages, self.empty, self.meta, abort=True) == before

    @rule()
    def reopen(self):
        self.store.close()
        self.env.close()
        self._open()

    @precondition(lambda self: self.pages)
    @rule(pick=st.integers(0, 10**6))
    def load_twice(self, pick):
        pid = sorted(self.pages)[pick % len(self.pages)]
        with self.env.read() as txn, self.store.bound(txn):
            assert self.store.load(pid, bytes) == self.pages[pid]
            assert self.store.load(pid, bytes) == self.pages[pid]

    @invariant()
    def matches_model(self):
        with self.env.read() as txn, self.store.bound(txn):
            assert len(self.store) == len(self.pages)  # the stored page count (put_many too)
            for pid, data in self.pages.items():
                assert self.store.get(pid) == data
                assert self.store.load(pid, bytes) == data
            for pid in self.empty:
                with pytest.raises(PageNotFoundError):
                    self.store.get(pid)
            assert sorted(self.store.page_ids()) == sorted(self.pages)
            alloc = self.store.allocator
            assert alloc.stats().used == len(self.pages) + len(self.empty)
            for pid in self.pages.keys() | self.empty:
                assert alloc.is_allocated(pid)
            for name, data in self.meta.items():
                assert self.store.get_meta(name) == data
            assert sorted(self.store.meta_names()) == sorted(self.meta)
            if not self.empty:
                assert self.store.check() == []
            alloc._check()
        self.store._check()


TestPageStoreMachine = PageStoreMachine.TestCase
TestPageStoreMachine.settings = settings(max_examples=20, stateful_step_count=10,
                                         deadline=None)


@pytest.fixture
def env(tmp_path):
    e = Environment.open(str(tmp_path / "db"), map_size_bytes=1 << 20)
    yield e
    e.close()


def test_protocol_and_errors(env):
    store = LmdbPageStore(env, PageCache(1 << 16))
    assert isinstance(store, PageStore)
    with pytest.raises(ClosedError, match="outside a transaction"):
        store.get(0)

    def fn(txn):
        with store.bound(txn):
            ids = store.alloc(2)
            store.put(ids[0], b"a")
            with pytest.raises(PageNotFoundError):
                store.put(999, b"x")
            with pytest.raises(InvalidTypeError):
                store.put(ids[0], "text")  # type: ignore[arg-type]
            with pytest.raises(DoubleFreeError):
                store.free([ids[0], ids[0]])
            with pytest.raises(PageNotFoundError):
                store.free([ids[0], 12345])
            assert store.get(ids[0]) == b"a"  # the failed frees changed nothing
            with pytest.raises(PageNotFoundError):  # all checked before anything is written
                store.put_many([ids[1], 999], [b"y", b"x"])
            with pytest.raises(InvalidTypeError):
                store.put_many([ids[1]], ["text"])  # type: ignore[list-item]
            with pytest.raises(InvalidTypeError):
                store.put_many([ids[1]], [])
            with pytest.raises(PageNotFoundError):
                store.get(ids[1])
            with pytest.raises(InvalidTypeError):
                store.put_meta(7, b"x")  # type: ignore[arg-type]  (was a bare TypeError)
            with pytest.raises(InvalidTypeError):
                store.put_meta("k", 5)  # type: ignore[arg-type]
            assert store.meta_names() == []
            return ids

    ids = env.run_write(fn)
    with env.read() as txn, store.bound(txn):
        with pytest.raises(ReadOnlyError):
            store.put(ids[0], b"b")
        with pytest.raises(ReadOnlyError):
            store.alloc(1)
        assert store.get(ids[0]) == b"a" and len(store) == 1
        assert store.check() == ["allocator: 2 page ids allocated but 1 pages stored"]


def test_corrupt_page_names_its_id(env):
    store = LmdbPageStore(env, PageCache(1 << 16))

    def fn(txn):
        with store.bound(txn):
            (pid,) = store.alloc(1)
            store.put(pid, b"postings " * 40)
            return pid

    pid = env.run_write(fn)
    with env.read() as txn:
        raw = bytearray(txn.raw_get("pages", u64key(pid)))
    raw[-3] ^= 0x01
    env.run_write(lambda t: t.raw_put("pages", u64key(pid), bytes(raw)))
    with env.read() as txn, store.bound(txn):
        with pytest.raises(CorruptionError, match=f"page {pid}"):
            store.load(pid, bytes)
        assert any(f"page {pid}" in p for p in store.check())


def test_aborted_write_leaves_allocator_and_cache_consistent(env):
    cache = PageCache(1 << 16)
    store = LmdbPageStore(env, cache)

    def first(txn):
        with store.bound(txn):
            (pid,) = store.alloc(1)
            store.put(pid, b"v1")
            return pid

    pid = env.run_write(first)
    with env.read() as txn, store.bound(txn):
        assert store.load(pid, bytes) == b"v1"  # now cached

    def second(txn):
        with store.bound(txn):
            store.put(pid, b"v2")
            assert store.load(pid, bytes) == b"v2"
            store.alloc(5)
            raise Abort

    with pytest.raises(Abort):
        env.run_write(second)
    with env.read() as txn, store.bound(txn):
        assert store.load(pid, bytes) == b"v1"
        assert store.allocator.stats().used == 1

    def third(txn):
        with store.bound(txn):
            store.put(pid, b"v3")
            return store.alloc(1)

    assert env.run_write(third) == [pid + 1]
    with env.read() as txn, store.bound(txn):
        assert store.load(pid, bytes) == b"v3"  # the commit dropped the cached v1


def test_commit_by_another_process_invalidates_cached_pages(env):
    store = LmdbPageStore(env, PageCache(1 << 16))

    def fn(txn):
        with store.bound(txn):
            (pid,) = store.alloc(1)
            store.put(pid, b"old")
            return pid

    pid = env.run_write(fn)
    with env.read() as txn, store.bound(txn):
        assert store.load(pid, bytes) == b"old"
    code = f"""
        from llmdsdb.storage import Environment
        from llmdsdb.pages import LmdbPageStore, PageCache
        env = Environment.open({env.path!r})
        store = LmdbPageStore(env, PageCache(1 << 16))
        def fn(txn):
            with store.bound(txn):
                store.put({pid}, b"new")
        env.run_write(fn)
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, check=True,
                   timeout=60)
    with env.read() as txn, store.bound(txn):
        assert store.load(pid, bytes) == b"new"


def test_reader_on_older_snapshot_bypasses_cache(env):
    store = LmdbPageStore(env, PageCache(1 << 16))

    def fn(txn):
        with store.bound(txn):
            (pid,) = store.alloc(1)
            store.put(pid, b"old")
            return pid

    pid = env.run_write(fn)
    with env.read() as old:
        def update(txn):
            with store.bound(txn):
                store.put(pid, b"new")

        env.run_write(update)
        with env.read() as new, store.bound(new):
            assert store.load(pid, bytes) == b"new"  # cached at the new epoch
        with store.bound(old):
            assert store.load(pid, bytes) == b"old"  # its own snapshot, not the cache
    assert store.cache.stats().bypassed >= 1
