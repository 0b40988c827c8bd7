"""Server optimisers, FedProx, SCAFFOLD and client-level DP composed with the LoRA rules (core level).

Local training here is exact gradient descent on a per-client quadratic, ½‖w − w*_k‖² for every
trained tensor (w*_k seeded, different per client: the clients drift apart), so SCAFFOLD and FedProx
act on real gradients. Layers are non-square (d ≠ n).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rolora.federated import AggregationError, LayerSpec, get_method
from rolora.federated.additions import Additions, support_row
from rolora.federated.composed import CTL, Composed, compose
from rolora.federated.local_rules import DENSE, flat_keys
from rolora.federated.round import ClientResult, client_starts, client_uploads, one_by_one, run_round
from rolora.federated.seeding import derive_seed
from rolora.federated.serial import kept_from_flat, kept_to_flat, state_from_flat, state_to_flat
from rolora.federated.server_opt import ServerOptimizer

SPECS = {"q": LayerSpec(out_features=7, in_features=5), "v": LayerSpec(out_features=3, in_features=6)}
AVERAGING = ["fedavg-lora", "ffa-lora", "rolora", "fedsa-lora", "fedavg-full"]
N = 4
STEPS, LR = 3, 0.2


def target(x: torch.Tensor, k, key) -> torch.Tensor:
    g = torch.Generator().manual_seed(derive_seed(11, "target", k, *key))
    return torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype)


def quadratic_training(method):
    """K steps of gradient descent on ½‖w − w*_k‖², honouring the start's rules (a correction)."""

    def train(t, start):
        trained = method.trains(t)
        tensors = {layer: {n: x.clone() for n, x in named.items()} for layer, named in start.tensors.items()}
        dense = {n: x.clone() for n, x in start.dense.items()}
        params = flat_keys(tensors, dense, trained)
        for _ in range(STEPS):
            for key, w in params.items():
                w.grad = w - target(w, start.client, key)
            if start.rules is not None and start.rules.correction is not None:
                start.rules.correction.add_to(params)
            for w in params.values():
                w.sub_(LR * w.grad)
                w.grad = None
        return ClientResult(tensors=tensors, num_samples=float(1 + start.client), dense=dense,
                            metrics={"steps": STEPS, "lr": LR})

    return one_by_one(train)


def play(method, rounds, weighting="samples", state=None, kept=None, fraction=1.0):
    state = state or method.init(SPECS, ranks=3, alpha=6.0, seed=0, dtype=torch.float64,
                                 dense={"head": torch.zeros(2, 5, dtype=torch.float64)})
    kept = dict(kept or {})
    for _ in range(rounds):
        r = run_round(method, state, N, quadratic_training(method), kept, weighting=weighting, fraction=fraction)
        state, kept = r.state, r.kept
    return state, kept


def same_model(a, b, atol=1e-10):
    for layer in a.layers:
        for n, x in a.layers[layer].items():
            if not n.startswith(CTL):
                torch.testing.assert_close(x, b.layers[layer][n], atol=atol, rtol=0)
    for n, x in a.dense.items():
        if not n.startswith(CTL):
            torch.testing.assert_close(x, b.dense[n], atol=atol, rtol=0)


# ----------------------------------------------------------------------------- degenerate settings are FedAvg
DEGENERATE = {
    "fedavgm momentum 0, lr 1": Additions(server_opt=ServerOptimizer("fedavgm", lr=1.0, momentum=0.0)),
    "fedadam beta1 0, beta2 1, lr = tau": Additions(server_opt=ServerOptimizer("fedadam", lr=0.5, beta1=0.0, beta2=1.0, tau=0.5)),
    "fedyogi beta1 0, beta2 1, lr = tau": Additions(server_opt=ServerOptimizer("fedyogi", lr=0.5, beta1=0.0, beta2=1.0, tau=0.5)),
    "fedadagrad beta1 0, lr = tau = 1e8": Additions(server_opt=ServerOptimizer("fedadagrad", lr=1e8, beta1=0.0, tau=1e8)),
    "fedprox mu 0": Additions(prox_mu=0.0, scaffold=False, server_opt=ServerOptimizer("fedavgm", lr=1.0, momentum=0.0)),
}


@pytest.mark.parametrize("name", AVERAGING)
@pytest.mark.parametrize("setting", DEGENERATE)
def test_degenerate_server_settings_are_fedavg(name, setting):
    plain = get_method(name)
    composed = compose(get_method(name), DEGENERATE[setting])
    assert isinstance(composed, Composed)
    same_model(play(composed, 4)[0], play(plain, 4)[0], atol=1e-7)


@pytest.mark.parametrize("name", AVERAGING)
def test_dp_with_infinite_clip_and_zero_noise_is_fedavg(name):
    a = Additions(dp="client", dp_clip=math.inf, dp_noise=0.0, clients=N)
    state, _ = play(compose(get_method(name), a, "uniform"), 3, weighting="uniform")
    same_model(state, play(get_method(name), 3, weighting="uniform")[0], atol=0)
    assert state.extras["privacy"]["epsilon"] is None  # no noise: no privacy (ε = ∞)


@pytest.mark.parametrize("name", [n for n in AVERAGING if n != "fedsa-lora"])
def test_scaffold_with_zero_control_variates_is_fedavg(name):
    """Round 1 starts from c = c_k = 0: exactly FedAvg's round; later rounds differ (the clients drift)."""
    composed = compose(get_method(name), Additions(scaffold=True, clients=N))
    plain = get_method(name)
    same_model(play(composed, 1)[0], play(plain, 1)[0], atol=0)
    with pytest.raises(AssertionError):
        same_model(play(composed, 3)[0], play(plain, 3)[0], atol=1e-9)


def test_fedprox_pulls_clients_toward_their_start():
    plain = play(get_method("fedavg-full"), 1)[0]
    prox = play(compose(get_method("fedavg-full"), Additions(prox_mu=5.0)), 1)[0]
    assert prox.layers["q"]["W"].norm() < 0.5 * plain.layers["q"]["W"].norm()  # W starts at 0


# ----------------------------------------------------------------------------- SCAFFOLD against a slow reference
def reference_scaffold(rounds):
    """SCAFFOLD (option II) on full-rank W and the head, written out plainly: c, c_k, uniform server mean."""
    x = {key: torch.zeros(SPECS[key[0]].out_features, SPECS[key[0]].in_features, dtype=torch.float64)
         for key in [("q", "W"), ("v", "W")]}
    x[(DENSE, "head")] = torch.zeros(2, 5, dtype=torch.float64)
    c = {key: torch.zeros_like(v) for key, v in x.items()}
    ck = {k: {key: torch.zeros_like(v) for key, v in x.items()} for k in range(N)}
    for _ in range(rounds):
        ys, dcs = {}, {}
        for k in range(N):
            y = {key: v.clone() for key, v in x.items()}
            for _ in range(STEPS):
                for key in y:
                    y[key] = y[key] - LR * ((y[key] - target(y[key], k, key)) + c[key] - ck[k][key])
            new_ck = {key: ck[k][key] - c[key] + (x[key] - y[key]) / (STEPS * LR) for key in x}
            dcs[k] = {key: new_ck[key] - ck[k][key] for key in x}
            ck[k], ys[k] = new_ck, y
        weights = [(1 + k) / sum(1 + j for j in range(N)) for k in range(N)]
        x = {key: sum(w * ys[k][key] for k, w in zip(range(N), weights)) for key in x}
        c = {key: c[key] + sum(dcs[k][key] for k in range(N)) / N for key in x}
    return x, c


def test_scaffold_matches_a_plain_reference():
    state, kept = play(compose(get_method("fedavg-full"), Additions(scaffold=True, clients=N)), 3)
    x, c = reference_scaffold(3)
    for layer in SPECS:
        torch.testing.assert_close(state.layers[layer]["W"], x[(layer, "W")])
        torch.testing.assert_close(state.layers[layer][CTL + "W"], c[(layer, "W")])
    torch.testing.assert_close(state.dense["head"], x[(DENSE, "head")])
    torch.testing.assert_close(state.layers[DENSE][CTL + "head"], c[(DENSE, "head")])
    # full participation: the server's c is the mean of the clients' c_k (option II keeps it so)
    mean_ck = sum(kept[k]["q"][CTL + "W"] for k in range(N)) / N
    torch.testing.assert_close(state.layers["q"][CTL + "W"], mean_ck)


def test_scaffold_on_rolora_keeps_one_control_variate_per_factor():
    method = compose(get_method("rolora"), Additions(scaffold=True, clients=N))
    s1, k1 = play(method, 1)  # round 1 trains B: only c_B moves
    assert torch.count_nonzero(s1.layers["q"][CTL + "A"]) == 0 and torch.count_nonzero(s1.layers["q"][CTL + "B"]) > 0
    s2, k2 = play(method, 1, state=s1, kept=k1)  # round 2 trains A: c_B stays, c_A moves
    assert torch.equal(s2.layers["q"][CTL + "B"], s1.layers["q"][CTL + "B"])
    assert torch.count_nonzero(s2.layers["q"][CTL + "A"]) > 0
    assert torch.equal(k2[0]["q"][CTL + "B"], k1[0]["q"][CTL + "B"])


def test_scaffold_upload_is_counted():
    plain, composed = get_method("ffa-lora"), compose(get_method("ffa-lora"), Additions(scaffold=True, clients=N))
    a = plain.communication(SPECS, 3, 1, clients=[0, 1])
    b = composed.communication(SPECS, 3, 1, clients=[0, 1], dense_params=0)
    per_b = sum(s.out_features * 3 for s in SPECS.values())
    assert b.upload_params == a.upload_params + per_b
    assert b.download_params == a.download_params + per_b


# ----------------------------------------------------------------------------- server optimiser on RoLoRA
def test_server_optimiser_keeps_one_state_per_factor_on_rolora():
    method = compose(get_method("rolora"), Additions(server_opt=ServerOptimizer("fedadam", lr=0.05)))
    s1, k1 = play(method, 1)  # B round
    assert set(s1.server["q"]) == {"B.m", "B.v"}
    s2, _ = play(method, 1, state=s1, kept=k1)  # A round: B and its moments untouched
    assert torch.equal(s2.layers["q"]["B"], s1.layers["q"]["B"])
    assert torch.equal(s2.server["q"]["B.m"], s1.server["q"]["B.m"])
    assert set(s2.server["q"]) == {"A.m", "A.v", "B.m", "B.v"}
    assert set(s2.server[DENSE]) == {"head.m", "head.v"}


# ----------------------------------------------------------------------------- client-level DP
def uploads_of(method, state, weighting="uniform"):
    starts = client_starts(method, state, list(range(N)))
    updates, *_ = client_uploads(method, 1, starts, quadratic_training(method)(1, starts))
    return starts, updates


@pytest.mark.parametrize("name", AVERAGING)
def test_client_dp_clipping_bounds_every_contribution(name):
    clip = 0.3
    method = compose(get_method(name), Additions(dp="client", dp_clip=clip, dp_noise=0.0, clients=N), "uniform")
    state = method.init(SPECS, 3, 6.0, 0, dtype=torch.float64, dense={"head": torch.zeros(2, 5, dtype=torch.float64)})
    starts, updates = uploads_of(method, state)
    for start, u in zip(starts, updates):
        d2 = sum(float(((x - start.tensors[layer][n]) ** 2).sum()) for layer, named in u.tensors.items()
                 for n, x in named.items())
        d2 += sum(float(((x - start.dense[n]) ** 2).sum()) for n, x in u.dense.items())
        assert math.sqrt(d2) <= clip * (1 + 1e-9)
        assert math.sqrt(d2) > 0.99 * clip  # these updates are far larger than the clip


def noise_std(method_fn, draws=40):
    """The sample std of the aggregate's deviation from the noiseless aggregate, over seeds."""
    devs = []
    for seed in range(draws):
        noisy, quiet = method_fn(1.5), method_fn(0.0)
        s = noisy.init(SPECS, 3, 6.0, seed, dtype=torch.float64, dense={"head": torch.zeros(2, 5, dtype=torch.float64)})
        _, updates = uploads_of(noisy, s)
        devs.append((noisy.aggregate(s, updates, 1, "uniform").layers["q"]["W"]
                     - quiet.aggregate(s, updates, 1, "uniform").layers["q"]["W"]).flatten())
    return float(torch.cat(devs).std())


def test_client_dp_noise_has_the_stated_std():
    """std of the mean's noise = σ·clip/m (m = 4 clients): 1.5·0.3/4. 1,400 draws: ±6 % is > 3 SE."""
    make = lambda sigma: compose(get_method("fedavg-full"),
                                 Additions(dp="client", dp_clip=0.3, dp_noise=sigma, clients=N), "uniform")
    assert noise_std(make) == pytest.approx(1.5 * 0.3 / N, rel=0.06)


def test_a_broken_noise_rule_is_caught(monkeypatch):
    """The same check on a rule that forgets to divide by m: it must fail."""
    original = Composed._noised

    def broken(self, new, averaged, members, t):
        return original(self, new, averaged, 1, t)

    monkeypatch.setattr(Composed, "_noised", broken)
    make = lambda sigma: compose(get_method("fedavg-full"),
                                 Additions(dp="client", dp_clip=0.3, dp_noise=sigma, clients=N), "uniform")
    assert noise_std(make) != pytest.approx(1.5 * 0.3 / N, rel=0.06)


def test_client_dp_reports_epsilon_that_grows():
    method = compose(get_method("rolora"), Additions(dp="client", dp_clip=0.5, dp_noise=1.0, clients=8), "uniform")
    s1, k1 = play(method, 1, weighting="uniform")
    s3, _ = play(method, 2, weighting="uniform", state=s1, kept=k1)
    e1, e3 = s1.extras["privacy"]["epsilon"], s3.extras["privacy"]["epsilon"]
    assert 0 < e1 < e3 and s3.extras["privacy"]["history"] == [[1.0, 0.5, 3]]


# ----------------------------------------------------------------------------- refusals before anything runs
@pytest.mark.parametrize("name", ["flexlora", "flora", "fedex-lora", "lora-fair", "fed-alora"])
def test_server_optimiser_and_client_dp_refuse_non_averages(name):
    with pytest.raises(AggregationError, match=f"server optimiser fedadam with {name}"):
        compose(get_method(name), Additions(server_opt=ServerOptimizer("fedadam")))
    with pytest.raises(AggregationError, match=f"client-level DP with {name}"):
        compose(get_method(name), Additions(dp="client", clients=3), "uniform")
    assert isinstance(compose(get_method(name), Additions(prox_mu=0.1)), Composed)  # local-only: fine


def test_refusals_name_what_is_wrong():
    with pytest.raises(AggregationError, match="federated.weighting = uniform"):
        compose(get_method("rolora"), Additions(dp="client", clients=3), "samples")
    with pytest.raises(AggregationError, match="SCAFFOLD with fedsa-lora"):
        compose(get_method("fedsa-lora"), Additions(scaffold=True, clients=3))
    with pytest.raises(AggregationError, match="clients"):
        Additions(scaffold=True)
    assert compose(get_method("rolora"), Additions()).__class__.__name__ == "RoLoRA"  # nothing added: itself


def test_support_table_follows_the_rule():
    assert support_row(get_method("rolora"))["server optimiser"].startswith("A, B")
    assert support_row(get_method("flexlora"))["server optimiser"] == "—"
    assert support_row(get_method("fedsa-lora"))["SCAFFOLD"] == "—"


# ----------------------------------------------------------------------------- state survives files
def test_resume_is_bit_exact_with_every_addition():
    a = Additions(server_opt=ServerOptimizer("fedyogi", lr=0.05), prox_mu=0.1, scaffold=True, dp="client",
                  dp_clip=0.5, dp_noise=0.7, clients=N)
    method = compose(get_method("rolora"), a, "uniform")
    whole, whole_kept = play(method, 4, weighting="uniform")
    half, half_kept = play(method, 2, weighting="uniform")
    half = state_from_flat(*state_to_flat(half))
    half_kept = kept_from_flat(*kept_to_flat(half_kept))
    resumed, resumed_kept = play(method, 2, weighting="uniform", state=half, kept=half_kept)
    assert state_to_flat(resumed)[1] == state_to_flat(whole)[1]
    for (k1, x), (k2, y) in zip(sorted(state_to_flat(resumed)[0].items()), sorted(state_to_flat(whole)[0].items())):
        assert k1 == k2 and torch.equal(x, y), k1
    for k in range(N):
        for layer in whole_kept[k]:
            for n, x in whole_kept[k][layer].items():
                assert torch.equal(resumed_kept[k][layer][n], x)


# ----------------------------------------------------------------------------- every method, every addition
ADDITIONS = {
    "fedadam": Additions(server_opt=ServerOptimizer("fedadam", lr=0.01)),
    "fedprox": Additions(prox_mu=0.1),
    "scaffold": Additions(scaffold=True, clients=N),
    "dp-client": Additions(dp="client", dp_clip=0.5, dp_noise=0.5, clients=N),
    "dp-sample": Additions(dp="sample", dp_clip=0.5, dp_noise=0.5, batch_size=4, local_steps=STEPS),
}


@pytest.mark.parametrize("addition", ADDITIONS)
@pytest.mark.parametrize("name", sorted(__import__("rolora.federated", fromlist=["METHODS"]).METHODS))
def test_every_method_takes_or_refuses_every_addition(name, addition):
    from rolora.federated.additions import refusal

    method, a = get_method(name), ADDITIONS[addition]
    why = refusal(method, a, "uniform")
    if why is not None:
        with pytest.raises(AggregationError) as err:
            compose(method, a, "uniform")
        assert name in str(err.value)
        return
    composed = compose(method, a, "uniform")
    ranks = {None: 3} if not method.mixes_ranks else {None: 3, 1: 2}
    state = composed.init(SPECS, ranks, 6.0, 0, dtype=torch.float64, dense={"head": torch.zeros(2, 5, dtype=torch.float64)})
    state, kept = play(composed, 2, weighting="uniform", state=state)
    assert state.round == 2
    if a.dp != "off":
        assert state.extras["privacy"]["epsilon"] > 0
    flat, meta = state_to_flat(state)
    assert state_to_flat(state_from_flat(flat, meta))[1] == meta
