"""Launch configurations of the Triton kernels: small explicit tables, no runtime autotune.

Autotuning inside autograd costs 100 ms+ per new shape and must hand its choice to backward; a table
per shape class and GPU generation is predictable, and ``tests/kernel_aot.py`` builds every entry for
sm_90 and sm_80 to prove it fits their shared memory. ``rolora bench kernels --gemm-config`` swaps an
entry for one run (tile experiments on a GPU).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass

import torch
import triton

@dataclass(frozen=True)
class GemmConfig:
    """Tiles of the two frozen GEMMs: output tile block_m × block_n, reduction step block_k."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class BandConfig:
    """Tiles of the side kernels: block_rows × block_cols of the tall operand per step."""

    block_rows: int
    block_cols: int
    num_warps: int
    num_stages: int


# Hopper: 128×256×64 with 8 warps is the wgmma-friendly large tile (LoRAFusion's H100 table, the
# Triton matmul tutorial); 3 stages × 48 KiB fit the 227 KiB of shared memory.
_GEMM_SM90_HALF = {
    "small_m": GemmConfig(64, 128, 64, 8, 4, 4),  # M ≤ 128: few row tiles, keep the grid wide
    # M ≤ 2048: the large tile here too. H100, 2026-11-26: η (cuBLAS ÷ ours, both GEMMs) at M = 2048
    # went 0.66–0.77 → 0.79–0.90 with 128×256×64 w8 s3 (`--gemm-config medium_m=...`, BENCHMARKS.md).
    "medium_m": GemmConfig(128, 256, 64, 8, 8, 3),
    "large_m": GemmConfig(128, 256, 64, 8, 8, 3),
}
# Ampere (163 KiB): the same shapes with one stage less where the large tile would not fit.
_GEMM_SM80_HALF = {
    "small_m": GemmConfig(64, 128, 64, 8, 4, 3),
    "medium_m": GemmConfig(128, 128, 64, 8, 8, 3),
    "large_m": GemmConfig(128, 128, 64, 8, 8, 3),
}
_GEMM_FP32 = {  # 4-byte elements: half the K-step keeps shared memory in budget on both generations
    "small_m": GemmConfig(32, 64, 32, 8, 4, 3),
    "medium_m": GemmConfig(64, 128, 32, 8, 4, 3),
    "large_m": GemmConfig(128, 128, 32, 8, 8, 3),
}
_BAND_HALF = BandConfig(64, 128, 4, 3)
_BAND_FP32 = BandConfig(32, 64, 4, 3)
# The interpreter costs ~3 ms per program per step: the largest blocks make tests fast.
_GEMM_INTERPRETER = GemmConfig(64, 64, 64, 8, 4, 1)
_BAND_INTERPRETER = BandConfig(64, 64, 4, 1)


def is_interpreted() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def shape_class(m: int) -> str:
    """Shape class of a problem by its number of rows M (= batch · sequence)."""
    if m <= 128:
        return "small_m"
    if m <= 2048:
        return "medium_m"
    return "large_m"


def launch_table(dtype: torch.dtype, capability: tuple[int, int] = (9, 0)) -> list[GemmConfig]:
    """Every GEMM config ``launch_config`` can pick for ``dtype`` on that GPU generation."""
    if dtype == torch.float32:
        return list(_GEMM_FP32.values())
    return list((_GEMM_SM90_HALF if capability >= (9, 0) else _GEMM_SM80_HALF).values())


def launch_config(m: int, dtype: torch.dtype, capability: tuple[int, int] = (9, 0), r_pad: int = 16) -> GemmConfig:
    """The GEMM config for M rows of ``dtype`` activations and padded rank ``r_pad`` (interpreter: one
    large-block config). The 128×256 tile keeps one pipeline stage less at r_pad ≥ 128: its LoRA
    operand tiles then take 245,760 B at 3 stages, over sm_90's 232,448 (the AOT test caught it)."""
    if is_interpreted():
        return _GEMM_INTERPRETER
    if dtype == torch.float32:
        return _GEMM_FP32[shape_class(m)]
    cfg = (_GEMM_SM90_HALF if capability >= (9, 0) else _GEMM_SM80_HALF)[shape_class(m)]
    if r_pad >= 128 and cfg.block_n >= 256:
        cfg = dataclasses.replace(cfg, num_stages=cfg.num_stages - 1)
    return cfg


def band_config(dtype: torch.dtype) -> BandConfig:
    """The side kernels' tiles (memory-bound streaming: one config per element size)."""
    if is_interpreted():
        return _BAND_INTERPRETER
    return _BAND_FP32 if dtype == torch.float32 else _BAND_HALF


def device_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) compute capability of the GPU that runs the kernels on ``device``.

    One indirection on purpose: the ahead-of-time compile test (tests/kernel_aot.py) replaces it to
    build the launches of another GPU generation on a machine without one.
    """
    if device.type != "cuda":
        return (9, 0)  # interpreter or meta tensors: the main target
    return torch.cuda.get_device_capability(device)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def target_programs(device: torch.device) -> int:
    """Programs that fill the GPU about twice (an H100 has 132 SMs); the interpreter gets 4."""
    if is_interpreted():
        return 4  # small, so the tests' few-tile shapes still exercise the split reductions
    if device.type != "cuda":
        return 2 * 132
    return 2 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def reduction_split(reduce_tiles: int, other_tiles: int, device: torch.device) -> int:
    """How many programs share one reduction: enough to fill the GPU, at most one per tile."""
    return max(1, min(reduce_tiles, triton.cdiv(target_programs(device), max(other_tiles, 1))))


def rank_pad(r: int) -> int:
    """Rank padded for ``tl.dot``: a power of two, at least 16."""
    return max(16, triton.next_power_of_2(r))


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 dots follow torch's matmul TF32 switch (off by default: exact IEEE); halves ignore it."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"
