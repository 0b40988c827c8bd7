"""The LoRA linear in plain PyTorch (cuBLAS on a GPU): the CPU path, the fallback, the small-M path.

Notation (shared with ``triton_kernels.py``): x is M×K, the frozen W0 is N×K (``nn.Linear`` layout),
A (``lora_A``) is r×K, B (``lora_B``) is N×r, s = alpha/r, x̂ = dropout(x), S = x̂ Aᵀ (M×r).

    forward   y  = x W0ᵀ (+ bias) + s · S Bᵀ
    backward  dS = s · dY B          dB = s · dYᵀ S        dA = dSᵀ x̂
              dx = dY W0 + (dS A) ⊙ keep / (1 − p)

``torch_lora_forward`` / ``torch_lora_backward`` run on CPU, wherever Triton is missing, and on CUDA
for small M (cuBLAS products and one ``addmm_`` into the output buffer beat the Triton GEMMs there).
Same maths and the same save/compute economy per RoLoRA phase as the kernels. The slow,
obviously-correct float64 reference that both are tested against lives with the tests
(``tests/kernel_helpers.py``).

Dtypes: activations (x, W0, bias, dY) share one compute dtype; the adapters A, B may be in another
(fp32 adapters with half activations under autocast) and are cast to the compute dtype at use; each
gradient comes back in the dtype of the tensor it belongs to.

Dropout: the keep-mask is never stored. It is regenerated from ``seed`` by ``torch_dropout_keep_mask``
(a ``torch.Generator`` seeded per call) in forward and backward. The Triton path draws its mask with
``tl.rand`` from the same seed; the two paths give the same *function* (Bernoulli(1 − p) keep,
scale 1/(1 − p)) but not the same bits.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor


def torch_dropout_keep_mask(seed: int, rows: int, cols: int, p: float, device: torch.device) -> Tensor:
    """Keep-mask (bool, rows×cols) of the PyTorch path for ``seed``: True with probability 1 − p.

    A private generator re-seeded per call, so forward and backward regenerate identical masks; this
    function never touches the global RNG (``draw_dropout_seed`` draws the per-call *seed* from it). One
    generator per device and thread is kept: creating one costs more CPU time than the small-M call.
    """
    key = (str(device), threading.get_ident())
    gen = _GENERATORS.get(key)
    if gen is None:
        gen = _GENERATORS[key] = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return torch.rand((rows, cols), generator=gen, device=device, dtype=torch.float32) >= p


_GENERATORS: dict[tuple[str, int], torch.Generator] = {}


def torch_lora_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    lora_A: Tensor,
    lora_B: Tensor,
    scale: float,
    dropout_p: float,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """PyTorch path forward on a 2-D x (M×K): returns (y M×N, S = x̂ Aᵀ M×r), both in x's dtype."""
    cdt = x.dtype
    xh = x
    if dropout_p > 0.0:
        keep = torch_dropout_keep_mask(seed, x.shape[0], x.shape[1], dropout_p, x.device)
        xh = x * keep.to(cdt) / (1.0 - dropout_p)
    s = xh @ lora_A.to(cdt).t()
    y = torch.nn.functional.linear(x, weight, bias.to(cdt) if bias is not None else None)
    # One output buffer: y += s · S Bᵀ (addmm_ accumulates without another M×N temporary).
    y.addmm_(s, lora_B.to(cdt).t(), alpha=scale)
    return y, s


def torch_lora_backward(
    grad_y: Tensor,
    x: Tensor | None,
    weight: Tensor,
    lora_A: Tensor,
    lora_B: Tensor,
    s: Tensor | None,
    scale: float,
    dropout_p: float,
    seed: int,
    need_dx: bool,
    need_dA: bool,
    need_dB: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """PyTorch path backward on 2-D tensors: (dx, dA, dB), each None when not asked for.

    ``x`` is needed only for dA and ``s`` only for dB (that is what makes the RoLoRA phases cheaper).
    """
    cdt = grad_y.dtype
    dx = da = db = None
    keep = None
    if dropout_p > 0.0 and (need_dx or need_dA):
        keep = torch_dropout_keep_mask(seed, grad_y.shape[0], weight.shape[1], dropout_p, grad_y.device)
    if need_dB:
        assert s is not None, "dB needs the saved S"
        db = (grad_y.t() @ s.to(cdt)).mul_(scale).to(lora_B.dtype)
    if need_dx or need_dA:
        ds = (grad_y @ lora_B.to(cdt)).mul_(scale)
        if need_dA:
            assert x is not None, "dA needs the saved x"
            xh = x if keep is None else x * keep.to(cdt) / (1.0 - dropout_p)
            da = (ds.t() @ xh).to(lora_A.dtype)
        if need_dx:
            dx = grad_y @ weight
            if keep is None:
                dx.addmm_(ds, lora_A.to(cdt))  # into the same buffer: no M×K temporary
            else:
                dx.add_((ds @ lora_A.to(cdt)).mul_(keep.to(cdt)), alpha=1.0 / (1.0 - dropout_p))
    return dx, da, db
