"""``rolora bench kernels``: the fused LoRA linear against PEFT, an addmm LoRA and the frozen floor.

Per shape (K×N), M, r, dtype and dropout p it measures, for each method, forward / backward / total
time (``triton.testing.do_bench`` medians: CUDA events, L2 flushed before each call), a steady-state
back-to-back time per forward+backward (no flush, no sync between calls: exposes CPU-bound small M),
the bytes of saved activations (saved-tensor hooks, parameters excluded) and, for LoRA methods, the
worst relative error of y, dx, dA, dB against an fp32 reference on the same inputs and mask.

    floor        raw cuBLAS x W0ᵀ and dY W0: no autograd, no bias (the target's denominator)
    frozen       nn.Linear with W0 frozen, x requiring grad (autograd's floor)
    peft         PEFT's LoRA ``Linear`` layer called directly (no PeftModel wrapper)
    peft-B       the same with lora_A frozen: the fair comparator of our B-only phase
    addmm        cuBLAS addmm_ LoRA with a hand-written backward (Unsloth style)
    full, B, A   ours in each RoLoRA phase, backend "auto" (Triton, or cuBLAS at M ≤ CUBLAS_MAX_M)
    full@triton, B@triton, full@torch, B@torch   ours with the backend forced (the small-M rule's data)

Ratio columns: ×floor (total / floor total), ovh/PEFT ((total − floor) / (PEFT's total − floor), PEFT
in the same phase and p) and B/full (our B-only total / our full total). On CUDA a profiler pass
records per-kernel times of our methods (``kernels.csv``). ``--target`` is the preset for the
targets (Llama-7B projections, M 512/2048/8192, r 16, bf16, p 0 and 0.1) and ends with one PASS/MISS
line per target; ``--out DIR`` writes bench.csv, bench.json, kernels.csv and the printed report.

Without a GPU it times the PyTorch path on small CPU shapes (and the Triton interpreter for the
``@triton`` methods), which says nothing about speed: it only checks that the benchmark works
(``--tiny`` shrinks the preset to such shapes).

    rolora bench kernels --quick
    rolora bench kernels --target --out runs/bench
    rolora bench kernels --shapes 4096x4096 --m 2048 --r 16 --dtype bf16 --p 0,0.1 --csv out.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from rolora.kernels.phase import LoRAPhase

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GPU_SHAPES = ["4096x4096", "4096x11008", "11008x4096", "1024x1024"]
GPU_M = [512, 2048, 8192, 16384]
GPU_R = [4, 8, 16, 64]
TARGET_SHAPES = ["4096x4096", "4096x11008", "11008x4096"]
TARGET_M = [512, 2048, 8192]
TINY_SHAPES, TINY_M = ["64x96"], [16, 64]  # --tiny: the preset's structure on interpreter-sized shapes
BASELINES = ["floor", "frozen", "addmm"]  # dropout-free methods, measured at p = 0 only
METHODS = ["floor", "frozen", "peft", "peft-B", "addmm", "full", "B", "A",
           "full@triton", "B@triton", "full@torch", "B@torch"]
DEFAULT_METHODS = ["floor", "frozen", "peft", "peft-B", "addmm", "full", "B", "A"]
TARGET_METHODS = ["floor", "frozen", "peft", "peft-B", "full", "B", "full@triton", "B@triton",
                  "full@torch", "B@torch"]
CPU_NOTE = ("no CUDA GPU found: timing the PyTorch path on CPU; these numbers say nothing about the "
            "kernels")
TOL = {torch.bfloat16: 3e-2, torch.float16: 1e-2, torch.float32: 1e-4}
FLOOR_TARGET, FLOOR_MOONSHOT, OVERHEAD_TARGET = 1.10, 1.05, 1 / 3


@dataclass
class Row:
    """One measured (configuration, method)."""

    shape: str
    m: int
    r: int
    dtype: str
    p: float
    method: str
    fwd_ms: float
    bwd_ms: float
    total_ms: float
    steady_ms: float
    saved_mib: float
    max_rel_err: float = float("nan")
    x_floor: float = float("nan")
    ovh_vs_peft: float = float("nan")
    b_vs_full: float = float("nan")


@dataclass
class Config:
    """One benchmarked configuration."""

    k: int
    n: int
    m: int
    r: int
    dtype: str
    methods: list[str] = field(default_factory=list)
    ps: list[float] = field(default_factory=list)

    @property
    def shape(self) -> str:
        return f"{self.k}x{self.n}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rolora bench kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small subset (GPU: one shape, M, r, dtype)")
    p.add_argument("--target", action="store_true",
                   help="the targets' preset: Llama-7B shapes, M 512/2048/8192, r 16, bf16, p 0 and 0.1, "
                        "PASS/MISS lines at the end (under 5 minutes on an H100)")
    p.add_argument("--tiny", action="store_true", help="with --target: tiny shapes (CPU / interpreter smoke)")
    p.add_argument("--shapes", help="comma list of KxN (in×out), e.g. 4096x4096,1024x1024")
    p.add_argument("--m", help="comma list of M (rows = batch·sequence)")
    p.add_argument("--r", help="comma list of ranks")
    p.add_argument("--dtype", help="comma list of bf16, fp16, fp32")
    p.add_argument("--p", help="comma list of LoRA dropout probabilities (default 0)")
    p.add_argument("--methods", help=f"comma list of {','.join(METHODS)}")
    p.add_argument("--adapter-dtype", choices=sorted(DTYPES),
                   help="our adapters' dtype (default: the activations'; the layer's default is fp32)")
    p.add_argument("--repeats", type=int, default=20,
                   help="CPU only: timed calls per measurement, median reported (default 20)")
    p.add_argument("--rep-ms", type=float, default=100.0,
                   help="GPU only: milliseconds of timed calls per measurement, passed to "
                        "triton.testing.do_bench as rep (default 100; --target uses 40)")
    p.add_argument("--input-sets", type=int, default=3, help="inputs rotated between calls (default 3)")
    p.add_argument("--cpu-threads", type=int, default=1,
                   help="torch threads when timing on CPU (default 1: steadier on a shared machine)")
    p.add_argument("--no-profile", action="store_true", help="skip the per-kernel profiler pass")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--out", help="folder for bench.csv, bench.json, kernels.csv and report.txt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _ints(text: str | None, default: list[int]) -> list[int]:
    return [int(v) for v in text.split(",")] if text else default


def _fail(msg: str) -> SystemExit:
    return SystemExit(f"rolora bench kernels: error: {msg}")


def configs(args: argparse.Namespace, cuda: bool) -> list[Config]:
    """The configurations to run, from the options (``--target`` / ``--quick`` / explicit lists)."""
    if args.target:
        shapes, ms = (TINY_SHAPES, TINY_M) if args.tiny else (TARGET_SHAPES, TARGET_M)
        rs, dts = [16], ["bf16" if cuda else "fp32"]
        methods, ps = TARGET_METHODS, [0.0, 0.1]
    elif cuda:
        shapes, ms, rs, dts = GPU_SHAPES, GPU_M, GPU_R, ["bf16", "fp16"]
        if args.quick:
            shapes, ms, rs, dts = ["4096x4096"], [2048], [16], ["bf16"]
        methods, ps = DEFAULT_METHODS, [0.0]
    else:
        shapes, ms, rs, dts = ["256x384"], [64, 256, 1024], [8], ["fp32"]
        if args.quick:
            ms = [64, 256]
        methods, ps = DEFAULT_METHODS, [0.0]
    shapes = args.shapes.split(",") if args.shapes else shapes
    parsed = []
    for s in shapes:
        parts = s.lower().split("x")
        if len(parts) != 2 or not all(v.isdigit() for v in parts):
            raise _fail(f"bad shape {s!r}, expected KxN like 4096x4096")
        parsed.append((int(parts[0]), int(parts[1])))
    dts = args.dtype.split(",") if args.dtype else dts
    for d in dts:
        if d not in DTYPES:
            raise _fail(f"unknown dtype {d!r}, choose from {list(DTYPES)}")
    methods = args.methods.split(",") if args.methods else methods
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise _fail(f"unknown methods {unknown}, choose from {METHODS}")
    ps = [float(v) for v in args.p.split(",")] if args.p else ps
    if not all(0.0 <= p < 1.0 for p in ps):
        raise _fail(f"dropout p must be in [0, 1), got {ps}")
    return [Config(k, n, m, r, d, methods, ps) for (k, n) in parsed for m in _ints(args.m, ms)
            for r in _ints(args.r, rs) for d in dts]


# ---------------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------------


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
    from rolora.kernels.addmm_lora import AddmmLoRALinear
    from rolora.kernels.layer import LoRALinear

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
    layer = LoRALinear(k, n, r, alpha=wt.scale * r, dropout=p, bias=False, backend=backend or "auto",
                       device=device, dtype=dtype, adapter_dtype=adapter_dtype or dtype, init_weight=False)
    with torch.no_grad():
        layer.weight.copy_(wt.w)
        layer.lora_A.copy_(wt.a)
        layer.lora_B.copy_(wt.b)
    layer.set_phase(LoRAPhase(phase))
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


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------


def _timer(cuda: bool, repeats: int, rep_ms: float) -> Callable[[Callable[[], object]], float]:
    """Median milliseconds per call: do_bench over ``rep_ms`` ms on GPU, ``repeats`` calls on CPU."""
    if cuda:
        import triton.testing

        def gpu_time(fn: Callable[[], object]) -> float:
            # do_bench's rep is a time budget in ms (it picks the call count), not a repeat count.
            return float(triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median"))
        return gpu_time

    def cpu_time(fn: Callable[[], object]) -> float:
        for _ in range(5):  # warm-up: allocator, first-call dispatch
            fn()
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)
    return cpu_time


def steady_ms(fn: Callable[[], object], cuda: bool, calls: int = 30) -> float:
    """Milliseconds per call of ``calls`` back-to-back calls (no cache flush, no sync in between).

    When the host cannot issue work as fast as the GPU runs it, this exceeds the do_bench median.
    """
    fn()
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / calls
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1e3 / calls


class Inputs:
    """Rotating input sets (x requiring grad, dY) so caches do not flatter repeated calls."""

    def __init__(self, m: int, k: int, n: int, dtype: torch.dtype, device: str, sets: int) -> None:
        gen = torch.Generator(device=device).manual_seed(1)
        self.xs = [torch.randn(m, k, generator=gen, device=device).to(dtype).requires_grad_()
                   for _ in range(sets)]
        self.gys = [torch.randn(m, n, generator=gen, device=device).to(dtype) for _ in range(sets)]
        self.i = 0

    def next(self) -> tuple[Tensor, Tensor]:
        self.i = (self.i + 1) % len(self.xs)
        return self.xs[self.i], self.gys[self.i]


def step_fns(module: nn.Module, inputs: Inputs) -> tuple[Callable[[], None], Callable[[], None]]:
    """(forward, forward+backward) callables for timing."""
    if isinstance(module, RawFloor):
        def fwd() -> None:
            x, _ = inputs.next()
            module(x.detach())

        def fwd_bwd() -> None:
            x, gy = inputs.next()
            module(x.detach())
            module.backward(gy)
        return fwd, fwd_bwd

    params = [p for p in module.parameters() if p.requires_grad]

    def fwd() -> None:
        x, _ = inputs.next()
        module(x)  # builds the autograd graph, as a training forward does

    def fwd_bwd() -> None:
        x, gy = inputs.next()
        module(x).backward(gy)
        x.grad = None
        for p in params:
            p.grad = None
    return fwd, fwd_bwd


# ---------------------------------------------------------------------------------------------------
# Correctness against an fp32 reference on the same inputs (and the same dropout mask)
# ---------------------------------------------------------------------------------------------------


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
    from rolora.kernels.op import dropout_keep_mask, lora_linear

    if p > 0.0 and not is_ours(method):
        return float("nan")
    x = x.detach().clone().requires_grad_()
    keep = None
    if is_ours(method):
        layer = build(method, wt, p, adapter_dtype)
        backend, seed = method.partition("@")[2] or "auto", 1234
        y = lora_linear(x, layer.weight, None, layer.lora_A, layer.lora_B, layer.scale, p, seed, backend,
                        layer.cublas_max_m)
        if p > 0.0:
            path = _resolved_backend(backend, x, layer.r, layer.cublas_max_m)
            keep = dropout_keep_mask(seed, x.shape[0], x.shape[1], p, x.device, path)
        factor_a, factor_b = layer.lora_A, layer.lora_B
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


def _resolved_backend(backend: str, x: Tensor, r: int, cublas_max_m: int | None) -> str:
    from rolora.kernels.op import CUBLAS_MAX_M, MAX_TRITON_RANK, resolve_backend

    resolved = resolve_backend(backend, x.device)
    small = CUBLAS_MAX_M if cublas_max_m is None else cublas_max_m
    if backend == "auto" and resolved == "triton" and (x.shape[0] <= small or r > MAX_TRITON_RANK):
        return "torch"
    return resolved


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


# ---------------------------------------------------------------------------------------------------
# Per-kernel profile, header, verdicts
# ---------------------------------------------------------------------------------------------------


def kernel_profile(fwd_bwd: Callable[[], None], cuda: bool, iters: int = 5) -> list[tuple[str, int, float]]:
    """(kernel name, launches per step, µs per step) of one forward+backward, from torch.profiler.

    On CUDA: the GPU kernels themselves; on CPU (script check only): the ops' self time.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    fwd_bwd()
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        for _ in range(iters):
            fwd_bwd()
        if cuda:
            torch.cuda.synchronize()
    agg: dict[str, tuple[int, float]] = {}
    for ev in prof.events():
        if cuda and ev.device_type != DeviceType.CUDA:
            continue
        us = ev.time_range.elapsed_us() if cuda else ev.self_cpu_time_total
        calls, total = agg.get(ev.name[:90], (0, 0.0))
        agg[ev.name[:90]] = (calls + 1, total + us)
    out = [(name, round(calls / iters), total / iters) for name, (calls, total) in agg.items() if total > 0]
    return sorted(out, key=lambda e: -e[2])[:12]


def header(cuda: bool) -> dict[str, str]:
    """Device, driver, clocks, library versions and date."""
    info = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__}
    for mod in ("triton", "peft"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent is reported, not fatal
            info[mod] = "not installed"
    if not cuda:
        info["device"] = "CPU"
        return info
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    info.update(device=props.name, capability=f"sm_{props.major}{props.minor}",
                sms=str(props.multi_processor_count), cuda=str(torch.version.cuda))
    query = "driver_version,clocks.sm,clocks.max.sm,clocks.mem,clocks.max.mem,power.limit,temperature.gpu"
    try:
        smi = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        info["nvidia-smi " + query] = smi[0] if smi else "(no output)"
    except Exception as exc:  # noqa: BLE001
        info["nvidia-smi"] = f"unavailable ({type(exc).__name__})"
    return info


def add_ratios(rows: list[Row]) -> None:
    """Fill ×floor, overhead ÷ PEFT's overhead and B/full in place."""
    by = {(w.shape, w.m, w.r, w.dtype, w.p, w.method): w for w in rows}
    for w in rows:
        base = (w.shape, w.m, w.r, w.dtype)
        floor = by.get((*base, 0.0, "floor"))
        if floor is None or w.method == "floor":
            continue
        w.x_floor = w.total_ms / floor.total_ms
        if is_ours(w.method):
            peft = by.get((*base, w.p, "peft-B" if phase_of_method(w.method) == LoRAPhase.B_ONLY else "peft"))
            if peft is not None and peft.total_ms > floor.total_ms:
                w.ovh_vs_peft = (w.total_ms - floor.total_ms) / (peft.total_ms - floor.total_ms)
            full = by.get((*base, w.p, w.method.replace("B", "full", 1)))
            if w.method.startswith("B") and full is not None:
                w.b_vs_full = w.total_ms / full.total_ms


def verdicts(rows: list[Row]) -> list[str]:
    """One PASS/MISS line per target (over our "auto" rows: what a user gets)."""
    ours = [w for w in rows if w.method in ("full", "B")]
    lines = []

    def line(name: str, bad: list[Row], worst: Row | None, what: str) -> None:
        status = "PASS" if not bad and worst is not None else ("MISS" if worst is not None else "N/A ")
        where = f" (worst {what} at {worst.shape} M={worst.m} {worst.method} p={worst.p})" if worst else ""
        lines.append(f"{status} {name}: {len(bad)} of the rows miss{where}")

    def worst_by(cands: list[Row], key: Callable[[Row], float]) -> Row | None:
        cands = [w for w in cands if not math.isnan(key(w))]
        return max(cands, key=key) if cands else None

    big = [w for w in ours if w.m >= 2048 and w.p == 0.0]
    for limit, name in ((FLOOR_TARGET, "TARGET"), (FLOOR_MOONSHOT, "MOONSHOT")):
        w = worst_by(big, lambda r: r.x_floor)
        line(f"{name} ≤{limit:.2f}× floor at M ≥ 2048 (p = 0, full and B-only)",
             [r for r in big if not r.x_floor <= limit], w, f"{w.x_floor:.3f}×" if w else "")
    w = worst_by(ours, lambda r: r.ovh_vs_peft)
    line(f"TARGET LoRA overhead ≤ 1/3 of PEFT's (all M, p 0 and 0.1)",
         [r for r in ours if not r.ovh_vs_peft <= OVERHEAD_TARGET], w, f"{w.ovh_vs_peft:.2f}" if w else "")
    by = {(w.shape, w.m, w.r, w.dtype, w.p, w.method): w for w in rows}

    def vs_peft(r: Row) -> float:
        peft = by.get((r.shape, r.m, r.r, r.dtype, r.p, "peft-B" if r.method == "B" else "peft"))
        return r.total_ms / peft.total_ms if peft else float("nan")
    w = worst_by(ours, vs_peft)
    line("TARGET never slower than PEFT (all M incl. 512, p 0 and 0.1; B-only vs PEFT with A frozen)",
         [r for r in ours if not vs_peft(r) <= 1.0], w, f"{vs_peft(w):.3f}× PEFT" if w else "")
    bs = [r for r in ours if r.method == "B"]
    w = worst_by(bs, lambda r: r.b_vs_full)
    line("TARGET B-only faster than full (all rows)", [r for r in bs if not r.b_vs_full < 1.0], w,
         f"{w.b_vs_full:.3f}× full" if w else "")
    checked = [r for r in rows if not math.isnan(r.max_rel_err)]
    w = worst_by(checked, lambda r: r.max_rel_err)
    tol = max(TOL[DTYPES[r.dtype]] for r in rows) if rows else 0.0
    line(f"CHECK correctness against fp32 (rel err ≤ {tol:.0e})",
         [r for r in checked if not r.max_rel_err <= TOL[DTYPES[r.dtype]]], w,
         f"{w.max_rel_err:.1e}" if w else "")
    lines.append(small_m_rule(rows))
    return lines


def small_m_rule(rows: list[Row]) -> str:
    """Where the fused kernels beat the cuBLAS path, per phase and p (data for CUBLAS_MAX_M)."""
    from rolora.kernels.op import CUBLAS_MAX_M

    by = {(w.shape, w.m, w.p, w.method): w for w in rows}
    wins = []
    for (shape, m, p, method), w in sorted(by.items()):
        if method.endswith("@triton"):
            other = by.get((shape, m, p, method.replace("@triton", "@torch")))
            if other is not None:
                wins.append(f"{shape} M={m} {method.partition('@')[0]} p={p}: "
                            f"{'triton' if w.total_ms < other.total_ms else 'cuBLAS'} "
                            f"({w.total_ms:.3f} vs {other.total_ms:.3f} ms)")
    if not wins:
        return f"INFO small-M rule: CUBLAS_MAX_M = {CUBLAS_MAX_M} (no @triton/@torch pairs measured)"
    return f"INFO small-M rule (CUBLAS_MAX_M = {CUBLAS_MAX_M}); faster path per row: " + "; ".join(wins)


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    head = (f"{'K×N':>11} {'M':>6} {'r':>3} {'dtype':>5} {'p':>4} {'method':>11} {'fwd ms':>8} "
            f"{'bwd ms':>8} {'total ms':>9} {'steady':>8} {'×floor':>7} {'ovh/PEFT':>8} {'B/full':>6} "
            f"{'saved MiB':>9} {'rel err':>8}")
    lines = [head, "-" * len(head)]

    def f(v: float, spec: str) -> str:
        return format(v, spec) if not math.isnan(v) else "-"

    for w in rows:
        lines.append(f"{w.shape:>11} {w.m:>6} {w.r:>3} {w.dtype:>5} {w.p:>4} {w.method:>11} {w.fwd_ms:>8.3f} "
                     f"{w.bwd_ms:>8.3f} {w.total_ms:>9.3f} {w.steady_ms:>8.3f} {f(w.x_floor, '.3f'):>7} "
                     f"{f(w.ovh_vs_peft, '.2f'):>8} {f(w.b_vs_full, '.3f'):>6} {w.saved_mib:>9.2f} "
                     f"{f(w.max_rel_err, '.1e'):>8}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------


def measure(cfg: Config, method: str, p: float, wt: Weights, inputs: Inputs, timer, cuda: bool,
            adapter_dtype: torch.dtype | None) -> tuple[Row, Callable[[], None]]:
    """One row: times, steady-state time, saved bytes, correctness."""
    module = build(method, wt, p, adapter_dtype)
    fwd, fwd_bwd = step_fns(module, inputs)
    t_fwd, t_total = timer(fwd), timer(fwd_bwd)
    steady = steady_ms(fwd_bwd, cuda)
    saved = saved_bytes(module, inputs.xs[0])
    err = max_rel_err(method, wt, p, inputs.xs[0], inputs.gys[0], adapter_dtype) if is_lora(method) \
        else float("nan")
    row = Row(cfg.shape, cfg.m, cfg.r, cfg.dtype, p, method, t_fwd, max(t_total - t_fwd, 0.0), t_total,
              steady, saved / 2**20, err)
    return row, fwd_bwd


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table (and write --csv / --out). Returns 0."""
    args = _parser().parse_args(argv)
    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # main may run inside another process (tests): restore


def _run(args: argparse.Namespace) -> int:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if args.repeats < 1 or not args.rep_ms > 0:
        raise _fail(f"--repeats must be ≥ 1 and --rep-ms > 0, got {args.repeats} and {args.rep_ms}")
    cfgs = configs(args, cuda)
    if not cuda:
        print(CPU_NOTE)
        torch.set_num_threads(args.cpu_threads)
    rep_ms = 40.0 if args.target and args.rep_ms == 100.0 else args.rep_ms
    timer = _timer(cuda, args.repeats, rep_ms)
    adapter_dtype = DTYPES[args.adapter_dtype] if args.adapter_dtype else None
    jobs = [(c, meth, p) for c in cfgs for meth in c.methods
            for p in (c.ps if meth not in BASELINES else [0.0])]
    from tqdm import tqdm

    rows: list[Row] = []
    profiles: list[dict] = []
    bar = tqdm(total=len(jobs), file=sys.stderr, disable=args.no_progress or not sys.stderr.isatty(),
               desc="bench")
    t_start = time.perf_counter()
    for cfg in cfgs:
        dtype = DTYPES[cfg.dtype]
        wt = make_weights(cfg.k, cfg.n, cfg.r, dtype, device)
        inputs = Inputs(cfg.m, cfg.k, cfg.n, dtype, device, args.input_sets)
        for c, meth, p in jobs:
            if c is not cfg:
                continue
            row, fwd_bwd = measure(cfg, meth, p, wt, inputs, timer, cuda, adapter_dtype)
            rows.append(row)
            if not args.no_profile and (is_ours(meth) or meth == "floor"):
                for name, calls, us in kernel_profile(fwd_bwd, cuda):
                    profiles.append({"shape": cfg.shape, "m": cfg.m, "r": cfg.r, "dtype": cfg.dtype, "p": p,
                                     "method": meth, "kernel": name, "calls": calls, "us_per_step": us})
            bar.update()
        del wt, inputs
        if cuda:
            torch.cuda.empty_cache()
    bar.close()
    add_ratios(rows)
    info = header(cuda)
    judged = verdicts(rows) if args.target else []
    lines = [" | ".join(f"{k}: {v}" for k, v in info.items()), format_table(rows), *judged,
             f"bench wall time {time.perf_counter() - t_start:.0f} s"]
    report = "\n".join(lines)
    print(report)
    _write(args, rows, profiles, info, report, judged)
    return 0


def _write(args, rows: list[Row], profiles: list[dict], info: dict, report: str, verdict_lines: list[str]) -> None:
    paths = []
    if args.csv:
        paths.append(args.csv)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        paths.append(os.path.join(args.out, "bench.csv"))
        with open(os.path.join(args.out, "bench.json"), "w") as fh:
            json.dump({"header": info, "rows": [asdict(w) for w in rows], "verdicts": verdict_lines},
                      fh, indent=1, default=str)
        with open(os.path.join(args.out, "report.txt"), "w") as fh:
            fh.write(report + "\n")
        with open(os.path.join(args.out, "kernels.csv"), "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["shape", "m", "r", "dtype", "p", "method", "kernel",
                                                    "calls", "us_per_step"])
            writer.writeheader()
            writer.writerows(profiles)
    for path in paths:
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
            writer.writeheader()
            writer.writerows(asdict(w) for w in rows)
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
