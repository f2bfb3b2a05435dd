"""TokenLRU against a reference model: an OrderedDict with front-popping eviction."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from llmdsdb.errors import BudgetExceededError
from llmdsdb.token_lru import TokenLRU

keys = st.integers(0, 12)
values = st.text(alphabet="xy", max_size=12)


class LRUMachine(RuleBasedStateMachine):
    @initialize(budget=st.integers(1, 30))
    def setup(self, budget: int) -> None:
        self.budget = budget
        self.evicted: list[tuple[int, str]] = []
        self.c: TokenLRU[int, str] = TokenLRU(
            budget, len, on_evict=lambda k, v: self.evicted.append((k, v))
        )
        self.model: OrderedDict[int, str] = OrderedDict()
        self.hits = self.misses = 0

    def _model_evict(self, target: int) -> list[tuple[int, str]]:
        out = []
        while sum(map(len, self.model.values())) > target:
            out.append(self.model.popitem(last=False))
        return out

    @rule(k=keys, v=values)
    def put(self, k: int, v: str) -> None:
        if len(v) > self.budget:
            snapshot = list(self.c.items())
            try:
                self.c.put(k, v)
            except BudgetExceededError:
                assert list(self.c.items()) == snapshot
                return
            raise AssertionError("oversized put accepted")
        self.evicted.clear()
        out = self.c.put(k, v)
        self.model[k] = v
        self.model.move_to_end(k)
        expect = self._model_evict(self.budget)
        assert out == expect == self.evicted

    @rule(k=keys)
    def get(self, k: int) -> None:
        got = self.c.get(k)
        if k in self.model:
            self.model.move_to_end(k)
            self.hits += 1
            assert got == self.model[k]
        else:
            self.misses += 1
            assert got is None

    @rule(k=keys)
    def peek(self, k: int) -> None:
        assert self.c.peek(k) == self.model.get(k)

    @rule(k=keys)
    def discard(self, k: int) -> None:
        assert self.c.discard(k) == (self.model.pop(k, None) is not None)

    @rule(t=st.integers(0, 30))
    def evict_until(self, t: int) -> None:
        assert self.c.evict_until_budget(t) == self._model_evict(t)

    @rule()
    def peek_lru(self) -> None:
        expect = next(iter(self.model.items()), None)
        assert self.c.peek_lru() == expect

    @invariant()
    def agrees_with_model(self) -> None:
        self.c._check()
        assert list(self.c.keys()) == list(self.model.keys())
        assert [self.c.peek(k) for k in self.model] == list(self.model.values())
        assert self.c.total_tokens() == sum(map(len, self.model.values()))
        assert (self.c.hits, self.c.misses) == (self.hits, self.misses)


TestLRUMachine = LRUMachine.TestCase
