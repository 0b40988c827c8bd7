"""``LoRALinear``: a drop-in ``nn.Linear`` with a LoRA adapter on the fused op, and ``inject_lora``.

Parameters carry PEFT's names and shapes (``weight`` out×in frozen, ``bias``, ``lora_A`` r×in,
``lora_B`` out×r) and PEFT's default initialisation (A kaiming-uniform(a=√5), B zero, so the layer
starts equal to the frozen one). ``peft_compat.py`` maps state dicts to and from PEFT's keys.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rolora.kernels.op import BACKENDS, lora_linear
from rolora.kernels.phase import LoRAPhase, phase_of


def _init_seed(seed: int) -> int:
    """The seed of A's initialisation, derived from the module seed (distinct from W0's stream)."""
    return (seed * 1_000_003 - 2_654_435_761 + 12_345) % (2**31 - 1)


def draw_dropout_seed() -> torch.Tensor:
    """A fresh per-call dropout seed: a 0-d int64 tensor drawn from torch's default CPU generator.

    Drawn from torch's RNG (as ``nn.Dropout`` draws its mask) on purpose: ``torch.utils.checkpoint``
    saves and restores that state, so its re-run of the forward regenerates the same mask, and
    ``torch.compile`` sees a tensor (data) rather than a changing Python attribute (no recompiles).
    Consequence: dropout randomness follows ``torch.manual_seed``, exactly like nn.Dropout / PEFT.
    """
    return torch.randint(0, 2**31 - 1, (), dtype=torch.int64)


class LoRALinear(nn.Module):
    """y = x W0ᵀ + b + (alpha/r) · dropout(x) Aᵀ Bᵀ with W0 (and b) frozen.

    Args:
        in_features, out_features: as ``nn.Linear``.
        r: LoRA rank (≥ 1). alpha: LoRA alpha; the scale is alpha / r (PEFT's default).
        dropout: dropout probability on the LoRA path's input (training mode only).
        bias: whether the frozen layer has a bias.
        backend: "auto" | "torch" | "triton" (see ``rolora.kernels.op.lora_linear``).
        seed: seeds the initialisation of W0 (unless ``init_weight=False``) and of A. It does not
            seed dropout: each training call draws its dropout seed from torch's RNG (see
            ``draw_dropout_seed``), so masks follow ``torch.manual_seed`` like ``nn.Dropout``.
        adapter_dtype: dtype of A and B (fp32 by default, as PEFT keeps them under half base weights).
        init_weight: initialise W0 like ``nn.Linear`` (False leaves it uninitialised: the caller fills it).
        cublas_max_m: with backend "auto", calls with at most this many rows take the cuBLAS path
            (default ``rolora.kernels.op.CUBLAS_MAX_M``; 0: fused whenever LoRA dropout is on; calls
            without dropout take the cuBLAS path at every M, see ``rolora.kernels.op.choose_backend``).
    """

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float = 0.0,
                 bias: bool = True, backend: str = "auto", seed: int = 0,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 adapter_dtype: torch.dtype = torch.float32, *, init_weight: bool = True,
                 cublas_max_m: int | None = None) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r must be ≥ 1, got {r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.in_features, self.out_features = in_features, out_features
        self.r, self.alpha, self.dropout, self.backend, self.seed = r, alpha, dropout, backend, seed
        self.cublas_max_m = cublas_max_m
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype),
                                   requires_grad=False)
        self.bias = (nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype), requires_grad=False)
                     if bias else None)
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=adapter_dtype))
        self.lora_B = nn.Parameter(torch.empty(out_features, r, device=device, dtype=adapter_dtype))
        if init_weight:  # W0 initialised as nn.Linear does (from_linear skips this and shares instead)
            gen = torch.Generator().manual_seed(seed)
            w = torch.empty(out_features, in_features)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
            with torch.no_grad():
                self.weight.copy_(w)
        self.reset_lora_parameters()

    @property
    def scale(self) -> float:
        """s = alpha / r."""
        return self.alpha / self.r

    def reset_lora_parameters(self) -> None:
        """PEFT's default init, seeded: A ~ kaiming-uniform(a=√5), B = 0."""
        gen = torch.Generator().manual_seed(_init_seed(self.seed))
        a = torch.empty(self.lora_A.shape, dtype=torch.float32)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
        with torch.no_grad():
            self.lora_A.copy_(a)
            self.lora_B.zero_()

    @classmethod
    def from_linear(cls, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                    backend: str = "auto", seed: int = 0,
                    adapter_dtype: torch.dtype = torch.float32) -> "LoRALinear":
        """Wrap an existing ``nn.Linear``: its weight and bias become the (shared, frozen) W0 and b."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, r, alpha, dropout,
                    bias=linear.bias is not None, backend=backend, seed=seed, device=w.device,
                    dtype=w.dtype, adapter_dtype=adapter_dtype, init_weight=False)
        layer.weight = linear.weight  # shared, not copied
        layer.weight.requires_grad_(False)
        if linear.bias is not None:
            layer.bias = linear.bias
            layer.bias.requires_grad_(False)
        return layer

    @property
    def phase(self) -> LoRAPhase:
        """The current phase, from which factors require grad."""
        return phase_of(self.lora_A, self.lora_B)

    def set_phase(self, phase: LoRAPhase | str) -> None:
        """Train A and B ("full"), only B ("B"), only A ("A") or neither ("frozen")."""
        phase = LoRAPhase(phase)
        self.lora_A.requires_grad_(phase.trains_a)
        self.lora_B.requires_grad_(phase.trains_b)

    def forward(self, x: Tensor) -> Tensor:
        p = self.dropout if self.training else 0.0
        # Only training calls with dropout consume torch's RNG (eval and p = 0 leave it untouched).
        seed = draw_dropout_seed() if p > 0.0 else 0
        return lora_linear(x, self.weight, self.bias, self.lora_A, self.lora_B, self.scale, p, seed,
                           self.backend, self.cublas_max_m)

    @torch.no_grad()
    def merged_weight(self) -> Tensor:
        """W0 + s·B A in W0's dtype (for export or checks; the layer itself never merges)."""
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale
        return (self.weight.float() + delta).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, "
                f"alpha={self.alpha}, dropout={self.dropout}, bias={self.bias is not None}, "
                f"backend={self.backend!r}")


def _matches(name: str, targets: list[str]) -> bool:
    """PEFT's rule: a module matches a target if its name is it or ends with '.' + it."""
    return any(name == t or name.endswith("." + t) for t in targets)


def inject_lora(model: nn.Module, target_modules: list[str], r: int, alpha: float, dropout: float = 0.0,
                backend: str = "auto", seed: int = 0, freeze_base: bool = True,
                adapter_dtype: torch.dtype = torch.float32) -> list[str]:
    """Replace every ``nn.Linear`` whose name matches ``target_modules`` by a ``LoRALinear``, in place.

    Matching follows PEFT (exact name or a '.'-suffix). With ``freeze_base`` every other parameter is
    frozen, as ``peft.get_peft_model`` does. Layer i gets seed ``seed + i`` (reproducible). Returns the
    replaced module names. Raises (leaving the model untouched) if nothing matches or a match is not
    an ``nn.Linear``.
    """
    if isinstance(target_modules, str):
        target_modules = [target_modules]
    matched = [(n, m) for n, m in model.named_modules() if n and _matches(n, list(target_modules))]
    if not matched:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"no module matches target_modules={list(target_modules)}; nn.Linear modules "
                         f"are e.g. {linears[:8]}")
    wrong = [f"{n} ({type(m).__name__})" for n, m in matched if not isinstance(m, nn.Linear)]
    if wrong:
        raise TypeError(f"target modules must be nn.Linear; these are not: {wrong}")
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    names = []
    for i, (name, linear) in enumerate(matched):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear.from_linear(linear, r, alpha, dropout, backend=backend,
                                                      seed=seed + i, adapter_dtype=adapter_dtype))
        names.append(name)
    return names


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """All ``LoRALinear`` modules of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def set_phase(model: nn.Module, phase: LoRAPhase | str) -> None:
    """Set the RoLoRA phase of every ``LoRALinear`` in ``model``."""
    for m in lora_modules(model).values():
        m.set_phase(phase)
