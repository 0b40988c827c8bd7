"""Stable method names -> classes; the one place a name is resolved."""

from __future__ import annotations

import inspect

from rolora.federated.api import AggregationError, Method
from rolora.federated.fed_alora import FedALoRA
from rolora.federated.fedavg_full import FedAvgFull
from rolora.federated.fedavg_lora import FedAvgLoRA
from rolora.federated.fedex_lora import FedExLoRA
from rolora.federated.fedsa_lora import FedSALoRA
from rolora.federated.ffa_lora import FFALoRA
from rolora.federated.flexlora import FlexLoRA
from rolora.federated.flora import FLoRA
from rolora.federated.lora_fair import LoRAFAIR
from rolora.federated.rolora import RoLoRA

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        FedAvgLoRA, FFALoRA, RoLoRA, FlexLoRA, FLoRA, FedExLoRA, LoRAFAIR, FedSALoRA, FedALoRA, FedAvgFull
    )
}
"""Every method by its stable name (the names used on the command line and in results)."""


def available_methods() -> list[str]:
    """The valid method names, sorted."""
    return sorted(METHODS)


def get_method(name: str, **params: object) -> Method:
    """A configured method by stable name; ``params`` go to its constructor (see its docstring)."""
    if name not in METHODS:
        raise AggregationError(f"unknown method {name!r}; valid names: {', '.join(available_methods())}")
    try:
        return METHODS[name](**params)
    except (TypeError, ValueError) as err:  # unknown, missing or invalid parameter: name the method
        raise AggregationError(f"method {name!r}: bad parameters {params}: {err}") from err


def _parse_value(text: str) -> object:
    """A parameter value from the command line: int, float, bool, None, else the string itself."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_method_spec(spec: str) -> tuple[str, dict[str, object]]:
    """Split a command-line spec ``name[:key=value[:key=value...]]`` into the name and its parameters.

    Examples: ``"rolora"``, ``"rolora:period=2:start=A"``, ``"lora-fair:ridge=0.001"``. Values are
    read as int, float, ``true``/``false``, ``none`` or else a string.
    """
    name, *pairs = spec.strip().split(":")
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AggregationError(f"method spec {spec!r}: expected key=value after ':', got {pair!r}")
        params[key.strip()] = _parse_value(value.strip())
    return name, params


def method_from_spec(spec: str, total_rounds: int | None = None) -> Method:
    """A configured method from a spec (see :func:`parse_method_spec`) for a run of ``total_rounds``.

    Methods whose constructor takes ``total_rounds`` (RoLoRA, for its ``ffa_after`` hand-over, a
    fraction of the run) get the run's count; a spec that states a different count is an error,
    since the fraction would then refer to some other run.
    """
    name, params = parse_method_spec(spec)
    if total_rounds is not None and name in METHODS and "total_rounds" in inspect.signature(METHODS[name]).parameters:
        given = params.setdefault("total_rounds", total_rounds)
        if given != total_rounds:
            raise AggregationError(f"method {spec!r}: total_rounds={given} but the run has {total_rounds} rounds")
    return get_method(name, **params)


def mixed_ranks_cell(cls: type[Method]) -> str:
    """The "mixed ranks" column of the README table: yes, no, or n/a for full-rank methods."""
    if not getattr(cls, "uses_ranks", True):
        return "n/a"
    return "yes" if cls.mixes_ranks else "no"


def methods_table() -> str:
    """A Markdown table of every method built from its class attributes (for the README)."""
    lines = [
        "| name | what clients train and send; what the server does | exact | mixed ranks |",
        "|---|---|---|---|",
    ]
    for name in available_methods():
        cls = METHODS[name]
        lines.append(f"| `{name}` | {cls.summary} | {cls.exact.value} | {mixed_ranks_cell(cls)} |")
    return "\n".join(lines)
