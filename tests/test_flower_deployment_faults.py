"""Faults with real processes: a ``flower-superlink``, three ``flower-supernode`` processes on 127.0.0.1
and ``flwr run``; one SuperNode process (and its ClientApp children) is killed (SIGKILL) once round 1
is done, three times over:

(a) ``min-replies = 2``: round 2 completes with the two remaining nodes, the dead one in ``dropped``;
(b) ``min-replies = 3``: round 2 stops the run with a clear message and a resumable checkpoint of
    round 1; a fresh SuperNode for the dead client and ``flwr run ... resume=true`` finish the run,
    which then equals the uninterrupted embedded run.

The SuperLink learns that a killed node is gone after two missed heartbeats (Flower 1.42: up to
~60 s) and answers its messages with NODE_UNAVAILABLE; until then it still lists the node, so the
next run's ServerApp skips it. Every process started is killed by pid, with its descendants, in a
``finally``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from test_flower_engines import (
    BIN,
    OVERRIDES,
    ROOT,
    Processes,
    _assert_same_run,
    _free_port,
    _run_config_overrides,
    _wait_for_port,
)

from rolora.llm.checkpoint import latest_checkpoint, load_checkpoint
from rolora.llm.config import load_config
from rolora.llm.engine import run as embedded_run
from rolora.llm.run_folder import read_metrics

CLIENTS = 3


def _rounds_done(out: Path) -> int:
    try:
        return max((r["round"] for r in read_metrics(out)), default=-1)
    except (FileNotFoundError, ValueError):
        return -1


def _wait(what: str, done, procs: Processes, tmp_path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        procs.remember_descendants()  # Flower starts the ServerApp and ClientApps detached
        if done():
            return
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in sorted(tmp_path.rglob("*.log")))
    raise AssertionError(f"timed out waiting for {what}:\n{logs}")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flower-superlink", path=str(BIN)) is None, reason="flwr's executables not installed")
def test_killing_a_real_supernode_drops_it_or_stops_a_resumable_run(tmp_path):
    overrides = OVERRIDES + ["federated.method=rolora", f"federated.clients={CLIENTS}"]
    home = tmp_path / "flwr-home"
    home.mkdir()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(home),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "PYTHONUNBUFFERED": "1"}
    link = _free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    procs = Processes()
    starts = {k: 0 for k in range(CLIENTS)}

    def supernode(k: int):
        starts[k] += 1
        return procs.start([str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                            "--host", "127.0.0.1", "--port", str(_free_port()),
                            "--node-config", f"partition-id={k} num-partitions={CLIENTS}"],
                           tmp_path / f"supernode-{k}-{starts[k]}.log", env)

    def submit(out: Path, name: str, *more: str):
        run_config = (f'config="tiny-roberta" overrides={_run_config_overrides(overrides)} out="{out}" round-timeout=300 '
                      + " ".join(more))
        return procs.start([str(BIN / "flwr"), "run", str(ROOT / "rolora" / "flower" / "app"), "test", "--stream",
                            "--run-config", run_config], tmp_path / f"flwr-run-{name}.log", env)

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    try:
        superlink = procs.start([str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                                 "--host", "127.0.0.1", "--port", str(link)], tmp_path / "superlink.log", env)
        _wait_for_port(link, superlink, time.monotonic() + 60)
        nodes = {k: supernode(k) for k in range(CLIENTS)}

        # (a) min-replies 2: round 2 goes on without the dead node
        run_a = submit(out_a, "a", "min-replies=2")
        _wait("run (a) round 1", lambda: _rounds_done(out_a) >= 1 or run_a.poll() is not None, procs, tmp_path, 400)
        procs.kill(nodes[2])
        _wait("run (a) to finish", lambda: (out_a / "curves.png").is_file() or run_a.poll() is not None,
              procs, tmp_path, 500)
        rows_a = read_metrics(out_a)
        assert [r["round"] for r in rows_a] == [0, 1, 2], (out_a / "run.log").read_text()[-3000:]
        assert rows_a[1]["dropped"] == [] and rows_a[2]["dropped"] == [2]
        assert rows_a[2]["participants"] == 3
        assert "round 2: dropped clients [2]" in (out_a / "run.log").read_text()

        # (b) min-replies 3: round 2 stops the run; a restarted ServerApp resumes it
        nodes[2] = supernode(2)
        run_b = submit(out_b, "b", "min-replies=3")
        _wait("run (b) round 1", lambda: _rounds_done(out_b) >= 1 or run_b.poll() is not None, procs, tmp_path, 400)
        procs.kill(nodes[2])
        log_b = out_b / "run.log"
        _wait("run (b) to stop", lambda: log_b.is_file() and "Resumable checkpoint" in log_b.read_text(),
              procs, tmp_path, 500)
        text = log_b.read_text()
        assert "round 2: 2 of 3 participants sent an update (failed or dropped: [2]), fewer than the minimum 3" in text
        stopped_at = latest_checkpoint(out_b)
        assert f"Resumable checkpoint: {stopped_at}" in text
        assert load_checkpoint(stopped_at).state.round == 1 and _rounds_done(out_b) == 1
        _wait("the stopped ServerApp to exit", lambda: run_b.poll() is not None, procs, tmp_path, 120)

        nodes[2] = supernode(2)
        resumed = submit(out_b, "b-resumed", "min-replies=3", "resume=true")
        _wait("the resumed run to finish", lambda: (out_b / "curves.png").is_file() or resumed.poll() is not None,
              procs, tmp_path, 500)
    finally:
        procs.stop()
    embedded = embedded_run(load_config("tiny-roberta", overrides), tmp_path / "emb", quiet=True)
    _, rows_b = _assert_same_run(out_b, embedded)  # state, metrics, bytes and dropped == [] as uninterrupted
    assert [r["round"] for r in rows_b] == [0, 1, 2]
    # (a)'s round 2 uploaded two updates, not three (RoLoRA's round 2 uploads A, round 1 B: sizes differ)
    assert rows_a[2]["upload_bytes"] == embedded.rows[2]["upload_bytes"] * 2 // 3
