"""A cell already run by another sweep with the same config is copied, not run again.

Specs share cells on purpose: handover's pure RoLoRA and FFA-LoRA cells, local-steps' 10-step column
and fewer-params' 'all' column are clients-50's runs (same config, lr and seed), kept so that each
sweep is judged on its own. A seeded run of one config gives the same numbers (bit for bit on the same
thread count: fewer-params' 'all' cells equal clients-50's), so running it again buys nothing. Before
it runs a pending cell, a sweep looks in its sibling sweep folders (``runs/sweeps/*/cells/*``) for a
finished run whose saved config equals the cell's, ``run.threads`` aside (as for ``--resume``); it
copies that folder into the cell's (atomically: a copy under a temporary name, then one rename) and
writes :data:`COPIED_FROM` there, naming the source. The cell is then done. The report counts a copied
cell's results like any other and its training time once (in the source's sweep).
``rolora sweep --no-copy`` runs every cell afresh.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rolora.llm.config import ConfigError, RunConfig
from rolora.llm.run_folder import read_config, read_metrics, write_atomic

COPIED_FROM = "copied_from.json"
"""In a copied cell's folder: {"from": the source run folder}."""
IGNORED = {"run.threads"}
"""Config keys that may differ between a cell and its twin (they change speed, not what is computed)."""


def finished(folder: Path, total_rounds: int) -> bool:
    """Every round logged and the closing curves written: what a sweep counts as a done cell."""
    rows = read_metrics(folder)
    return bool(rows) and rows[-1]["round"] >= total_rounds and (folder / "curves.png").is_file()


def config_key(config: RunConfig) -> str:
    """A config as one string, ``IGNORED`` keys aside: two runs are twins when their keys are equal."""
    values = config.to_dict()
    for key in IGNORED:
        section, name = key.split(".")
        values[section].pop(name, None)
    return json.dumps(values, sort_keys=True)


def finished_runs(root: Path, skip: Path) -> dict[str, Path]:
    """{config key: run folder} of the finished cells of the sweeps under ``root`` except ``skip`` (the
    first by path where two share a config)."""
    runs: dict[str, Path] = {}
    for folder in sorted(Path(root).glob("*/cells/*")):
        if folder.parent.parent == skip or not (folder / "config.json").is_file():
            continue
        try:
            config = read_config(folder)
        except (ConfigError, ValueError, OSError):
            continue  # a folder this version cannot read is no twin
        if finished(folder, config.total_rounds):
            runs.setdefault(config_key(config), folder)
    return runs


def copy_run(source: Path, target: Path) -> None:
    """``source``'s folder as ``target`` (absent before), with :data:`COPIED_FROM`; all or nothing."""
    if target.exists():
        raise ConfigError(f"{target} exists; a copy only fills an empty cell")
    staging = target.with_name(f".{target.name}.copying")
    if staging.exists():
        shutil.rmtree(staging)  # an earlier copy cut short
    shutil.copytree(source, staging)
    write_atomic(staging / COPIED_FROM, json.dumps({"from": str(source)}) + "\n")
    staging.rename(target)
