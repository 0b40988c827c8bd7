"""Writing numbers next to figures: CSV for the long-format rows, JSON for summaries."""

from __future__ import annotations

import csv
import json
import math
import tempfile
from pathlib import Path
from typing import Any


def make_output_folder(path: Path) -> str | None:
    """Make the output folder (it is about to be written) and check a file can be made in it; None,
    or why not: a file in the way, permissions, a read-only or virtual file system."""
    try:
        blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            return f"{blocking} is a file, not a folder"
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # nameless: gone when closed
            pass
    except OSError as err:
        return str(err.strerror or err).lower() + (f" ({err.filename})" if err.filename else "")
    return None


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` (dicts sharing keys, order of the first row) as CSV; raises on an empty list."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    fields = list(rows[0])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return value


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (numpy scalars converted, NaN/inf as null)."""
    with open(path, "w") as fh:
        json.dump(_jsonable(data), fh, indent=2)
        fh.write("\n")
    return path
