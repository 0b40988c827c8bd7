"""Helpers for the kernel tests: the float64 reference, seeded problems, relative error, NaN poisoning,
the device each backend's tests run on, and ``LoRALinear``: the op inside a module.

``LoRALinear`` is test-side on purpose: the library's only layer is
``rolora.llm.adapter_layer.FederatedLinear`` (federated tensors, methods); the kernel tests need just
the op with PEFT's parameter names around it (phases, compile, checkpoint, PEFT parity). Like the
library's layer it draws each training call's dropout seed with ``rolora.kernels.draw_dropout_seed``.

Device: tests that pass ``backend="triton"`` run on CUDA tensors where a GPU exists (the kernels
compiled) and on CPU tensors elsewhere (conftest.py turns Triton's interpreter on there), so the same
test checks the kernels on both machines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rolora.kernels import draw_dropout_seed, lora_linear
from rolora.kernels.phase import LoRAPhase, phase_of

HAS_CUDA = torch.cuda.is_available()
TRITON_DEVICE = "cuda" if HAS_CUDA else "cpu"


def device_for(backend: str) -> str:
    """Where a test of ``backend`` runs: Triton on the GPU if there is one, else in the interpreter."""
    return TRITON_DEVICE if backend == "triton" else "cpu"


def lora_linear_float64(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    lora_A: Tensor,
    lora_B: Tensor,
    scale: float,
    keep_mask: Tensor | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """Reference y = x W0ᵀ + b + s·(x ⊙ keep/(1−p)) Aᵀ Bᵀ in float64 (differentiable by autograd).

    ``x`` may have any leading dimensions; ``keep_mask`` (if given) has x's shape flattened to 2-D
    (M×K). Returns float64 with x's leading shape.
    """
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).double()
    xh = x2
    if keep_mask is not None:
        xh = x2 * keep_mask.double() / (1.0 - dropout_p)
    y = x2 @ weight.double().t() + scale * (xh @ lora_A.double().t()) @ lora_B.double().t()
    if bias is not None:
        y = y + bias.double()
    return y.reshape(*lead, weight.shape[0])


def rel_err(out: Tensor, ref: Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 on the CPU (NaN anywhere in ``out`` gives NaN)."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    denom = ref64.norm().item()
    return (out64 - ref64).norm().item() / (denom if denom > 0 else 1.0)


@contextlib.contextmanager
def poisoned_allocations() -> Iterator[None]:
    """Fill every ``torch.empty`` with NaN meanwhile, so an element a kernel forgets to write shows."""
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.use_deterministic_algorithms(det, warn_only=warn)


@dataclass
class Problem:
    """One LoRA linear problem: input, frozen weights, adapters, upstream gradient."""

    x: Tensor
    weight: Tensor
    bias: Tensor | None
    lora_A: Tensor
    lora_B: Tensor
    grad_y: Tensor
    scale: float


def make_problem(lead: tuple[int, ...], k: int, n: int, r: int, dtype: torch.dtype, seed: int = 0,
                 adapter_dtype: torch.dtype | None = None, bias: bool = True,
                 non_contiguous: bool = False, device: str | torch.device = "cpu") -> Problem:
    """A seeded problem with x of shape (*lead, k); B is non-zero so the LoRA path is exercised.

    ``non_contiguous`` makes x a strided view (every other column of a wider tensor).
    """
    gen = torch.Generator().manual_seed(seed)
    adt = adapter_dtype or dtype

    def rand(*shape: int, std: float = 1.0, dt: torch.dtype = dtype) -> Tensor:
        return (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dt)

    if non_contiguous:
        x = rand(*lead, 2 * k)[..., ::2]
    else:
        x = rand(*lead, k)
    m_out = (*lead, n)
    return Problem(
        x=x,
        weight=rand(n, k, std=k ** -0.5),
        bias=rand(n, std=0.1) if bias else None,
        lora_A=rand(r, k, std=k ** -0.5, dt=adt),
        lora_B=rand(n, r, std=r ** -0.5, dt=adt),
        grad_y=rand(*m_out),
        scale=2.0 / r,
    )


def _leaves(pb: Problem, phase: str, x_grad: bool, dtype: torch.dtype | None = None):
    a_grad, b_grad = LoRAPhase(phase).trains_a, LoRAPhase(phase).trains_b

    def leaf(t: Tensor, grad: bool) -> Tensor:
        t = t.detach() if dtype is None else t.detach().to(dtype)
        return t.requires_grad_(grad)

    return leaf(pb.x, x_grad), leaf(pb.lora_A, a_grad), leaf(pb.lora_B, b_grad)


def run_ours(pb: Problem, phase: str, dropout_p: float = 0.0, seed: int = 0, backend: str = "torch",
             x_grad: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Forward and backward of ``lora_linear`` in ``phase``: (y, dx, dA, dB), grads None if frozen."""
    from rolora.kernels.op import lora_linear

    x, a, b = _leaves(pb, phase, x_grad)
    y = lora_linear(x, pb.weight, pb.bias, a, b, pb.scale, dropout_p, seed, backend)
    if y.requires_grad:
        y.backward(pb.grad_y)
    return y.detach(), x.grad, a.grad, b.grad


def run_float64(pb: Problem, phase: str, keep: Tensor | None = None, dropout_p: float = 0.0,
                x_grad: bool = True) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """The same through ``lora_linear_float64`` with autograd in float64 and an explicit keep-mask."""
    x, a, b = _leaves(pb, phase, x_grad, torch.float64)
    y = lora_linear_float64(x, pb.weight, pb.bias, a, b, pb.scale, keep, dropout_p)
    if y.requires_grad:
        y.backward(pb.grad_y.double())
    return y.detach(), x.grad, a.grad, b.grad


class LoRALinear(nn.Module):
    """y = x W0ᵀ + b + (alpha/r) · dropout(x) Aᵀ Bᵀ through ``lora_linear``, W0 and b frozen.

    PEFT's names and shapes: ``weight`` out×in, ``bias``, ``lora_A`` r×in, ``lora_B`` out×r (zero, so
    the layer starts as the frozen one). ``seed`` seeds W0 and A; dropout follows torch's RNG.
    """

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float = 0.0,
                 bias: bool = True, backend: str = "auto", seed: int = 0,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter((torch.randn(out_features, in_features, generator=gen)
                                    * in_features ** -0.5).to(device), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_features, device=device), requires_grad=False) if bias else None
        self.lora_A = nn.Parameter((torch.randn(r, in_features, generator=gen) * in_features ** -0.5).to(device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=device))
        self.r, self.alpha, self.dropout, self.backend, self.seed = r, alpha, dropout, backend, seed

    @classmethod
    def from_linear(cls, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
                    backend: str = "auto") -> LoRALinear:
        """Around ``linear``: its weight and bias become W0 and b (shared, frozen); fp32 adapters."""
        layer = cls(linear.in_features, linear.out_features, r, alpha, dropout, linear.bias is not None,
                    backend, device=linear.weight.device)
        layer.weight = linear.weight.requires_grad_(False)
        if linear.bias is not None:
            layer.bias = linear.bias.requires_grad_(False)
        return layer

    @property
    def phase(self) -> LoRAPhase:
        return phase_of(self.lora_A, self.lora_B)

    def set_phase(self, phase: LoRAPhase | str) -> None:
        phase = LoRAPhase(phase)
        self.lora_A.requires_grad_(phase.trains_a)
        self.lora_B.requires_grad_(phase.trains_b)

    def forward(self, x: Tensor) -> Tensor:
        p = self.dropout if self.training else 0.0
        seed = draw_dropout_seed() if p > 0.0 else 0  # eval and p = 0 leave torch's RNG untouched
        return lora_linear(x, self.weight, self.bias, self.lora_A, self.lora_B, self.alpha / self.r, p, seed,
                           self.backend)


def inject_lora(model: nn.Module, targets: list[str], r: int, alpha: float, dropout: float = 0.0,
                backend: str = "auto") -> list[str]:
    """PEFT's ``get_peft_model`` with ours: every parameter frozen, each ``nn.Linear`` named a target
    (or ending in ``"." + target``) replaced by a ``LoRALinear`` around it. Returns the names."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and any(n == t or n.endswith("." + t) for t in targets)]
    assert names, f"no nn.Linear matches {targets}"
    model.requires_grad_(False)
    for name in names:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, LoRALinear.from_linear(getattr(holder, child), r, alpha, dropout, backend))
    return names


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def set_phase(model: nn.Module, phase: LoRAPhase | str) -> None:
    for layer in lora_modules(model).values():
        layer.set_phase(phase)


def peft_key(path: str, factor: str) -> str:
    """PEFT's saved key (``get_peft_model_state_dict``) of factor "A" or "B" of the layer at ``path``."""
    return f"base_model.model.{path}.lora_{factor}.weight"


def peft_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's LoRA factors under PEFT's saved keys (detached clones)."""
    return {peft_key(path, f): getattr(layer, f"lora_{f}").detach().clone()
            for path, layer in lora_modules(model).items() for f in "AB"}


def load_peft_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Copy PEFT's saved factors into the model's ``LoRALinear`` layers: exactly their keys and shapes."""
    layers = lora_modules(model)
    wanted = {peft_key(path, f) for path in layers for f in "AB"}
    assert set(state_dict) == wanted, f"keys differ: {sorted(set(state_dict) ^ wanted)[:4]}"
    with torch.no_grad():
        for path, layer in layers.items():
            for f in "AB":
                param, value = getattr(layer, f"lora_{f}"), state_dict[peft_key(path, f)]
                assert value.shape == param.shape, (path, f, tuple(value.shape), tuple(param.shape))
                param.copy_(value)
