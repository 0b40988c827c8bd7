"""``rolora bench llm``: one federated LoRA round, the usual PEFT loop against rolora's modes.

One round of 20 clients × 20 local steps × batch 32, MiniLM on Rotten Tomatoes (1,000 held-out test
sentences), r = 8 on query/value, dropout 0.1, AdamW 5e-4, max length 128: the same samples per
client step, the same initial adapter and head in every row (:mod:`rolora.lab.bench.llm_row`). Each
row runs in a fresh subprocess, so its peak RSS is its own. Then a sweep over the number of
clients for the fastest mode. Prints Markdown tables and which targets are met.

    rolora bench llm                 # the full benchmark (many minutes on a 2-core CPU)
    rolora bench llm --quick         # smoke test: tiny model, 3 clients × 2 steps
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from rolora.lab.bench.llm_row import ROWS

FULL = ["federated.clients=20", "train.local_steps=20", "train.batch_size=32"]
QUICK = ["model.name=tiny-bert", "data.test_size=40", "data.max_train_samples=120", "federated.clients=3",
         "train.local_steps=2", "train.batch_size=8"]
FASTEST = "ours-fast"


def run_row(row: str, size: list[str], threads: int) -> dict:
    cmd = [sys.executable, "-m", "rolora.lab.bench.llm_row", row, "--threads", str(threads), "--set", *size]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench row {row} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def derived(r: dict) -> dict:
    return {**r, "tokens_per_s": r["tokens"] / r["wall_s"], "padding": 1 - r["tokens"] / r["computed_tokens"]}


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| row | round wall time | vs row 1 | tokens/s | padding share | peak RSS | test loss | accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i}. {ROWS[r['row']]} | {r['wall_s']:.1f} s | {base['wall_s'] / r['wall_s']:.2f}× | "
                     f"{r['tokens_per_s']:.0f} | {r['padding']:.1%} | {r['peak_rss_mib']:.0f} MiB | "
                     f"{r['test_loss']:.5f} | {r['test_accuracy']:.3f} |")
    return "\n".join(lines)


def targets(by: dict) -> list[str]:
    """The issue's targets, each with whether it is met."""
    one, two, fast = by.get("peft-fp32"), by.get("peft-bf16"), by.get(FASTEST)
    out = []
    if one and fast:
        out.append(f"fastest ≥ 3× row 1: {one['wall_s'] / fast['wall_s']:.2f}× "
                   f"({'met' if one['wall_s'] >= 3 * fast['wall_s'] else 'NOT met'})")
        loss_gap = abs(fast["test_loss"] - one["test_loss"]) / one["test_loss"]
        out.append(f"fastest test loss within 1 % of row 1: {loss_gap:.3%} ({'met' if loss_gap <= 0.01 else 'NOT met'})")
        out.append(f"fastest peak RSS ≤ row 1: {fast['peak_rss_mib']:.0f} vs {one['peak_rss_mib']:.0f} MiB "
                   f"({'met' if fast['peak_rss_mib'] <= one['peak_rss_mib'] else 'NOT met'})")
    if two and fast:
        out.append(f"fastest ≥ 1.5× row 2: {two['wall_s'] / fast['wall_s']:.2f}× "
                   f"({'met' if two['wall_s'] >= 1.5 * fast['wall_s'] else 'NOT met'})")
    for row in ("ours-seq", "ours-batched"):
        if one and row in by:
            gap = abs(by[row]["test_loss"] - one["test_loss"])
            out.append(f"{row} test loss within 1e-4 of row 1: {gap:.2e} ({'met' if gap <= 1e-4 else 'NOT met'})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rolora bench llm", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny model, 3 clients × 2 steps")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    p.add_argument("--sweep", default="3,20,50", help="client counts for the fastest mode ('' = none)")
    p.add_argument("--steps", type=int, help="local steps per client (default 20; fewer for a shorter run)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write every row as JSON to this file")
    args = p.parse_args(argv)
    size = QUICK if args.quick else FULL
    if args.steps:
        size = [s for s in size if not s.startswith("train.local_steps=")] + [f"train.local_steps={args.steps}"]
    rows = []
    for row in [r for r in args.rows.split(",") if r]:
        rows.append(derived(run_row(row, size, args.threads)))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress: a long run shows each row as it ends
    print(table(rows))
    by = {r["row"]: r for r in rows}
    print("\n".join(f"- {line}" for line in targets(by)))
    sweep = []
    for n in [int(x) for x in args.sweep.split(",") if x]:
        clients = [s for s in size if not s.startswith("federated.clients=")] + [f"federated.clients={n}"]
        if args.quick:
            clients.append(f"data.max_train_samples={40 * n}")
        r = derived(run_row(FASTEST, clients, args.threads))
        sweep.append({"clients": n, **r})
        print(json.dumps(sweep[-1]), file=sys.stderr, flush=True)
    if sweep:
        print("\n| clients | round wall time | tokens | tokens/s | s per 1k tokens | peak RSS |\n|---|---|---|---|---|---|")
        for r in sweep:
            print(f"| {r['clients']} | {r['wall_s']:.1f} s | {r['tokens']} | {r['tokens_per_s']:.0f} | "
                  f"{1000 * r['wall_s'] / r['tokens']:.2f} | {r['peak_rss_mib']:.0f} MiB |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "sweep": sweep, "targets": targets(by)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
