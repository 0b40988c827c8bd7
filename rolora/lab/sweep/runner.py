"""``rolora sweep``: run every cell of a sweep spec (:mod:`rolora.lab.sweep.spec`), resumably.

Each cell is a normal ``rolora llm run`` in its own process and run folder::

    DIR/                      default runs/sweeps/<spec name>/
      sweep.json              the spec, every cell (id, labels, overrides, run_dir, status, phase),
                              the lr choice per method; rewritten atomically after every cell
      sweep.lock              the pid of the sweep running here (a second one is refused)
      cells/<id>/             the cell's run folder (config.json, metrics.jsonl, checkpoints, run.log)
                              and sweep.log (the cell process's terminal output)

Order: the lr phase (every selected method × lr at the selection column, scoring the validation
split only), then the choice (best final ``lr.metric``; ties go to the lower ``val_loss``), then
the main cells seed by seed, so an interrupted sweep has whole seed-0 tables first. Re-running
skips finished cells, resumes interrupted ones (``rolora llm run --resume``) and retries failed
ones; a cell whose folder holds a different config is marked failed, never overwritten; a cell the
report's CSVs record as done (``recorded``, :mod:`rolora.lab.sweep.record`) is not run, and a pending
cell that a sibling sweep has already run with the same config gets a copy of that run
(:mod:`rolora.lab.sweep.twins`; ``copy=False`` runs it afresh). With
``jobs`` > 1 that many cells run at once, each with ``run.threads = max(1, cores // jobs)``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rolora.llm.config import ConfigError, diff
from rolora.llm.run_folder import read_config, read_metrics, write_atomic
from rolora.lab.sweep.record import RECORDED, Recorded
from rolora.lab.sweep.spec import Cell, Spec, cell_config, lr_cells, lr_text, main_cells, select
from rolora.lab.sweep.twins import config_key, copy_run, finished, finished_runs

STATUSES = ("done", "partial", "pending", "failed", RECORDED)
FINISHED = ("done", RECORDED)
"""Statuses of a cell that is not run again (recorded: done elsewhere, see sweep_record)."""
ERROR_TAIL = 2000


def sweep_dir(spec: Spec, out: Path | None) -> Path:
    return Path(out) if out else Path("runs") / "sweeps" / spec.name


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.id


def rounds_of(spec: Spec, cell: Cell, out: Path) -> tuple[int, int]:
    """(rounds finished, rounds in all) of the cell's run folder."""
    rows = read_metrics(cell_dir(out, cell))
    return (rows[-1]["round"] if rows else 0), cell_config(spec, cell).total_rounds


def disk_status(spec: Spec, cell: Cell, out: Path) -> str:
    """done (every round, curves written at the end), partial (a run started) or pending."""
    folder = cell_dir(out, cell)
    if not (folder / "config.json").is_file():
        return "pending"
    return "done" if finished(folder, cell_config(spec, cell).total_rounds) else "partial"


def config_mismatch(spec: Spec, cell: Cell, out: Path) -> list[str]:
    """Keys where the cell folder's saved config differs from the cell's (run.threads aside)."""
    return [k for k in diff(read_config(cell_dir(out, cell)), cell_config(spec, cell)) if k != "run.threads"]


def final_value(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return values[-1] if values else None


def choose_lr(spec: Spec, cells: list[Cell], status: dict[str, str], out: Path) -> dict:
    """``lr_choice`` of sweep.json: per method label whose lr cells have all been tried, the grid,
    the final metric per lr (None where the cell failed), and the chosen lr (None if none finished)."""
    choice = {}
    for label in dict.fromkeys(c.labels["method"] for c in cells):
        mine = [c for c in cells if c.labels["method"] == label]
        if any(status[c.id] in ("pending", "partial", RECORDED) for c in mine):
            continue  # untried, or (recorded) chosen elsewhere: Sweep.refresh takes that choice
        scores, ranked = {}, []
        for c in mine:
            rows = read_metrics(cell_dir(out, c)) if status[c.id] == "done" else []
            value = final_value(rows, spec.lr.metric)
            scores[lr_text(c.labels["lr"])] = value
            if value is not None:
                sign = -1 if spec.lr.larger_is_better else 1
                loss = final_value(rows, "val_loss")
                ranked.append((sign * value, math.inf if loss is None else loss, c.labels["lr"]))
        choice[label] = {"grid": list(mine[0].method.lr_grid or spec.lr.grid), "metric": spec.lr.metric, "scores": scores,
                         "chosen": min(ranked)[2] if ranked else None,
                         "selected_at": {**mine[0].column.labels, "seed": spec.lr.seed}}
    return choice


def chosen_lrs(lr_choice: dict) -> dict[str, float]:
    return {label: c["chosen"] for label, c in lr_choice.items() if c["chosen"] is not None}


def read_record(path: Path) -> dict:
    """A sweep.json, checked for the shape this module writes (a ConfigError naming the file if not)."""
    try:
        record = json.loads(path.read_text())
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    cells = record.get("cells") if isinstance(record, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in cells):
        raise ConfigError(f"{path}: not a sweep record (expected an object whose \"cells\" is a list of "
                          "cells with an \"id\"); move it away to start the sweep's record afresh")
    return record


class Sweep:
    """The cells of ``spec`` in ``out``, their statuses, and sweep.json."""

    def __init__(self, spec: Spec, out: Path | None = None, recorded: Recorded | None = None) -> None:
        self.spec = spec
        self.out = sweep_dir(spec, out)
        self.recorded = recorded or Recorded()
        self.borrowed: dict[str, str] = {}
        """{cell id: "sweep/cell"}: recorded because another sweep's recorded cell is its twin."""
        self.errors: dict[str, str] = {}
        previous = self.out / "sweep.json"
        if previous.is_file():
            self.errors = {c["id"]: c["error"] for c in read_record(previous)["cells"] if c.get("error")}
        self.lr = lr_cells(spec)
        self.refresh()

    def refresh(self) -> None:
        """Statuses from the disk; failed: an earlier attempt failed and the cell has not finished
        since, or its folder holds a run of a different config."""
        self.status = {c.id: self._status(c) for c in self.lr}
        self.lr_choice = choose_lr(self.spec, self.lr, self.status, self.out) if self.spec.lr else {}
        for label, choice in self.recorded.lr_choice.items():
            mine = [c for c in self.lr if c.labels["method"] == label]
            if label not in self.lr_choice and mine and all(self.status[c.id] in FINISHED for c in mine):
                self.lr_choice[label] = choice
        self.main = main_cells(self.spec, chosen_lrs(self.lr_choice))
        self.status.update({c.id: self._status(c) for c in self.main})

    def _status(self, cell: Cell) -> str:
        status = disk_status(self.spec, cell, self.out)
        if status == "pending" and cell.id in self.recorded.cells and (
                cell.phase != "lr" or cell.labels["method"] in self.recorded.lr_choice):
            return RECORDED  # an lr cell only with its method's recorded choice, else no choice could be made
        if status == "pending" and self.recorded.twins and cell.phase == "main" and cell.labels["lr"] is not None:
            twin = self.recorded.twins.get(config_key(cell_config(self.spec, cell)))
            if twin is not None:
                self.borrowed[cell.id] = twin
                return RECORDED
        if status != "pending":
            changed = config_mismatch(self.spec, cell, self.out)
            if changed:
                self.errors[cell.id] = (f"{cell_dir(self.out, cell)} holds a run with a different config "
                                        f"({', '.join(changed)}); delete that folder to run this cell afresh")
                return "failed"
        return "failed" if status != "done" and cell.id in self.errors else status

    @property
    def cells(self) -> list[Cell]:
        return self.lr + self.main

    def record(self, cell: Cell, error: str | None = None) -> None:
        """After an attempt at ``cell``: its error (None: it exited cleanly), statuses, sweep.json."""
        if error:
            self.errors[cell.id] = error
        else:
            self.errors.pop(cell.id, None)
        self.refresh()
        self.write()

    def document(self) -> dict:
        cells = []
        for c in self.cells:
            entry = {"id": c.id, "labels": c.labels, "overrides": list(c.overrides), "run_dir": f"cells/{c.id}",
                     "status": self.status[c.id], "phase": c.phase}
            if self.status[c.id] == "failed" and c.id in self.errors:
                entry["error"] = self.errors[c.id]
            if self.status[c.id] == RECORDED and c.id in self.borrowed:
                entry["from"] = self.borrowed[c.id]
            cells.append(entry)
        return {"name": self.spec.name, "spec": self.spec.raw, "cells": cells, "lr_choice": self.lr_choice}

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_atomic(self.out / "sweep.json", json.dumps(self.document(), indent=2) + "\n")


def _command(spec: Spec, cell: Cell, folder: Path, resume: bool, threads: int) -> list[str]:
    head = [sys.executable, "-m", "rolora", "llm", "run"]
    if resume:  # the saved config (checked against the cell's first); its run.threads stays as saved
        return [*head, "--resume", str(folder), "--quiet"]
    return [*head, "--config", spec.base, *cell.overrides, f"run.threads={threads}", "--out", str(folder), "--quiet"]


def _tail(folder: Path) -> str:
    """The end of the cell's terminal output, or of its run.log where the process printed nothing
    (killed, or --quiet before the error)."""
    for name in ("sweep.log", "run.log"):
        path = folder / name
        text = path.read_text(errors="replace").strip() if path.is_file() else ""
        if text:
            return f"[{name}] " + text[-ERROR_TAIL:]
    return "(no output)"


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


class _Runner:
    """Runs cells in up to ``jobs`` processes; records each as it ends and prints a progress line."""

    def __init__(self, sweep: Sweep, jobs: int, cores: int, echo: Callable[[str], None]) -> None:
        self.sweep, self.jobs, self.echo = sweep, jobs, echo
        self.threads = max(1, cores // jobs)
        self.start = time.perf_counter()
        self.durations: list[float] = []
        self.finished = 0
        self.total = 0

    def run(self, cells: list[Cell]) -> None:
        queue = [c for c in cells if self.sweep.status[c.id] not in FINISHED]
        running: dict[str, tuple[Cell, subprocess.Popen | None, float, object]] = {}
        try:
            while queue or running:
                while queue and len(running) < self.jobs:
                    cell = queue.pop(0)
                    running[cell.id] = (cell, *self._launch(cell))
                time.sleep(0.2)
                for cid, (cell, proc, started, log) in list(running.items()):
                    if proc is None or proc.poll() is not None:
                        del running[cid]
                        self._finish(cell, proc, started, log)
        finally:
            for cell, proc, _, log in running.values():  # interrupted: stop the cells this sweep started
                if proc is not None:
                    proc.terminate()
                    proc.wait()
                    log.close()

    def _launch(self, cell: Cell):
        sweep, folder = self.sweep, cell_dir(self.sweep.out, cell)
        started = time.perf_counter()
        resume = sweep.status[cell.id] in ("partial", "failed") and (folder / "config.json").is_file()
        if resume and config_mismatch(sweep.spec, cell, sweep.out):  # refresh() recorded the error
            return None, started, None
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "sweep.log", "a")  # noqa: SIM115 - closed when the process ends
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        proc = subprocess.Popen(_command(sweep.spec, cell, folder, resume, self.threads), stdout=log,
                                stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        return proc, started, log

    def _finish(self, cell: Cell, proc, started: float, log) -> None:
        sweep = self.sweep
        error = sweep.errors.get(cell.id) if proc is None else None
        if proc is not None:
            log.close()
            if proc.returncode != 0:
                error = f"exit status {proc.returncode}:\n{_tail(cell_dir(sweep.out, cell))}"
        sweep.record(cell, error)
        status = sweep.status[cell.id]
        took = time.perf_counter() - started
        self.finished += 1
        if status == "done":
            self.durations.append(took)
        elapsed = time.perf_counter() - self.start
        remaining = self.total - self.finished
        eta = (sum(self.durations) / len(self.durations) * remaining / self.jobs) if self.durations else None
        self.echo(f"[sweep] {self.finished}/{self.total} {status:7s} {cell.id} in {_fmt(took)}; elapsed "
                  f"{_fmt(elapsed)}, ETA {'?' if eta is None else _fmt(eta)}"
                  + (f"\n        {error.strip().splitlines()[-1]}" if error else ""))


def _die_with_parent() -> None:
    """In a cell process (Linux): SIGTERM when the sweep process dies, however it dies, so a killed
    sweep never leaves cells running that a re-run would start a second time."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _TermAsExit:
    """SIGTERM raises SystemExit while the sweep runs, so its clean-up (stop cells, write
    sweep.json, drop the lock) runs as on Ctrl-C."""

    def __enter__(self):
        import signal

        try:
            self.previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cells_to_run(sweep: Sweep, only: str | None) -> tuple[list[Cell], list[Cell]]:
    """(lr cells, main cells) that ``only`` selects: the matching main cells, and the lr cells
    that match or that the selected main cells' methods need."""
    wanted_main = select(sweep.main, only)
    methods = {c.labels["method"] for c in wanted_main}
    matching_lr = {c.id for c in select(sweep.lr, only)}
    return [c for c in sweep.lr if c.labels["method"] in methods or c.id in matching_lr], wanted_main


def still_to_run(sweep: Sweep, only: str | None = None) -> list[Cell]:
    """The cells of ``cells_to_run`` that are not finished (done here, or recorded as done elsewhere)."""
    lr_needed, wanted_main = cells_to_run(sweep, only)
    return [c for c in lr_needed + wanted_main if sweep.status[c.id] not in FINISHED]


def copy_twins(sweep: Sweep, cells: list[Cell], echo: Callable[[str], None] = print) -> int:
    """Fill each pending cell of ``cells`` whose lr is known with a copy of a sibling sweep's finished run
    of the same config (:mod:`rolora.lab.sweep.twins`); the number copied."""
    pending = [c for c in cells if sweep.status[c.id] == "pending" and c.labels["lr"] is not None]
    runs = finished_runs(sweep.out.parent, sweep.out) if pending else {}
    copied = 0
    for cell in pending:
        source = runs.get(config_key(cell_config(sweep.spec, cell)))
        if source is not None:
            copy_run(source, cell_dir(sweep.out, cell))
            echo(f"[sweep] copied {cell.id} from {source} (the same config, finished there)")
            copied += 1
    if copied:
        sweep.refresh()
        sweep.write()
    return copied


def run_sweep(spec: Spec, out: Path | None = None, jobs: int = 1, only: str | None = None,
              cores: int | None = None, echo: Callable[[str], None] = print, recorded: Recorded | None = None,
              copy: bool = True) -> Sweep:
    """Run the cells of ``spec`` (those matching ``only``, plus the lr cells their methods need), but
    those ``recorded`` as done elsewhere and, with ``copy``, those a sibling sweep has run (copied)."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be ≥ 1, got {jobs}")
    sweep = Sweep(spec, out, recorded)
    with _TermAsExit(), _lock(sweep.out):
        sweep.write()
        lr_needed, wanted_main = cells_to_run(sweep, only)
        if copy:
            copy_twins(sweep, lr_needed + wanted_main, echo)
        runner = _Runner(sweep, jobs, cores or available_cores(), echo)
        todo = still_to_run(sweep, only)
        runner.total = len(todo)
        echo(f"[sweep] {spec.name}: {len(todo)} cells to run ({len(sweep.cells) - len(todo)} done or not selected), "
             f"{jobs} at a time with {runner.threads} thread(s) each -> {sweep.out}")
        try:
            runner.run(lr_needed)
            wanted_ids = {c.id for c in wanted_main}
            chosen = [c for c in sweep.main if c.id in wanted_ids and c.labels["lr"] is not None]
            if copy and copy_twins(sweep, chosen, echo):  # main cells whose lr the phase just chose
                runner.total = runner.finished + len(still_to_run(sweep, only))
            runner.run(chosen)
            for c in sweep.main:
                if c.id in wanted_ids and c.labels["lr"] is None:
                    sweep.record(c, f"no learning rate chosen for {c.labels['method']!r}: its lr cells failed")
        finally:  # also when interrupted: sweep.json says where every cell stands
            sweep.refresh()
            sweep.write()
    return sweep


class _lock:
    """sweep.lock holding this process's pid; refused while another live sweep holds it."""

    def __init__(self, out: Path) -> None:
        self.path = out / "sweep.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            pid = int(self.path.read_text().strip() or 0)
            if pid and pid != os.getpid() and _alive(pid):
                raise ConfigError(f"{self.path.parent}: another sweep (pid {pid}) is running there")
        write_atomic(self.path, f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_table(sweep: Sweep, only: str | None = None) -> str:
    """One line per cell: id, phase, status, rounds, final val/test accuracy; then the counts."""
    lines = [f"{'cell':44s} {'phase':5s} {'status':8s} {'rounds':>9s} {'val_acc':>8s} {'test_acc':>8s}"]
    for c in select(sweep.cells, only):
        done, total = rounds_of(sweep.spec, c, sweep.out)
        rows = read_metrics(cell_dir(sweep.out, c))
        acc = [final_value(rows, k) for k in ("val_accuracy", "test_accuracy")]
        lines.append(f"{c.id:44s} {c.phase:5s} {sweep.status[c.id]:8s} {f'{done}/{total}':>9s} "
                     + " ".join(f"{'-' if a is None else f'{a:.4f}':>8s}" for a in acc))
    counts = {s: sum(1 for c in select(sweep.cells, only) if sweep.status[c.id] == s) for s in STATUSES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    for label, choice in sweep.lr_choice.items():
        lines.append(f"lr {label}: {choice['chosen']} ({choice['metric']}: {choice['scores']})")
    return "\n".join(lines)


def dry_run(sweep: Sweep, only: str | None = None) -> str:
    """Every selected cell with its rounds, eval_every and full override list; nothing is run."""
    lines = [f"# base config: {sweep.spec.base}; run folders under {sweep.out}/cells/"]
    runs = finished_runs(sweep.out.parent, sweep.out)
    for c in select(sweep.cells, only):
        config = cell_config(sweep.spec, c)
        lr = "" if c.labels["lr"] is not None else "  (train.lr: chosen by the lr phase)"
        source = runs.get(config_key(config)) if sweep.status[c.id] == "pending" and c.labels["lr"] is not None else None
        note = f"  (would be copied from {source})" if source is not None else ""
        if c.id in sweep.borrowed:
            note = f"  (its twin {sweep.borrowed[c.id]} is recorded: the report takes its rows)"
        lines.append(f"{c.id}  [{c.phase}, {sweep.status[c.id]}] {config.federated.clients} clients × "
                     f"{config.total_rounds} rounds, eval every {config.run.eval_every}{lr}{note}")
        lines.append("    " + " ".join(c.overrides))
    lines.append(f"# {len(select(sweep.cells, only))} cells")
    return "\n".join(lines)
