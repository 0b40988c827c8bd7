"""Helpers for the kernel tests: the float64 reference, seeded problems, relative error, NaN poisoning,
and the device each backend's tests run on.

Device: tests that pass ``backend="triton"`` run on CUDA tensors where a GPU exists (the kernels
compiled) and on CPU tensors elsewhere (conftest.py turns Triton's interpreter on there), so the same
test checks the kernels on both machines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from rolora.kernels.phase import LoRAPhase

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
