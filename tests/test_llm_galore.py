"""GaLore-FedAvg in llm/: fedavg-full with train.optimizer = "galore" on a tiny RoBERTa, and bad configs."""

from __future__ import annotations

import pytest

import torch

from rolora.llm.config import ConfigError, load_config
from rolora.llm.engine import run
from rolora.llm.local_training import make_optimizer
from rolora.optim import GaLoreAdamW

TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.max_train_samples=48", "run.eval_batch_size=24", "federated.clients=2", "federated.rounds=1",
        "train.local_steps=3", "train.batch_size=4", "federated.method=fedavg-full", "train.optimizer=galore",
        "train.galore_rank=4", "train.galore_period=2", "train.lr=0.01"]
KEYS = ("train_loss", "test_loss", "test_accuracy")


def _numbers(history):
    return [[r.get(k) for k in KEYS] for r in history.rows]


def test_galore_fedavg_is_seeded_reproducible_and_batching_gives_the_one_by_one_numbers(tmp_path):
    a = run(load_config(None, TINY), tmp_path / "a", quiet=True)
    b = run(load_config(None, TINY), tmp_path / "b", quiet=True)
    assert _numbers(a) == _numbers(b)
    alone = run(load_config(None, TINY + ["train.client_batching=off"]), tmp_path / "off", quiet=True)
    for x, y in zip(_numbers(a), _numbers(alone)):
        assert [v is None for v in x] == [v is None for v in y]
        assert [v for v in x if v is not None] == pytest.approx([v for v in y if v is not None], rel=1e-4, abs=1e-5)


def test_make_optimizer_projects_the_w_updates_and_leaves_thin_and_1d_tensors_to_adamw():
    w, dense, out, bias = (torch.zeros(s, requires_grad=True) for s in ((32, 32), (32, 32), (2, 32), (32,)))
    opt = make_optimizer(load_config(None, TINY), [w, dense, out, bias], lr=0.01)
    assert isinstance(opt, GaLoreAdamW)
    galore, plain = opt.param_groups
    assert galore["galore"] and galore["params"] == [w, dense]  # a head's dense layer is a wide matrix too
    assert (galore["rank"], galore["period"], galore["scale"]) == (4, 2, 0.25)
    assert not plain["galore"] and plain["params"] == [out, bias]


@pytest.mark.parametrize("override, words", [
    ("train.galore_rank=0", "train.galore_rank: must be a finite number ≥ 1"),
    ("train.galore_period=0", "train.galore_period: must be a finite number ≥ 1"),
    ("train.galore_scale=0.0", "train.galore_scale: must be a finite number > 0"),
    ("federated.method=rolora", "train.optimizer: galore trains full-rank updates"),
])
def test_bad_galore_configs_name_the_key(override, words):
    with pytest.raises(ConfigError, match=words):
        load_config(None, TINY + [override])


def test_a_rank_above_every_matrix_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no trained matrix has both sides ≥ 64"):
        run(load_config(None, TINY + ["train.galore_rank=64"]), tmp_path / "wide", quiet=True)


def test_memory_bench_counts_match_the_formulas_and_the_methods_communication():
    from rolora.federated.api import LayerSpec
    from rolora.lab.bench.memory import measure

    rows = {(r.method, r.optimizer): r for r in measure("x", {"l": LayerSpec(30, 20)}, lora_rank=4, galore_rank=3)}
    assert rows["fedavg-full", "adamw"].state_bytes == 4 * 2 * 30 * 20
    assert rows["fedavg-full", "sgd"].state_bytes == 0
    assert rows["fedavg-full", "galore r=3"].state_bytes == 4 * (2 * 3 * 30 + 3 * 20)  # moments d×r + P r×n
    assert rows["fedavg-full", "galore r=3"].upload_bytes == (4 * 600, 4 * 600)
    assert rows["rolora", "adamw"].trained_params == 30 * 4  # the larger phase: B (d×r) over A (r×n)
    assert rows["rolora", "adamw"].upload_bytes == (4 * 30 * 4, 4 * 4 * 20)
    assert rows["fedavg-lora", "adamw"].state_bytes == 4 * 2 * 4 * (30 + 20)
