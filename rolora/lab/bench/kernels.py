"""``rolora bench kernels``: the fused LoRA linear against PEFT, an addmm LoRA and the frozen floor.

Per shape (K×N), M, r, dtype and dropout p it measures, for each method, forward / backward / total
time (``triton.testing.do_bench`` medians: CUDA events, L2 flushed before each call), a steady-state
back-to-back time per forward+backward (no flush, no sync between calls: exposes CPU-bound small M),
the bytes of saved activations (saved-tensor hooks, parameters excluded) and, for LoRA methods, the
worst relative error of y, dx, dA, dB against an fp32 reference on the same inputs and mask.

Methods (``bench_methods.py``): floor (raw cuBLAS x W0ᵀ, dY W0), frozen (nn.Linear), peft, peft-B
(PEFT with lora_A frozen), addmm (Unsloth style), ours full / B / A ("auto" backend) and ours with the
backend forced (full@triton, full@torch, ...).

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
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from rolora.lab.bench.kernels_methods import (BASELINES, METHODS, RawFloor, Weights, build, is_lora, is_ours,
                                          make_weights, max_rel_err, saved_bytes)
from rolora.lab.bench.kernels_report import DTYPES, Row, add_ratios, format_table, header, verdicts

GPU_SHAPES = ["4096x4096", "4096x11008", "11008x4096", "1024x1024"]
GPU_M = [512, 2048, 8192, 16384]
GPU_R = [4, 8, 16, 64]
TARGET_SHAPES = ["4096x4096", "4096x11008", "11008x4096"]
TARGET_M = [512, 2048, 8192]
TINY_SHAPES, TINY_M = ["64x96"], [16, 64]  # --tiny: the preset's structure on interpreter-sized shapes
DEFAULT_METHODS = ["floor", "frozen", "peft", "peft-B", "addmm", "full", "B", "A"]
TARGET_METHODS = ["floor", "frozen", "peft", "peft-B", "full", "B", "full@triton", "B@triton",
                  "full@torch", "B@torch"]
CPU_NOTE = ("no CUDA GPU found: timing the PyTorch path on CPU; these numbers say nothing about the "
            "kernels")


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
    p.add_argument("--gemm-config", action="append", default=[], metavar="CLASS=BMxBNxBK:wW:sS",
                   help="experiment: replace a shape class's Triton GEMM tiles for this run, e.g. "
                        "large_m=128x256x64:w8:s4 (classes small_m, medium_m, large_m; sm_90 half table)")
    p.add_argument("--cublas-max-m", type=int,
                   help="experiment: the auto backend's small-M threshold for this run (default "
                        "rolora.kernels.op.CUBLAS_MAX_M)")
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
# Per-kernel profile
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
    parser = _parser()
    args = parser.parse_args(argv)
    from pathlib import Path

    from rolora.federated.atomic import file_problem, folder_problem

    for option, problem in (("--out", args.out and folder_problem(Path(args.out))),
                            ("--csv", args.csv and file_problem(Path(args.csv)))):
        if problem:
            parser.error(f"{option} {getattr(args, option[2:])}: cannot write there: {problem}")
    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # main may run inside another process (tests): restore


def gemm_efficiency(profiles: list[dict]) -> str:
    """η per shape and M at p = 0: the floor's GPU kernel time ÷ our two fused GEMMs' kernel time.

    The review's threshold: the fused design reaches ≤1.10× only with η ≥ 0.96–1.0.
    """
    def total(method: str, shape: str, m: int, only=None) -> float:
        return sum(e["us_per_step"] for e in profiles if (e["method"], e["shape"], e["m"], e["p"]) ==
                   (method, shape, m, 0.0) and (only is None or any(k in e["kernel"] for k in only)))

    parts = []
    for shape, m in sorted({(e["shape"], e["m"]) for e in profiles}):
        ours = total("full@triton", shape, m, ("_fwd_gemm_kernel", "_dx_gemm_kernel"))
        floor = total("floor", shape, m)
        if ours > 0 and floor > 0:
            parts.append(f"{shape} M={m}: {floor / ours:.3f}")
    return "INFO η = cuBLAS floor kernels ÷ our fused GEMM kernels (profiler, p = 0): " + (
        "; ".join(parts) if parts else "n/a (needs floor and full@triton profiles)")


def _apply_experiments(args: argparse.Namespace) -> None:
    """--gemm-config / --cublas-max-m: change the launch table or the small-M rule for this process."""
    if args.cublas_max_m is not None:
        import rolora.kernels.op as op

        op.CUBLAS_MAX_M = args.cublas_max_m
    for spec in args.gemm_config:
        try:
            cls, _, tiles = spec.partition("=")
            dims, warps, stages = tiles.split(":")
            bm, bn, bk = (int(v) for v in dims.split("x"))
            import rolora.kernels.launch_configs as lc

            if cls not in lc._GEMM_SM90_HALF:
                raise ValueError(cls)
            lc._GEMM_SM90_HALF[cls] = lc.GemmConfig(bm, bn, bk, 8, int(warps.lstrip("w")), int(stages.lstrip("s")))
        except (ValueError, ImportError) as exc:
            raise _fail(f"bad --gemm-config {spec!r} ({exc}); expected e.g. large_m=128x256x64:w8:s3") from None


def _run(args: argparse.Namespace) -> int:
    _apply_experiments(args)
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
    judged = (verdicts(rows) + [gemm_efficiency(profiles)]) if args.target else []
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
