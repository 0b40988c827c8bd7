"""Flower's engines against the embedded one, on tiny RoBERTa in fp32: the same rounds give the same state.

One Flower simulation (``rolora llm run --engine flower``: Ray, ~20 s to start) and one real
deployment (a ``flower-superlink`` and two ``flower-supernode`` processes on 127.0.0.1, the run
submitted with ``flwr run``). Every process the deployment test starts is killed by its pid, with
its descendants, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from nonsquare import NON_SQUARE_TARGETS

from rolora.federated.serial import state_to_flat
from rolora.llm.checkpoint import latest_checkpoint, load_checkpoint
from rolora.llm.config import load_config
from rolora.llm.engine import run as embedded_run
from rolora.llm.run_folder import read_metrics

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OVERRIDES = ["model.max_length=24", "data.test_size=24", "data.max_train_samples=48", "run.eval_batch_size=24",
             "train.local_steps=1", "train.batch_size=4", "lora.rank=2", "lora.alpha=4.0", "lora.dropout=0.1",
             "federated.rounds=2", *NON_SQUARE_TARGETS]
TOL = {"rtol": 1e-5, "atol": 1e-6}  # fp32, other processes and thread counts: summation order may differ


def _assert_same_run(flower_dir: Path, embedded, compare_metrics=("train_loss", "test_loss", "test_accuracy")):
    ckpt = load_checkpoint(latest_checkpoint(flower_dir))
    fa, ma = state_to_flat(ckpt.state)
    fb, mb = state_to_flat(embedded.state)
    assert ma == mb and ckpt.state.round == 2
    for key in fa:
        torch.testing.assert_close(fa[key], fb[key], **TOL, msg=key)
    rows = read_metrics(flower_dir)
    assert [r["round"] for r in rows] == [r["round"] for r in embedded.rows] == [0, 1, 2]
    for got, want in zip(rows, embedded.rows):
        for key in compare_metrics:
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (got["round"], key)
        for key in ("upload_bytes", "download_bytes", "participants", "dropped"):
            assert got.get(key) == want.get(key), (got["round"], key)
    for r in rows[1:]:
        assert r["flower_upload_bytes"] > 0
        assert r["flower_download_bytes"] + r.get("flower_eval_download_bytes", 0) > 0
    return ckpt, rows


def test_simulation_from_the_cli_equals_the_embedded_engine_for_a_stateful_method(tmp_path):
    """FedSA-LoRA: B stays in each node's context.state, evaluation runs on the nodes, the checkpoint
    gathers the kept B's; state, kept state, metrics and the PEFT export equal the embedded run's."""
    from rolora.cli import main as rolora_main
    from rolora.llm.export_run import export_run

    overrides = OVERRIDES + ["federated.method=fedsa-lora", "federated.clients=3"]
    out = tmp_path / "fl"
    assert rolora_main(["llm", "run", "--config", "tiny-roberta", "--engine", "flower", "--quiet", "--out", str(out), *overrides]) == 0
    embedded = embedded_run(load_config("tiny-roberta", overrides), tmp_path / "emb", quiet=True)
    ckpt, rows = _assert_same_run(out, embedded)
    assert set(ckpt.kept) == set(embedded.kept) == {0, 1, 2}
    for k, model in embedded.kept.items():
        for layer, tensors in model.items():
            torch.testing.assert_close(ckpt.kept[k][layer]["B"], tensors["B"], **TOL)
    assert all(r["state_bytes"] > 0 for r in rows[1:])  # every checkpoint round asked the nodes for B
    # round 1's evaluation already sent every node the new A and head: round 2's training sends nothing
    assert rows[1]["flower_download_bytes"] > 0 and rows[1]["flower_eval_download_bytes"] > 0
    assert rows[2]["flower_download_bytes"] == 0
    # Flower's home stayed inside the run folder (Ray's too, where its socket paths allow: see below)
    assert (out / "flower-home").is_dir()
    assert os.environ["FLWR_HOME"] != str(out / "flower-home")  # restored
    peft_dir = export_run(out, tmp_path / "peft", client=1)
    assert (peft_dir / "adapter_config.json").is_file()


def test_ray_gets_the_run_folder_unless_its_socket_paths_would_be_too_long(tmp_path):
    from rolora.flower.simulation import RAY_SOCKET_SUFFIX, flower_environment, ray_tmpdir

    assert ray_tmpdir(Path("/r/x")) == (Path("/r/x/ray"), False)
    deep = tmp_path / ("d" * 60)
    with flower_environment(deep) as ray_dir:
        assert os.environ["RAY_TMPDIR"] == str(ray_dir) and not ray_dir.is_relative_to(deep)
        assert len(str(ray_dir)) + RAY_SOCKET_SUFFIX <= 107
        assert os.environ["FLWR_HOME"] == str(deep / "flower-home")
    assert not ray_dir.exists()  # the short temporary folder is gone


# --------------------------------------------------------------------------- deployment engine
def _run_config_overrides(overrides: list[str]) -> str:
    """``overrides`` as the value of ``flwr run --run-config 'overrides=...'``: Flower reads it as TOML
    (a single-quoted literal string keeps any ``"``), and the ServerApp splits it with ``shlex.split``,
    which would drop a bare ``"`` (``lora.targets=["query",...]``): hence ``\\"``."""
    text = " ".join(o.replace('"', '\\"') for o in overrides)
    assert "'" not in text, f"a ' cannot go into Flower's single-quoted run-config value: {overrides}"
    return f"'{text}'"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class Processes:
    """Started processes; :meth:`stop` kills each and its descendants (Flower detaches some) by pid."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.seen: dict[int, psutil.Process] = {}

    def start(self, args: list[str], log: Path, env: dict) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=log.parent)
        self.procs.append(proc)
        return proc

    def remember_descendants(self) -> None:
        for proc in self.procs:
            try:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    self.seen[child.pid] = child
            except psutil.NoSuchProcess:
                pass

    def stop(self) -> None:
        self.remember_descendants()
        self._kill(list(self.seen.values()), self.procs)

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL one started process and its descendants now (a crash, not a shutdown)."""
        try:
            children = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self._kill(children, [proc])

    @staticmethod
    def _kill(victims: list, procs: list[subprocess.Popen]) -> None:
        for proc in procs:
            try:
                victims.append(psutil.Process(proc.pid))
            except psutil.NoSuchProcess:
                pass
        for p in victims:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)
        for proc in procs:
            proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("flower-superlink", path=str(BIN)) is None, reason="flwr's executables not installed")
def test_deployment_superlink_and_two_supernodes_equal_the_embedded_engine(tmp_path):
    overrides = OVERRIDES + ["federated.method=rolora", "federated.clients=2"]
    home, out = tmp_path / "flwr-home", tmp_path / "run"
    home.mkdir()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(home),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "PYTHONUNBUFFERED": "1"}
    link, nodes = _free_port(), [_free_port(), _free_port()]
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "test"\n\n[superlink.test]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    procs = Processes()
    try:
        superlink = procs.start([str(BIN / "flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
                                 "--host", "127.0.0.1", "--port", str(link)], tmp_path / "superlink.log", env)
        _wait_for_port(link, superlink, time.monotonic() + 60)
        for k, port in enumerate(nodes):
            procs.start([str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{link}",
                         "--host", "127.0.0.1", "--port", str(port),
                         "--node-config", f"partition-id={k} num-partitions=2"], tmp_path / f"supernode-{k}.log", env)
        run_config = f'config="tiny-roberta" overrides={_run_config_overrides(overrides)} out="{out}" round-timeout=240'
        submit = procs.start([str(BIN / "flwr"), "run", str(ROOT / "rolora" / "flower" / "app"), "test", "--stream",
                              "--run-config", run_config], tmp_path / "flwr-run.log", env)
        deadline = time.monotonic() + 300
        done = out / "curves.png"  # the ServerApp's last write
        while time.monotonic() < deadline and not done.is_file() and submit.poll() is None:
            procs.remember_descendants()  # the ServerApp and ClientApps are started (detached) by Flower
            time.sleep(0.5)
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))
        assert done.is_file(), f"the deployed run did not finish:\n{logs}"
    finally:
        procs.stop()
    embedded = embedded_run(load_config("tiny-roberta", overrides), tmp_path / "emb", quiet=True)
    _, rows = _assert_same_run(out, embedded)
    # RoLoRA's round 2 sends each node only the factor aggregated in round 1 (and the head)
    assert rows[2]["flower_download_bytes"] < rows[1]["flower_download_bytes"]
