"""The ServerApp's loop over an in-process grid of ClientApp nodes (no Ray, no network): a node that
fails mid-round, a round below the minimum of replies (the run stops with a resumable checkpoint), and
a restarted ServerApp continuing the run on fresh nodes (kept states handed back) to the same result
as an uninterrupted embedded run."""

from __future__ import annotations

import copy

import pytest
import torch
from flwr.app import Context, Error, Message, RecordDict
from nonsquare import NON_SQUARE_TARGETS

from rolora.federated.serial import state_to_flat
from rolora.flower import client_app, setups
from rolora.flower.server_loop import serve
from rolora.llm.checkpoint import latest_checkpoint, load_checkpoint
from rolora.llm.config import load_config
from rolora.llm.engine import RunStopped
from rolora.llm.engine import run as embedded_run

TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.max_train_samples=48", "run.eval_batch_size=24", "train.local_steps=1", "train.batch_size=4",
        "lora.rank=2", "lora.alpha=4.0", "lora.dropout=0.1", "federated.rounds=2", "federated.clients=3",
        *NON_SQUARE_TARGETS]


class NodeDown(RuntimeError):
    pass


class LocalGrid:
    """Flower's Grid as the server loop uses it, over ClientApp nodes in this process.

    ``down``: {node id: first round it fails from}; a failing node answers with an error reply, as
    the SuperLink does for a node that died. Each node gets its own copy of a message, as over a real
    transport (SecAgg+'s workflow sends one content object to every node and its mod mutates it).
    """

    def __init__(self, clients: int, down: dict[int, int] | None = None) -> None:
        self.contexts = {100 + k: Context(run_id=1, node_id=100 + k, node_config={"partition-id": k,
                                          "num-partitions": clients}, state=RecordDict(), run_config={})
                         for k in range(clients)}
        self.down = down or {}

    def get_node_ids(self):
        return list(self.contexts)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            msg = copy.deepcopy(msg)
            node = msg.metadata.dst_node_id
            t = int(msg.content["config"].get("t", 0)) if "config" in msg.content else 0
            try:
                if node in self.down and t >= self.down[node]:
                    raise NodeDown(f"node {node} is down")
                replies.append(client_app.app(msg, self.contexts[node]))
            except Exception as err:  # noqa: BLE001 - becomes the error reply a real node's failure gives
                replies.append(Message(Error(code=0, reason=repr(err)), reply_to=msg))
        return replies


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


def _config(method: str, *more: str):
    return load_config(None, TINY + [f"federated.method={method}", *more])


def test_a_node_failing_mid_run_is_dropped_and_the_round_completes(tmp_path):
    config = _config("rolora")
    history = serve(LocalGrid(3, down={102: 2}), config, tmp_path / "run", quiet=True)
    assert [r["dropped"] for r in history.rows[1:]] == [[], [2]]
    assert history.state.round == 2 and history.rows[2]["participants"] == 3
    # two updates, not three (against a whole round 2: RoLoRA uploads B in round 1, A in round 2, and
    # the non-square layers' A and B differ in size)
    whole = serve(LocalGrid(3), config, tmp_path / "whole", quiet=True)
    assert history.rows[2]["upload_bytes"] == whole.rows[2]["upload_bytes"] * 2 // 3


def test_too_few_replies_stop_the_run_and_a_restarted_server_continues_it(tmp_path):
    """FedSA-LoRA (B kept on the nodes): stopped in round 2, resumed on fresh nodes that get their B
    back from the checkpoint, it ends where an uninterrupted embedded run ends."""
    config = _config("fedsa-lora")
    run_dir = tmp_path / "run"
    with pytest.raises(RunStopped, match=r"round 2: 2 of 3 participants sent an update .* fewer than the minimum 3"):
        serve(LocalGrid(3, down={101: 2}), config, run_dir, min_replies=3, quiet=True)
    assert load_checkpoint(latest_checkpoint(run_dir)).state.round == 1
    resumed = serve(LocalGrid(3), None, run_dir, resume=True, quiet=True)  # new nodes: empty context.state
    embedded = embedded_run(config, tmp_path / "emb", quiet=True, setup=setups.setup_for(setups.config_json(config)))
    fa, ma = state_to_flat(resumed.state)
    fb, mb = state_to_flat(embedded.state)
    assert ma == mb
    for key in fa:  # equal to ~1e-9, not bit for bit (one client's fp32 training differs by an ulp)
        torch.testing.assert_close(fa[key], fb[key], rtol=1e-5, atol=1e-6, msg=key)
    for k, model in embedded.kept.items():
        for layer, tensors in model.items():
            torch.testing.assert_close(resumed.kept[k][layer]["B"], tensors["B"], rtol=1e-5, atol=1e-6)
    assert [r["round"] for r in resumed.rows] == [0, 1, 2]
    assert resumed.rows[2]["test_loss"] == pytest.approx(embedded.rows[2]["test_loss"], rel=1e-5)


def test_a_resumed_run_refuses_a_different_config(tmp_path):
    config = _config("rolora", "federated.rounds=1")
    serve(LocalGrid(3), config, tmp_path / "run", quiet=True)
    with pytest.raises(ValueError, match="differing keys: train.lr"):
        serve(LocalGrid(3), _config("rolora", "federated.rounds=1", "train.lr=0.1"), tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        serve(LocalGrid(3), config, tmp_path / "run")
