"""Property 5: FlexLoRA gives each client the best rank-r_k approximation of the mean product."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from federated_reference import reference_product_sum, reference_truncated_svd
from test_federated_support import ALPHA, PROPERTY_SETTINGS, assert_close_rel, cases, init_for

from rolora.federated import LayerSpec, get_method
from rolora.federated.svd import factored_truncated_svd
from rolora.federated.synthetic import synthetic_round


def _gap_ok(s: torch.Tensor, r: int, dtype) -> bool:
    """The rank-r truncation is unique only with a gap between σ_r and σ_{r+1}."""
    if r >= s.shape[0]:
        return True
    return float(s[r - 1] - s[r]) > (1e-6 if dtype == torch.float64 else 1e-2) * float(s[0])


SPLITS = ["B", "balanced"]


@pytest.mark.parametrize("split", SPLITS)
@PROPERTY_SETTINGS
@given(case=cases(mixed_ranks=True, max_clients=12, max_rank=12))
def test_each_client_gets_its_best_rank_approximation(split, case):
    method = get_method("flexlora", split=split)
    state = init_for(method, case)
    _, updates, _ = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    new = method.aggregate(state, updates, 1)
    total = sum(case.samples.values())
    coef = [case.samples[u.client] / total * ALPHA / case.ranks[u.client] for u in updates]
    for layer in case.specs:
        w_g = reference_product_sum(
            [u.tensors[layer]["B"] for u in updates], [u.tensors[layer]["A"] for u in updates], coef
        ).to(torch.float64)
        u, s, vh = torch.linalg.svd(w_g, full_matrices=False)
        for c in case.clients:
            r = case.ranks[c]
            if not _gap_ok(s, r, case.dtype):
                continue
            model = method.delta(method.client_start(new, c, None, 2)[layer], ALPHA).to(torch.float64)
            best = (u[:, :r] * s[:r]) @ vh[:r]
            assert_close_rel(model, best, case.dtype, factor=10)
            tail = float(s[r:].square().sum().sqrt())
            err = float((w_g - model).norm())
            assert abs(err - tail) <= 1e-6 * float(s[0]) + (1e-7 if case.dtype == torch.float64 else 1e-3) * float(s[0])


@PROPERTY_SETTINGS
@given(case=cases(mixed_ranks=True, max_clients=10, max_rank=10))
def test_factored_svd_matches_dense_reference(case):
    g = torch.Generator().manual_seed(case.seed)
    spec = next(iter(case.specs.values()))
    bs = [torch.randn(spec.out_features, r, generator=g, dtype=torch.float64).to(case.dtype) for r in case.ranks.values()]
    as_ = [torch.randn(r, spec.in_features, generator=g, dtype=torch.float64).to(case.dtype) for r in case.ranks.values()]
    coef = [case.samples[c] for c in case.ranks]
    rank = max(case.ranks.values())
    u1, s1, vh1 = factored_truncated_svd(bs, as_, coef, rank)
    u2, s2, vh2 = reference_truncated_svd(bs, as_, coef, rank)
    assert_close_rel(s1.to(torch.float64), s2.to(torch.float64), case.dtype, factor=10)
    s = s2.to(torch.float64)
    for r in range(1, rank + 1):
        if _gap_ok(s, r, case.dtype):
            assert_close_rel((u1[:, :r] * s1[:r]) @ vh1[:r], (u2[:, :r] * s2[:r]) @ vh2[:r], case.dtype, factor=10)


@pytest.mark.parametrize("split", SPLITS)
def test_dense_and_factored_methods_agree(split):
    case_specs = {"q": LayerSpec(30, 17)}
    ranks = {0: 2, 1: 4, 2: 3}
    out = []
    for svd in ("factored", "dense"):
        method = get_method("flexlora", svd=svd, split=split)
        state = method.init(case_specs, ranks, alpha=ALPHA, seed=1, dtype=torch.float64)
        _, updates, _ = synthetic_round(method, state, [0, 1, 2], seed=2)
        new = method.aggregate(state, updates, 1)
        out.append(method.delta(new.layers["q"], ALPHA))
    torch.testing.assert_close(out[0], out[1], rtol=1e-10, atol=1e-10)


@PROPERTY_SETTINGS
@given(case=cases(mixed_ranks=True, max_clients=8, max_rank=10))
def test_balanced_split_gives_equal_column_and_row_norms(case):
    """split="balanced": for every client, column j of B and row j of A have norm sqrt(σ_j / s_k)."""
    method = get_method("flexlora", split="balanced")
    state = init_for(method, case)
    _, updates, _ = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    new = method.aggregate(state, updates, 1)
    for c in case.clients:
        r = case.ranks[c]
        start = method.client_start(new, c, None, 2)
        for layer in case.specs:
            b, a = start[layer]["B"].to(torch.float64), start[layer]["A"].to(torch.float64)
            b_cols, a_rows = b.norm(dim=0), a.norm(dim=1)
            filled = b_cols > 0  # empty components restart as a fresh init (B column 0), see below
            assert_close_rel(b_cols[filled], a_rows[filled], case.dtype, factor=10)
            assert bool((a_rows[~filled] > 0).all())
            # The common norm is sqrt(σ_j/s_k): their product times s_k gives back the spectrum.
            sigma = torch.linalg.svdvals(method.delta(start[layer], ALPHA).to(torch.float64))
            padded = torch.zeros(r, dtype=torch.float64)
            padded[: min(r, sigma.shape[0])] = sigma[:r]
            assert_close_rel(ALPHA / r * b_cols * a_rows, padded, case.dtype, factor=10)


@PROPERTY_SETTINGS
@given(case=cases(mixed_ranks=True, max_clients=8, max_rank=10))
def test_splits_give_the_same_client_products(case):
    """The split only moves Σ between the factors: every client's s_k·B·A is the same for both."""
    deltas = []
    for split in SPLITS:
        method = get_method("flexlora", split=split)
        state = init_for(method, case)
        _, updates, _ = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
        new = method.aggregate(state, updates, 1)
        deltas.append({(c, layer): method.delta(t, ALPHA).to(torch.float64)
                       for c in case.clients for layer, t in method.client_start(new, c, None, 2).items()})
    for key in deltas[0]:
        assert_close_rel(deltas[1][key], deltas[0][key], case.dtype, factor=10)


def test_balanced_split_restarts_empty_components_like_a_fresh_lora_init():
    """One rank-2 client against a server rank of 6: components 3..6 of the aggregate are empty.
    With split="balanced" they would be ≈0 in both factors (so ≈0 gradients); they restart with a
    Kaiming A row and a zero B column instead, and then train about as well as under split="B"."""
    specs, ranks = {"q": LayerSpec(30, 17)}, {0: 2, 1: 6}
    g = torch.randn(30, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads, deltas = {}, {}
    for split in SPLITS:
        method = get_method("flexlora", split=split)
        state = method.init(specs, ranks, alpha=ALPHA, seed=3, dtype=torch.float64)
        _, updates, _ = synthetic_round(method, state, [0], seed=4)
        new = method.aggregate(state, updates, 1)
        if split == "balanced":
            assert not new.layers["q"]["B"][:, 2:].any()
            assert float(new.layers["q"]["A"][2:].norm(dim=1).min()) > 0.3  # Kaiming rows: about 1/sqrt(3)
            again = method.aggregate(state, updates, 1).layers["q"]["A"]
            assert torch.equal(again, new.layers["q"]["A"])  # seeded
        start = {k: v.clone().requires_grad_() for k, v in method.client_start(new, 1, None, 2)["q"].items()}
        delta = method.delta(start, ALPHA)
        (delta * g).sum().backward()
        grads[split], deltas[split] = start["B"].grad[:, 2:].norm(dim=0), delta.detach()
    torch.testing.assert_close(deltas["balanced"], deltas["B"], rtol=1e-10, atol=1e-12)  # same product
    assert float((grads["balanced"] / grads["B"]).min()) > 0.1


def test_split_b_keeps_a_orthonormal_and_balanced_does_not():
    """split="B" (the default) puts all of Σ in B: A has orthonormal rows; balanced scales them."""
    specs, ranks = {"q": LayerSpec(30, 17)}, {0: 2, 1: 5}
    out = {}
    for split in SPLITS:
        method = get_method("flexlora", split=split)
        state = method.init(specs, ranks, alpha=ALPHA, seed=3, dtype=torch.float64)
        _, updates, _ = synthetic_round(method, state, [0, 1], seed=4)
        out[split] = method.aggregate(state, updates, 1).layers["q"]
    a = out["B"]["A"]
    torch.testing.assert_close(a @ a.T, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-10)
    assert not torch.allclose(out["balanced"]["A"] @ out["balanced"]["A"].T, torch.eye(5, dtype=torch.float64))
    assert get_method("flexlora").split == "B"


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split must be 'B' or 'balanced'"):
        get_method("flexlora", split="A")
