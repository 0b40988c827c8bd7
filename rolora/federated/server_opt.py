"""Server optimisers: what the server does with a round's pseudo-gradient instead of just applying it.

FedAvg sets the new global tensor to the aggregate. Treating ``Δ = aggregate − previous`` as a
(pseudo-)gradient step and feeding it to an optimiser on the server gives FedAvgM (Hsu et al. 2019,
server momentum) and FedAdam / FedYogi / FedAdagrad (Reddi et al. 2021, "Adaptive Federated
Optimization", Algorithm 2). Everything here is a pure function of one tensor and its optimiser
state (the "slots"), so a caller applies it tensor by tensor to whatever its aggregation rule
produces.

The rules (η = ``lr``, all operations elementwise)::

    FedAvgM     m = β m + Δ                               x + η m
    FedAdam     m = β1 m + (1−β1) Δ ; v = β2 v + (1−β2) Δ²                   x + η m / (√v + τ)
    FedYogi     m = β1 m + (1−β1) Δ ; v = v − (1−β2) Δ² sign(v − Δ²)         x + η m / (√v + τ)
    FedAdagrad  m = β1 m + (1−β1) Δ ; v = v + Δ²                             x + η m / (√v + τ)

As in Reddi et al.'s Algorithm 2 there is NO bias correction of m and v. Both start at zero (the
paper allows any v₋₁ ≥ τ²; zero is what common implementations use, and it makes the degenerate
settings below exact).

Degenerate settings (the tests check each):

* FedAvgM with ``momentum=0, lr=1`` is FedAvg: x + Δ = the aggregate.
* FedAdam / FedYogi with ``beta1=0, beta2=1, lr=tau`` is FedAvg exactly: v stays 0, so the step is
  x + (τ/τ) Δ.
* FedAdagrad with ``beta1=0`` and ``lr = tau → ∞`` tends to FedAvg: the step is Δ·τ/(√v + τ), a
  relative error of about √v/τ.

Precision: the slots are kept in x's dtype promoted to at least float32 (a bfloat16 second moment
of squared small numbers underflows and rounds badly), the step is computed in that dtype and the
new x is cast back to x's dtype once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real

import torch
from torch import Tensor

SERVER_OPTIMIZERS = ("fedavgm", "fedadam", "fedyogi", "fedadagrad")

# Which fields each kind reads: the rest are ignored by step(), refused by the parser and left out
# of describe(), so a spec never carries a knob that does nothing.
_FIELDS_OF = {
    "fedavgm": ("lr", "momentum"),
    "fedadam": ("lr", "beta1", "beta2", "tau"),
    "fedyogi": ("lr", "beta1", "beta2", "tau"),
    "fedadagrad": ("lr", "beta1", "tau"),
}

# (test on the value, the range in words); written so that NaN fails every test.
_RANGES = {
    "lr": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "beta2": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "tau": (lambda v: 0 < v < math.inf, "a finite number > 0"),
}


@dataclass(frozen=True)
class ServerOptimizer:
    """One server optimiser and its hyper-parameters; :meth:`step` applies it to one tensor.

    Sane settings per kind: FedAvgM ``lr=1, momentum=0.9`` (the defaults); the adaptive ones want a
    much smaller server rate, e.g. ``lr=1e-2, beta1=0.9, beta2=0.99, tau=1e-3`` (Reddi et al.'s
    grid: η ∈ 10^[-3, 0], τ ∈ 10^[-5, -1]). The default ``lr=1.0`` is FedAvgM's: with an adaptive
    kind each entry then moves by up to about 1 per round, which is usually far too much.
    """

    kind: str
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.kind not in SERVER_OPTIMIZERS:
            raise ValueError(f"ServerOptimizer: kind={self.kind!r} is not one of {', '.join(SERVER_OPTIMIZERS)}")
        for name, (ok, words) in _RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not ok(value):
                raise ValueError(f"ServerOptimizer({self.kind}): {name}={value!r} must be {words}")

    def slots(self) -> tuple[str, ...]:
        """Names of the per-tensor state :meth:`step` reads and returns."""
        return ("m",) if self.kind == "fedavgm" else ("m", "v")

    def step(self, x: Tensor, delta: Tensor, slots: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The new ``x`` (same dtype) and the new slots, from the pseudo-gradient ``delta`` (same shape
        as ``x``). An empty ``slots`` is the first step (m = v = 0). No input is modified."""
        if delta.shape != x.shape:
            raise ValueError(f"{self.kind}: delta has shape {tuple(delta.shape)}, x has {tuple(x.shape)}")
        work = torch.promote_types(x.dtype, torch.float32)
        d = delta.detach().to(work)
        m, v = self._previous(x, slots, work)
        if self.kind == "fedavgm":
            m = self.momentum * m + d
            new = x.detach().to(work) + self.lr * m
            return new.to(x.dtype), {"m": m}
        m = self.beta1 * m + (1 - self.beta1) * d
        v = _second_moment(self.kind, v, d * d, self.beta2)
        new = x.detach().to(work) + self.lr * m / (torch.sqrt(v) + self.tau)
        return new.to(x.dtype), {"m": m, "v": v}

    def describe(self) -> str:
        """The kind and the fields it uses, e.g. ``fedadam(lr=0.01, beta1=0.9, beta2=0.99, tau=0.001)``."""
        return f"{self.kind}({', '.join(f'{n}={getattr(self, n)!r}' for n in _FIELDS_OF[self.kind])})"

    def _previous(self, x: Tensor, slots: Mapping[str, Tensor], work: torch.dtype) -> tuple[Tensor, Tensor]:
        """(m, v) of the last step in the working dtype, zeros on the first step (v unused by FedAvgM)."""
        if not slots:
            zeros = torch.zeros(x.shape, dtype=work, device=x.device)
            return zeros, zeros
        if set(slots) != set(self.slots()):
            raise ValueError(f"{self.kind}: slots {sorted(slots)} are not the expected {list(self.slots())}")
        for name, value in slots.items():
            if value.shape != x.shape:
                raise ValueError(f"{self.kind}: slot {name!r} has shape {tuple(value.shape)}, x has {tuple(x.shape)}")
        m = slots["m"].detach().to(work)
        return m, (slots["v"].detach().to(work) if "v" in slots else m)


def _second_moment(kind: str, v: Tensor, d2: Tensor, beta2: float) -> Tensor:
    """v after one step of the adaptive ``kind``, given Δ² (module-level functions so a test can
    swap one for a wrong rule and watch the reference comparison catch it)."""
    if kind == "fedadam":
        return _adam_v(v, d2, beta2)
    if kind == "fedyogi":
        return _yogi_v(v, d2, beta2)
    return _adagrad_v(v, d2, beta2)


def _adam_v(v: Tensor, d2: Tensor, beta2: float) -> Tensor:
    return beta2 * v + (1 - beta2) * d2


def _yogi_v(v: Tensor, d2: Tensor, beta2: float) -> Tensor:
    # Additive (not multiplicative) change of v: v moves towards Δ² by at most (1−β2)Δ² per step.
    return v - (1 - beta2) * d2 * torch.sign(v - d2)


def _adagrad_v(v: Tensor, d2: Tensor, beta2: float) -> Tensor:
    del beta2  # Adagrad sums every square: no decay
    return v + d2


def parse_server_optimizer(spec: str) -> ServerOptimizer:
    """``"kind"`` or ``"kind:key=value:key=value"``, e.g. ``"fedadam:lr=1e-3:tau=1e-4"`` or
    ``"fedavgm:momentum=0.5"``. Only the keys the kind uses are accepted (see :meth:`describe`)."""
    kind, *options = spec.strip().split(":")
    kind = kind.strip()
    if kind not in SERVER_OPTIMIZERS:
        raise ValueError(f"server optimiser {kind!r} is unknown; valid ones: {', '.join(SERVER_OPTIMIZERS)}")
    valid = _FIELDS_OF[kind]
    values: dict[str, float] = {}
    for option in options:
        key, sep, text = (part.strip() for part in option.partition("="))
        if key not in valid:
            raise ValueError(f"{kind}: option {key!r} in {spec!r} is unknown; valid keys: {', '.join(valid)}")
        if not sep or key in values:
            raise ValueError(f"{kind}: option {option!r} in {spec!r} must be given once, as {key}=<number>")
        try:
            values[key] = float(text)
        except ValueError:
            raise ValueError(f"{kind}: {key}={text!r} is not a number") from None
        ok, words = _RANGES[key]
        if not ok(values[key]):
            raise ValueError(f"{kind}: {key}={text!r} must be {words}")
    return ServerOptimizer(kind, **values)

