"""Model inputs, per-sample losses and evaluation for the three tasks of rolora.llm.

``encode`` (tokenise once per run, :mod:`rolora.llm.task_encoding`) → ``batch`` (pad a few samples)
→ ``loss`` (one loss per sample; the caller takes means, e.g. per client when many clients share a
batch) and ``evaluate``. Model-independent: the model is called as
``model(input_ids=..., attention_mask=...[, token_type_ids=...])`` and only ``.logits`` is read.

Choices:
- Right padding; padded positions have attention 0 and no loss, so a sample's loss does not depend
  on what it is batched with (up to float rounding).
- Decoder losses: the model at position t predicts token t+1; a sample's loss is the MEAN negative
  log-likelihood over its answer tokens (label word, or response + EOS), so every sample weighs the
  same whatever its length. Evaluation perplexity instead pools tokens: exp(total NLL / tokens).
- generation-classification accuracy: the class whose label word has the highest TOTAL
  log-likelihood after the prompt (summed over its tokens, not length-normalised); ties go to the
  lower class index. Its eval loss is the mean over samples of the true word's per-token NLL
  (= the training loss).
- Logits are cast to float32 before the softmax (bf16 models).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rolora.llm.task_encoding import TASKS, Encoded, encode

__all__ = ["TASKS", "Encoded", "encode", "batch", "loss", "evaluate", "per_sample_metrics", "summarise",
           "answer_nll", "label_word_scores", "label_word_scores_by_sequence"]

IGNORE = -100  # label of positions without loss (PyTorch's and Hugging Face's convention)


def _pad(seqs: list[list[int]], pad_id: int, answer_start: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Right-pad ``seqs``; with ``answer_start``, token labels that are IGNORE before it and on padding."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, seq in enumerate(seqs):
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = 1
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if answer_start is not None:
        labels = np.full_like(ids, IGNORE)
        for row, (seq, start) in enumerate(zip(seqs, answer_start)):
            labels[row, start:len(seq)] = seq[start:]
        out["labels"] = torch.from_numpy(labels)
    return out


def batch(encoded: Encoded, indices, pad_id: int | None = None) -> dict[str, torch.Tensor]:
    """Tensors for the samples at ``indices`` (CPU; :func:`loss` moves them to the model).

    Keys: ``input_ids``, ``attention_mask`` [B, T] (T = longest sample in the batch); ``labels``:
    class ids [B] for classification, token labels [B, T] (IGNORE outside the answer) for decoder
    tasks; ``token_type_ids`` when the tokenizer made them; ``class_labels`` [B] for
    generation-classification. ``pad_id`` defaults to the tokenizer's (stored at encoding).
    """
    idx = [int(i) for i in np.asarray(indices).reshape(-1)]
    if not idx:
        raise ValueError("a batch needs at least one sample index")
    pad = encoded.pad_id if pad_id is None else pad_id
    seqs = [encoded.input_ids[i] for i in idx]
    starts = None if encoded.answer_start is None else [encoded.answer_start[i] for i in idx]
    out = _pad(seqs, pad, starts)
    if encoded.token_type_ids is not None:
        out["token_type_ids"] = _pad([encoded.token_type_ids[i] for i in idx], 0)["input_ids"]
    if encoded.task == "classification":
        out["labels"] = torch.as_tensor(encoded.labels[idx], dtype=torch.int64)
    elif encoded.task == "generation-classification":
        out["class_labels"] = torch.as_tensor(encoded.labels[idx], dtype=torch.int64)
    return out


def _logits(model, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    device = next(model.parameters()).device
    inputs = {k: tensors[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in tensors}
    return model(**inputs).logits


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (summed NLL, token count) over the positions whose label is not IGNORE.

    Only the answer positions' logits go through the softmax (a few per sample, not B·T·V).
    """
    labels = labels.to(logits.device)
    target = labels[:, 1:]
    rows, cols = (target != IGNORE).nonzero(as_tuple=True)
    token_nll = F.cross_entropy(logits[rows, cols].float(), target[rows, cols], reduction="none")
    total = torch.zeros(labels.shape[0], dtype=torch.float32, device=logits.device).index_add(0, rows, token_nll)
    return total, (target != IGNORE).sum(dim=1)


def _check_task(task: str, tensors: dict[str, torch.Tensor]) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    want_dim = 1 if task == "classification" else 2
    if tensors["labels"].dim() != want_dim:
        raise ValueError(f"batch labels have shape {tuple(tensors['labels'].shape)}, not a {task} batch")


def loss(model, tensors: dict[str, torch.Tensor], task: str) -> torch.Tensor:
    """Per-sample losses, shape [B] (float32, differentiable): cross-entropy of the class for
    ``classification``, mean answer-token NLL for the decoder tasks (module docstring)."""
    _check_task(task, tensors)
    logits = _logits(model, tensors)
    if task == "classification":
        return F.cross_entropy(logits.float(), tensors["labels"].to(logits.device), reduction="none")
    total, count = answer_nll(logits, tensors["labels"])
    return total / count


def finite_weighted_sum(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ per_sample · weights over the finite losses: rows whose loss is not finite (a failing
    client's) are left out, so the other rows' gradients never see them."""
    return torch.where(torch.isfinite(per_sample.detach()), per_sample * weights, 0.0).sum()


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


@torch.no_grad()
def per_sample_metrics(model, encoded: Encoded, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Each sample's evaluation numbers, in eval mode (the previous mode is restored), so that callers
    can summarise any subset (a class, a client's label mix) without another pass.

    Classification tasks: ``loss`` [N] (the per-sample loss of :func:`loss`) and ``correct`` [N]
    (bool). Instruction: ``nll`` [N] (summed over the response tokens) and ``tokens`` [N].
    """
    if len(encoded) == 0:
        raise ValueError("nothing to evaluate: the encoded set is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    try:
        if encoded.task == "generation-classification":
            per_sample = 1 if one_token_words(encoded) else len(encoded.label_word_ids)  # sequences a sample costs
            parts = [_label_word_metrics(model, encoded, idx)
                     for idx in _chunks(len(encoded), max(1, batch_size // per_sample))]
        else:
            parts = [_batch_metrics(model, encoded, idx) for idx in _chunks(len(encoded), batch_size)]
    finally:
        model.train(was_training)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def summarise(metrics: dict[str, np.ndarray], rows=None) -> dict[str, float]:
    """``loss`` and ``accuracy`` (classification tasks; means over samples) or ``loss`` and
    ``perplexity`` (instruction; pooled over tokens) of the samples at ``rows`` (default: all)."""
    picked = {k: v if rows is None else v[np.asarray(rows, dtype=np.int64)] for k, v in metrics.items()}
    if "correct" in picked:
        return {"loss": float(picked["loss"].mean()), "accuracy": float(picked["correct"].mean())}
    mean_nll = float(picked["nll"].sum() / picked["tokens"].sum())
    return {"loss": mean_nll, "perplexity": float(np.exp(mean_nll))}


def evaluate(model, encoded: Encoded, batch_size: int = 32) -> dict[str, float]:
    """Metrics of ``model`` on all of ``encoded``: :func:`summarise` of :func:`per_sample_metrics`."""
    return summarise(per_sample_metrics(model, encoded, batch_size))


def _batch_metrics(model, encoded: Encoded, idx: np.ndarray) -> dict[str, np.ndarray]:
    tensors = batch(encoded, idx)
    logits = _logits(model, tensors)
    if encoded.task == "classification":
        labels = tensors["labels"].to(logits.device)
        return {"loss": F.cross_entropy(logits.float(), labels, reduction="none").cpu().numpy(),
                "correct": (logits.argmax(dim=-1) == labels).cpu().numpy()}
    total, count = answer_nll(logits, tensors["labels"])
    return {"nll": total.cpu().numpy().astype(np.float64), "tokens": count.cpu().numpy()}


def one_token_words(encoded: Encoded) -> bool:
    """Every label word is a single token (TREC's six and the sentiment words are, for SmolLM2)."""
    return all(len(w) == 1 for w in encoded.label_word_ids)


def label_word_scores(model, encoded: Encoded, indices) -> torch.Tensor:
    """[len(indices), C] total log-likelihood of each class's label word after each sample's prompt.

    One-token words: one forward over the prompts, the next-token log-probabilities at each prompt's
    end (C× fewer sequences than :func:`label_word_scores_by_sequence`, the reference, the same numbers
    up to float rounding)."""
    if not one_token_words(encoded):
        return label_word_scores_by_sequence(model, encoded, indices)
    prompts = [encoded.input_ids[i][:encoded.answer_start[i]] for i in indices]
    tensors = _pad(prompts, encoded.pad_id)
    logits = _logits(model, tensors)
    last = torch.as_tensor([len(p) - 1 for p in prompts], device=logits.device)
    log_probs = F.log_softmax(logits[torch.arange(len(prompts), device=logits.device), last].float(), dim=-1)
    return log_probs[:, [w[0] for w in encoded.label_word_ids]]


def label_word_scores_by_sequence(model, encoded: Encoded, indices) -> torch.Tensor:
    """:func:`label_word_scores` for words of any length: one sequence per (sample, class), prompt + word."""
    words = encoded.label_word_ids
    seqs, starts = [], []
    for i in indices:
        prompt = encoded.input_ids[i][:encoded.answer_start[i]]
        seqs += [prompt + w for w in words]
        starts += [len(prompt)] * len(words)
    tensors = _pad(seqs, encoded.pad_id, starts)
    total, _ = answer_nll(_logits(model, tensors), tensors["labels"])
    return -total.view(len(indices), len(words))


def _label_word_metrics(model, encoded: Encoded, idx: np.ndarray) -> dict[str, np.ndarray]:
    scores = label_word_scores(model, encoded, idx).cpu()  # one forward over C sequences per sample
    truth = torch.as_tensor(encoded.labels[idx], dtype=torch.int64)
    word_lengths = torch.tensor([len(w) for w in encoded.label_word_ids], dtype=torch.float32)
    true_nll = -scores.gather(1, truth[:, None]).squeeze(1) / word_lengths[truth]
    return {"loss": true_nll.numpy(), "correct": (scores.argmax(dim=1) == truth).numpy()}
