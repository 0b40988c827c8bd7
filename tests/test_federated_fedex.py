"""Property 3: FedEx-LoRA folds the exact residual into the base; its rank is at most (K-1)·r."""

from __future__ import annotations

import torch
from hypothesis import given
from federated_reference import reference_product_sum
from test_federated_support import ALPHA, PROPERTY_SETTINGS, assert_close_rel, cases, init_for

from rolora.federated import get_method
from rolora.federated.synthetic import synthetic_round


@PROPERTY_SETTINGS
@given(case=cases(max_clients=8, max_rank=6))
def test_base_plus_mean_product_is_exact_and_residual_rank_bounded(case):
    method = get_method("fedex-lora")
    state = init_for(method, case)
    _, updates, _ = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    new = method.aggregate(state, updates, 1)
    total = sum(case.samples.values())
    p = [case.samples[u.client] / total for u in updates]
    r = next(iter(case.ranks.values()))
    s = ALPHA / r
    k = len(updates)
    for layer, spec in case.specs.items():
        g_old, g = state.layers[layer], new.layers[layer]
        b = [u.tensors[layer]["B"] for u in updates]
        a = [u.tensors[layer]["A"] for u in updates]
        lhs = g["base"] + s * g["B"] @ g["A"]
        rhs = g_old["base"] + s * reference_product_sum(b, a, p)
        assert_close_rel(lhs, rhs, case.dtype)
        residual = (g["base"] - g_old["base"]).to(torch.float64) / s
        tol = 1e-8 if case.dtype == torch.float64 else 1e-3
        rank = int(torch.linalg.matrix_rank(residual, atol=tol * max(1.0, float(residual.abs().max()))))
        assert rank <= min((k - 1) * r, spec.out_features, spec.in_features)
        if k == 1:
            torch.testing.assert_close(residual, torch.zeros_like(residual), rtol=0, atol=tol)
