"""Many clients' tensors in the adapter layers and the head at once: each row uses its own client's.

A forward over a batch whose rows are grouped by client (``Rows.segments``: client slot k owns
rows a..b) computes, for every adapted layer, y = x W0ᵀ + b over all rows (the shared frozen base,
one matmul) plus each client's own term on its own rows, and for the head's Linear modules
y = x W_kᵀ + b_k per segment. Each client's tensors are its own Parameters (the same shapes as in
sequential training, mixed ranks included, so an elementwise optimiser over all of them is exactly
one optimiser per client):

- plain LoRA (``A``, ``B``, and a ``base`` shared by every client of the round):
  (alpha / r_k) · (x̂ A_kᵀ) B_kᵀ on client k's rows, for a group of clients at once as two matmuls over
  their stacked factors with a block mask (:meth:`ClientAdapters._stacked_lora`);
- any other tensors (full-rank ``W``, Fed-ALoRA, ...): the client's ``method.delta`` applied to its
  own rows (heavier: a d×n delta per client and layer; obviously the reference formula).

Which computation and which dropout a layer uses is exactly what ``FederatedLinear`` picks for one
client, so the dropout masks (``ClientStreams``) line up with sequential training.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rolora.federated import LayerTensors, Method, ModelTensors
from rolora.llm.adapters import check_head, check_layers, head_parameters
from rolora.llm.client_streams import ClientStreams
from rolora.llm.pass_masks import PassMasks
from rolora.llm.federated_linear import FederatedLinear, uses_fused_path


STACKED_RANK = {torch.float32: 32}
"""Client-batched LoRA: the most stacked rank (Σ r_k of the clients in one pair of matmuls) by the
activations' dtype; more clients are split into groups. The stacked matmuls do C× the LoRA FLOPs of
per-client ones at GEMM speed. Measured on a CPU (20 clients × r 8, ~2,000 rows, forward + backward):
in bf16 one stack of 160 is fastest (oneDNN's small bf16 matmuls cost far more per call than the
extra FLOPs); in fp32 stacks of 16-32 are ~2.7× faster than one of 160 (MKL's small fp32 matmuls are
cheap, the extra FLOPs are not)."""
STACKED_RANK_DEFAULT = 256
"""Other dtypes (bf16, fp16): the extra work stays below ~2/3 of the base layer's for K, N ≥ 384."""


class NotBatchable(ValueError):
    """These clients' tensors cannot be trained together (the caller trains them one by one)."""


@dataclass
class Rows:
    """The current forward's rows, grouped by client: (slot, first row, end row) per client present."""

    segments: list[tuple[int, int, int]] = field(default_factory=list)

    _scales: dict = field(default_factory=dict, repr=False)

    def block_scale(self, group: list[tuple[int, int, int]], ranks: list[int], alpha: float, dtype,
                    device) -> Tensor:
        """[rows of ``group``, Σ ranks]: alpha / r_k where the row's client owns the column, else 0.

        The same for every adapted layer of a pass, so it is made once per pass and group."""
        key = (tuple(group), tuple(ranks), float(alpha), dtype, str(device))
        if key not in self._scales:
            if len(self._scales) > 64:
                self._scales.clear()
            counts = torch.tensor([end - start for _, start, end in group])
            row_owner = torch.repeat_interleave(torch.arange(len(group)), counts)
            col_owner = torch.repeat_interleave(torch.arange(len(group)), torch.tensor(ranks))
            scale = torch.tensor([alpha / r for r in ranks], dtype=torch.float64)[col_owner]
            mask = torch.where(row_owner[:, None] == col_owner[None, :], scale[None, :], 0.0)
            self._scales[key] = mask.to(device=device, dtype=dtype)
        return self._scales[key]

    @staticmethod
    def of(slots: list[int]) -> Rows:
        """Segments of a row order in which each slot's rows are contiguous."""
        segments, start = [], 0
        for end in range(1, len(slots) + 1):
            if end == len(slots) or slots[end] != slots[start]:
                segments.append((slots[start], start, end))
                start = end
        if len({s for s, _, _ in segments}) != len(segments):
            raise ValueError(f"rows must be grouped by client, got slots {slots}")
        return Rows(segments)


class ClientAdapters:
    """One adapted layer's tensors for every client slot, and its row-wise forward."""

    def __init__(self, module: FederatedLinear, tensors: list[LayerTensors], trainable: frozenset[str],
                 method: Method, alpha: float, rows: Rows, streams: ClientStreams | PassMasks) -> None:
        for one in tensors:
            module.check(one, trainable, method, alpha)
        w = module.weight
        self.params = [{k: nn.Parameter(t.detach().to(device=w.device, dtype=module.adapter_dtype, copy=True),
                                        requires_grad=k in trainable) for k, t in one.items()} for one in tensors]
        self.alpha, self.method, self.rows, self.streams = float(alpha), method, rows, streams
        names = {frozenset(p) for p in self.params}
        if len(names) != 1:
            raise NotBatchable(f"layer {module.name!r}: clients hold different tensor names {sorted(map(sorted, names))}")
        self.fused = uses_fused_path(method, next(iter(names)), frozenset(trainable))
        self.merged = None
        if self.fused and "base" in self.params[0]:
            base = self.params[0]["base"]
            if not all(torch.equal(p["base"], base) for p in self.params[1:]):
                raise NotBatchable(f"layer {module.name!r}: clients start from different bases")
            self.merged = w.detach() + base.detach().to(w.dtype)  # W0 + base, shared (as FederatedLinear)

    def trainable(self, slot: int) -> list[nn.Parameter]:
        return [p for p in self.params[slot].values() if p.requires_grad]

    def read(self, slot: int) -> LayerTensors:
        return {k: p.detach().clone() for k, p in self.params[slot].items()}

    def forward(self, module: FederatedLinear, x: Tensor) -> Tensor:
        p = module.dropout if module.training else 0.0
        if not self.fused:
            return self._delta_forward(module, x, p)
        y = F.linear(x, module.weight if self.merged is None else self.merged, module.bias)
        xd = self.streams.lora(x, p, module.backend) if p > 0.0 else x
        terms = [self._stacked_lora(xd, group) for group in self._stacks(xd.dtype)]
        return y + (terms[0] if len(terms) == 1 else torch.cat(terms))  # one stack: no copy

    def _stacks(self, dtype: torch.dtype) -> list[list[tuple[int, int, int]]]:
        """Consecutive client segments, cut so each group's ranks add up to at most the dtype's
        ``STACKED_RANK``."""
        limit = STACKED_RANK.get(dtype, STACKED_RANK_DEFAULT)
        groups, total = [[]], 0
        for seg in self.rows.segments:
            r = self.params[seg[0]]["A"].shape[0]
            if groups[-1] and total + r > limit:
                groups.append([])
                total = 0
            groups[-1].append(seg)
            total += r
        return groups

    def _stacked_lora(self, xd: Tensor, group: list[tuple[int, int, int]]) -> Tensor:
        """The group's clients' LoRA terms on their rows, as two matmuls over their stacked factors.

        (x̂ [A_1; …; A_C]ᵀ ⊙ M) [B_1 … B_C]ᵀ, M[row, client k's r_k columns] = alpha / r_k on client
        k's rows and 0 elsewhere: exactly Σ_k over each row's own client only (the zero blocks add
        exact zeros, and their gradients are zero), in two matmuls of inner size Σ r_k instead of
        2·C small ones (those small matmuls were ~1/4 of a client-batched MiniLM round on a CPU).
        """
        first, end = group[0][1], group[-1][2]
        dtype = xd.dtype
        a = torch.cat([self.params[slot]["A"] for slot, _, _ in group]).to(dtype)
        b = torch.cat([self.params[slot]["B"] for slot, _, _ in group], dim=1).to(dtype)
        ranks = [self.params[slot]["A"].shape[0] for slot, _, _ in group]
        mask = self.rows.block_scale(group, ranks, self.alpha, dtype, xd.device)
        mask = mask.view(mask.shape[0], *[1] * (xd.dim() - 2), mask.shape[1])  # rows [, positions], Σr
        return ((xd[first:end] @ a.t()) * mask) @ b.t()

    def _delta_forward(self, module: FederatedLinear, x: Tensor, p: float) -> Tensor:
        """``FederatedLinear.reference_forward`` per client, on its own rows."""
        deltas = [(a, b, self.method.delta(dict(self.params[slot]), self.alpha).to(module.weight.dtype))
                  for slot, a, b in self.rows.segments]
        if p == 0.0:
            return torch.cat([F.linear(x[a:b], module.weight + d, module.bias) for a, b, d in deltas])
        xd = self.streams.tokens(x, p)
        return F.linear(x, module.weight, module.bias) + torch.cat([F.linear(xd[a:b], d) for a, b, d in deltas])


class RowLinear(nn.Module):
    """A head ``nn.Linear`` with one weight (and bias) per client slot, each row using its client's."""

    def __init__(self, weights: list[nn.Parameter], biases: list[nn.Parameter] | None, rows: Rows) -> None:
        super().__init__()
        self.weights, self.biases, self.rows = weights, biases, rows

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([F.linear(x[a:b], self.weights[slot].to(x.dtype),
                                   None if self.biases is None else self.biases[slot].to(x.dtype))
                          for slot, a, b in self.rows.segments])


class ClientHeads:
    """The classification head's tensors for every client slot (fp32 masters), as ``RowLinear``s."""

    def __init__(self, model: nn.Module, heads: list[dict[str, Tensor]], rows: Rows) -> None:
        own = head_parameters(model)
        linears = {f"classifier{'.' + n if n else ''}": m for n, m in model.classifier.named_modules()
                   if isinstance(m, nn.Linear)}
        covered = {f"{name}.{p}" for name, m in linears.items() for p, _ in m.named_parameters(recurse=False)}
        if covered != set(own):
            raise NotBatchable(f"head parameters {sorted(set(own) - covered)} are not in Linear modules")
        for head in heads:
            check_head(model, head)
        device = next(iter(own.values())).device
        self.params = [{k: nn.Parameter(v.detach().to(device=device, dtype=torch.float32, copy=True))
                        for k, v in head.items()} for head in heads]
        self.dtypes = {k: v.dtype for k, v in heads[0].items()}
        self.model, self.linears = model, linears
        self.modules = {name: RowLinear([p[f"{name}.weight"] for p in self.params],
                                        None if m.bias is None else [p[f"{name}.bias"] for p in self.params], rows)
                        for name, m in linears.items()}

    def trainable(self, slot: int) -> list[nn.Parameter]:
        return list(self.params[slot].values())

    def read(self, slot: int) -> dict[str, Tensor]:
        return {k: p.detach().to(self.dtypes[k]).clone() for k, p in self.params[slot].items()}

    @contextmanager
    def installed(self):
        """The model's head Linears replaced by the per-client ones for the duration."""
        try:
            for name, module in self.modules.items():
                _set_module(self.model, name, module)
            yield
        finally:
            for name, module in self.linears.items():
                _set_module(self.model, name, module)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def client_adapters(adapters: dict[str, FederatedLinear], starts_tensors: list[ModelTensors], trainable,
                    method: Method, alpha: float, rows: Rows, streams: ClientStreams | PassMasks) -> dict[str, ClientAdapters]:
    """Every adapted layer's :class:`ClientAdapters` (each client's tensors checked first)."""
    for tensors in starts_tensors:
        check_layers(adapters, tensors)
    return {name: ClientAdapters(module, [t[name] for t in starts_tensors], frozenset(trainable), method, alpha,
                                 rows, streams) for name, module in adapters.items()}


@contextmanager
def rows_forward(adapters: dict[str, FederatedLinear], layers: dict[str, ClientAdapters]):
    """Route every adapted layer's forward through its :class:`ClientAdapters` for the duration."""
    try:
        for name, module in adapters.items():
            module.row_forward = layers[name].forward
        yield
    finally:
        for module in adapters.values():
            module.row_forward = None
