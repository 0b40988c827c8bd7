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

from rolora.federated import GlobalState, ModelTensors
from rolora.federated.serial import StateFormatError, load_kept, load_state, save_kept, save_state
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


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = run_dir / CHECKPOINTS
    found = sorted(p for p in root.glob("round-*") if p.is_dir()) if root.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint folder; a truncated or foreign file raises StateFormatError naming it."""
    progress = path / "progress.json"
    try:
        info = json.loads(progress.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StateFormatError(f"{progress}: unreadable checkpoint progress ({err})") from None
    state = load_state(path / "state.safetensors")
    kept = load_kept(path / "kept.safetensors")
    if info.get("round") != state.round:
        raise StateFormatError(f"{path}: progress.json says round {info.get('round')}, the state is at {state.round}")
    return Checkpoint(state=state, kept=kept, rows=list(info["rows"]), path=path)
