"""BERT/RoBERTa blocks computed on the real tokens only: no dense work on padding.

A client-batched pass is [rows, P] with every row padded to the pass's longest (rows are grouped
by length, yet ~6 % of the positions of a bench round are padding). Every matmul of a block but
attention's two works token by token, so :func:`unpadded_blocks` runs the encoder's blocks on the
pass's real tokens packed into [tokens, hidden] — projections, feed-forward, layer norms, dropouts
and the LoRA terms (segments over the packed tokens: ``Rows.packed``) — and lays keys, queries and
values out as [rows, heads, P, head size] only for attention itself (zeros at padding, masked as
keys). The same numbers as the padded blocks up to the order of float sums (a test compares
them, dropout off); with per-pass masks (``train.dropout_masks = "fast"``) only the draws' shapes
change. Like the HF-style unpadded BERTs (and FlashAttention's variable-length kernels), minus a
fused attention kernel: attention stays the engine's (per-pass dropout masks).

With ``first_token`` the top block computes keys and values for every token and the rest for each
row's first token (what :mod:`rolora.llm.first_token_top` does in the padded layout).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn

from rolora.llm.adapter_layer import Rows
from rolora.llm.first_token_top import FAMILIES
from rolora.llm.frozen_prefix import encoder_parts
from rolora.llm.model_dropouts import attention_product
from rolora.llm.models import model_family


class Packing:
    """One pass's layout: where the real tokens of its right-padded [rows, P] batch are."""

    def __init__(self, attention_mask: Tensor) -> None:
        mask = attention_mask.to(torch.bool)
        rows, width = mask.shape
        lengths = mask.sum(1)
        prefix = torch.arange(width, device=mask.device)[None, :] < lengths[:, None]
        if not bool(torch.equal(mask, prefix)) or not bool((lengths > 0).all()):
            raise ValueError("unpadded blocks need right-padded rows of at least one token "
                             "(an attention mask of ones then zeros per row)")
        self.rows, self.width = rows, width
        flat = prefix.reshape(-1).nonzero().squeeze(1)  # r·P + p of each real token, row after row
        self.index = flat
        self.row_of, self.pos_of = flat // width, flat % width
        self.ends = torch.cumsum(lengths, 0)
        self.first = self.ends - lengths  # each row's first token among the packed
        self.key_mask = prefix[:, None, None, :]  # [rows, 1, 1, P]: keys a query may attend to
        self.tokens = int(flat.numel())

    def segments(self, rows: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """Row segments (slot, first row, end row) as segments of the packed tokens."""
        starts, ends = self.first.tolist(), self.ends.tolist()
        return [(slot, starts[a], ends[b - 1]) for slot, a, b in rows]

    def pack(self, padded: Tensor) -> Tensor:
        """[rows, P, hidden] -> [tokens, hidden]."""
        return padded.reshape(self.rows * self.width, padded.shape[-1]).index_select(0, self.index)

    def unpack(self, tokens: Tensor) -> Tensor:
        """[tokens, hidden] -> [rows, P, hidden], zeros at padding."""
        out = tokens.new_zeros(self.rows * self.width, tokens.shape[-1])
        return out.index_copy(0, self.index, tokens).view(self.rows, self.width, tokens.shape[-1])

    def heads(self, tokens: Tensor, heads: int) -> Tensor:
        """[tokens, heads·size] -> [rows, heads, P, size] (contiguous: what attention's matmuls
        read), zeros at padding: one scatter, no separate head transpose."""
        size = tokens.shape[-1] // heads
        out = tokens.new_zeros(self.rows, heads, self.width, size)
        out.permute(0, 2, 1, 3).index_put_((self.row_of, self.pos_of), tokens.view(-1, heads, size))
        return out

    def from_heads(self, attended: Tensor) -> Tensor:
        """Attention's output [rows, heads, P, size] -> [tokens, heads·size]: one gather."""
        return attended.permute(0, 2, 1, 3)[self.row_of, self.pos_of].reshape(self.tokens, -1)


def applies(model: nn.Module) -> bool:
    """Whether ``model`` is a BERT/RoBERTa encoder (the families whose blocks :func:`block_forward` knows)."""
    try:
        return model_family(model) in FAMILIES
    except ValueError:
        return False


class UnpaddedBlocks:
    """The installed encoder forward and the layout of the pass in progress."""

    def __init__(self, model: nn.Module, rows: Rows, first_token: bool) -> None:
        self.model, self.rows, self.first_token = model, rows, first_token
        self.packing: Packing | None = None

    def begin_pass(self, attention_mask: Tensor) -> None:
        """The next pass's layout (its rows' segments must be set on ``rows`` already)."""
        self.packing = Packing(attention_mask)
        self.rows.packed = self.packing.segments(self.rows.segments)

    def encoder_forward(self, hidden_states: Tensor, attention_mask=None, *args, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions as Output

        pack = self.packing
        if pack is None or hidden_states.shape[:2] != (pack.rows, pack.width):
            raise RuntimeError("unpadded blocks: the pass's layout was not set (begin_pass) for this batch")
        _, _, blocks = encoder_parts(self.model)
        h = pack.pack(hidden_states)
        for i, block in enumerate(blocks):
            h = block_forward(block, h, pack, first_only=self.first_token and i == len(blocks) - 1)
        out = h.unsqueeze(1) if self.first_token else pack.unpack(h)
        return Output(last_hidden_state=out, cache=None)  # what the encoders return


def block_forward(block: nn.Module, h: Tensor, pack: Packing, first_only: bool = False) -> Tensor:
    """A BERT/RoBERTa block on packed tokens [tokens, hidden]; ``first_only``: its output for each
    row's first token only ([rows, hidden])."""
    attention = block.attention.self
    heads, size = attention.num_attention_heads, attention.attention_head_size
    key = pack.heads(attention.key(h), heads)
    value = pack.heads(attention.value(h), heads)
    if first_only:
        # [rows, 1, hidden] from here to the block's end: three dimensions, so every adapted layer
        # after the keys and values (query, attention output, feed-forward) reads the rows' segments
        # (Rows.packed is for [tokens, hidden] inputs)
        resid = h.index_select(0, pack.first).unsqueeze(1)
        query = attention.query(resid).view(pack.rows, 1, heads, size).transpose(1, 2)
    else:
        resid = h
        query = pack.heads(attention.query(h), heads)
    # the engine's attention (its dropout draws from the pass's masks), [rows, heads, queries, size]
    out = attention_product(attention, query, key, value, pack.key_mask, attention.scaling,
                            attention.dropout.p if attention.training else 0.0)
    out = out.transpose(1, 2).reshape(pack.rows, 1, -1) if first_only else pack.from_heads(out)
    out = block.feed_forward_chunk(block.attention.output(out, resid))
    return out.squeeze(1) if first_only else out


@contextmanager
def unpadded_blocks(model: nn.Module, rows: Rows, first_token: bool = False):
    """For the duration, ``model``'s encoder runs its blocks on packed tokens; call
    ``begin_pass(attention_mask)`` on the yielded object before each forward. ``first_token``: the
    encoder returns [rows, 1, hidden], each row's first token (an encoder classifier's read)."""
    base, _, _ = encoder_parts(model)
    encoder = base.encoder
    state = UnpaddedBlocks(model, rows, first_token)
    encoder.forward = state.encoder_forward
    try:
        yield state
    finally:
        encoder.__dict__.pop("forward", None)
        rows.packed = None
