"""The core's harder edges: client ids are int or str only, and an aggregate that overflows to
NaN/±Inf is refused naming the layer, with the state left unchanged. Layers are non-square."""

from __future__ import annotations

import pytest
import torch
from test_federated_support import ALL_METHODS, assert_state_equal, snapshot

from rolora.federated import AggregationError, ClientUpdate, LayerSpec, get_method
from rolora.federated.synthetic import synthetic_round

SPECS = {"q_proj": LayerSpec(12, 7), "v_proj": LayerSpec(5, 9)}
# A float that equals client 1, a bool that equals 1, None (the default-rank key), unhashables.
BAD_IDS = [None, 1.0, 1.5, True, [1], (1,), b"1"]
RANK_KEY_BAD_IDS = [c for c in BAD_IDS if c is not None and not isinstance(c, list)]  # None: the default


def _setup(name):
    method = get_method(name)
    state = method.init(SPECS, {0: 2, 1: 3, None: 2} if method.mixes_ranks else 2, alpha=8.0, seed=0)
    _, updates, _ = synthetic_round(method, state, [0, 1], seed=1)
    return method, state, updates


def _refused(call, client):
    with pytest.raises(AggregationError) as err:
        call()
    assert f"client id {client!r}" in str(err.value) and "int or str" in str(err.value)


@pytest.mark.parametrize("name", ALL_METHODS)
@pytest.mark.parametrize("client", BAD_IDS, ids=repr)
def test_bad_client_id_in_an_update_names_it_and_leaves_the_state(name, client):
    method, state, updates = _setup(name)
    before = snapshot(state)
    bad = ClientUpdate(client, 1.0, updates[1].tensors)
    _refused(lambda: method.aggregate(state, [updates[0], bad], 1), client)
    assert_state_equal(state, before)


@pytest.mark.parametrize("client", BAD_IDS, ids=repr)
def test_bad_client_id_is_refused_by_client_start_and_communication(client):
    method, state, _ = _setup("flexlora")
    _refused(lambda: method.client_start(state, client, None, 1), client)
    _refused(lambda: method.communication(SPECS, state.ranks, 1, clients=[0, client]), client)


def test_a_bool_is_not_a_client_count():
    with pytest.raises(AggregationError, match="count or a list of ids"):
        get_method("rolora").communication(SPECS, 2, 1, clients=True)


@pytest.mark.parametrize("client", RANK_KEY_BAD_IDS, ids=repr)
def test_bad_client_id_as_a_rank_key_is_refused(client):
    _refused(lambda: get_method("flora").init(SPECS, {client: 2, 0: 3}, alpha=8.0, seed=0), client)


def test_int_and_str_ids_both_work_and_stay_distinct():
    method = get_method("flora")
    state = method.init(SPECS, {1: 2, "1": 3, "alice": 4}, alpha=8.0, seed=0)
    _, updates, _ = synthetic_round(method, state, [1, "1", "alice"], seed=1)
    assert method.aggregate(state, updates, 1).round == 1
    assert method.client_start(state, "1", None, 1)["q_proj"]["A"].shape == (3, 7)


# Uploads of 1e25 are finite in float32 (max ≈ 3.4e38), but a product of two of them is 1e50.
OVERFLOWING = ["flora", "fedex-lora", "flexlora", "flexlora:svd=dense", "lora-fair", "fed-alora"]


@pytest.mark.parametrize("spec", OVERFLOWING)
def test_finite_uploads_whose_aggregate_overflows_are_refused_naming_the_layer(spec):
    from rolora.federated import method_from_spec

    method = method_from_spec(spec)
    state = method.init(SPECS, 2, alpha=8.0, seed=0, dtype=torch.float32)
    _, updates, _ = synthetic_round(method, state, [0, 1], seed=1)
    huge = [
        ClientUpdate(u.client, u.num_samples, {
            layer: {k: (v if layer == "q_proj" else v * 1e25) for k, v in tensors.items()}
            for layer, tensors in u.tensors.items()
        })
        for u in updates
    ]
    assert all(bool(torch.isfinite(v).all()) for u in huge for ts in u.tensors.values() for v in ts.values())
    before = snapshot(state)
    with pytest.raises(AggregationError, match="layer 'v_proj'") as err:
        method.aggregate(state, huge, 1)
    assert "q_proj" not in str(err.value)
    assert_state_equal(state, before)
    method.aggregate(state, updates, 1)  # the same round with sane uploads still aggregates


@pytest.mark.parametrize("name", ["fedavg-lora", "rolora", "fedavg-full"])
def test_a_weighted_mean_of_the_largest_finite_values_is_not_refused(name):
    """A mean cannot overflow; the result check must not cry wolf at float32's largest values."""
    method = get_method(name)
    state = method.init(SPECS, 2, alpha=8.0, seed=0, dtype=torch.float32)
    _, updates, _ = synthetic_round(method, state, [0, 1, 2], seed=1)
    big = torch.finfo(torch.float32).max
    full = [
        ClientUpdate(u.client, float(i + 1), {
            layer: {k: torch.full_like(v, big) for k, v in tensors.items()} for layer, tensors in u.tensors.items()
        })
        for i, u in enumerate(updates)
    ]
    new = method.aggregate(state, full, 1)
    assert all(bool(torch.isfinite(v).all()) for ts in new.layers.values() for v in ts.values())
