"""GaLore-FedAvg in the toy: training keys in a method spec, a seeded reproducible run, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from rolora.federated import AggregationError
from rolora.toy.cli import main
from rolora.toy.data import load_mnist
from rolora.toy.method_spec import split_spec, with_spec_training_keys
from rolora.toy.train import ToyConfig, run_federated

TINY = ToyConfig(split="iid", num_clients=2, rounds=1, subsample=0.02, local_epochs=1, seed=3,
                 method="fedavg-full:optimizer=galore:lr=0.004:galore_rank=4:galore_period=3")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_split_spec_takes_out_the_training_keys_only():
    assert split_spec("fedavg-full:optimizer=galore:lr=0.001") == ("fedavg-full", {"optimizer": "galore", "lr": 0.001})
    assert split_spec("rolora:period=2:lr=0.1:start=A") == ("rolora:period=2:start=A", {"lr": 0.1})
    assert split_spec("rolora") == ("rolora", {})
    cfg = with_spec_training_keys(dataclasses.replace(TINY, method="fedavg-full:lr=1:galore_scale=2"))
    assert (cfg.lr, cfg.galore_scale, cfg.method) == (1.0, 2.0, "fedavg-full:lr=1:galore_scale=2")
    with pytest.raises(ValueError, match="galore_rank=0.5 must be a int"):
        with_spec_training_keys(dataclasses.replace(TINY, method="fedavg-full:galore_rank=0.5"))
    with pytest.raises(AggregationError, match="expected key=value"):
        split_spec("fedavg-full:galore")


def test_a_galore_run_is_seeded_reproducible_and_differs_from_adam(mnist):
    torch.set_num_threads(1)
    a = run_federated(TINY, mnist)
    b = run_federated(TINY, mnist)
    assert a.config.optimizer == "galore" and a.config.galore_rank == 4  # the spec's keys are the config
    assert a.test_acc == b.test_acc and a.test_loss == b.test_loss
    assert a.test_acc[-1] > a.test_acc[0]
    adam = run_federated(dataclasses.replace(TINY, method="fedavg-full:optimizer=adam:lr=0.004"), mnist)
    assert adam.test_loss[1:] != a.test_loss[1:]


@pytest.mark.parametrize("method, words", [
    ("rolora:optimizer=galore", "optimizer galore trains full-rank W tensors; method rolora trains \\['B'\\]"),
    ("fedavg-full:optimizer=galore:galore_rank=800", "galore_rank must be ≤ min\\(d, n\\) = 784"),
    ("fedavg-full:optimizer=galore:galore_rank=0", "galore_rank must be ≥ 1"),
    ("fedavg-full:optimizer=galore:galore_period=0", "galore_period must be ≥ 1"),
    ("fedavg-full:optimizer=galore:galore_scale=-1", "galore_scale must be > 0"),
])
def test_bad_galore_settings_name_the_problem(mnist, method, words):
    with pytest.raises(ValueError, match=words):
        run_federated(dataclasses.replace(TINY, method=method), mnist)


def test_cli_refuses_a_bad_training_key_before_training(tmp_path, capsys):
    assert main(["--methods", "fedavg-full:optimizer=galore:galore_rank=0", "--out", str(tmp_path)]) == 2
    assert "galore_rank must be ≥ 1" in capsys.readouterr().err
