"""Every run's metrics carry the round's product-averaging gap and client drift (tiny RoBERTa,
query and the non-square intermediate.dense adapted).

FedAvg-LoRA's gap is non-zero and grows with local steps; RoLoRA's and FFA-LoRA's are exactly zero
(the server checks it every round); personalised methods have none.
"""

from __future__ import annotations

import pytest
from nonsquare import NON_SQUARE_TARGETS

from rolora.llm.config import load_config
from rolora.llm.engine import run

TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.max_train_samples=48", "run.eval_batch_size=24", "federated.clients=3", "federated.rounds=2",
        "train.batch_size=4", "lora.rank=2", "lora.alpha=4.0", "train.lr=0.01", *NON_SQUARE_TARGETS]


def _rows(tmp_path, method: str, steps: int) -> list[dict]:
    config = load_config(None, TINY + [f"federated.method={method}", f"train.local_steps={steps}"])
    return [r for r in run(config, tmp_path / f"{method}-{steps}", quiet=True).rows if r["round"] > 0]


def test_fedavg_lora_gap_is_positive_and_grows_with_local_steps(tmp_path):
    few, many = _rows(tmp_path, "fedavg-lora", 1), _rows(tmp_path, "fedavg-lora", 6)
    # Round 1 of one step starts at B = 0, where A has no gradient: every client's A is still the
    # shared one, so that round averages exactly (gap 0.0); from the second step on, A drifts too.
    assert few[0]["product_gap"] == 0.0
    for rows in (few[1:], many):
        assert all(r["product_gap"] > 0 and r["client_drift"] > 0 for r in rows), rows
        assert all(set(r["layers"]) and all(v["gap"] > 0 for v in r["layers"].values()) for r in rows)
    assert many[-1]["product_gap"] > few[-1]["product_gap"]


@pytest.mark.parametrize("method", ["rolora", "ffa-lora"])
def test_one_factor_methods_average_exactly(tmp_path, method):
    rows = _rows(tmp_path, method, 2)
    assert [r["product_gap"] for r in rows] == [0.0, 0.0]
    assert all(r["client_drift"] > 0 for r in rows)


def test_personalised_methods_log_no_gap(tmp_path):
    rows = _rows(tmp_path, "fedsa-lora", 1)
    assert all(r["product_gap"] is None and r["layers"] == {} for r in rows)
