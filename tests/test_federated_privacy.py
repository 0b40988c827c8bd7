"""Differential-privacy arithmetic (rolora.federated.privacy): clipping bounds every update, the
noise has the stated variance, DP-SGD's step equals Opacus's, and ε equals Opacus's accountant.

Statistical checks are seeded and sized so the tolerance is several standard errors wide while the
plausible mistake (a variance off by 2, a missing 1/batch) lies far outside it; each test also
asserts that the mistake would fail.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st

from rolora.federated.privacy import clip_update, epsilon, gaussian_noise, global_norm, privatise_batch

SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def updates(draw) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(start, end): 1..3 non-square float64 tensors, the update of norm anywhere in 1e-3..1e3."""
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = 10 ** draw(st.floats(-3, 3))
    start, end = {}, {}
    for i in range(draw(st.integers(1, 3))):
        d = draw(st.integers(1, 7))
        shape = (d, draw(st.integers(1, 7).filter(lambda n, d=d: n != d)))
        start[f"t{i}"] = torch.randn(shape, generator=gen, dtype=torch.float64)
        end[f"t{i}"] = start[f"t{i}"] + scale * torch.randn(shape, generator=gen, dtype=torch.float64)
    return start, end


def update_norm(start, end) -> float:
    return float(global_norm({k: end[k] - start[k] for k in start}))


# ----- clip_update ------------------------------------------------------------------------------


@SETTINGS
@given(pair=updates(), clip=st.floats(1e-3, 1e3))
def test_clip_update_bounds_the_norm_and_keeps_the_direction(pair, clip):
    start, end = pair
    before = {k: v.clone() for k, v in end.items()}
    clipped, norm = clip_update(start, end, clip)
    assert norm == pytest.approx(update_norm(start, end), rel=1e-12)
    assert update_norm(start, clipped) <= clip * (1 + 1e-12)
    assert update_norm(start, clipped) == pytest.approx(min(norm, clip), rel=1e-12)
    f = min(1.0, clip / norm)
    for k in start:  # the clipped update is the update scaled by one common factor
        torch.testing.assert_close(clipped[k] - start[k], f * (end[k] - start[k]), rtol=1e-10, atol=1e-12)
        assert torch.equal(end[k], before[k])


@SETTINGS
@given(pair=updates())
def test_clip_update_leaves_small_updates_and_infinite_clip_bit_identical(pair):
    start, end = pair
    norm = update_norm(start, end)
    for clip in (norm * 1.5, math.inf):
        clipped, reported = clip_update(start, end, clip)
        assert reported == pytest.approx(norm, rel=1e-12)
        assert list(clipped) == list(end) and all(clipped[k] is end[k] for k in end)  # not start + 1·(end − start)


def test_clip_update_keeps_low_precision_dtypes():
    start = {"a": torch.zeros(2, 3, dtype=torch.bfloat16)}
    end = {"a": torch.full((2, 3), 4.0, dtype=torch.bfloat16)}
    clipped, norm = clip_update(start, end, 1.0)
    assert clipped["a"].dtype == torch.bfloat16 and norm == pytest.approx(4.0 * math.sqrt(6))
    assert update_norm(start, clipped) == pytest.approx(1.0, rel=1e-2)  # bfloat16 has 8 bits


def test_clip_update_rejects_mismatched_keys_and_bad_clip():
    a = {"x": torch.zeros(2, 3), "y": torch.zeros(3, 2)}
    with pytest.raises(ValueError, match="'y'"):
        clip_update(a, {"x": a["x"]}, 1.0)
    with pytest.raises(ValueError, match="'z'"):
        clip_update(a, {**a, "z": torch.zeros(1)}, 1.0)
    with pytest.raises(ValueError, match="'y'"):
        clip_update(a, {"x": a["x"], "y": torch.zeros(2, 3)}, 1.0)
    for clip in (0.0, -1.0, math.nan):
        with pytest.raises(ValueError, match="clip"):
            clip_update(a, a, clip)


# ----- gaussian_noise ---------------------------------------------------------------------------

# 200k draws: the sample std of N(0, σ²) has relative standard error 1/√(2n) ≈ 0.16 %, so 1 % is
# ~6 standard errors; the mean's standard error is σ/√n ≈ 0.22 % σ, so 1.5 % σ is ~7.
STD_TOL, MEAN_TOL = 0.01, 0.015


def sample_std_ok(draws: torch.Tensor, std: float) -> bool:
    x = draws.double().flatten()
    return abs(float(x.std()) / std - 1) < STD_TOL and abs(float(x.mean())) < MEAN_TOL * std


def test_gaussian_noise_has_the_stated_variance():
    std = 0.37
    like = {"a": torch.zeros(400, 300), "b": torch.zeros(80, 1000, dtype=torch.float64)}
    noise = gaussian_noise(like, std, torch.Generator().manual_seed(1))
    assert list(noise) == ["a", "b"]
    assert all(noise[k].shape == like[k].shape and noise[k].dtype == like[k].dtype for k in like)
    draws = torch.cat([noise["a"].flatten().double(), noise["b"].flatten()])
    assert draws.numel() == 200_000
    assert sample_std_ok(draws, std)
    assert not sample_std_ok(draws * math.sqrt(2), std)  # a variance off by 2 would fail


def test_gaussian_noise_draws_in_key_order_in_float32_and_casts():
    like = {"w": torch.zeros(3, 5, dtype=torch.bfloat16), "b": torch.zeros(4, dtype=torch.float64)}
    noise = gaussian_noise(like, 2.0, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    w, b = torch.randn(3, 5, generator=gen), torch.randn(4, generator=gen)
    assert torch.equal(noise["w"], (2.0 * w).to(torch.bfloat16))
    assert torch.equal(noise["b"], (2.0 * b).to(torch.float64))


def test_gaussian_noise_of_std_zero_is_zeros_and_draws_nothing():
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    noise = gaussian_noise({"a": torch.ones(2, 3)}, 0.0, gen)
    assert torch.equal(noise["a"], torch.zeros(2, 3)) and torch.equal(gen.get_state(), state)
    for std in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="std"):
            gaussian_noise({"a": torch.ones(2)}, std, gen)


# ----- privatise_batch against Opacus -----------------------------------------------------------


def linear_batch(seed: int, batch: int):
    """A non-square nn.Linear, a batch of inputs and targets, and the loss of each sample."""
    torch.manual_seed(seed)  # nn.Linear's initialisation draws from the global generator
    model = torch.nn.Linear(5, 3)
    gen = torch.Generator().manual_seed(seed)
    x, y = 3 * torch.randn(batch, 5, generator=gen), torch.randn(batch, 3, generator=gen)
    return model, x, y


def per_sample_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    grads = []
    for i in range(len(x)):
        model.zero_grad()
        torch.nn.functional.mse_loss(model(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    return grads


def opacus_step_gradient(model: torch.nn.Module, x, y, clip: float) -> dict[str, torch.Tensor]:
    """Opacus's DP-SGD gradient of one step (noise 0): clipped per-sample gradients, summed, / batch."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    wrapped = GradSampleModule(model)
    optimiser = DPOptimizer(torch.optim.SGD(wrapped.parameters(), lr=0.0), noise_multiplier=0.0,
                            max_grad_norm=clip, expected_batch_size=len(x), loss_reduction="mean")
    optimiser.zero_grad()
    # "mean" reduction: Opacus rescales the per-sample gradients back to each sample's own loss.
    torch.nn.functional.mse_loss(wrapped(x), y, reduction="sum").div(len(x)).backward()
    optimiser.pre_step()
    return {n.removeprefix("_module."): p.grad.clone() for n, p in wrapped.named_parameters()}


@pytest.mark.parametrize("seed, batch", [(0, 6), (1, 11), (2, 3)])
@pytest.mark.filterwarnings("ignore:Full backward hook")  # Opacus's hooks on inputs without grad: harmless
def test_privatise_batch_without_noise_equals_opacus(seed, batch):
    model, x, y = linear_batch(seed, batch)
    grads = per_sample_grads(model, x, y)
    norms = sorted(float(global_norm(g)) for g in grads)
    clip = (norms[0] + norms[-1]) / 2  # some samples clipped, some not: both paths are exercised
    ours = privatise_batch(grads, clip, 0.0, None)
    theirs = opacus_step_gradient(model, x, y, clip)
    assert set(ours) == set(theirs) == {"weight", "bias"}
    for k in ours:  # Opacus divides by (norm + 1e-6): a relative difference of ~1e-6 / norm
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-6)
    # ... and the comparison has teeth: without clipping the gradients differ.
    unclipped = privatise_batch(grads, math.inf, 0.0, None)
    assert not all(torch.allclose(unclipped[k], theirs[k], rtol=1e-5, atol=1e-6) for k in theirs)


def test_privatise_batch_noise_has_std_noise_times_clip_over_batch():
    noise, clip, batch = 1.3, 0.7, 4
    zeros = [{"w": torch.zeros(400, 300), "b": torch.zeros(80_000)} for _ in range(batch)]
    out = privatise_batch(zeros, clip, noise, torch.Generator().manual_seed(11))
    draws = torch.cat([out["w"].flatten(), out["b"]])
    assert sample_std_ok(draws, noise * clip / batch)
    assert not sample_std_ok(draws, noise * clip / math.sqrt(batch))  # the wrong normalisation fails


# ----- epsilon against Opacus's accountant ------------------------------------------------------


def accountant_epsilon(history, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for noise, rate, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=noise, sample_rate=rate)
    return accountant.get_epsilon(delta)


histories = st.lists(
    st.tuples(st.floats(0.5, 5.0), st.floats(1e-3, 1.0), st.integers(1, 60)), min_size=1, max_size=3
)


# Opacus's RDP series is slow (~0.1 s an ε): no shrinking, so a failure reports in seconds, not minutes.
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(history=histories, delta=st.sampled_from([1e-3, 1e-5, 1e-7]))
@example(history=[(1.1, 1.0, 5), (2.0, 0.01, 50), (2.0, 0.01, 10)], delta=1e-5)  # q = 1; a repeated entry
@pytest.mark.filterwarnings("ignore:Optimal order")  # Opacus's hint about its order grid, both sides
def test_epsilon_equals_opacus_rdp_accountant(history, delta):
    assert epsilon(history, delta) == pytest.approx(accountant_epsilon(history, delta), rel=1e-9)


def test_epsilon_grows_with_steps_and_falls_with_noise():
    delta = 1e-5
    by_steps = [epsilon([(1.1, 0.01, s)], delta) for s in (10, 100, 1000, 10_000)]
    assert by_steps == sorted(by_steps) and len(set(by_steps)) == 4
    by_noise = [epsilon([(n, 0.01, 1000)], delta) for n in (0.8, 1.1, 2.0, 4.0)]
    assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == 4
    # composing two histories spends more than either
    both = epsilon([(1.1, 0.01, 1000), (2.0, 0.05, 100)], delta)
    assert both > max(epsilon([(1.1, 0.01, 1000)], delta), epsilon([(2.0, 0.05, 100)], delta))


def test_epsilon_edge_cases():
    assert epsilon([], 1e-5) == 0.0
    assert epsilon([(1.0, 0.1, 0)], 1e-5) == 0.0
    assert epsilon([(0.0, 0.1, 5)], 1e-5) == math.inf
    assert epsilon([(1.0, 0.1, 10), (0.0, 0.5, 1)], 1e-5) == math.inf


@pytest.mark.parametrize(
    "history, delta, named",
    [
        ([(1.0, 0.1, 10)], 0.0, "delta"),
        ([(1.0, 0.1, 10)], 1.0, "delta"),
        ([(1.0, 0.0, 10)], 1e-5, "sample_rate"),
        ([(1.0, 1.5, 10)], 1e-5, "sample_rate"),
        ([(1.0, 0.1, -1)], 1e-5, "steps"),
        ([(1.0, 0.1, 2.5)], 1e-5, "steps"),
        ([(-1.0, 0.1, 10)], 1e-5, "noise_multiplier"),
        ([(1.0, 0.1)], 1e-5, "history"),
    ],
)
def test_epsilon_rejects_bad_input(history, delta, named):
    with pytest.raises(ValueError, match=named):
        epsilon(history, delta)
