"""Secure aggregation with Flower's SecAgg+ for the methods whose server step is a weighted mean of uploads.

The server never sees one client's adapter, only the weighted mean of a round's uploads:

1. the round's ``train`` message (as without SecAgg+: state download, ``method.client_start``,
   training) tells the node to *keep* its upload (``method.client_upload`` plus the dense tensors) in
   its ``context.state`` and to answer only its sample count, metrics and the upload's layout (names,
   dtypes; the same for every client);
2. :class:`SecAggPlusWorkflow` (Flower's, unchanged) runs its four stages over the nodes that
   trained; in its "collect masked vectors" stage Flower's ``secaggplus_mod`` on the node masks the
   kept upload, weighted by w_k (n_k, or 1 for ``weighting = "uniform"``), and the workflow unmasks
   only the sum, divided by the total weight: the mean sum_k p_k x_k, p_k = w_k / sum_j w_j;
3. the server calls ``method.aggregate`` with ONE update carrying that mean, weight 1. For the
   methods of :data:`SUMMABLE` every rule is ``weighted_sum`` of the uploads (and of the dense
   tensors), so one update of weight 1 gives exactly the mean it carries: the new state equals plain
   aggregation up to SecAgg+'s quantisation (:meth:`SecAggSettings.error_bound`). No arithmetic on
   client tensors happens here: the division by the total weight is Flower's, the rule the core's.

Methods whose rule needs more than the mean of the uploaded tensors are refused
(:func:`check_method`; :data:`REFUSED` says why).

Quantisation: each node clips w_k/W·x to [-c, c] (c = ``clipping_range``; W = ``max_weight``, here
the smallest power of two >= every w_k, so w_k/W is exact) and rounds it stochastically onto a grid of
step 2c/Q (Q = ``quantization_range``): error < 2c/Q per client and entry (the node sends float64, so
no float32 rounding adds to it). Summed over K clients and divided by sum_k w_k/W, the error of one
averaged entry is below 2c·K·W / (Q·sum_k w_k). A node refuses an upload with |x| > c (it would be
clipped). Sample counts and metrics still travel in the clear, as without SecAgg+.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common import Code, FitIns, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common.recorddict_compat import fitres_to_recorddict
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from rolora.federated import AggregationError, Method, parse_method_spec

log = logging.getLogger("rolora.flower")

SUMMABLE = {
    "fedavg-lora": "A and B: the server's rule is the weighted mean of each factor",
    "ffa-lora": "B: the weighted mean of B (A stays the shared seeded init)",
    "rolora": "the round's factor (B or A): its weighted mean",
    "fedsa-lora": "A: its weighted mean (each B stays on its client anyway)",
    "fedavg-full": "W: its weighted mean",
}
"""Methods that run under SecAgg+: name -> what is securely averaged."""

PRODUCT = "yes in principle, uploading {what}; not here: method.aggregate needs the factors themselves"
REFUSED = {
    "fedex-lora": PRODUCT.format(what="B_k·A_k (d×n) next to A_k, B_k: the residual needs the mean product"),
    "lora-fair": PRODUCT.format(what="B_k·A_k (d×n) next to A_k, B_k: its ridge fit needs the mean product"),
    "flexlora": PRODUCT.format(what="s_k·B_k·A_k (d×n): the SVD is of the mean product, not of the factors"),
    "flora": PRODUCT.format(what="s_k·B_k·A_k (d×n): the merge is the mean product; the stack download "
                                 "(every client's factors) is impossible when no one may see them"),
    "fed-alora": PRODUCT.format(what="B2_k·B1_k (d×r_int): B_base grows by the mean product"),
}
"""Methods refused under SecAgg+: name -> why (and what a secure sum would need)."""

ENV = "ROLORA_FLOWER_SECAGG"

SECRET_ARRAYS, SECRET_INFO = "rolora.secret", "rolora.secret_info"
"""Where a node keeps its round's upload between the train message and SecAgg+'s collect stage."""


class SecAggRefused(AggregationError):
    """The method cannot run under SecAgg+ (the message names it and says why)."""


@dataclass(frozen=True)
class SecAggSettings:
    """SecAgg+'s parameters (Flower's names and defaults; ``num_shares`` and
    ``reconstruction_threshold`` as in :class:`SecAggPlusWorkflow`: a float is a fraction)."""

    clipping_range: float = 8.0
    quantization_range: int = 2**22
    modulus_range: int = 2**32
    num_shares: float | int = 1.0
    reconstruction_threshold: float | int = 0.5

    @classmethod
    def from_options(cls, options: Mapping[str, object]) -> SecAggSettings:
        """From app-config / environment options (``secagg-clip``, ``secagg-quantization``,
        ``secagg-modulus``, ``secagg-shares``, ``secagg-threshold``); missing ones keep the defaults."""
        names = {"secagg-clip": ("clipping_range", float), "secagg-quantization": ("quantization_range", int),
                 "secagg-modulus": ("modulus_range", int), "secagg-shares": ("num_shares", _number),
                 "secagg-threshold": ("reconstruction_threshold", _number)}
        unknown = sorted(k for k in options if k.startswith("secagg-") and k not in names)
        if unknown:
            raise ValueError(f"unknown SecAgg+ option(s) {unknown}; known: {sorted(names)}")
        return cls(**{field: kind(options[key]) for key, (field, kind) in names.items() if key in options})

    def workflow(self, max_weight: int, timeout: float | None) -> SecAggPlusWorkflow:
        return SecAggPlusWorkflow(self.num_shares, self.reconstruction_threshold, max_weight=float(max_weight),
                                  clipping_range=self.clipping_range, quantization_range=self.quantization_range,
                                  modulus_range=self.modulus_range, timeout=timeout)

    def error_bound(self, weights: Sequence[int]) -> float:
        """The largest error of one entry of the securely averaged tensors, for the clients'
        weights w_k: 2c·K·W / (Q·sum w_k) (see the module docstring)."""
        return 2 * self.clipping_range * len(weights) * max_weight(weights) / (self.quantization_range * sum(weights))


def from_environment(environ: Mapping[str, str]) -> SecAggSettings | None:
    """``ROLORA_FLOWER_SECAGG`` (for ``rolora llm run --engine flower``): unset, empty or ``0``: off;
    ``1``: on with the defaults; else space-separated options, e.g. ``"secagg-clip=4 secagg-shares=3"``."""
    text = environ.get(ENV, "").strip()
    if text in ("", "0"):
        return None
    if text == "1":
        return SecAggSettings()
    pairs = [item.partition("=") for item in text.split()]
    bad = [k for k, sep, _ in pairs if not sep]
    if bad:
        raise ValueError(f"{ENV}={text!r}: expected 1 or key=value options, got {bad}")
    return SecAggSettings.from_options({k: v for k, _, v in pairs})


def _number(text: object) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and "." not in str(text) else value


def check_method(method: Method | str) -> None:
    """Refuse a method (or a method spec such as ``"rolora:period=2"``) that cannot run under SecAgg+,
    naming it and why."""
    name = method.name if isinstance(method, Method) else parse_method_spec(method)[0]
    if name in SUMMABLE:
        return
    why = REFUSED.get(name, "its rule is not known to be a weighted mean of the uploads")
    raise SecAggRefused(f"method {name!r} cannot run under SecAgg+ (secure aggregation): the server "
                        f"would need more than the weighted mean of the clients' uploads ({why}). Methods that "
                        f"can: {', '.join(sorted(SUMMABLE))}")


def check_run(config) -> None:
    """:func:`check_method` for a run's config, and its additions: SCAFFOLD is refused (its Δc_k must be
    averaged uniformly over all N clients beside the sample-weighted factors: not one secure mean);
    client-level DP composes (each node clips its own update before masking, the server adds the
    noise to the mean it unmasks, divided by the number of clients in it); server optimisers and
    DP-SGD act after the mean and on the nodes."""
    check_method(config.federated.method)
    if config.train.scaffold:
        raise SecAggRefused("SCAFFOLD cannot run under SecAgg+ here: its control-variate updates would need a "
                            "second secure sum with other weights; run it without SecAgg+")


def secure_weight(num_samples: float, weighting: str) -> int:
    """w_k, the integer weight SecAgg+ gives a client: n_k (``"samples"``) or 1 (``"uniform"``)."""
    if weighting == "uniform":
        return 1
    if weighting != "samples":
        raise AggregationError(f"weighting must be 'samples' or 'uniform', got {weighting!r}")
    if not float(num_samples).is_integer() or num_samples < 1:
        raise AggregationError(f"SecAgg+ weights clients by whole sample counts, got num_samples={num_samples}")
    return int(num_samples)


def max_weight(weights: Sequence[int]) -> int:
    """SecAgg+'s ``max_weight``: the smallest power of two >= every weight (so w_k / W is exact)."""
    return 1 << max(0, math.ceil(math.log2(max(weights))))


# ----------------------------------------------------------------------------- node side
def keep_secret(node_state: RecordDict, record: ArrayRecord, weight: int, clip: float) -> str:
    """Keep the round's upload (``record``) for SecAgg+; returns its layout JSON (names, dtypes)."""
    for key, arr in record.items():
        x = arr.numpy()
        if x.size and float(np.max(np.abs(x))) > clip:
            raise ValueError(f"upload tensor {key!r} has entries of magnitude {float(np.max(np.abs(x))):.3g}, beyond "
                             f"SecAgg+'s clipping range {clip}: they would be clipped; raise secagg-clip")
    node_state[SECRET_ARRAYS] = record
    node_state[SECRET_INFO] = ConfigRecord({"weight": weight})
    return json.dumps([[key, str(arr.numpy().dtype)] for key, arr in record.items()])


def is_secagg_stage(msg: Message) -> bool:
    return RECORD_KEY_CONFIGS in msg.content


def secret_reply(msg: Message, context: Context) -> Message:
    """SecAgg+'s collect stage: the kept upload as the legacy FitRes that ``secaggplus_mod`` masks."""
    if SECRET_INFO not in context.state:
        raise RuntimeError("SecAgg+ asked for an upload, but this node trained nothing this round")
    record = context.state[SECRET_ARRAYS]
    arrays = [np.asarray(arr.numpy(), dtype=np.float64) for arr in record.values()]  # float64: no extra rounding
    weight = int(context.state[SECRET_INFO]["weight"])
    del context.state[SECRET_ARRAYS], context.state[SECRET_INFO]
    fitres = FitRes(status=Status(Code.OK, ""), parameters=ndarrays_to_parameters(arrays), num_examples=weight,
                    metrics={})
    return Message(fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


# ----------------------------------------------------------------------------- server side
class _Proxy(ClientProxy):
    """A node as the legacy workflow names it (it only reads ``node_id``)."""

    def __init__(self, node_id: int) -> None:
        super().__init__(str(node_id))
        self.node_id = node_id

    def get_properties(self, *args, **kwargs):
        raise NotImplementedError

    get_parameters = fit = evaluate = reconnect = get_properties


class _Collect(LegacyStrategy):
    """The legacy strategy SecAggPlusWorkflow drives: it picks the given nodes and keeps the result."""

    def __init__(self, nodes: Sequence[int], t: int) -> None:
        self.nodes, self.t = list(nodes), t
        self.mean: list[np.ndarray] | None = None
        self.active: list[int] = []

    def configure_fit(self, server_round, parameters, client_manager):
        ins = FitIns(Parameters(tensors=[], tensor_type=""), {"t": self.t})
        return [(_Proxy(n), ins) for n in self.nodes]

    def aggregate_fit(self, server_round, results, failures):
        # SecAgg+ replaced every result's parameters by the unmasked weighted mean
        self.active = [proxy.node_id for proxy, _ in results]
        if results:
            self.mean = parameters_to_ndarrays(results[0][1].parameters)
        return None, {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


class _Counting:
    """The grid, counting the bytes of what SecAgg+'s messages carry (arrays and bytes values)."""

    def __init__(self, grid: Grid) -> None:
        self.grid, self.sent, self.received = grid, 0, 0

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        self.sent += sum(_content_bytes(m.content) for m in messages)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        self.received += sum(_content_bytes(r.content) for r in replies if not r.has_error())
        return replies

    def __getattr__(self, name):
        return getattr(self.grid, name)


def _content_bytes(content: RecordDict) -> int:
    total = 0
    for record in content.values():
        if isinstance(record, ArrayRecord):
            total += int(record.count_bytes())
        elif isinstance(record, ConfigRecord):
            for value in record.values():
                items = value if isinstance(value, list) else [value]
                total += sum(len(v) for v in items if isinstance(v, bytes))
    return total


@dataclass
class SecureMean:
    """What SecAgg+ gave the server: the mean of the active nodes' uploads (None: it halted)."""

    record: ArrayRecord | None
    active: list[int]
    sent: int
    received: int


def secure_mean(grid: Grid, nodes: Sequence[int], weights: Sequence[int], layout: str, settings: SecAggSettings,
                t: int, timeout: float | None) -> SecureMean:
    """Run SecAgg+ over ``nodes`` (which kept their uploads, with ``weights``) for round ``t``."""
    state = RecordDict({MAIN_CONFIGS_RECORD: ConfigRecord({Key.CURRENT_ROUND: t}),
                        MAIN_PARAMS_RECORD: ArrayRecord()})
    collect = _Collect(nodes, t)
    context = LegacyContext(Context(run_id=0, node_id=0, node_config={}, state=state, run_config={}),
                            strategy=collect, client_manager=SimpleClientManager())
    counting = _Counting(grid)
    settings.workflow(max_weight(weights), timeout)(counting, context)
    record = None
    if collect.mean is not None:
        names = json.loads(layout)
        if len(names) != len(collect.mean):
            raise AggregationError(f"round {t}: SecAgg+ returned {len(collect.mean)} arrays, the layout has {len(names)}")
        record = ArrayRecord({key: Array(np.asarray(x, dtype=dtype)) for (key, dtype), x in zip(names, collect.mean)})
    return SecureMean(record, collect.active, counting.sent, counting.received)
