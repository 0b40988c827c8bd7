"""The product-averaging gap and client drift (rolora.federated.diagnostics), on non-square layers.

The fast covariance form equals the definition; one-factor methods (RoLoRA, FFA-LoRA) show a gap of
exactly zero; FedAvg-LoRA's gap is non-zero and grows with the clients' local steps on a tiny model.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rolora.federated import LayerSpec, get_method
from rolora.federated.api import AggregationError
from rolora.federated.diagnostics import (LayerDiagnostics, check_one_factor_gap, layer_diagnostics, product_gap,
                                          product_gap_reference, summary)
from rolora.federated.round import ClientResult, one_by_one, run_round, upload_diagnostics
from rolora.federated.synthetic import synthetic_round, synthetic_training

SPECS = {"q": LayerSpec(out_features=12, in_features=7), "v": LayerSpec(out_features=5, in_features=9)}


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 5), d=st.integers(1, 9), n=st.integers(1, 9), r=st.integers(1, 4), seed=st.integers(0, 99))
def test_the_covariance_form_equals_the_definition(k, d, n, r, seed):
    g = torch.Generator().manual_seed(seed)
    bs = [torch.randn(d, r, generator=g, dtype=torch.float64) for _ in range(k)]
    as_ = [torch.randn(r, n, generator=g, dtype=torch.float64) for _ in range(k)]
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    weights = (w / w.sum()).tolist()
    torch.testing.assert_close(product_gap(bs, as_, weights), product_gap_reference(bs, as_, weights),
                               rtol=1e-10, atol=1e-12)


def test_a_shared_factor_gives_an_exactly_zero_gap_where_the_definition_rounds():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 7, generator=g)
    bs = [torch.randn(12, 3, generator=g) for _ in range(3)]
    weights = [0.1, 0.3, 0.6]
    assert torch.count_nonzero(product_gap(bs, [a, a, a], weights)) == 0
    assert torch.count_nonzero(product_gap([bs[0]] * 3, [a * 1, a * 2, a * 3], weights)) == 0


@pytest.mark.parametrize("name, trained_gap", [("fedavg-lora", True), ("rolora", False), ("ffa-lora", False)])
def test_gap_per_method_on_synthetic_rounds(name, trained_gap):
    method = get_method(name)
    state = method.init(SPECS, ranks=3, alpha=6.0, seed=1)
    train = synthetic_training(method, num_samples={0: 1.0, 1: 2.0, 2: 5.0}, seed=3, scale=0.1)
    for _ in range(4):  # both of RoLoRA's phases, twice
        result = run_round(method, state, clients=3, train=train)
        assert set(result.diagnostics) == set(SPECS)
        for layer, d in result.diagnostics.items():
            assert d.update_norm > 0, layer
            assert d.drift > 0, layer
            if trained_gap:
                assert d.gap > 1e-6, (layer, d)
            else:
                assert d.gap == 0.0, (layer, d)
        state = result.state


def test_personalised_methods_are_not_measured_and_diagnose_off_measures_nothing():
    method = get_method("fedsa-lora")
    state = method.init(SPECS, ranks=2, alpha=4.0, seed=0)
    assert run_round(method, state, clients=3, train=synthetic_training(method, seed=1)).diagnostics == {}
    method = get_method("fedavg-lora")
    state = method.init(SPECS, ranks=2, alpha=4.0, seed=0)
    assert run_round(method, state, clients=3, train=synthetic_training(method, seed=1), diagnose=False).diagnostics == {}


def test_a_one_factor_round_whose_other_factor_differs_is_refused():
    method = get_method("rolora")
    state = method.init(SPECS, ranks=2, alpha=4.0, seed=0)
    t, updates = 1, synthetic_round(method, state, clients=[0, 1, 2], seed=2, scale=0.1)[1]
    assert all(u.tensors and all(set(layer) == {"B"} for layer in u.tensors.values()) for u in updates)
    assert all(d.gap == 0.0 for d in upload_diagnostics(method, state, updates, t).values())
    # a client whose A drifted (a bug in some engine) shows up as a non-zero gap, and is refused
    starts = [method.client_start(state, u.client, None, t) for u in updates]
    ends = [{n: dict(layer) for n, layer in s.items()} for s in starts]
    for e, u in zip(ends, updates):
        for n in e:
            e[n].update(u.tensors[n])
    ends[1]["q"]["A"] = ends[1]["q"]["A"] + 1e-3
    from rolora.federated.diagnostics import round_diagnostics

    diags = round_diagnostics(starts, ends, [1 / 3] * 3, state.alpha)
    assert diags["q"].gap > 0 and diags["v"].gap == 0.0
    with pytest.raises(AggregationError, match=r"rolora trains only \['B'\].*'q'"):
        check_one_factor_gap(diags, method.trains(t), t, "rolora")


def test_layers_that_are_not_plain_lora_or_mix_ranks_are_skipped():
    a = {"A": torch.ones(2, 3), "B": torch.ones(4, 2)}
    assert layer_diagnostics([{"W": torch.ones(4, 3)}], [{"W": torch.zeros(4, 3)}], [1.0], 1.0) is None
    wide = {"A": torch.ones(3, 3), "B": torch.ones(4, 3)}
    assert layer_diagnostics([a, wide], [a, wide], [0.5, 0.5], 1.0) is None
    assert summary({}) == {"product_gap": None, "client_drift": None}
    d = {"x": LayerDiagnostics(gap=0.2, drift=1.0, update_norm=1.0), "y": LayerDiagnostics(gap=0.4, drift=3.0, update_norm=2.0)}
    assert summary(d) == pytest.approx({"product_gap": 0.3, "client_drift": 2.0})


# --------------------------------------------------------------------------- a tiny model, real training
def _tiny_lora_training(steps: int, lr: float = 0.05):
    """Each client fits its own linear map Y = X W_k*ᵀ with a LoRA (W0 = 0) by gradient descent on A and
    B (whatever ``start.trainable`` says): heterogeneous targets make the clients drift apart."""
    g = torch.Generator().manual_seed(0)
    data = {}
    for k in range(4):
        x = torch.randn(64, 7, generator=g)
        target = torch.randn(12, 7, generator=g)
        data[k] = (x, x @ target.T)

    def train_one(t, start):
        tensors = {n: {m: x.clone().requires_grad_(m in start.trainable) for m, x in layer.items()}
                   for n, layer in start.tensors.items()}
        x, y = data[start.client]
        layer = tensors["q"]
        for _ in range(steps):
            pred = x @ (layer["B"] @ layer["A"]).T
            loss = ((pred - y) ** 2).mean()
            grads = torch.autograd.grad(loss, [v for v in layer.values() if v.requires_grad])
            with torch.no_grad():
                for v, gr in zip([v for v in layer.values() if v.requires_grad], grads):
                    v -= lr * gr
        return ClientResult(tensors={n: {m: v.detach() for m, v in l.items()} for n, l in tensors.items()},
                            num_samples=64.0)

    return one_by_one(train_one)


def _gap_after(method_name: str, steps: int) -> float:
    method = get_method(method_name)
    state = method.init({"q": LayerSpec(out_features=12, in_features=7)}, ranks=3, alpha=3.0, seed=0)
    state = run_round(method, state, clients=4, train=_tiny_lora_training(1)).state  # B leaves 0
    return run_round(method, state, clients=4, train=_tiny_lora_training(steps)).diagnostics["q"].gap


def test_fedavg_lora_gap_grows_with_local_steps_and_one_factor_methods_stay_exact():
    gaps = [_gap_after("fedavg-lora", steps) for steps in (1, 5, 25)]
    assert 0 < gaps[0] < gaps[1] < gaps[2], gaps
    for name in ("rolora", "ffa-lora"):
        assert [_gap_after(name, steps) for steps in (1, 25)] == [0.0, 0.0]
    assert all(math.isfinite(g) for g in gaps)
