"""rolora.llm.export: PEFT's PeftModel.from_pretrained gives our logits (fp32, atol 1e-5) for plain LoRA,
Fed-ALoRA and base-changing methods; full-rank FedAvg is refused (and exported merged); writes are atomic."""

import json

import pytest
import torch

from rolora.federated import get_method
from rolora.llm.adapters import Targets, attach, layer_specs, load_head, load_tensors, read_head
from rolora.llm.export import export_merged, export_peft, peft_key
from rolora.llm.models import load_model

peft = pytest.importorskip("peft")

MODELS = {"bert": ("tiny-bert", "classification"), "roberta": ("tiny-roberta", "classification"),
          "llama": ("tiny-llama", "causal-lm")}
ALPHA = 8.0


def fresh(family):
    name, task = MODELS[family]
    return load_model(name, task, 3 if task == "classification" else None, seed=0)


def trained(family, method_name, rank=4, targets=Targets(), seed=1):
    """Our model with random client tensors and a random head loaded: (model, adapters, tensors, head, method, batch)."""
    model, tok = fresh(family)
    batch = tok(["hello world", "a somewhat longer sentence here"], padding=True, return_tensors="pt")
    adapters = attach(model, targets)
    method = get_method(method_name)
    start = method.client_start(method.init(layer_specs(adapters), rank, ALPHA, seed=0), 0, None, 1)
    gen = torch.Generator().manual_seed(seed)
    tensors = {layer: {k: 0.1 * torch.randn(v.shape, generator=gen) for k, v in ts.items()} for layer, ts in start.items()}
    load_tensors(adapters, tensors, method.trains(1), method, ALPHA)
    head = {k: torch.randn(v.shape, generator=gen) for k, v in read_head(model).items()}
    load_head(model, head, trainable=False)
    return model, adapters, tensors, head, method, batch


def peft_logits(base, out_dir, batch):
    with torch.no_grad():
        return peft.PeftModel.from_pretrained(base, str(out_dir)).eval()(**batch).logits


def ours(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("family", MODELS)
def test_plain_lora_round_trips_through_peft(family, tmp_path):
    model, adapters, tensors, head, method, batch = trained(family, "rolora", targets=Targets(layers=(-1,)))
    out = export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "adapter", base_name_or_path=family)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == ALPHA and config["base_model_name_or_path"] == family
    assert config["modules_to_save"] == (["classifier"] if head else None)
    expected = ours(model, batch)
    assert not torch.allclose(expected, ours(fresh(family)[0], batch), atol=1e-4)  # the adapter matters
    torch.testing.assert_close(peft_logits(fresh(family)[0], out, batch), expected, rtol=0, atol=1e-5)


def test_keys_follow_peft(tmp_path):
    from safetensors.torch import load_file

    model, adapters, tensors, head, method, _ = trained("roberta", "fedavg-lora", targets=Targets(layers=(0,)))
    out = export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "a")
    keys = set(load_file(out / "adapter_model.safetensors"))
    layer = "roberta.encoder.layer.0.attention.self.query"
    assert f"base_model.model.{layer}.lora_A.weight" in keys and f"base_model.model.{layer}.lora_B.weight" in keys
    assert {"base_model.model.classifier.dense.weight", "base_model.model.classifier.out_proj.bias"} <= keys
    assert len(keys) == 2 * len(adapters) + 4
    assert peft_key(layer, "B") == f"base_model.model.{layer}.lora_B.weight"
    with pytest.raises(ValueError, match="factor must be 'A' or 'B'"):
        peft_key(layer, "C")


def test_fed_alora_exports_as_a_rank_r_lora(tmp_path):
    model, adapters, tensors, head, method, batch = trained("llama", "fed-alora", rank=3)
    out = export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "a")
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 3
    torch.testing.assert_close(peft_logits(fresh("llama")[0], out, batch), ours(model, batch), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family,method_name", [("bert", "fedex-lora"), ("llama", "flora")])
def test_base_changing_methods_export_the_merged_base_beside_the_lora(family, method_name, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    model, adapters, tensors, head, method, batch = trained(family, method_name)
    out = export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "a")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(out / "base_model")
    cls = AutoModelForCausalLM if family == "llama" else AutoModelForSequenceClassification
    base = cls.from_pretrained(out / "base_model")
    torch.testing.assert_close(peft_logits(base, out, batch), ours(model, batch), rtol=0, atol=1e-5)
    # the merged base is W0 + base exactly, and the original base + adapter alone is not the model
    layer = next(iter(adapters))
    torch.testing.assert_close(base.get_submodule(layer).weight, adapters[layer].weight + tensors[layer]["base"])
    assert not torch.allclose(peft_logits(fresh(family)[0], out, batch), ours(model, batch), atol=1e-4)


def test_zero_base_exports_no_merged_base(tmp_path):
    model, adapters, tensors, head, method, batch = trained("roberta", "fedex-lora")
    tensors = {layer: {**ts, "base": torch.zeros_like(ts["base"])} for layer, ts in tensors.items()}
    load_tensors(adapters, tensors, method.trains(1), method, ALPHA)
    out = export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "a")
    assert not (out / "base_model").exists()
    torch.testing.assert_close(peft_logits(fresh("roberta")[0], out, batch), ours(model, batch), rtol=0, atol=1e-5)


def test_mixed_ranks_use_peft_rank_pattern(tmp_path):
    model, adapters, tensors, head, method, batch = trained("bert", "flexlora", rank=4)
    layer = "bert.encoder.layer.1.attention.self.value"
    tensors[layer] = {"A": 0.1 * torch.randn(2, 32), "B": 0.1 * torch.randn(32, 2)}
    load_tensors(adapters, tensors, method.trains(1), method, ALPHA)
    out = export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "a")
    assert json.loads((out / "adapter_config.json").read_text())["rank_pattern"] == {layer: 2}
    torch.testing.assert_close(peft_logits(fresh("bert")[0], out, batch), ours(model, batch), rtol=0, atol=1e-5)


def test_full_rank_fedavg_is_refused_and_exports_merged(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model, adapters, tensors, head, method, batch = trained("roberta", "fedavg-full")
    with pytest.raises(ValueError, match="not a LoRA.*export_merged"):
        export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "a")
    assert list(tmp_path.iterdir()) == []
    out = export_merged(model, adapters, tensors, head, method, ALPHA, tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    torch.testing.assert_close(ours(merged, batch), ours(model, batch), rtol=0, atol=1e-5)


def test_head_none_exports_the_models_current_head(tmp_path):
    model, adapters, tensors, _, method, batch = trained("bert", "fedavg-lora")
    out = export_peft(model, adapters, tensors, None, method, ALPHA, tmp_path / "a")
    torch.testing.assert_close(peft_logits(fresh("bert")[0], out, batch), ours(model, batch), rtol=0, atol=1e-5)


def test_bad_exports_write_nothing(tmp_path, monkeypatch):
    model, adapters, tensors, head, method, _ = trained("bert", "fedavg-lora")
    layer = next(iter(tensors))
    with pytest.raises(ValueError, match="missing layers"):
        export_peft(model, adapters, {k: v for k, v in tensors.items() if k != layer}, head, method, ALPHA, tmp_path / "a")
    with pytest.raises(ValueError, match="head tensor 'classifier.weight'"):
        export_peft(model, adapters, tensors, {**head, "classifier.weight": torch.zeros(1)}, method, ALPHA, tmp_path / "a")
    with pytest.raises(ValueError, match="cannot express"):
        export_peft(model, adapters, {n: {"A": t["A"], "C": t["B"]} for n, t in tensors.items()}, head, method,
                    ALPHA, tmp_path / "a")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_kept_unless_overwrite(tmp_path):
    model, adapters, tensors, head, method, batch = trained("bert", "fedavg-lora")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old").write_text("x")
    with pytest.raises(FileExistsError):
        export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "a")
    assert (tmp_path / "a" / "old").exists()
    out = export_peft(model, adapters, tensors, head, method, ALPHA, tmp_path / "a", overwrite=True)
    assert not (out / "old").exists() and (out / "adapter_model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_a_method_with_its_own_delta_is_not_exported_wrongly(tmp_path):
    class Doubled(type(get_method("fedavg-lora"))):
        def delta(self, layer, alpha):
            return 2 * super().delta(layer, alpha)

    model, adapters, tensors, head, _, _ = trained("bert", "fedavg-lora")
    with pytest.raises(ValueError, match="defines its own delta"):
        export_peft(model, adapters, tensors, head, Doubled(), ALPHA, tmp_path / "a")
