"""Each client's dropout masks when many clients' samples share one forward pass, drawn as if alone.

Sequential training seeds torch's global RNG per client (``derive_seed(seed, "dropout", t, k)``)
and every dropout in the forward draws from it in call order: the model's ``nn.Dropout`` modules
and attention-probability dropout (``bernoulli_`` over the client's padded batch, [B, T, H] or
[B, heads, T, T]), and each adapter layer's LoRA dropout seed (``torch.randint``). Here each client
has its own ``torch.Generator`` with that seed, and at every dropout call ("site") of a batched
forward each client draws exactly what it would have drawn alone, in its own padded shape; the
rows of the batched pass then take their sample's part of their client's mask.

A step's rows may be split into several passes ("chunks", grouped by length): at a site's first
call in a step every client draws its whole mask (so each client's draws follow the sequential
order, site after site); only the entries of real tokens are kept, flattened (positions beyond a
sample's length are padding, whose mask values never reach a real token), bit-packed (the tables live
until the step's last pass), and each chunk gathers its rows' entries with one index.

Exact on CPU, where ``F.dropout`` is ``bernoulli_`` on the global generator; CUDA's fused dropout
draws differently, so there each client gets its own reproducible stream, not the sequential bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
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
        self.flat: list[tuple[Tensor, int]] = []  # per site: (bit-packed keep table, entries per row)
        self.site = 0

    # ----------------------------------------------------------------------------- layout
    def begin_step(self, batches: dict[int, ClientBatch]) -> None:
        """Start a local step: ``batches[slot]`` for every client that takes it (slot order)."""
        self.batches = dict(sorted(batches.items()))
        self.flat = []
        lengths = [n for b in self.batches.values() for n in b.lengths]
        self.lengths = torch.tensor(lengths, dtype=torch.int64)
        self.row_of = {}  # (slot, position) -> row number in step order
        for slot, b in self.batches.items():
            for i in range(len(b.lengths)):
                self.row_of[(slot, i)] = len(self.row_of)
        self.token_start = torch.cumsum(self.lengths, 0) - self.lengths  # first real token of each row
        self.pair_start = torch.cumsum(self.lengths ** 2, 0) - self.lengths ** 2

    def begin_chunk(self, rows: list[tuple[int, int]]) -> None:
        """Start a forward pass over ``rows``: (slot, position in that client's batch) per row."""
        self.site = 0
        self.chunk = torch.tensor([self.row_of[r] for r in rows], dtype=torch.int64)
        n = self.lengths[self.chunk]
        width = int(n.max())
        pos = torch.arange(width)
        self.width = width
        inside = pos[None, :] < n[:, None]  # [R, P]
        # Index of each (row, position) among the step's real tokens; padding -> the sentinel (last) entry.
        self.token_index = torch.where(inside, self.token_start[self.chunk, None] + pos[None, :], -1)
        pair_inside = inside[:, :, None] & inside[:, None, :]
        pair = self.pair_start[self.chunk, None, None] + pos[None, :, None] * n[:, None, None] + pos[None, None, :]
        self.pair_index = torch.where(pair_inside, pair, -1)

    def _gather(self, draw, index: Tensor) -> Tensor:
        """The chunk's keep-mask at this site (every client's draw made at the site's first call)."""
        site, self.site = self.site, self.site + 1
        if site == len(self.flat):
            # Every client's draw is packed as soon as it is made: the step's tables are held until its
            # last pass, so they are kept at one bit per entry (8× less than uint8).
            packed = []
            for slot in self.batches:
                keep = draw(slot)
                width = keep.shape[1]
                packed.append(_pack(keep))
            ones = torch.full((1, packed[0].shape[1]), 255, dtype=torch.uint8, device=packed[0].device)
            self.flat.append((torch.cat(packed + [ones]), width))
        flat, width = self.flat[site]
        # index_select over rows of uint8 is a row copy; advanced indexing of bool is per element (slow).
        index = torch.where(index < 0, flat.shape[0] - 1, index).to(flat.device)
        rows = _unpack(flat.index_select(0, index.reshape(-1)), width)
        return rows.view(*index.shape, rows.shape[1])

    def _bernoulli(self, slot: int, shape: tuple[int, ...], p: float) -> Tensor:
        # What F.dropout does on a CPU tensor: empty_like(x).bernoulli_(1 - p) from the (global)
        # generator; the draws do not depend on the tensor's dtype, so uint8 (a quarter the memory).
        out = torch.empty(shape, dtype=torch.uint8, device=self.device)
        return out.bernoulli_(1.0 - p, generator=self.generators[slot])

    def _real(self, slot: int, full: Tensor) -> Tensor:
        """[B, T, ...] -> the entries of real tokens, row after row ([n_tokens, ...])."""
        lengths = torch.tensor(self.batches[slot].lengths)
        inside = (torch.arange(full.shape[1])[None, :] < lengths[:, None]).reshape(-1)
        flat = full.reshape(full.shape[0] * full.shape[1], *full.shape[2:])
        return flat.index_select(0, inside.nonzero().squeeze(1).to(full.device))

    # ----------------------------------------------------------------------------- the three kinds of site
    def tokens(self, x: Tensor, p: float) -> Tensor:
        """``F.dropout(x, p)`` for x [R, P, H] (tokens) or [R, H] (one vector per sample)."""
        if x.dim() == 2:
            keep = self._gather(lambda s: self._bernoulli(s, (len(self.batches[s].lengths), x.shape[1]), p),
                                self.chunk)
        elif x.dim() == 3:
            def draw(s):
                b = self.batches[s]
                return self._real(s, self._bernoulli(s, (len(b.lengths), b.width, x.shape[2]), p))

            keep = self._gather(draw, self.token_index)
        else:
            raise ValueError(f"client-batched dropout expects [rows, H] or [rows, T, H], got {tuple(x.shape)}")
        return _apply(x, keep, p)

    def attention(self, weights: Tensor, p: float) -> Tensor:
        """Attention-probability dropout for weights [R, heads, P, P] (as sdpa's and eager attention's)."""
        heads = weights.shape[1]

        def draw(s):
            b = self.batches[s]
            full = self._bernoulli(s, (len(b.lengths), heads, b.width, b.width), p)
            lengths = torch.tensor(b.lengths)
            pos = torch.arange(b.width)
            inside = (pos[None, :, None] < lengths[:, None, None]) & (pos[None, None, :] < lengths[:, None, None])
            pairs = full.permute(0, 2, 3, 1).reshape(-1, heads)
            return pairs.index_select(0, inside.reshape(-1).nonzero().squeeze(1).to(full.device))  # [Σ n², heads]

        keep = self._gather(draw, self.pair_index).permute(0, 3, 1, 2)
        return _apply(weights, keep, p)

    def lora(self, x: Tensor, p: float, backend: str) -> Tensor:
        """The LoRA path's dropped input for x [R, P, K]: a seed per client from its stream (as
        ``FederatedLinear`` draws it), the mask ``rolora.kernels.dropout_keep_mask`` makes from it over
        the client's flattened [B·T, K] input."""

        def draw(s):
            b = self.batches[s]
            seed = int(torch.randint(0, 2**31 - 1, (), dtype=torch.int64, generator=self.cpu_generators[s]))
            keep = dropout_keep_mask(seed, len(b.lengths) * b.width, x.shape[2], p, x.device, backend)
            return self._real(s, keep.view(torch.uint8).view(len(b.lengths), b.width, x.shape[2]))

        # The kernels' torch path computes x * keep / (1 - p); this rounds once less (same to 1 ulp).
        return _apply(x, self._gather(draw, self.token_index), p)


_BITS = torch.arange(8, dtype=torch.uint8)


def _pack(keep: Tensor) -> Tensor:
    """[N, F] of 0/1 (uint8) -> [N, ⌈F/8⌉] bytes, entry f in bit f % 8 of byte f // 8."""
    n, f = keep.shape
    padded = torch.nn.functional.pad(keep, (0, -f % 8))
    return (padded.view(n, -1, 8) << _BITS.to(keep.device)).sum(-1, dtype=torch.uint8)


def _unpack(packed: Tensor, width: int) -> Tensor:
    """The inverse of :func:`_pack`: [M, ⌈F/8⌉] bytes -> [M, F] of 0/1 (uint8)."""
    bits = (packed.unsqueeze(-1) >> _BITS.to(packed.device)) & 1
    return bits.view(packed.shape[0], -1)[:, :width]


def _apply(x: Tensor, keep: Tensor, p: float) -> Tensor:
    # As ATen's dropout: x * (noise / (1 - p)), the noise (0 or 1) scaled in x's dtype: 0 or
    # fl(1 / (1 - p)), so multiplying by that constant gives the same values as dividing.
    scale = torch.tensor(1.0, dtype=x.dtype, device=x.device).div(1.0 - p)
    return x * (keep.to(x.dtype) * scale)
