"""Stable method names -> classes; the one place a name is resolved."""

from __future__ import annotations

from .api import AggregationError, Method
from .fed_alora import FedALoRA
from .fedavg_full import FedAvgFull
from .fedavg_lora import FedAvgLoRA
from .fedex_lora import FedExLoRA
from .fedsa_lora import FedSALoRA
from .ffa_lora import FFALoRA
from .flexlora import FlexLoRA
from .flora import FLoRA
from .lora_fair import LoRAFAIR
from .rolora import RoLoRA

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
    except TypeError as err:  # an unknown or missing parameter: say which method and what it takes
        raise AggregationError(f"method {name!r}: bad parameters {params}: {err}") from err


def methods_table() -> str:
    """A Markdown table of every method built from its class attributes (for the README)."""
    lines = [
        "| name | what clients train and send; what the server does | exact | mixed ranks | personalised |",
        "|---|---|---|---|---|",
    ]
    for name in available_methods():
        cls = METHODS[name]
        mixed = "n/a" if not getattr(cls, "uses_ranks", True) else ("yes" if cls.mixes_ranks else "no")
        personal = "yes" if cls.personalised else "no"
        lines.append(f"| `{name}` | {cls.summary} | {cls.exact} | {mixed} | {personal} |")
    return "\n".join(lines)
