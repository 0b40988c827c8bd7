"""``FederatedLinear``: a frozen ``nn.Linear`` (storage shared, never copied) plus one client's tensors.

The wrapped layer's ``weight`` and ``bias`` Parameters are re-registered here as they are, so the
model's frozen base stays where it was and every simulated client runs on the same storage. What a
client trains is a :data:`rolora.federated.LayerTensors` dict loaded with :meth:`FederatedLinear.load`;
its ranks and tensor names are whatever that client has (nothing is fixed at construction).

Two forwards, with the same result:

- fused: tensors ``{"A", "B"}`` (plus an untrained ``"base"``) of a method with the default
  ``delta`` go through ``rolora.kernels.lora_linear`` on W0 (or on W0 + base, materialised once per
  load). Which of A/B require grad sets the kernel's phase: a B-only round keeps no M×K activation.
- reference: any other tensors (full-rank ``"W"``, Fed-ALoRA, ...) give
  ``F.linear(x, W0 + method.delta(tensors, alpha), bias)``: slow, obviously correct.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rolora.federated import LayerTensors, Method
from rolora.kernels import lora_linear, resolve_backend

FUSED_NAMES = (frozenset({"A", "B"}), frozenset({"A", "B", "base"}))


def uses_fused_path(method: Method, names: frozenset[str], trainable: frozenset[str]) -> bool:
    """Whether the fused op computes the same as ``W0 + method.delta``: plain LoRA (+ a frozen base)."""
    return names in FUSED_NAMES and "base" not in trainable and type(method).delta is Method.delta


class FederatedLinear(nn.Module):
    """y = x (W0 + delta)ᵀ + b, with W0, b the wrapped layer's own frozen Parameters.

    Args:
        linear: the layer to wrap; its weight and bias are shared (and frozen), not copied.
        name: the layer's fully-qualified name in the model (used in error messages).
        dropout: LoRA dropout on the adapter path's input (training mode only).
        backend: "auto" | "torch" | "triton", passed to ``lora_linear``.
        adapter_dtype: the dtype client tensors are stored in (fp32 by default, as PEFT does).

    Without loaded tensors the layer is the frozen linear itself.
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
        self.row_forward = None
        """Set while many clients train in one pass (``rolora.llm.client_layers.rows_forward``)."""

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
        if self.row_forward is not None:
            return self.row_forward(self, x)
        if not self.tensors:
            return F.linear(x, self.weight, self.bias)
        if not self.fused:
            return self.reference_forward(x)
        p = self.dropout if self.training else 0.0
        # Drawn from torch's RNG like nn.Dropout's mask (reproducible under torch.manual_seed).
        seed = torch.randint(0, 2**31 - 1, (), dtype=torch.int64) if p > 0.0 else 0
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


def tensor_bytes(tensors) -> int:
    """Bytes held by an iterable of tensors."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
