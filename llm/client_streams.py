"""Each client's dropout masks when many clients' samples share one forward pass, drawn as if alone.

Sequential training seeds torch's global RNG per client (``derive_seed(seed, "dropout", t, k)``)
and every dropout in the forward draws from it in call order: the model's ``nn.Dropout`` modules
and attention-probability dropout (``bernoulli_`` over the client's padded batch, [B, T, H] or
[B, heads, T, T]), and each adapter layer's LoRA dropout seed (``torch.randint``). Here each client
has its own ``torch.Generator`` with that seed, and at every dropout call ("site") of a batched
forward each client draws exactly what it would have drawn alone, in its own padded shape; the
rows of the batched pass then take their sample's part of their client's mask.

A step's rows may be split into several passes ("chunks", grouped by length): a client draws its
masks at the first chunk that holds any of its rows, site after site, so the draw order per client
is the sequential one; the per-row pieces (trimmed to the row's own length: positions beyond it are
padding, whose mask values never reach a real token) wait for their chunk in a cache.

Exact on CPU, where ``F.dropout`` is ``bernoulli_`` on the global generator; CUDA's fused dropout
draws differently, so there each client gets its own reproducible stream, not the sequential bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rolora.kernels import dropout_keep_mask


@dataclass(frozen=True)
class ClientBatch:
    """One client's batch of one local step: its samples' lengths, in the client's batch order."""

    lengths: list[int]

    @property
    def width(self) -> int:
        """T: the length the client's batch is padded to when trained alone."""
        return max(self.lengths)


class ClientStreams:
    """Per-client dropout streams for one group of clients (slots 0..C-1) over one round."""

    def __init__(self, seeds: list[int], device: torch.device) -> None:
        # torch.manual_seed seeds every device's generator: masks come from the device's, the LoRA
        # seeds (torch.randint without a device) from the CPU's.
        self.generators = [torch.Generator(device=device).manual_seed(int(s) % 2**64) for s in seeds]
        self.cpu_generators = (self.generators if device.type == "cpu"
                               else [torch.Generator().manual_seed(int(s) % 2**64) for s in seeds])
        self.device = device
        self.batches: dict[int, ClientBatch] = {}
        self.cache: dict[tuple[int, int], dict[int, Tensor]] = {}
        self.rows: list[tuple[int, int]] = []
        self.site = 0

    # ----------------------------------------------------------------------------- bookkeeping
    def begin_step(self, batches: dict[int, ClientBatch]) -> None:
        """Start a local step: ``batches[slot]`` for every client that takes it."""
        if self.cache:
            raise RuntimeError("dropout masks of the previous step were drawn but never used")
        self.batches = dict(batches)

    def begin_chunk(self, rows: list[tuple[int, int]]) -> None:
        """Start a forward pass over ``rows``: (slot, position in that client's batch) per row."""
        self.rows, self.site = list(rows), 0

    def _client_pieces(self, site: int, slot: int, draw) -> dict[int, Tensor]:
        key = (site, slot)
        if key not in self.cache:
            self.cache[key] = draw(slot)
        return self.cache[key]

    def _assemble(self, draw, fit) -> Tensor:
        """The chunk's mask: each row's piece from its client's (cached) draw, fitted to the chunk."""
        site, self.site = self.site, self.site + 1
        pieces = []
        for slot, pos in self.rows:
            cached = self._client_pieces(site, slot, draw)
            pieces.append(fit(cached.pop(pos)))
            if not cached:
                del self.cache[(site, slot)]
        return torch.stack(pieces)

    def _bernoulli(self, slot: int, shape: tuple[int, ...], p: float, dtype: torch.dtype) -> Tensor:
        # What F.dropout does on a CPU tensor: empty_like(x).bernoulli_(1 - p) from the (global) generator.
        out = torch.empty(shape, dtype=dtype, device=self.device)
        return out.bernoulli_(1.0 - p, generator=self.generators[slot]).bool()

    # ----------------------------------------------------------------------------- the three kinds of site
    def tokens(self, x: Tensor, p: float) -> Tensor:
        """``F.dropout(x, p)`` for x [R, P, H] (tokens) or [R, H] (one vector per sample)."""
        if x.dim() == 2:
            mask = self._assemble(lambda s: self._split(self._bernoulli(s, (len(self.batches[s].lengths), x.shape[1]),
                                                                        p, x.dtype), s), lambda m: m)
        elif x.dim() == 3:
            mask = self._assemble(lambda s: self._split(self._bernoulli(s, self._shape3(s, x), p, x.dtype), s),
                                  lambda m: _fit_rows(m, x.shape[1]))
        else:
            raise ValueError(f"client-batched dropout expects [rows, H] or [rows, T, H], got {tuple(x.shape)}")
        return _apply(x, mask, p)

    def attention(self, weights: Tensor, p: float) -> Tensor:
        """Attention-probability dropout for weights [R, heads, P, P] (as sdpa's and eager attention's)."""
        heads, width = weights.shape[1], weights.shape[2]

        def draw(s):
            b = self.batches[s]
            full = self._bernoulli(s, (len(b.lengths), heads, b.width, b.width), p, weights.dtype)
            return {i: full[i, :, :n, :n] for i, n in enumerate(b.lengths)}

        return _apply(weights, self._assemble(draw, lambda m: _fit_square(m, width)), p)

    def lora(self, x: Tensor, p: float, backend: str) -> Tensor:
        """The LoRA path's dropped input for x [R, P, K]: a seed per client from its stream (as
        ``FederatedLinear`` draws it), the mask ``rolora.kernels.dropout_keep_mask`` makes from it over
        the client's flattened [B·T, K] input."""

        def draw(s):
            b = self.batches[s]
            seed = int(torch.randint(0, 2**31 - 1, (), dtype=torch.int64, generator=self.cpu_generators[s]))
            keep = dropout_keep_mask(seed, len(b.lengths) * b.width, x.shape[2], p, x.device, backend)
            return self._split(keep.view(len(b.lengths), b.width, x.shape[2]), s)

        mask = self._assemble(draw, lambda m: _fit_rows(m, x.shape[1]))
        return x * mask.to(x.dtype) / (1.0 - p)  # the kernels' torch path: x * keep / (1 - p)

    def _shape3(self, slot: int, x: Tensor) -> tuple[int, int, int]:
        b = self.batches[slot]
        return (len(b.lengths), b.width, x.shape[2])

    def _split(self, mask: Tensor, slot: int) -> dict[int, Tensor]:
        """Per-row pieces of a client's mask, trimmed to the row's length for token masks."""
        lengths = self.batches[slot].lengths
        if mask.dim() == 2:
            return {i: mask[i] for i in range(len(lengths))}
        return {i: mask[i, :n] for i, n in enumerate(lengths)}


def _fit_rows(piece: Tensor, width: int) -> Tensor:
    """A row's [n, H] token mask as [width, H] (n ≤ width; the padded positions keep)."""
    return piece if piece.shape[0] == width else F.pad(piece, (0, 0, 0, width - piece.shape[0]), value=True)


def _fit_square(piece: Tensor, width: int) -> Tensor:
    n = piece.shape[-1]
    return piece if n == width else F.pad(piece, (0, width - n, 0, width - n), value=True)


def _apply(x: Tensor, keep: Tensor, p: float) -> Tensor:
    # As ATen's dropout: x * (noise / (1 - p)), the scaled noise in x's dtype.
    return x * keep.to(x.dtype).div_(1.0 - p)
