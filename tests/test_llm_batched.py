"""Client-batched local training equals one-client-at-a-time training (the reference), for every
method, on tiny RoBERTa and Llama in fp32 with dropout on (model's and LoRA's), gradient clipping,
mixed ranks, several passes per step (a small token budget) and groups of clients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nonsquare import NON_SQUARE_TARGETS
from test_llm_engine import TINY

from rolora.federated import available_methods, method_from_spec
from rolora.federated.round import client_starts, client_uploads
from rolora.llm.batched_training import batched_training, chunks, padding_share
from rolora.llm.config import ConfigError, load_config
from rolora.llm.local_training import sequential_training
from rolora.llm.training import local_training
from rolora.llm.prepare import build

COMMON = ["data.max_train_samples=36", "federated.clients=3", "train.local_steps=2", "train.batch_size=4",
          "lora.rank=2", "lora.alpha=4.0", "lora.dropout=0.1", "train.max_grad_norm=0.5", "train.batch_tokens=64"]
NON_SQUARE = {"roberta": NON_SQUARE_TARGETS, "llama": []}
"""Targets with a non-square layer on each model (Llama's default v_proj is already 16×32)."""
MIXED = {0: 2, 1: 3, 2: 1}
ATOL = 2e-6


@pytest.fixture(scope="module", params=["roberta", "llama"])
def setup(request):
    return build(load_config(None, TINY[request.param] + COMMON + NON_SQUARE[request.param]))


def _for(setup, spec: str, **train):
    method = method_from_spec(spec, total_rounds=2)
    ranks = MIXED if method.mixes_ranks and method.uses_ranks else setup.ranks
    config = dataclasses.replace(setup.config, train=dataclasses.replace(setup.config.train, **train))
    return dataclasses.replace(setup, config=config, method=method, ranks=ranks)


def _assert_close(a, b, what):
    assert a.keys() == b.keys(), what
    for key in a:
        if isinstance(a[key], dict):
            _assert_close(a[key], b[key], f"{what}/{key}")
        else:
            torch.testing.assert_close(b[key], a[key], atol=ATOL, rtol=0, msg=lambda m: f"{what}/{key}: {m}")


SECOND_ROUND = {"rolora", "fedex-lora", "flora"}
"""Methods whose round 2 trains differently (rolora's A-only phase; a non-zero shared base)."""


def _rounds(setup, train_fn):
    """Uploads and aggregated state of round 1 (and 2, from round 1's aggregate, where it differs)."""
    m, state, out = setup.method, setup.initial_state(), []
    for t in (1, 2) if m.name in SECOND_ROUND else (1,):
        starts = client_starts(m, state, [0, 1, 2])
        results = train_fn(setup)(t, starts)
        updates = client_uploads(m, t, starts, results)[0]
        state = m.aggregate(state, updates, t)
        out.append((updates, results, state))
    return out


@pytest.mark.parametrize("spec", available_methods())
def test_batched_equals_sequential_for_every_method(setup, spec):
    s = _for(setup, spec)
    for (u_seq, r_seq, g_seq), (u_bat, r_bat, g_bat) in zip(_rounds(s, sequential_training),
                                                          _rounds(s, batched_training)):
        for a, b in zip(u_seq, u_bat):
            _assert_close(a.tensors, b.tensors, f"{spec} upload {a.client}")
            _assert_close(dict(a.dense), dict(b.dense), f"{spec} head {a.client}")
        for a, b in zip(r_seq, r_bat):
            assert b.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], abs=ATOL)
            assert (b.metrics["tokens"], b.metrics["steps"]) == (a.metrics["tokens"], a.metrics["steps"])
            assert b.metrics["computed_tokens"] <= a.metrics["computed_tokens"]  # no more padding computed
        _assert_close(g_seq.layers, g_bat.layers, f"{spec} state")
        _assert_close(g_seq.dense, g_bat.dense, f"{spec} state head")
    start = s.initial_state()  # and training did something
    assert any(not torch.allclose(x, start.layers[layer][n]) for layer, named in g_bat.layers.items()
               for n, x in named.items() if n in start.layers[layer])


def test_other_seeds_give_other_masks(setup):
    """The parity above is not vacuous: another dropout stream changes the result beyond the tolerance."""
    s = _for(setup, "fedavg-lora")
    starts = client_starts(s.method, s.initial_state(), [0, 1, 2])
    a = batched_training(s)(1, starts)
    b = batched_training(dataclasses.replace(s, config=dataclasses.replace(
        s.config, run=dataclasses.replace(s.config.run, seed=1))))(1, starts)
    layer = next(iter(a[0].tensors))
    assert (a[0].tensors[layer]["B"] - b[0].tensors[layer]["B"]).abs().max() > 100 * ATOL


def test_groups_and_token_budgets_do_not_change_the_result(setup):
    s = _for(setup, "rolora")
    starts = client_starts(s.method, s.initial_state(), [0, 1, 2])
    ref = batched_training(_for(setup, "rolora", batch_tokens=4096))(1, starts)
    for changes in ({"client_group": 2}, {"client_group": 1, "batch_tokens": 1}):
        out = batched_training(_for(setup, "rolora", **changes))(1, starts)
        for a, b in zip(ref, out):
            _assert_close(a.tensors, b.tensors, str(changes))


def test_a_client_with_a_non_finite_loss_is_dropped_and_the_others_are_unchanged(setup, monkeypatch):
    import rolora.llm.batched_training as bt

    s = _for(setup, "fedavg-lora")
    starts = client_starts(s.method, s.initial_state(), [0, 1, 2])
    clean = bt.batched_training(s)(1, starts)
    poisoned_rows = set(int(i) for i in s.clients[1])
    real = bt.loss

    def poisoned(model, tensors, task):  # client 1's samples are recognised by their token ids
        out = real(model, tensors, task)
        bad = [any(tuple(s.train.input_ids[i]) == tuple(row[row != s.train.pad_id].tolist()[:len(s.train.input_ids[i])])
                   for i in poisoned_rows) for row in tensors["input_ids"]]
        return torch.where(torch.tensor(bad), torch.full_like(out, float("nan")), out)

    monkeypatch.setattr(bt, "loss", poisoned)
    out = bt.batched_training(s)(1, starts)
    assert out[1] is None
    for k in (0, 2):
        _assert_close(clean[k].tensors, out[k].tensors, f"client {k}")


def test_chunks_sort_by_length_within_the_budget():
    lengths = np.array([5, 30, 7, 6, 29, 8])
    parts = chunks(lengths, 32, min_tokens=10**6)
    assert sorted(np.concatenate(parts).tolist()) == list(range(6))
    assert all(len(p) * lengths[p].max() <= 32 or len(p) == 1 for p in parts)
    assert [lengths[p].tolist() for p in parts] == [[5, 6, 7, 8], [29], [30]]
    # Past min_tokens a pass is also cut where it would become more than 10 % padding.
    lengths = np.array([10] * 30 + [20] * 30)
    assert [sorted(set(lengths[p].tolist())) for p in chunks(lengths, 10**6, min_tokens=100)] == [[10], [20]]
    assert len(chunks(lengths, 10**6, min_tokens=10**6)) == 1


def test_padding_share_and_the_config_switch(setup):
    s = _for(setup, "fedavg-lora", batch_tokens=64)
    starts = client_starts(s.method, s.initial_state(), [0, 1, 2])
    seq, bat = sequential_training(s)(1, starts), local_training(s)(1, starts)
    assert padding_share(bat) < padding_share(seq)
    off = _for(setup, "fedavg-lora", client_batching="off")
    assert "computed_tokens" in local_training(off)(1, starts)[0].metrics
    with pytest.raises(ConfigError, match="train.client_batching"):
        load_config(None, ["train.client_batching=fast"])
    with pytest.raises(ConfigError, match="train.batch_tokens"):
        load_config(None, ["train.batch_tokens=0"])


def test_a_bf16_base_trains_fp32_tensors_close_to_fp32():
    config = load_config(None, TINY["roberta"] + COMMON)
    fp32 = build(config)
    bf16 = build(dataclasses.replace(config, model=dataclasses.replace(config.model, dtype="bfloat16")))
    starts = client_starts(fp32.method, fp32.initial_state(), [0, 1, 2])
    a, b = batched_training(fp32)(1, starts), batched_training(bf16)(1, starts)
    for x, y in zip(a, b):
        assert y.metrics["train_loss"] == pytest.approx(x.metrics["train_loss"], abs=0.02)
        for layer, named in y.tensors.items():
            for n, t in named.items():
                assert t.dtype == torch.float32 and bool(torch.isfinite(t).all())
                torch.testing.assert_close(t, x.tensors[layer][n], atol=2e-2, rtol=0)


@pytest.mark.parametrize("width", [1, 7, 8, 12, 384, 385])
def test_keep_tables_pack_to_bits_and_back(width):
    from rolora.llm.client_streams import _pack, _unpack

    keep = torch.randint(0, 2, (13, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(width))
    packed = _pack(keep)
    assert packed.shape == (13, -(-width // 8)) and packed.dtype == torch.uint8
    assert torch.equal(_unpack(packed, width), keep)
    assert torch.equal(_unpack(packed[[3, 0, 3]], width), keep[[3, 0, 3]])


def test_freed_host_memory_goes_back_to_the_os_on_glibc():
    import platform

    from rolora.llm.host_memory import release_freed_memory

    libc, _ = platform.libc_ver()
    pieces = [torch.ones(256, 1024) for _ in range(64)]  # 64 MiB on the heap (below the mmap threshold: 1 MiB each)
    del pieces[::2]
    assert release_freed_memory() is (libc == "glibc")


def test_fast_masks_keep_each_entry_independently_with_the_stated_probability():
    from rolora.llm.pass_masks import WordSource, keep_mask

    for p in (0.1, 0.37):
        keep, q = keep_mask((1000, 3, 333), p, WordSource(1, "cpu"))
        assert keep.shape == (1000, 3, 333) and keep.dtype == torch.bool
        assert abs(q - (1 - p)) <= 2 ** -17
        n = keep.numel()
        assert abs(keep.float().mean().item() - q) < 5 * (q * (1 - q) / n) ** 0.5  # 5 sigma
        # neighbours (four entries share a 64-bit word) are uncorrelated, at every lag within a word
        flat = keep.reshape(-1).float()
        for lag in (1, 2, 3, 4):
            corr = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1].item()
            assert abs(corr) < 5 / n ** 0.5, f"lag {lag}: correlation {corr}"
        # every field position of a word keeps at the same rate (no biased field)
        by_field = flat[: n - n % 4].view(-1, 4).mean(0)
        assert (by_field - q).abs().max().item() < 5 * (q * (1 - q) / (n // 4)) ** 0.5
    again = keep_mask((7, 11), 0.1, WordSource(1, "cpu"))[0]
    assert torch.equal(again, keep_mask((7, 11), 0.1, WordSource(1, "cpu"))[0])
    assert not torch.equal(again, keep_mask((7, 11), 0.1, WordSource(2, "cpu"))[0])
    assert keep_mask((5000,), 0.0, WordSource(2, "cpu"))[0].all()
    with pytest.raises(ValueError, match="dropout probability"):
        keep_mask((3,), 1.0, WordSource(0, "cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the device's own generator)")
def test_fast_masks_on_a_gpu_are_drawn_there_seeded_and_at_the_stated_rate():
    from rolora.llm.pass_masks import WordSource, keep_mask

    keep, q = keep_mask((512, 12, 64, 64), 0.1, WordSource(5, "cuda"))
    assert keep.device.type == "cuda" and keep.dtype == torch.bool
    n = keep.numel()
    assert abs(keep.float().mean().item() - q) < 5 * (q * (1 - q) / n) ** 0.5
    assert torch.equal(keep, keep_mask((512, 12, 64, 64), 0.1, WordSource(5, "cuda"))[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_dropout_zeroes_or_scales_by_the_exact_inverse_keep_probability(dtype):
    from rolora.llm.pass_masks import PassMasks

    x = torch.randn(64, 7, 33).to(dtype).requires_grad_()
    y = PassMasks(3, torch.device("cpu")).tokens(x, 0.1)
    q = round(0.9 * 65536) / 65536
    kept = y != 0
    assert 0.8 < kept.float().mean().item() < 0.97
    # the product in fp32 (the op's arithmetic for both dtypes), rounded once to the tensor's dtype
    expect = (x.detach().float() * torch.tensor(1 / q, dtype=torch.float32)).to(dtype)
    assert torch.equal(y.detach()[kept], expect[kept])
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept) and torch.equal(x.grad[kept], torch.full_like(x.grad[kept], 1 / q))


def test_fast_masks_are_seeded_and_change_only_what_dropout_touches(setup):
    s = _for(setup, "fedavg-lora", dropout_masks="fast")
    first, again = _rounds(s, batched_training)[0], _rounds(s, batched_training)[0]
    exact = _rounds(_for(setup, "fedavg-lora"), batched_training)[0]
    for a, b, e in zip(first[0], again[0], exact[0]):
        _assert_close(a.tensors, b.tensors, f"fast masks, client {a.client}, run twice")
        differs = any(not torch.allclose(a.tensors[n][f], e.tensors[n][f], atol=ATOL) for n in a.tensors
                      for f in a.tensors[n])
        assert differs, "fast masks should not replay the exact (one-by-one) bits"
    assert all(torch.isfinite(x).all() for named in first[2].layers.values() for x in named.values())


def test_cpu_runs_bound_the_matmul_cache_unless_the_user_chose(monkeypatch):
    import os

    from rolora.llm.host_memory import MATMUL_CACHE

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    build(load_config(None, TINY["roberta"] + COMMON))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == MATMUL_CACHE
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    build(load_config(None, TINY["roberta"] + COMMON))
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"


@pytest.mark.parametrize("spec", ["fedavg-lora", "flexlora"])
def test_clients_split_into_several_stacks_still_equal_sequential(setup, spec, monkeypatch):
    from rolora.llm import adapter_layer

    # ranks 2 (or mixed 1-3): one or two clients a stack, whatever the dtype
    monkeypatch.setattr(adapter_layer, "STACKED_RANK", {})
    monkeypatch.setattr(adapter_layer, "STACKED_RANK_DEFAULT", 3)
    s = _for(setup, spec)
    (u_seq, _, g_seq), = _rounds(s, sequential_training)
    (u_bat, _, g_bat), = _rounds(s, batched_training)
    for a, b in zip(u_seq, u_bat):
        _assert_close(a.tensors, b.tensors, f"{spec} upload {a.client}")
    _assert_close(g_seq.layers, g_bat.layers, f"{spec} state")


def test_the_block_scale_gives_each_row_its_own_clients_columns():
    from rolora.llm.adapter_layer import Rows

    rows = Rows.of([4, 4, 1, 7, 7, 7])
    mask = rows.block_scale(rows.segments, [2, 1, 3], 6.0, torch.float32, "cpu")
    expected = torch.tensor([[3, 3, 0, 0, 0, 0]] * 2 + [[0, 0, 6, 0, 0, 0]] + [[0, 0, 0, 2, 2, 2]] * 3,
                            dtype=torch.float32)
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("keys", [8, 16, 30, 32, 45])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_attention_softmax_equals_torch_s_up_to_one_rounding(keys, dtype):
    from rolora.llm.model_dropouts import softmax_last

    w = (torch.randn(3, 4, 7, keys) * 4).to(dtype).requires_grad_()
    got = softmax_last(w)
    assert got.dtype == dtype and got.shape == w.shape
    exact = torch.softmax(w.detach().double(), dim=-1)
    ulp = {torch.float32: 1e-6, torch.bfloat16: 2 ** -8}[dtype]  # one rounding of values ≤ 1
    assert (got.detach().double() - exact).abs().max().item() <= ulp
    g = torch.randn_like(got)
    (got * g).sum().backward()
    ref = w.detach().double().requires_grad_()
    (torch.softmax(ref, dim=-1) * g.double()).sum().backward()
    assert torch.allclose(w.grad.double(), ref.grad, atol=4 * ulp * g.abs().max().item())


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_head_lr_takes_effect_and_both_paths_still_agree(setup, optimizer):
    """train.head_lr steps the head at its own rate (adapters untouched by it), in both paths alike."""
    same = _for(setup, "fedavg-lora", optimizer=optimizer, momentum=0.9)
    other = _for(setup, "fedavg-lora", optimizer=optimizer, momentum=0.9, head_lr=5 * same.config.train.lr)
    starts = client_starts(same.method, same.initial_state(), [0, 1, 2])
    default = sequential_training(same)(1, starts)
    seq, bat = sequential_training(other)(1, starts), batched_training(other)(1, starts)
    for a, b, d, start in zip(seq, bat, default, starts):
        _assert_close(a.tensors, b.tensors, "head_lr: adapters, batched vs sequential")
        _assert_close(dict(a.dense), dict(b.dense), "head_lr: head, batched vs sequential")
        # Only the head's rate changed: its step from the start is larger than at the default rate.
        for key, x in start.dense.items():
            moved, moved_default = (a.dense[key] - x).abs().sum(), (d.dense[key] - x).abs().sum()
            assert moved > 2 * moved_default, key
    explicit = _for(setup, "fedavg-lora", optimizer=optimizer, momentum=0.9, head_lr=same.config.train.lr)
    for a, b in zip(default, sequential_training(explicit)(1, starts)):  # 0 means "the same as lr"
        _assert_close(a.tensors, b.tensors, "head_lr = lr")
        _assert_close(dict(a.dense), dict(b.dense), "head_lr = lr")


def test_head_lr_follows_the_lr_schedule():
    from rolora.llm.local_training import head_learning_rate, learning_rate

    c = load_config(None, ["train.lr=1e-3", "train.head_lr=4e-3", "train.warmup_rounds=2", "federated.rounds=6",
                           "train.schedule=cosine"])
    for t in range(1, 7):
        assert head_learning_rate(c, t) == pytest.approx(4 * learning_rate(c, t))
    with pytest.raises(ConfigError, match="train.head_lr"):
        load_config(None, ["train.head_lr=-1"])


def _without_dropout(setup, spec, monkeypatch):
    for m in setup.model.modules():
        if isinstance(m, torch.nn.Dropout):
            monkeypatch.setattr(m, "p", 0.0)
    s = _for(setup, spec, dropout_masks="fast")
    s = dataclasses.replace(s, config=dataclasses.replace(s.config, lora=dataclasses.replace(s.config.lora, dropout=0.0)))
    for module in s.adapters.values():
        monkeypatch.setattr(module, "dropout", 0.0)
    return s


@pytest.mark.parametrize("setup", ["roberta"], indirect=True)  # an encoder classifier (a decoder reads every token)
@pytest.mark.parametrize("spec", ["fedavg-lora", "rolora"])
def test_the_first_token_top_block_gives_the_whole_block_s_numbers(setup, spec, monkeypatch):
    """Per-pass masks compute an encoder classifier's top block at the first token only; with every
    dropout off (so both draw nothing) it trains exactly as the whole block does."""
    from rolora.llm import batched_training as bt
    from rolora.llm.first_token_top import applies

    assert applies(setup.model, setup.config.model.task)
    s = _without_dropout(setup, spec, monkeypatch)
    calls = []
    real = bt.first_token_top_block

    def counted(model):
        calls.append(1)
        return real(model)

    monkeypatch.setattr(bt, "first_token_top_block", counted)
    monkeypatch.setattr(bt, "UNPADDED_BLOCKS", False)  # the padded layout's first-token block (as compiled passes use)
    fast = _rounds(s, batched_training)
    assert calls, "the first-token top block was not used"
    monkeypatch.setattr(bt, "FIRST_TOKEN_TOP", False)
    whole = _rounds(s, batched_training)
    _assert_same_rounds(whole, fast, spec)


def _assert_same_rounds(reference, other, spec):
    """Two ``_rounds`` results: the same uploads, heads, train losses and aggregated states."""
    for (u_ref, r_ref, g_ref), (u_other, r_other, g_other) in zip(reference, other):
        for a, b in zip(u_ref, u_other):
            _assert_close(a.tensors, b.tensors, f"{spec} upload {a.client}")
            _assert_close(dict(a.dense), dict(b.dense), f"{spec} head {a.client}")
        for a, b in zip(r_ref, r_other):
            assert b.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], rel=1e-6)
        _assert_close(g_ref.layers, g_other.layers, f"{spec} state")


@pytest.mark.parametrize("setup", ["roberta"], indirect=True)  # a BERT/RoBERTa encoder
@pytest.mark.parametrize("first_token", [False, True])
@pytest.mark.parametrize("spec", ["fedavg-lora", "rolora", "ffa-lora"])
def test_unpadded_blocks_give_the_padded_blocks_numbers(setup, spec, first_token, monkeypatch):
    """Per-pass masks run an encoder's blocks on the real tokens only; with every dropout off it
    trains as the padded blocks do (mixed lengths in every pass: a token budget of 64)."""
    from rolora.llm import batched_training as bt
    from rolora.llm.unpadded_blocks import applies

    assert applies(setup.model)
    s = _without_dropout(setup, spec, monkeypatch)
    monkeypatch.setattr(bt, "FIRST_TOKEN_TOP", first_token)
    passes = []
    real = bt.unpadded_blocks

    def counted(*args, **kwargs):
        context = real(*args, **kwargs)
        state = context.__enter__()
        begin = state.begin_pass
        state.begin_pass = lambda mask: (passes.append(int((mask == 0).sum())), begin(mask))
        return _Entered(context, state)

    monkeypatch.setattr(bt, "unpadded_blocks", counted)
    unpadded = _rounds(s, batched_training)
    assert passes and sum(passes) > 0, "no pass ran unpadded with padding to leave out"
    monkeypatch.setattr(bt, "UNPADDED_BLOCKS", False)
    padded = _rounds(s, batched_training)
    _assert_same_rounds(padded, unpadded, spec)


class _Entered:
    """An entered context manager handed back as one (so a test can wrap what a context yields)."""

    def __init__(self, context, state):
        self.context, self.state = context, state

    def __enter__(self):
        return self.state

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)


def test_packing_moves_real_tokens_and_refuses_left_padding():
    from rolora.llm.unpadded_blocks import Packing

    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    pack = Packing(mask)
    padded = torch.arange(3 * 4 * 6, dtype=torch.float32).view(3, 4, 6)
    tokens = pack.pack(padded)
    assert tokens.shape == (8, 6)
    assert torch.equal(tokens[3], padded[1, 0]) and torch.equal(tokens[4], padded[2, 0])
    assert torch.equal(pack.unpack(tokens), padded * mask[:, :, None])
    heads = pack.heads(tokens, 2)  # [rows, heads, P, size]
    assert heads.shape == (3, 2, 4, 3) and heads.is_contiguous()
    assert torch.equal(heads[0, 1, 2], padded[0, 2, 3:]) and torch.equal(heads[1, 0, 1], torch.zeros(3))
    assert torch.equal(pack.from_heads(heads), tokens)
    assert pack.first.tolist() == [0, 3, 4]
    assert pack.segments([(5, 0, 2), (1, 2, 3)]) == [(5, 0, 4), (1, 4, 8)]
    with pytest.raises(ValueError, match="right-padded"):
        Packing(torch.tensor([[0, 1, 1], [1, 1, 1]]))
