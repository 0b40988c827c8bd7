"""FedSA-LoRA and Fed-ALoRA: what is shared, what stays on the client, and the delta's formula."""

from __future__ import annotations

import torch
from hypothesis import given
from federated_reference import reference_product_sum, reference_weighted_mean
from test_federated_support import ALPHA, PROPERTY_SETTINGS, assert_close_rel, cases, init_for

from rolora.federated import LayerSpec, get_method
from rolora.federated.synthetic import synthetic_round


@PROPERTY_SETTINGS
@given(case=cases(max_clients=10, max_rank=8))
def test_fedsa_averages_a_and_keeps_each_b(case):
    method = get_method("fedsa-lora")
    r = next(iter(case.ranks.values()))
    state = method.init(case.specs, {**case.ranks, None: r}, alpha=ALPHA, seed=case.seed, dtype=case.dtype)
    locals_, updates, keeps = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    new = method.aggregate(state, updates, 1)
    total = sum(case.samples.values())
    p = [case.samples[u.client] / total for u in updates]
    for layer in case.specs:
        assert_close_rel(new.layers[layer]["A"], reference_weighted_mean([u.tensors[layer]["A"] for u in updates], p), case.dtype)
        for c in case.clients:
            start = method.client_start(new, c, keeps[c], 2)[layer]
            assert torch.equal(start["B"], locals_[c][layer]["B"])
            assert torch.equal(start["A"], new.layers[layer]["A"])
        assert not method.client_start(new, "newcomer", None, 2)[layer]["B"].any()


@PROPERTY_SETTINGS
@given(case=cases(mixed_ranks=True, max_clients=8, max_rank=8))
def test_fed_alora_folds_mean_correction_into_shared_base(case):
    method = get_method("fed-alora", inner_rank=5)
    state = init_for(method, case)
    locals_, updates, keeps = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    new = method.aggregate(state, updates, 1)
    total = sum(case.samples.values())
    p = [case.samples[u.client] / total for u in updates]
    for layer in case.specs:
        correction = reference_product_sum([u.tensors[layer]["B2"] for u in updates], [u.tensors[layer]["B1"] for u in updates], p)
        assert_close_rel(new.layers[layer]["B_base"], state.layers[layer]["B_base"] + correction, case.dtype)
        for c in case.clients:
            start = method.client_start(new, c, keeps[c], 2)[layer]
            for k in ("A", "M", "B1"):  # personal tensors survive the round unchanged
                assert torch.equal(start[k], locals_[c][layer][k])
            assert not start["B2"].any() and torch.equal(start["B_base"], new.layers[layer]["B_base"])


def test_fed_alora_delta_formula_and_init():
    method = get_method("fed-alora", inner_rank=3)
    state = method.init({"q": LayerSpec(7, 4)}, {0: 2, 1: 5}, alpha=ALPHA, seed=0, dtype=torch.float64)
    low, high = (method.client_start(state, c, None, 1)["q"] for c in (0, 1))
    assert torch.equal(low["A"], high["A"][:2])  # one shared A draw, sliced to the rank
    assert low["M"].shape == (3, 2) and low["B1"].shape == (2, 3) and low["B2"].shape == (7, 2)
    g = torch.Generator().manual_seed(0)
    layer = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in low.items()}
    expected = (ALPHA / 2) * (layer["B_base"] + layer["B2"] @ layer["B1"]) @ layer["M"] @ layer["A"]
    torch.testing.assert_close(method.delta(layer, ALPHA), expected, rtol=1e-12, atol=1e-12)
