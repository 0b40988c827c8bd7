"""Property 4: FLoRA's stacked product is exact for mixed ranks and invariant to client order."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from federated_reference import reference_product_sum
from test_federated_support import ALPHA, PROPERTY_SETTINGS, assert_close_rel, cases, init_for

from rolora.federated import AggregationError, LayerSpec, get_method
from rolora.federated.synthetic import synthetic_round
from rolora.federated.weights import weighted_product_sum


@PROPERTY_SETTINGS
@given(case=cases(mixed_ranks=True), data=st.data())
def test_merge_is_exact_for_mixed_ranks_and_order_free(case, data):
    method = get_method("flora")
    state = init_for(method, case)
    _, updates, _ = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    new = method.aggregate(state, updates, 1)
    shuffled = data.draw(st.permutations(updates))
    new_shuffled = method.aggregate(state, list(shuffled), 1)
    total = sum(case.samples.values())
    coef = [case.samples[u.client] / total * ALPHA / case.ranks[u.client] for u in updates]
    for layer in case.specs:
        b = [u.tensors[layer]["B"] for u in updates]
        a = [u.tensors[layer]["A"] for u in updates]
        ideal = reference_product_sum(b, a, coef)
        assert_close_rel(new.layers[layer]["base"] - state.layers[layer]["base"], ideal, case.dtype)
        assert_close_rel(new_shuffled.layers[layer]["base"], new.layers[layer]["base"], case.dtype)
        # The stacked fast path against the loop reference, directly.
        assert_close_rel(weighted_product_sum(b, a, coef), ideal, case.dtype)
        # Fresh factors: B = 0 (each client draws its own A when it starts the next round).
        assert not new.layers[layer]["B"].any()


def test_fresh_a_per_client_is_seeded_by_client_and_round_and_differs_between_clients():
    """Default (FLoRA's own code): after a merge each client starts from its own A, drawn from
    (seed, layer, client, round); round 1 starts every client from the shared round-0 A."""
    method = get_method("flora")
    specs = {"q": LayerSpec(12, 7)}
    ranks = {0: 2, 1: 5, "c": 3}
    state = method.init(specs, ranks, alpha=ALPHA, seed=3, dtype=torch.float64)
    round1 = {c: method.client_start(state, c, None, 1)["q"]["A"] for c in ranks}
    for c, r in ranks.items():
        assert torch.equal(round1[c], state.layers["q"]["A"][:r])
    _, updates, _ = synthetic_round(method, state, [0, 1], seed=9)
    state = method.aggregate(state, updates, 1)
    round2 = {c: method.client_start(state, c, None, 2)["q"]["A"] for c in ranks}
    assert {c: tuple(a.shape) for c, a in round2.items()} == {0: (2, 7), 1: (5, 7), "c": (3, 7)}
    assert not torch.equal(round2[0], round2[1][:2]) and not torch.equal(round2[0], round2["c"][:2])
    assert not torch.equal(round2[0], round1[0])
    bound = 1 / 7**0.5  # PEFT's Kaiming-uniform bound 1/sqrt(fan_in)
    assert all(float(a.abs().max()) <= bound for a in round2.values())
    # reproducible, and a client's A does not depend on who else is asked
    again = method.client_start(state, 1, None, 2)["q"]["A"]
    assert torch.equal(again, round2[1])
    _, updates, _ = synthetic_round(method, state, [1], seed=9)
    state3 = method.aggregate(state, updates, 2)
    assert not torch.equal(method.client_start(state3, 1, None, 3)["q"]["A"], round2[1])


def test_fresh_a_shared_per_round_and_fixed_are_options():
    specs = {"q": LayerSpec(12, 7)}
    shared = get_method("flora", fresh_a="round")
    runs = []
    for _ in range(2):
        state = shared.init(specs, {0: 2, 1: 5}, alpha=ALPHA, seed=3, dtype=torch.float64)
        a_per_round = [state.layers["q"]["A"]]
        for t in (1, 2):
            _, updates, _ = synthetic_round(shared, state, [0, 1], seed=9)
            state = shared.aggregate(state, updates, t)
            a_per_round.append(state.layers["q"]["A"])
            # every client starts from the same A, sliced to its rank
            assert torch.equal(shared.client_start(state, 0, None, t + 1)["q"]["A"], state.layers["q"]["A"][:2])
            assert torch.equal(shared.client_start(state, 1, None, t + 1)["q"]["A"], state.layers["q"]["A"][:5])
        runs.append(a_per_round)
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    assert not torch.equal(runs[0][1], runs[0][2]) and not torch.equal(runs[0][0], runs[0][1])
    fixed = get_method("flora", fresh_a="fixed")
    state = fixed.init(specs, 3, alpha=ALPHA, seed=3, dtype=torch.float64)
    _, updates, _ = synthetic_round(fixed, state, [0, 1], seed=9)
    assert torch.equal(fixed.aggregate(state, updates, 1).layers["q"]["A"], state.layers["q"]["A"])
    with pytest.raises(AggregationError, match="fresh_a"):
        get_method("flora", fresh_a="never")
