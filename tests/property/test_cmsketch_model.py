"""CountMinSketch against a reference model: collections.Counter.

Every estimate is >= the true count; the share of keys whose over-estimate is within
eps*N is at least 1 - delta (checked where the key population is large enough for a share to
mean something); aging and merging keep the never-under property against a halved / summed
Counter; a bytes round trip is exact.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from llmdsdb.cmsketch import CountMinSketch

keys = st.one_of(st.integers(-5, 200), st.text(max_size=3), st.binary(max_size=3))


class SketchMachine(RuleBasedStateMachine):
    @initialize(
        width=st.integers(8, 64), depth=st.integers(1, 5), conservative=st.booleans(),
        seed=st.integers(0, 2**64 - 1),
    )
    def setup(self, width: int, depth: int, conservative: bool, seed: int) -> None:
        self.s = CountMinSketch(width, depth, conservative=conservative, seed=seed)
        self.model: Counter[object] = Counter()

    @rule(k=keys, c=st.integers(0, 5))
    def add(self, k: object, c: int) -> None:
        self.s.add(k, c)
        self.model[k] += c

    @rule(ks=st.lists(keys, max_size=20), data=st.data())
    def add_many(self, ks: list[object], data: st.DataObject) -> None:
        if data.draw(st.booleans()):
            counts = data.draw(st.lists(st.integers(0, 4), min_size=len(ks), max_size=len(ks)))
            self.s.add_many(ks, counts)
        else:
            counts = [1] * len(ks)
            self.s.add_many(ks)
        for k, c in zip(ks, counts):
            self.model[k] += c

    @rule()
    def age(self) -> None:
        self.s.age()
        self.model = Counter({k: c // 2 for k, c in self.model.items()})

    @rule(ks=st.lists(keys, max_size=10))
    def merge(self, ks: list[object]) -> None:
        other = CountMinSketch(
            self.s.width, self.s.depth, conservative=self.s.conservative, seed=self.s.seed
        )
        other.add_many(ks)
        self.s.merge(other)
        self.model.update(ks)

    @rule()
    def reload(self) -> None:
        data = self.s.to_bytes()
        self.s = CountMinSketch.from_bytes(data)
        assert self.s.to_bytes() == data

    @invariant()
    def never_under(self) -> None:
        self.s._check()
        if not self.model:
            return
        ks = list(self.model)
        est = self.s.estimate_many(ks).tolist()
        assert est == [self.s.estimate(k) for k in ks]
        for k, e in zip(ks, est):
            assert e >= self.model[k], (k, e, self.model[k])


TestSketchMachine = SketchMachine.TestCase
# each step runs numpy on a whole table; 30 steps per example keep this file a few seconds
TestSketchMachine.settings = settings(settings.default, stateful_step_count=30)


def test_error_within_eps_n_for_at_least_one_minus_delta_share() -> None:
    """The probabilistic bound, on many independent seeds over a skewed stream."""
    import numpy as np

    rng = np.random.default_rng(1)
    stream = (rng.zipf(1.1, 20_000) % 5000).tolist()
    truth = Counter(stream)
    ks = list(truth)
    exact = np.array([truth[k] for k in ks])
    for seed in range(20):
        s = CountMinSketch(256, 3, seed=seed)
        s.add_many(stream)
        over = s.estimate_many(ks) - exact
        assert (over >= 0).all()
        assert np.mean(over <= s.get_error_bound()) >= 1 - s.delta
