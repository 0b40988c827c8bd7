"""State serialisation: every method's state and kept state round-trip exactly, through a message
(flat tensors + JSON metadata) and through a file; bad files give errors naming the file."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_federated_support import ALL_METHODS, ALPHA, PROPERTY_SETTINGS, assert_state_equal, cases, init_for

from rolora.federated import ClientUpdate, LayerSpec, get_method
from rolora.federated.round import ClientResult, run_round
from rolora.federated.serial import (
    StateFormatError,
    kept_from_flat,
    kept_to_flat,
    load_kept,
    load_state,
    save_kept,
    save_state,
    state_from_flat,
    state_to_flat,
)
from rolora.federated.synthetic import perturb_trained


def _play(method, case, rounds: int, fraction: float):
    """``rounds`` synthetic rounds with partial participation and a dense head."""
    head = {"classifier.weight": torch.randn(3, 5, dtype=case.dtype), "classifier.bias": torch.zeros(3, dtype=case.dtype)}
    state = method.init(case.specs, case.ranks, alpha=ALPHA, seed=case.seed, dtype=case.dtype, dense=head)
    kept = {}

    def train(t, starts):
        return [ClientResult(perturb_trained(method, s.tensors, t, case.seed, s.client, 0.1), case.samples[s.client],
                             dense={n: x + 0.01 * t for n, x in s.dense.items()}) for s in starts]

    for _ in range(rounds):
        result = run_round(method, state, case.clients, train, kept, fraction=fraction, seed=case.seed)
        state, kept = result.state, result.kept
    return state, kept


def _assert_kept_equal(a, b):
    assert list(a) == list(b)
    for c in a:
        if a[c] is None:
            assert b[c] is None
            continue
        assert list(a[c]) == list(b[c])
        for layer in a[c]:
            assert list(a[c][layer]) == list(b[c][layer])
            for n, x in a[c][layer].items():
                assert x.dtype == b[c][layer][n].dtype and torch.equal(x, b[c][layer][n]), (c, layer, n)


@pytest.mark.parametrize("name", ALL_METHODS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_state_and_kept_round_trip_exactly(name, data, tmp_path_factory):
    method = get_method(name)
    case = data.draw(cases(mixed_ranks=method.mixes_ranks, max_clients=6, max_rank=6))
    rounds = data.draw(st.sampled_from([0, 1, 3]))
    fraction = data.draw(st.sampled_from([1.0, 0.5]))
    state, kept = _play(method, case, rounds, fraction)
    assert state.round == rounds

    tensors, meta = state_to_flat(state)
    meta = json.loads(json.dumps(meta))  # what a message carries
    assert_state_equal(state_from_flat(tensors, meta), state)
    kt, km = kept_to_flat(kept)
    _assert_kept_equal(kept_from_flat(kt, json.loads(json.dumps(km))), kept)

    folder = tmp_path_factory.mktemp("state")
    assert_state_equal(load_state(save_state(folder / "state.safetensors", state)), state)
    _assert_kept_equal(load_kept(save_kept(folder / "kept.safetensors", kept)), kept)


def test_a_loaded_state_continues_like_the_original():
    method = get_method("rolora")
    specs = {"q": LayerSpec(6, 4), "v": LayerSpec(3, 7)}
    state = method.init(specs, 2, alpha=ALPHA, seed=3)
    again = state_from_flat(*state_to_flat(state))
    up = {k: {"B": torch.randn(specs[k].out_features, 2)} for k in specs}
    a = method.aggregate(state, [ClientUpdate(0, 1.0, up)], 1)
    b = method.aggregate(again, [ClientUpdate(0, 1.0, up)], 1)
    assert_state_equal(a, b)


def test_bfloat16_and_mixed_client_ids_survive():
    method = get_method("flexlora")
    specs = {"model.layers.0.self_attn.q_proj": LayerSpec(5, 3)}
    state = method.init(specs, {"alice": 2, 7: 3, None: 1}, alpha=4.0, seed=1, dtype=torch.bfloat16)
    back = state_from_flat(*state_to_flat(state))
    assert_state_equal(back, state)
    assert dict(back.ranks) == {"alice": 2, 7: 3, None: 1}


def test_extras_must_survive_json():
    from dataclasses import replace

    state = get_method("rolora").init({"q": LayerSpec(3, 2)}, 1, alpha=1.0, seed=0)
    with pytest.raises(StateFormatError, match="extras"):
        state_to_flat(replace(state, extras={"k": (1, 2)}))
    with pytest.raises(StateFormatError, match="extras"):
        state_to_flat(replace(state, extras={"k": object()}))


def test_truncated_and_foreign_files_are_named(tmp_path):
    state = get_method("fedavg-lora").init({"q": LayerSpec(30, 20)}, 4, alpha=8.0, seed=0)
    path = save_state(tmp_path / "ckpt.safetensors", state)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(StateFormatError, match="cut.safetensors"):
        load_state(tmp_path / "cut.safetensors")
    with pytest.raises(StateFormatError, match="no such file"):
        load_state(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(StateFormatError, match="without rolora metadata"):
        load_state(tmp_path / "other.safetensors")
    with pytest.raises(StateFormatError, match="expected 'global'"):
        save_kept(tmp_path / "kept.safetensors", {0: None})
        load_state(tmp_path / "kept.safetensors")


def test_a_missing_tensor_is_named():
    state = get_method("rolora").init({"q": LayerSpec(3, 2)}, 1, alpha=1.0, seed=0)
    tensors, meta = state_to_flat(state)
    del tensors["layers/0/B"]
    with pytest.raises(StateFormatError, match="layers/0/B"):
        state_from_flat(tensors, meta)


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    import safetensors.torch as st_torch

    method = get_method("rolora")
    old = method.init({"q": LayerSpec(3, 2)}, 1, alpha=1.0, seed=0)
    path = save_state(tmp_path / "s.safetensors", old)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(st_torch, "save_file", boom)
    with pytest.raises(OSError):
        save_state(path, method.init({"q": LayerSpec(3, 2)}, 1, alpha=1.0, seed=5))
    assert_state_equal(load_state(path), old)
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]  # no temporary left behind
