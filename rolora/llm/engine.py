"""The embedded engine: a whole federated run in one process, over one shared frozen base model.

``run(config, run_dir)`` plays ``config.total_rounds`` rounds through the core's round protocol
(:func:`rolora.federated.round.run_round`): participants sampled per round, each trains locally
(:mod:`rolora.llm.local_training`), ``method.aggregate`` makes the new state. It evaluates every
``eval_every`` rounds on the splits of ``run.eval_splits`` (test, and validation where
``data.val_size`` > 0: ``val_*`` metrics), checkpoints every ``checkpoint_every`` rounds (and at the end), and writes
the run folder (:mod:`rolora.llm.run_folder`). ``resume=True`` continues from the latest checkpoint
and gives the same final metrics and adapters, bit for bit on CPU, as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from rolora.federated import GlobalState
from rolora.federated.round import RoundFailed, run_round
from rolora.llm.checkpoint import latest_checkpoint, load_checkpoint, resumable_checkpoint, save_checkpoint
from rolora.llm.config import ConfigError, RunConfig, diff
from rolora.llm.evaluation import eval_sets, evaluate_round
from rolora.llm.training import local_training
from rolora.llm.prepare import RunSetup, build
from rolora.llm.round_row import round_row
from rolora.llm.data_split import data_split, write_data_split
from rolora.llm.run_folder import command_line, plot_curves, read_config, read_metrics, write_metrics, write_start

log = logging.getLogger("rolora.llm")

DIE_ENV = "ROLORA_TEST_DIE_IN_ROUND"
"""Test hook: the process exits (as if killed) in the middle of this round, after its first client."""


@dataclass
class History:
    """What a run returns: its metrics rows (round 0 = the initial model), final state and kept state."""

    rows: list[dict] = field(default_factory=list)
    state: GlobalState | None = None
    kept: dict = field(default_factory=dict)
    run_dir: Path | None = None
    setup: RunSetup | None = field(default=None, repr=False, compare=False)
    """The loaded model and data the run used (the embedded engine's; another method may reuse them)."""

    def last(self, key: str):
        values = [r[key] for r in self.rows if r.get(key) is not None]
        return values[-1] if values else None


class RunStopped(RuntimeError):
    """Every participant of a round failed; a resumable checkpoint of the last good state was written."""


def attach_run_log(logger: logging.Logger, run_dir: Path, quiet: bool) -> logging.Handler:
    """Log ``logger`` to ``run_dir/run.log`` (and to the terminal unless ``quiet``); returns the handler
    to remove when the run ends."""
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = not quiet
    return handler


def _bars(quiet: bool, total_rounds: int, first: int):
    from tqdm.auto import tqdm

    rounds = tqdm(total=total_rounds, initial=first, desc="rounds", unit="round", disable=quiet, position=0)
    clients = tqdm(total=0, desc="clients", unit="client", disable=quiet, leave=False, position=1)
    return rounds, clients


def prefixed(prefix: str, scores: dict) -> dict:
    return {f"{prefix}_{k}": float(v) for k, v in scores.items()}


def evaluate_splits(setup: RunSetup, state: GlobalState, kept: dict, clients: list, sets: dict | None = None) -> dict:
    """``val_*`` and ``test_*`` metrics of the round's model on ``sets`` (default: the run's
    :func:`~rolora.llm.evaluation.eval_sets`)."""
    scores = {}
    for name, data in (eval_sets(setup) if sets is None else sets).items():
        scores.update(prefixed(name, evaluate_round(setup, state, kept, clients, data)))
    return scores


def check_resume(run_dir: Path, config: RunConfig | None) -> RunConfig:
    """The saved config of ``run_dir``; a different ``config`` is refused, naming the keys that differ."""
    saved = read_config(run_dir)
    if config is not None:
        changed = diff(saved, config)
        if changed:
            raise ConfigError(f"{run_dir}: cannot resume with a different config; differing keys: {', '.join(changed)}")
    return saved


def check_same_data(run_dir: Path, config: RunConfig) -> None:
    """Refuse (ConfigError) to resume on data whose splits or client shares differ from the ones the
    run started on (``data_split.json``, compared by content hash): the rounds left would train on
    other examples. A run folder without the file (an older rolora's) is not checked."""
    path = run_dir / "data_split.json"
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
        saved_splits, saved_clients = saved["splits"], saved["clients"]
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"{path}: not a readable data split record ({err})") from None
    now, _ = data_split(config)
    changed = [f"the {name} split" for name, hashes in now["splits"].items() if saved_splits.get(name) != hashes]
    changed += [f"client {k}'s share" for k, hashes in now["clients"].items() if saved_clients.get(k) != hashes]
    changed += [f"client {k}'s share" for k in saved_clients if k not in now["clients"]]
    if changed:
        raise ConfigError(f"{run_dir}: the data of {config.data.dataset} changed since the run started "
                          f"(content hashes in {path} differ: {', '.join(changed)}); resuming would train on "
                          "other examples: restore the data the run started on, or start a new run")


def check_resumable(run_dir: Path, config: RunConfig) -> None:
    """Before a resumed run writes or logs anything: its latest checkpoint can be read and is this
    run's (CheckpointError otherwise), and its data is the data it started on."""
    from rolora.llm.run_method import run_method

    if resumable_checkpoint(run_dir, run_method(config)) is not None:  # without one the run starts again from round 0
        check_same_data(run_dir, config)


def config_of_run(config: RunConfig | None, run_dir: Path, resume: bool) -> RunConfig:
    """The run's config: ``config`` for a new run (refused where a run exists), the saved one when
    resuming (a different ``config``, an unusable checkpoint or changed data are refused, naming
    what is wrong). Creates ``run_dir``."""
    if resume:
        config = check_resume(run_dir, config)
        check_resumable(run_dir, config)
    elif config is None:
        raise ConfigError("a config is needed to start a run")
    elif (run_dir / "config.json").exists():
        raise ConfigError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return config


def start_state(setup: RunSetup, run_dir: Path, resume: bool, logger: logging.Logger = log,
                sets: dict | None = None) -> tuple:
    """(state, kept, rows) of the latest checkpoint when resuming, else of round 0: the run folder's
    start files, the initial model's evaluation and the round-0 checkpoint are written."""
    c = setup.config
    ckpt_path = latest_checkpoint(run_dir) if resume else None
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path)
        logger.info("resumed from %s (round %d of %d)", ckpt_path, ckpt.state.round, c.total_rounds)
        return ckpt.state, ckpt.kept, ckpt.rows
    if resume:
        logger.info("no checkpoint in %s: starting from round 0", run_dir)
    write_start(run_dir, c, str(setup.device), command_line(),
                {"base_dtype": setup.base_dtype.name, "base_dtype_reason": setup.base_dtype.reason,
                 "client_workers": setup.workers.count, "client_workers_reason": setup.workers.reason})
    write_data_split(run_dir, c)
    state = setup.initial_state()
    rows = [{"round": 0, **evaluate_splits(setup, state, {}, list(range(c.federated.clients)), sets)}]
    write_metrics(run_dir, rows)
    save_checkpoint(run_dir, state, {}, rows)
    return state, {}, rows


def run(config: RunConfig | None, run_dir: str | Path, *, resume: bool = False, quiet: bool = False,
        setup: RunSetup | None = None) -> History:
    """Run (or, with ``resume``, continue) the federated experiment of ``config`` in ``run_dir``."""
    run_dir = Path(run_dir)
    config = config_of_run(config, run_dir, resume)
    handler = attach_run_log(log, run_dir, quiet)
    try:
        return _run(config, run_dir, resume, quiet, setup)
    finally:
        log.removeHandler(handler)
        handler.close()


def _run(config: RunConfig, run_dir: Path, resume: bool, quiet: bool, setup: RunSetup | None) -> History:
    setup = setup or build(config, quiet=quiet)
    method, c = setup.method, config
    total = c.total_rounds
    clients = list(range(c.federated.clients))
    sets = eval_sets(setup)
    state, kept, rows = start_state(setup, run_dir, resume, sets=sets)
    log.info("method %s, %d clients, %d rounds, model %s (%d adapted layers) on %s", method.name, len(clients),
             total, c.model.name, len(setup.adapters), setup.device)

    rounds_bar, clients_bar = _bars(quiet, total, state.round)
    die_at = int(os.environ.get(DIE_ENV, "0") or 0)
    try:
        while state.round < total:
            t = state.round + 1
            train = local_training(setup, progress=clients_bar.update)
            if t == die_at:
                train = _dying(train)
            clients_bar.reset(total=max(1, round(c.federated.participation * len(clients))))
            start = time.perf_counter()
            try:
                result = run_round(method, state, clients, train, kept, fraction=c.federated.participation,
                                   seed=c.run.seed, weighting=c.federated.weighting)
            except RoundFailed as err:
                save_checkpoint(run_dir, state, kept, rows)
                log.error("%s; stopping. Checkpoint of round %d kept: resume with --resume", err, state.round)
                raise RunStopped(f"{err}. The last good state (round {state.round}) is checkpointed in {run_dir}; "
                                 "change the config (e.g. a smaller train.lr) and start again, or resume") from err
            wall = time.perf_counter() - start
            state, kept = result.state, result.kept
            rows.append(round_row(setup.config, t, result, wall, state=result.state))
            if result.dropped:
                log.warning("round %d: dropped clients %s (non-finite loss)", t, result.dropped)
            if t % c.run.eval_every == 0 or t == total:
                rows[-1].update(evaluate_splits(setup, state, kept, result.participants, sets))
            write_metrics(run_dir, rows)
            if t % max(1, c.run.checkpoint_every) == 0 or t == total:
                save_checkpoint(run_dir, state, kept, rows)
            rounds_bar.update(1)
            rounds_bar.set_postfix({k: f"{rows[-1][k]:.4g}" for k in ("train_loss", "val_accuracy", "test_accuracy", "dp_epsilon")
                                    if rows[-1].get(k) is not None})
            log.info("round %d: %s", t, {k: v for k, v in rows[-1].items() if k not in ("round", "layers")})
    finally:
        clients_bar.close()
        rounds_bar.close()
    plot_curves(run_dir, rows, f"{method.name} · {c.model.name} · {c.data.dataset} · {len(clients)} clients")
    return History(rows=read_metrics(run_dir), state=state, kept=kept, run_dir=run_dir, setup=setup)


def _dying(train):
    def dying(t, starts):
        train(t, starts[:1])
        os._exit(137)  # like SIGKILL: no cleanup, no final checkpoint

    return dying
