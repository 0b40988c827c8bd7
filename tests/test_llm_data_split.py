"""The run folder says which examples went where (data_split.json, test.jsonl), and an exported
adapter of a shipped model evaluates on that test split with plain transformers + peft
(docs/examples/evaluate_export.py, the README's recipe) to the run's own test accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rolora.llm.config import load_config
from rolora.llm.data_split import content_hash
from rolora.llm.engine import run
from rolora.llm.export_run import export_run
from rolora.llm.models import minilm_folder

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.name=tiny-roberta", "model.max_length=24", "data.dataset=rotten_tomatoes", "data.test_size=24",
        "data.val_size=10", "data.max_train_samples=48", "run.eval_batch_size=24", "federated.clients=3",
        "federated.rounds=1", "train.local_steps=1", "train.batch_size=4", "lora.rank=2"]


def test_the_run_folder_records_every_split_and_client(tmp_path):
    config = load_config(None, TINY)
    run(config, tmp_path / "r", quiet=True)
    split = json.loads((tmp_path / "r" / "data_split.json").read_text())
    test = [json.loads(line) for line in (tmp_path / "r" / "test.jsonl").read_text().splitlines()]
    s = split["splits"]
    assert (len(s["test"]), len(s["val"]), len(s["train"])) == (24, 10, 48)
    assert not set(s["test"]) & set(s["train"]) and not set(s["val"]) & set(s["train"])
    clients = split["clients"]
    assert sorted(clients) == ["0", "1", "2"]
    assert sorted(h for hs in clients.values() for h in hs) == sorted(s["train"])  # complete and disjoint
    assert [content_hash(r["text"], r.get("pair")) for r in test] == s["test"]
    assert {r["label_name"] for r in test} <= set(split["label_names"]) == {"fresh", "rotten"} | set(split["label_names"])
    assert all(split["label_names"][r["label"]] == r["label_name"] for r in test)


@pytest.mark.slow
def test_an_exported_minilm_adapter_scores_the_runs_test_accuracy_with_plain_peft(tmp_path):
    config = load_config("quickstart", ["federated.clients=2", "federated.rounds=1", "train.local_steps=2",
                                        "train.batch_size=8", "data.test_size=60", "run.eval_every=1"])
    history = run(config, tmp_path / "run", quiet=True)
    export_run(tmp_path / "run", tmp_path / "adapter")
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(minilm_folder())
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "evaluate_export.py"),
                           str(tmp_path / "run"), str(tmp_path / "adapter")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    correct, total = int(proc.stdout.split("(")[1].split()[0]), 60
    assert correct == round(history.last("test_accuracy") * total), proc.stdout
