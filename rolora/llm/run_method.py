"""The run's method: the LoRA rule of ``federated.method`` composed with the config's additions
(server optimiser, FedProx, SCAFFOLD, differential privacy; :mod:`rolora.federated.composed`)."""

from __future__ import annotations

from collections.abc import Mapping

from rolora.federated import Method, method_from_spec
from rolora.federated.additions import Additions
from rolora.federated.composed import compose
from rolora.federated.server_opt import parse_server_optimizer


def additions_of(config, client_sizes: Mapping[int, float] | None = None) -> Additions:
    """The config's additions (ValueError naming the bad setting)."""
    f, tr = config.federated, config.train
    return Additions(
        server_opt=parse_server_optimizer(f.server_opt) if f.server_opt else None,
        prox_mu=tr.prox_mu, scaffold=tr.scaffold, dp=tr.dp, dp_clip=tr.dp_clip, dp_noise=tr.dp_noise,
        dp_delta=tr.dp_delta, clients=f.clients, batch_size=tr.batch_size, local_steps=tr.local_steps,
        local_epochs=tr.local_epochs, client_sizes=dict(client_sizes or {}),
    )


def run_method(config, client_sizes: Mapping[int, float] | None = None) -> Method:
    """``federated.method`` with the config's additions; refuses (AggregationError, a ValueError) a
    combination that cannot work, naming the method and the addition."""
    method = method_from_spec(config.federated.method, total_rounds=config.total_rounds)
    return compose(method, additions_of(config, client_sizes), config.federated.weighting)
