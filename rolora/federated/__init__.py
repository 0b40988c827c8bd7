"""Federated LoRA methods: every aggregation rule, as pure functions of torch tensors.

.. code-block:: python

    from rolora.federated import get_method, LayerSpec
    method = get_method("rolora")                      # or any name in available_methods()
    state = method.init({"q": LayerSpec(64, 32)}, ranks=8, alpha=16.0, seed=0)

See :mod:`rolora.federated.api` for the data and the method contract, :mod:`rolora.federated.round`
for the round protocol (``run_round``), :mod:`rolora.federated.partition` for who holds which
examples (seeded client partitions of a training set).
"""

from rolora.federated.api import (
    AggregationError,
    ClientUpdate,
    CommCost,
    Exactness,
    GlobalState,
    LayerSpec,
    LayerTensors,
    Method,
    ModelTensors,
    Weighting,
)
from rolora.federated.registry import METHODS, available_methods, get_method, method_from_spec, methods_table, parse_method_spec
from rolora.federated.schedule import AlternationSchedule

__all__ = [
    "AggregationError",
    "AlternationSchedule",
    "ClientUpdate",
    "CommCost",
    "Exactness",
    "GlobalState",
    "LayerSpec",
    "LayerTensors",
    "METHODS",
    "Method",
    "ModelTensors",
    "Weighting",
    "available_methods",
    "get_method",
    "method_from_spec",
    "parse_method_spec",
    "methods_table",
]
