"""The LLM local trainers honour the round protocol's LocalRules (FedProx, SCAFFOLD, DP-SGD) or
refuse them: the sequential reference and the client-batched path, on tiny RoBERTa (whose trained
head is keyed ``(DENSE, "classifier.*")``) and tiny Llama, fp32."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from torch import nn

from test_llm_engine import TINY

from rolora.federated.local_rules import DENSE, GradCorrection, LocalRules, SamplePrivacy, flat_keys
from rolora.federated.round import client_starts
from rolora.llm.batched_training import batched_training
from rolora.llm.config import load_config
from rolora.llm.local_training import sequential_training
from rolora.llm.prepare import build
from rolora.llm.training import local_training

COMMON = ["data.max_train_samples=36", "federated.clients=3", "train.local_steps=2", "train.batch_size=4",
          "lora.rank=2", "lora.alpha=4.0", 'federated.method="fedavg-lora"', 'train.optimizer="sgd"',
          "train.lr=0.1"]
ATOL = 2e-6  # as the batched-vs-sequential parity tests


@pytest.fixture(scope="module")
def roberta():
    """LoRA dropout and the model's own dropout on: what the batched parity must reproduce."""
    return build(load_config(None, TINY["roberta"] + COMMON + ["lora.dropout=0.1"]))


@pytest.fixture(scope="module")
def quiet_roberta():
    """No dropout anywhere, so one sample's pass computes what its row of a batched pass does."""
    setup = build(load_config(None, TINY["roberta"] + COMMON + ["lora.dropout=0.0"]))
    for m in setup.model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return setup


def _with(setup, **train):
    config = dataclasses.replace(setup.config, train=dataclasses.replace(setup.config.train, **train))
    return dataclasses.replace(setup, config=config)


def _starts(setup, rules=None):
    """Round 1's starts for clients 0..2; ``rules(start, i)`` -> that client's LocalRules."""
    starts = client_starts(setup.method, setup.initial_state(), [0, 1, 2])
    return starts if rules is None else [dataclasses.replace(s, rules=rules(s, i)) for i, s in enumerate(starts)]


def _trained(start):
    """{key: start tensor} for every tensor the client trains (adapters' trainable ones and the head)."""
    return {k: x.detach().clone() for k, x in flat_keys(start.tensors, start.dense, start.trainable).items()}


def _shift(start, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(x.shape, generator=g) for k, x in _trained(start).items()}


def _result(result):
    """{key: tensor} of a result, keyed as the rules key them."""
    return flat_keys(result.tensors, result.dense)


def _distance(result, start):
    ends = _result(result)
    return float(torch.sqrt(sum(((ends[k] - x) ** 2).sum() for k, x in _trained(start).items())))


def _assert_equal(a, b, atol=0.0):
    ka, kb = _result(a), _result(b)
    assert ka.keys() == kb.keys()
    for k in ka:
        torch.testing.assert_close(kb[k], ka[k], atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")


def test_a_zero_correction_changes_nothing(roberta):
    starts = _starts(roberta)
    zero = _starts(roberta, lambda s, i: LocalRules(correction=GradCorrection(
        mu=0.0, anchor=_trained(s), shift={k: torch.zeros_like(x) for k, x in _trained(s).items()})))
    assert any(k[0] == DENSE for k in _trained(starts[0]))  # the head is among the corrected tensors
    for train in (sequential_training, batched_training):
        plain, ruled = train(roberta)(1, starts), train(roberta)(1, zero)
        for a, b in zip(plain, ruled):
            _assert_equal(a, b)  # bit-identical


def test_fedprox_keeps_the_client_closer_to_its_start(roberta):
    s = _with(roberta, local_steps=4)

    def distances(mu):
        starts = _starts(s, lambda st, i: LocalRules(correction=GradCorrection(mu=mu, anchor=_trained(st))))
        return [_distance(r, st) for r, st in zip(sequential_training(s)(1, starts), starts)]

    free, held = distances(0.0), distances(5.0)
    assert all(0 < h < f for h, f in zip(held, free)), (held, free)


def test_a_constant_shift_moves_one_sgd_step_by_minus_lr_times_shift(roberta):
    s = _with(roberta, local_steps=1, momentum=0.0, weight_decay=0.0, max_grad_norm=0.0, head_lr=0.3)
    starts = _starts(s)
    shifts = [_shift(st, seed=10 + i) for i, st in enumerate(starts)]
    shifted = _starts(s, lambda st, i: LocalRules(correction=GradCorrection(shift=shifts[i])))
    for train in (sequential_training, batched_training):
        plain, moved = train(s)(1, starts), train(s)(1, shifted)
        for a, b, shift in zip(plain, moved, shifts):
            assert b.metrics["steps"] == 1 and b.metrics["lr"] == pytest.approx(0.1)
            assert b.metrics["head_lr"] == pytest.approx(0.3)  # the head's own lr: its shift moves it by that
            ka, kb = _result(a), _result(b)
            for k, x in shift.items():
                lr = b.metrics["head_lr"] if k[0] == DENSE else b.metrics["lr"]
                torch.testing.assert_close(kb[k] - ka[k], -lr * x, atol=1e-5, rtol=0, msg=lambda m: f"{k}: {m}")


def test_the_correction_goes_in_before_gradient_clipping(roberta):
    """A huge shift is clipped with the gradient: one SGD step moves at most lr·max_grad_norm."""
    s = _with(roberta, local_steps=1, max_grad_norm=0.5)
    starts = _starts(s, lambda st, i: LocalRules(correction=GradCorrection(shift=_shift(st, i, scale=1e3))))
    for train in (sequential_training, batched_training):
        for r, st in zip(train(s)(1, starts), starts):
            assert _distance(r, st) <= 0.1 * 0.5 * (1 + 1e-5)


@pytest.mark.parametrize("family", ["roberta", "llama"])
def test_batched_equals_sequential_with_fedprox_and_a_shift(roberta, family):
    s = roberta if family == "roberta" else build(load_config(None, TINY["llama"] + COMMON + ["lora.dropout=0.1"]))
    s = _with(s, max_grad_norm=0.5, batch_tokens=64)  # clipping on, several passes per step
    starts = _starts(s, lambda st, i: LocalRules(  # every client its own shift: no slot mix-up goes unseen
        correction=GradCorrection(mu=0.5, anchor=_trained(st), shift=_shift(st, seed=i, scale=0.3))))
    seq, bat = sequential_training(s)(1, starts), batched_training(s)(1, starts)
    plain = sequential_training(s)(1, _starts(s))
    for a, b, p in zip(seq, bat, plain):
        _assert_equal(a, b, atol=ATOL)
        assert (a.metrics["steps"], a.metrics["lr"]) == (b.metrics["steps"], b.metrics["lr"]) == (2, 0.1)
        assert max(float((_result(a)[k] - _result(p)[k]).abs().max()) for k in _result(a)) > 100 * ATOL


def _private(clip, noise, seed=0):
    return lambda st, i: LocalRules(privacy=SamplePrivacy(clip=clip, noise=noise, seed=seed))


def test_dp_sgd_without_clipping_or_noise_is_plain_training(quiet_roberta):
    s = _with(quiet_roberta, max_grad_norm=0.0)
    plain = sequential_training(s)(1, _starts(s))
    private = sequential_training(s)(1, _starts(s, _private(clip=1e9, noise=0.0)))
    for a, b in zip(plain, private):
        _assert_equal(a, b, atol=1e-5)
        assert b.metrics["steps"] == 2 and b.metrics["lr"] == pytest.approx(0.1)
        assert b.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], abs=1e-5)


def test_dp_sgd_noise_is_seeded(quiet_roberta):
    s = quiet_roberta
    one = sequential_training(s)(1, _starts(s, _private(clip=1.0, noise=1.0, seed=3)))
    again = sequential_training(s)(1, _starts(s, _private(clip=1.0, noise=1.0, seed=3)))
    other = sequential_training(s)(1, _starts(s, _private(clip=1.0, noise=1.0, seed=4)))
    for a, b, c in zip(one, again, other):
        _assert_equal(a, b)
        assert any(not torch.equal(x, _result(c)[k]) for k, x in _result(a).items())


def test_dp_sgd_clips_every_sample(quiet_roberta):
    """Each sample's gradient is clipped to ``clip``: their mean, hence one SGD step, to lr·clip,
    whatever max_grad_norm says (per-sample clipping replaces it)."""
    s = _with(quiet_roberta, momentum=0.0, max_grad_norm=100.0)
    clip, lr, steps = 1e-3, 0.1, 2
    starts = _starts(s, _private(clip=clip, noise=0.0))
    plain = sequential_training(s)(1, _starts(s))
    for r, p, st in zip(sequential_training(s)(1, starts), plain, starts):
        assert 0 < _distance(r, st) <= lr * clip * steps * (1 + 1e-4)
        assert _distance(p, st) > 10 * lr * clip * steps  # unclipped training moves much further


def test_the_batched_trainer_refuses_dp_sgd_and_the_chooser_trains_such_rounds_one_by_one(quiet_roberta, caplog):
    s = quiet_roberta
    starts = _starts(s, _private(clip=1.0, noise=1.0))
    with pytest.raises(ValueError, match="client-batched trainer.*DP-SGD"):
        batched_training(s)(1, starts)
    assert s.config.train.client_batching == "auto"
    reference = sequential_training(s)(1, starts)
    with caplog.at_level(logging.INFO, logger="rolora.llm"):
        train = local_training(s)
        chosen, again = train(1, starts), train(1, starts)
    for a, b, c in zip(reference, chosen, again):
        _assert_equal(a, b)
        _assert_equal(a, c)
    assert sum("DP-SGD trains clients one by one" in r.getMessage() for r in caplog.records) == 1
