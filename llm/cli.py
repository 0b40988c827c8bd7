"""``rolora llm``: federated fine-tuning of Hugging Face models with any method of rolora.federated.

::

    rolora llm run --config minilm-rotten-tomatoes [section.key=value ...] [--out DIR] [--quiet]
    rolora llm run --config quickstart --methods rolora,fedavg-lora,ffa-lora   # one run per method + table
    rolora llm run --resume RUN_DIR                                            # continue an interrupted run
    rolora llm run --config quickstart --engine flower                         # the same run as a Flower simulation
    rolora llm sweep clients [--jobs 2] [--only PATTERN] [--dry-run] [--status] # every cell of a sweep spec
    rolora llm export RUN_DIR --out DIR [--client K]                          # PEFT adapter folder
    rolora llm configs                                                         # the shipped example configs
    rolora llm sweeps                                                          # the shipped sweep specs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rolora.llm.config import CONFIG_DIR, ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rolora llm", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run (or resume) a federated fine-tuning experiment",
                         description="Run a federated fine-tuning experiment from a TOML config.")
    run.add_argument("--config", help="a TOML file, or the name of a shipped example (rolora llm configs)")
    run.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. train.lr=1e-3")
    run.add_argument("--out", type=Path, help="run folder (default runs/<config>-<method>)")
    run.add_argument("--methods", help="comma-separated method specs: one run per method in OUT/<method>, then a table")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR")
    run.add_argument("--quiet", action="store_true", help="no progress bars or log lines on the terminal")
    run.add_argument("--engine", choices=("embedded", "flower"), default="embedded",
                     help="embedded (one process, default) or flower (a Flower simulation, rolora.flower)")
    run.add_argument("--overwrite", action="store_true", help="replace an earlier run in the run folder(s)")
    sweep = sub.add_parser("sweep", help="run (or resume) every cell of a sweep spec (docs/sweeps.md)",
                           description="Run a sweep: methods × grid columns × seeds, with learning-rate "
                                       "selection on the validation split; re-running resumes it.")
    sweep.add_argument("spec", help="a sweep spec TOML file, or the name of a shipped one (rolora llm sweeps)")
    sweep.add_argument("--out", type=Path, help="sweep folder (default runs/sweeps/<spec name>)")
    sweep.add_argument("--jobs", type=int, default=1, help="cells at once, each in its own process "
                                                           "with max(1, cores // jobs) threads (default 1)")
    sweep.add_argument("--only", metavar="PATTERN", help="only cells whose id matches (a glob, or a substring); "
                                                         "the lr cells their methods need run too")
    sweep.add_argument("--dry-run", action="store_true", help="list the cells and their overrides; run nothing")
    sweep.add_argument("--status", action="store_true", help="print a table of the cells and their status")
    sweep.add_argument("--recorded", type=Path, metavar="DIR",
                       help="skip the cells that DIR (the report's CSVs, e.g. docs/reproduction) holds as done "
                            "for this spec, and take its lr choices (docs/sweeps.md)")
    sweep.add_argument("--no-copy", action="store_true",
                       help="run every cell afresh (default: a cell that a sibling sweep under the same folder "
                            "has run with the same config is copied from there; docs/sweeps.md)")
    sub.add_parser("sweeps", help="list the shipped sweep specs")
    export = sub.add_parser("export", help="export a run's adapter in PEFT's format",
                            description="Write the global adapter (or client K's) as a PEFT adapter folder.")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--client", help="the client whose personalised model to export (personalised methods)")
    export.add_argument("--merged", action="store_true",
                        help="write W0 + the update as a plain Hugging Face model folder (any method; full-rank FedAvg needs it)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    sub.add_parser("configs", help="list the shipped example configs")
    return parser


def _default_out(config_name: str | None, method: str) -> Path:
    stem = Path(config_name).stem if config_name else "default"
    return Path("runs") / f"{stem}-{method.replace(':', '_').replace('=', '')}"


def _table(results: list[tuple[str, object]]) -> str:
    lines = ["| method | rounds | test loss | test accuracy | upload MB/round | wall s |", "|---|---|---|---|---|---|"]
    for name, h in results:
        rows = h.rows
        trained = [r for r in rows if r["round"] > 0]
        up = sum(r["upload_bytes"] for r in trained) / max(1, len(trained)) / 1e6
        wall = sum(r["wall_s"] for r in trained)
        acc = h.last("test_accuracy")
        loss = h.last("test_loss")  # None where the run scored only the validation split
        lines.append(f"| {name} | {rows[-1]['round']} | {'-' if loss is None else f'{loss:.4f}'} | "
                     f"{'-' if acc is None else f'{acc:.4f}'} | {up:.3f} | {wall:.0f} |")
    return "\n".join(lines)


def _run(args) -> int:
    run = _engine(args.engine)
    if args.resume:
        config = load_config(args.config, args.overrides) if (args.config or args.overrides) else None
        history = run(config, args.resume, resume=True, quiet=args.quiet)
        print(_table([(history.state and read_method(args.resume), history)]))
        return 0
    config = load_config(args.config, args.overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else [config.federated.method]
    results = []
    for spec in methods:
        import dataclasses

        cfg = dataclasses.replace(config, federated=dataclasses.replace(config.federated, method=spec))
        out = args.out / spec.replace(":", "_") if (args.out and len(methods) > 1) else (args.out or _default_out(args.config, spec))
        if not args.quiet:
            print(f"[rolora llm] {spec}: {cfg.model.name} on {cfg.data.dataset}, {cfg.federated.clients} clients, "
                  f"{cfg.total_rounds} rounds -> {out}", file=sys.stderr)
        if args.overwrite:
            remove_run(out)
        results.append((spec, run(cfg, out, quiet=args.quiet)))
    print(_table(results))
    return 0


def _engine(name: str):
    if name == "flower":  # the one import of rolora.flower from llm/ (tests/test_layering.py allows it)
        from rolora.flower.simulation import run as flower_run

        return flower_run
    from rolora.llm.engine import run

    return run


def remove_run(run_dir: Path) -> None:
    """Delete an earlier run folder (only one that holds a run: a config.json)."""
    import shutil

    if (run_dir / "config.json").is_file():
        shutil.rmtree(run_dir)
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"--overwrite: {run_dir} exists but is not a run folder; not deleting it")


def read_method(run_dir: Path) -> str:
    from rolora.llm.run_folder import read_config

    return read_config(run_dir).federated.method


def _sweep(args) -> int:
    from rolora.llm.sweep import Sweep, dry_run, run_sweep, status_table
    from rolora.llm.sweep_record import read_recorded
    from rolora.llm.sweep_spec import load_spec

    spec = load_spec(args.spec)
    recorded = read_recorded(args.recorded, spec.name, spec.raw) if args.recorded else None
    if args.dry_run or args.status:
        sweep = Sweep(spec, args.out, recorded)
        print(dry_run(sweep, args.only) if args.dry_run else status_table(sweep, args.only))
        return 0
    sweep = run_sweep(spec, args.out, jobs=args.jobs, only=args.only, echo=lambda line: print(line, flush=True),
                      recorded=recorded, copy=not args.no_copy)
    print(status_table(sweep, args.only))
    return 1 if any(s == "failed" for s in sweep.status.values()) else 0


def _list(folder: Path) -> None:
    for path in sorted(folder.glob("*.toml")):
        first = path.read_text().splitlines()[0].lstrip("# ")
        print(f"{path.stem:28s} {first}")


def _export(args) -> int:
    from rolora.llm.export_run import export_run

    client = args.client
    if client is not None and client.lstrip("-").isdigit():
        client = int(client)
    path = export_run(args.run_dir, args.out, client=client, merged=args.merged, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action in ("configs", "sweeps"):
            from rolora.llm.sweep_spec import EXPERIMENTS_DIR

            _list(CONFIG_DIR if args.action == "configs" else EXPERIMENTS_DIR)
            return 0
        if args.action == "sweep":
            return _sweep(args)
        if args.action == "run":
            if not args.config and not args.resume:
                _parser().error("run needs --config FILE (or --resume RUN_DIR)")
            return _run(args)
        return _export(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"rolora llm: error: {err}", file=sys.stderr)
        return 2
