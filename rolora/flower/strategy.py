"""A Flower Strategy that plays the core's round protocol: nothing federated is re-implemented here.

Round t: :func:`~rolora.federated.round.sample_participants` picks the clients (the same seeded draw
as the embedded engine); each participant's node gets only the global tensors that changed since it
last heard from the server (:class:`~rolora.flower.codec.Downloads`) and the round number; the node
runs ``method.client_start`` itself, with the kept state in its own ``context.state``. The replies
become :class:`~rolora.federated.api.ClientUpdate`s, in participant order, and ``method.aggregate``
makes the new state. Each round records the bytes of the ArrayRecords Flower carried both ways,
next to ``method.communication``'s count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from rolora.federated import AggregationError, ClientUpdate, CommCost, GlobalState, Method
from rolora.federated.dense import dense_params
from rolora.federated.round import ClientResult, RoundFailed, sample_participants, upload_diagnostics
from rolora.flower.codec import NEVER, Downloads, models_from_record, models_record, nbytes, state_content
from rolora.flower.secagg import SecAggSettings, check_method, secure_mean, secure_weight

log = logging.getLogger("rolora.flower")


@dataclass
class RoundRecord:
    """What the strategy saw in one round (the server loop turns it into a metrics row)."""

    t: int
    participants: list
    dropped: list = field(default_factory=list)
    results: dict = field(default_factory=dict)
    """client -> ClientResult (tensors empty: only num_samples and metrics are kept)."""
    communication: CommCost | None = None
    flower_upload_bytes: int = 0
    flower_download_bytes: int = 0
    diagnostics: dict = field(default_factory=dict)
    """Layer -> the round's product-averaging gap and drift (none under SecAgg+: the server sees only the sum)."""
    flower_eval_download_bytes: int = 0
    """Personalised methods: the state after round t sent to the evaluated nodes (they then need no
    download at the start of round t+1, so the two columns together are the round's download)."""


class RoloraStrategy(Strategy):
    """Any rolora method as a Flower strategy: ``state`` is the core's GlobalState after each round."""

    def __init__(self, method: Method, state: GlobalState, clients: int, *, fraction: float = 1.0, seed: int = 0,
                 weighting: str = "samples", client_sizes: Sequence[int] = (), min_replies: int = 1,
                 restore: dict | None = None, secure: SecAggSettings | None = None) -> None:
        if secure is not None:
            check_method(method)  # before any node trains
        if isinstance(min_replies, bool) or not isinstance(min_replies, int) or min_replies < 1:
            raise ValueError(f"min_replies must be an int >= 1, got {min_replies!r}")
        self.method, self.state, self.clients = method, state, clients
        self.fraction, self.seed, self.weighting = fraction, seed, weighting
        self.min_replies = min_replies
        """A round whose participants send fewer updates than this fails (RoundFailed: nothing changes)."""
        self.restore = {k: v for k, v in (restore or {}).items() if v is not None}
        """Kept states from a checkpoint, sent with each full download until the node has trained once."""
        self.client_sizes = list(client_sizes)
        self.nodes: dict[int, int] = {}
        """rolora client id -> Flower node id (from the 'hello' answers)."""
        self.downloads = Downloads()
        self.record: RoundRecord | None = None
        self.secure = secure
        """SecAgg+ settings (None: plain uploads); see :mod:`rolora.flower.secagg`."""
        self.timeout: float | None = None
        self._grid: Grid | None = None

    # ----------------------------------------------------------------------------- nodes
    def introduce(self, grid: Grid, config_json: str, timeout: float) -> None:
        """Wait for every client's node, send it the run's config, learn which client each node is.

        A node the SuperLink still lists but that no longer answers (a SuperNode killed since; Flower
        marks it offline only after two missed heartbeats) is skipped: the node that replaced it
        claims its client. A node whose ClientApp refuses the run stops it."""
        deadline = time.monotonic() + timeout
        asked: set[int] = set()
        while len(self.nodes) < self.clients:
            new = [n for n in grid.get_node_ids() if n not in asked]
            if new:
                asked.update(new)
                self._hello(grid, new, config_json, max(1.0, deadline - time.monotonic()))
                continue
            if time.monotonic() >= deadline:
                missing = sorted(set(range(self.clients)) - set(self.nodes))
                raise RuntimeError(f"no node answered for clients {missing} within {timeout:.0f} s ({len(asked)} "
                                   f"nodes asked; federated.clients = {self.clients}): start one SuperNode per client")
            time.sleep(0.5)

    def _hello(self, grid: Grid, nodes: list[int], config_json: str, timeout: float) -> None:
        hello = ConfigRecord({"action": "hello", "config": config_json})
        replies = grid.send_and_receive([Message(RecordDict({"config": hello}), dst_node_id=n,
                                                 message_type=MessageType.QUERY) for n in nodes], timeout=timeout)
        for reply in replies:
            if reply.has_error():
                if reply.error.code == ErrorCode.NODE_UNAVAILABLE:
                    log.warning("a listed node is unavailable (skipped): %s", reply.error.reason)
                    continue
                raise RuntimeError(f"node {reply.metadata.src_node_id} refused the run: {reply.error.reason}")
            client = int(reply.content["hello"]["client"])
            if client in self.nodes:
                raise RuntimeError(f"two nodes ({self.nodes[client]} and {reply.metadata.src_node_id}) claim "
                                   f"client {client}: give every SuperNode its own partition-id")
            self.nodes[client] = reply.metadata.src_node_id

    def _message(self, client: int, kind: str, **config) -> tuple[Message, int]:
        node = self.nodes[client]
        base, changed, meta = self.downloads.message(node, self.state)
        content = state_content(base, changed, meta, **config)
        sent = nbytes(content["arrays"])
        if base == NEVER and client in self.restore:  # a resumed run: the node gets its kept state back
            record, kept_meta = models_record({client: self.restore[client]}, {})
            content["kept"], content["kept_meta"] = record, ConfigRecord({"meta": kept_meta})
            sent += nbytes(record)
        return Message(content, dst_node_id=node, message_type=kind), sent

    # ----------------------------------------------------------------------------- training
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        t = self.state.round + 1
        if server_round != t:
            raise AggregationError(f"Flower round {server_round}, but the state is at round {self.state.round}")
        participants = sample_participants(self.clients, self.fraction, self.seed, t)
        self.record = RoundRecord(t=t, participants=participants)
        self._grid = grid  # SecAgg+ sends its own messages in aggregate_train
        secure = {} if self.secure is None else {"secagg": self.weighting, "secagg-clip": self.secure.clipping_range}
        messages = []
        for k in participants:
            message, sent = self._message(k, MessageType.TRAIN, t=t, **secure)
            self.record.flower_download_bytes += sent
            messages.append(message)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        rec = self.record
        by_client, node_of = {}, {n: k for k, n in self.nodes.items()}
        for reply in replies:
            k = node_of.get(reply.metadata.src_node_id)
            if reply.has_error():  # a node the SuperLink found unavailable answers as the SuperLink (k None)
                log.warning("round %d: %s failed: %s", rec.t, "a node" if k is None else f"client {k}",
                            reply.error.reason)
                continue
            by_client[k] = reply
        trained = []
        for k in rec.participants:  # participant order, as the embedded engine: the same float sums
            reply = by_client.get(k)
            if reply is None or bool(reply.content["result"]["dropped"]):
                rec.dropped.append(k)
                if reply is None:
                    self.downloads.forget(self.nodes[k])  # did it merge the download? unknown: resend all
                continue
            trained.append(k)
            result = reply.content["result"]
            rec.results[k] = ClientResult(tensors={}, num_samples=float(result["num_samples"]),
                                          metrics=dict(reply.content["metrics"]))
            self.restore.pop(k, None)  # the node has its kept state now (a later full download must not reset it)
        updates = self._secure_updates(trained, by_client) if self.secure else self._updates(trained, by_client)
        if len(rec.results) < self.min_replies:
            raise RoundFailed(f"round {rec.t}: {len(rec.results)} of {len(rec.participants)} participants sent an "
                              f"update (failed or dropped: {rec.dropped}), fewer than the minimum {self.min_replies}; "
                              "the state is unchanged")
        new_state = self.method.aggregate(self.state, updates, rec.t, weighting=self.weighting)
        if not self.secure:
            rec.diagnostics = upload_diagnostics(self.method, self.state, updates, rec.t, self.weighting)
        rec.communication = self.method.communication(
            self.state.specs, self.state.ranks, rec.t, clients=list(rec.results),
            bytes_per_param=4, dense_params=dense_params(self.state))
        self.state = new_state
        return None, MetricRecord({"flower_upload_bytes": rec.flower_upload_bytes,
                                   "flower_download_bytes": rec.flower_download_bytes})

    def _updates(self, clients: list, replies: dict) -> list[ClientUpdate]:
        """Plain uploads: one ClientUpdate per client that trained."""
        updates = []
        for k in clients:
            reply = replies[k]
            uploads, dense = models_from_record(reply.content["upload"], str(reply.content["result"]["meta"]))
            self.record.flower_upload_bytes += nbytes(reply.content["upload"])
            updates.append(ClientUpdate(k, self.record.results[k].num_samples, uploads[k], dense=dense))
        return updates

    def _secure_updates(self, clients: list, replies: dict) -> list[ClientUpdate]:
        """SecAgg+: the server learns only the weighted mean of the uploads of the clients that trained,
        and aggregates it as ONE update of weight 1 (see :mod:`rolora.flower.secagg`). Clients whose
        masked upload did not arrive are dropped."""
        rec = self.record
        layouts = {str(replies[k].content["result"]["meta"]) + str(replies[k].content["result"]["layout"])
                   for k in clients}
        if len(layouts) > 1:
            raise AggregationError(f"round {rec.t}: the clients' uploads differ in layout; SecAgg+ cannot sum them")
        if len(clients) < 2:
            return self._secure_failed(clients, "SecAgg+ needs at least 2 clients")
        weights = [secure_weight(rec.results[k].num_samples, self.weighting) for k in clients]
        result = replies[clients[0]].content["result"]
        out = secure_mean(self._grid, [self.nodes[k] for k in clients], weights, str(result["layout"]),
                          self.secure, rec.t, self.timeout)
        rec.flower_upload_bytes += out.received
        rec.flower_download_bytes += out.sent
        active = {k for k in clients if self.nodes[k] in out.active}
        if out.record is None:
            return self._secure_failed(clients, "SecAgg+ halted (too few nodes answered one of its stages)")
        for k in clients:
            if k not in active:
                rec.dropped.append(k)
                rec.results.pop(k)
                self.downloads.forget(self.nodes[k])
        means, dense = models_from_record(out.record, str(result["meta"]))
        [(_, mean)] = means.items()
        first = next(k for k in clients if k in active)  # any active client: its rank is every client's
        return [ClientUpdate(first, 1.0, mean, dense=dense, members=tuple(k for k in clients if k in active))]

    def _secure_failed(self, clients: list, why: str) -> list:
        log.warning("round %d: %s; no update from clients %s", self.record.t, why, clients)
        for k in clients:
            self.record.dropped.append(k)
            self.record.results.pop(k)
        return []

    # ----------------------------------------------------------------------------- evaluation
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Personalised methods: each evaluated client scores its own model on its node (the server
        has no client's kept state); shared-model methods are evaluated on the server (no messages)."""
        if not self.method.personalised:
            return []
        messages = []
        for k in self.record.participants:
            message, sent = self._message(k, MessageType.EVALUATE)
            self.record.flower_eval_download_bytes += sent
            messages.append(message)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Clients' scores, weighted by their training-sample counts (as ``evaluate_round``)."""
        scores = {}
        for reply in replies:
            if reply.has_error():
                self.downloads.forget(reply.metadata.src_node_id)
                raise RuntimeError(f"evaluation failed on node {reply.metadata.src_node_id}: {reply.error.reason}")
            scores[int(reply.content["result"]["client"])] = dict(reply.content["scores"])
        clients = [k for k in self.record.participants if k in scores]
        if not clients:
            return None
        weights = np.asarray([self.client_sizes[k] for k in clients], dtype=np.float64)
        weights /= weights.sum()
        keys = scores[clients[0]]
        return MetricRecord({key: float(sum(w * scores[k][key] for w, k in zip(weights, clients))) for key in keys})

    # ----------------------------------------------------------------------------- checkpoints
    def collect_kept(self, grid: Grid, clients: Iterable[int], timeout: float) -> tuple[dict, int]:
        """(the kept states of ``clients``, asked from their nodes for a checkpoint; the bytes received)."""
        ask = ConfigRecord({"action": "kept"})
        messages = [Message(RecordDict({"config": ask}), dst_node_id=self.nodes[k], message_type=MessageType.QUERY)
                    for k in clients]
        kept, received = {}, 0
        for reply in grid.send_and_receive(messages, timeout=timeout):
            if reply.has_error():
                raise RuntimeError(f"node {reply.metadata.src_node_id} could not send its kept state: "
                                   f"{reply.error.reason}")
            models, _ = models_from_record(reply.content["kept"], str(reply.content["meta"]["meta"]))
            kept.update(models)
            received += nbytes(reply.content["kept"])
        return kept, received

    def summary(self) -> None:
        log.info("rolora strategy: method %s, %d clients, fraction %s, weighting %s%s", self.method.name,
                 self.clients, self.fraction, self.weighting, "" if self.secure is None else f", SecAgg+ {self.secure}")
