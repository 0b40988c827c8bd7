"""The top block computed at the first token only, where nothing reads the other tokens' output.

A BERT/RoBERTa sequence classifier reads the last block's output at the first token alone ([CLS]
through BERT's pooler, ``<s>`` in RoBERTa's head). In the top block, every other token's query,
attention row, output projection and feed-forward produce outputs that nobody reads; only its keys
and values need every token. :func:`first_token_top_block` makes the top block compute K and V
for all tokens and the rest for token 0: per token, 2 of its 12 units of d²-matmul work (MiniLM:
d = 384, feed-forward 4d) instead of 12, forward and backward: ~14 % of a 6-block encoder's matmul
FLOPs. The same numbers as the whole block (tested: ``tests/test_llm_batched.py``); the dropouts it
skips are those of the unread outputs, so with per-pass masks (``train.dropout_masks = "fast"``)
only the draws' order changes. The exact masks replay each client's draws over its whole padded
batch, so client-batched training uses this with the per-pass masks only.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial

from torch import Tensor, nn

from rolora.llm.frozen_prefix import encoder_parts
from rolora.llm.models import model_family

FAMILIES = ("bert", "roberta")


def applies(model: nn.Module, task: str) -> bool:
    """Whether ``model`` is an encoder classifier that reads only the first token of its top block."""
    try:
        family = model_family(model)
    except ValueError:
        return False
    return task == "classification" and family in FAMILIES and hasattr(model, "classifier")


@contextmanager
def first_token_top_block(model: nn.Module):
    """For the duration, the model's top block returns [rows, 1, hidden]: its first token's output."""
    _, _, blocks = encoder_parts(model)
    top = blocks[-1]
    # One object per block, kept on it: a compiled pass's guards check the forward's identity, so
    # installing the same one every group reuses the graph (a fresh partial would recompile).
    if "_first_token_forward" not in top.__dict__:
        top.__dict__["_first_token_forward"] = partial(first_token_forward, top)
    top.forward = top.__dict__["_first_token_forward"]
    try:
        yield
    finally:
        top.__dict__.pop("forward", None)


def first_token_forward(layer: nn.Module, hidden_states: Tensor, attention_mask: Tensor | None = None,
                        *args, **kwargs) -> Tensor:
    """A BERT/RoBERTa layer's forward for the first token's output only (keys/values of all tokens)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    attention = layer.attention.self
    first = hidden_states[:, :1]
    heads, size = attention.num_attention_heads, attention.attention_head_size

    def split(x: Tensor) -> Tensor:  # [rows, positions, hidden] -> [rows, heads, positions, size]
        return x.view(x.shape[0], x.shape[1], heads, size).transpose(1, 2)

    query, key, value = split(attention.query(first)), split(attention.key(hidden_states)), split(attention.value(hidden_states))
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1, :]  # the first query's row of the [rows, 1, P, P] mask
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager_attention_forward)
    out, _ = attend(attention, query, key, value, attention_mask,
                    dropout=attention.dropout.p if attention.training else 0.0, scaling=attention.scaling)
    attended = layer.attention.output(out.reshape(first.shape[0], 1, -1).contiguous(), first)
    return layer.feed_forward_chunk(attended)
