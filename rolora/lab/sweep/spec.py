"""A sweep spec (TOML) and the cells it expands to: methods × columns × seeds, and the lr phase.

A spec names a base config and how cells differ from it::

    # what it reproduces, the scale, the estimated cost
    experiment = "clients"            # the "experiment" label and the cell-id prefix (default: file stem)
    base = "quickstart"               # a shipped config name (rolora llm configs) or a file, relative to the spec
    overrides = ["model.max_length=64", "data.val_size=500"]   # every cell
    seeds = [0, 1, 2]                 # run.seed of the main cells (default [0])
    evals = 4                         # evaluations per run: run.eval_every = ceil(rounds / evals) (0: the base's)

    [axes.clients]                    # a grid axis: value = the overrides that make it
    short = "n"                       # the axis' letter in column ids (n20-r4); "" = the bare value
    3 = ["federated.clients=3"]
    20 = ["federated.clients=20"]

    [axes.rank]
    short = "r"
    4 = ["lora.rank=4", "lora.alpha=8.0"]

    [[columns]]                       # optional: the columns to run (default: every combination of values)
    clients = 3                       # one value per axis
    rank = 4
    only_methods = ["fedavg-lora"]    # optional: only these methods in this column

    [[methods]]
    label = "galore-fedavg"           # the "method" label of its cells
    method = "fedavg-full"            # federated.method (a method spec: "rolora:ffa_after=0.2")
    overrides = ["train.optimizer=galore", "train.galore_rank=4"]
    only_at = [{clients = 3}, {clients = 20}]   # optional: only in columns matching one of these
    lr = 1e-3                         # optional: a fixed learning rate (no lr selection for it)
    lr_at = {clients = 3}             # optional: select its lr in this column instead of lr.at's
    lr_grid = [1e-4, 3e-4, 1e-3]      # optional: its own selection grid instead of lr.grid

    [lr]                              # optional: choose each method's lr on the validation split
    grid = [1e-3, 3e-3, 1e-2]
    at = {clients = 20, seed = 0}     # the selection column (must match exactly one) and its seed;
                                      # a method's own lr_at = {clients = 1} overrides the column
    metric = "val_accuracy"           # final-round value; larger is better (a *loss/*perplexity: smaller)

A cell's overrides, in order: the spec's, its column's (axis values in axis order),
``federated.method``, the method's, then ``train.lr``, ``run.seed`` and ``run.eval_every`` (and
``run.eval_splits=["val"]`` for lr-phase cells, which never score the test set). Later ones win.
Every cell's config is loaded and checked when the spec is expanded, so a bad key fails before
anything runs, naming the cell and the key.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from rolora.llm.config import ConfigError, RunConfig, find_config, find_toml, load_config, parse_value

SPECS_DIR = Path(__file__).resolve().parents[1] / "specs"
"""Sweep specs that ship with the package (``rolora sweep NAME`` finds them by name)."""

TOP_KEYS = {"experiment", "base", "overrides", "seeds", "evals", "axes", "columns", "methods", "lr"}
METHOD_KEYS = {"label", "method", "overrides", "only_at", "lr", "lr_at", "lr_grid"}
LR_KEYS = {"grid", "at", "metric"}
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class MethodEntry:
    label: str
    method: str
    overrides: tuple[str, ...] = ()
    only_at: tuple[dict, ...] = ()
    lr: float | None = None
    lr_at: dict | None = None
    """Where this method's lr is selected, if not at ``lr.at`` (e.g. a centralised column)."""
    lr_grid: tuple[float, ...] | None = None
    """This method's own selection grid instead of ``lr.grid`` (full-rank updates want smaller lrs)."""


@dataclass(frozen=True)
class Column:
    id: str
    labels: dict
    overrides: tuple[str, ...]
    only_methods: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LrSelection:
    grid: tuple[float, ...]
    at: dict
    seed: int
    metric: str

    @property
    def larger_is_better(self) -> bool:
        return not self.metric.endswith(("loss", "perplexity"))


@dataclass(frozen=True)
class Spec:
    name: str
    experiment: str
    base: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    evals: int
    columns: tuple[Column, ...]
    methods: tuple[MethodEntry, ...]
    lr: LrSelection | None
    raw: dict = field(default_factory=dict)

    def runs_at(self, method: MethodEntry, column: Column) -> bool:
        if column.only_methods is not None and method.label not in column.only_methods:
            return False
        return not method.only_at or any(_matches(column.labels, at) for at in method.only_at)

    def selection_column(self, method: MethodEntry | None = None) -> Column:
        at = method.lr_at if method is not None and method.lr_at is not None else self.lr.at
        return next(c for c in self.columns if _matches(c.labels, at))

    def selected(self, method: MethodEntry) -> bool:
        """Whether ``method``'s learning rate comes from the lr phase (not fixed, and a grid exists)."""
        return self.lr is not None and method.lr is None


@dataclass(frozen=True)
class Cell:
    id: str
    phase: str
    """"lr" (selection, validation split only) or "main"."""
    labels: dict
    overrides: tuple[str, ...]
    """Everything after ``--config BASE``; for a main cell awaiting the lr choice, without train.lr."""
    method: MethodEntry
    column: Column
    seed: int


def _fail(where: str, message: str) -> None:
    raise ConfigError(f"{where}: {message}")


def find_spec(name_or_path: str) -> Path:
    """A spec file by path, or by the name of one shipped in ``rolora/lab/specs``."""
    return find_toml(name_or_path, SPECS_DIR, "sweep spec", "spec")


def load_spec(name_or_path: str) -> Spec:
    path = find_spec(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    return parse_spec(raw, path.stem, path.parent, str(path))


def _label_value(key: str) -> int | float | str:
    """An axis value's label: the TOML key read as a number where it is one ("20" -> 20)."""
    value = parse_value(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else key


def _natural(value) -> bool:
    """An integer ≥ 0, and not a bool (TOML's true is no seed)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _typed(value) -> str:
    """``value`` with its type, spelled as in TOML: ``bool true``, ``str "3"``, ``float 1.5``."""
    return f"{type(value).__name__} {json.dumps(value, default=str)}"


def _matches(labels: dict, wanted: dict) -> bool:
    return all(k in labels and str(labels[k]) == str(v) for k, v in wanted.items())


def _strings(where: str, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(where, f"must be a list of strings (section.key=value), got {value!r}")
    for item in value:
        if "=" not in item or "." not in item.partition("=")[0]:
            _fail(where, f"{item!r} is not section.key=value")
    return tuple(value)


def _unknown(where: str, table: dict, known: set) -> None:
    extra = sorted(set(table) - known)
    if extra:
        _fail(where, f"unknown key {extra[0]!r}; valid: {', '.join(sorted(known))}")


def resolve_base(base: str, folder: Path) -> str:
    """A spec's base as load_config takes it: a file beside the spec (``folder``) by its absolute path, else
    as written (a shipped config name or a path from here)."""
    if not Path(base).is_absolute() and (folder / base).is_file():
        return str((folder / base).resolve())
    return base


def parse_spec(raw: dict, name: str, folder: Path = Path("."), where: str = "spec") -> Spec:
    """A :class:`Spec` from parsed TOML; a ConfigError naming ``where`` and the key on bad input."""
    _unknown(where, raw, TOP_KEYS)
    if "base" not in raw or not isinstance(raw["base"], str):
        _fail(where, "base: a shipped config name or a config file is required")
    base = resolve_base(raw["base"], folder)
    find_config(base)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        _fail(where, f"seeds: must be a non-empty list of integers ≥ 0, got {_typed(seeds)}")
    for i, seed in enumerate(seeds):
        if not _natural(seed):
            _fail(where, f"seeds[{i}]: must be an integer ≥ 0, got {_typed(seed)}")
    evals = raw.get("evals", 0)
    if not _natural(evals):
        _fail(where, f"evals: must be an integer ≥ 0, got {_typed(evals)}")
    experiment = raw.get("experiment", name)
    if not isinstance(experiment, str) or not SAFE_ID.match(experiment):
        _fail(where, f"experiment: must be a name of letters, digits, '.', '_' or '-', got {experiment!r}")
    axes = _axes(where, raw.get("axes", {}))
    methods = _methods(where, raw.get("methods"))
    columns = _columns(where, raw.get("columns"), axes, {m.label for m in methods})
    spec = Spec(name=name, experiment=experiment, base=base, overrides=_strings(f"{where}: overrides", raw.get("overrides", [])),
                seeds=tuple(seeds), evals=evals, columns=columns, methods=methods,
                lr=_lr(where, raw.get("lr"), axes), raw=raw)
    for i, m in enumerate(methods):
        for at in [*m.only_at, m.lr_at or {}]:
            for key in at:
                if key not in axes:
                    _fail(f"{where}: methods[{i}]", f"{key!r} in only_at / lr_at is not an axis ({', '.join(axes) or 'none'})")
        if not any(spec.runs_at(m, c) for c in columns):
            _fail(f"{where}: methods[{i}]", f"{m.label!r} runs in no column (check only_at and the columns' only_methods)")
    if spec.lr is not None:
        for m in methods:
            if not spec.selected(m):
                continue
            key, at = ("lr.at", spec.lr.at) if m.lr_at is None else (f"methods {m.label!r}: lr_at", m.lr_at)
            found = [c.id for c in columns if _matches(c.labels, at)]
            if len(found) != 1:
                _fail(where, f"{key} {at} must match exactly one column; matches {found or 'none'}")
            column = spec.selection_column(m)
            if not spec.runs_at(m, column):
                _fail(where, f"methods {m.label!r}: does not run at the lr selection column {column.id}; "
                             "give it a fixed lr = ..., an lr_at = {...} where it runs, or let it run there")
    lr_cells(spec), main_cells(spec, {})  # every cell's config loads (a bad key fails now, naming the cell)
    return spec


def _axes(where: str, raw) -> dict[str, dict]:
    """{axis: {"short": str, "values": {label value: (key, overrides)}}} in spec order."""
    if not isinstance(raw, dict):
        _fail(where, "axes: must be tables [axes.NAME] of value = [overrides]")
    axes = {}
    for axis, table in raw.items():
        if not isinstance(table, dict):
            _fail(where, f"axes.{axis}: must be a table of value = [overrides]")
        short = table.get("short", axis)
        if not isinstance(short, str):
            _fail(where, f"axes.{axis}.short: must be a string, got {short!r}")
        values = {}
        for key, overrides in table.items():
            if key != "short":
                if not SAFE_ID.match(key):
                    _fail(where, f"axes.{axis}: value {key!r} must be letters, digits, '.', '_' or '-'")
                values[_label_value(key)] = (key, _strings(f"{where}: axes.{axis}.{key}", overrides))
        if not values:
            _fail(where, f"axes.{axis}: has no values")
        axes[axis] = {"short": short, "values": values}
    return axes


def _column(axes: dict, chosen: dict, only: tuple | None) -> Column:
    labels, overrides, parts = {}, [], []
    for axis, value in chosen.items():
        key, more = axes[axis]["values"][value]
        labels[axis] = value
        overrides += more
        parts.append(f"{axes[axis]['short']}{key}")
    return Column(id="-".join(parts), labels=labels, overrides=tuple(overrides), only_methods=only)


def _columns(where: str, raw, axes: dict, method_labels: set) -> tuple[Column, ...]:
    if raw is None:
        combos = itertools.product(*[list(a["values"]) for a in axes.values()])
        return tuple(_column(axes, dict(zip(axes, combo)), None) for combo in combos)
    if not isinstance(raw, list):
        _fail(where, "columns: must be an array of tables [[columns]]")
    columns = []
    for i, table in enumerate(raw):
        at = f"{where}: columns[{i}]"
        if not isinstance(table, dict):
            _fail(at, f"must be a table (one value per axis), got {table!r}")
        _unknown(at, table, set(axes) | {"only_methods"})
        chosen = {}
        for axis, info in axes.items():
            if axis not in table:
                _fail(at, f"names no value of axis {axis!r} (every column needs one per axis)")
            match = [v for v in info["values"] if str(v) == str(table[axis])]
            if not match:
                _fail(at, f"{axis} = {table[axis]!r} is not a value of axes.{axis} ({', '.join(map(str, info['values']))})")
            chosen[axis] = match[0]
        only = table.get("only_methods")
        if only is not None:
            only = _strings_plain(f"{at}.only_methods", only)
            for label in only:
                if label not in method_labels:
                    _fail(at, f"only_methods names {label!r}, not a method label ({', '.join(sorted(method_labels))})")
        columns.append(_column(axes, chosen, only))
    ids = [c.id for c in columns]
    if len(set(ids)) < len(ids):
        _fail(where, f"columns: the same column twice ({', '.join(sorted({i for i in ids if ids.count(i) > 1}))})")
    return tuple(columns)


def _strings_plain(where: str, value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(where, f"must be a list of strings, got {value!r}")
    return tuple(value)


def _methods(where: str, raw) -> tuple[MethodEntry, ...]:
    if not isinstance(raw, list) or not raw:
        _fail(where, "methods: at least one [[methods]] table (label, method) is required")
    out = []
    for i, table in enumerate(raw):
        at = f"{where}: methods[{i}]"
        if not isinstance(table, dict):
            _fail(at, "must be a table")
        _unknown(at, table, METHOD_KEYS)
        label, method = table.get("label"), table.get("method")
        if not isinstance(label, str) or not SAFE_ID.match(label):
            _fail(at, f"label: must be letters, digits, '.', '_' or '-', got {label!r}")
        if not isinstance(method, str) or not method:
            _fail(at, f"method: a method spec is required (e.g. 'rolora'), got {method!r}")
        only_at = table.get("only_at", [])
        if not isinstance(only_at, list) or not all(isinstance(t, dict) for t in only_at):
            _fail(at, f"only_at: must be a list of tables ({{clients = 3}}), got {only_at!r}")
        lr_at = table.get("lr_at")
        if lr_at is not None and not isinstance(lr_at, dict):
            _fail(at, f"lr_at: must be a table ({{clients = 1}}), got {lr_at!r}")
        lr = table.get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
            _fail(at, f"lr: must be a number > 0, got {lr!r}")
        lr_grid = table.get("lr_grid")
        out.append(MethodEntry(label, method, _strings(f"{at}.overrides", table.get("overrides", [])),
                               tuple(only_at), None if lr is None else float(lr), lr_at,
                               None if lr_grid is None else _lr_grid(at, "lr_grid", lr_grid)))
    _check_method_specs(where, out)
    labels = [m.label for m in out]
    if len(set(labels)) < len(labels):
        _fail(where, f"methods: a label used twice ({', '.join(sorted({x for x in labels if labels.count(x) > 1}))})")
    return tuple(out)


def _lr_grid(where: str, key: str, grid) -> tuple[float, ...]:
    """A learning-rate grid: a non-empty list of numbers > 0 (else a clear error naming ``key``)."""
    if (not isinstance(grid, list) or not grid
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in grid)):
        _fail(where, f"{key}: must be a non-empty list of numbers > 0, got {grid!r}")
    return tuple(float(x) for x in grid)


def _check_method_specs(where: str, methods: list[MethodEntry]) -> None:
    """Every ``method`` is a method spec the registry knows (a typo fails now, not hours in)."""
    from rolora.federated import method_from_spec

    for i, m in enumerate(methods):
        try:
            method_from_spec(m.method, total_rounds=10)
        except (ValueError, TypeError, KeyError) as err:
            _fail(f"{where}: methods[{i}].method", f"{m.method!r}: {err}")


def _lr(where: str, raw, axes: dict) -> LrSelection | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        _fail(where, "lr: must be a table (grid, at, metric)")
    _unknown(f"{where}: lr", raw, LR_KEYS)
    grid = _lr_grid(where, "lr.grid", raw.get("grid"))
    at = raw.get("at", {})
    if not isinstance(at, dict):
        _fail(where, f"lr.at: must be a table ({{clients = 20, seed = 0}}), got {at!r}")
    at = dict(at)
    seed = at.pop("seed", 0)
    if not _natural(seed):
        _fail(where, f"lr.at.seed: must be an integer ≥ 0, got {_typed(seed)}")
    for key in at:
        if key not in axes:
            _fail(where, f"lr.at: {key!r} is not an axis ({', '.join(axes) or 'none'}) or seed")
    metric = raw.get("metric", "val_accuracy")
    if not isinstance(metric, str) or not metric.startswith("val_"):
        _fail(where, f"lr.metric: must be a validation metric (val_accuracy, val_loss, ...), got {metric!r}")
    return LrSelection(grid, at, seed, metric)


def lr_text(lr: float) -> str:
    return f"{lr:g}"


def _finish(spec: Spec, cell_id: str, phase: str, labels: dict, overrides: list[str], method: MethodEntry,
            column: Column, seed: int) -> Cell:
    """The cell with ``run.eval_every`` from ``evals``; its config is loaded to check every key."""
    if not SAFE_ID.match(cell_id):
        _fail(cell_id, "cell id must be letters, digits, '.', '_' or '-' (check labels and axis values)")
    try:
        config = load_config(spec.base, overrides)
        if spec.evals:
            overrides.append(f"run.eval_every={math.ceil(config.total_rounds / spec.evals)}")
            config = load_config(spec.base, overrides)
    except ConfigError as err:
        raise ConfigError(f"cell {cell_id}: {err}") from None
    if labels["lr"] is None and not spec.selected(method):  # no selection, no fixed lr: the config's
        labels["lr"] = config.train.lr
    return Cell(cell_id, phase, labels, tuple(overrides), method, column, seed)


def _overrides(spec: Spec, method: MethodEntry, column: Column, lr: float | None, seed: int) -> list[str]:
    out = [*spec.overrides, *column.overrides, f'federated.method="{method.method}"', *method.overrides]
    if lr is not None:
        out.append(f"train.lr={lr!r}")
    return out + [f"run.seed={seed}"]


def lr_cells(spec: Spec) -> list[Cell]:
    """The selection cells: every selected method × lr at the selection column, validation split only."""
    if spec.lr is None:
        return []
    seed = spec.lr.seed
    cells = []
    for method in spec.methods:
        if not spec.selected(method):
            continue
        column = spec.selection_column(method)
        for lr in method.lr_grid or spec.lr.grid:
            labels = {"experiment": spec.experiment, "method": method.label, "seed": seed, "lr": lr, **column.labels}
            overrides = _overrides(spec, method, column, lr, seed) + ['run.eval_splits=["val"]']
            cell_id = "-".join(p for p in ("lr", column.id, method.label, f"lr{lr_text(lr)}") if p)
            cells.append(_finish(spec, cell_id, "lr", labels, overrides, method, column, seed))
    return cells


def main_cells(spec: Spec, chosen: dict[str, float]) -> list[Cell]:
    """Seed by seed, then columns and methods in spec order; ``chosen``: the lr phase's choices by
    method label (a selected method without one gets no ``train.lr`` and the label lr None)."""
    cells = []
    for seed in spec.seeds:
        for column in spec.columns:
            for method in spec.methods:
                if not spec.runs_at(method, column):
                    continue
                lr = method.lr if not spec.selected(method) else chosen.get(method.label)
                labels = {"experiment": spec.experiment, "method": method.label, "seed": seed, "lr": lr, **column.labels}
                cell_id = "-".join(p for p in (spec.experiment, column.id, method.label, f"s{seed}") if p)
                cells.append(_finish(spec, cell_id, "main", labels, _overrides(spec, method, column, lr, seed),
                                     method, column, seed))
    ids = [c.id for c in cells]
    if len(set(ids)) < len(ids):
        _fail(spec.name, "two cells share an id; make axis values or method labels distinct")
    return cells


def select(cells: list[Cell], pattern: str | None) -> list[Cell]:
    """The cells whose id matches ``pattern`` (a glob; without * ? [ a substring), all when None."""
    if not pattern:
        return list(cells)
    glob = pattern if any(ch in pattern for ch in "*?[") else f"*{pattern}*"
    return [c for c in cells if fnmatch.fnmatchcase(c.id, glob)]


def cell_config(spec: Spec, cell: Cell) -> RunConfig:
    return load_config(spec.base, list(cell.overrides))
