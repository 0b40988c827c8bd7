"""Bad input raises AggregationError naming client, layer and problem, and leaves the state as it was."""

from __future__ import annotations

import pytest
import torch
from test_federated_support import ALL_METHODS, UNIFORM_ONLY_METHODS, assert_state_equal, snapshot

from rolora.federated import AggregationError, ClientUpdate, LayerSpec, get_method
from rolora.federated.synthetic import synthetic_round

SPECS = {"q_proj": LayerSpec(12, 7), "v_proj": LayerSpec(5, 9)}


def _setup(name, ranks=None):
    method = get_method(name)
    ranks = ranks or ({0: 2, 1: 3, 2: 2} if method.mixes_ranks else 3)
    state = method.init(SPECS, ranks, alpha=8.0, seed=0, dtype=torch.float64)
    _, updates, _ = synthetic_round(method, state, [0, 1, 2], {0: 3.0, 1: 4.0, 2: 5.0}, seed=1)
    return method, state, updates


def _edit(update: ClientUpdate, layer: str, name: str, value=None, drop=False) -> ClientUpdate:
    tensors = {l: dict(t) for l, t in update.tensors.items()}
    if drop:
        del tensors[layer][name]
    else:
        tensors[layer][name] = value
    return ClientUpdate(update.client, update.num_samples, tensors)


def _first(update: ClientUpdate, layer="v_proj") -> str:
    return sorted(update.tensors[layer])[0]


def _expect_error(method, state, updates, *needles, t=1, weighting="samples"):
    before = snapshot(state)
    with pytest.raises(AggregationError) as err:
        method.aggregate(state, updates, t, weighting)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))
    assert_state_equal(state, before)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_wrong_shape_names_client_layer_tensor(name):
    method, state, updates = _setup(name)
    key = _first(updates[1])
    x = updates[1].tensors["v_proj"][key]
    bad = torch.zeros(x.shape[0] + 1, *x.shape[1:], dtype=x.dtype) if x.dim() else torch.zeros(2)
    _expect_error(method, state, [updates[0], _edit(updates[1], "v_proj", key, bad), updates[2]],
                  "client 1", "'v_proj'", repr(key), "shape")


@pytest.mark.parametrize("name", ALL_METHODS)
def test_transposed_factor_is_rejected(name):
    method, state, updates = _setup(name)
    key = _first(updates[2], "q_proj")
    x = updates[2].tensors["q_proj"][key]
    _expect_error(method, state, updates[:2] + [_edit(updates[2], "q_proj", key, x.T.contiguous())],
                  "client 2", "'q_proj'", "shape")


@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_upload(name, value):
    method, state, updates = _setup(name)
    key = _first(updates[0])
    x = updates[0].tensors["v_proj"][key].clone()
    x.view(-1)[0] = value
    _expect_error(method, state, [_edit(updates[0], "v_proj", key, x)] + updates[1:],
                  "client 0", "'v_proj'", "non-finite")


@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("n", [0, -1.0, float("nan"), float("inf")])
def test_bad_sample_counts(name, n):
    method, state, updates = _setup(name)
    bad = ClientUpdate(updates[1].client, n, updates[1].tensors)
    _expect_error(method, state, [updates[0], bad, updates[2]], "client 1", "num_samples")


@pytest.mark.parametrize("name", ALL_METHODS)
def test_empty_round(name):
    method, state, _ = _setup(name)
    _expect_error(method, state, [], "empty round")


@pytest.mark.parametrize("name", ALL_METHODS)
def test_missing_layer_missing_tensor_extra_tensor(name):
    method, state, updates = _setup(name)
    no_layer = ClientUpdate(1, 2.0, {"q_proj": updates[1].tensors["q_proj"]})
    _expect_error(method, state, [updates[0], no_layer], "client 1", "missing layer", "v_proj")
    key = _first(updates[2])
    _expect_error(method, state, [updates[0], _edit(updates[2], "v_proj", key, drop=True)],
                  "client 2", "'v_proj'", "missing tensor", key)
    _expect_error(method, state, [_edit(updates[0], "q_proj", "extra", torch.zeros(1, dtype=torch.float64))],
                  "client 0", "'q_proj'", "unexpected tensor", "extra")
    extra_layer = ClientUpdate(0, 1.0, {**updates[0].tensors, "k_proj": updates[0].tensors["q_proj"]})
    _expect_error(method, state, [extra_layer], "client 0", "unknown layer", "k_proj")


@pytest.mark.parametrize("name", ALL_METHODS)
def test_duplicate_client_round_number_dtype_weighting(name):
    method, state, updates = _setup(name)
    _expect_error(method, state, [updates[0], updates[0]], "client 0", "more than one update")
    _expect_error(method, state, updates, "round 3", "next round is 1", t=3)
    key = _first(updates[1])
    as32 = updates[1].tensors["v_proj"][key].to(torch.float32)
    _expect_error(method, state, [_edit(updates[1], "v_proj", key, as32)], "client 1", "dtype")
    _expect_error(method, state, updates, "weighting", weighting="by-magic")


@pytest.mark.parametrize("name", UNIFORM_ONLY_METHODS)
def test_methods_that_cannot_mix_ranks_refuse_them(name):
    method = get_method(name)
    with pytest.raises(AggregationError, match=f"{name}.*different ranks"):
        method.init(SPECS, {0: 2, 1: 4}, alpha=8.0, seed=0)
    # A client uploading another rank than its own is a shape error naming it.
    method, state, updates = _setup(name)
    other = get_method(name).init(SPECS, 5, alpha=8.0, seed=0, dtype=torch.float64)
    _, wrong_rank, _ = synthetic_round(method, other, [1], seed=1)
    _expect_error(method, state, [updates[0], wrong_rank[0]], "client 1", "rank 3", "shape")


@pytest.mark.parametrize("name", ALL_METHODS)
def test_unknown_client_without_default_rank(name):
    method = get_method(name)
    state = method.init(SPECS, {0: 2, 1: 2}, alpha=8.0, seed=0, dtype=torch.float64)
    _, updates, _ = synthetic_round(method, state, [0], seed=1)
    _expect_error(method, state, [ClientUpdate(7, 1.0, updates[0].tensors)], "client 7", "no rank")


def test_unknown_method_lists_valid_names():
    with pytest.raises(AggregationError) as err:
        get_method("fedprox-lora")
    for name in ALL_METHODS:
        assert name in str(err.value)
    with pytest.raises(AggregationError, match="rolora.*bad parameters"):
        get_method("rolora", periodd=2)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"ranks": 0}, "rank"), ({"ranks": {0: 2.5}}, "client 0"), ({"alpha": -1.0}, "alpha"),
     ({"alpha": float("nan")}, "alpha"), ({"specs": {}}, "specs"), ({"seed": 1.5}, "seed"),
     ({"dtype": torch.int64}, "dtype")],
)
def test_bad_init_arguments(kwargs, match):
    args = {"specs": SPECS, "ranks": 2, "alpha": 8.0, "seed": 0} | kwargs
    with pytest.raises(AggregationError, match=match):
        get_method("rolora").init(**args)


@pytest.mark.parametrize("name", ["fedsa-lora", "fed-alora"])
def test_bad_kept_state_is_rejected(name):
    method, state, updates = _setup(name)
    _, _, keeps = synthetic_round(method, state, [0], seed=1)
    kept = keeps[0]
    key = sorted(kept["q_proj"])[0]
    bad = {l: dict(t) for l, t in kept.items()}
    bad["q_proj"][key] = bad["q_proj"][key].T.contiguous()
    with pytest.raises(AggregationError, match="client 0.*kept layer 'q_proj'.*shape"):
        method.client_start(state, 0, bad, 1)
    with pytest.raises(AggregationError, match="missing layer"):
        method.client_start(state, 0, {"q_proj": kept["q_proj"]}, 1)


def test_stateless_methods_refuse_kept_state_and_wrong_round():
    method, state, _ = _setup("rolora")
    with pytest.raises(AggregationError, match="keep nothing"):
        method.client_start(state, 0, {"q_proj": {}}, 1)
    with pytest.raises(AggregationError, match="next round is 1"):
        method.client_start(state, 0, None, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fast_finite_check_matches_elementwise_reference(dtype):
    from rolora.federated.validation import all_finite

    big = torch.finfo(dtype).max
    cases = [
        torch.zeros(0, dtype=dtype),
        torch.randn(5, 3).to(dtype),
        torch.tensor([big, big, big], dtype=dtype),  # finite entries whose sum overflows
        torch.tensor([1.0, float("nan")], dtype=dtype),
        torch.tensor([float("inf"), -float("inf")], dtype=dtype),
        torch.tensor([-float("inf"), 2.0], dtype=dtype),
    ]
    for x in cases:
        assert all_finite(x) == bool(torch.isfinite(x).all()), x


@pytest.mark.parametrize("name", ALL_METHODS)
def test_upload_that_is_not_a_tensor(name):
    method, state, updates = _setup(name)
    key = _first(updates[1])
    as_list = updates[1].tensors["v_proj"][key].tolist()
    _expect_error(method, state, [updates[0], _edit(updates[1], "v_proj", key, as_list)],
                  "client 1", "'v_proj'", "expected a torch.Tensor")


def test_numpy_sample_counts_are_accepted_and_giant_ones_rejected_cleanly():
    import numpy as np

    method = get_method("rolora")
    specs = {"q": LayerSpec(9, 5)}
    state = method.init(specs, 2, alpha=8.0, seed=0, dtype=torch.float64)
    _, updates, _ = synthetic_round(method, state, [0, 1], seed=3)
    as_numpy = [ClientUpdate(u.client, np.int64(10 + i), u.tensors) for i, u in enumerate(updates)]
    as_float = [ClientUpdate(u.client, float(10 + i), u.tensors) for i, u in enumerate(updates)]
    assert torch.equal(method.aggregate(state, as_numpy, 1).layers["q"]["B"],
                       method.aggregate(state, as_float, 1).layers["q"]["B"])
    before = snapshot(state)
    giant = [ClientUpdate(u.client, 1e308, u.tensors) for u in updates]
    with pytest.raises(AggregationError, match="overflow"):
        method.aggregate(state, giant, 1)
    assert_state_equal(state, before)
    with pytest.raises(AggregationError, match="real number"):
        method.aggregate(state, [ClientUpdate(0, "10", updates[0].tensors)], 1)


@pytest.mark.parametrize("spec", ["rolora:period=0", "rolora:ffa_after=0.5", "fedex-lora:residual_transport=x"])
def test_invalid_method_parameters_raise_aggregation_error_naming_the_method(spec):
    from rolora.federated import method_from_spec

    with pytest.raises(AggregationError, match="method"):
        method_from_spec(spec)
