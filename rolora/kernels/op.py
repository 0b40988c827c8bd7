"""The fused LoRA linear as a ``torch.library`` custom op with autograd, and its checked entry point.

``lora_linear(x, W0, bias, A, B, scale, dropout_p, seed, backend)`` computes

    y = x W0ᵀ (+ bias) + scale · dropout(x) Aᵀ Bᵀ

through two custom ops, ``rolora::lora_linear_fwd`` and ``rolora::lora_linear_bwd`` (each with a fake
implementation, so ``torch.compile`` traces them), joined by ``register_autograd``. Two backends
implement the ops: ``"triton"`` (``triton_kernels.py``) and ``"torch"`` (``torch_path.py``);
``"auto"`` takes Triton for CUDA tensors when triton imports, the LoRA dropout is on and M is above
``CUBLAS_MAX_M``, else torch (cuBLAS on a GPU): measured on an H100 (BENCHMARKS.md, 2026-11-26), the
cuBLAS path was faster in device time in every p = 0 case (our Triton GEMMs reach η = 0.66–0.93 of
cuBLAS), the fused kernels in most p > 0 cases (torch's dropout costs extra M×K passes). Eager calls go through a plain ``autograd.Function`` (less CPU time per
call); under ``torch.compile`` the custom ops are used, so the graph keeps them as single nodes.

What is saved and computed follows the RoLoRA phase, read from ``requires_grad`` at call time:

    phase     trains   saves (besides W0, A, B)   backward computes
    full      A, B     x (M×K), S (M×r)           dS, dB, dA, dx
    B-only    B        S (M×r)                    dS, dB, dx        (no x kept: dA is not needed)
    A-only    A        x (M×K)                    dS, dA, dx        (no S kept, no dB reduction)

dx is computed only if x requires grad; W0 never gets a gradient (asking for one is an error).
"""

from __future__ import annotations

import functools
import importlib.util
import operator
from typing import Optional

import torch
from torch import Tensor

from rolora.kernels.torch_path import torch_dropout_keep_mask, torch_lora_backward, torch_lora_forward

BACKENDS = ("auto", "torch", "triton")
MAX_TRITON_RANK = 128  # R_PAD ≤ 128 keeps the rank tiles in registers
# "auto" sends M ≤ this to the cuBLAS path (launch- and CPU-bound at small M: the H100 runs of
# `rolora bench kernels --target` show the wall time host-bound at M ≤ 2048 for every method).
CUBLAS_MAX_M = 512
# ... and every call without LoRA dropout: with p = 0 the cuBLAS path measured faster at all M.
FUSE_WITHOUT_DROPOUT = False


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when ``rolora.kernels.triton_kernels`` imports (triton installed and a driver or the interpreter).

    False only for the two expected absences: triton not installed (or a piece of it missing), and
    triton's "0 active drivers" error (no GPU, no TRITON_INTERPRET). Any other error is raised: a
    broken kernel module must fail loudly, not pass for "no Triton here" and take its tests with it."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import rolora.kernels.triton_kernels  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != "triton":
            raise
        return False
    except RuntimeError as err:
        if "active drivers" not in str(err):
            raise
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """Turn ``auto`` into ``triton`` (CUDA tensors, triton importable) or ``torch``; check the name."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' but triton does not import here (install triton)")
        from rolora.kernels.launch_configs import is_interpreted

        if device.type != "cuda" and not is_interpreted():
            raise RuntimeError(f"backend='triton' on {device} tensors needs TRITON_INTERPRET=1, set "
                               "before rolora.kernels.triton_kernels is imported")
    return backend


def choose_backend(backend: str, device: torch.device, m: int, r: int, cublas_max_m: int | None = None,
                   dropout_p: float | None = None) -> str:
    """The path a call of M rows and rank r takes: ``resolve_backend``, then for "auto" the cuBLAS path
    at M ≤ ``cublas_max_m`` (default ``CUBLAS_MAX_M``), r > ``MAX_TRITON_RANK``, or no LoRA dropout
    (``dropout_p == 0``, unless ``FUSE_WITHOUT_DROPOUT``; None: not known, the M rule alone)."""
    resolved = resolve_backend(backend, device)
    if resolved != "triton":
        return resolved
    if backend == "auto":
        small = CUBLAS_MAX_M if cublas_max_m is None else cublas_max_m
        no_dropout = dropout_p is not None and dropout_p == 0 and not FUSE_WITHOUT_DROPOUT
        return "torch" if r > MAX_TRITON_RANK or m <= small or no_dropout else "triton"
    if r > MAX_TRITON_RANK:
        raise ValueError(f"the Triton kernels support ranks ≤ {MAX_TRITON_RANK}, got r={r}")
    return resolved


def dropout_keep_mask(seed: int, rows: int, cols: int, p: float, device: torch.device | str,
                      backend: str = "torch") -> Tensor:
    """The keep-mask (bool rows×cols) that ``backend`` draws for ``seed``; the paths differ in bits."""
    device = torch.device(device)
    if resolve_backend(backend, device) == "triton":
        from rolora.kernels.triton_kernels import triton_keep_mask

        return triton_keep_mask(seed, rows, cols, p, device)
    return torch_dropout_keep_mask(seed, rows, cols, p, device)


# ---------------------------------------------------------------------------------------------------
# Custom ops
# ---------------------------------------------------------------------------------------------------


def _forward_impl(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                  scale: float, dropout_p: float, seed: int, backend: str) -> tuple[Tensor, Tensor]:
    if torch.is_autocast_enabled(x.device.type):  # the entry point already chose the compute dtype
        with torch.autocast(x.device.type, enabled=False):
            return _forward_impl(x, weight, bias, lora_A, lora_B, scale, dropout_p, seed, backend)
    if backend == "triton":
        from rolora.kernels.triton_kernels import triton_lora_forward

        return triton_lora_forward(x, weight, bias, lora_A, lora_B, scale, dropout_p, seed)
    return torch_lora_forward(x, weight, bias, lora_A, lora_B, scale, dropout_p, seed)


def _backward_impl(grad_y, x, weight, lora_A, lora_B, s, scale, dropout_p, seed: int, backend,
                   need_dx, need_dA, need_dB):
    if torch.is_autocast_enabled(grad_y.device.type):
        with torch.autocast(grad_y.device.type, enabled=False):
            return _backward_impl(grad_y, x, weight, lora_A, lora_B, s, scale, dropout_p, seed, backend,
                                  need_dx, need_dA, need_dB)
    if backend == "triton":
        from rolora.kernels.triton_kernels import triton_lora_backward as impl
    else:
        impl = torch_lora_backward
    return impl(grad_y, x, weight, lora_A, lora_B, s, scale, dropout_p, seed, need_dx, need_dA, need_dB)


@torch.library.custom_op("rolora::lora_linear_fwd", mutates_args=())
def lora_linear_fwd(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], lora_A: Tensor, lora_B: Tensor,
    scale: float, dropout_p: float, seed: Tensor, backend: str,
) -> tuple[Tensor, Tensor]:
    """Forward on 2-D x (M×K), backend already resolved: returns (y M×N, S = x̂ Aᵀ M×r).

    ``seed`` is a 0-d int64 tensor (on the CPU, whatever x's device): a tensor, not an int, so
    ``torch.compile`` treats it as data and does not specialise (recompile) on each new value.
    """
    return _forward_impl(x, weight, bias, lora_A, lora_B, scale, dropout_p, int(seed.item()), backend)


@lora_linear_fwd.register_fake
def _lora_linear_fwd_fake(x, weight, bias, lora_A, lora_B, scale, dropout_p, seed, backend):
    m = x.shape[0]
    return x.new_empty((m, weight.shape[0])), x.new_empty((m, lora_A.shape[0]))


@torch.library.custom_op("rolora::lora_linear_bwd", mutates_args=())
def lora_linear_bwd(
    grad_y: Tensor, x: Optional[Tensor], weight: Tensor, lora_A: Tensor, lora_B: Tensor,
    s: Optional[Tensor], scale: float, dropout_p: float, seed: Tensor, backend: str,
    need_dx: bool, need_dA: bool, need_dB: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward: (dx, dA, dB); a gradient not asked for comes back as an empty placeholder."""
    dx, da, db = _backward_impl(grad_y, x, weight, lora_A, lora_B, s, scale, dropout_p,
                                int(seed.item()), backend, need_dx, need_dA, need_dB)
    empty = grad_y.new_empty(0)  # custom ops cannot return None
    return (dx if dx is not None else empty, da if da is not None else empty.clone(),
            db if db is not None else empty.clone())


@lora_linear_bwd.register_fake
def _lora_linear_bwd_fake(grad_y, x, weight, lora_A, lora_B, s, scale, dropout_p, seed, backend,
                          need_dx, need_dA, need_dB):
    m, k = grad_y.shape[0], weight.shape[1]
    dx = grad_y.new_empty((m, k)) if need_dx else grad_y.new_empty(0)
    da = lora_A.new_empty(lora_A.shape) if need_dA else grad_y.new_empty(0)
    db = lora_B.new_empty(lora_B.shape) if need_dB else grad_y.new_empty(0)
    return dx, da, db


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, lora_A, lora_B, scale, dropout_p, seed, backend = inputs
    _, s = output
    need_dx, _, need_dbias, need_dA, need_dB = ctx.needs_input_grad[:5]
    ctx.mark_non_differentiable(s)  # S is an auxiliary output, kept for dB only
    ctx.flags = (need_dx, need_dbias, need_dA, need_dB)
    ctx.args = (scale, dropout_p, backend)
    # The phase economy: x only if dA is needed, S only if dB is needed. The seed is kept too (a 0-d
    # tensor for the custom ops, an int in eager mode): backward regenerates the forward's mask.
    kept = (x if need_dA else None, weight, lora_A, lora_B, s if need_dB else None)
    if isinstance(seed, Tensor):
        ctx.save_for_backward(*kept, seed)
    else:
        ctx.save_for_backward(*kept)
        ctx.seed = seed


def _backward(ctx, grad_y: Tensor, _grad_s: Tensor, eager: bool = False):
    if eager:
        (x, weight, lora_A, lora_B, s), seed = ctx.saved_tensors, ctx.seed
    else:
        x, weight, lora_A, lora_B, s, seed = ctx.saved_tensors
    need_dx, need_dbias, need_dA, need_dB = ctx.flags
    scale, dropout_p, backend = ctx.args
    dx = da = db = dbias = None
    if need_dx or need_dA or need_dB:
        if eager:
            dx, da, db = _backward_impl(grad_y, x, weight, lora_A, lora_B, s, scale, dropout_p,
                                        seed, backend, need_dx, need_dA, need_dB)
        else:
            dx, da, db = torch.ops.rolora.lora_linear_bwd(
                grad_y, x, weight, lora_A, lora_B, s, scale, dropout_p, seed, backend,
                need_dx, need_dA, need_dB)
        dx, da, db = (dx if need_dx else None), (da if need_dA else None), (db if need_dB else None)
    if need_dbias:
        dbias = grad_y.sum(0)
    return dx, None, dbias, da, db, None, None, None, None


torch.library.register_autograd("rolora::lora_linear_fwd", _backward, setup_context=_setup_context)


class _EagerLoRALinear(torch.autograd.Function):
    """The same forward, saving and backward as the custom ops, without their dispatch.

    Eager calls come here: a custom op's wrapper and re-dispatch cost about as much CPU time per call
    as PEFT's whole layer, which bounds small-M speed. ``torch.compile`` still sees the custom op
    (``lora_linear`` picks it while compiling), which it can trace with its fake implementation.
    The classic ``forward(ctx, ...)`` form on purpose: a separate ``setup_context`` makes autograd
    bind default arguments through ``inspect`` on every call.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, scale, dropout_p, seed: int, backend):
        out = _forward_impl(x, weight, bias, lora_A, lora_B, scale, dropout_p, seed, backend)
        _setup_context(ctx, (x, weight, bias, lora_A, lora_B, scale, dropout_p, seed, backend), out)
        return out

    @staticmethod
    def backward(ctx, grad_y, grad_s):
        return _backward(ctx, grad_y, grad_s, eager=True)


# ---------------------------------------------------------------------------------------------------
# Checked entry point
# ---------------------------------------------------------------------------------------------------


def _check(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
           dropout_p: float) -> None:
    """Raise a ValueError naming the offending tensor and shape; touches nothing."""
    if weight.dim() != 2:
        raise ValueError(f"weight (W0) must be 2-D out×in, got shape {tuple(weight.shape)}")
    n, k = weight.shape
    if x.dim() < 1 or x.shape[-1] != k:
        raise ValueError(f"x has shape {tuple(x.shape)}: its last dimension must be in_features={k}")
    if lora_A.dim() != 2 or lora_A.shape[1] != k or lora_A.shape[0] < 1:
        raise ValueError(f"lora_A must be r×in = r×{k} with r ≥ 1, got {tuple(lora_A.shape)}")
    r = lora_A.shape[0]
    if tuple(lora_B.shape) != (n, r):
        raise ValueError(f"lora_B must be out×r = {n}×{r}, got {tuple(lora_B.shape)}")
    if bias is not None and tuple(bias.shape) != (n,):
        raise ValueError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    tensors = {"x": x, "weight": weight, "lora_A": lora_A, "lora_B": lora_B}
    if bias is not None:
        tensors["bias"] = bias
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
    if weight.requires_grad:
        raise ValueError("weight (W0) requires grad, but the LoRA linear never computes dW0: "
                         "freeze it with weight.requires_grad_(False)")


def _checked_seed(seed: Tensor) -> Tensor:
    if seed.numel() != 1 or seed.is_floating_point() or seed.is_complex():
        raise ValueError(f"seed must be an int or a 0-d integer tensor, got {seed.dtype} "
                         f"of shape {tuple(seed.shape)}")
    return seed


def _seed_int(seed: int | Tensor) -> int:
    """The dropout seed as a Python int (a 0-d integer tensor is read on the host)."""
    if isinstance(seed, Tensor):
        return int(_checked_seed(seed).item())
    try:
        return operator.index(seed)  # int, numpy integers; not float
    except TypeError:
        raise ValueError(f"seed must be an int or a 0-d integer tensor, got {type(seed).__name__}") from None


def _seed_tensor(seed: int | Tensor) -> Tensor:
    """The seed as the 0-d int64 CPU tensor the custom ops take: data, so ``torch.compile`` does not
    specialise (recompile) on its value."""
    if isinstance(seed, Tensor):
        return _checked_seed(seed).reshape(()).to(device="cpu", dtype=torch.int64)
    return torch.tensor(_seed_int(seed), dtype=torch.int64)


def draw_dropout_seed() -> Tensor:
    """A fresh per-call dropout seed for ``lora_linear``: a 0-d int64 tensor from torch's default CPU RNG.

    Drawn from torch's RNG (as ``nn.Dropout`` draws its mask) on purpose: ``torch.utils.checkpoint``
    saves and restores that state, so its re-run of the forward regenerates the same mask, and
    ``torch.compile`` sees a tensor (data) rather than a changing Python attribute (no recompiles).
    Consequence: dropout randomness follows ``torch.manual_seed``, exactly like nn.Dropout / PEFT.
    """
    return torch.randint(0, 2**31 - 1, (), dtype=torch.int64)


def lora_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
    scale: float, dropout_p: float = 0.0, seed: int | Tensor = 0, backend: str = "auto",
    cublas_max_m: int | None = None,
) -> Tensor:
    """y = x W0ᵀ (+ bias) + scale · dropout(x) Aᵀ Bᵀ, differentiable in x, bias, A and B.

    Args:
        x: input (..., in_features); any leading shape, any strides.
        weight: frozen W0, out×in (must not require grad).
        bias: optional, (out,).
        lora_A: r×in; lora_B: out×r (PEFT layout). They may be in another dtype than x (fp32 adapters
            with half activations): gradients come back in their own dtype.
        scale: s = alpha / r.
        dropout_p: dropout on the LoRA path's input; the mask is regenerated from ``seed``.
        seed: dropout seed (ignored when dropout_p = 0): a Python int or a 0-d integer tensor (what
            ``draw_dropout_seed`` gives, drawn from torch's RNG, so ``torch.compile`` does not
            specialise on it). It is kept as a 0-d int64 tensor on the CPU whatever x's device: the
            ops read it with ``.item()`` on the host and the kernels take it as a scalar argument (so a CUDA
            graph capture freezes it: replays reuse one mask). Use a fresh one per call in training.
        backend: "auto" (Triton on CUDA when available and M > ``cublas_max_m``, else PyTorch),
            "torch" or "triton".
        cublas_max_m: with "auto", problems of at most this many rows (M = product of x's leading
            dimensions) take the PyTorch path, cuBLAS on a GPU: at small M the fused kernels' launch
            and CPU costs outweigh the passes they save. Default ``CUBLAS_MAX_M``.

    Under autocast, x, W0 and bias are cast to the autocast dtype (as ``nn.Linear`` would be);
    the adapters stay in their dtype. Without autocast, x and W0 must share a dtype.
    """
    _check(x, weight, bias, lora_A, lora_B, dropout_p)
    if torch.is_autocast_enabled(x.device.type):
        cdt = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(cdt), weight.to(cdt)
        bias = bias.to(cdt) if bias is not None else None
    elif weight.dtype != x.dtype:
        raise ValueError(f"x is {x.dtype} but weight (W0) is {weight.dtype}: they must match "
                         "(or run under torch.autocast)")
    n, k, r = weight.shape[0], weight.shape[1], lora_A.shape[0]
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    resolved = choose_backend(backend, x.device, x2.shape[0], r, cublas_max_m, float(dropout_p))
    if torch.compiler.is_compiling():
        y2, _ = torch.ops.rolora.lora_linear_fwd(x2, weight, bias, lora_A, lora_B, float(scale),
                                                 float(dropout_p), _seed_tensor(seed), resolved)
    else:
        y2, _ = _EagerLoRALinear.apply(x2, weight, bias, lora_A, lora_B, float(scale), float(dropout_p),
                                       _seed_int(seed), resolved)
    return y2.reshape(*lead, n)
