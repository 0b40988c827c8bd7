"""The ServerApp's body: the embedded engine's run, with Flower nodes doing the clients' work.

Round 0, evaluation, metrics rows, checkpoints and the run folder are those of ``rolora llm run``
(:mod:`rolora.llm.run_folder`, :mod:`rolora.llm.checkpoint`, :mod:`rolora.llm.evaluation`), so
``rolora llm export`` works on a Flower run. Each row also holds ``flower_upload_bytes`` /
``flower_download_bytes``: the ArrayRecord bytes Flower carried in the round, next to the method's
own count (``upload_bytes`` / ``download_bytes``, from ``method.communication``, which counts the
download *after* round t; Flower's column is what round t's training messages carried). For
personalised methods ``flower_eval_download_bytes`` is the new state sent to the evaluated nodes.

Shared-model methods are evaluated on the server (it builds the same model); personalised ones on
the evaluated clients' nodes, where their kept state lives. A checkpoint of a stateful method asks
the nodes that trained since the last checkpoint for their kept state (``state_bytes``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from rolora.federated.round import RoundFailed
from rolora.flower.secagg import SecAggSettings, check_run
from rolora.flower.setups import config_json, setup_for
from rolora.flower.strategy import RoloraStrategy
from rolora.llm.checkpoint import latest_checkpoint, save_checkpoint
from rolora.llm.config import RunConfig
from rolora.llm.engine import History, RunStopped, attach_run_log, config_of_run, prefixed, start_state
from rolora.llm.evaluation import evaluate_round
from rolora.llm.prepare import RunSetup
from rolora.llm.round_row import round_row
from rolora.llm.run_folder import plot_curves, read_metrics, write_metrics

log = logging.getLogger("rolora.flower")


def serve(grid: Grid, config: RunConfig | None, run_dir: str | Path, *, resume: bool = False, min_replies: int = 1,
          timeout: float = 3600.0, quiet: bool = False, secagg: SecAggSettings | None = None) -> History:
    """Play ``config``'s run over the nodes of ``grid`` in ``run_dir`` (``resume``: continue it from its
    latest checkpoint; a different config is refused). A round with fewer than ``min_replies``
    updates stops the run (:class:`RunStopped`) with a resumable checkpoint of the last good round.
    ``secagg``: the uploads travel through Flower's SecAgg+ (:mod:`rolora.flower.secagg`; methods
    that need individual uploads are refused before anything runs)."""
    run_dir = Path(run_dir)
    if secagg is not None and config is not None:
        check_run(config)  # before the run folder or any model
    config = config_of_run(config, run_dir, resume)
    if secagg is not None:
        check_run(config)  # a resumed run's method
    handler = attach_run_log(log, run_dir, quiet)
    try:
        return _serve(grid, config, run_dir, resume, min_replies, timeout, secagg)
    finally:
        log.removeHandler(handler)
        handler.close()


def _serve(grid: Grid, c: RunConfig, run_dir: Path, resume: bool, min_replies: int, timeout: float,
           secagg: SecAggSettings | None) -> History:
    text = config_json(c)
    setup = setup_for(text)
    state, kept, rows = start_state(setup, run_dir, resume, log)
    stateful = setup.method.keeps_state  # personalised methods' and SCAFFOLD's client state
    strategy = RoloraStrategy(setup.method, state, c.federated.clients, fraction=c.federated.participation,
                              seed=c.run.seed, weighting=c.federated.weighting,
                              client_sizes=[len(x) for x in setup.clients], min_replies=min_replies,
                              restore=kept if stateful else None, secure=secagg)
    strategy.timeout = timeout
    strategy.summary()
    strategy.introduce(grid, text, timeout)
    pending: set = set()  # clients whose kept state changed since the last checkpoint
    for t in range(state.round + 1, c.total_rounds + 1):
        start = time.perf_counter()
        replies = grid.send_and_receive(strategy.configure_train(t, ArrayRecord(), ConfigRecord(), grid),
                                        timeout=timeout)
        try:
            strategy.aggregate_train(t, replies)
        except RoundFailed as err:
            # Nodes that answered already kept round t's state, so a stateful method's kept states of
            # rounds since the last checkpoint cannot be read back consistently: its latest checkpoint stays.
            if not (stateful and pending):
                save_checkpoint(run_dir, strategy.state, kept, rows)
            resumable = latest_checkpoint(run_dir)
            log.error("%s; stopping. Resumable checkpoint: %s", err, resumable)
            raise RunStopped(f"{err}. Resume the run from {resumable} when enough nodes are back") from err
        rec = strategy.record
        wall = time.perf_counter() - start
        carried = {"flower_upload_bytes": rec.flower_upload_bytes, "flower_download_bytes": rec.flower_download_bytes}
        rows.append(round_row(setup.config, rec.t, rec, wall, carried, state=strategy.state))
        uploaded = list(rec.results)
        pending.update(uploaded)
        if not stateful:
            kept.update({k: None for k in uploaded})
        if rec.dropped:
            log.warning("round %d: dropped clients %s", t, rec.dropped)
        if t % c.run.eval_every == 0 or t == c.total_rounds:
            rows[-1].update(prefixed("test", _evaluate(grid, strategy, setup, timeout)))
            if stateful:
                rows[-1]["flower_eval_download_bytes"] = rec.flower_eval_download_bytes
        if t % max(1, c.run.checkpoint_every) == 0 or t == c.total_rounds:
            if stateful and pending:
                collected, rows[-1]["state_bytes"] = strategy.collect_kept(grid, sorted(pending), timeout)
                kept.update(collected)
            pending.clear()
            save_checkpoint(run_dir, strategy.state, kept, rows)
        write_metrics(run_dir, rows)
        log.info("round %d: %s", t, {k: v for k, v in rows[-1].items() if k not in ("round", "layers")})
    plot_curves(run_dir, rows, f"{setup.method.name} · {c.model.name} · {c.data.dataset} · "
                               f"{c.federated.clients} clients · Flower")
    return History(rows=read_metrics(run_dir), state=strategy.state, kept=kept, run_dir=run_dir)


def _evaluate(grid: Grid, strategy: RoloraStrategy, setup: RunSetup, timeout: float) -> dict:
    rec = strategy.record
    if not setup.method.personalised:
        return evaluate_round(setup, strategy.state, {}, rec.participants)
    messages = strategy.configure_evaluate(rec.t, ArrayRecord(), ConfigRecord(), grid)
    scores = strategy.aggregate_evaluate(rec.t, grid.send_and_receive(messages, timeout=timeout))
    return {} if scores is None else dict(scores)
