"""Each sweep's main cells as configs, rebuilt from its spec: what the report knows of a run's regime.

A sweep that ran is rebuilt from the spec recorded in ``lm-sweeps.csv`` (word for word what ran) and
the lr choices of ``lm-lr-choice.csv``; a spec in ``rolora/lab/specs/`` that has not run yet is read
from its file, so a new sweep shows in the report (as not run) the moment its spec exists. From the
configs come the departures from the paper's recipe, the test set's size, the local work of each
setting, and each cell's twin identity (two cells with the same config, ``run.threads`` aside, are the
same run: :func:`rolora.lab.sweep.twins.config_key`). A spec that no longer expands (a base or a key
that has gone) gives no configs; the report then falls back on the rows' ``copied_from``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rolora.llm.config import ConfigError, RunConfig
from rolora.lab.report.csv_files import number
from rolora.lab.report.sweep_reader import FIXED_LR
from rolora.lab.sweep.spec import SPECS_DIR, cell_config, main_cells, parse_spec
from rolora.lab.sweep.twins import config_key


@dataclass(frozen=True)
class SweepSpec:
    name: str
    configs: dict[str, RunConfig]
    """{main cell id: its config} ({} when the spec does not expand here)."""
    ran: bool
    """Rows of it are recorded (else: a spec of the specs folder that has not run yet)."""
    header: str = ""
    """The first comment line of its spec file ('' when there is none): what the sweep is."""


def expand(raw: dict, name: str, chosen: dict[str, float], folder: Path = SPECS_DIR) -> dict[str, RunConfig]:
    """{main cell id: config} of a spec (``chosen``: the lr phase's choices by method label)."""
    try:
        spec = parse_spec(raw, name, folder)
        return {c.id: cell_config(spec, c) for c in main_cells(spec, chosen)}
    except (ConfigError, KeyError, TypeError, ValueError):
        return {}


def header_line(path: Path) -> str:
    """The spec file's first comment line, without '# ' ('' for no file or no comment)."""
    if not path.is_file():
        return ""
    first = path.read_text().splitlines()[:1]
    return first[0].lstrip("#").strip() if first and first[0].startswith("#") else ""


def _chosen(lr_rows: list[dict[str, str]], sweep: str) -> dict[str, float]:
    return {r["method"]: number(r["chosen"]) for r in lr_rows
            if r["sweep"] == sweep and r["metric"] != FIXED_LR and r["chosen"]}


@lru_cache(maxsize=64)
def _expand_cached(raw_json: str, name: str, chosen_json: str, folder: str) -> dict[str, RunConfig]:
    # Many reports are rendered in one test process: a spec is expanded once per distinct input.
    return expand(json.loads(raw_json), name, json.loads(chosen_json), Path(folder))


def sweep_specs(sweep_rows: list[dict[str, str]], lr_rows: list[dict[str, str]],
                specs_dir: Path = SPECS_DIR) -> dict[str, SweepSpec]:
    """Every recorded sweep, then every spec of ``specs_dir`` not recorded yet, by name."""
    specs_dir = Path(specs_dir)
    out: dict[str, SweepSpec] = {}
    for row in sweep_rows:
        name = row["sweep"]
        raw = row.get("spec") or "null"
        configs = _expand_cached(raw, name, json.dumps(_chosen(lr_rows, name), sort_keys=True), str(specs_dir)) \
            if isinstance(json.loads(raw), dict) else {}
        out[name] = SweepSpec(name, configs, True, header_line(specs_dir / f"{name}.toml"))
    for path in sorted(specs_dir.glob("*.toml")):
        if path.stem in out:
            continue
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError:
            continue
        configs = _expand_cached(json.dumps(raw, sort_keys=True), path.stem, "{}", str(specs_dir))
        out[path.stem] = SweepSpec(path.stem, configs, False, header_line(path))
    return out


def identities(specs: dict[str, SweepSpec], cell_rows: list[dict[str, str]], order: list[str]) -> dict[str, str]:
    """{"sweep/cell": the run it is}: the first cell, in ``order`` of sweeps, with the same config; where a
    spec does not expand, the row's ``copied_from`` (or the cell itself)."""
    rank = {name: i for i, name in enumerate(order)}
    first: dict[str, str] = {}
    for name in sorted(specs, key=lambda n: (rank.get(n, len(rank)), n)):
        for cell, config in specs[name].configs.items():
            first.setdefault(config_key(config), f"{name}/{cell}")
    out = {}
    for r in cell_rows:
        here = f"{r['sweep']}/{r['cell']}"
        config = specs.get(r["sweep"]).configs.get(r["cell"]) if r["sweep"] in specs else None
        out[here] = first[config_key(config)] if config is not None else (r.get("copied_from") or here)
    return out
