"""The mechanism the paper credits, measured each round: the product-averaging gap and client drift.

Averaging LoRA's factors separately is not averaging the clients' updates:
(Σ p_k B_k)(Σ p_k A_k) ≠ Σ p_k B_k A_k. The difference is exactly a weighted covariance of the factors,

    Σ p_k B_k A_k − B̄ Ā = Σ p_k (B_k − B̄)(A_k − Ā)        (Σ p_k = 1, B̄ = Σ p_k B_k, Ā = Σ p_k A_k),

so it grows as the clients' factors drift apart during local training, and it is zero whenever one
factor is the same on every client (RoLoRA's frozen factor, FFA-LoRA's A). Per layer and round:

- ``gap``: s · ‖Σ p_k (B_k − B̄)(A_k − Ā)‖_F / ‖ΔW̄‖_F, the error of averaging A and B separately
  relative to the round's ideal update ΔW̄ = Σ p_k ΔW_k, ΔW_k = s (B_k A_k − B_k⁰ A_k⁰) (client k's
  update from its start). FedAvg-LoRA keeps this error; FedEx-LoRA and FLoRA correct it.
- ``drift``: √(Σ p_k ‖ΔW_k − ΔW̄‖²_F) / ‖ΔW̄‖_F, the spread of the clients' updates.

A factor that is bit-identical on every client is centred to exact zeros (not ``A − Σ p_k A``, which
rounds), so the gap of a one-factor round is exactly 0.0: :func:`check_one_factor_gap` asserts it.
:func:`product_gap_reference` is the definition written out (the slow reference of the parity test).
Computed in float64 on the CPU; layers without ``A`` and ``B``, or with mixed ranks, are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rolora.federated.api import AggregationError, LayerTensors, ModelTensors
from rolora.federated.weights import weighted_product_sum, weighted_sum


@dataclass(frozen=True)
class LayerDiagnostics:
    gap: float
    """s·‖Σ p_k B_k A_k − B̄ Ā‖ / ‖ΔW̄‖ (0 when one factor is shared; inf if ΔW̄ = 0 but the gap is not)."""
    drift: float
    """√(Σ p_k ‖ΔW_k − ΔW̄‖²) / ‖ΔW̄‖."""
    update_norm: float
    """‖ΔW̄‖_F, the round's ideal update of the layer (scaled by s)."""


def _centred(factors: Sequence[Tensor], weights: Sequence[float]) -> list[Tensor]:
    """x_k − Σ p_j x_j, or exact zeros when every x_k is the same tensor value (a shared factor)."""
    if all(torch.equal(factors[0], x) for x in factors[1:]):
        return [torch.zeros_like(x) for x in factors]
    mean = weighted_sum(factors, weights)
    return [x - mean for x in factors]


def product_gap(bs: Sequence[Tensor], as_: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Σ p_k B_k A_k − (Σ p_k B_k)(Σ p_k A_k), as the covariance Σ p_k (B_k − B̄)(A_k − Ā) (d×n)."""
    return weighted_product_sum(_centred(bs, weights), _centred(as_, weights), weights)


def product_gap_reference(bs: Sequence[Tensor], as_: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """The definition, term by term: Σ p_k B_k A_k − (Σ p_k B_k)(Σ p_k A_k)."""
    mean_product = sum(p * (b @ a) for b, a, p in zip(bs, as_, weights))
    mean_b = sum(p * b for b, p in zip(bs, weights))
    mean_a = sum(p * a for a, p in zip(as_, weights))
    return mean_product - mean_b @ mean_a


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf


def layer_diagnostics(starts: Sequence[LayerTensors], ends: Sequence[LayerTensors], weights: Sequence[float],
                      scale: float) -> LayerDiagnostics | None:
    """One layer's gap and drift from each client's start and end tensors (None: not plain LoRA, or
    mixed ranks). ``scale`` is s = alpha / r."""
    if any(not {"A", "B"} <= set(x) for x in (*starts, *ends)):
        return None
    if len({tuple(e["A"].shape) for e in ends}) > 1:
        return None
    f64 = [{n: x.detach().to("cpu", torch.float64) for n, x in layer.items() if n in ("A", "B")}
           for layer in (*starts, *ends)]
    s0, s1 = f64[:len(starts)], f64[len(starts):]
    updates = [scale * (e["B"] @ e["A"] - s["B"] @ s["A"]) for s, e in zip(s0, s1)]
    mean_update = weighted_sum(updates, weights)
    norm = float(torch.linalg.norm(mean_update))
    spread = math.sqrt(math.fsum(p * float(torch.linalg.norm(u - mean_update)) ** 2 for u, p in zip(updates, weights)))
    gap = scale * float(torch.linalg.norm(product_gap([e["B"] for e in s1], [e["A"] for e in s1], weights)))
    return LayerDiagnostics(gap=_ratio(gap, norm), drift=_ratio(spread, norm), update_norm=norm)


def round_diagnostics(starts: Sequence[ModelTensors], ends: Sequence[ModelTensors], weights: Sequence[float],
                      alpha: float) -> dict[str, LayerDiagnostics]:
    """Every plain-LoRA layer's diagnostics for one round (clients in the same order in all three)."""
    if not (len(starts) == len(ends) == len(weights)) or not starts:
        raise AggregationError(f"round_diagnostics: {len(starts)} starts, {len(ends)} ends, {len(weights)} weights")
    out = {}
    for name in starts[0]:
        rank = ends[0][name]["A"].shape[0] if "A" in ends[0][name] else 1
        diag = layer_diagnostics([s[name] for s in starts], [e[name] for e in ends], weights, alpha / rank)
        if diag is not None:
            out[name] = diag
    return out


def summary(diags: Mapping[str, LayerDiagnostics]) -> dict[str, float | None]:
    """The round's metrics: the mean over layers of gap and drift (None when no layer is plain LoRA)."""
    if not diags:
        return {"product_gap": None, "client_drift": None}
    return {"product_gap": math.fsum(d.gap for d in diags.values()) / len(diags),
            "client_drift": math.fsum(d.drift for d in diags.values()) / len(diags)}


def check_one_factor_gap(diags: Mapping[str, LayerDiagnostics], trains: frozenset[str], t: int, method: str) -> None:
    """A round that trains one factor of A/B averages exactly: its gap must be exactly zero."""
    if len(trains & {"A", "B"}) != 1:
        return
    bad = {name: d.gap for name, d in diags.items() if d.gap != 0.0}
    if bad:
        raise AggregationError(f"round {t}: {method} trains only {sorted(trains & {'A', 'B'})} of A/B, yet the "
                               f"clients' other factor differs (product-averaging gap {bad}); it must be shared")
