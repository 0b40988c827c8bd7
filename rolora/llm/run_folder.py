"""The run folder: resolved config, exact command, versions, metrics (JSONL + CSV), curves, log, checkpoints.

::

    RUN_DIR/
      config.toml  config.json    the resolved config (every key), the command at the top of the TOML
      command.txt  versions.json  how it was started; python/torch/transformers/peft/rolora versions, device
      metrics.jsonl metrics.csv   one row per evaluated round (round 0 = the initial model)
      curves.png                  test loss and accuracy vs round, train loss
      run.log                     the log (dropped clients, checkpoints, resume)
      checkpoints/round-000004/   state.safetensors, kept.safetensors, progress.json (the latest two kept)

Every file is written atomically (a temporary file, then a rename), so an interrupted run never
leaves a half-written file behind.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shlex
import sys
from pathlib import Path

from rolora.federated.atomic import atomic_file
from rolora.llm.config import ConfigError, RunConfig, from_dict, to_toml

CHECKPOINTS = "checkpoints"


def write_atomic(path: Path, text: str | bytes) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["rolora", *sys.argv[1:]]) if sys.argv else "rolora"


def versions(device: str) -> dict:
    import numpy
    import torch

    out = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "numpy": numpy.__version__, "device": device, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name()
    for name in ("transformers", "peft", "safetensors", "triton", "flwr", "rolora"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:  # noqa: BLE001 - an optional package that is not installed
            out[name] = None
    return out


def write_start(run_dir: Path, config: RunConfig, device: str, command: str, extra: dict | None = None) -> None:
    """The files describing how the run was started (``extra``: more fields of versions.json)."""
    write_atomic(run_dir / "config.toml", to_toml(config, header=f"{command}\nresolved config of this run"))
    write_atomic(run_dir / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    write_atomic(run_dir / "command.txt", command + "\n")
    write_atomic(run_dir / "versions.json", json.dumps({**versions(device), **(extra or {})}, indent=2) + "\n")


def read_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no config.json)")
    from rolora.llm.file_data import read_utf8

    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err}): the run's config cannot be read") from None
    except ValueError as err:  # not UTF-8: read_utf8 names the byte
        raise ConfigError(str(err)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a run's config (a JSON object of sections), got {type(data).__name__}")
    return from_dict(data, str(path))


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """metrics.jsonl and metrics.csv with every row so far (rewritten whole: rows are few)."""
    write_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})
    write_atomic(run_dir / "metrics.csv", buf.getvalue())


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def plot_curves(run_dir: Path, rows: list[dict], title: str) -> None:
    """curves.png: test loss, test accuracy (or perplexity), train loss and, where the server measured
    them, the round's product-averaging gap and client drift, against the round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    second = "test_accuracy" if any("test_accuracy" in r for r in rows) else "test_perplexity"
    panels = [("test_loss", "test loss"), (second, second.replace("_", " ")), ("train_loss", "train loss")]
    measured = any(r.get("product_gap") is not None for r in rows)
    fig, axes = plt.subplots(1, 3 + measured, figsize=(12 + 4 * measured, 3.4))
    for ax, (key, label) in zip(axes, panels):
        pts = [(r["round"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3)
        ax.set_xlabel("round")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    if measured:
        ax = axes[-1]
        for key, label in (("product_gap", "product-averaging gap"), ("client_drift", "client drift")):
            pts = [(r["round"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot(*zip(*pts), marker="o", ms=3, label=label)
        ax.set_xlabel("round")
        ax.set_title("relative to the round's update")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    write_atomic(run_dir / "curves.png", _png(fig))


def plot_methods(path: Path, runs: list[tuple[str, list[dict]]], title: str, floor: float | None = None) -> Path:
    """One figure of test accuracy against the round, a line per method (``rolora llm run --methods``);
    ``floor``: the majority class's accuracy, drawn as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, rows in runs:
        pts = [(r["round"], r["test_accuracy"]) for r in rows if r.get("test_accuracy") is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=name)
    if floor is not None:
        ax.axhline(floor, color="grey", ls="--", lw=1, label="majority class")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_atomic(path, _png(fig))
    return path
