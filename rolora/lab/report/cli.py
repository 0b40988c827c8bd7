"""``rolora report``: regenerate ``docs/reproduction.md`` (the paper's claims beside ours) and its data.

    rolora report [--sweeps DIR] [--theory-dir DIR] [--out FILE] [--data DIR] [--toy-csv FILE]
                  [--from-csv | --drop-absent]

Without ``--from-csv``: extract every source (sweep folders, ``rolora theory``'s folder, the memory
counts) into CSVs in the data folder (default: the output's name without ``.md``, i.e.
``docs/reproduction/``), then render. With it: render from the CSVs already there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rolora.federated.atomic import atomic_file

SWEEPS, THEORY, TOY_CSV = Path("runs/sweeps"), Path("out/theory"), Path("docs/toy-mnist-galore.csv")
"""Where the sources are by default; a missing default source keeps the committed rows, a missing
source named on the command line is an error (a typo would otherwise go unnoticed)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rolora report", description="Regenerate docs/reproduction.md (the paper's "
                                "claims beside ours, with verdicts) and its CSVs and figures from the result files.")
    p.add_argument("--sweeps", type=Path, default=None,
                   help=f"a folder of `rolora sweep` folders, or one sweep folder (default: {SWEEPS})")
    p.add_argument("--theory-dir", type=Path, default=None,
                   help=f"`rolora theory --out` folder (default: {THEORY}; its CSVs are kept where it is absent)")
    p.add_argument("--out", type=Path, default=Path("docs/reproduction.md"),
                   help="the markdown file to write (default: docs/reproduction.md)")
    p.add_argument("--data", type=Path, default=None, help="CSV and figure folder (default: OUT without .md)")
    p.add_argument("--toy-csv", type=Path, default=TOY_CSV,
                   help="the toy's results (default: docs/toy-mnist-galore.csv)")
    p.add_argument("--from-csv", action="store_true", help="do not extract: render from the CSVs in --data")
    p.add_argument("--drop-absent", action="store_true",
                   help="drop the committed rows of sweeps (and cells) not found under --sweeps (default: keep them)")
    return p


def _problem(args, data: Path) -> str | None:
    """What is wrong with the paths of the command line (one message), or None; touches nothing."""
    from rolora.federated.atomic import folder_problem

    for option, path in (("--sweeps", args.sweeps), ("--theory-dir", args.theory_dir)):
        if path is not None and not path.is_dir():
            return f"{option} {path}: no such folder"
    if not args.from_csv:  # every sweep record readable before anything is extracted
        from rolora.lab.report.sweep_reader import find_sweeps
        from rolora.lab.sweep.runner import read_record
        from rolora.llm.config import ConfigError

        try:
            for folder in find_sweeps(args.sweeps or SWEEPS):
                read_record(folder / "sweep.json")
        except ConfigError as err:
            return str(err)
    if args.toy_csv != TOY_CSV and not args.toy_csv.is_file():
        return f"--toy-csv {args.toy_csv}: no such file"
    if args.drop_absent and args.from_csv:
        return "--drop-absent does not go with --from-csv: it drops rows while extracting, and --from-csv extracts nothing"
    if args.drop_absent and not (args.sweeps or SWEEPS).is_dir():
        return (f"--drop-absent without a sweeps folder ({args.sweeps or SWEEPS} does not exist) would drop every "
                "committed sweep from the report; name the folder with --sweeps")
    if args.out.is_dir():
        return f"--out {args.out} is a folder; the report is a markdown file, e.g. --out {args.out / 'reproduction.md'}"
    if data.resolve() == args.out.resolve():
        return f"--out {args.out}: the data folder would be the report itself; give a .md file, or --data DIR"
    if args.from_csv and not data.is_dir():
        return f"--from-csv needs the CSVs in {data}, which is not a folder"
    for option, folder in (("--out", args.out.parent), ("--data", data)):
        problem = folder_problem(folder)
        if problem:
            return f"{option} {args.out if option == '--out' else data}: cannot write there: {problem}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data = args.data or args.out.with_suffix("")
    problem = _problem(args, data)
    if problem:
        print(f"rolora report: error: {problem}", file=sys.stderr)
        return 2
    if not args.from_csv:
        from rolora.lab.report.extract import extract
        from rolora.lab.report.sweep_reader import find_sweeps

        if args.sweeps is not None and not find_sweeps(args.sweeps):  # a typo'd folder must not pass unnoticed
            print(f"rolora report: warning: no sweep in {args.sweeps} (no sweep.json there or one level down): "
                  "the report holds only the committed rows", file=sys.stderr)

        written = extract(args.sweeps or SWEEPS, args.theory_dir or THEORY, data, keep_absent=not args.drop_absent)
        print(f"extracted {len(written)} CSVs into {data}")
    from rolora.lab.report.document import render

    text = render(data, args.out, args.toy_csv)
    with atomic_file(args.out) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
