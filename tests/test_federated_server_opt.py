"""Server optimisers (rolora.federated.server_opt): the degenerate settings are FedAvg, and every
rule matches a slow elementwise reference written here in plain Python floats.

Tensors are non-square (d != n): a rule that transposed or reshaped its state would be caught.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rolora.federated import server_opt
from rolora.federated.server_opt import SERVER_OPTIMIZERS, ServerOptimizer, parse_server_optimizer

SETTINGS = settings(max_examples=25, deadline=None)
# Everything below is float64: a few multiply-adds and a square root per entry; 1e-12 is ~1e4 ulps.
RTOL = 1e-12


@st.composite
def shapes(draw) -> tuple[int, int]:
    d = draw(st.integers(1, 9))
    n = draw(st.integers(1, 9).filter(lambda x: x != d))
    return d, n


def random(shape: tuple[int, int], gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(shape, generator=gen, dtype=torch.float64)


def run_rounds(opt: ServerOptimizer, shape, seed: int, rounds: int, clients: int = 3):
    """Each round: clients' models scattered around x, averaged; yields (x before, average, x after)."""
    gen = torch.Generator().manual_seed(seed)
    x, slots = random(shape, gen), {}
    for _ in range(rounds):
        average = torch.stack([x + random(shape, gen, scale=2.0) for _ in range(clients)]).mean(0)
        new, slots = opt.step(x, average - x, slots)
        yield x, average, new
        x = new


@SETTINGS
@given(shape=shapes(), seed=st.integers(0, 2**31 - 1), rounds=st.integers(1, 4))
def test_fedavgm_without_momentum_is_fedavg(shape, seed, rounds):
    for _, average, new in run_rounds(ServerOptimizer("fedavgm", lr=1.0, momentum=0.0), shape, seed, rounds):
        torch.testing.assert_close(new, average, rtol=RTOL, atol=RTOL)


@pytest.mark.parametrize("kind", ["fedadam", "fedyogi"])
@SETTINGS
@given(shape=shapes(), seed=st.integers(0, 2**31 - 1), rounds=st.integers(1, 4), tau=st.floats(1e-4, 1.0))
def test_adam_and_yogi_with_beta2_one_and_lr_tau_are_fedavg(kind, shape, seed, rounds, tau):
    opt = ServerOptimizer(kind, lr=tau, beta1=0.0, beta2=1.0, tau=tau)
    for _, average, new in run_rounds(opt, shape, seed, rounds):
        torch.testing.assert_close(new, average, rtol=RTOL, atol=RTOL)


@SETTINGS
@given(shape=shapes(), seed=st.integers(0, 2**31 - 1), rounds=st.integers(1, 4))
def test_adagrad_with_huge_lr_equal_tau_tends_to_fedavg(shape, seed, rounds):
    # The step is Δ·τ/(√v + τ): relative error √v/τ, here √(rounds·Δ²) ≲ 30 against τ = 1e8.
    opt = ServerOptimizer("fedadagrad", lr=1e8, beta1=0.0, tau=1e8)
    for x, average, new in run_rounds(opt, shape, seed, rounds):
        torch.testing.assert_close(new - x, average - x, rtol=1e-6, atol=1e-12)


# ----- the slow reference: one entry at a time, plain Python floats -----------------------------


def sign(a: float) -> float:
    return float((a > 0) - (a < 0))


def reference_entry(opt: ServerOptimizer, x: float, deltas: list[float]) -> float:
    """x after applying the rule to the deltas in turn, written straight from the paper's formulas."""
    m = v = 0.0
    for d in deltas:
        if opt.kind == "fedavgm":
            m = opt.momentum * m + d
            x = x + opt.lr * m
            continue
        m = opt.beta1 * m + (1 - opt.beta1) * d
        if opt.kind == "fedadam":
            v = opt.beta2 * v + (1 - opt.beta2) * d * d
        elif opt.kind == "fedyogi":
            v = v - (1 - opt.beta2) * d * d * sign(v - d * d)
        else:
            v = v + d * d
        x = x + opt.lr * m / (math.sqrt(v) + opt.tau)
    return x


def matches_reference(opt: ServerOptimizer, x: torch.Tensor, deltas: list[torch.Tensor]) -> bool:
    """Whether opt.step over ``deltas`` (threading the slots) agrees with the reference entrywise."""
    got, slots = x, {}
    for d in deltas:
        got, slots = opt.step(got, d, slots)
    columns = list(zip(*(d.flatten().tolist() for d in deltas)))  # each entry's deltas, in order
    expected = torch.tensor(
        [reference_entry(opt, start, list(ds)) for start, ds in zip(x.flatten().tolist(), columns)], dtype=torch.float64
    ).reshape(x.shape)
    return torch.allclose(got, expected, rtol=RTOL, atol=RTOL)


@st.composite
def optimizers(draw) -> ServerOptimizer:
    kind = draw(st.sampled_from(SERVER_OPTIMIZERS))
    return ServerOptimizer(
        kind,
        lr=draw(st.floats(1e-3, 2.0)),
        momentum=draw(st.floats(0.0, 0.99)),
        beta1=draw(st.floats(0.0, 0.99)),
        beta2=draw(st.floats(0.0, 1.0)),
        tau=draw(st.floats(1e-4, 1.0)),
    )


@settings(max_examples=60, deadline=None)
@given(opt=optimizers(), shape=shapes(), seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 5))
def test_every_rule_matches_the_elementwise_reference(opt, shape, seed, steps):
    gen = torch.Generator().manual_seed(seed)
    assert matches_reference(opt, random(shape, gen), [random(shape, gen) for _ in range(steps)])


def test_the_reference_comparison_catches_a_wrong_yogi_rule(monkeypatch):
    opt = ServerOptimizer("fedyogi", lr=0.05, beta1=0.5, beta2=0.9, tau=1e-2)
    gen = torch.Generator().manual_seed(7)
    x, deltas = random((3, 5), gen), [random((3, 5), gen) for _ in range(4)]
    assert matches_reference(opt, x, deltas)  # the right rule passes ...
    monkeypatch.setattr(server_opt, "_yogi_v", lambda v, d2, beta2: v + (1 - beta2) * d2 * torch.sign(v - d2))
    assert not matches_reference(opt, x, deltas)  # ... and a sign-flipped v-update does not


@SETTINGS
@given(opt=optimizers(), shape=shapes(), seed=st.integers(0, 2**31 - 1))
def test_step_modifies_none_of_its_inputs(opt, shape, seed):
    gen = torch.Generator().manual_seed(seed)
    x, d = random(shape, gen), random(shape, gen)
    _, slots = opt.step(x, d, {})
    before = (x.clone(), d.clone(), {k: v.clone() for k, v in slots.items()})
    _, new_slots = opt.step(x, d, slots)
    assert torch.equal(x, before[0]) and torch.equal(d, before[1])
    assert set(new_slots) == set(opt.slots()) == set(slots)
    for k in slots:
        assert torch.equal(slots[k], before[2][k])
        assert new_slots[k].data_ptr() != slots[k].data_ptr()


def test_slot_names_per_kind():
    assert ServerOptimizer("fedavgm").slots() == ("m",)
    for kind in ("fedadam", "fedyogi", "fedadagrad"):
        assert ServerOptimizer(kind).slots() == ("m", "v")


@pytest.mark.parametrize("kind", SERVER_OPTIMIZERS)
def test_low_precision_x_is_stepped_in_float32_and_cast_back_once(kind):
    opt = ServerOptimizer(kind, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    x, d = torch.randn(4, 6, generator=gen).to(torch.bfloat16), torch.randn(4, 6, generator=gen).to(torch.bfloat16)
    new, slots = opt.step(x, d, {})
    new32, slots32 = opt.step(x.float(), d.float(), {})
    assert new.dtype == torch.bfloat16 and torch.equal(new, new32.to(torch.bfloat16))
    assert set(slots) == set(slots32)
    for k in slots:
        assert slots[k].dtype == torch.float32 and torch.equal(slots[k], slots32[k])


def test_step_rejects_mismatched_shapes_and_slots():
    opt = ServerOptimizer("fedadam")
    x = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="delta has shape"):
        opt.step(x, torch.zeros(3, 2, dtype=torch.float64), {})
    with pytest.raises(ValueError, match="slots"):
        opt.step(x, x, {"m": x})
    with pytest.raises(ValueError, match="slot 'v'"):
        opt.step(x, x, {"m": x, "v": torch.zeros(3, 2)})


# ----- construction, parsing, description ------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"kind": "fedsgd"}, "fedsgd"),
        ({"kind": "fedadam", "lr": 0.0}, "lr"),
        ({"kind": "fedadam", "lr": math.nan}, "lr"),
        ({"kind": "fedavgm", "momentum": 1.0}, "momentum"),
        ({"kind": "fedadam", "beta1": -0.1}, "beta1"),
        ({"kind": "fedyogi", "beta2": 1.5}, "beta2"),
        ({"kind": "fedadagrad", "tau": 0.0}, "tau"),
    ],
)
def test_constructor_names_the_bad_field(kwargs, named):
    with pytest.raises(ValueError, match=named):
        ServerOptimizer(**kwargs)


def test_constructor_error_lists_the_valid_kinds():
    with pytest.raises(ValueError) as err:
        ServerOptimizer("fedsgd")
    assert all(kind in str(err.value) for kind in SERVER_OPTIMIZERS)


@SETTINGS
@given(opt=optimizers())
def test_parse_gives_the_described_optimiser(opt):
    adaptive = ("lr", "beta1", "beta2", "tau")
    used = {"fedavgm": ("lr", "momentum"), "fedadagrad": ("lr", "beta1", "tau")}.get(opt.kind, adaptive)
    parsed = parse_server_optimizer(":".join([opt.kind, *(f"{k}={getattr(opt, k)!r}" for k in used)]))
    assert parsed.describe() == opt.describe()
    for k in used:
        assert getattr(parsed, k) == getattr(opt, k)
    assert opt.describe() == f"{opt.kind}({', '.join(f'{k}={getattr(opt, k)!r}' for k in used)})"


def test_parse_examples():
    assert parse_server_optimizer("fedadam") == ServerOptimizer("fedadam")
    assert parse_server_optimizer("fedadam:lr=1e-3:tau=1e-4") == ServerOptimizer("fedadam", lr=1e-3, tau=1e-4)
    assert parse_server_optimizer("fedavgm:momentum=0.5") == ServerOptimizer("fedavgm", momentum=0.5)
    assert ServerOptimizer("fedadam", lr=0.01).describe() == "fedadam(lr=0.01, beta1=0.9, beta2=0.99, tau=0.001)"


@pytest.mark.parametrize(
    "spec, named",
    [
        ("fedsgd", ["'fedsgd'", *SERVER_OPTIMIZERS]),
        ("fedadam:eta=1", ["'eta'", "lr", "beta1", "beta2", "tau"]),
        ("fedavgm:tau=0.1", ["'tau'", "lr", "momentum"]),  # a knob the kind does not use
        ("fedadam:lr=abc", ["lr", "'abc'"]),
        ("fedavgm:momentum=1", ["momentum", "'1'"]),
        ("fedyogi:beta2=nan", ["beta2", "'nan'"]),
        ("fedadam:lr", ["'lr'"]),
        ("fedadam:lr=1:lr=2", ["'lr=2'"]),
    ],
)
def test_parse_errors_name_the_bad_part(spec, named):
    with pytest.raises(ValueError) as err:
        parse_server_optimizer(spec)
    for part in named:
        assert part in str(err.value)
