"""Property 2: FedAvg-LoRA's error is the covariance identity and vanishes when all A_k are equal."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from federated_reference import reference_product_sum, reference_weighted_mean
from test_federated_support import PROPERTY_SETTINGS, assert_close_rel, cases, init_for

from rolora.federated import ClientUpdate, LayerSpec, get_method
from rolora.federated.synthetic import synthetic_round


def _weights(case, clients):
    total = sum(case.samples[c] for c in clients)
    return [case.samples[c] / total for c in clients]


@PROPERTY_SETTINGS
@given(case=cases())
def test_error_equals_covariance_identity(case):
    method = get_method("fedavg-lora")
    state = init_for(method, case)
    locals_, updates, _ = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    new = method.aggregate(state, updates, 1)
    p = _weights(case, case.clients)
    for layer in case.specs:
        a = [u.tensors[layer]["A"] for u in updates]
        b = [u.tensors[layer]["B"] for u in updates]
        a_bar, b_bar = new.layers[layer]["A"], new.layers[layer]["B"]
        # The fast weighted sum agrees with the one-term-at-a-time reference.
        assert_close_rel(a_bar, reference_weighted_mean(a, p), case.dtype)
        assert_close_rel(b_bar, reference_weighted_mean(b, p), case.dtype)
        error = reference_product_sum(b, a, p) - b_bar @ a_bar
        covariance = reference_product_sum([bk - b_bar for bk in b], [ak - a_bar for ak in a], p)
        one_sided = reference_product_sum(b, [ak - a_bar for ak in a], p)
        assert_close_rel(error, covariance, case.dtype, factor=10)
        assert_close_rel(error, one_sided, case.dtype, factor=10)


@PROPERTY_SETTINGS
@given(case=cases(), data=st.data())
def test_error_vanishes_when_all_a_are_equal(case, data):
    method = get_method("fedavg-lora")
    state = init_for(method, case)
    _, updates, _ = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    # Every client sends the same A (the shared one) and its own B.
    shared = {layer: updates[0].tensors[layer]["A"] for layer in case.specs}
    same_a = [
        ClientUpdate(u.client, u.num_samples, {l: {"A": shared[l].clone(), "B": t["B"]} for l, t in u.tensors.items()})
        for u in updates
    ]
    new = method.aggregate(state, same_a, 1)
    p = _weights(case, case.clients)
    for layer in case.specs:
        b = [u.tensors[layer]["B"] for u in same_a]
        ideal = reference_product_sum(b, [shared[layer]] * len(b), p)
        assert_close_rel(new.layers[layer]["B"] @ new.layers[layer]["A"], ideal, case.dtype)


def test_error_is_large_for_random_clients():
    """The motivating failure: K=5 independent rank-4 clients, relative error far from 0."""
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(4, 30, generator=g, dtype=torch.float64) for _ in range(5)]
    b = [torch.randn(20, 4, generator=g, dtype=torch.float64) for _ in range(5)]
    p = [0.2] * 5
    ideal = reference_product_sum(b, a, p)
    method = get_method("fedavg-lora")
    state = method.init({"q": LayerSpec(20, 30)}, 4, alpha=4.0, seed=0, dtype=torch.float64)
    updates = [ClientUpdate(k, 3.0, {"q": {"A": a[k], "B": b[k]}}) for k in range(5)]
    new = method.aggregate(state, updates, 1)
    approx = new.layers["q"]["B"] @ new.layers["q"]["A"]
    torch.testing.assert_close(approx, reference_weighted_mean(b, p) @ reference_weighted_mean(a, p))
    relative = float((ideal - approx).norm() / ideal.norm())
    # For iid zero-mean factors E||error||² / E||ideal||² = 1 − 1/K, so the relative error is about
    # sqrt(0.8) ≈ 0.89 here; 0.5 leaves a wide margin for sampling noise.
    assert relative > 0.5
