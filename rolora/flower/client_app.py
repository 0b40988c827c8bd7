"""The ClientApp: one rolora client per Flower node (its client id is the node's ``partition-id``).

Messages (the server's side is :mod:`rolora.flower.strategy`):

- ``query`` ``hello``: the run's config (JSON), kept in ``context.state``; the node answers its client id.
- ``train``: the changed global tensors; the node runs ``method.client_start`` with the kept state
  from its ``context.state``, trains (:func:`rolora.llm.local_training.train_client`), keeps
  ``method.client_finish`` (by default ``client_keep``; its upload is ``client_upload`` plus the dense
  tensors; a composed method clips it or adds SCAFFOLD's control variates there).
- ``evaluate``: the node scores its own next-round model (personalised methods).
- ``query`` ``kept``: the node's kept state, for the server's checkpoint.
- SecAgg+ (:mod:`rolora.flower.secagg`): a ``train`` message with ``secagg`` set keeps the upload on
  the node; the workflow's own ``train`` messages then go through Flower's ``secaggplus_mod``, which
  masks that upload in its "collect masked vectors" stage.

The model (a :class:`~rolora.llm.prepare.RunSetup`) is built once per process and config, not per
message (:mod:`rolora.flower.setups`): a simulation's Ray actor serves many messages. A SuperNode
(Flower 1.42) starts a new ClientApp process for every message, so there each message pays the
imports and the build (~15 s for a tiny model on 2 busy cores, mostly imports).
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.client.mod import secaggplus_mod

from rolora.flower.codec import forget_run, load_kept, merge, models_from_record, models_record, save_kept
from rolora.flower.secagg import SECRET_ARRAYS, SECRET_INFO, is_secagg_stage, keep_secret, secret_reply, secure_weight

# rolora.llm (transformers, datasets) is imported in the handlers that need a model, not here: a
# SuperNode's per-message process answering 'hello' or 'kept' then starts in a fraction of the time.

app = ClientApp()

RUN = "rolora.run"


def _node(context: Context):
    """(this process's RunSetup for the run's config, this node's client id)."""
    from rolora.flower.setups import setup_for

    if RUN not in context.state:
        raise RuntimeError("this node has not been introduced to the run (no 'hello' query yet)")
    run = context.state[RUN]
    return setup_for(str(run["config"])), int(run["client"])


@app.query()
def query(msg: Message, context: Context) -> Message:
    action = str(msg.content["config"]["action"])
    if action == "hello":
        config_json = str(msg.content["config"]["config"])
        # no model yet: a SuperNode runs each message in a new process, so build only to train
        client, clients = _client_id(context, int(json.loads(config_json)["federated"]["clients"]))
        if RUN in context.state and str(context.state[RUN]["config"]) != config_json:
            forget_run(context.state, (SECRET_ARRAYS, SECRET_INFO))  # another run on this node (same Flower run)
        context.state[RUN] = ConfigRecord({"config": config_json, "client": client})
        return Message(RecordDict({"hello": ConfigRecord({"client": client, "clients": clients})}), reply_to=msg)
    if action == "kept":
        _, client = _node(context)
        record, meta = models_record(load_kept(context.state), {})
        return Message(RecordDict({"kept": record, "meta": ConfigRecord({"meta": meta})}), reply_to=msg)
    raise ValueError(f"unknown query action {action!r}")


def _client_id(context: Context, clients: int) -> tuple[int, int]:
    cfg = context.node_config
    if "partition-id" not in cfg:
        raise ValueError("this SuperNode has no partition-id: start it with "
                         "--node-config 'partition-id=K num-partitions=N' (K = its rolora client, 0..N-1)")
    client, total = int(cfg["partition-id"]), int(cfg.get("num-partitions", clients))
    if total != clients or not 0 <= client < clients:
        raise ValueError(f"node config partition-id={client} num-partitions={total}, but the run has "
                         f"federated.clients = {clients} (clients 0..{clients - 1})")
    return client, total


def _receive(context: Context, msg: Message):
    """The global state the message describes; a resumed run's first message also restores the kept state."""
    state = merge(context.state, msg.content)
    if "kept" in msg.content:
        [(client, kept)] = models_from_record(msg.content["kept"], str(msg.content["kept_meta"]["meta"]))[0].items()
        save_kept(context.state, client, kept)
    return state


def secagg_stages(msg: Message, context: Context, call_next) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+'s messages only (rolora's own train messages pass)."""
    if is_secagg_stage(msg):
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


@app.train(mods=[secagg_stages])
def train(msg: Message, context: Context) -> Message:
    if is_secagg_stage(msg):  # SecAgg+'s collect stage: the upload this node kept in the train message
        return secret_reply(msg, context)
    from rolora.federated.round import client_starts
    from rolora.llm.local_training import learning_rate, train_client

    setup, client = _node(context)
    state = _receive(context, msg)
    t = int(msg.content["config"]["t"])
    kept = load_kept(context.state)
    [start] = client_starts(setup.method, state, [client], kept)
    result = train_client(setup, start, learning_rate(setup.config, t))
    if result is None:  # non-finite loss: dropped this round, the kept state stays as it was
        return Message(RecordDict({"result": ConfigRecord({"client": client, "dropped": True})}), reply_to=msg)
    kept_now, upload, dense = setup.method.client_finish(start, result)  # the protocol's step 4, as embedded
    save_kept(context.state, client, kept_now)
    config = msg.content["config"]
    if "secagg" in config:  # SecAgg+: keep the upload here, under a name that is the same on every node
        record, meta = models_record({"mean": upload}, dense)
        weight = secure_weight(result.num_samples, str(config["secagg"]))
        layout = keep_secret(context.state, record, weight, float(config["secagg-clip"]))
        return Message(RecordDict({
            "result": ConfigRecord({"client": client, "dropped": False, "num_samples": result.num_samples,
                                    "meta": meta, "layout": layout}),
            "metrics": MetricRecord({k: float(v) for k, v in result.metrics.items()}),
        }), reply_to=msg)
    record, meta = models_record({client: upload}, dense)
    return Message(RecordDict({
        "upload": record,
        "result": ConfigRecord({"client": client, "dropped": False, "num_samples": result.num_samples, "meta": meta}),
        "metrics": MetricRecord({k: float(v) for k, v in result.metrics.items()}),
    }), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    from rolora.llm.evaluation import evaluate_round

    setup, client = _node(context)
    state = _receive(context, msg)
    scores = evaluate_round(setup, state, load_kept(context.state), [client])
    return Message(RecordDict({"scores": MetricRecord(scores),
                               "result": ConfigRecord({"client": client})}), reply_to=msg)

