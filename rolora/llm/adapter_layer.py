"""The adapter layer: a frozen ``nn.Linear`` (storage shared, never copied) plus clients' tensors.

:class:`FederatedLinear` replaces each adapted ``nn.Linear``. The wrapped layer's ``weight`` and
``bias`` Parameters are re-registered as they are, so the model's frozen base stays where it was and
every simulated client runs on the same storage. What a client trains is a
:data:`rolora.federated.LayerTensors` dict; its ranks and tensor names are whatever that client has
(nothing is fixed at construction). The layer holds either

- one client's tensors (:meth:`FederatedLinear.load`: sequential training, the reference), or
- many clients' at once (:class:`ClientAdapters`, set as ``layer.clients``: client-batched training),
  each row of the batch using its own client's tensors (``Rows.segments``: slot k owns rows a..b).

Both compute y = x W0ᵀ + b + the client's term, in one of two ways chosen by :func:`uses_fused_path`:

- fused: tensors ``{"A", "B"}`` (plus an untrained ``"base"``) of a method with the default
  ``delta`` go through ``rolora.kernels.lora_linear`` on W0 (or on W0 + base, materialised once per
  load). Which of A/B require grad sets the kernel's phase: a B-only round keeps no M×K activation.
  Many clients: (alpha / r_k) · (x̂ A_kᵀ) B_kᵀ on client k's rows, for a group of clients as two
  matmuls over their stacked factors with a block mask (:meth:`ClientAdapters._stacked_lora`);
- reference: any other tensors (full-rank ``"W"``, Fed-ALoRA, ...) give
  ``F.linear(x, W0 + method.delta(tensors, alpha), bias)``: slow, obviously correct (many clients:
  each client's delta on its own rows).

Each client's tensors are its own Parameters in both cases (the same shapes, mixed ranks included),
so an elementwise optimiser over all of them is exactly one optimiser per client, and the dropout
masks of many clients (``ClientStreams``) line up with sequential training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rolora.federated import LayerTensors, Method
from rolora.kernels import draw_dropout_seed, lora_linear, resolve_backend
from rolora.llm.client_streams import ClientStreams
from rolora.llm.pass_masks import PassMasks

FUSED_NAMES = (frozenset({"A", "B"}), frozenset({"A", "B", "base"}))


def uses_fused_path(method: Method, names: frozenset[str], trainable: frozenset[str]) -> bool:
    """Whether the fused op computes the same as ``W0 + method.delta``: plain LoRA (+ a frozen base)."""
    return names in FUSED_NAMES and "base" not in trainable and type(method).delta is Method.delta


class FederatedLinear(nn.Module):
    """y = x (W0 + delta)ᵀ + b, with W0, b the wrapped layer's own frozen Parameters.

    delta is one loaded client's, or, while ``clients`` is set, each row's own client's.

    Args:
        linear: the layer to wrap; its weight and bias are shared (and frozen), not copied.
        name: the layer's fully-qualified name in the model (used in error messages).
        dropout: LoRA dropout on the adapter path's input (training mode only).
        backend: "auto" | "torch" | "triton", passed to ``lora_linear``.
        adapter_dtype: the dtype client tensors are stored in (fp32 by default, as PEFT does).

    Without loaded tensors (and no ``clients``) the layer is the frozen linear itself.
    """

    def __init__(self, linear: nn.Linear, name: str = "", *, dropout: float = 0.0, backend: str = "auto",
                 adapter_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"{name or 'layer'}: FederatedLinear wraps an nn.Linear, got {type(linear).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        resolve_backend(backend, linear.weight.device)  # validates the name now, not at the first forward
        if not adapter_dtype.is_floating_point:
            raise ValueError(f"adapter_dtype must be floating point, got {adapter_dtype}")
        self.name, self.dropout, self.backend, self.adapter_dtype = name, dropout, backend, adapter_dtype
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight.requires_grad_(False)  # the same Parameter object: shared storage
        self.register_parameter("bias", None if linear.bias is None else linear.bias.requires_grad_(False))
        self.tensors = nn.ParameterDict()
        self.register_buffer("merged_weight", None, persistent=False)  # W0 + base, when base is loaded
        self.method: Method | None = None
        self.alpha: float | None = None
        self.fused = False
        self.clients: ClientAdapters | None = None
        """Many clients' tensors, set while they train in one pass (``rolora.llm.adapters.rows_forward``)."""

    # ----------------------------------------------------------------------------- loading
    def check(self, tensors: LayerTensors, trainable: frozenset[str], method: Method, alpha: float) -> None:
        """Raise a ValueError naming this layer, the tensor and its shape if ``tensors`` cannot be loaded."""
        where = f"layer {self.name!r} ({self.out_features}×{self.in_features})"
        if not tensors:
            raise ValueError(f"{where}: no tensors")
        for key, t in tensors.items():
            if not isinstance(key, str) or not key or "." in key:
                raise ValueError(f"{where}: tensor names must be non-empty strings without '.', got {key!r}")
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise ValueError(f"{where}: tensor {key!r} must be a floating-point torch.Tensor, got "
                                 f"{getattr(t, 'dtype', type(t).__name__)}")
        unknown = sorted(set(trainable) - set(tensors))
        if unknown:
            raise ValueError(f"{where}: trainable tensors {unknown} are not among its tensors {sorted(tensors)}")
        d, n = self.out_features, self.in_features
        if "A" in tensors and "B" in tensors:
            a, b = tensors["A"], tensors["B"]
            if a.dim() != 2 or a.shape[1] != n or a.shape[0] < 1:
                raise ValueError(f"{where}: A must be r×{n}, got {tuple(a.shape)}")
            if tuple(b.shape) != (d, a.shape[0]):
                raise ValueError(f"{where}: B must be {d}×r = {d}×{a.shape[0]} (r from A), got {tuple(b.shape)}")
        for key in ("base", "W"):
            if key in tensors and tuple(tensors[key].shape) != (d, n):
                raise ValueError(f"{where}: {key} must be {d}×{n}, got {tuple(tensors[key].shape)}")
        if uses_fused_path(method, frozenset(tensors), frozenset(trainable)):
            return  # plain LoRA (+ base): the shapes above are all there is to check
        try:  # any other tensor set: the method itself says whether it can use them
            with torch.no_grad():
                shape = tuple(method.delta(dict(tensors), alpha).shape)
        except Exception as err:  # a method-specific tensor missing or misshapen
            raise ValueError(f"{where}: {method.name} cannot compute the layer's delta from tensors "
                             f"{ {k: tuple(v.shape) for k, v in tensors.items()} }: {err}") from None
        if shape != (d, n):
            raise ValueError(f"{where}: {method.name}'s delta from these tensors is {shape}, not {d}×{n}")

    def load(self, tensors: LayerTensors, trainable: frozenset[str], method: Method, alpha: float) -> list[nn.Parameter]:
        """Hold copies of ``tensors`` as fresh Parameters; return those that train (in ``trainable``)."""
        self.check(tensors, trainable, method, alpha)
        return self.install(tensors, trainable, method, alpha)

    def install(self, tensors: LayerTensors, trainable: frozenset[str], method: Method, alpha: float) -> list[nn.Parameter]:
        """:meth:`load` without the check (for callers that checked every layer first)."""
        w = self.weight
        params = {k: nn.Parameter(t.detach().to(device=w.device, dtype=self.adapter_dtype, copy=True),
                                  requires_grad=k in trainable) for k, t in tensors.items()}
        self.tensors = nn.ParameterDict(params)
        self.method, self.alpha = method, float(alpha)
        self.fused = uses_fused_path(method, frozenset(params), frozenset(trainable))
        base = params.get("base") if self.fused else None
        self.merged_weight = None if base is None else (w.detach() + base.detach().to(w.dtype))
        return [p for p in params.values() if p.requires_grad]

    def clear(self) -> None:
        """Drop the client's tensors: the layer is the frozen linear again."""
        self.tensors = nn.ParameterDict()
        self.merged_weight, self.method, self.alpha, self.fused = None, None, None, False

    def read(self) -> LayerTensors:
        """Detached clones of the loaded tensors."""
        if not self.tensors:
            raise ValueError(f"layer {self.name!r} holds no tensors (load_tensors first)")
        return {k: p.detach().clone() for k, p in self.tensors.items()}

    # ----------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        if self.clients is not None:
            return self.clients.forward(self, x)
        if not self.tensors:
            return F.linear(x, self.weight, self.bias)
        if not self.fused:
            return self.reference_forward(x)
        p = self.dropout if self.training else 0.0
        # Drawn from torch's RNG like nn.Dropout's mask (reproducible under torch.manual_seed); only
        # training calls with dropout consume it.
        seed = draw_dropout_seed() if p > 0.0 else 0
        a, b = self.tensors["A"], self.tensors["B"]
        w = self.weight if self.merged_weight is None else self.merged_weight
        return lora_linear(x, w, self.bias, a, b, self.alpha / a.shape[0], p, seed, self.backend)

    def reference_forward(self, x: Tensor) -> Tensor:
        """F.linear(x, W0 + delta, b) for any method's tensors (dropout, if any, on the delta's input)."""
        delta = self.method.delta(dict(self.tensors), self.alpha).to(self.weight.dtype)
        p = self.dropout if self.training else 0.0
        if p == 0.0:
            return F.linear(x, self.weight + delta, self.bias)
        return F.linear(x, self.weight, self.bias) + F.linear(F.dropout(x, p, training=True), delta)

    def extra_repr(self) -> str:
        ranks = f", r={self.tensors['A'].shape[0]}" if "A" in self.tensors else ""
        return (f"{self.name!r}, in_features={self.in_features}, out_features={self.out_features}, "
                f"tensors={sorted(self.tensors)}{ranks}, dropout={self.dropout}, fused={self.fused}")


# --------------------------------------------------------------------------------- many clients
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
    packed: list[tuple[int, int, int]] | None = None
    """Unpadded blocks (``llm/unpadded_blocks.py``): the same clients' segments over the pass's real
    tokens packed as [tokens, features]; read for two-dimensional inputs (rows' inputs have three)."""
    slot: Tensor | None = None
    """Gathered mode (a compiled pass, ``llm/compiled_step.py``): each row's client slot [rows], read
    instead of ``segments``; layers then gather their clients' tensors per row."""

    _scales: dict = field(default_factory=dict, repr=False)

    def of_input(self, x: Tensor) -> list[tuple[int, int, int]]:
        """The segments of ``x``'s leading dimension: packed tokens ([tokens, in]) or rows."""
        return self.packed if self.packed is not None and x.dim() == 2 else self.segments

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
    """One adapted layer's tensors for every client slot, and its row-wise forward.

    The same checks, computation and dropout as :class:`FederatedLinear` picks for one client.
    """

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
        if self.rows.slot is not None:
            return self._gathered_forward(module, x, p)
        if not self.fused:
            return self._delta_forward(module, x, p)
        y = F.linear(x, module.weight if self.merged is None else self.merged, module.bias)
        xd = self.streams.lora(x, p, module.backend) if p > 0.0 else x
        terms = [self._stacked_lora(xd, group) for group in self._stacks(self.rows.of_input(x), xd.dtype)]
        # into the base output (not saved for backward): no third [rows, .., out] tensor
        return y.add_(terms[0] if len(terms) == 1 else torch.cat(terms))

    def _stacks(self, segments: list[tuple[int, int, int]], dtype: torch.dtype) -> list[list[tuple[int, int, int]]]:
        """Consecutive client segments, cut so each group's ranks add up to at most the dtype's
        ``STACKED_RANK``."""
        limit = STACKED_RANK.get(dtype, STACKED_RANK_DEFAULT)
        groups, total = [[]], 0
        for seg in segments:
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

    def _gathered_forward(self, module: FederatedLinear, x: Tensor, p: float) -> Tensor:
        """The same terms with each row's client's tensors gathered by ``rows.slot`` (no Python
        value depends on the pass's clients: what a compiled graph needs). LoRA: factors zero-padded
        to the largest rank (exact zeros), scale alpha/r_k per row; other methods: each client's
        full delta, gathered per row (rows × out × in values: the reference path's cost)."""
        slot, lead, k = self.rows.slot, x.shape[:-1], x.shape[-1]
        if not self.fused:
            y = F.linear(x, module.weight, module.bias)
            xd = self.streams.tokens(x, p) if p > 0.0 else x
            deltas = torch.stack([self.method.delta(dict(one), self.alpha).to(module.weight.dtype)
                                  for one in self.params])
            return y + per_row(xd, deltas.index_select(0, slot))
        y = F.linear(x, module.weight if self.merged is None else self.merged, module.bias)
        xd = self.streams.lora(x, p, module.backend) if p > 0.0 else x
        ranks = [one["A"].shape[0] for one in self.params]
        top = max(ranks)
        a = torch.stack([F.pad(one["A"], (0, 0, 0, top - r)) for one, r in zip(self.params, ranks)]).to(x.dtype)
        b = torch.stack([F.pad(one["B"], (0, top - r)) for one, r in zip(self.params, ranks)]).to(x.dtype)
        scale = torch.tensor([self.alpha / r for r in ranks], dtype=x.dtype, device=x.device)  # made on the device
        h = per_row(xd, a.index_select(0, slot)) * scale.index_select(0, slot).view(-1, *[1] * (x.dim() - 1))
        return y + per_row(h, b.index_select(0, slot))

    def _delta_forward(self, module: FederatedLinear, x: Tensor, p: float) -> Tensor:
        """``FederatedLinear.reference_forward`` per client, on its own rows."""
        deltas = [(a, b, self.method.delta(dict(self.params[slot]), self.alpha).to(module.weight.dtype))
                  for slot, a, b in self.rows.of_input(x)]
        if p == 0.0:
            return torch.cat([F.linear(x[a:b], module.weight + d, module.bias) for a, b, d in deltas])
        xd = self.streams.tokens(x, p)
        return F.linear(x, module.weight, module.bias) + torch.cat([F.linear(xd[a:b], d) for a, b, d in deltas])


def per_row(x: Tensor, w: Tensor) -> Tensor:
    """Row i of ``x`` [rows, ..., in] times ``w[i]ᵀ`` (``w``: [rows, out, in]) -> [rows, ..., out]."""
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    return torch.bmm(flat, w.transpose(1, 2)).reshape(*x.shape[:-1], w.shape[1])


def tensor_bytes(tensors) -> int:
    """Bytes held by an iterable of tensors."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
