"""``rolora bench aggregate``: server-side aggregation time, memory and per-client bytes per method.

Measures ``method.aggregate`` (validation included; validation alone is shown too) on synthetic
client uploads for a layer set (default: 32 layers of 4096×4096, r = 8, 10 and 50 clients) and
prints a Markdown table. To keep the *input* memory bounded, uploads come from a pool of
``--distinct`` synthetic client models reused across the K clients; the server still does the full
K-client work (nothing is deduplicated).

Memory: on CUDA, the peak of ``torch.cuda.max_memory_allocated`` above the allocation before the
call. On CPU, the growth of the process's peak resident set (VmHWM after resetting it through
/proc/self/clear_refs, minus VmRSS before): it counts the tensors the call allocates (including the
new state) of 128 KiB or more (the bench pins glibc's mmap threshold there so freed blocks leave
the process); smaller tensors can reuse already-resident heap memory and are under-counted.

Threads: on a CPU shared with other busy processes, pass ``--threads 1``; with more threads than
free cores, OpenMP barriers in the many small per-client matmuls and LAPACK calls can make a call
10-100x slower and the numbers meaningless.

    rolora bench aggregate --quick --threads 1
    rolora bench aggregate --layers 8 --dim 2048 --clients 10,50 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from rolora.federated.api import AggregationError, ClientUpdate, LayerSpec, Method
from rolora.federated.registry import available_methods, method_from_spec
from rolora.federated.round import run_round
from rolora.federated.synthetic import synthetic_round, synthetic_training
from rolora.federated.validation import check_updates
from rolora.federated.atomic import atomic_file, file_problem

QUICK = {"layers": 4, "shape": (1024, 768), "clients": [10, 50], "repeats": 3}
"""``--quick``: small enough for a 2-core CPU in well under a minute (overrides --layers/--dim/--shape/--clients)."""


@dataclass
class Row:
    """One measured (method, clients) setting."""

    method: str
    clients: int
    aggregate_ms: float
    validate_ms: float
    peak_mib: float | None
    state_mib: float
    upload_mib_per_client: float
    download_mib_per_client: float


def _parse_shape(text: str) -> tuple[int, int]:
    try:
        d, n = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 4096x1024 (out x in), got {text!r}") from None
    if d < 1 or n < 1:
        raise argparse.ArgumentTypeError(f"shape sizes must be >= 1, got {text!r}")
    return d, n


def _parse_ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rolora bench aggregate",
        description="Server-side aggregation time, peak memory and per-client bytes, per federated method.",
    )
    p.add_argument("--layers", type=int, default=32, help="number of targeted layers (default 32)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--dim", type=int, help="square layers DxD (default 4096)")
    size.add_argument("--shape", type=_parse_shape, help="layer shape DxN = out x in, e.g. 4096x1024")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank of every client (default 8)")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (default 16)")
    p.add_argument("--clients", type=_parse_ints, default=[10, 50], help="client counts, e.g. 10,50 (default)")
    p.add_argument("--methods", default="all",
                   help="comma-separated methods, or 'all' (default); each a name with optional constructor "
                        "parameters, e.g. rolora:period=2")
    p.add_argument("--round", type=int, default=1, help="which round to aggregate (1: RoLoRA's B-round)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", choices=["float32", "float64", "bfloat16", "float16"], default="float32")
    p.add_argument("--repeats", type=int, help="timed repeats; the median is reported (default 5, --quick 3)")
    p.add_argument("--distinct", type=int, default=4, help="distinct synthetic client models reused across clients")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--quick", action="store_true", help="small preset for a CPU: 4 layers 1024x768, 10,50 clients, 3 repeats")
    p.add_argument("--json", metavar="PATH", help="also write the rows (and the configuration) as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-memory", action="store_true",
        help="skip the memory measurement (on CPU it pins glibc's mmap threshold for the whole process)",
    )
    return p


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _page_size()


def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _pin_mmap_threshold(nbytes: int = 128 * 1024) -> bool:
    """Make glibc serve every block >= ``nbytes`` by mmap and unmap it on free (no dynamic threshold).

    Without this, glibc keeps freed large blocks resident and later calls reuse them, so the peak
    RSS growth of a repeat reads 0. Returns False where glibc's ``mallopt`` is unavailable.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        return bool(libc.mallopt(m_mmap_threshold, nbytes))
    except (OSError, AttributeError):
        return False


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _state_bytes(state) -> int:
    """Bytes of every tensor the server holds in ``state`` (exact)."""
    return sum(x.numel() * x.element_size() for tensors in state.layers.values() for x in tensors.values())


def _measure_once(
    method: Method, state, updates, t: int, device: torch.device, memory: bool = True
) -> tuple[float, float | None, int]:
    """(seconds, peak bytes above the start or None, bytes of the new state) of one aggregate call."""
    if not memory:
        start = time.perf_counter()
        out = method.aggregate(state, updates, t)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds, peak = time.perf_counter() - start, None
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        out = method.aggregate(state, updates, t)
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        can_reset = _reset_peak_rss()
        before = _rss_bytes()
        start = time.perf_counter()
        out = method.aggregate(state, updates, t)
        seconds = time.perf_counter() - start
        hwm = _peak_rss_bytes()
        peak = max(0, hwm - before) if (can_reset and hwm is not None) else None
    size = _state_bytes(out)
    del out
    return seconds, peak, size


def _uploads(method: Method, specs, rank, alpha, k, distinct, t, seed, dtype, device):
    """State before round t and K client updates drawn from ``distinct`` synthetic models."""
    state = method.init(specs, rank, alpha=alpha, seed=seed, dtype=dtype, device=device)
    pool = list(range(min(distinct, k)))
    kept: dict = {}
    for tt in range(1, t):  # reach round t with the pool's clients
        result = run_round(method, state, pool, synthetic_training(method, seed=seed + tt, scale=0.01), kept)
        state, kept = result.state, result.kept
    _, pool_updates, _ = synthetic_round(method, state, pool, kept=kept, seed=seed + t, scale=0.01)
    updates = [
        ClientUpdate(c, float(100 + c), pool_updates[c % len(pool)].tensors) for c in range(k)
    ]
    return state, updates


def method_specs(text: str) -> list[str]:
    """The method specs of ``--methods`` (``all``: every method with its default parameters)."""
    return available_methods() if text == "all" else [m.strip() for m in text.split(",") if m.strip()]


def run(args: argparse.Namespace) -> list[Row]:
    """Measure every (method, clients) setting; returns the rows, each labelled with its method spec."""
    labels = method_specs(args.methods)
    methods = [method_from_spec(s) for s in labels]  # bad specs fail here, naming the spec
    d, n = args.shape
    specs = {f"layer{i}": LayerSpec(d, n) for i in range(args.layers)}
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    element = torch.empty((), dtype=dtype).element_size()
    settings = [(label, m, k) for label, m in zip(labels, methods) for k in args.clients]
    rows = []
    show = not args.no_progress and sys.stderr.isatty()
    for label, method, k in tqdm(settings, desc="aggregate", disable=not show, file=sys.stderr):
        state, updates = _uploads(method, specs, args.rank, args.alpha, k, args.distinct, args.round, args.seed, dtype, device)
        for _ in range(2):  # warm-up (allocator, thread pool, kernels)
            _measure_once(method, state, updates, args.round, device, not args.no_memory)
        times, peaks = [], []
        for _ in range(args.repeats):
            seconds, peak, size = _measure_once(method, state, updates, args.round, device, not args.no_memory)
            times.append(seconds)
            peaks.append(peak)
        v_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            check_updates(state, updates, args.round, method.uploads(args.round), method.shape_of)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            v_times.append(time.perf_counter() - start)
        cost = method.communication(specs, args.rank, args.round, clients=k, bytes_per_param=element)
        rows.append(
            Row(
                method=label,
                clients=k,
                aggregate_ms=1e3 * statistics.median(times),
                validate_ms=1e3 * statistics.median(v_times),
                peak_mib=None if any(p is None for p in peaks) else max(peaks) / 2**20,
                state_mib=size / 2**20,
                upload_mib_per_client=cost.upload_bytes / 2**20,
                download_mib_per_client=cost.download_bytes / 2**20,
            )
        )
        del state, updates
    return rows


def format_table(rows: list[Row], memory_label: str) -> str:
    """The rows as a Markdown table."""
    head = (
        f"| method | clients | aggregate ms (median) | of which validation ms | {memory_label} MiB "
        "| server state MiB | upload MiB / client | download MiB / client |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        peak = "n/a" if r.peak_mib is None else f"{r.peak_mib:.1f}"
        lines.append(
            f"| {r.method} | {r.clients} | {r.aggregate_ms:.2f} | {r.validate_ms:.2f} | {peak} | {r.state_mib:.2f} "
            f"| {r.upload_mib_per_client:.3f} | {r.download_mib_per_client:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rolora bench aggregate``; prints the configuration line and the table."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.shape, args.clients = QUICK["layers"], QUICK["shape"], QUICK["clients"]
        args.repeats = QUICK["repeats"] if args.repeats is None else args.repeats
    elif args.shape is None:
        dim = 4096 if args.dim is None else args.dim
        if dim < 1:
            parser.error("--dim must be >= 1")
        args.shape = (dim, dim)
    args.repeats = 5 if args.repeats is None else args.repeats
    for flag in ("layers", "rank", "repeats", "distinct", "round", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")
    if not method_specs(args.methods):
        parser.error("--methods: empty list")
    for spec in method_specs(args.methods):
        try:
            method_from_spec(spec)
        except AggregationError as err:
            parser.error(f"--methods: {err}")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r}: not a torch device (e.g. cpu, cuda, cuda:1)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but no CUDA GPU is available")
    problem = args.json and file_problem(Path(args.json))
    if problem:
        parser.error(f"--json {args.json}: cannot write it: {problem}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if device.type == "cpu" and not args.no_memory:
        _pin_mmap_threshold()
    memory_label = "peak allocated (CUDA)" if device.type == "cuda" else "peak RSS growth"
    if args.no_memory:
        memory_label = "peak (not measured)"
    rows = run(args)
    d, n = args.shape
    measured = "" if device.type == "cuda" else " (blocks >= 128 KiB)"
    print(
        f"rolora bench aggregate: {args.layers} layers of {d}x{n} (out x in), rank {args.rank}, "
        f"{args.dtype} on {device}, round {args.round}, median of {args.repeats} repeats; "
        f"memory = {memory_label} during aggregate{measured}; server state = bytes of its tensors "
        f"after; torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print()
    print(format_table(rows, memory_label))
    if args.json:
        with atomic_file(args.json) as tmp, open(tmp, "w") as f:
            json.dump({"config": {k: v for k, v in vars(args).items()}, "rows": [asdict(r) for r in rows]}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
