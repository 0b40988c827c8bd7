"""The claims the report judges: the paper's (:data:`paper.CLAIMS`), and one for each new 50-client sweep.

A spec added to ``rolora/lab/specs/`` whose main cells all run 50 clients with RoLoRA and at least one
LoRA baseline (a new regime of the paper's headline: a frozen head, the paper's local work, ...) gets
the 50-client headline claim without new code, titled by its spec's first comment line and placed
after the other 50-client sweeps. Any other unnamed sweep is left out, as before.
"""

from __future__ import annotations

from rolora.lab.report.paper import CLAIMS, LORA_BASELINES, SweepClaim, fifty_client_claim
from rolora.lab.report.sweep_specs import SweepSpec

FIFTY = "clients-50"


def is_fifty_client_sweep(spec: SweepSpec) -> bool:
    configs = list(spec.configs.values())
    methods = {c.federated.method.split(":")[0] for c in configs}
    return (bool(configs) and all(c.federated.clients == 50 for c in configs)
            and "rolora" in methods and bool(methods & set(LORA_BASELINES)))


def title_of(header: str) -> str:
    """A spec header's lead, up to its first ': ' outside brackets (the rest lists methods and data)."""
    depth = 0
    for i, ch in enumerate(header):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif depth == 0 and header.startswith(": ", i):
            return header[:i]
    return header


def all_claims(specs: dict[str, SweepSpec]) -> list[SweepClaim]:
    named = {c.sweep for c in CLAIMS}
    new = [fifty_client_claim(name, title_of(s.header)) for name, s in sorted(specs.items())
           if name not in named and is_fifty_client_sweep(s)]
    claims = list(CLAIMS)
    at = max((i for i, c in enumerate(claims) if c.sweep.startswith(FIFTY)), default=len(claims) - 1) + 1
    return claims[:at] + new + claims[at:]
