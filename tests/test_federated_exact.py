"""Property 1: exact methods broadcast exactly the weighted mean of the clients' models.

Round 1 runs with every client, round 2 with a generated subset (partial participation); the model
of every client after round 2, participant or not, must equal sum_k p_k (model of client k).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_federated_support import ALPHA, PROPERTY_SETTINGS, assert_close_rel, cases, init_for

from rolora.federated import Exactness, available_methods, get_method
from rolora.federated.synthetic import synthetic_round

EXACT = [m for m in available_methods() if get_method(m).exact is Exactness.EXACT]


def test_the_exact_methods_are_the_expected_ones():
    assert set(EXACT) == {"ffa-lora", "rolora", "flora", "fedex-lora", "fedavg-full"}


@pytest.mark.parametrize("name", EXACT)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_broadcast_is_weighted_mean_of_client_models(name, data):
    method = get_method(name)
    case = data.draw(cases(mixed_ranks=method.mixes_ranks))
    weighting = data.draw(st.sampled_from(["samples", "uniform"]))
    state = init_for(method, case)
    _, updates, kept = synthetic_round(method, state, case.clients, case.samples, seed=case.seed, scale=0.5)
    state = method.aggregate(state, updates, 1, weighting)
    subset = data.draw(st.lists(st.sampled_from(case.clients), min_size=1, unique=True))
    locals_, updates, keeps = synthetic_round(method, state, subset, case.samples, kept, seed=case.seed + 1, scale=0.5)
    new = method.aggregate(state, updates, 2, weighting)
    kept.update(keeps)
    total = sum(case.samples[c] for c in subset)
    p = {c: (case.samples[c] / total if weighting == "samples" else 1 / len(subset)) for c in subset}
    for layer in case.specs:
        expected = sum(p[c] * method.delta(locals_[c][layer], ALPHA).to(torch.float64) for c in subset)
        for c in case.clients:
            model = method.delta(method.client_start(new, c, kept.get(c), 3)[layer], ALPHA)
            assert_close_rel(model.to(torch.float64), expected, case.dtype)
