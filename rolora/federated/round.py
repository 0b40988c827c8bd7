"""The round protocol, in one place: every training loop of this project plays its rounds here.

One round t = state.round + 1:

1. sample the participants (seeded: :func:`sample_participants`);
2. every participant k starts from ``method.client_start(state, k, kept[k], t)`` plus a copy of the
   plainly averaged ``state.dense`` tensors (:class:`ClientStart`);
3. the caller's local training turns ALL participants' starts into results at once
   (:data:`LocalTraining`) — a loop over clients (:func:`one_by_one`) or one batched pass over many;
4. each result is kept and uploaded (``method.client_finish``: by default ``client_keep`` and
   ``client_upload``; a wrapper may clip the update or add SCAFFOLD's control variates);
5. ``method.aggregate`` computes the new state (it validates first and never mutates);
6. beside it, the round's product-averaging gap and client drift are measured from the uploads
   (:func:`upload_diagnostics`, :mod:`rolora.federated.diagnostics`): what averaging A and B
   separately would lose this round, and how far the clients' updates spread.

.. code-block:: python

    from rolora.federated import get_method, LayerSpec
    from rolora.federated.round import ClientResult, one_by_one, run_round

    method = get_method("rolora")
    state = method.init({"q": LayerSpec(out_features=96, in_features=64)}, ranks=8, alpha=16.0, seed=0)
    kept = {}

    def train(t, start):                      # your optimiser, on start.tensors / start.dense
        tensors = my_local_steps(start.tensors, trainable=start.trainable)
        return ClientResult(tensors=tensors, num_samples=n[start.client])

    for _ in range(rounds):
        result = run_round(method, state, clients=range(10), train=one_by_one(train), kept=kept, fraction=0.5)
        state, kept = result.state, result.kept      # result.communication: the round's bytes

A client whose local training fails (e.g. its loss turned NaN) returns ``None``: it is dropped from
that round (``RoundResult.dropped``) and keeps its previous state; if every participant fails,
:class:`RoundFailed` is raised and nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

from rolora.federated.api import AggregationError, ClientUpdate, CommCost, GlobalState, Method, ModelTensors, Weighting
from rolora.federated.dense import dense_params
from rolora.federated.diagnostics import LayerDiagnostics, check_one_factor_gap, round_diagnostics
from rolora.federated.local_rules import LocalRules
from rolora.federated.weights import client_weights

ClientId = int | str


@dataclass(frozen=True)
class ClientStart:
    """What one participant trains from in round ``t``: fresh copies it may modify."""

    client: ClientId
    t: int
    tensors: ModelTensors
    """``method.client_start(state, client, kept, t)``: every layer's tensors."""
    trainable: frozenset[str]
    """``method.trains(t)``: the tensor names to optimise (the others stay fixed)."""
    dense: dict[str, Tensor]
    """Copies of ``state.dense`` (e.g. the classification head), trained every round."""
    rules: LocalRules | None = None
    """What local training must do beyond plain steps (FedProx, SCAFFOLD, DP-SGD); ``None``: nothing.
    See :mod:`rolora.federated.local_rules`."""


@dataclass(frozen=True)
class ClientResult:
    """One participant's trained tensors (same names and shapes as its start) and sample count n_k."""

    tensors: ModelTensors
    num_samples: float
    dense: Mapping[str, Tensor] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Anything the caller wants to log (train loss, tokens, ...); not used by the protocol."""


LocalTraining = Callable[[int, Sequence[ClientStart]], Sequence["ClientResult | None"]]
"""(round t, every participant's start) -> one result per participant, in the same order.

``None`` marks a client whose training failed (dropped from the round). Receiving all starts at
once lets a caller train a round's clients together (one batched pass over a shared base model).
"""


@dataclass(frozen=True)
class RoundResult:
    """The outcome of one round."""

    state: GlobalState
    kept: dict[ClientId, ModelTensors | None]
    """Every client's kept state after the round (non-participants and dropped clients unchanged)."""
    communication: CommCost
    """``method.communication`` for the clients that uploaded, plus the dense tensors both ways."""
    participants: list[ClientId]
    dropped: list[ClientId]
    results: dict[ClientId, ClientResult]
    """The uploaded clients' results (for their metrics)."""
    diagnostics: dict[str, LayerDiagnostics] = field(default_factory=dict)
    """Per layer: the product-averaging gap and client drift of the round (:func:`upload_diagnostics`)."""


class RoundFailed(AggregationError):
    """Every participant of a round failed: nothing was aggregated and the state is unchanged."""


def one_by_one(train_one: Callable[[int, ClientStart], ClientResult | None]) -> LocalTraining:
    """A :data:`LocalTraining` that trains the participants one after another with ``train_one``."""

    def train(t: int, starts: Sequence[ClientStart]) -> list[ClientResult | None]:
        return [train_one(t, start) for start in starts]

    return train


def sample_participants(clients: Sequence[ClientId] | int, fraction: float, seed: int, t: int) -> list[ClientId]:
    """The participants of round t: all clients, or a seeded sample of ⌈fraction·N⌉ (at least one).

    ``clients`` is a list of ids or a count N (ids 0..N-1). The sample depends only on (seed, t,
    N), not on earlier rounds, so a resumed run draws the same participants.
    """
    ids = list(range(clients)) if isinstance(clients, int) else list(clients)
    if not ids:
        raise AggregationError("sample_participants: no clients")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise AggregationError(f"participation fraction must be in (0, 1], got {fraction!r}")
    if fraction >= 1:
        return ids
    m = max(1, int(np.ceil(fraction * len(ids))))
    rng = np.random.default_rng([int(seed), int(t), 7])
    return [ids[i] for i in sorted(rng.choice(len(ids), size=m, replace=False).tolist())]


def client_starts(
    method: Method, state: GlobalState, participants: Iterable[ClientId],
    kept: Mapping[ClientId, ModelTensors | None] | None = None,
) -> list[ClientStart]:
    """Every participant's start for round state.round + 1 (fresh copies)."""
    t = state.round + 1
    kept = kept or {}
    trainable = method.trains(t)
    return [
        ClientStart(client=k, t=t, tensors=method.client_start(state, k, kept.get(k), t), trainable=trainable,
                    dense={name: x.detach().clone() for name, x in state.dense.items()},
                    rules=method.local_rules(state, k, kept.get(k), t))
        for k in participants
    ]


def client_uploads(
    method: Method, t: int, starts: Sequence[ClientStart], results: Sequence[ClientResult | None]
) -> tuple[list[ClientUpdate], dict[ClientId, ModelTensors | None], dict[ClientId, ClientResult], list[ClientId]]:
    """Step 4 for every participant: (uploads, kept states, results, dropped ids); ``None`` drops."""
    results = list(results)
    if len(results) != len(starts):
        raise AggregationError(
            f"round {t}: local training returned {len(results)} results for {len(starts)} participants"
        )
    updates, keeps, done, dropped = [], {}, {}, []
    for start, result in zip(starts, results):
        k = start.client
        if result is None:
            dropped.append(k)
            continue
        if not isinstance(result, ClientResult):
            raise AggregationError(f"round {t}, client {k!r}: local training returned {type(result).__name__}, "
                                   "expected ClientResult or None")
        keeps[k], upload, dense = method.client_finish(start, result)
        updates.append(ClientUpdate(k, result.num_samples, upload, dense=dense))
        done[k] = result
    return updates, keeps, done, dropped


def next_model(method: Method, state: GlobalState, client: ClientId,
               kept: Mapping[ClientId, ModelTensors | None] | None = None) -> ModelTensors:
    """The tensors ``client`` would run after the state's last round (what to evaluate)."""
    return method.client_start(state, client, (kept or {}).get(client), state.round + 1)


def upload_diagnostics(method: Method, state: GlobalState, updates: Sequence[ClientUpdate], t: int,
                       weighting: Weighting = "samples") -> dict[str, LayerDiagnostics]:
    """The round's gap and drift as the server sees them: client k's factors are its broadcast start
    with its uploads in place (a factor it does not upload is the shared one). Personalised methods
    keep part of each client's model private, so the server cannot measure them: ``{}``. A round
    that trains one factor of A/B must show a gap of exactly zero (checked; AggregationError if not)."""
    if method.personalised or not updates:
        return {}
    starts = [method.client_start(state, u.client, None, t) for u in updates]
    ends = [{name: {**layer, **{n: x for n, x in u.tensors.get(name, {}).items() if n in layer}}  # factors only
             for name, layer in start.items()} for start, u in zip(starts, updates)]
    diags = round_diagnostics(starts, ends, client_weights(updates, weighting), state.alpha)
    check_one_factor_gap(diags, method.trains(t), t, method.name)
    return diags


def run_round(
    method: Method,
    state: GlobalState,
    clients: Sequence[ClientId] | int,
    train: LocalTraining,
    kept: Mapping[ClientId, ModelTensors | None] | None = None,
    *,
    fraction: float = 1.0,
    seed: int | None = None,
    weighting: Weighting = "samples",
    bytes_per_param: int = 4,
    diagnose: bool = True,
) -> RoundResult:
    """Play round t = state.round + 1 over ``clients`` (ids, or a count N for 0..N-1).

    ``fraction`` of them take part, sampled with ``seed`` (default: ``state.seed``). ``kept`` is
    every client's kept state from earlier rounds (not modified). Raises :class:`RoundFailed` when
    every participant's training returns ``None``, and :class:`AggregationError` on bad results; in
    both cases the caller's state and kept dict are untouched. ``diagnose`` measures the round's
    product-averaging gap and client drift (:func:`upload_diagnostics`; off: ``{}``).
    """
    t = state.round + 1
    kept = dict(kept or {})
    participants = sample_participants(clients, fraction, state.seed if seed is None else seed, t)
    starts = client_starts(method, state, participants, kept)
    updates, keeps, done, dropped = client_uploads(method, t, starts, train(t, starts))
    if not updates:
        raise RoundFailed(f"round {t}: every participant failed ({dropped}); the state is unchanged")
    new_state = method.aggregate(state, updates, t, weighting=weighting)
    diagnostics = upload_diagnostics(method, state, updates, t, weighting) if diagnose else {}
    kept.update(keeps)
    comm = method.communication(state.specs, state.ranks, t, clients=[u.client for u in updates],
                                bytes_per_param=bytes_per_param, dense_params=dense_params(state))
    return RoundResult(state=new_state, kept=kept, communication=comm, participants=participants,
                       dropped=dropped, results=done, diagnostics=diagnostics)


def rounds_for_budget(base_rounds: int, base_clients: int, clients: int) -> int:
    """Rounds ∝ 1/N: ``base_rounds`` at ``base_clients`` clients, scaled so that the total number of
    client-steps (hence training samples) stays the same at ``clients`` clients (at least one round)."""
    return max(1, math.ceil(base_rounds * base_clients / clients))
