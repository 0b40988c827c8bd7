"""``rolora bench llm``: one federated LoRA round, the usual PEFT loop against rolora's modes.

One round of 20 clients × 10 local steps × batch 32, MiniLM on Rotten Tomatoes (1,000 held-out test
sentences), r = 8 on query/value, dropout 0.1, AdamW 5e-4 with weight decay 0.01 in every row, max
length 128: the same samples per client step, the same initial adapter and head in every row
(:mod:`rolora.lab.bench.llm_row`; tokenising is timed in no row). Each row runs in a fresh
subprocess, so its peak RSS is its own. Then a sweep over the number of clients for the fastest
mode. Prints the CPU's relevant capabilities, Markdown tables and which targets are met.

    rolora bench llm                 # the full benchmark (many minutes on a 2-core CPU)
    rolora bench llm --quick         # smoke test: tiny model, 3 clients × 2 steps
    rolora bench llm --rounds 3      # also each row's later rounds (warm-up: round 1 against them)
    rolora bench llm --rows peft-fp32,ours-fast,peft-fp32,ours-fast --sweep ''
                                     # interleaved, to average a noisy machine's drift out: a kind
                                     # run more than once is judged by its median round
    rolora bench llm --waits same    # every row under rolora's OpenMP wait policy (PASSIVE)

OpenMP wait policy (``--waits``): by default each side runs as its users get it: the PEFT rows under
OpenMP's own default (libgomp: an idle thread spins a while, then sleeps; the loop's best on an idle
machine), rolora's rows under rolora's (PASSIVE, set on ``import rolora.llm``). A policy the user set
(``OMP_WAIT_POLICY``) applies to every row. ``--waits same`` puts every row under rolora's, which
slows the PEFT loop's two-thread regions (~11 % on an idle 2-core machine, BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import os
import statistics
from pathlib import Path

from rolora.lab.bench.llm_row import OPENMP_DEFAULT, ROWS, config_for
from rolora.llm.config import ConfigError
from rolora.llm.cpu_threads import USER_WAIT_POLICY
from rolora.federated.atomic import atomic_file, file_problem

FULL = ["federated.clients=20", "train.local_steps=10", "train.batch_size=32", "train.weight_decay=0.01"]
QUICK = ["model.name=tiny-bert", "data.test_size=40", "data.max_train_samples=120", "federated.clients=3",
         "train.local_steps=2", "train.batch_size=8", "train.weight_decay=0.01"]
FASTEST = "ours-fast"
DEFAULT_ROWS = ["peft-fp32", "peft-bf16", "ours-seq", "ours-batched", "ours-fast"]
ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_PRIMITIVE_CACHE_CAPACITY",
           "OMP_NUM_THREADS", "ROLORA_NATIVE_BF16")
"""Environment variables that change which instructions or threads the rows use (printed when set)."""
WAITS = ("own", "same")


def row_env(row: str, waits: str, environ: dict, user_policy: str | None) -> dict:
    """The environment of ``row``'s subprocess: under ``waits="own"`` a PEFT row without a policy
    chosen by the user gets OpenMP's default (rolora's PASSIVE removed, torch loaded first)."""
    env = dict(environ)
    env.pop(OPENMP_DEFAULT, None)
    if waits == "own" and row.startswith("peft") and user_policy is None:
        env.pop("OMP_WAIT_POLICY", None)
        env[OPENMP_DEFAULT] = "1"
    return env


def waits_line(waits: str, user_policy: str | None) -> str:
    """The header's line on the rows' OpenMP wait policy."""
    if user_policy is not None:
        return f"OpenMP waits: OMP_WAIT_POLICY={user_policy} (set by you) in every row"
    if waits == "same":
        return "OpenMP waits: rolora's (PASSIVE) in every row (--waits same)"
    return "OpenMP waits: each side its own default (PEFT rows: OpenMP's, spin then sleep; rolora's rows: PASSIVE)"


def header(threads: int, waits: str = "own") -> str:
    """The machine line of the report: CPU model, the bf16/AVX flags, threads, versions, ISA limits,
    the rows' OpenMP wait policy."""
    import torch

    from rolora.llm.base_dtype import choose_dtype, cpu_info
    from rolora.llm.client_workers import choose_workers
    from rolora.llm.config import TrainConfig

    auto = choose_dtype("auto", torch.device("cpu"))
    workers = choose_workers(TrainConfig(), torch.device("cpu"))
    limits = [f"{k}={os.environ[k]}" for k in ISA_ENV if k in os.environ]
    return "\n".join([f"- {cpu_info().line(threads)}",
                      f"- torch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}); "
                      f"model.dtype auto -> {auto.name} ({auto.reason}); "
                      f"train.client_workers auto -> {workers.count} ({workers.reason}; the client-batched rows)",
                      f"- environment: {' '.join(limits) or '(no ISA or thread limits set)'}",
                      f"- {waits_line(waits, USER_WAIT_POLICY)}"])


class RowFailed(RuntimeError):
    """A row's subprocess exited non-zero (its stderr's tail in the message)."""


def run_row(row: str, size: list[str], threads: int, rounds: int = 1, waits: str = "own") -> dict:
    cmd = [sys.executable, "-m", "rolora.lab.bench.llm_row", row, "--threads", str(threads), "--rounds", str(rounds),
           "--set", *size]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env=row_env(row, waits, dict(os.environ), USER_WAIT_POLICY))
    if done.returncode != 0:
        raise RowFailed(f"bench row {row} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def derived(r: dict) -> dict:
    return {**r, "tokens_per_s": r["tokens"] / r["wall_s"], "padding": 1 - r["tokens"] / r["computed_tokens"]}


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| row | base dtype | OpenMP waits | round wall time | vs row 1 | later rounds | tokens/s | padding share | "
             "peak RSS | test loss | accuracy |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        later = " / ".join(f"{w:.1f}" for w in r.get("round_s", [])[1:]) or "-"
        lines.append(f"| {i}. {ROWS[r['row']]} | {r.get('dtype', '?')} | {r.get('openmp_waits', '?')} | {r['wall_s']:.1f} s | "
                     f"{base['wall_s'] / r['wall_s']:.2f}× | {later} | "
                     f"{r['tokens_per_s']:.0f} | {r['padding']:.1%} | {r['peak_rss_mib']:.0f} MiB | "
                     f"{r['test_loss']:.5f} | {r['test_accuracy']:.3f} |")
    return "\n".join(lines)


def _pooled(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by kind, in order: an interleaved run repeats a kind to average the machine's drift out."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["row"], []).append(r)
    return by


def _wall(rs: list[dict]) -> float:
    return statistics.median(r["wall_s"] for r in rs)


def _of(rs: list[dict]) -> str:
    return f"median of {len(rs)}" if len(rs) > 1 else "one row"


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, each with whether it is met. A kind run more than once is judged by its
    median round (and the range of single pairs is shown), its peak RSS by its largest against the
    loop's smallest, so that repeating rows cannot pick a lucky one."""
    by = _pooled(rows)
    one, two, fast = by.get("peft-fp32"), by.get("peft-bf16"), by.get(FASTEST)
    loss_one = statistics.median(r["test_loss"] for r in one) if one else None  # every row's reference
    out = []
    if one and fast:
        ratio = _wall(one) / _wall(fast)
        spread = ""
        if len(one) > 1 or len(fast) > 1:
            lo = min(r["wall_s"] for r in one) / max(r["wall_s"] for r in fast)
            hi = max(r["wall_s"] for r in one) / min(r["wall_s"] for r in fast)
            spread = f"; single rows {lo:.2f}–{hi:.2f}×"
        out.append(f"fastest ≥ 3× row 1: {ratio:.2f}× ({'met' if ratio >= 3 else 'NOT met'}; "
                   f"{_wall(one):.1f} s, {_of(one)}, against {_wall(fast):.1f} s, {_of(fast)}{spread})")
        loss_gap = max(abs(r["test_loss"] - loss_one) / loss_one for r in fast)
        out.append(f"fastest test loss within 1 % of row 1: {loss_gap:.3%} ({'met' if loss_gap <= 0.01 else 'NOT met'})")
        peak, floor = max(r["peak_rss_mib"] for r in fast), min(r["peak_rss_mib"] for r in one)
        out.append(f"fastest peak RSS ≤ row 1: {peak:.0f} vs {floor:.0f} MiB "
                   f"({'met' if peak <= floor else 'NOT met'}{'; largest against smallest' if len(one) + len(fast) > 2 else ''})")
    if two and fast:
        ratio = _wall(two) / _wall(fast)
        out.append(f"fastest ≥ 1.5× row 2: {ratio:.2f}× ({'met' if ratio >= 1.5 else 'NOT met'})")
    for row in ("ours-seq", "ours-batched"):
        if one and row in by:
            gap = max(abs(r["test_loss"] - loss_one) for r in by[row])
            out.append(f"{row} test loss within 1e-4 of row 1: {gap:.2e} ({'met' if gap <= 1e-4 else 'NOT met'})")
    for r in rows:
        if len(r.get("round_s", [])) > 1:
            later = min(r["round_s"][1:])
            ratio = r["round_s"][0] / later
            out.append(f"{r['row']} warm-up: round 1 {r['round_s'][0]:.1f} s = {ratio:.2f}× the fastest later round "
                       f"({'met' if ratio <= 1.5 else 'NOT met'}: ≤ 1.5×)")
    return out


def _at_least_one(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rolora bench llm", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny model, 3 clients × 2 steps")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    p.add_argument("--sweep", default="3,20,50", help="client counts for the fastest mode ('' = none)")
    p.add_argument("--steps", type=_at_least_one, help="local steps per client (default 10; fewer for a shorter run)")
    p.add_argument("--threads", type=_at_least_one, default=2)
    p.add_argument("--rounds", type=_at_least_one, default=1, help="rounds each row plays and times (warm-up)")
    p.add_argument("--clients", type=_at_least_one, help="clients in the rows' round (default 20)")
    p.add_argument("--set", nargs="*", default=[], help="more config overrides for every row (section.key=value)")
    p.add_argument("--json", help="also write every row as JSON to this file")
    p.add_argument("--waits", default="own", choices=WAITS,
                   help="OpenMP wait policy: own = each side its own default (the PEFT rows OpenMP's, ours "
                        "rolora's PASSIVE); same = rolora's in every row. OMP_WAIT_POLICY, if you set it, wins")
    p.add_argument("--compile", default="inductor", choices=("inductor", "reduce-overhead", "aot_eager"),
                   help="train.compile of the ours-compiled row (reduce-overhead: CUDA graphs, on a GPU)")
    args = p.parse_args(argv)
    unknown = [r for r in args.rows.split(",") if r and r not in ROWS]
    if unknown:
        p.error(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    try:
        counts = [_at_least_one(x) for x in args.sweep.split(",") if x.strip()]
    except argparse.ArgumentTypeError as err:
        p.error(f"--sweep {args.sweep!r}: client counts, comma-separated: {err}")
    problem = args.json and file_problem(Path(args.json))
    if problem:
        p.error(f"--json {args.json}: cannot write it: {problem}")
    size = QUICK if args.quick else FULL
    if args.steps:
        size = [s for s in size if not s.startswith("train.local_steps=")] + [f"train.local_steps={args.steps}"]
    if args.clients:
        size = [s for s in size if not s.startswith("federated.clients=")] + [f"federated.clients={args.clients}"]
    size = size + list(args.set)
    chosen = [r for r in args.rows.split(",") if r]
    own = {row: [f"train.compile={args.compile}"] if row == "ours-compiled" else [] for row in chosen}
    for row in chosen:  # a bad --set is answered now, not by a row's subprocess minutes later
        try:
            config_for(size + own[row], row, args.rounds)
        except ConfigError as err:
            p.error(f"--set: {err}")
    print(header(args.threads, args.waits), flush=True)
    try:
        rows, sweep = _measure(args, size, chosen, own, counts)
    except RowFailed as err:
        print(f"rolora bench llm: {err}", file=sys.stderr)
        return 1
    if args.json:
        with atomic_file(args.json) as tmp:
            tmp.write_text(json.dumps({"waits": args.waits, "rows": rows, "sweep": sweep, "targets": targets(rows)},
                                      indent=1))
    return 0


def _measure(args, size: list[str], chosen: list[str], own: dict, counts: list[int]) -> tuple[list, list]:
    """Every chosen row, then the client-count sweep, each printed as it ends (RowFailed: one failed)."""
    rows = []
    for row in chosen:
        rows.append(derived(run_row(row, size + own[row], args.threads, args.rounds, args.waits)))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress: a long run shows each row as it ends
    print(table(rows))
    print("\n".join(f"- {line}" for line in targets(rows)))
    sweep = []
    for n in counts:
        clients = [s for s in size if not s.startswith("federated.clients=")] + [f"federated.clients={n}"]
        if args.quick:
            clients.append(f"data.max_train_samples={40 * n}")
        sweep.append({"clients": n, **derived(run_row(FASTEST, clients, args.threads, waits=args.waits))})
        print(json.dumps(sweep[-1]), file=sys.stderr, flush=True)
    if sweep:
        print("\n| clients | round wall time | tokens | tokens/s | s per 1k tokens | peak RSS |\n|---|---|---|---|---|---|")
        for r in sweep:
            print(f"| {r['clients']} | {r['wall_s']:.1f} s | {r['tokens']} | {r['tokens_per_s']:.0f} | "
                  f"{1000 * r['wall_s'] / r['tokens']:.2f} | {r['peak_rss_mib']:.0f} MiB |")
    return rows, sweep


if __name__ == "__main__":
    sys.exit(main())
