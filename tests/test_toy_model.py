"""Toy model: factored fast path == method.delta reference; the round-0 state the toy starts from."""

from __future__ import annotations

import math

import pytest
import torch

from rolora.federated import get_method
from rolora.toy.init_state import balanced_b_bound, initial_state
from rolora.toy.model import LAYER, can_factor, logits, logits_factored, logits_reference, make_w_out

# float32 matmuls in a different association order: differences of a few ulps of the logits' scale
TOL = dict(rtol=1e-5, atol=1e-6)


def _random_layer(with_base: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    layer = {"A": torch.randn(16, 784, generator=g) / 28, "B": torch.randn(784, 16, generator=g) / 28}
    if with_base:
        layer["base"] = torch.randn(784, 784, generator=g) / 784
    return layer


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@pytest.mark.parametrize("method_name,with_base", [("fedavg-lora", False), ("fedex-lora", True)])
def test_factored_forward_matches_reference(kind, method_name, with_base):
    method = get_method(method_name)
    layer = _random_layer(with_base)
    assert can_factor(method, layer)
    x = torch.rand(32, 784, generator=torch.Generator().manual_seed(1))
    w_out = make_w_out(5)
    fast = logits_factored(x, layer, 16.0, w_out, kind)
    slow = logits_reference(x, layer, method, 16.0, w_out, kind)
    torch.testing.assert_close(fast, slow, **TOL)
    # and the gradients the optimiser sees
    for name in ("A", "B"):
        grads = []
        for fn in (lambda l: logits_factored(x, l, 16.0, w_out, kind),
                   lambda l: logits_reference(x, l, method, 16.0, w_out, kind)):
            local = {k: v.clone().requires_grad_(k == name) for k, v in layer.items()}
            fn(local).square().sum().backward()
            grads.append(local[name].grad)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_methods_with_their_own_delta_take_the_reference_path():
    method = get_method("fed-alora")
    state = initial_state(method, rank=4, alpha=8.0, seed=0)
    local = method.client_start(state, 0, None, 1)[LAYER]
    assert not can_factor(method, local)
    x = torch.rand(8, 784, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(logits(x, local, method, 8.0, make_w_out(0)),
                               logits_reference(x, local, method, 8.0, make_w_out(0)), rtol=0, atol=0)
    assert not can_factor(get_method("fedavg-full"), {"W": torch.zeros(784, 784)})


def test_unknown_model_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown model kind"):
        logits_factored(torch.zeros(1, 784), _random_layer(False), 16.0, make_w_out(0), "cnn")


def test_w_out_is_seeded_and_fixed_scale():
    torch.testing.assert_close(make_w_out(3), make_w_out(3), rtol=0, atol=0)
    assert not torch.equal(make_w_out(3), make_w_out(4))
    assert make_w_out(3).shape == (10, 784)
    assert abs(make_w_out(3).std().item() - 1 / 28) < 0.002  # N(0, 1/784) over 7,840 entries


def test_initial_state_keeps_a_and_makes_b_nonzero_and_balanced():
    method = get_method("rolora")
    core = method.init({LAYER: initial_state(method, 16, 16.0, 0).specs[LAYER]}, 16, alpha=16.0, seed=0)
    state = initial_state(method, 16, 16.0, 0)
    torch.testing.assert_close(state.layers[LAYER]["A"], core.layers[LAYER]["A"], rtol=0, atol=0)
    assert not torch.any(core.layers[LAYER]["B"]), "the core starts B at 0 (the reason for this module)"
    b = state.layers[LAYER]["B"]
    bound = balanced_b_bound(784, 784, 16)
    assert math.isclose(bound, 4 / 784)
    assert b.abs().max() <= bound and b.abs().max() > 0.9 * bound
    torch.testing.assert_close(b, initial_state(method, 16, 16.0, 0).layers[LAYER]["B"], rtol=0, atol=0)
    assert not torch.equal(b, initial_state(method, 16, 16.0, 1).layers[LAYER]["B"])


def test_every_method_starts_from_the_same_function():
    """fedavg-full's W starts at s·B₀·A₀ of the LoRA methods; fed-alora gets a non-zero B_base."""
    lora = initial_state(get_method("fedavg-lora"), 16, 16.0, 0).layers[LAYER]
    full = initial_state(get_method("fedavg-full"), 16, 16.0, 0).layers[LAYER]
    torch.testing.assert_close(full["W"], lora["B"] @ lora["A"], rtol=1e-6, atol=1e-9)
    # With s = alpha/r != 1 the scale must be in W too.
    lora8 = initial_state(get_method("fedavg-lora"), 16, 8.0, 0).layers[LAYER]
    full8 = initial_state(get_method("fedavg-full"), 16, 8.0, 0).layers[LAYER]
    torch.testing.assert_close(full8["W"], 0.5 * lora8["B"] @ lora8["A"], rtol=1e-6, atol=1e-9)
    for name in ("ffa-lora", "flora", "fedsa-lora", "lora-fair"):
        other = initial_state(get_method(name), 16, 16.0, 0).layers[LAYER]
        torch.testing.assert_close(other["B"], lora["B"], rtol=0, atol=0, msg=name)
    alora = initial_state(get_method("fed-alora"), 16, 16.0, 0).layers[LAYER]
    assert torch.any(alora["B_base"])
