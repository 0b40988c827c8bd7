"""``rolora llm run --methods a,b,c``: the methods share one loaded model and data, with the same numbers
as separate runs; the call ends with the table, the test set's majority class and standard error, and
one figure of every method's test accuracy per round."""

from __future__ import annotations

import json

from nonsquare import NON_SQUARE_TARGETS

from rolora.cli import main
from rolora.llm.config import load_config
from rolora.llm.engine import run

TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.max_train_samples=48", "run.eval_batch_size=24", "federated.clients=3", "federated.rounds=2",
        "train.local_steps=2", "train.batch_size=4", "lora.rank=2", "lora.dropout=0.1", "run.eval_every=1",
        *NON_SQUARE_TARGETS]
TIMES = {"wall_s", "tokens_per_s"}


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES} for line in path.read_text().splitlines()]


def test_methods_in_one_call_equal_separate_runs_and_end_with_a_figure(tmp_path, capsys):
    assert main(["llm", "run", "--config", "tiny-roberta", "--quiet", "--out", str(tmp_path / "call"), "--methods", "rolora,fedavg-lora,ffa-lora",
                 *TINY]) == 0
    out = capsys.readouterr().out
    for method in ("rolora", "fedavg-lora", "ffa-lora"):
        alone = tmp_path / f"alone-{method}"
        run(load_config("tiny-roberta", TINY + [f"federated.method={method}"]), alone, quiet=True)
        assert _rows(tmp_path / "call" / method / "metrics.jsonl") == _rows(alone / "metrics.jsonl"), method
    figure = tmp_path / "call" / "test_accuracy.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"test accuracy per round, every method: {figure}" in out
    assert "test set: 24 examples; majority class" in out and "standard error" in out
