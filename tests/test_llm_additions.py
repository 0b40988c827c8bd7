"""Server optimisers, FedProx, SCAFFOLD and differential privacy in real runs (tiny RoBERTa, CPU).

The embedded engine: a run killed mid-round and resumed ends bit-identical to an uninterrupted one
(server moments, control variates, the accountant's history included). The Flower engine (its
ServerApp loop over in-process ClientApp nodes): a stopped run restarted on fresh nodes (SCAFFOLD's
c_k handed back from the checkpoint) ends bit-identical to an uninterrupted Flower run, and where the
embedded run ends (fp32 tolerance: the nodes train one by one). The command line: ``--server-opt`` and refusals before anything runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nonsquare import NON_SQUARE_TARGETS

from rolora.federated.serial import kept_to_flat, state_to_flat
from rolora.llm.checkpoint import latest_checkpoint, load_checkpoint
from rolora.llm.config import ConfigError, load_config, to_toml

TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.max_train_samples=48", "run.eval_batch_size=24", "federated.clients=3", "train.local_steps=2",
        "train.batch_size=4", "lora.rank=2", "lora.alpha=4.0", "lora.dropout=0.1", *NON_SQUARE_TARGETS]
COMPOSED = {
    "rolora+fedyogi+scaffold+fedprox+dp-client": [
        "federated.method=rolora", 'federated.server_opt="fedyogi:lr=0.01"', "train.scaffold=true",
        "train.prox_mu=0.01", "train.dp=client", "train.dp_clip=0.5", "train.dp_noise=0.3",
        "federated.weighting=uniform"],
    "ffa-lora+fedavgm+dp-sample": [
        "federated.method=ffa-lora", 'federated.server_opt="fedavgm:momentum=0.5"', "train.dp=sample",
        "train.dp_clip=1.0", "train.dp_noise=0.5"],
}


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rolora", "llm", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def _rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("wall_s", "tokens_per_s")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _flat(run_dir: Path):
    ckpt = load_checkpoint(latest_checkpoint(run_dir))
    return state_to_flat(ckpt.state), kept_to_flat(ckpt.kept)


@pytest.mark.parametrize("name", list(COMPOSED))
def test_resume_after_a_kill_mid_round_is_bit_identical(tmp_path, name):
    config = tmp_path / "run.toml"
    config.write_text(to_toml(load_config(None, TINY + COMPOSED[name] + ["federated.rounds=3"])))
    full = _cli("run", "--config", str(config), "--out", str(tmp_path / "full"), "--quiet")
    assert full.returncode == 0, full.stderr[-2000:]
    died = _cli("run", "--config", str(config), "--out", str(tmp_path / "cut"), "--quiet",
                env={"ROLORA_TEST_DIE_IN_ROUND": "3"})
    assert died.returncode == 137, died.stderr[-2000:]
    resumed = _cli("run", "--resume", str(tmp_path / "cut"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")
    (fa, ma), (ka, kma) = _flat(tmp_path / "full")
    (fb, mb), (kb, kmb) = _flat(tmp_path / "cut")
    assert ma == mb and kma == kmb
    for key in (*fa, *ka):
        x, y = (fa[key], fb[key]) if key in fa else (ka[key], kb[key])
        assert torch.equal(x, y), key
    rows = _rows(tmp_path / "full")
    assert 0 < rows[1]["dp_epsilon"] < rows[2]["dp_epsilon"] < rows[3]["dp_epsilon"]
    assert any(k.startswith("server/") for k in fa)  # the server optimiser's moments are in the checkpoint


def test_cli_server_opt_flag_and_refusals(tmp_path):
    ok = _cli("run", "--config", "tiny-roberta", "--out", str(tmp_path / "a"), "--quiet",
              "--server-opt", "fedadam:lr=1e-2", "federated.rounds=1")
    assert ok.returncode == 0, ok.stderr[-2000:]
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert saved["federated"]["server_opt"] == "fedadam:lr=1e-2"
    refused = _cli("run", "--config", "tiny-roberta", "--out", str(tmp_path / "b"), "--quiet",
                   "--methods", "rolora,flexlora", "--server-opt", "fedadam")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "server optimiser fedadam with flexlora" in refused.stderr and not (tmp_path / "b").exists()
    dp = _cli("run", "--config", "tiny-roberta", "--out", str(tmp_path / "c"), "--quiet", "train.dp=client")
    assert dp.returncode == 2 and "federated.weighting" in dp.stderr and not (tmp_path / "c").exists()


def test_refused_before_anything_runs():
    with pytest.raises(ConfigError, match="SCAFFOLD with fedsa-lora"):
        load_config(None, TINY + ["federated.method=fedsa-lora", "train.scaffold=true"])
    with pytest.raises(ConfigError, match="federated.server_opt: .*'fedadamw'"):
        load_config(None, TINY + ['federated.server_opt="fedadamw"'])


# ----------------------------------------------------------------------------- Flower
@pytest.fixture
def task_identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.mark.parametrize("name", list(COMPOSED))
def test_flower_equals_embedded_and_a_restarted_server_continues(tmp_path, name, task_identity):
    from test_flower_faults import LocalGrid

    from rolora.flower import setups
    from rolora.flower.server_loop import serve
    from rolora.llm.engine import RunStopped
    from rolora.llm.engine import run as embedded_run

    # one by one in both engines: SCAFFOLD's c_k = (x − y)/(K·η) magnifies the ulps by which batched
    # and one-by-one training differ a thousandfold
    config = load_config(None, TINY + COMPOSED[name] + ["federated.rounds=3", "train.client_batching=off"])
    with pytest.raises(RunStopped):  # node 101 fails from round 3: below the minimum of replies
        serve(LocalGrid(3, down={101: 3}), config, tmp_path / "fl", min_replies=3, quiet=True)
    assert load_checkpoint(latest_checkpoint(tmp_path / "fl")).state.round == 2
    resumed = serve(LocalGrid(3), None, tmp_path / "fl", resume=True, quiet=True)  # fresh nodes
    whole = serve(LocalGrid(3), config, tmp_path / "whole", quiet=True)  # the same run, never stopped
    (fr, mr), (fw, mw) = state_to_flat(resumed.state), state_to_flat(whole.state)
    assert mr == mw and all(torch.equal(fr[k], fw[k]) for k in fw)  # resuming on Flower is bit-exact too
    embedded = embedded_run(config, tmp_path / "emb", quiet=True, setup=setups.setup_for(setups.config_json(config)))
    (fa, ma), (fb, mb) = state_to_flat(resumed.state), state_to_flat(embedded.state)
    assert ma == mb
    for key in fa:
        torch.testing.assert_close(fa[key], fb[key], **TOL, msg=key)
    if config.train.scaffold:  # the nodes' c_k came back from the checkpoint and went on
        for k, model in embedded.kept.items():
            for layer, named in model.items():
                for n, x in named.items():
                    torch.testing.assert_close(resumed.kept[k][layer][n], x, **TOL)
    for got, want in zip(resumed.rows, embedded.rows):
        assert got.get("dp_epsilon") == want.get("dp_epsilon")
        assert got["upload_bytes" if got["round"] else "round"] == want["upload_bytes" if want["round"] else "round"]


def test_client_dp_composes_with_secagg_and_scaffold_is_refused(tmp_path, task_identity):
    """Each node clips before masking; the server noises the unmasked mean for the 3 clients in it:
    the same noise as without SecAgg+, so the states agree within SecAgg+'s quantisation."""
    from test_flower_faults import LocalGrid

    from rolora.flower.secagg import SecAggRefused, SecAggSettings
    from rolora.flower.server_loop import serve

    dp = ["federated.method=rolora", "train.dp=client", "train.dp_clip=0.5", "train.dp_noise=0.3",
          "federated.weighting=uniform", "federated.rounds=2", "train.client_batching=off"]
    config = load_config(None, TINY + dp)
    settings = SecAggSettings()
    secure = serve(LocalGrid(3), config, tmp_path / "sec", quiet=True, secagg=settings)
    plain = serve(LocalGrid(3), config, tmp_path / "plain", quiet=True)
    (fa, _), (fb, _) = state_to_flat(secure.state), state_to_flat(plain.state)
    bound = settings.error_bound([1, 1, 1])
    for key in fa:
        torch.testing.assert_close(fa[key], fb[key], rtol=0, atol=2 * bound + 1e-6, msg=key)
    assert [r.get("dp_epsilon") for r in secure.rows] == [r.get("dp_epsilon") for r in plain.rows]
    with pytest.raises(SecAggRefused, match="SCAFFOLD"):
        serve(LocalGrid(3), load_config(None, TINY + ["train.scaffold=true"]), tmp_path / "scaf", quiet=True,
              secagg=settings)
    assert not (tmp_path / "scaf").exists()
