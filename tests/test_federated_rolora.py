"""Property 6 and the schedule: RoLoRA's frozen factor is bit-identical across clients and rounds."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_federated_support import PROPERTY_SETTINGS, cases, init_for

from rolora.federated import AlternationSchedule, get_method
from rolora.federated.synthetic import synthetic_round


def test_paper_default_schedule_is_b_first_every_round():
    method = get_method("rolora")
    assert [next(iter(method.trains(t))) for t in range(1, 7)] == ["B", "A", "B", "A", "B", "A"]
    assert method.uploads(1) == frozenset({"B"}) and method.uploads(2) == frozenset({"A"})


def test_period_start_and_hand_over():
    assert [AlternationSchedule(period=2).factor(t) for t in range(1, 9)] == list("BBAABBAA")
    assert [AlternationSchedule(start="A").factor(t) for t in range(1, 5)] == list("ABAB")
    s = AlternationSchedule(ffa_after=0.2, total_rounds=10)
    assert s.last_alternating_round == 2
    assert [s.factor(t) for t in range(1, 11)] == list("BA") + ["B"] * 8


@pytest.mark.parametrize(
    "kwargs, match",
    [({"period": 0}, "period"), ({"start": "C"}, "start"), ({"ffa_after": 0.5}, "total_rounds"),
     ({"ffa_after": 1.5, "total_rounds": 10}, "fraction")],
)
def test_bad_schedule_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_method("rolora", **kwargs)


@PROPERTY_SETTINGS
@given(case=cases(max_clients=10), period=st.integers(1, 3), data=st.data())
def test_frozen_factor_is_bit_identical_within_its_phase(case, period, data):
    method = get_method("rolora", period=period)
    state = init_for(method, case)
    kept: dict = {}
    frozen_since: dict = {}
    for t in range(1, 2 * period + 2):
        trained = next(iter(method.trains(t)))
        frozen = "A" if trained == "B" else "B"
        subset = data.draw(st.lists(st.sampled_from(case.clients), min_size=1, unique=True))
        for layer in case.specs:
            starts = [method.client_start(state, c, None, t)[layer][frozen] for c in case.clients]
            for s in starts:  # every client, participant or not, holds the same frozen factor
                assert torch.equal(s, state.layers[layer][frozen])
            if frozen in frozen_since.get(layer, {}):
                assert torch.equal(state.layers[layer][frozen], frozen_since[layer][frozen])
        _, updates, _ = synthetic_round(method, state, subset, case.samples, kept, seed=case.seed + t)
        new = method.aggregate(state, updates, t)
        for layer in case.specs:
            assert torch.equal(new.layers[layer][frozen], state.layers[layer][frozen])
            frozen_since.setdefault(layer, {})[frozen] = state.layers[layer][frozen]
            frozen_since[layer].pop(trained, None)
        state = new
