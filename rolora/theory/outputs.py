"""Writing numbers next to figures: CSV for the long-format rows, JSON for summaries; every file atomically.

rolora.theory imports nothing of ours, so :func:`atomic_path` and :func:`make_output_folder` are its
own small copies of ``rolora.federated.atomic``'s writer and checks.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto it when the block ends without error (a
    reader sees the old file or the new one, never half of one), else deleted."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written file gets the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def file_problem(path: Path) -> str | None:
    """Why ``path`` (in a folder :func:`make_output_folder` accepted) cannot be written, or None."""
    return f"{path} is a folder, not a file" if path.is_dir() else None


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` (dicts sharing keys, order of the first row) as CSV; raises on an empty list."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    fields = list(rows[0])
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
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
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(_jsonable(data), fh, indent=2)
        fh.write("\n")
    return path
