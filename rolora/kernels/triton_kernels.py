"""Triton kernels for the fused LoRA linear, forward and backward, and their launch-config tables.

Why fuse. For r ≪ K, N the frozen GEMMs (x W0ᵀ forward, dY W0 backward) are nearly all the FLOPs;
an unfused LoRA layer (PEFT) adds memory-bound passes on top: x is read again for S = x̂ Aᵀ, y is read
and written again for the add, and autograd keeps a dropout copy of x. Here:

    forward   1. ``_rowband_kernel``   S  = x̂ Aᵀ (M×r); dropout applied on the fly, x̂ never stored
              2. ``_fwd_gemm_kernel``  y  = s·S Bᵀ + x W0ᵀ (+ bias): one fp32 accumulator, one store
    backward  3. ``_colband_kernel``   dB = s·dYᵀ S         (only when B trains)
              4. ``_rowband_kernel``   dS = s·dY B (M×r)
              5. ``_colband_kernel``   dA = dSᵀ x̂           (only when A trains; regenerates keep)
              6. ``_dx_gemm_kernel``   dx = (dS A) ⊙ keep/(1−p) + dY W0: one accumulator, one store

Two side kernels serve four products: a *row band* reduces along the columns of a tall operand
against a rank tile (S = x̂ Aᵀ, dS = dY B), a *column band* reduces along its rows (dB = dYᵀ S,
dA = dSᵀ x̂). Both split their reduction over ``split`` programs when the other dimension alone does
not fill the GPU; the fp32 partials are summed by the wrapper in a fixed order (deterministic, no
atomics).

Conventions. x is M×K, W0 is N×K, A is r×K, B is N×r (PyTorch/PEFT layout). Every pointer is
addressed through explicit strides (non-contiguous 2-D views need no copy, transposes are stride
swaps); row and column offsets are widened to int64 before they multiply a stride. ``tl.dot`` needs
every dimension ≥ 16, so the rank is padded to R_PAD = max(16, next_pow2(r)) by masked loads. The
adapters are cast to the activation dtype once per call by the wrappers (r×K and N×r: negligible), so
each kernel sees one dtype; accumulation is fp32; gradients come back in each tensor's own dtype.

Dropout. The keep-mask is a pure function of (seed, row, column) of the logical M×K input, so the
kernels that need x̂ (1, 5, 6) regenerate the same bits and none is stored. One Philox-4x32-10 call
yields eight 16-bit draws, so eight keep decisions (``_keep``); p is quantised to a multiple of 2⁻¹⁶
(off by at most 2⁻¹⁷) and the 1/(1 − p) scale uses the quantised value, so E[x̂] = x stays exact.
The counter is 64-bit. The seed is not specialised on (``do_not_specialize``), so a new seed never
triggers a compile.

This module imports triton at the top; ``op.py`` imports it lazily, so rolora works without triton.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from rolora.kernels.launch_configs import (dot_precision, band_config, device_capability, launch_config,
                                           rank_pad, reduction_split)

# ---------------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------------


@triton.jit
def _keep(seed, offs_m, k0, KE, threshold, BLOCK_K: tl.constexpr):
    """Keep-mask of the logical M×K input at rows ``offs_m``, columns k0 … k0+BLOCK_K (k0 % 8 = 0).

    One Philox-4x32 call at the 64-bit counter m·KE + k // 8 (KE = ⌈K/8⌉) gives four 32-bit lanes,
    split into eight 16-bit draws for columns 8·(k // 8) … +7; element (m, k) is kept iff its draw
    is ≥ ``threshold`` = round(p·2¹⁶). A pure function of (seed, m, k), whichever tile asks, at an
    eighth of the Philox work (and registers) of one draw per element.
    """
    eighths = k0 // 8 + tl.arange(0, BLOCK_K // 8)
    counter = offs_m.to(tl.int64)[:, None] * KE + eighths[None, :]
    r0, r1, r2, r3 = tl.randint4x(seed, counter)
    lanes = tl.interleave(tl.interleave(r0, r2), tl.interleave(r1, r3))  # lanes 0,1,2,3 per eighth
    draws = tl.interleave(lanes & 0xFFFF, lanes >> 16)  # [BLOCK_M, BLOCK_K] of 16-bit values
    return draws.to(tl.int32) >= threshold


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


@triton.jit(do_not_specialize=["seed"])
def _rowband_kernel(
    x_ptr, a_ptr, out_ptr,
    M, C, R, KE,
    stride_xm, stride_xc, stride_ar, stride_ac, stride_op, stride_om, stride_or,
    seed, threshold, out_scale, SPLIT,
    HAS_DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, R_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """out[pid_s][m, :] = out_scale · Σ_c x̂[m, c] A[:, c] over the column tiles pid_s, pid_s + SPLIT, …

    S = x̂ Aᵀ (x M×K, dropout) and dS = dY B (x = dY, A = Bᵀ through strides) for one band of rows.
    """
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, R_PAD)
    rows = offs_m.to(tl.int64)
    acc = tl.zeros((BLOCK_M, R_PAD), dtype=tl.float32)
    for ct in range(pid_s, tl.cdiv(C, BLOCK_C), SPLIT):
        offs_c = ct * BLOCK_C + tl.arange(0, BLOCK_C)
        cols = offs_c.to(tl.int64)
        x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :] * stride_xc,
                    mask=(offs_m[:, None] < M) & (offs_c[None, :] < C), other=0.0)
        if HAS_DROPOUT:
            x = tl.where(_keep(seed, offs_m, ct * BLOCK_C, KE, threshold, BLOCK_C), x, 0.0).to(x.dtype)
        # Aᵀ tile [BLOCK_C, R_PAD]: padded ranks load as zeros.
        at = tl.load(a_ptr + offs_r[None, :] * stride_ar + cols[:, None] * stride_ac,
                     mask=(offs_r[None, :] < R) & (offs_c[:, None] < C), other=0.0)
        acc = tl.dot(x, at, acc, input_precision=DOT_PRECISION)
    tl.store(out_ptr + pid_s * stride_op + rows[:, None] * stride_om + offs_r[None, :] * stride_or,
             (acc * out_scale).to(out_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_r[None, :] < R))


@triton.jit(do_not_specialize=["seed"])
def _colband_kernel(
    x_ptr, t_ptr, out_ptr,
    M, C, R, KE,
    stride_xm, stride_xc, stride_tm, stride_tr, stride_op, stride_oc, stride_or,
    seed, threshold, out_scale, SPLIT,
    HAS_DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, R_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """out[pid_s][c, :] = out_scale · Σ_m x̂[m, c] T[m, :] over the row tiles pid_s, pid_s + SPLIT, …

    dB = s·dYᵀ S (x = dY, T = S) and dA = dSᵀ x̂ (x = x with dropout, T = dS, out = dAᵀ by strides)
    for one band of columns.
    """
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    c0 = pid_c * BLOCK_C
    offs_c = c0 + tl.arange(0, BLOCK_C)
    offs_r = tl.arange(0, R_PAD)
    cols = offs_c.to(tl.int64)
    acc = tl.zeros((BLOCK_C, R_PAD), dtype=tl.float32)
    for mt in range(pid_s, tl.cdiv(M, BLOCK_M), SPLIT):
        offs_m = mt * BLOCK_M + tl.arange(0, BLOCK_M)
        rows = offs_m.to(tl.int64)
        x = tl.load(x_ptr + rows[:, None] * stride_xm + cols[None, :] * stride_xc,
                    mask=(offs_m[:, None] < M) & (offs_c[None, :] < C), other=0.0)
        if HAS_DROPOUT:
            x = tl.where(_keep(seed, offs_m, c0, KE, threshold, BLOCK_C), x, 0.0).to(x.dtype)
        t = tl.load(t_ptr + rows[:, None] * stride_tm + offs_r[None, :] * stride_tr,
                    mask=(offs_m[:, None] < M) & (offs_r[None, :] < R), other=0.0)
        acc = tl.dot(tl.trans(x), t, acc, input_precision=DOT_PRECISION)
    tl.store(out_ptr + pid_s * stride_op + cols[:, None] * stride_oc + offs_r[None, :] * stride_or,
             (acc * out_scale).to(out_ptr.dtype.element_ty),
             mask=(offs_c[:, None] < C) & (offs_r[None, :] < R))


@triton.jit
def _fwd_gemm_kernel(
    x_ptr, w_ptr, bias_ptr, s_ptr, b_ptr, y_ptr,
    M, N, K, R, scale,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_sm, stride_sr, stride_bn, stride_br,
    stride_ym, stride_yn, stride_bias,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    R_PAD: tl.constexpr, GROUP_M: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """y tile = s·S Bᵀ + x W0ᵀ (+ bias): the low-rank term is one more K-step of depth R_PAD that
    starts the fp32 accumulator (scaled once, before the K loop), and y is stored once."""
    pid_m, pid_n = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, R_PAD)
    rows = offs_m.to(tl.int64)
    cols = offs_n.to(tl.int64)
    s = tl.load(s_ptr + rows[:, None] * stride_sm + offs_r[None, :] * stride_sr,
                mask=(offs_m[:, None] < M) & (offs_r[None, :] < R), other=0.0)
    bt = tl.load(b_ptr + cols[None, :] * stride_bn + offs_r[:, None] * stride_br,
                 mask=(offs_n[None, :] < N) & (offs_r[:, None] < R), other=0.0)
    acc = tl.dot(s, bt, input_precision=DOT_PRECISION) * scale  # the one fp32 accumulator
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        ks = offs_k.to(tl.int64)
        x = tl.load(x_ptr + rows[:, None] * stride_xm + ks[None, :] * stride_xk,
                    mask=(offs_m[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        # W0ᵀ tile [BLOCK_K, BLOCK_N] read straight from the N×K weight.
        wt = tl.load(w_ptr + cols[None, :] * stride_wn + ks[:, None] * stride_wk,
                     mask=(offs_n[None, :] < N) & (offs_k[:, None] < K), other=0.0)
        acc = tl.dot(x, wt, acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols * stride_bias, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_ym + cols[None, :] * stride_yn,
             acc.to(y_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit(do_not_specialize=["seed"])
def _dx_gemm_kernel(
    dy_ptr, w_ptr, ds_ptr, a_ptr, dx_ptr,
    M, N, K, R, KE,
    stride_dym, stride_dyn, stride_wn, stride_wk, stride_dsm, stride_dsr, stride_ar, stride_ak,
    stride_dxm, stride_dxk,
    seed, threshold, inv_keep,
    HAS_DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
    R_PAD: tl.constexpr, GROUP_M: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """dx tile (BLOCK_M × BLOCK_K) = (dS A) ⊙ keep/(1−p) + dY W0, reducing over N in BLOCK_N steps.

    The low-rank part comes first (one K-step of depth R_PAD) so dropout masks it alone; then the
    frozen product accumulates on top: one accumulator, one store.
    """
    pid_m, pid_k = _grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(K, BLOCK_K), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_r = tl.arange(0, R_PAD)
    rows = offs_m.to(tl.int64)
    ks = offs_k.to(tl.int64)
    ds = tl.load(ds_ptr + rows[:, None] * stride_dsm + offs_r[None, :] * stride_dsr,
                 mask=(offs_m[:, None] < M) & (offs_r[None, :] < R), other=0.0)
    a = tl.load(a_ptr + offs_r[:, None] * stride_ar + ks[None, :] * stride_ak,
                mask=(offs_r[:, None] < R) & (offs_k[None, :] < K), other=0.0)
    acc = tl.dot(ds, a, input_precision=DOT_PRECISION)
    if HAS_DROPOUT:
        acc = tl.where(_keep(seed, offs_m, pid_k * BLOCK_K, KE, threshold, BLOCK_K), acc * inv_keep, 0.0)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        ns = offs_n.to(tl.int64)
        dy = tl.load(dy_ptr + rows[:, None] * stride_dym + ns[None, :] * stride_dyn,
                     mask=(offs_m[:, None] < M) & (offs_n[None, :] < N), other=0.0)
        w = tl.load(w_ptr + ns[:, None] * stride_wn + ks[None, :] * stride_wk,
                    mask=(offs_n[:, None] < N) & (offs_k[None, :] < K), other=0.0)
        acc = tl.dot(dy, w, acc, input_precision=DOT_PRECISION)
    tl.store(dx_ptr + rows[:, None] * stride_dxm + ks[None, :] * stride_dxk,
             acc.to(dx_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_k[None, :] < K))


@triton.jit(do_not_specialize=["seed"])
def _keep_mask_kernel(out_ptr, M, K, KE, seed, threshold, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Write the keep-mask the other kernels regenerate (for tests and the reference)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    k0 = tl.program_id(1) * BLOCK_K
    offs_k = k0 + tl.arange(0, BLOCK_K)
    keep = _keep(seed, offs_m, k0, KE, threshold, BLOCK_K)
    tl.store(out_ptr + offs_m.to(tl.int64)[:, None] * K + offs_k[None, :], keep.to(tl.int8),
             mask=(offs_m[:, None] < M) & (offs_k[None, :] < K))


# ---------------------------------------------------------------------------------------------------
# Thin wrappers: shapes are validated by op.py; these allocate outputs and launch.
# ---------------------------------------------------------------------------------------------------


def dropout_threshold(p: float) -> int:
    """p as the kernels' 16-bit keep threshold: a draw in [0, 2¹⁶) is dropped iff it is below it."""
    return min(max(round(p * 65536), 1), 65535) if p > 0.0 else 0


def _dropout_args(p: float) -> tuple[int, float]:
    """(threshold, 1 / keep probability) of the mask the kernels draw: exact for the quantised p,
    which differs from p by at most 2⁻¹⁷ (so E[x̂] = x holds exactly)."""
    t = dropout_threshold(p)
    return t, 1.0 / (1.0 - t / 65536)


def triton_keep_mask(seed: int, rows: int, cols: int, p: float, device: torch.device) -> Tensor:
    """The Triton path's keep-mask (bool, rows×cols) for ``seed``, as the kernels draw it."""
    out = torch.empty((rows, cols), dtype=torch.int8, device=device)
    grid = (triton.cdiv(rows, 64), triton.cdiv(cols, 64))
    _keep_mask_kernel[grid](out, rows, cols, triton.cdiv(cols, 8), seed, dropout_threshold(p),
                            BLOCK_M=64, BLOCK_K=64)
    return out.bool()


def _rowband(x: Tensor, a: Tensor, out_scale: float, dropout_p: float, seed: int,
             out_dtype: torch.dtype) -> Tensor:
    """out_scale · x̂ aᵀ (M×r) for x M×C and a r×C (any strides), split over C to fill the GPU."""
    m, c = x.shape
    r = a.shape[0]
    cfg = band_config(x.dtype)
    m_tiles, c_tiles = triton.cdiv(m, cfg.block_rows), triton.cdiv(c, cfg.block_cols)
    split = reduction_split(c_tiles, m_tiles, x.device)
    if split == 1:  # written in place, in the output dtype
        out = torch.empty((m, r), dtype=out_dtype, device=x.device)
        strides = (0, out.stride(0), out.stride(1))
    else:  # fp32 partials, summed below in a fixed order
        out = torch.empty((split, m, r), dtype=torch.float32, device=x.device)
        strides = out.stride()
    _rowband_kernel[(m_tiles, split)](
        x, a, out, m, c, r, triton.cdiv(c, 8),
        x.stride(0), x.stride(1), a.stride(0), a.stride(1), *strides,
        seed, dropout_threshold(dropout_p), out_scale, split,
        HAS_DROPOUT=dropout_p > 0.0, BLOCK_M=cfg.block_rows, BLOCK_C=cfg.block_cols, R_PAD=rank_pad(r),
        DOT_PRECISION=dot_precision(x.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out if split == 1 else out.sum(0).to(out_dtype)


def _colband(x: Tensor, t: Tensor, out_scale: float, dropout_p: float, seed: int,
             out_dtype: torch.dtype, transposed: bool) -> Tensor:
    """out_scale · x̂ᵀ t (C×r) for x M×C and t M×r, split over M to fill the GPU.

    ``transposed`` returns the r×C result instead (contiguous), for dA = (x̂ᵀ dS)ᵀ.
    """
    m, c = x.shape
    r = t.shape[1]
    cfg = band_config(x.dtype)
    c_tiles, m_tiles = triton.cdiv(c, cfg.block_cols), triton.cdiv(m, cfg.block_rows)
    split = reduction_split(m_tiles, c_tiles, x.device)
    shape = (r, c) if transposed else (c, r)
    if split == 1:
        out = torch.empty(shape, dtype=out_dtype, device=x.device)
        s_p, s_0, s_1 = 0, out.stride(0), out.stride(1)
    else:
        out = torch.empty((split, *shape), dtype=torch.float32, device=x.device)
        s_p, s_0, s_1 = out.stride()
    s_c, s_r = (s_1, s_0) if transposed else (s_0, s_1)
    _colband_kernel[(c_tiles, split)](
        x, t, out, m, c, r, triton.cdiv(c, 8),
        x.stride(0), x.stride(1), t.stride(0), t.stride(1), s_p, s_c, s_r,
        seed, dropout_threshold(dropout_p), out_scale, split,
        HAS_DROPOUT=dropout_p > 0.0, BLOCK_M=cfg.block_rows, BLOCK_C=cfg.block_cols, R_PAD=rank_pad(r),
        DOT_PRECISION=dot_precision(x.dtype), num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out if split == 1 else out.sum(0).to(out_dtype)


def triton_lora_forward(
    x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
    scale: float, dropout_p: float, seed: int,
) -> tuple[Tensor, Tensor]:
    """Launch kernels 1–2 on a 2-D x (M×K): returns (y M×N, S M×r), both in x's dtype."""
    m, k = x.shape
    n, r = weight.shape[0], lora_A.shape[0]
    dt = x.dtype
    cfg = launch_config(m, dt, device_capability(x.device), rank_pad(r))
    _, inv_keep = _dropout_args(dropout_p)
    # Adapters in the compute dtype once per call (r×K, N×r; no copy when they are already).
    a, b = lora_A.to(dt), lora_B.to(dt)
    s = _rowband(x, a, inv_keep, dropout_p, seed, dt)
    y = torch.empty((m, n), dtype=dt, device=x.device)
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    _fwd_gemm_kernel[grid](
        x, weight, bias if bias is not None else y, s, b, y,
        m, n, k, r, scale,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), s.stride(0), s.stride(1),
        b.stride(0), b.stride(1), y.stride(0), y.stride(1),
        bias.stride(0) if bias is not None else 0,
        HAS_BIAS=bias is not None, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        R_PAD=rank_pad(r), GROUP_M=cfg.group_m, DOT_PRECISION=dot_precision(dt),
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
    dt = grad_y.dtype
    threshold, inv_keep = _dropout_args(dropout_p)
    dx = da = db = None
    if need_dB:
        assert s is not None, "dB needs the saved S"
        db = _colband(grad_y, s, scale, 0.0, seed, lora_B.dtype, transposed=False)
    if not (need_dx or need_dA):
        return dx, da, db
    b = lora_B.to(dt)
    ds = _rowband(grad_y, b.t(), scale, 0.0, seed, dt)  # dS = s·dY B: a row band with A = Bᵀ
    if need_dA:
        assert x is not None, "dA needs the saved x"
        da = _colband(x, ds, inv_keep, dropout_p, seed, lora_A.dtype, transposed=True)
    if need_dx:
        a = lora_A.to(dt)
        cfg = launch_config(m, dt, device_capability(grad_y.device), rank_pad(r))
        dx = torch.empty((m, k), dtype=dt, device=grad_y.device)
        # Output tile BLOCK_M × block_n over K (full width), reduction over N in block_k steps:
        # the forward GEMM's tile shape, transposed roles.
        grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(k, cfg.block_n),)
        _dx_gemm_kernel[grid](
            grad_y, weight, ds, a, dx, m, n, k, r, triton.cdiv(k, 8),
            grad_y.stride(0), grad_y.stride(1), weight.stride(0), weight.stride(1),
            ds.stride(0), ds.stride(1), a.stride(0), a.stride(1), dx.stride(0), dx.stride(1),
            seed, threshold, inv_keep,
            HAS_DROPOUT=dropout_p > 0.0, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_n, BLOCK_N=cfg.block_k,
            R_PAD=rank_pad(r), GROUP_M=cfg.group_m, DOT_PRECISION=dot_precision(dt),
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
    return dx, da, db
