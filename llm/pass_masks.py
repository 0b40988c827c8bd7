"""Dropout masks drawn in each client-batched pass's own shape (``train.dropout_masks = "fast"``).

The exact masks (:mod:`rolora.llm.client_streams`) replay, for every client, the bits it would
draw trained alone: each client draws its whole padded batch (attention dropout over [B, heads,
T, T] with T its longest sentence), and the pass gathers its rows' entries. That costs about a
fifth of a client-batched MiniLM round on a CPU. Here every dropout site of a pass draws one mask
over the pass's tensor: every entry still an independent Bernoulli draw, so each sample (and so
each client) gets its own masks, from a seeded generator (the same config and seed give the same
numbers), but not the bits of one-by-one training, and with the pass's length grouping, not the
client's padding.

The draw: 16 random bits per entry (three entries per 64-bit word), kept when below
round((1 - p)·2¹⁶); kept entries are scaled by the exact inverse of that keep probability, so the
layer's expectation is unchanged (the keep probability differs from 1 - p by at most 2⁻¹⁷).
"""

from __future__ import annotations

import torch
from torch import Tensor


class PassMasks:
    """The dropout source of one group's client-batched training; the interface of ``ClientStreams``."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.generator = torch.Generator(device=device).manual_seed(int(seed) % 2**63)
        self.device = device

    def begin_step(self, batches) -> None:  # the masks do not depend on the step's layout
        pass

    def begin_chunk(self, rows) -> None:
        pass

    def tokens(self, x: Tensor, p: float) -> Tensor:
        return self._dropped(x, p)

    def attention(self, weights: Tensor, p: float) -> Tensor:
        return self._dropped(weights, p)

    def lora(self, x: Tensor, p: float, backend: str) -> Tensor:
        return self._dropped(x, p)

    def _dropped(self, x: Tensor, p: float) -> Tensor:
        keep, q = keep_mask(tuple(x.shape), p, self.generator, x.device)
        scale = torch.tensor(1.0 / q, dtype=x.dtype, device=x.device)
        return x * (keep.to(x.dtype) * scale)


def keep_mask(shape: tuple[int, ...], p: float, generator: torch.Generator, device) -> tuple[Tensor, float]:
    """(bool mask of ``shape``, its keep probability q): entries kept independently with q ≈ 1 - p."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = 1
    for d in shape:
        n *= d
    threshold = round((1.0 - p) * 65536)
    if threshold >= 65536:  # p < 2⁻¹⁷: every entry kept (and 32768 does not fit the int16 compare)
        return torch.ones(shape, dtype=torch.bool, device=device), 1.0
    words = torch.empty(-(-n // 3), dtype=torch.int64, device=device).random_(0, 2**48, generator=generator)
    # Little-endian int16 view of a word below 2⁴⁸: three uniform 16-bit fields and a zero one.
    fields = words.view(torch.int16).view(-1, 4)[:, :3]
    keep = (fields < threshold - 32768).reshape(-1)[:n]
    return keep.view(shape), threshold / 65536
