"""The round protocol (rolora.federated.round): one place plays a round for every caller."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_federated_support import ALL_METHODS, ALPHA, assert_state_equal, snapshot

from rolora.federated import AggregationError, ClientUpdate, LayerSpec, get_method
from rolora.federated.round import (
    ClientResult,
    ClientStart,
    RoundFailed,
    client_starts,
    one_by_one,
    rounds_for_budget,
    run_round,
    sample_participants,
)
from rolora.federated.synthetic import perturb_trained

SPECS = {"q": LayerSpec(out_features=7, in_features=4), "v": LayerSpec(out_features=3, in_features=9)}
HEAD = {"classifier.weight": torch.randn(2, 5, generator=torch.Generator().manual_seed(0)), "classifier.bias": torch.zeros(2)}


def _noise_train(method, seed=0):
    def train(t, start):
        return ClientResult(perturb_trained(method, start.tensors, t, seed, start.client, 0.3), 1.0 + start.client,
                            dense={n: x + float(start.client) for n, x in start.dense.items()})
    return one_by_one(train)


@pytest.mark.parametrize("name", ALL_METHODS)
def test_run_round_equals_the_protocol_written_out(name):
    method = get_method(name)
    ranks = {0: 2, 1: 3, 2: 1, None: 2} if method.mixes_ranks else 2
    state = method.init(SPECS, ranks, alpha=ALPHA, seed=4, dense=HEAD)
    result = run_round(method, state, 3, _noise_train(method))
    # The same round written out from the method's own steps (not round.py's client_starts/client_uploads,
    # which are under test): each client starts, "trains" as _noise_train does, finishes, and the server
    # aggregates those uploads; the dense head's mean by hand.
    uploads, keeps = [], {}
    for k in (0, 1, 2):
        tensors = method.client_start(state, k, None, 1)
        start = ClientStart(client=k, t=1, tensors=tensors, trainable=method.trains(1), dense={},
                            rules=method.local_rules(state, k, None, 1))
        trained = perturb_trained(method, tensors, 1, 0, k, 0.3)
        keeps[k], upload, _ = method.client_finish(start, ClientResult(trained, 1.0 + k))
        uploads.append(ClientUpdate(k, 1.0 + k, upload))
    assert any(not torch.equal(x, method.client_start(state, 0, None, 1)[layer][n])
               for layer, named in uploads[0].tensors.items() for n, x in named.items()), "nothing trained"
    expected = method.aggregate(replace(state, dense={}), uploads, 1)
    for layer in SPECS:
        for n, x in expected.layers[layer].items():
            torch.testing.assert_close(result.state.layers[layer][n], x, rtol=0, atol=0)
    for n, x in HEAD.items():  # weights 1/6, 2/6, 3/6 of x + 0, x + 1, x + 2
        torch.testing.assert_close(result.state.dense[n], x + (0 * 1 + 1 * 2 + 2 * 3) / 6)
    assert result.participants == [0, 1, 2] and result.dropped == [] and list(result.kept) == [0, 1, 2]
    for k, kept in keeps.items():
        if kept is None:
            assert result.kept[k] is None
        else:
            for layer, named in kept.items():
                for n, x in named.items():
                    assert torch.equal(result.kept[k][layer][n], x), (k, layer, n)
    comm = method.communication(SPECS, ranks, 1, clients=[0, 1, 2], dense_params=10 + 2)
    assert result.communication == comm
    head = sum(x.numel() for x in HEAD.values())
    bare = method.communication(SPECS, ranks, 1, clients=[0, 1, 2])
    assert comm.total_upload_params == bare.total_upload_params + 3 * head


def test_batched_training_sees_every_participant_at_once():
    method = get_method("rolora")
    state = method.init(SPECS, 2, alpha=ALPHA, seed=0)
    seen = []

    def train(t, starts):
        seen.append((t, [s.client for s in starts], starts[0].trainable))
        return [ClientResult(s.tensors, 1.0) for s in starts]

    run_round(method, state, ["a", "b", "c"], train)
    assert seen == [(1, ["a", "b", "c"], frozenset({"B"}))]


def test_failed_clients_are_dropped_and_keep_their_state():
    method = get_method("fedsa-lora")  # stateful: keeps B locally
    state = method.init(SPECS, 2, alpha=ALPHA, seed=0)
    first = run_round(method, state, 3, _noise_train(method))

    def train(t, starts):
        good = _noise_train(method, seed=9)(t, starts)
        return [None if s.client == 1 else r for s, r in zip(starts, good)]

    second = run_round(method, first.state, 3, train, first.kept)
    assert second.dropped == [1] and list(second.results) == [0, 2]
    assert second.kept[1] is first.kept[1]
    assert second.communication.per_client.keys() == {0, 2}


def test_all_clients_failing_raises_and_changes_nothing():
    method = get_method("rolora")
    state = method.init(SPECS, 2, alpha=ALPHA, seed=0, dense=HEAD)
    before = snapshot(state)
    kept = {}
    with pytest.raises(RoundFailed, match="every participant failed"):
        run_round(method, state, 2, lambda t, starts: [None] * len(starts), kept)
    assert_state_equal(state, before)
    assert kept == {}


def test_wrong_result_count_and_type_are_errors():
    method = get_method("rolora")
    state = method.init(SPECS, 2, alpha=ALPHA, seed=0)
    with pytest.raises(AggregationError, match="1 results for 2 participants"):
        run_round(method, state, 2, lambda t, starts: [ClientResult(starts[0].tensors, 1.0)])
    with pytest.raises(AggregationError, match="client 0.*dict"):
        run_round(method, state, 1, lambda t, starts: [starts[0].tensors])


def test_dense_head_mismatch_names_the_client():
    method = get_method("ffa-lora")
    state = method.init(SPECS, 2, alpha=ALPHA, seed=0, dense=HEAD)

    def train(t, starts):
        return [ClientResult(s.tensors, 1.0, dense={"classifier.weight": s.dense["classifier.weight"]}) for s in starts]

    with pytest.raises(AggregationError, match=r"client 0: dense tensors differ.*missing \['classifier.bias'\]"):
        run_round(method, state, 1, train)

    def bad_shape(t, starts):
        return [ClientResult(s.tensors, 1.0, dense={**s.dense, "classifier.bias": torch.zeros(3)}) for s in starts]

    with pytest.raises(AggregationError, match="client 0, dense tensor 'classifier.bias': shape"):
        run_round(method, state, 1, bad_shape)

    def nan(t, starts):
        return [ClientResult(s.tensors, 1.0, dense={**s.dense, "classifier.bias": torch.full((2,), float("nan"))})
                for s in starts]

    with pytest.raises(AggregationError, match="non-finite"):
        run_round(method, state, 1, nan)


def test_sampling_is_seeded_per_round_and_independent_of_history():
    a = sample_participants(20, 0.25, seed=3, t=5)
    assert a == sample_participants(20, 0.25, seed=3, t=5) and len(a) == 5 and a == sorted(a)
    assert a != sample_participants(20, 0.25, seed=3, t=6)
    ids = [f"c{i}" for i in range(20)]
    assert sample_participants(ids, 0.25, seed=3, t=5) == [f"c{i}" for i in a]
    assert sample_participants(4, 0.01, 0, 1).__len__() == 1
    assert sample_participants(4, 1.0, 0, 1) == [0, 1, 2, 3]
    # The historic toy sampler: numpy's generator seeded by [seed, t, 7].
    rng = np.random.default_rng([3, 5, 7])
    assert a == sorted(rng.choice(20, size=5, replace=False).tolist())
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(AggregationError, match="fraction"):
            sample_participants(4, bad, 0, 1)


def test_round_seed_defaults_to_the_state_seed():
    method = get_method("rolora")
    state = method.init(SPECS, 2, alpha=ALPHA, seed=11)
    echo = lambda t, starts: [ClientResult(s.tensors, 1.0) for s in starts]  # noqa: E731
    assert run_round(method, state, 10, echo, fraction=0.3).participants == sample_participants(10, 0.3, 11, 1)


def test_starts_are_copies():
    method = get_method("fedavg-lora")
    state = method.init(SPECS, 2, alpha=ALPHA, seed=0, dense=HEAD)
    start = client_starts(method, state, [0])[0]
    start.tensors["q"]["A"].add_(1.0)
    start.dense["classifier.bias"].add_(1.0)
    assert not torch.equal(start.tensors["q"]["A"], state.layers["q"]["A"])
    assert torch.equal(state.dense["classifier.bias"], HEAD["classifier.bias"])


def test_rounds_for_budget_keeps_client_steps_constant():
    assert rounds_for_budget(30, 3, 3) == 30
    assert rounds_for_budget(30, 3, 30) == 3
    assert rounds_for_budget(30, 3, 50) == 2  # ceil(1.8)
    assert rounds_for_budget(1, 1, 1000) == 1
