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

from rolora.federated.serial import atomic_file


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rolora report", description="Regenerate docs/reproduction.md (the paper's "
                                "claims beside ours, with verdicts) and its CSVs and figures from the result files.")
    p.add_argument("--sweeps", type=Path, default=Path("runs/sweeps"),
                   help="a folder of `rolora sweep` folders, or one sweep folder (default: runs/sweeps)")
    p.add_argument("--theory-dir", type=Path, default=Path("out/theory"),
                   help="`rolora theory --out` folder (default: out/theory)")
    p.add_argument("--out", type=Path, default=Path("docs/reproduction.md"),
                   help="the markdown file to write (default: docs/reproduction.md)")
    p.add_argument("--data", type=Path, default=None, help="CSV and figure folder (default: OUT without .md)")
    p.add_argument("--toy-csv", type=Path, default=Path("docs/toy-mnist-galore.csv"),
                   help="the toy's results (default: docs/toy-mnist-galore.csv)")
    p.add_argument("--from-csv", action="store_true", help="do not extract: render from the CSVs in --data")
    p.add_argument("--drop-absent", action="store_true",
                   help="drop the committed rows of sweeps (and cells) not found under --sweeps (default: keep them)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data = args.data or args.out.with_suffix("")
    if args.from_csv:
        if not data.is_dir():
            print(f"rolora report: error: --from-csv needs the CSVs in {data}, which does not exist", file=sys.stderr)
            return 2
    else:
        from rolora.lab.report.extract import extract

        written = extract(args.sweeps, args.theory_dir, data, keep_absent=not args.drop_absent)
        print(f"extracted {len(written)} CSVs into {data}")
    from rolora.lab.report.document import render

    text = render(data, args.out, args.toy_csv)
    with atomic_file(args.out) as tmp:
        tmp.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
