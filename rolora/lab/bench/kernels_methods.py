"""What ``rolora bench kernels`` measures: the methods on one shared problem, and their correctness.

    floor        raw cuBLAS x W0ᵀ and dY W0: no autograd, no bias (the targets' denominator)
    frozen       nn.Linear with W0 frozen, x requiring grad (autograd's floor)
    peft         PEFT's LoRA ``Linear`` layer called directly (no PeftModel wrapper)
    peft-B       the same with lora_A frozen: the fair comparator of our B-only phase
    addmm        cuBLAS addmm_ LoRA with a hand-written backward (Unsloth style)
    full, B, A   ours in each RoLoRA phase, backend "auto" (Triton, or cuBLAS at M ≤ CUBLAS_MAX_M):
                 the layer training runs on (``rolora.llm.adapter_layer.FederatedLinear``, plain LoRA)
    full@triton, B@triton, full@torch, B@torch   ours with the backend forced (the small-M rule's data)

Correctness: the worst relative error of y, dx and the trained factors' gradients against fp32
products of the definitions on the same inputs (and the same dropout mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rolora.kernels.phase import LoRAPhase

METHODS = ["floor", "frozen", "peft", "peft-B", "addmm", "full", "B", "A",
           "full@triton", "B@triton", "full@torch", "B@torch"]
BASELINES = ["floor", "frozen", "addmm"]  # dropout-free methods, measured at p = 0 only


@dataclass
class Weights:
    """The shared problem: frozen W0 (no bias, as Llama), adapters with B non-zero, scale 2."""

    w: Tensor
    a: Tensor
    b: Tensor
    scale: float = 2.0


def make_weights(k: int, n: int, r: int, dtype: torch.dtype, device: str) -> Weights:
    gen = torch.Generator(device=device).manual_seed(0)
    randn = lambda *s: torch.randn(*s, generator=gen, device=device)  # noqa: E731
    return Weights(w=(randn(n, k) * k ** -0.5).to(dtype), a=(randn(r, k) * k ** -0.5).to(dtype),
                   b=(randn(n, r) * r ** -0.5).to(dtype), scale=2.0)


class RawFloor(nn.Module):
    """The floor: x W0ᵀ forward and dY W0 backward as bare cuBLAS products (no autograd, no bias)."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.w.t()

    def backward(self, grad_y: Tensor) -> Tensor:
        return grad_y @ self.w


def build(method: str, wt: Weights, p: float, adapter_dtype: torch.dtype | None = None) -> nn.Module:
    """The module for ``method`` on the shared weights (copies: methods never share gradients)."""
    from rolora.federated import get_method
    from rolora.kernels.addmm_lora import AddmmLoRALinear
    from rolora.llm.adapter_layer import FederatedLinear

    n, k = wt.w.shape
    r = wt.a.shape[0]
    dtype, device = wt.w.dtype, wt.w.device
    if method == "floor":
        return RawFloor(wt.w)
    if method == "frozen":
        layer = nn.Linear(k, n, bias=False, device=device, dtype=dtype)
        layer.weight.data.copy_(wt.w)
        return layer.requires_grad_(False)
    if method in ("peft", "peft-B"):
        import peft

        holder = nn.Sequential()
        holder.add_module("fc", nn.Linear(k, n, bias=False, device=device, dtype=dtype))
        cfg = peft.LoraConfig(r=r, lora_alpha=wt.scale * r, target_modules=["fc"], lora_dropout=p)
        model = peft.get_peft_model(holder, cfg, autocast_adapter_dtype=False)
        fc = model.base_model.model.fc  # PEFT's LoRA Linear layer itself, called directly
        with torch.no_grad():
            fc.base_layer.weight.copy_(wt.w)
            fc.lora_A["default"].weight.copy_(wt.a)
            fc.lora_B["default"].weight.copy_(wt.b)
        fc.lora_A["default"].weight.requires_grad_(method == "peft")
        return fc.train()
    if method == "addmm":
        return AddmmLoRALinear(wt.w, None, wt.a.clone(), wt.b.clone(), scale=wt.scale)
    phase, _, backend = method.partition("@")
    frozen = nn.Linear(k, n, bias=False, device="meta")  # no init: W0 is the shared (frozen) wt.w
    frozen.weight = nn.Parameter(wt.w, requires_grad=False)
    layer = FederatedLinear(frozen, method, dropout=p, backend=backend or "auto",
                            adapter_dtype=adapter_dtype or dtype)
    trains = {LoRAPhase.FULL: {"A", "B"}, LoRAPhase.B_ONLY: {"B"}, LoRAPhase.A_ONLY: {"A"}}[LoRAPhase(phase)]
    layer.load({"A": wt.a, "B": wt.b}, frozenset(trains), get_method("fedavg-lora"),
               alpha=wt.scale * r)  # plain LoRA: the fused path
    return layer.train()


def is_lora(method: str) -> bool:
    return method not in ("floor", "frozen")


def phase_of_method(method: str) -> LoRAPhase:
    """Our phase of a method name (PEFT's comparators: "peft" full, "peft-B" B-only; addmm full)."""
    if method in ("peft", "peft-B", "addmm"):
        return LoRAPhase.B_ONLY if method == "peft-B" else LoRAPhase.FULL
    return LoRAPhase(method.partition("@")[0])


def saved_bytes(module: nn.Module, x: Tensor) -> int:
    """Bytes autograd saves in one forward, parameters (and views of them) excluded."""
    if isinstance(module, RawFloor):
        return 0
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        if t.untyped_storage().data_ptr() not in params:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return total


def _rel(out: Tensor, ref: Tensor) -> float:
    out64, ref64 = out.detach().double(), ref.detach().double()
    return ((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30)).item()


def max_rel_err(method: str, wt: Weights, p: float, x: Tensor, gy: Tensor,
                adapter_dtype: torch.dtype | None) -> float:
    """Worst ‖out − ref‖/‖ref‖ over y, dx and the trained factors' gradients, against fp32 products.

    Ours run through ``lora_linear`` with a known seed and the reference applies the mask that
    ``dropout_keep_mask`` reports for the path taken; PEFT and addmm are checked at p = 0 only
    (PEFT draws its mask from the global RNG) and report NaN at p > 0.
    """
    from rolora.kernels.op import choose_backend, dropout_keep_mask, lora_linear

    if p > 0.0 and not is_ours(method):
        return float("nan")
    x = x.detach().clone().requires_grad_()
    keep = None
    if is_ours(method):
        layer = build(method, wt, p, adapter_dtype)
        backend, seed = method.partition("@")[2] or "auto", 1234
        factor_a, factor_b = layer.tensors["A"], layer.tensors["B"]
        y = lora_linear(x, layer.weight, None, factor_a, factor_b, wt.scale, p, seed, backend)
        if p > 0.0:
            path = choose_backend(backend, x.device, x.shape[0], factor_a.shape[0], None, p)
            keep = dropout_keep_mask(seed, x.shape[0], x.shape[1], p, x.device, path)
    else:
        module = build(method, wt, 0.0, adapter_dtype)
        y = module(x)
        factor_a, factor_b = _factors(module)
    y.backward(gy)
    ref = _reference(wt, x.detach(), gy, keep, p)
    errs = [_rel(y, ref["y"]), _rel(x.grad, ref["dx"])]
    phase = phase_of_method(method)
    if phase.trains_a:
        errs.append(_rel(factor_a.grad, ref["dA"]))
    if phase.trains_b:
        errs.append(_rel(factor_b.grad, ref["dB"]))
    return max(errs)


def is_ours(method: str) -> bool:
    return method.partition("@")[0] in ("full", "B", "A")


def _factors(module: nn.Module) -> tuple[Tensor, Tensor]:
    if hasattr(module, "lora_A") and isinstance(module.lora_A, Tensor):
        return module.lora_A, module.lora_B
    return module.lora_A["default"].weight, module.lora_B["default"].weight


def _reference(wt: Weights, x: Tensor, gy: Tensor, keep: Tensor | None, p: float) -> dict[str, Tensor]:
    """y, dx, dA, dB in fp32 from the definitions (x̂ = x ⊙ keep / (1 − p))."""
    f = lambda t: t.float()  # noqa: E731
    w, a, b, s = f(wt.w), f(wt.a), f(wt.b), wt.scale
    x32, g32 = f(x), f(gy)
    mask = None if keep is None else keep.float() / (1.0 - p)
    xh = x32 if mask is None else x32 * mask
    sm = xh @ a.t()
    ds = (g32 @ b) * s
    lora_dx = ds @ a
    return {"y": x32 @ w.t() + s * sm @ b.t(),
            "dx": g32 @ w + (lora_dx if mask is None else lora_dx * mask),
            "dA": ds.t() @ xh, "dB": s * g32.t() @ sm}
