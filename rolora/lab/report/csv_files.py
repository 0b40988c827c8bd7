"""The report's data files: CSV written atomically with a fixed header, read back as strings.

Every CSV of ``docs/reproduction/`` has a declared column list, so an empty source still gives a
file with its header (the report then says "not run yet"), and a reader never guesses columns.
Values are written with ``repr``-exact floats so that rendering from the CSV gives the same
numbers as rendering from the sources (the ``--from-csv`` round trip).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from rolora.federated.atomic import atomic_file


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_rows(path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> Path:
    """Write ``rows`` under ``fields`` (extra keys are an error, missing ones empty), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="raise", restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(value) for k, value in row.items()})
    with atomic_file(path) as tmp:
        tmp.write_text(buf.getvalue())
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV as dicts of strings; a missing file reads as no rows."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def number(text: str | None) -> float | None:
    """A CSV cell as a float (None for an empty cell)."""
    return None if text in (None, "") else float(text)
