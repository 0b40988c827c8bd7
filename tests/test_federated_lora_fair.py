"""LoRA-FAIR: the r×r fast path equals the dense reference and solves the ridge normal equations."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from federated_reference import reference_product_sum, reference_ridge_correction
from test_federated_support import PROPERTY_SETTINGS, assert_close_rel, cases, init_for

from rolora.federated import get_method
from rolora.federated.lora_fair import ridge_correction
from rolora.federated.synthetic import synthetic_round


@PROPERTY_SETTINGS
@given(case=cases(max_clients=10, max_rank=8), ridge=st.sampled_from([0.0, 1e-6, 1e-2, 1.0]))
def test_correction_matches_dense_reference_and_normal_equations(case, ridge):
    method = get_method("lora-fair", ridge=ridge)
    state = init_for(method, case)
    _, updates, _ = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    new = method.aggregate(state, updates, 1)
    avg = get_method("fedavg-lora").aggregate(state, updates, 1)
    total = sum(case.samples.values())
    p = [case.samples[u.client] / total for u in updates]
    for layer, spec in case.specs.items():
        r = next(iter(case.ranks.values()))
        b = [u.tensors[layer]["B"] for u in updates]
        a = [u.tensors[layer]["A"] for u in updates]
        a_bar, b_bar = avg.layers[layer]["A"], avg.layers[layer]["B"]
        assert torch.equal(new.layers[layer]["A"], a_bar)
        gram = (a_bar @ a_bar.T).to(torch.float64)
        cond = float(torch.linalg.cond(gram + ridge * torch.eye(r, dtype=torch.float64)))
        if r > spec.in_features or cond > 1e6:  # ill-posed solve: parity only up to conditioning
            continue
        delta_b = ridge_correction(b, a, p, a_bar, b_bar, ridge)
        assert_close_rel(delta_b, reference_ridge_correction(b, a, p, a_bar, b_bar, ridge), case.dtype, factor=cond)
        # Normal equations: (ΔW* − (B̄+ΔB)Ā) Āᵀ = λ ΔB.
        ideal = reference_product_sum(b, a, p)
        lhs = (ideal - new.layers[layer]["B"] @ a_bar) @ a_bar.T
        assert_close_rel(lhs, ridge * (new.layers[layer]["B"] - b_bar), case.dtype, factor=cond)
        # With no ridge, the fit is at least as good as plain averaging.
        if ridge == 0:
            fair_err = (ideal - new.layers[layer]["B"] @ a_bar).norm()
            avg_err = (ideal - b_bar @ a_bar).norm()
            assert fair_err <= avg_err * (1 + 1e-6) + 1e-6
