"""The ``rolora`` command: one entry point, one subcommand per area.

Each area owns its own argument parser (``rolora.<area>.cli.main(argv) -> int``); this file only
dispatches, and imports an area lazily so that ``rolora theory`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with `main(argv) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "theory": ("rolora.theory.cli", "reproduce the linear-model analysis and its figures (NumPy)"),
    "toy": ("rolora.toy.cli", "the MNIST two-layer federated experiment (the paper's Figure 2)"),
    "llm": ("rolora.llm.cli", "federated fine-tuning of Hugging Face models (BERT/RoBERTa, Llama)"),
    "report": ("rolora.reports.cli", "docs/reproduction.md: the paper's claims beside ours, from result files"),
}

# `rolora bench <name>` -> module
BENCHMARKS: dict[str, tuple[str, str]] = {
    "aggregate": ("rolora.federated.bench", "server-side time, memory and bytes per method"),
    "eval": ("rolora.llm.eval_bench", "decoder label-word scoring: one pass for one-token words against the reference"),
    "kernels": ("rolora.kernels.bench", "fused LoRA linear against PEFT, addmm and the frozen floor"),
    "llm": ("rolora.llm.bench", "one federated LoRA round: the PEFT loop against rolora's modes"),
    "memory": ("rolora.llm.memory_bench", "client training memory and communication per method (GaLore included)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rolora",
        description="Federated fine-tuning with LoRA: RoLoRA and its baselines.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    bench = sub.add_parser("bench", help="micro-benchmarks (prints a table)")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, (_, help_text) in BENCHMARKS.items():
        bench_sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    # Parse only the subcommand words; everything after them belongs to the area's own parser.
    depth = 2 if argv[:1] == ["bench"] else 1
    head, rest = argv[:depth], argv[depth:]
    if head in (["-h"], ["--help"]):
        parser.print_help()
        return 0
    args = parser.parse_args(head)  # unknown subcommand: usage on stderr, exit 2
    module = BENCHMARKS[args.bench][0] if args.command == "bench" else COMMANDS[args.command][0]
    return int(importlib.import_module(module).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
