"""Client workers (``train.client_workers``, ``llm/client_workers.py``): a round's client groups trained
at the same time by threads, each on its own replica of the model.

What must hold: the concurrent round equals its definition run in one thread (each worker's share
trained alone, passes at ``batch_tokens / workers``), whatever the thread count; with exact masks it
still equals one-by-one training; the replicas share the frozen weights and nothing else that a
pass changes; errors surface in the caller; the config refuses what cannot run.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_llm_batched import ATOL, COMMON, _assert_close, _for, _rounds
from test_llm_engine import TINY

from rolora.federated.round import client_starts
from rolora.llm.adapter_layer import NotBatchable
from rolora.llm.batched_training import batched_training, train_group
from rolora.llm.client_workers import Workers, WorkersChoice, choose_workers, replicate, split
from rolora.llm.config import ConfigError, load_config
from rolora.llm.local_training import head_learning_rate, learning_rate, sequential_training
from rolora.llm.prepare import build

CLIENTS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module", params=["roberta", "llama"])
def setup(request):
    return build(load_config(None, TINY[request.param] + COMMON + ["federated.clients=5", "data.max_train_samples=60"]))


def _with_workers(setup, spec: str, count: int, **train):
    s = _for(setup, spec, client_workers=count, **train)
    assert s.workers.count == count
    return s


def _one_thread_definition(s, starts, t: int):
    """What two workers compute, by definition: each share trained alone, passes at half the budget."""
    c = s.config
    lr, head_lr = learning_rate(c, t), head_learning_rate(c, t)
    return [r for share in split(starts, 2)
            for r in train_group(s, share, lr, head_lr, None, c.train.batch_tokens // 2)]


@given(n=st.integers(0, 40), parts=st.integers(1, 8))
def test_split_keeps_order_and_sizes_within_one(n, parts):
    out = split(list(range(n)), parts)
    assert len(out) == parts and [x for p in out for x in p] == list(range(n))
    sizes = [len(p) for p in out]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("masks", ["fast", "exact"])
def test_two_workers_equal_their_one_thread_definition_at_any_thread_count(setup, masks):
    s = _with_workers(setup, "rolora", 2, dropout_masks=masks)
    starts = client_starts(s.method, s.initial_state(), CLIENTS)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a worker's share of two threads
    try:
        want = _one_thread_definition(s, starts, 1)
    finally:
        torch.set_num_threads(before)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            got = batched_training(s)(1, starts)
        finally:
            torch.set_num_threads(before)
        assert torch.get_num_threads() == before
        for a, b in zip(want, got):
            _assert_close(a.tensors, b.tensors, f"{masks} masks, {threads} thread(s)")
            _assert_close(dict(a.dense), dict(b.dense), f"{masks} masks, head")
            assert b.metrics["train_loss"] == a.metrics["train_loss"]


def test_the_grouping_is_the_config_s_and_it_shows_with_fast_masks(setup):
    """Not vacuous: one worker (one pass layout) gives other fast-mask numbers than two."""
    starts = client_starts(setup.method, setup.initial_state(), CLIENTS)
    one = batched_training(_with_workers(setup, "fedavg-lora", 1, dropout_masks="fast"))(1, starts)
    two = batched_training(_with_workers(setup, "fedavg-lora", 2, dropout_masks="fast"))(1, starts)
    layer = next(iter(one[0].tensors))
    assert (one[0].tensors[layer]["B"] - two[0].tensors[layer]["B"]).abs().max() > 100 * ATOL


@pytest.mark.parametrize("spec", ["rolora", "fedavg-lora", "ffa-lora"])
def test_two_workers_with_exact_masks_equal_one_by_one_training(setup, spec):
    s = _with_workers(setup, spec, 2)
    (u_seq, r_seq, g_seq), *_ = _rounds(s, sequential_training)
    (u_bat, r_bat, g_bat), *_ = _rounds(s, batched_training)
    for a, b in zip(u_seq, u_bat):
        _assert_close(a.tensors, b.tensors, f"{spec} upload {a.client}")
    _assert_close(g_seq.layers, g_bat.layers, f"{spec} state")


def test_a_replica_shares_the_frozen_weights_and_owns_what_a_pass_changes(setup):
    copy = replicate(setup)
    assert copy.model is not setup.model and copy.config is setup.config
    frozen = {id(p) for p in setup.model.parameters() if not p.requires_grad}
    assert frozen and frozen <= {id(p) for p in copy.model.parameters()}
    trained = [p for p in setup.model.parameters() if p.requires_grad]
    assert all(id(p) not in {id(q) for q in copy.model.parameters()} for p in trained)
    assert copy.adapters.keys() == setup.adapters.keys()
    own = dict(copy.model.named_modules())
    for name, module in copy.adapters.items():
        assert module is not setup.adapters[name] and any(module is m for m in own.values()), name
    assert copy.model.config is not setup.model.config  # the attention switch is per model


def test_an_error_in_one_worker_reaches_the_caller_after_both_end(setup):
    ended, before = [], torch.get_num_threads()

    def job(own, part):
        ended.append(threading.current_thread().name)
        if part == "bad":
            raise RuntimeError("worker failed on purpose")
        return [part]

    workers = Workers(setup, 2)
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="on purpose"):
            workers.run(job, ["good", "bad"])
        assert len(ended) == 2 and torch.get_num_threads() == 2
        assert all(name.startswith("rolora-client-worker-") for name in ended)
        assert workers.run(job, ["a", "b"]) == [["a"], ["b"]]
        with pytest.raises(ValueError, match="3 parts for 2 workers"):
            workers.run(job, ["a", "b", "c"])
    finally:
        torch.set_num_threads(before)


def test_one_intra_op_thread_runs_the_parts_in_turn_in_the_caller(setup):
    """No oversubscription where the process has one thread (a sweep's parallel cells)."""
    seen, before = [], torch.get_num_threads()
    workers = Workers(setup, 2)
    torch.set_num_threads(1)
    try:
        out = workers.run(lambda own, part: seen.append((part, threading.current_thread().name, own is setup))
                          or [part], ["a", "b"])
    finally:
        torch.set_num_threads(before)
    assert out == [["a"], ["b"]]
    assert seen == [("a", threading.current_thread().name, True), ("b", threading.current_thread().name, True)]


def test_a_group_the_batched_path_refuses_is_trained_one_by_one_in_the_caller(setup, monkeypatch):
    import rolora.llm.batched_training as bt

    s = _with_workers(setup, "fedavg-lora", 2)
    starts = client_starts(s.method, s.initial_state(), CLIENTS)
    want = sequential_training(s)(1, starts)
    real_group, real_client, seen = bt.train_group, bt.reference.train_client, []

    def refuse_second_share(own, group, *args):
        if group[0].client == 3:
            raise NotBatchable("planted")
        return real_group(own, group, *args)

    def one(own, start, *args):
        seen.append((start.client, own is s, threading.current_thread() is threading.main_thread()))
        return real_client(own, start, *args)

    monkeypatch.setattr(bt, "train_group", refuse_second_share)
    monkeypatch.setattr(bt.reference, "train_client", one)
    out = batched_training(s)(1, starts)
    assert seen == [(3, True, True), (4, True, True)]
    for k, a, b in zip(CLIENTS, want, out):
        _assert_close(a.tensors, b.tensors, f"client {k}")


def test_auto_is_two_on_a_cpu_and_one_where_a_single_model_is_needed():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    base = load_config(None, TINY["roberta"]).train
    assert choose_workers(base, cpu).count == 2
    assert choose_workers(base, cuda).count == 1
    for change in ({"compile": "inductor", "dropout_masks": "fast"}, {"frozen_prefix": "cache"},
                   {"client_batching": "off"}):
        assert choose_workers(dataclasses.replace(base, **change), cpu).count == 1, change
    assert choose_workers(dataclasses.replace(base, client_workers=3), cpu) == WorkersChoice(3, "train.client_workers")


@pytest.mark.parametrize("change, names", [
    (["train.compile=inductor", 'train.dropout_masks="fast"'], "train.compile"),
    (['train.frozen_prefix="cache"'], "train.frozen_prefix"),
    (['train.client_batching="off"'], "train.client_batching"),
    (['model.device="cuda"'], "model.device"),
])
def test_more_than_one_worker_is_refused_where_it_cannot_run(change, names):
    with pytest.raises(ConfigError, match=rf"train.client_workers: 2 needs {names}"):
        load_config(None, TINY["roberta"] + ["train.client_workers=2"] + change)
