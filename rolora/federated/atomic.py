"""Atomic file writes (a reader sees the old file or the new one, never half of one), and the check
that a path can be written at all, made before any work starts.

The one writer for every floor above (checkpoints and run folders in llm/ and flower/, the toy's
outputs, the report's CSVs and figures in the lab). ``rolora.theory`` imports nothing of ours and
keeps its own copy of :func:`folder_problem` (``theory/outputs.py``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error it is synced to disk
    and renamed onto ``path`` (a reader sees the old file or the new one), else deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def folder_problem(path: Path) -> str | None:
    """Why no files could be written in the folder ``path`` (made where missing), or None; touches
    nothing. A file in the way, or a folder where no file can be made (permissions, a read-only or
    virtual file system: probed with a nameless temporary file, gone when closed)."""
    try:
        existing = next(p for p in (path, *path.parents) if p.exists())
    except OSError as err:  # e.g. a name too long
        return str(err.strerror or err).lower()
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return f"no file can be made in {existing} ({str(err.strerror or err).lower()})"
    return None


def file_problem(path: Path) -> str | None:
    """Why the file ``path`` could not be written (a folder in its place, or no file can be made in
    its folder: see :func:`folder_problem`), or None; touches nothing."""
    if path.is_dir():
        return f"{path} is a folder, not a file"
    return folder_problem(path.parent)
