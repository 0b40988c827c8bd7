"""Differential privacy arithmetic: clipping, Gaussian noise, and the privacy spent.

Client-level DP (DP-FedAvg, McMahan et al. 2018): each client's update (what it uploads minus what it
started from, over every uploaded tensor and the dense ones jointly) is clipped to L2 norm ``clip``;
the server adds Gaussian noise of standard deviation ``noise · clip`` to the SUM of the clipped
updates, then divides by the number of participants. Sample-level DP-SGD (Abadi et al. 2016): the
same on each local step's per-sample gradients (:func:`privatise_batch`, :func:`dp_sgd_step`).

The privacy spent (:func:`epsilon`) comes from Opacus's RDP accountant (Rényi DP of the sampled
Gaussian mechanism, Mironov et al. 2019, converted to (ε, δ) as ``opacus.accountants.RDPAccountant``
does, over its default orders). It treats each step's sampling as POISSON subsampling at the stated
rate: the standard approximation when a round samples a fixed-size subset of clients, or local
steps take the batches of a shuffled epoch, neither of which is Poisson.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import TypeVar

import torch
from torch import Tensor

K = TypeVar("K")


def global_norm(tensors: Mapping[object, Tensor]) -> Tensor:
    """The L2 norm of all ``tensors`` together (float64 accumulation, a 0-d tensor)."""
    if not tensors:
        return torch.zeros((), dtype=torch.float64)
    return torch.sqrt(sum((x.detach().double() ** 2).sum() for x in tensors.values()))


def clip_factor(norm: float, clip: float) -> float:
    """min(1, clip / norm): what scales a vector of L2 norm ``norm`` into the ball of radius ``clip``."""
    return 1.0 if norm <= clip else clip / norm


def privatise_batch(per_sample: Sequence[Mapping[object, Tensor]], clip: float, noise: float,
                    generator: torch.Generator | None) -> dict[object, Tensor]:
    """DP-SGD's gradient of one step: each sample's gradient (a mapping key -> tensor, every sample
    the same keys) clipped jointly to L2 norm ``clip``, summed, plus N(0, (noise·clip)²) per entry
    (drawn from ``generator`` in key order), divided by the batch size."""
    if not per_sample:
        raise ValueError("privatise_batch: an empty batch")
    keys = list(per_sample[0])
    total = {k: torch.zeros_like(per_sample[0][k]) for k in keys}
    for grads in per_sample:
        f = clip_factor(float(global_norm(grads)), clip)
        for k in keys:
            total[k].add_(grads[k], alpha=f)
    if noise > 0:
        for k in keys:
            z = torch.randn(total[k].shape, generator=generator, dtype=torch.float32,
                            device=generator.device if generator is not None else "cpu")
            total[k].add_(z.to(total[k].device, total[k].dtype), alpha=noise * clip)
    return {k: v / len(per_sample) for k, v in total.items()}


def dp_sgd_step(params: Mapping[K, Tensor], sample_losses: Iterable[Tensor], clip: float, noise: float,
                generator: torch.Generator | None) -> Tensor:
    """One DP-SGD step's gradient, put in every ``params[key].grad``: each loss of ``sample_losses``
    (one sample's, computed lazily: each is backwarded before the next is made) gives that sample's
    gradient (zero for a tensor it does not reach), then :func:`privatise_batch`. Returns the mean of
    the losses; at the first non-finite one it stops and returns that loss, leaving no gradient set.
    One forward/backward per sample: slow, obviously correct, valid for any model."""
    per_sample, losses = [], []
    for value in sample_losses:
        if not bool(torch.isfinite(value.detach())):
            for p in params.values():
                p.grad = None
            return value.detach()
        for p in params.values():
            p.grad = None
        value.backward()
        per_sample.append({key: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                           for key, p in params.items()})
        losses.append(value.detach())
    grads = privatise_batch(per_sample, clip, noise, generator)
    for key, p in params.items():
        p.grad = grads[key]
    return torch.stack(losses).mean()


def clip_update(start: Mapping[K, Tensor], end: Mapping[K, Tensor], clip: float) -> tuple[dict[K, Tensor], float]:
    """``start + f·(end − start)`` with f = :func:`clip_factor` of the L2 norm of ``end − start`` over
    every key jointly: the end of an update clipped to norm ``clip``. Returns (clipped end, norm before
    clipping). An update already within ``clip`` (always, for ``clip = math.inf``) comes back as the
    ``end`` tensors themselves, bit for bit; the rest is computed in at least float32 and cast back."""
    if isinstance(clip, bool) or not isinstance(clip, Real) or not clip > 0:
        raise ValueError(f"clip_update: clip={clip!r} must be > 0 (math.inf for no clipping)")
    for key in [*start, *end]:
        if key not in start or key not in end:
            raise ValueError(f"clip_update: key {key!r} is in only one of start and end")
        if start[key].shape != end[key].shape:
            raise ValueError(f"clip_update: key {key!r} has shape {tuple(start[key].shape)} at the start "
                             f"but {tuple(end[key].shape)} at the end")
    norm = float(global_norm({k: end[k].detach().double() - start[k].detach().double() for k in start}))
    f = clip_factor(norm, clip)
    if f == 1.0:
        return dict(end), norm
    clipped = {}
    for k in start:
        work = torch.promote_types(end[k].dtype, torch.float32)
        s, e = start[k].detach().to(work), end[k].detach().to(work)
        clipped[k] = (s + f * (e - s)).to(end[k].dtype)
    return clipped, norm


def gaussian_noise(like: Mapping[K, Tensor], std: float, generator: torch.Generator) -> dict[K, Tensor]:
    """N(0, std²) noise shaped like each tensor of ``like``: drawn in float32 from ``generator``, in
    the mapping's key order, then cast to the tensor's dtype and device. ``std = 0`` gives zeros and
    draws nothing (the generator's state is left as it was)."""
    if isinstance(std, bool) or not isinstance(std, Real) or not 0 <= std < math.inf:
        raise ValueError(f"gaussian_noise: std={std!r} must be a finite number >= 0")
    if std == 0:
        return {k: torch.zeros_like(x) for k, x in like.items()}
    noise = {}
    for k, x in like.items():
        z = torch.randn(x.shape, generator=generator, dtype=torch.float32,
                        device=generator.device if generator is not None else "cpu")
        noise[k] = (z * std).to(x.device, x.dtype)
    return noise


def epsilon(history: Sequence[tuple[float, float, int]], delta: float) -> float:
    """The ε of (ε, δ)-DP spent after the composed steps of ``history``, each entry
    ``(noise_multiplier, sample_rate, steps)``, by Opacus's RDP accountant (the same number as
    ``RDPAccountant`` stepped through the same history). Any noise 0 (with steps ≥ 1) gives
    ``math.inf``; an empty history, or one of zero steps, gives 0.0."""
    if isinstance(delta, bool) or not isinstance(delta, Real) or not 0 < delta < 1:
        raise ValueError(f"epsilon: delta={delta!r} must be in (0, 1)")
    for i, entry in enumerate(history):
        if len(entry) != 3:
            raise ValueError(f"epsilon: history[{i}]={entry!r} is not (noise_multiplier, sample_rate, steps)")
        noise, rate, steps = entry
        if isinstance(noise, bool) or not isinstance(noise, Real) or not 0 <= noise < math.inf:
            raise ValueError(f"epsilon: history[{i}] noise_multiplier={noise!r} must be a finite number >= 0")
        if isinstance(rate, bool) or not isinstance(rate, Real) or not 0 < rate <= 1:
            raise ValueError(f"epsilon: history[{i}] sample_rate={rate!r} must be in (0, 1]")
        if isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 0:
            raise ValueError(f"epsilon: history[{i}] steps={steps!r} must be an integer >= 0")
    spent = [(float(n), float(q), int(s)) for n, q, s in history if s > 0]  # zero steps spend nothing
    if not spent:
        return 0.0
    if any(n == 0 for n, _, _ in spent):
        return math.inf  # no noise, no privacy
    try:  # lazy: only runs that account for privacy need opacus
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
    except ImportError:
        raise ImportError("differential privacy's accountant needs Opacus: pip install 'rolora[privacy]' "
                          "(or pip install opacus)") from None

    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = sum(compute_rdp(q=q, noise_multiplier=n, steps=s, orders=orders) for n, q, s in spent)
    eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)
