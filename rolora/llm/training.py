"""The run's ``LocalTraining`` callable (what a round's participants do), as the config says.

``train.client_batching = "auto"`` trains the participants together
(:mod:`rolora.llm.batched_training`), ``"off"`` one after another
(:func:`rolora.llm.local_training.sequential_training`, the reference); both give the same results.
A round whose clients train under DP-SGD (``start.rules.privacy``: per-sample gradients) goes to the
sequential trainer whatever the switch says: the batched one cannot take it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from rolora.federated.round import ClientResult, ClientStart
from rolora.llm.batched_training import batched_training
from rolora.llm.local_training import sequential_training
from rolora.llm.prepare import RunSetup

log = logging.getLogger("rolora.llm")


def to_server(result: ClientResult | None) -> ClientResult | None:
    """A client's result on the CPU, where the server state lives (the model may be on a GPU)."""
    if result is None:
        return None
    return dataclasses.replace(
        result,
        tensors={name: {k: x.cpu() for k, x in layer.items()} for name, layer in result.tensors.items()},
        dense={k: x.cpu() for k, x in result.dense.items()})


def local_training(setup: RunSetup, progress: Callable[[int], None] | None = None):
    """The run's ``LocalTraining`` callable, as ``train.client_batching`` says; results come back on
    the CPU (the server's state and its aggregation stay there: small, and the same on every device)."""
    if setup.config.train.client_batching == "off":
        train = sequential_training(setup, progress)
    else:
        train = _private_rounds_one_by_one(batched_training(setup, progress), sequential_training(setup, progress))
    if setup.prefix_cache is not None:
        train = _with_prefix_cache(train, setup.prefix_cache)
    if setup.device.type == "cpu":
        return train
    return lambda t, starts: [to_server(r) for r in train(t, starts)]


def _private_rounds_one_by_one(batched, sequential):
    """``batched``, except for rounds where some client trains under DP-SGD: ``sequential`` (the
    batched trainer refuses per-sample privacy rather than ignore it)."""
    told = False

    def train(t: int, starts: Sequence[ClientStart]) -> list[ClientResult | None]:
        nonlocal told
        if not any(s.rules is not None and s.rules.privacy is not None for s in starts):
            return batched(t, starts)
        if not told:
            log.info("round %d: DP-SGD trains clients one by one (per-sample gradients; no client batching)", t)
            told = True
        return sequential(t, starts)

    return train


def _with_prefix_cache(train, cache):
    def cached(t: int, starts: Sequence[ClientStart]) -> list[ClientResult | None]:
        with cache.installed():  # training passes start at the lowest adapted block; evaluation does not
            return train(t, starts)

    return cached
