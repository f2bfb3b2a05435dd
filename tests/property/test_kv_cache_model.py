"""KVCache against a dict of token tuples, with KVCache._check() as the invariant.

With sharing and dedupe on (and the real hash), the page count is predicted exactly: one
page per distinct full-page chain (the tokens up to and including that page) plus one per
distinct partial tail (tails are only shared by fork). That also predicts when an attach or
append must raise OutOfPagesError. A second machine replaces the chain hash with a terrible
one, so that almost every lookup is a collision that verification must reject.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import llmdsdb.kv_cache as kv_cache_module
from llmdsdb.errors import DuplicateIdError, NotFoundError, OutOfPagesError
from llmdsdb.kv_cache import KVCache

TOKENS = st.lists(st.integers(0, 2), max_size=9)
PREFIXES = [None, (), (7, 7, 7), (7, 7, 7, 8, 8, 8, 9), (1, 2, 3, 4, 5, 6)]
IDS = st.integers(0, 7)


class KVCacheMachine(RuleBasedStateMachine):
    @initialize(
        page_size=st.integers(1, 4),
        max_pages=st.integers(4, 24),
        sharing=st.booleans(),
        dedupe=st.booleans(),
    )
    def setup(self, page_size: int, max_pages: int, sharing: bool, dedupe: bool) -> None:
        self.ps, self.max_pages = page_size, max_pages
        self.kv = KVCache(page_size, max_pages, sharing, dedupe=dedupe)
        self.exact = sharing and dedupe and not self.weak_hash
        self.model: dict[int, tuple[int, ...]] = {}
        self.tails: dict[int, int | None] = {}  # seq -> identity of its partial tail page
        self.fresh = itertools.count()

    weak_hash = False

    def tail(self, tokens: tuple[int, ...]) -> int | None:
        return next(self.fresh) if len(tokens) % self.ps else None

    def expected_pages(self, model, tails) -> int:
        ps = self.ps
        chains = {toks[: k * ps] for toks in model.values() for k in range(1, len(toks) // ps + 1)}
        return len(chains) + len({t for t in tails.values() if t is not None})

    def snapshot(self):
        return self.kv.stats(), {s: self.kv.get(s) for s in self.model}

    @rule(seq=IDS, kv=TOKENS, prefix=st.sampled_from(PREFIXES))
    def attach(self, seq: int, kv: list[int], prefix) -> None:
        if seq in self.model:
            before = self.snapshot()
            with pytest.raises(DuplicateIdError):
                self.kv.attach(seq, kv, prefix_tokens=None if prefix is None else list(prefix))
            assert self.snapshot() == before
            return
        full = (prefix or ()) + tuple(kv)
        new_model = {**self.model, seq: full}
        new_tails = {**self.tails, seq: self.tail(full)}
        must_fail = self.exact and self.expected_pages(new_model, new_tails) > self.max_pages
        before = self.snapshot()
        try:
            self.kv.attach(seq, kv, prefix_tokens=None if prefix is None else list(prefix))
        except OutOfPagesError:
            assert self.snapshot() == before
            if self.exact:
                assert must_fail
            return
        assert not must_fail
        self.model, self.tails = new_model, new_tails

    @rule(seq=IDS, extra=TOKENS)
    def append(self, seq: int, extra: list[int]) -> None:
        if seq not in self.model:
            with pytest.raises(NotFoundError):
                self.kv.append(seq, extra)
            return
        full = self.model[seq] + tuple(extra)
        new_model = {**self.model, seq: full}
        new_tails = dict(self.tails)
        if extra:
            new_tails[seq] = self.tail(full)
        must_fail = self.exact and self.expected_pages(new_model, new_tails) > self.max_pages
        before = self.snapshot()
        try:
            self.kv.append(seq, extra)
        except OutOfPagesError:
            assert self.snapshot() == before
            if self.exact:
                assert must_fail
            return
        assert not must_fail
        self.model, self.tails = new_model, new_tails

    @rule(src=IDS, dst=IDS)
    def fork(self, src: int, dst: int) -> None:
        before = self.snapshot()
        if src not in self.model:
            with pytest.raises(NotFoundError):
                self.kv.fork(src, dst)
        elif dst in self.model:
            with pytest.raises(DuplicateIdError):
                self.kv.fork(src, dst)
        else:
            self.kv.fork(src, dst)
            self.model[dst] = self.model[src]
            self.tails[dst] = self.tails[src]
            return
        assert self.snapshot() == before

    @rule(seq=IDS)
    def detach(self, seq: int) -> None:
        if seq not in self.model:
            before = self.snapshot()
            with pytest.raises(NotFoundError):
                self.kv.detach(seq)
            assert self.snapshot() == before
            assert self.kv.get(seq) is None
            return
        self.kv.detach(seq)
        del self.model[seq]
        del self.tails[seq]

    @precondition(lambda self: not self.model)
    @rule()
    def empty_cache_holds_no_pages(self) -> None:
        s = self.kv.stats()
        assert s["pages_used"] == 0 and s["pages_free"] == self.max_pages

    @invariant()
    def matches_model(self) -> None:
        kv = self.kv
        kv._check()
        for seq, toks in self.model.items():
            assert kv.get(seq) == list(toks)
            assert kv.seq_len(seq) == len(toks)
        assert sorted(kv) == sorted(self.model) and len(kv) == len(self.model)
        s = kv.stats()
        assert s["tokens_stored"] == sum(len(t) for t in self.model.values())
        assert s["pages_used"] <= sum(-(-len(t) // self.ps) for t in self.model.values())
        assert s["pages_used"] + s["pages_free"] == self.max_pages
        if self.exact:
            assert s["pages_used"] == self.expected_pages(self.model, self.tails)
            assert s["collisions"] == 0


class WeakHashKVCacheMachine(KVCacheMachine):
    """Every chain hash is the same value: a lookup finds whichever page holds the table
    entry, and verification must reject it unless it really is the same page."""

    weak_hash = True

    @initialize()
    def patch_hash(self) -> None:
        self.saved = kv_cache_module.chain_hash
        kv_cache_module.chain_hash = lambda parent, tokens: bytes(16)

    def teardown(self) -> None:
        if hasattr(self, "saved"):
            kv_cache_module.chain_hash = self.saved


TestKVCacheMachine = KVCacheMachine.TestCase
TestWeakHashKVCacheMachine = WeakHashKVCacheMachine.TestCase
# the collision path is narrow; half the profile's examples cover it and keep the suite quick
TestWeakHashKVCacheMachine.settings = settings(
    max_examples=max(20, settings.default.max_examples // 2)
)
