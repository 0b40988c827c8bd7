"""``rolora sweep``: every cell of a sweep spec (methods × grid columns × seeds, lrs chosen on validation).

::

    rolora sweep clients [--jobs 2] [--only PATTERN] [--dry-run] [--status]   # run or resume a spec
    rolora sweep --list                                                      # the shipped specs

``rolora llm sweep SPEC`` and ``rolora llm sweeps`` (older spellings) still work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rolora.lab.sweep.record import read_recorded
from rolora.lab.sweep.runner import Sweep, dry_run, run_sweep, status_table, sweep_dir
from rolora.lab.sweep.spec import SPECS_DIR, load_spec, select
from rolora.llm.cli import list_tomls
from rolora.llm.config import ConfigError
from rolora.federated.atomic import folder_problem


def _parser() -> argparse.ArgumentParser:
    sweep = argparse.ArgumentParser(
        prog="rolora sweep", description="Run a sweep: methods × grid columns × seeds, with learning-rate "
                                         "selection on the validation split; re-running resumes it (docs/sweeps.md).")
    sweep.add_argument("spec", nargs="?", help="a sweep spec TOML file, or the name of a shipped one (--list)")
    sweep.add_argument("--list", action="store_true", help="list the shipped sweep specs and exit")
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
    return sweep


def _sweep(args) -> int:
    spec = load_spec(args.spec)
    recorded = read_recorded(args.recorded, spec.name, spec.raw) if args.recorded else None
    if args.only:
        cells = Sweep(spec, args.out, recorded).cells  # reads the sweep folder, writes nothing
        if not select(cells, args.only):
            raise ConfigError(f"--only {args.only!r} matches no cell of sweep {spec.name} (ids such as "
                              f"{', '.join(c.id for c in cells[:2])}; all: rolora sweep {args.spec} --dry-run)")
    if args.dry_run or args.status:
        sweep = Sweep(spec, args.out, recorded)
        print(dry_run(sweep, args.only) if args.dry_run else status_table(sweep, args.only))
        return 0
    problem = folder_problem(sweep_dir(spec, args.out))
    if problem:
        raise ConfigError(f"--out {sweep_dir(spec, args.out)}: cannot write the sweep there: {problem}")
    sweep = run_sweep(spec, args.out, jobs=args.jobs, only=args.only, echo=lambda line: print(line, flush=True),
                      recorded=recorded, copy=not args.no_copy)
    print(status_table(sweep, args.only))
    return 1 if any(s == "failed" for s in sweep.status.values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        list_tomls(SPECS_DIR)
        return 0
    if not args.spec:
        parser.error("name a sweep spec (a TOML file, or a shipped name: rolora sweep --list)")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        return _sweep(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"rolora sweep: error: {err}", file=sys.stderr)
        return 2
