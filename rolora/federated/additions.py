"""What a run adds to a LoRA rule: a server optimiser, drift correction, differential privacy.

:class:`Additions` names them; :func:`refusal` says, before anything runs, why a method cannot take
them (``None`` if it can); :func:`rolora.federated.composed.compose` builds the method that does.
Which method takes which addition follows from one property of the method, :meth:`Method.averaged`
(the uploaded tensors the server sets to their plain weighted mean):

- a **server optimiser** steps on new − old of those tensors (an exact pseudo-gradient of each);
  methods whose aggregate is not a mean (an SVD, a merge into the base, a correction) are refused;
- **client-level DP** clips each client's update to what it uploads and noises their mean: the same
  methods, and only with ``weighting = "uniform"`` (sample-count weights would change every
  client's sensitivity and leak the counts);
- **SCAFFOLD** corrects the gradients of what clients train: every trained tensor must be averaged
  (refused where a trained tensor stays on the client, as FedSA-LoRA's B);
- **FedProx** and **DP-SGD** act on local training only: every method takes them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from rolora.federated.api import AggregationError, Method
from rolora.federated.server_opt import ServerOptimizer

DP_MODES = ("off", "client", "sample")
PROBE_ROUNDS = range(1, 9)
"""Rounds whose trains/uploads/averaged sets decide what a method can take (covers every alternation here)."""


@dataclass(frozen=True)
class Additions:
    """Everything a run adds to its LoRA rule (the defaults add nothing)."""

    server_opt: ServerOptimizer | None = None
    prox_mu: float = 0.0
    """FedProx's μ: each client adds μ/2·‖w − w_start‖² to its local loss (0: off)."""
    scaffold: bool = False
    """SCAFFOLD (option II control variates) on every trained tensor and the dense ones."""
    dp: str = "off"
    """off | client (clip each client's update, Gaussian noise on the mean) | sample (DP-SGD locally)."""
    dp_clip: float = 1.0
    """L2 bound of one client's update (client) or of one sample's gradient (sample)."""
    dp_noise: float = 0.0
    """Noise multiplier σ: the noise's standard deviation is σ·clip on the sum."""
    dp_delta: float = 1e-5
    """The δ at which ε is reported."""
    clients: int = 0
    """Total number of clients N (SCAFFOLD's server step c += |S|/N·mean Δc_k; client-level DP's
    sampling rate |S|/N). Required with either."""
    batch_size: int = 0
    local_steps: int = 0
    local_epochs: int = 0
    """DP-SGD accounting: each participant's steps per round and sampling rate batch/n_k."""
    client_sizes: Mapping[object, float] = field(default_factory=dict)
    """DP-SGD accounting under SecAgg+ (one merged update): every client's sample count n_k."""

    def __post_init__(self) -> None:
        if self.dp not in DP_MODES:
            raise AggregationError(f"dp must be one of {', '.join(DP_MODES)}, got {self.dp!r}")
        for key, value, ok, text in (
            ("prox_mu", self.prox_mu, lambda v: math.isfinite(v) and v >= 0, "a finite number ≥ 0"),
            ("dp_clip", self.dp_clip, lambda v: v > 0, "> 0 (inf: no clipping)"),
            ("dp_noise", self.dp_noise, lambda v: math.isfinite(v) and v >= 0, "a finite number ≥ 0"),
            ("dp_delta", self.dp_delta, lambda v: 0 < v < 1, "in (0, 1)"),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise AggregationError(f"{key} must be {text}, got {value!r}")
        if (self.scaffold or self.dp == "client") and self.clients < 1:
            raise AggregationError("scaffold and client-level DP need clients = the total number of clients (≥ 1)")
        if self.dp == "sample" and (self.batch_size < 1 or self.local_steps + self.local_epochs < 1):
            raise AggregationError("DP-SGD's accounting needs batch_size ≥ 1 and local_steps or local_epochs ≥ 1")

    @property
    def empty(self) -> bool:
        return self.server_opt is None and not self.prox_mu and not self.scaffold and self.dp == "off"

    def describe(self) -> str:
        """A short label: ``fedadam(lr=0.01, ...) + fedprox(mu=0.01) + dp-client(clip=1, σ=1)``."""
        parts = []
        if self.server_opt is not None:
            parts.append(self.server_opt.describe())
        if self.prox_mu:
            parts.append(f"fedprox(mu={self.prox_mu:g})")
        if self.scaffold:
            parts.append("scaffold")
        if self.dp != "off":
            parts.append(f"dp-{self.dp}(clip={self.dp_clip:g}, noise={self.dp_noise:g}, delta={self.dp_delta:g})")
        return " + ".join(parts)


def _averages_uploads(method: Method) -> bool:
    return all(method.uploads(t) <= method.averaged(t) for t in PROBE_ROUNDS)


def _averages_trained(method: Method) -> bool:
    return all(method.trains(t) <= method.averaged(t) for t in PROBE_ROUNDS)


NOT_A_MEAN = "its aggregate is not a weighted mean of the uploads ({rule}), so there is no exact pseudo-gradient"


def refusal(method: Method, additions: Additions, weighting: str = "samples") -> str | None:
    """Why ``method`` cannot take ``additions`` (a sentence naming both), or None if it can."""
    rule = getattr(method, "summary", "") or method.name
    if additions.server_opt is not None and not _averages_uploads(method):
        return (f"server optimiser {additions.server_opt.kind} with {method.name}: "
                + NOT_A_MEAN.format(rule=rule.split(";")[-1].strip()))
    if additions.dp == "client":
        if not _averages_uploads(method):
            return f"client-level DP with {method.name}: " + NOT_A_MEAN.format(rule=rule.split(";")[-1].strip())
        if weighting != "uniform":
            return (f"client-level DP with weighting {weighting!r}: every client must count the same "
                    "(set federated.weighting = uniform): sample-count weights change each client's "
                    "sensitivity and reveal the counts")
    if additions.scaffold and not _averages_trained(method):
        return (f"SCAFFOLD with {method.name}: it trains tensors the server does not average "
                f"(trains {sorted(method.trains(1) | method.trains(2))}, averages "
                f"{sorted(method.averaged(1) | method.averaged(2))}), so no server control variate exists for them")
    return None


SUPPORT_COLUMNS = ("server optimiser", "FedProx", "SCAFFOLD", "client DP", "DP-SGD", "DP noise in B·A")


def noise_in_product(method: Method) -> str:
    """How DP noise reaches the update (s·B·A, or W): through several noisy trained factors at once
    (their product has a noise × noise term and each factor's noise scaled by the others), or through
    one factor a round (linear in the noise). Counted over what trains in a round (DP-SGD's noise;
    client-level DP's too wherever the trained tensors are the averaged ones)."""
    most = max(len(method.trains(t) - {"W"}) for t in PROBE_ROUNDS)
    if most == 0:
        return "linear (W itself)"
    return "product of noisy factors" if most > 1 else "one factor a round: linear"


def support_row(method: Method) -> dict[str, str]:
    """The README's additions table for one method: what each addition acts on, or "—" (refused)."""
    averaged = sorted(set().union(*(method.averaged(t) for t in PROBE_ROUNDS)))
    on = ", ".join(averaged) + " (+ dense)" if averaged else ""
    mean_ok = _averages_uploads(method)
    return {
        "server optimiser": on if mean_ok else "—",
        "FedProx": "yes",
        "SCAFFOLD": on if _averages_trained(method) else "—",
        "client DP": on if mean_ok else "—",
        "DP-SGD": "yes",
        "DP noise in B·A": noise_in_product(method),
    }


def additions_table() -> str:
    """The README's table of what each method takes (rows by name, columns :data:`SUPPORT_COLUMNS`)."""
    from rolora.federated.registry import available_methods, get_method

    lines = ["| name | " + " | ".join(SUPPORT_COLUMNS) + " |", "|---" * (len(SUPPORT_COLUMNS) + 1) + "|"]
    for name in available_methods():
        row = support_row(get_method(name))
        lines.append(f"| `{name}` | " + " | ".join(row[c] for c in SUPPORT_COLUMNS) + " |")
    return "\n".join(lines)
