"""Shared strategies and tolerances for the tests/test_federated_*.py files (holds no tests).

Layers are always non-square (d != n): square layers hide transpose bugs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from rolora.federated import GlobalState, LayerSpec, Method, available_methods, get_method

# Float64: sums of up to 50 products of O(1..10) entries; 1e-10 relative is ~1e6 ulps of headroom.
# Float32: the same sums carry ~50·2^-24 ≈ 3e-6 relative error; 1e-4 leaves room for the SVD paths.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}

PROPERTY_SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

ALPHA = 16.0


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, factor: float = 1.0) -> None:
    """assert_close with rtol = TOLERANCE[dtype]·factor and atol scaled to the expected magnitude."""
    tol = TOLERANCE[dtype] * factor
    scale = max(float(expected.abs().max()), 1.0)
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


@dataclass
class Case:
    """A generated scenario: layers, per-client ranks and sample counts, dtype, seed."""

    specs: dict[str, LayerSpec]
    ranks: dict[int, int]
    samples: dict[int, float]
    dtype: torch.dtype
    seed: int

    @property
    def clients(self) -> list[int]:
        return list(self.ranks)


@st.composite
def cases(draw, mixed_ranks: bool = False, max_clients: int = 50, max_rank: int = 32, layers: int = 2) -> Case:
    """Non-square layers (2..40), 1..max_clients clients, ranks 1..max_rank, positive weights."""
    specs = {}
    for i in range(layers):
        d = draw(st.integers(2, 40))
        n = draw(st.integers(2, 40).filter(lambda x, d=d: x != d))
        specs[f"layer{i}"] = LayerSpec(d, n)
    k = draw(st.integers(1, max_clients))
    if mixed_ranks:
        ranks = {c: draw(st.integers(1, max_rank)) for c in range(k)}
    else:
        r = draw(st.integers(1, max_rank))
        ranks = {c: r for c in range(k)}
    samples = {c: draw(st.floats(0.01, 1000.0, allow_nan=False, allow_infinity=False)) for c in range(k)}
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    seed = draw(st.integers(0, 2**31 - 1))
    return Case(specs, ranks, samples, dtype, seed)


def init_for(method: Method, case: Case) -> GlobalState:
    return method.init(case.specs, case.ranks, alpha=ALPHA, seed=case.seed, dtype=case.dtype)


def snapshot(state: GlobalState) -> GlobalState:
    """A deep copy to compare with after a failing call."""
    return copy.deepcopy(state)


def assert_state_equal(a: GlobalState, b: GlobalState) -> None:
    """Bit-for-bit equality of two states (tensors with torch.equal, the rest with ==)."""
    assert a.round == b.round and a.alpha == b.alpha
    assert dict(a.ranks) == dict(b.ranks) and dict(a.specs) == dict(b.specs)
    assert dict(a.extras) == dict(b.extras) and a.seed == b.seed
    assert list(a.dense) == list(b.dense)
    for name in a.dense:
        assert a.dense[name].dtype == b.dense[name].dtype and torch.equal(a.dense[name], b.dense[name]), name
    assert list(a.layers) == list(b.layers)
    for layer in a.layers:
        assert a.layers[layer].keys() == b.layers[layer].keys(), layer
        for name in a.layers[layer]:
            x, y = a.layers[layer][name], b.layers[layer][name]
            assert x.dtype == y.dtype and torch.equal(x, y), (layer, name)


ALL_METHODS = available_methods()
UNIFORM_ONLY_METHODS = [m for m in ALL_METHODS if not get_method(m).mixes_ranks]
