"""IndexedHeap against a reference model: a dict of key -> score, popping with min/max."""

from __future__ import annotations

import math

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from llmdsdb.errors import (
    DuplicateIdError,
    EmptyError,
    InvalidArgumentError,
    NonFiniteError,
    NotFoundError,
)
from llmdsdb.indexed_heap import IndexedHeap

keys = st.integers(0, 30)
scores = st.one_of(st.integers(-20, 20), st.floats(-1e6, 1e6), st.just(math.inf))


def _state(h: IndexedHeap) -> tuple:
    return list(h._scores), list(h._keys), dict(h._pos)


class HeapMachine(RuleBasedStateMachine):
    @initialize(max_heap=st.booleans())
    def setup(self, max_heap: bool) -> None:
        self.h = IndexedHeap(max_heap=max_heap)
        self.best = max if max_heap else min
        self.model: dict[int, float] = {}

    @rule(k=keys, s=scores)
    def push(self, k: int, s: float) -> None:
        if k in self.model:
            before = _state(self.h)
            try:
                self.h.push(k, s)
            except DuplicateIdError:
                assert _state(self.h) == before
                return
            raise AssertionError("duplicate push did not raise")
        self.h.push(k, s)
        self.model[k] = s

    @rule()
    def pop(self) -> None:
        if not self.model:
            try:
                self.h.pop()
            except EmptyError:
                return
            raise AssertionError("pop of empty did not raise")
        s, k = self.h.pop()
        assert s == self.best(self.model.values())
        assert self.model.pop(k) == s

    @precondition(lambda self: self.model)
    @rule(data=st.data(), s=scores)
    def update(self, data: st.DataObject, s: float) -> None:
        k = data.draw(st.sampled_from(sorted(self.model)))
        self.h.update(k, s)
        self.model[k] = s

    @precondition(lambda self: self.model)
    @rule(data=st.data(), d=st.integers(-5, 5))
    def decrease_or_increase(self, data: st.DataObject, d: int) -> None:
        k = data.draw(st.sampled_from(sorted(self.model)))
        new = self.model[k] + d
        before = _state(self.h)
        op = self.h.decrease_key if data.draw(st.booleans()) else self.h.increase_key
        wrong_way = (op == self.h.decrease_key and d > 0) or (op == self.h.increase_key and d < 0)
        if wrong_way and new != self.model[k]:
            try:
                op(k, new)
            except InvalidArgumentError:
                assert _state(self.h) == before
                return
            raise AssertionError("key moved the wrong way without an error")
        op(k, new)
        self.model[k] = new

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        k = data.draw(st.sampled_from(sorted(self.model)))
        assert self.h.delete(k) == (self.model.pop(k), k)

    @rule(k=st.integers(31, 40))
    def unknown_key(self, k: int) -> None:
        before = _state(self.h)
        for op in (self.h.decrease_key, self.h.increase_key, self.h.update):
            try:
                op(k, 0.0)
            except NotFoundError:
                pass
            else:
                raise AssertionError("unknown key did not raise")
        try:
            self.h.delete(k)
        except NotFoundError:
            pass
        else:
            raise AssertionError("delete of unknown key did not raise")
        assert self.h.get_score(k) is None
        assert _state(self.h) == before

    @rule(k=keys)
    def nan_score(self, k: int) -> None:
        before = _state(self.h)
        op = self.h.update if k in self.model else self.h.push
        try:
            op(k, math.nan)
        except NonFiniteError:
            pass
        else:
            raise AssertionError("NaN accepted")
        assert _state(self.h) == before

    @invariant()
    def agrees_with_model(self) -> None:
        self.h._check()
        assert len(self.h) == len(self.model)
        for k, s in self.model.items():
            assert k in self.h and self.h.get_score(k) == s
        if self.model:
            assert self.h.peek()[0] == self.best(self.model.values())


TestHeapMachine = HeapMachine.TestCase
