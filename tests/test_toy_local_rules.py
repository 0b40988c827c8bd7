"""The toy's local training honours the round protocol's LocalRules: FedProx's pull, SCAFFOLD's
shift and DP-SGD's per-sample clipping and seeded noise; and the federated loop hands each client its
rules and reports ``lr`` and ``steps``."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import rolora.toy.train as toy
from rolora.federated import get_method
from rolora.federated.local_rules import GradCorrection, LocalRules, SamplePrivacy, flat_keys
from rolora.toy.data import load_mnist
from rolora.toy.init_state import initial_state
from rolora.toy.model import make_w_out
from rolora.toy.train import ToyConfig, local_train, run_federated

CFG = ToyConfig(rank=4, alpha=4.0, lr=0.5, local_epochs=1, batch_size=16, optimizer="sgd")


pytestmark = pytest.mark.usefixtures("one_thread")  # bit-exact comparisons: a fixed thread count


def _problem(spec="fedavg-lora", n=40):
    method = get_method(spec)
    start = method.client_start(initial_state(method, rank=4, alpha=4.0, seed=0), 0, None, 1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)
    return method, start, x, y


def _train(method, start, x, y, rules=None, cfg=CFG, client=0):
    new, _ = local_train(method, start, method.trains(1), x, y, cfg, make_w_out(0),
                         torch.Generator().manual_seed(1), rules=rules, t=1, client=client)
    return flat_keys(new)


def _trained(method, start):
    return {k: x.clone() for k, x in flat_keys(start, names=method.trains(1)).items()}


def _distance(after, before):
    return float(torch.sqrt(sum(((after[k] - x) ** 2).sum() for k, x in before.items())))


def test_a_zero_correction_changes_nothing():
    method, start, x, y = _problem()
    zero = GradCorrection(mu=0.0, anchor=_trained(method, start),
                          shift={k: torch.zeros_like(v) for k, v in _trained(method, start).items()})
    plain, ruled = _train(method, start, x, y), _train(method, start, x, y, LocalRules(correction=zero))
    for k in plain:
        assert torch.equal(plain[k], ruled[k]), k


def test_fedprox_keeps_the_client_closer_to_its_start():
    method, start, x, y = _problem()
    cfg = dataclasses.replace(CFG, local_epochs=3)
    before = _trained(method, start)
    free = _distance(_train(method, start, x, y, cfg=cfg), before)
    held = _distance(_train(method, start, x, y, LocalRules(correction=GradCorrection(mu=1.0, anchor=before)),
                            cfg=cfg), before)
    assert 0 < held < free, (held, free)


def test_a_constant_shift_moves_one_sgd_step_by_minus_lr_times_shift():
    method, start, x, y = _problem()
    cfg = dataclasses.replace(CFG, batch_size=64)  # one step over all 40 samples
    g = torch.Generator().manual_seed(5)
    shift = {k: torch.randn(v.shape, generator=g) for k, v in _trained(method, start).items()}
    plain = _train(method, start, x, y, cfg=cfg)
    moved = _train(method, start, x, y, LocalRules(correction=GradCorrection(shift=shift)), cfg=cfg)
    for k, s in shift.items():
        torch.testing.assert_close(moved[k] - plain[k], -cfg.lr * s, atol=1e-5, rtol=0)


def _dp(clip, noise, seed=0):
    return LocalRules(privacy=SamplePrivacy(clip=clip, noise=noise, seed=seed))


def test_dp_sgd_without_clipping_or_noise_is_plain_training():
    method, start, x, y = _problem()
    plain, private = _train(method, start, x, y), _train(method, start, x, y, _dp(clip=1e9, noise=0.0))
    for k in plain:
        torch.testing.assert_close(private[k], plain[k], atol=1e-6, rtol=0)


def test_dp_sgd_noise_is_seeded_per_seed_and_client():
    method, start, x, y = _problem()
    one = _train(method, start, x, y, _dp(clip=1.0, noise=1.0, seed=3))
    again = _train(method, start, x, y, _dp(clip=1.0, noise=1.0, seed=3))
    other_seed = _train(method, start, x, y, _dp(clip=1.0, noise=1.0, seed=4))
    other_client = _train(method, start, x, y, _dp(clip=1.0, noise=1.0, seed=3), client=1)
    for k in one:
        assert torch.equal(one[k], again[k]), k
    for other in (other_seed, other_client):
        assert any(not torch.equal(one[k], other[k]) for k in one)


def test_dp_sgd_clips_every_sample():
    method, start, x, y = _problem()
    clip, steps = 1e-3, math.ceil(40 / CFG.batch_size)
    before = _trained(method, start)
    private = _distance(_train(method, start, x, y, _dp(clip=clip, noise=0.0)), before)
    assert 0 < private <= CFG.lr * clip * steps * (1 + 1e-4)
    assert _distance(_train(method, start, x, y), before) > 10 * CFG.lr * clip * steps  # unclipped: further


def test_galore_takes_dp_sgd():
    method, start, x, y = _problem("fedavg-full")
    cfg = dataclasses.replace(CFG, optimizer="galore", lr=1e-3, galore_rank=4)
    one = _train(method, start, x, y, _dp(clip=1.0, noise=1.0, seed=3), cfg=cfg)
    again = _train(method, start, x, y, _dp(clip=1.0, noise=1.0, seed=3), cfg=cfg)
    other = _train(method, start, x, y, _dp(clip=1.0, noise=1.0, seed=4), cfg=cfg)
    assert all(torch.equal(one[k], again[k]) and bool(torch.isfinite(one[k]).all()) for k in one)
    assert any(not torch.equal(one[k], other[k]) for k in one)


def test_the_loop_hands_clients_their_rules_and_reports_lr_and_steps(monkeypatch):
    """Rules put on the starts reach local training (a tiny DP clip bounds every client's move),
    and every result says its lr and step count."""
    clip, seen = 1e-4, []
    real = toy.run_round

    def with_rules(method, state, clients, train, *args, **kwargs):
        def ruled(t, starts):
            starts = [dataclasses.replace(s, rules=_dp(clip=clip, noise=0.0)) for s in starts]
            results = train(t, starts)
            seen.extend(zip(starts, results))
            return results

        return real(method, state, clients, ruled, *args, **kwargs)

    monkeypatch.setattr(toy, "run_round", with_rules)
    cfg = ToyConfig(method="fedavg-lora", split="iid", num_clients=2, rounds=1, subsample=0.004, local_epochs=2,
                    batch_size=32, seed=1)
    run_federated(cfg, load_mnist())
    assert len(seen) == 2
    for start, result in seen:
        steps = result.metrics["steps"]
        assert result.metrics["lr"] == cfg.lr
        assert steps == cfg.local_epochs * math.ceil(result.num_samples / cfg.batch_size) and steps > 2
        moved = _distance(flat_keys(result.tensors), flat_keys(start.tensors, names=start.trainable))
        assert 0 < moved <= cfg.lr * clip * steps * (1 + 1e-4)
