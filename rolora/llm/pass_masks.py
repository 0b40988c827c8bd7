"""Dropout masks drawn in each client-batched pass's own shape (``train.dropout_masks = "fast"``).

The exact masks (:mod:`rolora.llm.client_streams`) replay, for every client, the bits it would
draw trained alone: each client draws its whole padded batch (attention dropout over [B, heads,
T, T] with T its longest sentence), and the pass gathers its rows' entries. That costs about a
fifth of a client-batched MiniLM round on a CPU. Here every dropout site of a pass draws one mask
over the pass's tensor: every entry still an independent Bernoulli draw, so each sample (and so
each client) gets its own masks, from a seeded generator (the same config and seed give the same
numbers), but not the bits of one-by-one training, and with the pass's length grouping, not the
client's padding.

The draw: 16 random bits per entry (four entries per 64-bit word), kept when below
round((1 - p)·2¹⁶); kept entries are scaled by the exact inverse of that keep probability, so the
layer's expectation is unchanged (the keep probability differs from 1 - p by at most 2⁻¹⁷). The
words come from NumPy's SFC64 on a CPU (about twice as fast as torch's Mersenne twister there, and
the four 16-bit fields of a word are one contiguous compare) and from a torch generator on the
device elsewhere, so masks are drawn where they are used; the two give different (equally valid)
numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


EXACT_SCALE_DTYPES = (torch.float32, torch.float64)
"""Dtypes whose mask can hold the scale: x · fl(1/q) is what x · 1 · (1/q) rounds to in them."""


class WordSource:
    """Uniform random 64-bit words (as int64) from one seed, drawn on ``device``."""

    def __init__(self, seed: int, device) -> None:
        self.device = torch.device(device)
        seed = int(seed) % 2**63
        if self.device.type == "cpu":
            self._numpy = np.random.SFC64(seed)
        else:
            self._torch = torch.Generator(device=self.device).manual_seed(seed)

    def words(self, count: int) -> Tensor:
        if self.device.type == "cpu":
            return torch.from_numpy(self._numpy.random_raw(count).view(np.int64))
        # [-2⁶³, 2⁶³ - 1): every 64-bit pattern but one, so each 16-bit field is uniform to ~2⁻⁴⁸
        return torch.empty(count, dtype=torch.int64, device=self.device).random_(-2**63, 2**63 - 1,
                                                                                 generator=self._torch)


class PassMasks:
    """The dropout source of one group's client-batched training; the interface of ``ClientStreams``."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.source = WordSource(seed, device)
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
        keep, q = keep_mask(tuple(x.shape), p, self.source)
        # bool → x.dtype through uint8 (PyTorch's bool casts and bool products take a scalar path on
        # CPU, ~7× slower than this).
        mask = keep.view(torch.uint8).to(x.dtype)
        if x.dtype in EXACT_SCALE_DTYPES:  # 0 or fl(1/q) in the mask: the same values, one op fewer each way
            return x * mask.mul_(1.0 / q)
        # reduced precision: the scale in the op's fp32 arithmetic, not a bf16-rounded 1/q in the mask
        return (x * mask).mul_(1.0 / q)


def keep_mask(shape: tuple[int, ...], p: float, source: WordSource) -> tuple[Tensor, float]:
    """(bool mask of ``shape`` on the source's device, its keep probability q): entries kept
    independently with q ≈ 1 - p."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = 1
    for d in shape:
        n *= d
    threshold = round((1.0 - p) * 65536)
    if threshold >= 65536:  # p < 2⁻¹⁷: every entry kept (and 32768 does not fit the int16 compare)
        return torch.ones(shape, dtype=torch.bool, device=source.device), 1.0
    fields = source.words(-(-n // 4)).view(torch.int16)  # four uniform 16-bit fields per word
    keep = (fields < threshold - 32768)[:n]
    return keep.view(shape), threshold / 65536
