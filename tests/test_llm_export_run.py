"""``rolora llm export``: a run's global (or a client's) model in PEFT's format, from the run folder alone.

PEFT's ``PeftModel.from_pretrained(fresh_base, OUT)`` must give the logits our engine's model gives
after the run (fp32), for both model families; full-rank FedAvg is refused with a pointer to
``--merged``; personalised methods need ``--client``."""

from __future__ import annotations

import pytest
import torch
from test_llm_engine import COMMON, TINY

from rolora.federated.round import next_model
from rolora.llm.adapters import load_head, load_tensors
from rolora.llm.checkpoint import latest_checkpoint, load_checkpoint
from rolora.llm.cli import main as llm_main
from rolora.llm.config import load_config
from rolora.llm.engine import run
from rolora.llm.export_run import export_run
from rolora.llm.models import load_model
from rolora.llm.prepare import build

peft = pytest.importorskip("peft")


def _batch(setup):
    from rolora.llm.tasks import batch

    tensors = batch(setup.test, list(range(4)))
    return {k: v for k, v in tensors.items() if k in ("input_ids", "attention_mask")}


def _our_logits(run_dir, client=0):
    setup = build(load_config(str(run_dir / "config.toml")))
    ckpt = load_checkpoint(latest_checkpoint(run_dir))
    load_tensors(setup.adapters, next_model(setup.method, ckpt.state, client, ckpt.kept), frozenset(),
                 setup.method, setup.config.lora.alpha)
    if setup.train_head:
        load_head(setup.model, dict(ckpt.state.dense), trainable=False)
    batch = _batch(setup)
    with torch.no_grad():
        return setup.model(**batch).logits, batch, setup


@pytest.mark.parametrize("family,method", [("roberta", "rolora"), ("llama", "fedavg-lora"), ("roberta", "fed-alora")])
def test_exported_adapter_gives_our_logits_in_peft(family, method, tmp_path):
    config = load_config(None, TINY[family] + COMMON + [f"federated.method={method}"])
    run(config, tmp_path / "run", quiet=True)
    personalised = method == "fed-alora"
    assert llm_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "peft")]
                    + (["--client", "1"] if personalised else [])) == 0
    expected, batch, setup = _our_logits(tmp_path / "run", client=1 if personalised else 0)
    base, _ = load_model(config.model.name, "classification" if family == "roberta" else "causal-lm",
                         num_labels=len(setup.label_names) or None, seed=config.run.seed)
    with torch.no_grad():
        got = peft.PeftModel.from_pretrained(base, str(tmp_path / "peft")).eval()(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_full_rank_is_refused_and_exports_merged(tmp_path, capsys):
    config = load_config(None, TINY["roberta"] + COMMON + ["federated.method=fedavg-full", "federated.rounds=1"])
    run(config, tmp_path / "run", quiet=True)
    assert llm_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "peft")]) == 2
    assert "--merged" in capsys.readouterr().err and not (tmp_path / "peft").exists()
    out = export_run(tmp_path / "run", tmp_path / "merged", merged=True)
    from transformers import AutoModelForSequenceClassification

    expected, batch, _ = _our_logits(tmp_path / "run")
    with torch.no_grad():
        got = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_personalised_export_needs_a_client(tmp_path, capsys):
    config = load_config(None, TINY["roberta"] + COMMON + ["federated.method=fedsa-lora", "federated.rounds=1"])
    run(config, tmp_path / "run", quiet=True)
    assert llm_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "x")]) == 2
    assert "pass --client K" in capsys.readouterr().err
    assert llm_main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "x"), "--client", "7"]) == 2
    assert "clients 0..2" in capsys.readouterr().err
