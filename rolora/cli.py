"""The ``rolora`` command: one entry point, one subcommand per area.

Each area owns its own argument parser (``<module>.main(argv) -> int``); this file only dispatches,
and imports an area lazily so that ``rolora theory`` never imports torch. It sits above every floor
(library and lab), so it is also where the floors meet: ``rolora llm run --engine flower`` hands
llm's CLI the Flower engine, and the lab's commands (sweep, report, bench) are reached from here.
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
    "sweep": ("rolora.lab.sweep.cli", "every cell of a sweep spec: methods × columns × seeds, lrs chosen on validation"),
    "report": ("rolora.lab.report.cli", "docs/reproduction.md: the paper's claims beside ours, from result files"),
}

# `rolora bench <name>` -> module (all in the lab: rolora/lab/bench)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "aggregate": ("rolora.lab.bench.aggregate", "server-side time, memory and bytes per method"),
    "compile": ("rolora.lab.bench.compiled_pass", "one client-batched pass: torch.compile (inductor) against eager"),
    "eval": ("rolora.lab.bench.decoder_eval", "decoder label-word scoring: one pass for one-token words against the reference"),
    "flower": ("rolora.lab.bench.flower", "the Flower simulation engine against the embedded one, and Flower's bytes per method"),
    "kernels": ("rolora.lab.bench.kernels", "fused LoRA linear against PEFT, addmm and the frozen floor"),
    "llm": ("rolora.lab.bench.llm", "one federated LoRA round: the PEFT loop against rolora's modes"),
    "memory": ("rolora.lab.bench.memory", "client training memory and communication per method (GaLore included)"),
}

# Older spellings that keep working: `rolora llm sweep SPEC`, `rolora llm sweeps`.
ALIASES: dict[tuple[str, str], list[str]] = {("llm", "sweep"): ["sweep"], ("llm", "sweeps"): ["sweep", "--list"]}


def _flower_simulation():
    from rolora.llm.config import ConfigError

    try:
        import rolora.flower.simulation as simulation
    except ImportError as err:
        raise ConfigError(f"--engine flower needs Flower, which is not installed ({err}); install it with: "
                          "pip install 'rolora[flower]'") from None
    return simulation


def _flower_run(config, out, *, resume: bool = False, quiet: bool = False):
    return _flower_simulation().run(config, out, resume=resume, quiet=quiet)


def _flower_check(config) -> None:
    _flower_simulation().check(config)


def flower_engine():
    """``rolora llm run --engine flower``: the run as a Flower simulation (:mod:`rolora.flower.simulation`),
    and its check of every config before the first run (SecAgg+ refuses some methods)."""
    from rolora.llm.cli import Engine

    return Engine(run=_flower_run, check=_flower_check)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rolora",
        description="Federated fine-tuning with LoRA: RoLoRA and its baselines.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    bench = sub.add_parser("bench", help="benchmarks, each printing a table (rolora/lab/bench)")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, (_, help_text) in BENCHMARKS.items():
        bench_sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if tuple(argv[:2]) in ALIASES:
        argv = ALIASES[tuple(argv[:2])] + argv[2:]
    parser = _parser()
    # Parse only the subcommand words; everything after them belongs to the area's own parser.
    depth = 2 if argv[:1] == ["bench"] else 1
    head, rest = argv[:depth], argv[depth:]
    if head in (["-h"], ["--help"]):
        parser.print_help()
        return 0
    args = parser.parse_args(head)  # unknown subcommand: usage on stderr, exit 2
    name = " ".join(["rolora", *head])
    try:
        return _dispatch(args, rest)
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        # The last net: each command checks its paths before it starts (one message, exit 2); a file
        # system that fails it later (full, removed, read-only) is still a message, not a traceback.
        print(f"{name}: error: {err}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, rest: list[str]) -> int:
    if args.command == "llm":
        from rolora.llm.cli import ENGINES
        from rolora.llm.cli import main as llm_main

        return int(llm_main(rest, engines={**ENGINES, "flower": flower_engine()}) or 0)
    module = BENCHMARKS[args.bench][0] if args.command == "bench" else COMMANDS[args.command][0]
    return int(importlib.import_module(module).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
