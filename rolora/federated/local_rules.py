"""What the round protocol asks of a client's local training beyond "train these tensors".

A :class:`~rolora.federated.round.ClientStart` may carry :class:`LocalRules` (``start.rules``; ``None``
means plain local training). A local trainer that honours them:

1. after each ``backward()``, calls ``rules.correction.add_to(params)`` (FedProx's proximal gradient
   μ·(w − w_start) and SCAFFOLD's control-variate shift c − c_k), BEFORE any gradient clipping;
2. with ``rules.privacy`` (DP-SGD), computes each sample's gradient, clips it to ``privacy.clip``,
   sums, adds Gaussian noise of standard deviation ``privacy.noise · privacy.clip`` from
   ``privacy.generator(t, client, step)`` and divides by the batch size
   (:func:`rolora.federated.privacy.dp_sgd_step` does all of it, given each sample's loss);
3. reports ``metrics["steps"]`` (optimiser steps taken) and ``metrics["lr"]`` (the round's local
   learning rate; ``metrics["head_lr"]`` where the dense tensors train at another): SCAFFOLD's
   control-variate update needs them.

Tensors are keyed as ``(layer, name)`` for the adapters' tensors (``start.tensors[layer][name]``)
and ``(DENSE, name)`` for the dense ones (``start.dense[name]``, e.g. the classification head).
A trainer that cannot honour a rule must refuse it (``rules.require(...)`` names what it lacks), never
silently train without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

DENSE = "@dense"
"""The "layer" of a dense tensor's key: ``(DENSE, "classifier.weight")``."""

Key = tuple[str, str]


def flat_keys(tensors: Mapping[str, Mapping[str, Tensor]], dense: Mapping[str, Tensor] = (),
              names: Iterable[str] | None = None) -> dict[Key, Tensor]:
    """``{(layer, name): tensor}`` for the adapters' tensors (only ``names`` if given) and
    ``{(DENSE, name): tensor}`` for the dense ones."""
    keep = None if names is None else frozenset(names)
    out = {(layer, n): x for layer, named in tensors.items() for n, x in named.items() if keep is None or n in keep}
    out.update({(DENSE, n): x for n, x in dict(dense).items()})
    return out


@dataclass(frozen=True)
class GradCorrection:
    """A gradient added to every trained tensor after ``backward()``: ``mu·(w − anchor) + shift``.

    FedProx (Li et al. 2020) adds μ/2·‖w − w_start‖² to the local loss: its gradient is μ·(w − w_start).
    SCAFFOLD (Karimireddy et al. 2020) corrects each local gradient by c − c_k: ``shift``. The sum is
    the gradient of one extra loss term, so it goes in before clipping and the optimiser.
    """

    mu: float = 0.0
    anchor: Mapping[Key, Tensor] = field(default_factory=dict)
    """The tensors the client started from (detached copies), for FedProx."""
    shift: Mapping[Key, Tensor] = field(default_factory=dict)
    """c − c_k per trained tensor, for SCAFFOLD (empty without it)."""

    def add_to(self, params: Mapping[Key, Tensor]) -> None:
        """Add the correction to ``p.grad`` of every trained tensor in ``params`` (keys as above).

        A tensor without a gradient this step (``p.grad is None``) gets one: the proximal and
        control-variate terms do not depend on the batch. A key this correction does not know is an
        error (the trainer's and the protocol's ideas of what trains would disagree)."""
        known = set(self.anchor) | set(self.shift)
        with torch.no_grad():
            for key, p in params.items():
                if key not in known:
                    raise KeyError(f"drift correction: no anchor or control variate for tensor {key}; known: "
                                   f"{sorted(known)[:6]}...")
                extra = torch.zeros_like(p)
                if self.mu:
                    extra.add_(p.detach() - self.anchor[key].to(p.device, p.dtype), alpha=self.mu)
                if key in self.shift:
                    extra.add_(self.shift[key].to(p.device, p.dtype))
                if p.grad is None:
                    p.grad = extra
                else:
                    p.grad.add_(extra)


@dataclass(frozen=True)
class SamplePrivacy:
    """DP-SGD for local training (Abadi et al. 2016): per-sample clipping to ``clip`` and Gaussian
    noise of standard deviation ``noise · clip`` on each step's sum of clipped gradients."""

    clip: float
    noise: float
    seed: int
    """Seeds the noise: step j of client k in round t draws from ``generator(t, k, j)``."""

    def generator(self, t: int, client: object, step: int, device: str | torch.device = "cpu") -> torch.Generator:
        from rolora.federated.seeding import derive_seed

        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(self.seed, "dp-sgd", t, client, step))
        return g


@dataclass(frozen=True)
class LocalRules:
    """Everything a client's local training must do beyond plain steps (see the module docstring)."""

    correction: GradCorrection | None = None
    privacy: SamplePrivacy | None = None
    control: Mapping[Key, Tensor] = field(default_factory=dict)
    """SCAFFOLD: the client's own control variates c_k (every tensor it has one for), for the
    protocol's update after training; the trainer does not use them."""

    def require(self, trainer: str, *, correction: bool = True, privacy: bool = True) -> None:
        """Raise ValueError naming ``trainer`` and the rule it cannot honour (``False`` = cannot)."""
        if self.correction is not None and not correction:
            raise ValueError(f"{trainer} cannot apply a drift correction (FedProx/SCAFFOLD)")
        if self.privacy is not None and not privacy:
            raise ValueError(f"{trainer} cannot train with per-sample DP-SGD")
