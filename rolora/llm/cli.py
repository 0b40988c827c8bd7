"""``rolora llm``: federated fine-tuning of Hugging Face models with any method of rolora.federated.

::

    rolora llm run --config minilm-rotten-tomatoes [section.key=value ...] [--out DIR] [--quiet]
    rolora llm run --config quickstart --methods rolora,fedavg-lora,ffa-lora   # one run per method + table
    rolora llm run --resume RUN_DIR                                            # continue an interrupted run
    rolora llm run --config quickstart --engine flower                         # the same run as a Flower simulation
    rolora llm export RUN_DIR --out DIR [--client K]                          # PEFT adapter folder
    rolora llm configs                                                         # the shipped example configs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rolora.llm.config import CONFIG_DIR, ConfigError, load_config


def embedded_engine():
    """The default engine: one process, one frozen base (:func:`rolora.llm.engine.run`)."""
    from rolora.llm.engine import run

    return run


ENGINES = {"embedded": embedded_engine}
"""Engine name -> a loader returning ``run(config, out, resume=False, quiet=False) -> History``. The
CLI on top (``rolora.cli``) adds ``flower``: llm/ never imports the floor above it."""


def _parser(engines=ENGINES) -> argparse.ArgumentParser:
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
    run.add_argument("--engine", choices=tuple(engines), default="embedded",
                     help="embedded (one process, default) or flower (a Flower simulation, rolora.flower)")
    run.add_argument("--overwrite", action="store_true", help="replace an earlier run in the run folder(s)")
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


def _run(args, engines) -> int:
    run = engines[args.engine]()
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


def list_tomls(folder: Path) -> None:
    """One line per TOML file of ``folder``: its name and the first line of its header comment."""
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


def main(argv: list[str] | None = None, engines=ENGINES) -> int:
    args = _parser(engines).parse_args(argv)
    try:
        if args.action == "configs":
            list_tomls(CONFIG_DIR)
            return 0
        if args.action == "run":
            if not args.config and not args.resume:
                _parser(engines).error("run needs --config FILE (or --resume RUN_DIR)")
            return _run(args, engines)
        return _export(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"rolora llm: error: {err}", file=sys.stderr)
        return 2
