"""Checkpoints: the server state, every client's kept state and the metrics so far, after a round.

A checkpoint is a folder ``checkpoints/round-NNNNNN`` built under a temporary name and renamed into
place when complete, so a crash mid-write leaves the previous checkpoint as the latest. Tensors go
through :mod:`rolora.federated.serial` (safetensors + JSON metadata, nothing pickled).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rolora.federated import AggregationError, GlobalState, Method, ModelTensors
from rolora.federated.serial import StateFormatError, load_kept, load_state, save_kept, save_state
from rolora.llm.config import ConfigError
from rolora.llm.run_folder import CHECKPOINTS, write_atomic

KEEP = 2
"""How many checkpoints stay on disk (the newest)."""


@dataclass
class Checkpoint:
    state: GlobalState
    kept: dict[object, ModelTensors | None]
    rows: list[dict]
    """The metrics rows up to and including this round."""
    path: Path


def save_checkpoint(run_dir: Path, state: GlobalState, kept: dict, rows: list[dict]) -> Path:
    """Write the checkpoint of round ``state.round`` and prune older ones."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"round-{state.round:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_state(tmp / "state.safetensors", state)
        save_kept(tmp / "kept.safetensors", kept)
        write_atomic(tmp / "progress.json", json.dumps({"round": state.round, "rows": rows}) + "\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in sorted(p for p in root.glob("round-*") if p.is_dir())[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class CheckpointError(ConfigError, StateFormatError):
    """A checkpoint that cannot be resumed from (unreadable, or another run's): bad input, not a run
    that stopped; the message names its file and the older intact checkpoint, if one is kept."""


def checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoint folders of ``run_dir``, oldest first."""
    root = run_dir / CHECKPOINTS
    return sorted(p for p in root.glob("round-*") if p.is_dir()) if root.is_dir() else []


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint folder; a truncated or foreign file raises StateFormatError naming it."""
    progress = path / "progress.json"
    try:
        info = json.loads(progress.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StateFormatError(f"{progress}: unreadable checkpoint progress ({err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("rows"), list):
        raise StateFormatError(f"{progress}: not a checkpoint's progress (no list of metrics rows)")
    state = load_state(path / "state.safetensors")
    kept = load_kept(path / "kept.safetensors")
    if info.get("round") != state.round:
        raise StateFormatError(f"{path}: progress.json says round {info.get('round')}, the state is at {state.round}")
    return Checkpoint(state=state, kept=kept, rows=list(info["rows"]), path=path)


def fits_method(ckpt: Checkpoint, method: Method) -> Checkpoint:
    """``ckpt`` if every client of its kept state can start the next round from it under ``method``
    (what the round does first; a checkpoint of another method's run is refused: StateFormatError
    naming the file)."""
    for client, kept in ckpt.kept.items():
        try:
            method.client_start(ckpt.state, client, kept, ckpt.state.round + 1)
        except (AggregationError, KeyError) as err:
            raise StateFormatError(f"{ckpt.path / 'kept.safetensors'}: {err} (a checkpoint of another run?)") from None
    return ckpt


def resumable_checkpoint(run_dir: Path, method: Method) -> Checkpoint | None:
    """The latest checkpoint of ``run_dir``, read and checked against the run's ``method`` (None where
    there is none). One that cannot be used raises CheckpointError naming its file and what is wrong,
    and how to continue from the older checkpoint that is kept (KEEP) where that one is intact: it is
    not used silently, since the rounds after it would be trained again."""
    found = checkpoints(run_dir)
    if not found:
        return None
    try:
        return fits_method(load_checkpoint(found[-1]), method)
    except StateFormatError as err:
        problem = err
    for older in reversed(found[:-1]):
        try:
            fits_method(load_checkpoint(older), method)
        except StateFormatError:
            continue
        then = (f"the older checkpoint {older} is intact: move {found[-1]} out of {found[-1].parent} (or delete "
                f"it) to continue the run from {older.name}")
        break
    else:
        then = f"no older intact checkpoint is kept in {found[-1].parent}; start the run again"
    raise CheckpointError(f"cannot resume from {found[-1]}: {problem}; {then}")
