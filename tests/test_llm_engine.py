"""The embedded engine end to end on tiny random models: every method, both model families, resume,
dropped clients, the shared base, bad input. Real models belong to the examples and benchmarks."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rolora.federated import available_methods, method_from_spec
from rolora.llm.config import ConfigError, load_config
from rolora.llm.engine import RunStopped, run
from rolora.llm.prepare import build

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "roberta": ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes",
                "data.test_size=24", "data.max_train_samples=48", "run.eval_batch_size=24"],
    "llama": ["model.name=tiny-llama", 'model.task="generation-classification"', "model.max_length=32",
              "data.dataset=trec", "data.test_size=12", "data.max_train_samples=48", "run.eval_batch_size=24"],
}
COMMON = ["federated.clients=3", "federated.rounds=2", "train.local_steps=1", "train.batch_size=4", "lora.rank=2",
          "lora.alpha=4.0", "lora.dropout=0.1"]


def tiny_config(family: str, *more: str):
    return load_config(None, TINY[family] + COMMON + list(more))


@pytest.fixture(scope="module", params=["roberta", "llama"])
def family_setup(request):
    config = tiny_config(request.param)
    return request.param, build(config)


def _with_method(setup, spec: str, **changes):
    config = setup.config
    federated = dataclasses.replace(config.federated, method=spec, **changes)
    config = dataclasses.replace(config, federated=federated)
    return config, dataclasses.replace(setup, config=config,
                                       method=method_from_spec(spec, total_rounds=config.total_rounds))


def _frozen_pointers(model) -> dict[str, int]:
    """Where every frozen base parameter's storage is (client tensors and the head excluded)."""
    return {n: p.data_ptr() for n, p in model.named_parameters() if ".tensors." not in n and "classifier" not in n}


def _finite_metrics(rows):
    for r in rows:
        for k, v in r.items():
            if k.startswith("test_") or k == "train_loss":
                assert v is None or math.isfinite(v), (r["round"], k, v)


@pytest.mark.parametrize("spec", available_methods())
def test_every_method_runs_end_to_end(family_setup, spec, tmp_path):
    family, setup = family_setup
    config, setup = _with_method(setup, spec)
    base = _frozen_pointers(setup.model)
    history = run(config, tmp_path / spec, quiet=True, setup=setup)
    assert [r["round"] for r in history.rows] == [0, 1, 2]
    _finite_metrics(history.rows)
    assert history.state.round == 2
    assert all(r["upload_bytes"] > 0 and r["download_bytes"] > 0 for r in history.rows[1:])
    # The base is shared, never copied: every frozen parameter is where it was.
    assert _frozen_pointers(setup.model) == base
    for name in ("metrics.jsonl", "metrics.csv", "curves.png", "config.toml", "versions.json", "run.log"):
        assert (tmp_path / spec / name).is_file(), name


def test_rolora_alternates_factors_and_halves_the_upload(family_setup, tmp_path):
    _, setup = family_setup
    config, setup = _with_method(setup, "rolora")
    history = run(config, tmp_path / "ro", quiet=True, setup=setup)
    config2, setup2 = _with_method(setup, "fedavg-lora")
    avg = run(config2, tmp_path / "avg", quiet=True, setup=setup2)
    head = sum(x.numel() for x in history.state.dense.values()) * 4 * 3
    for r_ro, r_avg in zip(history.rows[1:], avg.rows[1:]):
        assert r_ro["upload_bytes"] - head < r_avg["upload_bytes"] - head
    start = setup.initial_state()
    layer = next(iter(start.layers))
    after = history.state.layers[layer]
    assert not torch.equal(after["B"], start.layers[layer]["B"])  # round 1 trained B
    assert not torch.equal(after["A"], start.layers[layer]["A"])  # round 2 trained A


def test_the_same_config_and_seed_give_the_same_numbers(tmp_path):
    a = run(tiny_config("roberta"), tmp_path / "a", quiet=True)
    b = run(tiny_config("roberta"), tmp_path / "b", quiet=True)
    keys = ("train_loss", "test_loss", "test_accuracy")
    assert [[r.get(k) for k in keys] for r in a.rows] == [[r.get(k) for k in keys] for r in b.rows]


def test_memory_is_base_plus_clients_times_adapter(tmp_path):
    from rolora.llm.adapters import frozen_bytes

    config = tiny_config("roberta", "federated.clients=6", "federated.method=fedsa-lora")  # keeps per-client B
    history = run(config, tmp_path / "m", quiet=True)
    kept = sum(x.numel() * x.element_size() for k in history.kept.values() if k
               for layer in k.values() for x in layer.values())
    state = sum(x.numel() * x.element_size() for layer in history.state.layers.values() for x in layer.values())
    setup = build(config)
    assert kept > 0 and kept + state < 0.2 * frozen_bytes(setup.model)


def _metric_rows(rows):
    return [{k: v for k, v in r.items() if k not in ("wall_s", "tokens_per_s")} for r in rows]


def _cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rolora", "llm", *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_resume_after_a_kill_mid_round_is_bit_identical(tmp_path):
    # Both runs in fresh processes with the same environment (torch's thread count changes float
    # rounding, and this test process's may have been changed by other tests).
    args = TINY["roberta"] + COMMON + ["federated.rounds=3", "federated.method=fedsa-lora"]
    config = str(_write(tmp_path, args))
    full = _cli("run", "--config", config, "--out", str(tmp_path / "full"), "--quiet")
    assert full.returncode == 0, full.stderr[-2000:]
    died = _cli("run", "--config", config, "--out", str(tmp_path / "cut"), "--quiet", env={"ROLORA_TEST_DIE_IN_ROUND": "2"})
    assert died.returncode == 137, died.stderr[-2000:]
    assert [r["round"] for r in _rows(tmp_path / "cut")] == [0, 1]
    # Resuming with a different config is refused, naming the keys.
    with pytest.raises(ConfigError, match="differing keys: train.lr"):
        run(load_config(config, ["train.lr=0.1"]), tmp_path / "cut", resume=True, quiet=True)
    resumed = _cli("run", "--resume", str(tmp_path / "cut"), "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _metric_rows(_rows(tmp_path / "cut")) == _metric_rows(_rows(tmp_path / "full"))
    from rolora.llm.checkpoint import latest_checkpoint, load_checkpoint

    a, b = (load_checkpoint(latest_checkpoint(tmp_path / d)) for d in ("full", "cut"))
    assert a.state.round == b.state.round == 3
    for layer, named in a.state.layers.items():
        for n, x in named.items():
            assert torch.equal(b.state.layers[layer][n], x), (layer, n)
    for n, x in a.state.dense.items():
        assert torch.equal(b.state.dense[n], x), n
    for k, kept in a.kept.items():
        for layer, named in kept.items():
            for n, x in named.items():
                assert torch.equal(b.kept[k][layer][n], x), (k, layer, n)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _write(tmp_path: Path, overrides: list[str]) -> Path:
    from rolora.llm.config import to_toml

    path = tmp_path / "run.toml"
    path.write_text(to_toml(load_config(None, overrides)))
    return path


def _fake_round():
    """A round's outcome as both engines hand it over: results, participants, dropped, communication."""
    from types import SimpleNamespace

    from rolora.federated import CommCost
    from rolora.federated.round import ClientResult

    results = {0: ClientResult({}, 3, metrics={"train_loss": 1.0, "tokens": 30.0}),
               2: ClientResult({}, 1, metrics={"train_loss": 5.0, "tokens": 10.0})}
    comm = CommCost(upload_params=5, download_params=7, bytes_per_param=2, per_client={0: (5, 7), 2: (6, 8)})
    from rolora.federated.diagnostics import LayerDiagnostics

    diagnostics = {"q": LayerDiagnostics(gap=0.1, drift=2.0, update_norm=3.0),
                   "v": LayerDiagnostics(gap=0.3, drift=4.0, update_norm=5.0)}
    return SimpleNamespace(results=results, participants=[0, 1, 2], dropped=[1], communication=comm,
                           diagnostics=diagnostics)


def test_the_round_row_weights_the_loss_by_samples_and_counts_the_bytes_and_tokens():
    from rolora.llm import engine
    from rolora.llm.round_row import round_row

    assert engine.round_row is round_row  # the embedded engine writes its rows with it (Flower: test_flower_app.py)
    config = load_config(None, ["train.lr=0.01", "train.warmup_rounds=4", "federated.rounds=8"])
    assert round_row(config, 2, _fake_round(), 4.0) == {
        "round": 2, "train_loss": (3 * 1.0 + 1 * 5.0) / 4, "lr": 0.01 * 2 / 4, "participants": 3, "dropped": [1],
        "upload_bytes": (5 + 6) * 2, "download_bytes": (7 + 8) * 2, "wall_s": 4.0, "tokens": 40, "tokens_per_s": 10.0,
        "product_gap": pytest.approx(0.2), "client_drift": 3.0,  # the means over layers
        "layers": {"q": {"gap": 0.1, "drift": 2.0, "update_norm": 3.0}, "v": {"gap": 0.3, "drift": 4.0, "update_norm": 5.0}},
    }
    assert round_row(config, 2, _fake_round(), 0.0)["tokens_per_s"] is None  # no rate from a zero-length clock


def test_an_engines_carried_keys_follow_the_methods_byte_counts():
    from rolora.llm.round_row import round_row

    config = load_config(None, [])
    plain = round_row(config, 1, _fake_round(), 2.0)
    carried = round_row(config, 1, _fake_round(), 2.0, {"flower_upload_bytes": 9, "flower_download_bytes": 11})
    assert carried == {**plain, "flower_upload_bytes": 9, "flower_download_bytes": 11}
    keys = list(carried)  # metrics.csv's column order
    assert keys[keys.index("download_bytes") + 1:][:2] == ["flower_upload_bytes", "flower_download_bytes"]


def test_a_client_with_a_nan_loss_is_dropped_and_the_round_goes_on(tmp_path, monkeypatch):
    import rolora.llm.local_training as lt

    real = lt.loss

    def poisoned(model, tensors, task):
        out = real(model, tensors, task)
        return out * float("nan") if torch.initial_seed() == poisoned.seed else out

    from rolora.federated.seeding import derive_seed

    poisoned.seed = derive_seed(0, "dropout", 1, 1) % (2**64)
    monkeypatch.setattr(lt, "loss", poisoned)  # the one-by-one path (the batched one: test_llm_batched.py)
    history = run(tiny_config("roberta", "train.client_batching=off"), tmp_path / "nan", quiet=True)
    assert history.rows[1]["dropped"] == [1] and history.rows[1]["participants"] == 3
    assert history.rows[2]["dropped"] == []
    assert "dropped clients [1]" in (tmp_path / "nan" / "run.log").read_text()


def test_every_client_failing_stops_with_a_resumable_checkpoint(tmp_path, monkeypatch):
    import rolora.llm.local_training as lt

    monkeypatch.setattr(lt, "loss", lambda model, tensors, task: torch.full((1,), float("nan"), requires_grad=True))
    with pytest.raises(RunStopped, match="every participant failed"):
        run(tiny_config("roberta", "train.client_batching=off"), tmp_path / "dead", quiet=True)
    from rolora.llm.checkpoint import latest_checkpoint, load_checkpoint

    assert load_checkpoint(latest_checkpoint(tmp_path / "dead")).state.round == 0


def test_a_truncated_checkpoint_is_named(tmp_path):
    from rolora.federated.serial import StateFormatError

    run(tiny_config("roberta", "federated.rounds=1"), tmp_path / "t", quiet=True)
    from rolora.llm.checkpoint import latest_checkpoint

    state = latest_checkpoint(tmp_path / "t") / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(StateFormatError, match="state.safetensors"):
        run(None, tmp_path / "t", resume=True, quiet=True)


def test_a_method_that_cannot_mix_ranks_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="federated.method fedavg-lora needs one rank"):  # before anything runs
        tiny_config("roberta", "lora.client_ranks=[2, 4]", "federated.method=fedavg-lora")
    history = run(tiny_config("roberta", "lora.client_ranks=[2, 4]", "federated.method=flexlora"), tmp_path / "f", quiet=True)
    _finite_metrics(history.rows)


def test_bad_config_keys_and_values_name_the_key():
    with pytest.raises(ConfigError, match="unknown key train.learning_rate"):
        load_config(None, ["train.learning_rate=1"])
    with pytest.raises(ConfigError, match="unknown section \\[optim\\]"):
        load_config(None, ["optim.lr=1"])
    with pytest.raises(ConfigError, match="train.lr: expected float, got str"):
        load_config(None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="federated.participation"):
        load_config(None, ["federated.participation=0"])
    with pytest.raises(ConfigError, match="no shipped example"):
        load_config("no-such-config", [])


def test_an_existing_run_folder_is_not_overwritten(tmp_path):
    run(tiny_config("roberta", "federated.rounds=1"), tmp_path / "x", quiet=True)
    with pytest.raises(ConfigError, match="already holds a run"):
        run(tiny_config("roberta", "federated.rounds=1"), tmp_path / "x", quiet=True)


def test_shipped_configs_load():
    from rolora.llm.config import CONFIG_DIR

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))
    assert {"quickstart", "minilm-rotten-tomatoes", "minilm-trec", "smollm2-trec", "tiny-roberta", "tiny-llama"} <= set(names)
    for name in names:
        load_config(name, [])


def test_instruction_tuning_from_a_local_alpaca_file(tmp_path):
    rows = [{"instruction": f"Repeat the number {i}.", "input": "" if i % 2 else f"n={i}", "output": f"{i}"}
            for i in range(40)]
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(None, ["model.name=tiny-llama", 'model.task="instruction"', "model.max_length=48",
                                f'data.dataset="{path}"', "data.test_size=8"] + COMMON)
    history = run(config, tmp_path / "inst", quiet=True)
    assert [r["round"] for r in history.rows] == [0, 1, 2]
    assert all(math.isfinite(r["test_perplexity"]) and r["test_perplexity"] > 1 for r in history.rows)


def test_a_csv_with_sentence_pairs_and_natural_clients(tmp_path):
    import csv

    path = tmp_path / "pairs.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["premise", "hypothesis", "gold", "site"])
        for i in range(60):
            w.writerow([f"the cat sat {i}", f"a cat {'sat' if i % 2 else 'ran'}", "yes" if i % 2 else "no", f"s{i % 3}"])
    config = load_config(None, TINY["roberta"] + COMMON + [
        f'data.dataset="{path}"', 'data.text_column="premise"', 'data.pair_column="hypothesis"',
        'data.label_column="gold"', 'data.group_column="site"', 'data.partition="natural"', "data.test_size=12",
        "data.max_train_samples=0"])
    history = run(config, tmp_path / "pairs", quiet=True)
    _finite_metrics(history.rows)
    with pytest.raises(ValueError, match="premise_typo"):
        run(load_config(None, TINY["roberta"] + COMMON + [f'data.dataset="{path}"', 'data.text_column="premise_typo"',
                                                          'data.label_column="gold"', "data.max_train_samples=0"]),
            tmp_path / "bad", quiet=True)


def test_validation_metrics_beside_test_and_lr_selection_runs_never_score_the_test_set(tmp_path):
    both = run(tiny_config("roberta", "data.val_size=12"), tmp_path / "both", quiet=True)
    assert all({"val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(r) for r in both.rows)
    assert [r["val_loss"] for r in both.rows] != [r["test_loss"] for r in both.rows]  # two different sets
    val_only = run(tiny_config("roberta", "data.val_size=12", 'run.eval_splits=["val"]'), tmp_path / "val", quiet=True)
    assert not any(k.startswith("test_") for r in val_only.rows for k in r)
    assert [r["val_loss"] for r in val_only.rows] == [r["val_loss"] for r in both.rows]
    # Without a validation split the default scores the test set alone; asking for val alone is an error.
    plain = run(tiny_config("roberta", "federated.rounds=1"), tmp_path / "plain", quiet=True)
    assert not any(k.startswith("val_") for r in plain.rows for k in r)
    with pytest.raises(ConfigError, match=r"run.eval_splits: is \['val'\] but data.val_size = 0"):
        tiny_config("roberta", 'run.eval_splits=["val"]')
    with pytest.raises(ConfigError, match="run.eval_splits: must be a non-empty list"):
        tiny_config("roberta", 'run.eval_splits=["train"]')


@pytest.mark.parametrize("family", ["roberta", "llama"])
def test_personalised_methods_score_the_validation_split_too(tmp_path, family):
    # llama: generation-classification, so the validation prompts are encoded like the test ones.
    history = run(tiny_config(family, "data.val_size=12", "federated.method=fedsa-lora", "federated.rounds=1"),
                  tmp_path / "p", quiet=True)
    assert all(math.isfinite(r["val_accuracy"]) and math.isfinite(r["test_accuracy"]) for r in history.rows)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("batching", ["auto", "off"])
@pytest.mark.parametrize("spec", ["rolora", "flexlora", "flora"])
def test_a_run_on_a_gpu_keeps_the_server_state_on_the_cpu(spec, batching, tmp_path):
    # The model trains on the GPU; results come back to the CPU, where the state is aggregated.
    config = tiny_config("roberta", "model.device=cuda", f"train.client_batching={batching}",
                         f"federated.method={spec}")
    history = run(config, tmp_path / spec, quiet=True)
    _finite_metrics(history.rows)
    assert history.state.round == 2
    assert all(x.device.type == "cpu" for layer in history.state.layers.values() for x in layer.values())


def test_to_server_moves_every_tensor_and_keeps_the_rest():
    from rolora.federated.round import ClientResult
    from rolora.llm.training import to_server

    assert to_server(None) is None
    x = torch.arange(6.0).reshape(2, 3)
    result = ClientResult(tensors={"q": {"A": x, "B": x.T}}, num_samples=5.0, dense={"h": x[0]},
                          metrics={"train_loss": 0.5})
    moved = to_server(result)
    assert moved.num_samples == 5.0 and moved.metrics == {"train_loss": 0.5}
    assert torch.equal(moved.tensors["q"]["B"], x.T) and torch.equal(moved.dense["h"], x[0])
    assert all(t.device.type == "cpu" for t in [*moved.tensors["q"].values(), *moved.dense.values()])
