"""Property 7 for every method: one client, identical clients, normalised weights, communication.

Plus partial participation over several rounds and uniform vs sample-count weighting.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_federated_support import ALL_METHODS, ALPHA, PROPERTY_SETTINGS, assert_close_rel, cases, init_for

from rolora.federated import ClientUpdate, LayerSpec, get_method
from rolora.federated.synthetic import synthetic_round



def _model(method, state, client, kept, layer):
    return method.delta(method.client_start(state, client, kept, state.round + 1)[layer], ALPHA)


@pytest.mark.parametrize("name", ALL_METHODS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_one_client_gets_its_own_model_back(name, data):
    method = get_method(name)
    case = data.draw(cases(mixed_ranks=method.mixes_ranks, max_clients=6))
    client = data.draw(st.sampled_from(case.clients))
    state = init_for(method, case)
    locals_, updates, keeps = synthetic_round(method, state, [client], case.samples, seed=case.seed, scale=0.5)
    new = method.aggregate(state, updates, 1)
    for layer in case.specs:
        expected = method.delta(locals_[client][layer], ALPHA)
        assert_close_rel(_model(method, new, client, keeps[client], layer), expected, case.dtype, factor=10)


@pytest.mark.parametrize("name", ALL_METHODS)
@PROPERTY_SETTINGS
@given(case=cases(max_clients=20))
def test_identical_clients_get_that_model(name, case):
    method = get_method(name)
    state = init_for(method, case)
    first = case.clients[0]
    locals_, updates, keeps = synthetic_round(method, state, [first], seed=case.seed, scale=0.5)
    clones = [ClientUpdate(c, case.samples[c], updates[0].tensors) for c in case.clients]
    new = method.aggregate(state, clones, 1)
    for layer in case.specs:
        expected = method.delta(locals_[first][layer], ALPHA)
        for c in case.clients:
            assert_close_rel(_model(method, new, c, keeps[first], layer), expected, case.dtype, factor=10)


@pytest.mark.parametrize("name", ALL_METHODS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_scaling_all_sample_counts_changes_nothing(name, data):
    method = get_method(name)
    case = data.draw(cases(mixed_ranks=method.mixes_ranks, max_clients=12, max_rank=8))
    factor = data.draw(st.floats(1e-3, 1e3))
    state = init_for(method, case)
    _, updates, _ = synthetic_round(method, state, case.clients, case.samples, seed=case.seed)
    scaled = [ClientUpdate(u.client, u.num_samples * factor, u.tensors) for u in updates]
    a, b = method.aggregate(state, updates, 1), method.aggregate(state, scaled, 1)
    # LoRA-FAIR solves a ridge system (Ā Āᵀ + λI, λ = 1e-6): with r > n it is ill-conditioned
    # (cond ~ ‖Ā‖²/λ), which amplifies the weights' rounding; a weighting bug would still be O(1).
    factor = 1e4 if name == "lora-fair" else 10
    for layer in case.specs:
        for name_ in a.layers[layer]:
            assert_close_rel(b.layers[layer][name_], a.layers[layer][name_], case.dtype, factor=factor)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_uniform_weighting_ignores_sample_counts(name):
    method = get_method(name)
    specs = {"q": LayerSpec(9, 5), "v": LayerSpec(4, 11)}
    state = method.init(specs, 3, alpha=ALPHA, seed=0, dtype=torch.float64)
    _, updates, _ = synthetic_round(method, state, [0, 1, 2], {0: 1.0, 1: 5.0, 2: 50.0}, seed=1)
    equal = [ClientUpdate(u.client, 7.0, u.tensors) for u in updates]
    uniform = method.aggregate(state, updates, 1, weighting="uniform")
    samples_equal = method.aggregate(state, equal, 1, weighting="samples")
    samples = method.aggregate(state, updates, 1, weighting="samples")
    differs = False
    for layer in specs:
        for k in uniform.layers[layer]:
            torch.testing.assert_close(uniform.layers[layer][k], samples_equal.layers[layer][k], rtol=1e-12, atol=1e-12)
            differs |= not torch.allclose(uniform.layers[layer][k], samples.layers[layer][k])
    assert differs, "unequal sample counts must change the 'samples' aggregate"


@pytest.mark.parametrize("name", ALL_METHODS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_partial_participation_over_rounds(name, data):
    method = get_method(name)
    case = data.draw(cases(mixed_ranks=method.mixes_ranks, max_clients=10, max_rank=6))
    state = init_for(method, case)
    kept: dict = {}
    for t in range(1, 5):
        subset = data.draw(st.lists(st.sampled_from(case.clients), min_size=1, unique=True))
        _, updates, keeps = synthetic_round(method, state, subset, case.samples, kept, seed=case.seed + t, scale=0.1)
        state = method.aggregate(state, updates, t)
        kept.update(keeps)
        assert state.round == t
    for c in case.clients:
        for layer in case.specs:
            model = _model(method, state, c, kept.get(c), layer)
            assert model.shape == (case.specs[layer].out_features, case.specs[layer].in_features)
            assert torch.isfinite(model).all()


def _table(name, d, n, r, t, ranks_all, r_int=16):
    """Per-layer (upload, download) of one client of rank r, from the reference notes' table."""
    k = len(ranks_all)
    return {
        "fedavg-lora": (r * (d + n), r * (d + n)),
        "ffa-lora": (d * r, d * r),
        "rolora": (d * r, d * r) if t % 2 == 1 else (r * n, r * n),
        "flexlora": (r * (d + n), r * (d + n)),
        "flora": (r * (d + n), sum(ranks_all) * (d + n)),
        "fedex-lora": (r * (d + n), r * (d + n) + d * n),
        "lora-fair": (r * (d + n), r * (d + n)),
        "fedsa-lora": (r * n, r * n),
        "fed-alora": (r * (d + r_int), d * r_int),
        "fedavg-full": (d * n, d * n),
    }[name], k


@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("t", [1, 2])
def test_communication_matches_the_table_and_the_uploads(name, t):
    method = get_method(name)
    specs = {"q": LayerSpec(24, 10), "v": LayerSpec(6, 13)}
    ranks = {0: 2, 1: 5, 2: 3} if method.mixes_ranks else {0: 4, 1: 4, 2: 4}
    cost = method.communication(specs, ranks, t, clients=[0, 1, 2], bytes_per_param=2)
    state = method.init(specs, ranks, alpha=ALPHA, seed=0, dtype=torch.float64)
    for tt in range(1, t + 1):
        _, updates, _ = synthetic_round(method, state, [0, 1, 2], seed=tt)
        if tt < t:
            state = method.aggregate(state, updates, tt)
    for u in updates:
        r = ranks[u.client]
        expected_up = sum(_table(name, s.out_features, s.in_features, r, t, list(ranks.values()))[0][0] for s in specs.values())
        expected_down = sum(_table(name, s.out_features, s.in_features, r, t, list(ranks.values()))[0][1] for s in specs.values())
        assert cost.per_client[u.client] == (expected_up, expected_down)
        sent = sum(x.numel() for tensors in u.tensors.values() for x in tensors.values())
        assert sent == expected_up, "what client_upload sends must be what communication counts"
    ups = [u for u, _ in cost.per_client.values()]
    assert cost.total_upload_params == sum(ups)
    assert cost.upload_params == round(sum(ups) / 3)
    assert cost.upload_bytes == 2 * cost.upload_params


def test_communication_with_a_client_count():
    cost = get_method("fedavg-lora").communication({"q": LayerSpec(30, 20)}, 8, 1, clients=10)
    assert (cost.upload_params, cost.download_params) == (8 * 50, 8 * 50)
    assert cost.total_upload_params == 10 * 8 * 50 and cost.upload_bytes == 4 * 8 * 50
    assert math.isclose(cost.download_bytes, 1600)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_half_precision_follows_the_inputs(name):
    """bfloat16 states aggregate in bfloat16 (linear algebra upcast internally) close to float64."""
    method = get_method(name)
    specs = {"q": LayerSpec(16, 9)}
    results = {}
    for dtype in (torch.float64, torch.bfloat16):
        state = method.init(specs, 4, alpha=ALPHA, seed=0, dtype=dtype)
        locals_, updates, keeps = synthetic_round(method, state, [0, 1, 2], {0: 1.0, 1: 2.0, 2: 3.0}, seed=1, scale=0.1)
        new = method.aggregate(state, updates, 1)
        assert all(x.dtype == dtype for x in new.layers["q"].values())
        results[dtype] = _model(method, new, 0, keeps[0], "q").to(torch.float64)
    # bfloat16 keeps 8 bits of mantissa: 2^-8 ≈ 4e-3 per rounding, a few roundings deep.
    assert_close_rel(results[torch.bfloat16], results[torch.float64], torch.float64, factor=5e8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ALL_METHODS)
def test_cuda_matches_cpu(name):
    method = get_method(name)
    specs = {"q": LayerSpec(24, 11)}
    out = []
    for device in ("cpu", "cuda"):
        state = method.init(specs, 3, alpha=ALPHA, seed=0, dtype=torch.float64, device=device)
        _, updates, keeps = synthetic_round(method, state, [0, 1], {0: 1.0, 1: 4.0}, seed=2)
        new = method.aggregate(state, updates, 1)
        assert all(x.device.type == device for x in new.layers["q"].values())
        out.append(_model(method, new, 0, keeps[0], "q").cpu())
    torch.testing.assert_close(out[1], out[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("clients", [1, 2, 5])
def test_fedex_residual_as_factors_counts_k_minus_1_blocks_and_they_suffice(clients):
    """Download with residual_transport="factors" is r(d+n) + (K−1)·r(d+n), and K−1 blocks really
    rebuild the residual fedex-lora folds into W0, R = Σ p_k B_k A_k − B̄Ā (so the count is achievable,
    not just a bound): R_blocks = Σ_{k<K} p_k (B_k − B̄)(A_k − A_K)."""
    d, n, r = 11, 7, 3
    method = get_method("fedex-lora", residual_transport="factors")
    cost = method.communication({"q": LayerSpec(d, n)}, r, 1, clients=list(range(clients)))
    assert cost.download_params == r * (d + n) + (clients - 1) * r * (d + n)
    state = method.init({"q": LayerSpec(d, n)}, r, alpha=ALPHA, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(clients)
    bs = [torch.randn(d, r, generator=gen, dtype=torch.float64) for _ in range(clients)]
    as_ = [torch.randn(r, n, generator=gen, dtype=torch.float64) for _ in range(clients)]
    samples = [float(s) for s in torch.randint(1, 50, (clients,), generator=gen)]
    new = method.aggregate(state, [ClientUpdate(k, samples[k], {"q": {"A": as_[k], "B": bs[k]}})
                                   for k in range(clients)], 1)
    residual = (new.layers["q"]["base"] - state.layers["q"]["base"]) / (ALPHA / r)
    p = [s / sum(samples) for s in samples]
    b_bar = new.layers["q"]["B"]
    blocks = sum(((w * (b - b_bar)) @ (a - as_[-1]) for w, b, a in zip(p[:-1], bs[:-1], as_[:-1])),
                 torch.zeros(d, n, dtype=torch.float64))
    torch.testing.assert_close(blocks, residual, rtol=1e-12, atol=1e-12)
