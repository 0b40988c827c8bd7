"""``rolora llm export``: a finished (or interrupted) run's adapter as a PEFT folder, or a merged model.

The global model (every client of a shared-model method runs it), or client K's own model for
personalised methods (FedSA-LoRA, Fed-ALoRA: ``--client K`` is required), taken from the run's
latest checkpoint. What each method can export is listed in :mod:`rolora.llm.export`; full-rank
FedAvg has no LoRA form and is exported merged (``--merged``), which any method also allows.
"""

from __future__ import annotations

from pathlib import Path

from rolora.federated.atomic import folder_problem
from rolora.federated.round import next_model
from rolora.llm.checkpoint import latest_checkpoint, load_checkpoint
from rolora.llm.config import ConfigError
from rolora.llm.export import export_merged, export_peft
from rolora.llm.models import TINY, resolve_folder
from rolora.llm.prepare import build
from rolora.llm.run_folder import CHECKPOINTS, read_config

MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
"""What a merged export (``save_pretrained``) holds beside its config.json."""


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds what ``rolora llm export`` writes: a PEFT adapter (adapter_config.json),
    or a merged model (a Hugging Face config.json beside model weights) that is not a run folder."""
    if (folder / "adapter_config.json").is_file() or (folder / "rolora_export.json").is_file():
        return True
    run_like = (folder / CHECKPOINTS).exists() or (folder / "metrics.jsonl").exists()
    return not run_like and (folder / "config.json").is_file() and any((folder / w).is_file() for w in MODEL_WEIGHTS)


def check_export_out(run_dir: Path, out: Path, overwrite: bool) -> None:
    """Refuse (ConfigError naming the folder) an ``out`` that would lose files: the run folder itself, a
    folder inside it or holding it, a file, an existing export without ``overwrite``, and any other
    non-empty folder (even with ``overwrite``: only an earlier export is replaced), a folder no file can
    be made in. Touches nothing."""
    run, target = Path(run_dir).resolve(), Path(out).resolve()
    if target == run or run in target.parents or target in run.parents:
        where = "is" if target == run else "is inside" if run in target.parents else "holds"
        raise ConfigError(f"--out {out} {where} the run folder {run_dir}: the export goes to a folder of its own; "
                          "choose another --out")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; the export is a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise ConfigError(f"--out {out} exists and holds other files, not an export (no adapter_config.json, no "
                          "merged model): not replacing it, even with --overwrite; choose another --out")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out {out} exists: pass --overwrite to replace it, or choose another --out")
    problem = folder_problem(out)
    if problem:
        raise ConfigError(f"--out {out}: cannot write the export there: {problem}")


def export_run(run_dir: str | Path, out_dir: str | Path, client: int | str | None = None, *,
               merged: bool = False, overwrite: bool = False) -> Path:
    """Export the run in ``run_dir`` to ``out_dir``; returns the folder written."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    check_export_out(run_dir, Path(out_dir), overwrite)
    ckpt_path = latest_checkpoint(run_dir)
    if ckpt_path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint to export")
    ckpt = load_checkpoint(ckpt_path)
    setup = build(config)
    method = setup.method
    if method.personalised and client is None:
        raise ValueError(f"{method.name} is personalised: every client has its own model; pass --client K "
                         f"(0..{config.federated.clients - 1})")
    if client is not None and client not in range(config.federated.clients):
        raise ValueError(f"--client {client!r}: the run has clients 0..{config.federated.clients - 1}")
    tensors = next_model(method, ckpt.state, 0 if client is None else client, ckpt.kept)
    head = dict(ckpt.state.dense) if setup.train_head else None
    if merged:
        return export_merged(setup.model, setup.adapters, tensors, head, method, config.lora.alpha, out_dir,
                             tokenizer=setup.tokenizer, overwrite=overwrite)
    if "W" in next(iter(tensors.values())):
        raise ValueError(f"{method.name} trains full-rank updates, which PEFT's LoRA format cannot hold; "
                         "export the merged model instead (rolora llm export RUN_DIR --out DIR --merged)")
    base = None if config.model.name in TINY else str(resolve_folder(config.model.name, None))
    return export_peft(setup.model, setup.adapters, tensors, head, method, config.lora.alpha, out_dir,
                       base_name_or_path=base, overwrite=overwrite)
