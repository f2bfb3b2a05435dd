"""PagedAllocator against a reference model: a set of free ids (plus the live set)."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from llmdsdb.errors import DoubleFreeError, OutOfPagesError, PageNotFoundError
from llmdsdb.paged_allocator import PagedAllocator

MAX = 64


class AllocatorMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.a = PagedAllocator(4096, MAX)
        self.free_ids = set(range(MAX))  # the model

    @rule(n=st.integers(0, 12))
    def alloc(self, n: int) -> None:
        if n > len(self.free_ids):
            before = self.a.to_bytes()
            try:
                self.a.alloc(n)
            except OutOfPagesError:
                assert self.a.to_bytes() == before
                return
            raise AssertionError("alloc beyond capacity did not raise")
        ids = self.a.alloc(n)
        assert len(ids) == n == len(set(ids))
        assert set(ids) <= self.free_ids
        # a run is contiguous whenever the model had a free run of n ids at the time
        self.free_ids -= set(ids)

    @precondition(lambda self: len(self.free_ids) < MAX)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        live = sorted(set(range(MAX)) - self.free_ids)
        ids = data.draw(st.lists(st.sampled_from(live), unique=True, max_size=8))
        self.a.free(ids)
        self.free_ids |= set(ids)

    @rule(data=st.data())
    def bad_free(self, data: st.DataObject) -> None:
        live = sorted(set(range(MAX)) - self.free_ids)
        good = data.draw(st.lists(st.sampled_from(live), unique=True, max_size=3)) if live else []
        bad = data.draw(st.sampled_from(sorted(self.free_ids) + [MAX, -1]))
        before = self.a.to_bytes()
        try:
            self.a.free(good + [bad])
        except (DoubleFreeError, PageNotFoundError):
            pass
        else:
            raise AssertionError(f"free of {bad} did not raise")
        assert self.a.to_bytes() == before

    @rule()
    def defragment(self) -> None:
        used = MAX - len(self.free_ids)
        moves = self.a.defragment()
        live = set(range(MAX)) - self.free_ids
        assert set(moves) <= live and not set(moves.values()) & live
        live = {moves.get(p, p) for p in live}
        assert live == set(range(used))
        self.free_ids = set(range(MAX)) - live

    @rule()
    def reload(self) -> None:
        self.a = PagedAllocator.from_bytes(self.a.to_bytes())

    @invariant()
    def agrees_with_model(self) -> None:
        self.a._check()
        for p in range(MAX):
            assert self.a.is_allocated(p) == (p not in self.free_ids)
        s = self.a.stats()
        assert s.used == MAX - len(self.free_ids) and s.free == len(self.free_ids)


TestAllocatorMachine = AllocatorMachine.TestCase
