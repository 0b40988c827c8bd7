"""A toy method spec: a federated method's spec plus the client's own training keys.

``rolora toy --methods`` names each run with a method spec (``rolora``, ``rolora:period=2``, see
:func:`rolora.federated.registry.parse_method_spec`). The local optimiser is the client's choice,
not the method's, so the keys in :data:`TRAINING_KEYS` are taken out of the spec here and set on the
run's :class:`~rolora.toy.train.ToyConfig`; the rest goes to the method's constructor. That lets one
grid compare e.g. ``fedavg-full`` (the run's SGD), ``fedavg-full:optimizer=adam:lr=0.001`` and
``fedavg-full:optimizer=galore:lr=0.001:galore_rank=16`` side by side, each with its own learning rate.
"""

from __future__ import annotations

import dataclasses

from rolora.federated.registry import parse_method_spec

TRAINING_KEYS = ("optimizer", "lr", "galore_rank", "galore_period", "galore_scale")
"""ToyConfig fields a method spec may set for its own runs."""


def split_spec(spec: str) -> tuple[str, dict[str, object]]:
    """(the method's spec without the training keys, {training key: value}).

    ``"fedavg-full:optimizer=galore:lr=0.001"`` -> ``("fedavg-full", {"optimizer": "galore", "lr": 0.001})``.
    Malformed specs raise the registry's AggregationError.
    """
    name, params = parse_method_spec(spec)
    training = {k: params[k] for k in TRAINING_KEYS if k in params}
    method_params = {k: v for k, v in params.items() if k not in TRAINING_KEYS}
    return _spec_text(name, method_params), training


def _spec_text(name: str, params: dict[str, object]) -> str:
    """The spec that :func:`parse_method_spec` reads back as exactly ``(name, params)``."""
    return ":".join([name, *(f"{k}={_value_text(v)}" for k, v in params.items())])


def _value_text(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)  # repr: the float reads back bit for bit


def with_spec_training_keys(cfg):
    """``cfg`` with the training keys of ``cfg.method`` applied (``cfg.method`` keeps the full spec,
    the run's label). ValueError if a key's value has the wrong type for its field."""
    _, training = split_spec(cfg.method)
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for key, value in training.items():
        kind = type(getattr(cfg, key))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            training[key] = float(value)
        elif not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"method spec {cfg.method!r}: {key}={value!r} must be a {kind.__name__} "
                             f"(ToyConfig.{fields[key].name})")
    return dataclasses.replace(cfg, **training)
