"""``rolora bench kernels``: the fused LoRA linear against PEFT, an addmm LoRA and the frozen floor.

Per shape (K×N), M, r and dtype it prints forward / backward / total time and the bytes of saved
activations (tensors autograd keeps that are not parameters, measured with saved-tensor hooks) for:

    frozen   nn.Linear with W0 frozen, x requiring grad: x W0ᵀ and dY W0, the floor
    peft     PEFT's LoRA Linear (unfused)
    addmm    cuBLAS addmm_ LoRA with a hand-written backward (Unsloth style)
    full / B-only / A-only   ours, in each RoLoRA phase

On CUDA, times are medians of ``triton.testing.do_bench`` (CUDA events, after warm-up), rotating among
several input sets. Without a GPU it times the PyTorch path on small CPU shapes, which says nothing
about the kernels (it only checks that the benchmark works).

    rolora bench kernels --quick
    rolora bench kernels --shapes 4096x4096 --m 2048 --r 16 --dtype bf16 --csv out.csv
"""

from __future__ import annotations

import argparse
import csv
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GPU_SHAPES = ["4096x4096", "4096x11008", "11008x4096", "1024x1024"]
GPU_M = [512, 2048, 8192, 16384]
GPU_R = [4, 8, 16, 64]
METHODS = ["frozen", "peft", "addmm", "full", "B-only", "A-only"]
CPU_NOTE = ("no CUDA GPU found: timing the PyTorch path on CPU; these numbers say nothing about the "
            "kernels")


@dataclass
class Row:
    """One measured (configuration, method)."""

    shape: str
    m: int
    r: int
    dtype: str
    method: str
    fwd_ms: float
    bwd_ms: float
    total_ms: float
    saved_mib: float


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rolora bench kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small subset (GPU: one shape, M, r, dtype)")
    p.add_argument("--shapes", help="comma list of KxN (in×out), e.g. 4096x4096,1024x1024")
    p.add_argument("--m", help="comma list of M (rows = batch·sequence)")
    p.add_argument("--r", help="comma list of ranks")
    p.add_argument("--dtype", help="comma list of bf16, fp16, fp32")
    p.add_argument("--methods", help=f"comma list of {','.join(METHODS)} (default: all)")
    p.add_argument("--repeats", type=int, default=20,
                   help="CPU only: timed calls per measurement, median reported (default 20)")
    p.add_argument("--rep-ms", type=float, default=100.0,
                   help="GPU only: milliseconds of timed calls per measurement, passed to "
                        "triton.testing.do_bench as rep (default 100)")
    p.add_argument("--input-sets", type=int, default=3, help="inputs rotated between calls (default 3)")
    p.add_argument("--cpu-threads", type=int, default=1,
                   help="torch threads when timing on CPU (default 1: steadier on a shared machine)")
    p.add_argument("--csv", help="also write the table to this CSV file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _ints(text: str | None, default: list[int]) -> list[int]:
    return [int(v) for v in text.split(",")] if text else default


def _defaults(args: argparse.Namespace, cuda: bool) -> tuple[list[str], list[int], list[int], list[str]]:
    if cuda:
        shapes, ms, rs, dts = GPU_SHAPES, GPU_M, GPU_R, ["bf16", "fp16"]
        if args.quick:
            shapes, ms, rs, dts = ["4096x4096"], [2048], [16], ["bf16"]
    else:
        shapes, ms, rs, dts = ["256x384"], [64, 256, 1024], [8], ["fp32"]
        if args.quick:
            ms = [64, 256]
    shapes = args.shapes.split(",") if args.shapes else shapes
    for s in shapes:
        if len(s.lower().split("x")) != 2:
            raise SystemExit(f"rolora bench kernels: error: bad shape {s!r}, expected KxN like 4096x4096")
    dts = args.dtype.split(",") if args.dtype else dts
    for d in dts:
        if d not in DTYPES:
            raise SystemExit(f"rolora bench kernels: error: unknown dtype {d!r}, choose from {list(DTYPES)}")
    return shapes, _ints(args.m, ms), _ints(args.r, rs), dts


def build(method: str, k: int, n: int, r: int, dtype: torch.dtype, device: str) -> nn.Module:
    """The module for ``method``: same seeded W0, bias and adapters (B non-zero) for every method."""
    from rolora.kernels.addmm_lora import AddmmLoRALinear
    from rolora.kernels.layer import LoRALinear

    gen = torch.Generator().manual_seed(0)
    w = (torch.randn(n, k, generator=gen) * k ** -0.5).to(device, dtype)
    b = torch.zeros(n).to(device, dtype)
    a = (torch.randn(r, k, generator=gen) * k ** -0.5).to(device, dtype)
    bb = (torch.randn(n, r, generator=gen) * r ** -0.5).to(device, dtype)
    if method == "frozen":
        layer = nn.Linear(k, n).to(device, dtype)
        layer.weight.data.copy_(w), layer.bias.data.copy_(b)
        layer.requires_grad_(False)
        return layer
    if method == "peft":
        import peft

        holder = nn.Sequential()
        holder.add_module("fc", nn.Linear(k, n).to(device, dtype))
        cfg = peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=["fc"], lora_dropout=0.0)
        model = peft.get_peft_model(holder, cfg, autocast_adapter_dtype=False)
        fc = model.base_model.model.fc
        with torch.no_grad():
            fc.base_layer.weight.copy_(w), fc.base_layer.bias.copy_(b)
            fc.lora_A["default"].weight.copy_(a), fc.lora_B["default"].weight.copy_(bb)
        return model
    if method == "addmm":
        return AddmmLoRALinear(w, b, a, bb, scale=2.0)
    layer = LoRALinear(k, n, r, alpha=2 * r, device=device, dtype=dtype, adapter_dtype=dtype,
                       init_weight=False)
    with torch.no_grad():
        layer.weight.copy_(w), layer.bias.copy_(b), layer.lora_A.copy_(a), layer.lora_B.copy_(bb)
    layer.set_phase({"full": "full", "B-only": "B", "A-only": "A"}[method])
    return layer


def saved_bytes(module: nn.Module, x: Tensor) -> int:
    """Bytes autograd saves in one forward, parameters (and views of them) excluded."""
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


def measure(method: str, k: int, n: int, m: int, r: int, dtype: torch.dtype, device: str,
            timer: Callable[[Callable[[], object]], float], input_sets: int) -> tuple[float, float, float, int]:
    """(forward ms, backward ms, total ms, saved bytes) for one method and configuration.

    Backward is (forward + backward) − forward, clipped at 0 (timer noise can make it negative).
    """
    module = build(method, k, n, r, dtype, device)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(m, k, generator=gen).to(device, dtype).requires_grad_() for _ in range(input_sets)]
    gys = [torch.randn(m, n, generator=gen).to(device, dtype) for _ in range(input_sets)]
    i = 0

    def fwd() -> None:
        nonlocal i
        i = (i + 1) % input_sets
        module(xs[i])  # builds the autograd graph, as a training forward does

    def fwd_bwd() -> None:
        nonlocal i
        i = (i + 1) % input_sets
        module(xs[i]).backward(gys[i])
        xs[i].grad = None
        for p in module.parameters():
            p.grad = None

    t_fwd = timer(fwd)
    t_total = timer(fwd_bwd)
    return t_fwd, max(t_total - t_fwd, 0.0), t_total, saved_bytes(module, xs[0])


def _header(cuda: bool) -> str:
    try:
        import triton
        tv = triton.__version__
    except Exception:
        tv = "not installed"
    dev = (f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})" if cuda else "CPU")
    return (f"device: {dev} | torch {torch.__version__} | triton {tv} | "
            f"{datetime.date.today().isoformat()}")


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table."""
    head = f"{'K×N':>11} {'M':>6} {'r':>3} {'dtype':>5} {'method':>7} {'fwd ms':>9} {'bwd ms':>9} {'total ms':>9} {'saved MiB':>9}"
    lines = [head, "-" * len(head)]
    for w in rows:
        lines.append(f"{w.shape:>11} {w.m:>6} {w.r:>3} {w.dtype:>5} {w.method:>7} {w.fwd_ms:>9.3f} "
                     f"{w.bwd_ms:>9.3f} {w.total_ms:>9.3f} {w.saved_mib:>9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table (and write --csv). Returns 0."""
    args = _parser().parse_args(argv)
    threads = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)  # main may run inside another process (tests): restore


def _run(args: argparse.Namespace) -> int:
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print(CPU_NOTE)
        torch.set_num_threads(args.cpu_threads)
    shapes, ms, rs, dts = _defaults(args, cuda)
    methods = args.methods.split(",") if args.methods else METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"rolora bench kernels: error: unknown methods {unknown}, choose from {METHODS}")
    if args.repeats < 1 or not args.rep_ms > 0:
        raise SystemExit(f"rolora bench kernels: error: --repeats must be ≥ 1 and --rep-ms > 0, got "
                         f"{args.repeats} and {args.rep_ms}")
    timer = _timer(cuda, args.repeats, args.rep_ms)
    configs = [(s, m, r, d, meth) for s in shapes for m in ms for r in rs for d in dts for meth in methods]
    from tqdm import tqdm

    rows: list[Row] = []
    first = configs[0]  # one discarded run: thread pools, allocator and dispatch caches warm up
    k0, n0 = (int(v) for v in first[0].lower().split("x"))
    measure(first[4], k0, n0, first[1], first[2], DTYPES[first[3]], device, timer, args.input_sets)
    bar = tqdm(configs, file=sys.stderr, disable=args.no_progress or not sys.stderr.isatty(), desc="bench")
    for shape, m, r, d, meth in bar:
        k, n = (int(v) for v in shape.lower().split("x"))
        f, b, t, saved = measure(meth, k, n, m, r, DTYPES[d], device, timer, args.input_sets)
        rows.append(Row(shape, m, r, d, meth, f, b, t, saved / 2**20))
    print(_header(cuda))
    print(format_table(rows))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
            writer.writeheader()
            writer.writerows(asdict(w) for w in rows)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
