"""The Flower app's pieces without a Flower runtime: records, incremental downloads, the ClientApp's
handlers called directly (one model per process, kept state in context.state, what travels)."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from rolora.federated import ClientUpdate, LayerSpec, get_method
from rolora.federated.round import client_starts
from rolora.federated.serial import StateFormatError, state_to_flat
from rolora.flower import client_app, setups
from rolora.flower.codec import NEVER, Downloads, from_record, merge, models_from_record, state_content, to_record
from rolora.flower.strategy import RoloraStrategy
from rolora.llm.config import load_config
from rolora.llm.local_training import learning_rate, train_client

SPECS = {"q": LayerSpec(6, 5), "v": LayerSpec(6, 5)}


def _rolora_state():
    method = get_method("rolora")
    return method, method.init(SPECS, ranks=2, alpha=4.0, seed=0, dense={"head": torch.randn(3, 4)})


def _step(method, state, t, factor_value):
    """A fake round: every client uploads the trained factor filled with ``factor_value``."""
    trained = next(iter(method.trains(t)))
    updates = [ClientUpdate(k, 1.0, {layer: {trained: torch.full_like(state.layers[layer][trained], factor_value)}
                                     for layer in SPECS}, dense={"head": state.dense["head"] + k})
               for k in range(2)]
    return method.aggregate(state, updates, t)


def test_records_round_trip_bit_for_bit():
    """bfloat16 too (a bf16 base's head, model.dtype auto on a GPU or a CPU with native bf16): numpy
    has no bf16, so its bit patterns travel as int16, the same bytes."""
    x = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.float64),
         "h": torch.randn(2, 3).to(torch.bfloat16)}
    record = to_record(x)
    back = from_record(record)
    assert set(back) == set(x)
    assert all(torch.equal(back[k], x[k]) and back[k].dtype == x[k].dtype for k in x)
    assert record["bf16:h"].dtype == "int16"  # two bytes an element, as bf16
    back["a"].add_(1)  # a writable copy, not a view of Flower's buffer


def test_downloads_send_only_what_changed_and_a_node_rebuilds_the_state():
    method, s0 = _rolora_state()
    downloads, node_state = Downloads(), RecordDict()
    base, changed, meta = downloads.message(7, s0)
    assert base == NEVER and set(changed) == set(state_to_flat(s0)[0])  # first contact: everything
    assert _same_state(merge(node_state, state_content(base, changed, meta)), s0)
    s1 = _step(method, s0, 1, 0.5)  # a B-round: only B and the head change
    base, changed, meta = downloads.message(7, s1)
    assert base == 0
    names = {k.rsplit("/", 1)[-1] if k.startswith("layers") else meta["dense"][int(k.split("/")[1])] for k in changed}
    assert names == {"B", "head"} and len(changed) == 3  # B of both layers, the head; A stays at the node
    assert _same_state(merge(node_state, state_content(base, changed, meta)), s1)
    s2 = _step(method, s1, 2, 0.25)  # an A-round
    base, changed, meta = downloads.message(7, s2)
    assert {k.rsplit("/", 1)[-1] for k in changed if k.startswith("layers")} == {"A"}
    assert _same_state(merge(node_state, state_content(base, changed, meta)), s2)


def test_a_node_with_a_stale_copy_refuses_and_the_server_then_sends_everything():
    method, s0 = _rolora_state()
    downloads = Downloads()
    downloads.message(7, s0)  # sent, but the node restarted and lost it
    s1 = _step(method, s0, 1, 0.5)
    base, changed, meta = downloads.message(7, s1)
    with pytest.raises(StateFormatError, match="stale node copy: the message builds on round 0, this node holds nothing"):
        merge(RecordDict(), state_content(base, changed, meta))
    downloads.forget(7)
    base, changed, meta = downloads.message(7, s1)
    assert base == NEVER and _same_state(merge(RecordDict(), state_content(base, changed, meta)), s1)


def _same_state(a, b) -> bool:
    fa, ma = state_to_flat(a)
    fb, mb = state_to_flat(b)
    return ma == mb and fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


# --------------------------------------------------------------------------- the ClientApp's handlers
TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.max_train_samples=48", "run.eval_batch_size=24", "federated.clients=2", "federated.rounds=2",
        "train.local_steps=1", "train.batch_size=4", "lora.rank=2", "lora.alpha=4.0", "lora.dropout=0.1"]


@pytest.fixture(scope="module")
def fedsa():
    config = load_config(None, TINY + ["federated.method=fedsa-lora"])
    text = setups.config_json(config)
    return config, text, setups.setup_for(text)


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Messages read the process's Flower task identity, which only a Flower runtime sets."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _message(content: RecordDict, kind: str) -> Message:
    return Message(content, dst_node_id=11, message_type=kind)


def test_client_handlers_train_from_the_kept_state_and_build_the_model_once(fedsa):
    config, text, setup = fedsa
    context = Context(run_id=1, node_id=11, node_config={"partition-id": 1, "num-partitions": 2},
                      state=RecordDict(), run_config={})
    hello = client_app.query(_message(RecordDict({"config": ConfigRecord({"action": "hello", "config": text})}),
                                      MessageType.QUERY), context)
    assert int(hello.content["hello"]["client"]) == 1
    strategy = RoloraStrategy(setup.method, setup.initial_state(), 2)
    strategy.nodes = {1: 11}
    kept, state = {}, setup.initial_state()
    for t in (1, 2):
        message, _ = strategy._message(1, MessageType.TRAIN, t=t)
        reply = client_app.train(message, context)
        uploads, dense = models_from_record(reply.content["upload"], str(reply.content["result"]["meta"]))
        # the embedded engine's client, trained here on the same shared model
        [start] = client_starts(setup.method, state, [1], kept)
        expected = train_client(setup, start, learning_rate(config, t))
        want = setup.method.client_upload(expected.tensors, t)
        assert {n for layer in uploads[1].values() for n in layer} == {"A"}  # FedSA-LoRA's B never travels
        for layer in want:
            torch.testing.assert_close(uploads[1][layer]["A"], want[layer]["A"], rtol=0, atol=0)
        kept[1] = setup.method.client_keep(expected.tensors, t)
        state = setup.method.aggregate(state, [ClientUpdate(1, expected.num_samples, want, dense=expected.dense)], t)
        strategy.state = state
    assert setups.builds() == 1  # two messages, one model
    node_kept = client_app.load_kept(context.state)
    assert set(node_kept) == {1}
    for layer in kept[1]:
        assert torch.equal(node_kept[1][layer]["B"], kept[1][layer]["B"])


def test_a_node_outside_the_run_is_refused_clearly(fedsa):
    _, text, _ = fedsa
    ask = RecordDict({"config": ConfigRecord({"action": "hello", "config": text})})
    for node_config, words in [({}, "has no partition-id"), ({"partition-id": 2, "num-partitions": 2}, "partition-id=2"),
                               ({"partition-id": 0, "num-partitions": 5}, "federated.clients = 2")]:
        context = Context(run_id=1, node_id=3, node_config=node_config, state=RecordDict(), run_config={})
        with pytest.raises(ValueError, match=words):
            client_app.query(_message(ask, MessageType.QUERY), context)
    with pytest.raises(RuntimeError, match="not been introduced"):
        client_app.train(_message(RecordDict(), MessageType.TRAIN),
                         Context(run_id=1, node_id=3, node_config={}, state=RecordDict(), run_config={}))
    assert json.loads(text)["federated"]["method"] == "fedsa-lora"


def test_the_server_loop_writes_the_embedded_engines_row():
    """One row function for both engines: a Flower round's record gives the embedded row's keys and
    values; the server loop only adds the flower_* bytes (tests/test_flower_engines.py compares runs)."""
    from rolora.federated import CommCost
    from rolora.federated.round import ClientResult
    from rolora.flower import server_loop
    from rolora.flower.strategy import RoundRecord
    from rolora.llm import engine
    from rolora.llm.round_row import round_row

    assert server_loop.round_row is engine.round_row is round_row
    results = {1: ClientResult({}, 2, metrics={"train_loss": 0.5, "tokens": 12.0})}
    rec = RoundRecord(t=3, participants=[1], results=results, communication=CommCost(4, 6),
                      flower_upload_bytes=100, flower_download_bytes=200)
    config = load_config(None, ["federated.rounds=3"])
    row = round_row(config, rec.t, rec, 2.0)
    assert row == {"round": 3, "train_loss": 0.5, "lr": learning_rate(config, 3), "participants": 1, "dropped": [],
                   "upload_bytes": 16, "download_bytes": 24, "wall_s": 2.0, "tokens": 12, "tokens_per_s": 6.0,
                   "product_gap": None, "client_drift": None, "layers": {}}  # no uploads seen: no diagnostics
