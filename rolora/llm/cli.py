"""``rolora llm``: federated fine-tuning of Hugging Face models with any method of rolora.federated.

::

    rolora llm run --config minilm-rotten-tomatoes [section.key=value ...] [--out DIR] [--quiet]
    rolora llm run --config quickstart --methods rolora,fedavg-lora,ffa-lora   # one run per method + table
    rolora llm run --resume RUN_DIR                                            # continue an interrupted run
    rolora llm run --config quickstart --engine flower                         # the same run as a Flower simulation
    rolora llm export RUN_DIR --out DIR [--client K]                          # PEFT adapter folder
    rolora llm configs                                                         # the shipped example configs

Settings (``section.key=value``) may stand anywhere on the line, before or after the options.
Every config of a call (one per method of ``--methods``) and every run folder is checked before
the first run starts: bad input is one message and exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from rolora.llm.config import CONFIG_DIR, ConfigError, RunConfig, apply_overrides, check, from_dict, load_config
from rolora.federated.atomic import folder_problem


_LOADED: list = []
"""The last setup the embedded engine built in this process: the next method of a ``--methods`` call
with the same config apart from ``federated.method`` runs on it (the model and data load once)."""


def _embedded_run(config: RunConfig | None, out: Path, *, resume: bool = False, quiet: bool = False):
    from rolora.llm.engine import run
    from rolora.llm.prepare import for_method

    setup = for_method(_LOADED[0], config) if (_LOADED and config is not None and not resume) else None
    history = run(config, out, resume=resume, quiet=quiet, setup=setup)
    if history.setup is not None:
        _LOADED[:] = [history.setup]
    return history


def _no_check(config: RunConfig) -> None:
    """The embedded engine runs every config that passes the config's own checks."""


@dataclasses.dataclass(frozen=True)
class Engine:
    """An engine of ``rolora llm run``. ``check(config)`` refuses, before any run of the call starts,
    a config the engine cannot run (ConfigError or ValueError naming why); ``run(config, out,
    resume=False, quiet=False) -> History`` runs one (each imports what it needs when called)."""

    run: Callable
    check: Callable[[RunConfig], None] = _no_check


ENGINES = {"embedded": Engine(run=_embedded_run)}
"""Engine name -> :class:`Engine`. The CLI on top (``rolora.cli``) adds ``flower``: llm/ never
imports the floor above it."""


def _parsers(engines=ENGINES) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """(the ``rolora llm`` parser, {action: its parser})."""
    parser = argparse.ArgumentParser(prog="rolora llm", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run (or resume) a federated fine-tuning experiment",
                         description="Run a federated fine-tuning experiment from a TOML config. Settings "
                                     "(section.key=value) may stand anywhere on the line.")
    run.add_argument("--config", help="a TOML file, or the name of a shipped example (rolora llm configs)")
    run.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides, e.g. train.lr=1e-3")
    run.add_argument("--out", type=Path, help="run folder (default runs/<config>-<method>)")
    run.add_argument("--methods", help="comma-separated method specs: one run per method in OUT/<method>, then a table")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the interrupted run in RUN_DIR")
    run.add_argument("--quiet", action="store_true", help="no progress bars or log lines on the terminal")
    run.add_argument("--engine", choices=tuple(engines), default="embedded",
                     help="embedded (one process, default) or flower (a Flower simulation, rolora.flower)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an earlier run in the run folder(s): kept until the new run has started; a "
                          "folder holding anything else is never replaced")
    run.add_argument("--server-opt", metavar="SPEC",
                     help="a server optimiser for every method: fedavgm | fedadam | fedyogi | fedadagrad, with "
                          ":key=value settings (e.g. fedadam:lr=1e-2); the same as federated.server_opt=SPEC")
    export = sub.add_parser("export", help="export a run's adapter in PEFT's format",
                            description="Write the global adapter (or client K's) as a PEFT adapter folder.")
    export.add_argument("run_dir", type=Path)
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--client", help="the client whose personalised model to export (personalised methods)")
    export.add_argument("--merged", action="store_true",
                        help="write W0 + the update as a plain Hugging Face model folder (any method; full-rank FedAvg needs it)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export in OUT (a folder holding anything else, or the run "
                             "itself, is refused)")
    configs = sub.add_parser("configs", help="list the shipped example configs")
    return parser, {"run": run, "export": export, "configs": configs}


def _parse(argv: list[str], engines) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """The arguments and the parser of their action; ``run``'s settings may stand anywhere
    (argparse's intermixed parsing, which a parser with sub-commands does not offer itself)."""
    parser, actions = _parsers(engines)
    if argv[:1] == ["run"]:
        args = actions["run"].parse_intermixed_args(argv[1:])
        args.action = "run"
    elif argv[:1] and argv[0] in actions:  # its own parser: a bad option prints the action's usage
        args = actions[argv[0]].parse_args(argv[1:])
        args.action = argv[0]
    else:
        args = parser.parse_args(argv)
    return args, actions[args.action]


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


def _method_specs(args, config: RunConfig | None) -> list[str]:
    if args.methods is None:
        return [config.federated.method]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ConfigError(f"--methods {args.methods!r}: no method named; give comma-separated method specs, "
                          "e.g. --methods rolora,fedavg-lora")
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise ConfigError(f"--methods names {', '.join(twice)} more than once: each method runs once, in its own folder")
    return methods


def _checked(config: RunConfig, engine: Engine, where: str = "") -> RunConfig:
    """``config`` after every check that needs no data or model: its keys, its method spec (parameters
    included) and the engine's own. ``where`` (e.g. ``--methods rolora``) starts the error message."""
    from rolora.federated import method_from_spec

    try:
        check(config)
        method_from_spec(config.federated.method, total_rounds=config.total_rounds)
        engine.check(config)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}" if where else str(err)) from None
    return config


PRE_START_FILES = frozenset({"run.log", "sweep.log"})
"""What a run folder may hold before its run has begun: the log of a run refused or killed while
loading, a sweep's log of the cell's process. A folder of only these may take a run."""


def _check_run_folder(out: Path, overwrite: bool) -> None:
    """Refuse a run folder that cannot be written, or that holds a run (or anything else, with
    --overwrite) that would be lost; touches nothing."""
    problem = folder_problem(out)
    if problem:
        raise ConfigError(f"--out {out}: cannot write the run there: {problem}")
    if not overwrite and (out / "config.json").exists():
        raise ConfigError(f"{out} already holds a run: pass --resume {out} to continue it, --overwrite to replace "
                          "it, or choose another --out")
    if not (out / "config.json").is_file() and out.is_dir() and any(p.name not in PRE_START_FILES
                                                                    for p in out.iterdir()):
        # the run's files (config.toml, metrics.csv, ...) would write over files of the same name
        raise ConfigError(f"{'--overwrite: ' if overwrite else ''}--out {out} holds other files, not a run: "
                          "not writing a run there (nor deleting them); choose a new or empty --out")


def _replacing(out: Path, start: Callable):
    """``start()``, the run that replaces the earlier run in ``out`` (--overwrite): the earlier run is
    moved aside first and deleted once the new run has started (written its config.json); a run
    refused before it began (its data or model, found wrong while loading) puts the earlier one back."""
    if not (out / "config.json").is_file():
        return _run_or_clean_up(out, start)
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-", dir=out.parent))
    os.rename(out, aside / out.name)
    try:
        result = _run_or_clean_up(out, start)
    except BaseException:
        if not (out / "config.json").is_file():  # the new run never started: the earlier one stays
            shutil.rmtree(out, ignore_errors=True)
            os.rename(aside / out.name, out)
            aside.rmdir()
        else:
            shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    return result


def _run_or_clean_up(out: Path, start: Callable):
    """``start()``, the run in ``out``; a run refused before it began (its data or model, found
    wrong while loading) leaves ``out`` as it was: the folder (or the files) the engine made go."""
    new = [p for p in (out, *out.parents) if not p.exists()]  # the folders the run will make
    before = set() if new else set(out.iterdir())
    try:
        return start()
    except (ValueError, OSError):
        if (out / "config.json").exists():
            raise
        if new:
            shutil.rmtree(new[-1], ignore_errors=True)
        for path in set(out.iterdir() if out.is_dir() else ()) - before:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def _stopped(err: BaseException, out: Path) -> int:
    """A run that stopped (every participant failed, an upload went non-finite, or Ctrl-C): its latest
    checkpoint is kept; say so and how to continue, exit 1 (130 for Ctrl-C)."""
    why = "was interrupted" if isinstance(err, KeyboardInterrupt) else f"stopped: {err}"
    if "non-finite" in why:
        why += " (the training diverged: a smaller train.lr may help)"
    then = (f"Its latest checkpoint is kept in {out}; to continue it: rolora llm run --resume {out}"
            if (out / "config.json").is_file() else "It had not started: nothing to resume.")
    print(f"rolora llm: the run {why}\n{then}", file=sys.stderr)
    return 130 if isinstance(err, KeyboardInterrupt) else 1


def _resume(args, engine: Engine) -> int:
    from rolora.federated import AggregationError
    from rolora.llm.checkpoint import CheckpointError
    from rolora.llm.engine import RunStopped
    from rolora.llm.run_folder import read_config

    for option in ("methods", "out", "overwrite"):
        if getattr(args, option):
            raise ConfigError(f"--{option} does not go with --resume: the run continues in {args.resume} with "
                              "its own method and config")
    saved = read_config(args.resume)  # not a run folder: named here, before anything starts
    if args.config:
        config = load_config(args.config, args.overrides)
    else:  # settings alone change the saved config (which resuming then refuses, naming just those keys)
        config = from_dict(apply_overrides(saved.to_dict(), args.overrides), "--resume") if args.overrides else None
    _checked(config or saved, engine)
    try:
        history = engine.run(config, args.resume, resume=True, quiet=args.quiet)
    except CheckpointError:  # bad input (exit 2), not a stopped run: resuming again would fail again
        raise
    except (RunStopped, AggregationError, KeyboardInterrupt) as err:
        return _stopped(err, args.resume)
    print(_table([(saved.federated.method, history)]))
    return 0


def _run(args, engine: Engine) -> int:
    overrides = list(args.overrides)
    if args.methods is not None:  # the file's own method does not run: check the settings with one that does
        overrides.append(f'federated.method="{_method_specs(args, None)[0]}"')
    config = load_config(args.config, overrides)
    runs = []  # (method spec, its config, its run folder): all checked before the first run starts
    methods = _method_specs(args, config)
    for spec in methods:
        cfg = _checked(dataclasses.replace(config, federated=dataclasses.replace(config.federated, method=spec)),
                       engine, f"--methods {spec}" if args.methods else "")
        out = args.out / spec.replace(":", "_") if (args.out and len(methods) > 1) else (args.out or _default_out(args.config, spec))
        _check_run_folder(out, args.overwrite)
        runs.append((spec, cfg, out))
    from rolora.federated import AggregationError
    from rolora.llm.engine import RunStopped

    results = []
    for spec, cfg, out in runs:
        if not args.quiet:
            print(f"[rolora llm] {spec}: {cfg.model.name} on {cfg.data.dataset}, {cfg.federated.clients} clients, "
                  f"{cfg.total_rounds} rounds -> {out}", file=sys.stderr)
        try:
            results.append((spec, _replacing(out, partial(engine.run, cfg, out, quiet=args.quiet))))
        except (RunStopped, KeyboardInterrupt) as err:
            return _stopped(err, out)
        except AggregationError as err:  # a client's upload found bad (non-finite: diverged) once the run began
            if not (out / "config.json").is_file():
                raise
            return _stopped(err, out)
    print(_table(results))
    print(_summary(config, results, args.out if len(results) > 1 else None))
    return 0


def _epsilon_text(eps) -> str:
    return "ε = ∞ (no noise)" if eps is None else f"ε = {eps:.3g}"


def _summary(config: RunConfig, results: list, out: Path | None) -> str:
    """What the table's accuracies are measured against: the majority class and the test set's own
    standard error; with several methods, one figure of their test accuracy per round (its path)."""
    from rolora.llm.prepare import split_data, test_majority
    from rolora.llm.run_folder import plot_methods

    from rolora.llm.run_method import additions_of

    lines = []
    added = additions_of(config)
    if not added.empty:
        lines.append(f"every method with {added.describe()}")
    if added.dp != "off":
        spent = ", ".join(f"{name} {_epsilon_text(h.last('dp_epsilon'))}" for name, h in results)
        lines.append(f"privacy spent (ε at δ = {added.dp_delta:g}, Opacus RDP accountant): {spent}")
    floor = test_majority(config)
    if floor is not None and any(h.last("test_accuracy") is not None for _, h in results):
        n = len(split_data(config)[2])
        best = max(h.last("test_accuracy") or 0.0 for _, h in results)
        se = math.sqrt(best * (1 - best) / n)
        lines.append(f"test set: {n} examples; majority class {floor:.4f}; one accuracy's standard error "
                     f"≈ {se:.4f} (√(p(1−p)/n) at the best accuracy, p = {best:.4f})")
    if out is not None and any(h.last("test_accuracy") is not None for _, h in results):
        path = plot_methods(out / "test_accuracy.png", [(name, h.rows) for name, h in results],
                            f"{config.model.name} · {config.data.dataset} · {config.federated.clients} clients", floor)
        lines.append(f"test accuracy per round, every method: {path}")
    return "\n".join(lines)


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
    args, parser = _parse(list(sys.argv[1:] if argv is None else argv), engines)
    try:
        if args.action == "configs":
            list_tomls(CONFIG_DIR)
            return 0
        if args.action == "run":
            if not args.config and not args.resume:
                parser.error("run needs --config FILE (or --resume RUN_DIR)")
            engine = engines[args.engine]
            if args.server_opt:
                args.overrides = [*args.overrides, f"federated.server_opt={args.server_opt}"]
            return _resume(args, engine) if args.resume else _run(args, engine)
        return _export(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"rolora llm: error: {err}", file=sys.stderr)
        return 2
