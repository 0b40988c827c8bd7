"""Triton kernels for the fused LoRA linear, forward and backward, and their launch-config table.

Why fuse. For r ≪ K, N the frozen GEMMs (x W0ᵀ forward, dY W0 backward) are nearly all the FLOPs;
an unfused LoRA layer (PEFT) adds memory-bound passes on top: x is read again for S = x̂ Aᵀ, y is read
and written again for the add, and autograd keeps a dropout copy of x. Here:

    forward   1. ``_shrink_kernel``     S = x̂ Aᵀ (M×r); dropout applied on the fly, x̂ never stored
              2. ``_fused_fwd_kernel``  y = x W0ᵀ + s·S Bᵀ (+ bias): one fp32 accumulator, one store
    backward  3. ``_ds_kernel``         dS = s·dY B (M×r)
              4. ``_db_kernel``         dB = s·dYᵀ S          (only when B trains)
              5. ``_dx_kernel``         dx = dY W0 + (dS A) ⊙ keep/(1−p): one accumulator, one store
              6. ``_da_kernel``         dA = dSᵀ x̂            (only when A trains; regenerates keep)

Conventions. x is M×K, W0 is N×K, A is r×K, B is N×r (PyTorch/PEFT layout). Every pointer is
addressed through explicit strides, so non-contiguous 2-D views need no copy; every row and column
offset is widened to int64 before it multiplies a stride (N·K or M·K may exceed 2³¹). ``tl.dot``
needs every dimension ≥ 16, so the rank is padded to R_PAD = max(16, next_pow2(r)) by masked loads (zeros in the
padding, which add nothing). Activations (x, W0, bias, dY) share one dtype; adapters may be in another
(fp32 under autocast) and are converted to the activation dtype when loaded; accumulation is fp32.
The two M-reductions (dB, dA) are split over ``split`` programs that write fp32 partials, summed by
the wrapper: deterministic, unlike atomics (the price: dY is read once more than a fused dS/dB
kernel with atomics would read it).

Dropout. The keep-mask is a pure function of (seed, row, column) of the logical M×K input,
``tl.rand(seed, row*K + col) > p`` (the Triton low-memory-dropout recipe), so kernels 1, 5 and 6
regenerate exactly the same mask and none is stored. Offsets are int32: the wrappers refuse
dropout when M·K ≥ 2³¹.

This module imports triton at the top; ``op.py`` imports it lazily, so rolora works without triton.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

# ---------------------------------------------------------------------------------------------------
# Launch configurations: a small explicit table per shape class (no runtime autotune inside autograd).
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchConfig:
    """Tile sizes and launch parameters for one shape class."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int
    num_warps: int
    num_stages: int


# Starting points from the Triton matmul tutorial's H100 configs; to be tuned on the GPU.
_TABLE_HALF = {
    "small_m": LaunchConfig(32, 64, 64, 8, 4, 4),  # M ≤ 128: decode-like, few row tiles
    "medium_m": LaunchConfig(64, 128, 64, 8, 4, 4),  # M ≤ 2048
    "large_m": LaunchConfig(128, 128, 64, 8, 8, 3),
}
_TABLE_FP32 = {  # 4-byte elements: half the K-tile to keep shared memory in budget
    "small_m": LaunchConfig(32, 64, 32, 8, 4, 4),
    "medium_m": LaunchConfig(64, 128, 32, 8, 4, 3),
    "large_m": LaunchConfig(128, 128, 32, 8, 8, 3),
}
# The interpreter costs ~3 ms per program per K-step: the largest blocks make tests fast.
_INTERPRETER = LaunchConfig(64, 64, 64, 8, 4, 1)


def is_interpreted() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def shape_class(m: int) -> str:
    """Shape class of a problem by its number of rows M (= batch · sequence)."""
    if m <= 128:
        return "small_m"
    if m <= 2048:
        return "medium_m"
    return "large_m"


def launch_config(m: int, dtype: torch.dtype) -> LaunchConfig:
    """The launch config for M rows of ``dtype`` activations (interpreter: one large-block config)."""
    if is_interpreted():
        return _INTERPRETER
    table = _TABLE_FP32 if dtype == torch.float32 else _TABLE_HALF
    return table[shape_class(m)]


def rank_pad(r: int) -> int:
    """Rank padded for ``tl.dot``: a power of two, at least 16."""
    return max(16, triton.next_power_of_2(r))


def reduction_split(m: int, block_m: int, other_tiles: int, target_programs: int = 264) -> int:
    """How many programs share one M-reduction: enough to fill ~2 waves of an H100, at most one per tile."""
    if is_interpreted():
        return 1
    m_tiles = triton.cdiv(m, block_m)
    return max(1, min(m_tiles, triton.cdiv(target_programs, max(other_tiles, 1))))


def _dot_precision(dtype: torch.dtype) -> str:
    """fp32 dots follow torch's matmul TF32 switch (off by default: exact IEEE); halves ignore it."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


@triton.jit
def _keep(seed, offs_m, offs_k, K, p):
    """Keep-mask of the logical M×K input at (offs_m, offs_k): the same bits in every kernel."""
    return tl.rand(seed, offs_m[:, None] * K + offs_k[None, :]) > p


@triton.jit
def _grouped_tile(pid, num_rows, num_cols, GROUP: tl.constexpr):
    """Map a linear program id to (row tile, col tile) in GROUP-row bands, for L2 reuse of the col operand."""
    in_group = GROUP * num_cols
    group_id = pid // in_group
    first_row = group_id * GROUP
    group_size = min(num_rows - first_row, GROUP)
    row = first_row + ((pid % in_group) % group_size)
    col = (pid % in_group) // group_size
    return row, col


@triton.jit
def _shrink_kernel(
    x_ptr, a_ptr, s_ptr,
    M, K, R,
    stride_xm, stride_xk, stride_ar, stride_ak, stride_sm, stride_sr,
    seed, p, inv_keep,
    HAS_DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, R_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """S[m, :] = x̂[m, :] Aᵀ for one BLOCK_M band of rows; the K-loop reads x exactly once."""
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, R_PAD)
    rows = offs_m.to(tl.int64)  # 64-bit row offsets: M·stride can exceed 2³¹
    acc = tl.zeros((BLOCK_M, R_PAD), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows[:, None] * stride_xm + offs_k.to(tl.int64)[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        if HAS_DROPOUT:
            x = tl.where(_keep(seed, offs_m, offs_k, K, p), x, 0.0).to(x.dtype)
        # Aᵀ tile [BLOCK_K, R_PAD]: padded ranks load as zeros.
        at = tl.load(a_ptr + offs_r[None, :] * stride_ar + offs_k.to(tl.int64)[:, None] * stride_ak,
                     mask=(offs_r[None, :] < R) & (offs_k[:, None] < K), other=0.0)
        acc = tl.dot(x, at.to(x.dtype), acc, input_precision=DOT_PRECISION)
    if HAS_DROPOUT:
        acc = acc * inv_keep  # x̂ = keep ⊙ x / (1 − p): the scale factors out of the sum
    tl.store(s_ptr + rows[:, None] * stride_sm + offs_r[None, :] * stride_sr,
             acc.to(s_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_r[None, :] < R))


@triton.jit
def _fused_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, s_ptr, b_ptr, y_ptr,
    M, N, K, R, scale,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_sm, stride_sr, stride_bn, stride_br,
    stride_ym, stride_yn, stride_bias,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    R_PAD: tl.constexpr, GROUP_M: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """y tile = x W0ᵀ + s·S Bᵀ (+ bias): both products land in one fp32 accumulator, y is stored once."""
    pid_m, pid_n = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, R_PAD)
    rows = offs_m.to(tl.int64)
    cols = offs_n.to(tl.int64)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + rows[:, None] * stride_xm + offs_k.to(tl.int64)[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        # W0ᵀ tile [BLOCK_K, BLOCK_N] read straight from the N×K weight.
        wt = tl.load(w_ptr + cols[None, :] * stride_wn + offs_k.to(tl.int64)[:, None] * stride_wk,
                     mask=(offs_n[None, :] < N) & (offs_k[:, None] < K), other=0.0)
        acc = tl.dot(x, wt, acc, input_precision=DOT_PRECISION)
    # Low-rank epilogue: one more (padded) K-step of depth R_PAD.
    s = tl.load(s_ptr + rows[:, None] * stride_sm + offs_r[None, :] * stride_sr,
                mask=(offs_m[:, None] < M) & (offs_r[None, :] < R), other=0.0)
    bt = tl.load(b_ptr + cols[None, :] * stride_bn + offs_r[:, None] * stride_br,
                 mask=(offs_n[None, :] < N) & (offs_r[:, None] < R), other=0.0)
    acc += scale * tl.dot(s.to(x.dtype), bt.to(x.dtype), input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols * stride_bias, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn,
             acc.to(y_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def _ds_kernel(
    dy_ptr, b_ptr, ds_ptr,
    M, N, R, scale,
    stride_dym, stride_dyn, stride_bn, stride_br, stride_dsm, stride_dsr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, R_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dS[m, :] = s · dY[m, :] B for one BLOCK_M band of rows (reduction over N)."""
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, R_PAD)
    rows = offs_m.to(tl.int64)
    acc = tl.zeros((BLOCK_M, R_PAD), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        dy = tl.load(dy_ptr + rows[:, None] * stride_dym + offs_n.to(tl.int64)[None, :] * stride_dyn,
                     mask=(offs_m[:, None] < M) & (offs_n[None, :] < N), other=0.0)
        b = tl.load(b_ptr + offs_n.to(tl.int64)[:, None] * stride_bn + offs_r[None, :] * stride_br,
                    mask=(offs_n[:, None] < N) & (offs_r[None, :] < R), other=0.0)
        acc = tl.dot(dy, b.to(dy.dtype), acc, input_precision=DOT_PRECISION)
    tl.store(ds_ptr + rows[:, None] * stride_dsm + offs_r[None, :] * stride_dsr,
             (acc * scale).to(ds_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_r[None, :] < R))


@triton.jit
def _db_kernel(
    dy_ptr, s_ptr, part_ptr,
    M, N, R, scale,
    stride_dym, stride_dyn, stride_sm, stride_sr, stride_pp, stride_pn, stride_pr,
    SPLIT, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, R_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Partial dB[n, :] = s · Σ_m dY[m, n] S[m, :] over the row tiles pid_s, pid_s + SPLIT, ... (fp32)."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, R_PAD)
    acc = tl.zeros((BLOCK_N, R_PAD), dtype=tl.float32)
    for mt in range(pid_s, tl.cdiv(M, BLOCK_M), SPLIT):
        offs_m = mt * BLOCK_M + tl.arange(0, BLOCK_M)
        rows = offs_m.to(tl.int64)
        # dYᵀ tile [BLOCK_N, BLOCK_M] and S tile [BLOCK_M, R_PAD].
        dyt = tl.load(dy_ptr + rows[None, :] * stride_dym + offs_n.to(tl.int64)[:, None] * stride_dyn,
                      mask=(offs_m[None, :] < M) & (offs_n[:, None] < N), other=0.0)
        s = tl.load(s_ptr + rows[:, None] * stride_sm + offs_r[None, :] * stride_sr,
                    mask=(offs_m[:, None] < M) & (offs_r[None, :] < R), other=0.0)
        acc = tl.dot(dyt, s.to(dyt.dtype), acc, input_precision=DOT_PRECISION)
    tl.store(part_ptr + pid_s * stride_pp + offs_n.to(tl.int64)[:, None] * stride_pn
             + offs_r[None, :] * stride_pr,
             acc * scale, mask=(offs_n[:, None] < N) & (offs_r[None, :] < R))


@triton.jit
def _dx_kernel(
    dy_ptr, w_ptr, ds_ptr, a_ptr, dx_ptr,
    M, N, K, R,
    stride_dym, stride_dyn, stride_wn, stride_wk, stride_dsm, stride_dsr, stride_ar, stride_ak,
    stride_dxm, stride_dxk,
    seed, p, inv_keep,
    HAS_DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    R_PAD: tl.constexpr, GROUP_M: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dx tile = dY W0 + (dS A) ⊙ keep/(1−p): the frozen and the low-rank path share one accumulator."""
    pid_m, pid_k = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, R_PAD)
    rows = offs_m.to(tl.int64)
    # Low-rank part first (one K-step of depth R_PAD), so dropout applies to it alone.
    ds = tl.load(ds_ptr + rows[:, None] * stride_dsm + offs_r[None, :] * stride_dsr,
                 mask=(offs_m[:, None] < M) & (offs_r[None, :] < R), other=0.0)
    a = tl.load(a_ptr + offs_r[:, None] * stride_ar + offs_k.to(tl.int64)[None, :] * stride_ak,
                mask=(offs_r[:, None] < R) & (offs_k[None, :] < K), other=0.0)
    acc = tl.dot(ds, a.to(ds.dtype), input_precision=DOT_PRECISION)
    if HAS_DROPOUT:
        acc = tl.where(_keep(seed, offs_m, offs_k, K, p), acc * inv_keep, 0.0)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        dy = tl.load(dy_ptr + rows[:, None] * stride_dym + offs_n.to(tl.int64)[None, :] * stride_dyn,
                     mask=(offs_m[:, None] < M) & (offs_n[None, :] < N), other=0.0)
        # int64 column offsets: n·stride_wn reaches N·K, which can exceed 2³¹.
        w = tl.load(w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
                    + offs_k.to(tl.int64)[None, :] * stride_wk,
                    mask=(offs_n[:, None] < N) & (offs_k[None, :] < K), other=0.0)
        acc = tl.dot(dy, w, acc, input_precision=DOT_PRECISION)
    tl.store(dx_ptr + rows[:, None] * stride_dxm + offs_k.to(tl.int64)[None, :] * stride_dxk,
             acc.to(dx_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_k[None, :] < K))


@triton.jit
def _da_kernel(
    ds_ptr, x_ptr, part_ptr,
    M, K, R,
    stride_dsm, stride_dsr, stride_xm, stride_xk, stride_pp, stride_pr, stride_pk,
    seed, p, inv_keep,
    SPLIT, HAS_DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    R_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Partial dA[:, k] = Σ_m dS[m, :]ᵀ x̂[m, k] over the row tiles pid_s, pid_s + SPLIT, ... (fp32)."""
    pid_k = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, R_PAD)
    acc = tl.zeros((R_PAD, BLOCK_K), dtype=tl.float32)
    for mt in range(pid_s, tl.cdiv(M, BLOCK_M), SPLIT):
        offs_m = mt * BLOCK_M + tl.arange(0, BLOCK_M)
        rows = offs_m.to(tl.int64)
        dst = tl.load(ds_ptr + rows[None, :] * stride_dsm + offs_r[:, None] * stride_dsr,
                      mask=(offs_m[None, :] < M) & (offs_r[:, None] < R), other=0.0)
        x = tl.load(x_ptr + rows[:, None] * stride_xm + offs_k.to(tl.int64)[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        if HAS_DROPOUT:
            x = tl.where(_keep(seed, offs_m, offs_k, K, p), x, 0.0).to(x.dtype)
        acc = tl.dot(dst.to(x.dtype), x, acc, input_precision=DOT_PRECISION)
    if HAS_DROPOUT:
        acc = acc * inv_keep
    tl.store(part_ptr + pid_s * stride_pp + offs_r[:, None] * stride_pr
             + offs_k.to(tl.int64)[None, :] * stride_pk,
             acc, mask=(offs_r[:, None] < R) & (offs_k[None, :] < K))


@triton.jit
def _keep_mask_kernel(out_ptr, M, K, seed, p, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Write the keep-mask the other kernels regenerate (for tests and the reference)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    keep = _keep(seed, offs_m, offs_k, K, p)
    tl.store(out_ptr + offs_m.to(tl.int64)[:, None] * K + offs_k[None, :], keep.to(tl.int8),
             mask=(offs_m[:, None] < M) & (offs_k[None, :] < K))


# ---------------------------------------------------------------------------------------------------
# Thin wrappers: shapes are validated by op.py; these allocate outputs and launch.
# ---------------------------------------------------------------------------------------------------


def _dropout_args(p: float) -> tuple[bool, float]:
    return p > 0.0, (1.0 / (1.0 - p) if p > 0.0 else 1.0)


def triton_keep_mask(seed: int, rows: int, cols: int, p: float, device: torch.device) -> Tensor:
    """The Triton path's keep-mask (bool, rows×cols) for ``seed``, as kernels 1, 5 and 6 draw it."""
    out = torch.empty((rows, cols), dtype=torch.int8, device=device)
    grid = (triton.cdiv(rows, 64), triton.cdiv(cols, 64))
    _keep_mask_kernel[grid](out, rows, cols, seed, p, BLOCK_M=64, BLOCK_K=64)
    return out.bool()


def triton_lora_forward(
    x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
    scale: float, dropout_p: float, seed: int,
) -> tuple[Tensor, Tensor]:
    """Launch kernels 1–2 on a 2-D x (M×K): returns (y M×N, S M×r), both in x's dtype."""
    m, k = x.shape
    n, r = weight.shape[0], lora_A.shape[0]
    cfg = launch_config(m, x.dtype)
    r_pad, prec = rank_pad(r), _dot_precision(x.dtype)
    has_drop, inv_keep = _dropout_args(dropout_p)
    s = torch.empty((m, r), dtype=x.dtype, device=x.device)
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    _shrink_kernel[(triton.cdiv(m, cfg.block_m),)](
        x, lora_A, s, m, k, r,
        x.stride(0), x.stride(1), lora_A.stride(0), lora_A.stride(1), s.stride(0), s.stride(1),
        seed, dropout_p, inv_keep,
        HAS_DROPOUT=has_drop, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, R_PAD=r_pad,
        DOT_PRECISION=prec, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    _fused_fwd_kernel[grid](
        x, weight, bias if bias is not None else y, s, lora_B, y,
        m, n, k, r, scale,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), s.stride(0), s.stride(1),
        lora_B.stride(0), lora_B.stride(1), y.stride(0), y.stride(1),
        bias.stride(0) if bias is not None else 0,
        HAS_BIAS=bias is not None, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        R_PAD=r_pad, GROUP_M=cfg.group_m, DOT_PRECISION=prec,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return y, s


def triton_lora_backward(
    grad_y: Tensor, x: Tensor | None, weight: Tensor, lora_A: Tensor, lora_B: Tensor,
    s: Tensor | None, scale: float, dropout_p: float, seed: int,
    need_dx: bool, need_dA: bool, need_dB: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Launch kernels 3–6 as needed: (dx, dA, dB), each None when not asked for."""
    m, n = grad_y.shape
    k, r = weight.shape[1], lora_A.shape[0]
    cfg = launch_config(m, grad_y.dtype)
    r_pad, prec = rank_pad(r), _dot_precision(grad_y.dtype)
    has_drop, inv_keep = _dropout_args(dropout_p)
    dev, cdt = grad_y.device, grad_y.dtype
    dx = da = db = None
    if need_dB:
        assert s is not None, "dB needs the saved S"
        n_tiles = triton.cdiv(n, cfg.block_n)
        split = reduction_split(m, cfg.block_m, n_tiles)
        part = torch.empty((split, n, r), dtype=torch.float32, device=dev)
        _db_kernel[(n_tiles, split)](
            grad_y, s, part, m, n, r, scale,
            grad_y.stride(0), grad_y.stride(1), s.stride(0), s.stride(1),
            part.stride(0), part.stride(1), part.stride(2),
            split, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, R_PAD=r_pad, DOT_PRECISION=prec,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        db = part.sum(0).to(lora_B.dtype)
    if need_dx or need_dA:
        ds = torch.empty((m, r), dtype=cdt, device=dev)
        _ds_kernel[(triton.cdiv(m, cfg.block_m),)](
            grad_y, lora_B, ds, m, n, r, scale,
            grad_y.stride(0), grad_y.stride(1), lora_B.stride(0), lora_B.stride(1),
            ds.stride(0), ds.stride(1),
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, R_PAD=r_pad, DOT_PRECISION=prec,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        if need_dA:
            assert x is not None, "dA needs the saved x"
            k_tiles = triton.cdiv(k, cfg.block_k)
            split = reduction_split(m, cfg.block_m, k_tiles)
            part = torch.empty((split, r, k), dtype=torch.float32, device=dev)
            _da_kernel[(k_tiles, split)](
                ds, x, part, m, k, r,
                ds.stride(0), ds.stride(1), x.stride(0), x.stride(1),
                part.stride(0), part.stride(1), part.stride(2),
                seed, dropout_p, inv_keep,
                split, HAS_DROPOUT=has_drop, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, R_PAD=r_pad,
                DOT_PRECISION=prec, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
            )
            da = part.sum(0).to(lora_A.dtype)
        if need_dx:
            dx = torch.empty((m, k), dtype=cdt, device=dev)
            grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(k, cfg.block_k),)
            _dx_kernel[grid](
                grad_y, weight, ds, lora_A, dx, m, n, k, r,
                grad_y.stride(0), grad_y.stride(1), weight.stride(0), weight.stride(1),
                ds.stride(0), ds.stride(1), lora_A.stride(0), lora_A.stride(1),
                dx.stride(0), dx.stride(1),
                seed, dropout_p, inv_keep,
                HAS_DROPOUT=has_drop, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                R_PAD=r_pad, GROUP_M=cfg.group_m, DOT_PRECISION=prec,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages,
            )
    return dx, da, db
