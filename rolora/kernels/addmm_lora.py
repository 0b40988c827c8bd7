"""A cuBLAS ``addmm_`` LoRA linear with a hand-written backward (the Unsloth style), for the benchmark.

Forward writes x W0ᵀ and then adds s·(x Aᵀ) Bᵀ into the same buffer with ``addmm_``; backward
recomputes x Aᵀ rather than saving it. No dropout, no phase economy: it always saves x and computes
dA and dB when they require grad. A peer baseline, not used by the library itself.
"""

from __future__ import annotations

import torch
from torch import Tensor


class AddmmLoRAFunction(torch.autograd.Function):
    """y = x W0ᵀ (+ bias) + s · x Aᵀ Bᵀ on 2-D x, W0 frozen."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                scale: float) -> Tensor:
        y = torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()
        y.addmm_(x @ lora_A.t(), lora_B.t(), alpha=scale)
        ctx.save_for_backward(x, weight, lora_A, lora_B)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, weight, lora_A, lora_B = ctx.saved_tensors
        s = ctx.scale
        ds = (grad_y @ lora_B).mul_(s)
        da = ds.t() @ x if ctx.needs_input_grad[3] else None
        db = (grad_y.t() @ (x @ lora_A.t())).mul_(s) if ctx.needs_input_grad[4] else None
        dx = None
        if ctx.needs_input_grad[0]:
            dx = grad_y @ weight
            dx.addmm_(ds, lora_A)
        dbias = grad_y.sum(0) if ctx.needs_input_grad[2] else None
        return dx, None, dbias, da, db, None


class AddmmLoRALinear(torch.nn.Module):
    """Module around ``AddmmLoRAFunction``: frozen ``weight``, ``bias``; ``lora_A`` r×in, ``lora_B`` out×r."""

    def __init__(self, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                 scale: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = torch.nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.lora_A, self.lora_B = torch.nn.Parameter(lora_A), torch.nn.Parameter(lora_B)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        y = AddmmLoRAFunction.apply(x.reshape(-1, x.shape[-1]), self.weight, self.bias, self.lora_A,
                                    self.lora_B, self.scale)
        return y.reshape(*x.shape[:-1], y.shape[-1])
