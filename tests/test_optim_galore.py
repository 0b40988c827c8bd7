"""GaLore-AdamW against the update rule written out (rolora.optim.galore_reference), and its errors."""

from __future__ import annotations

import pytest
import torch

from rolora.optim.galore import GaLoreAdamW, galore_groups, projection_side, top_singular_vectors
from rolora.optim.galore_reference import galore_adamw_reference, reference_projection
from rolora.optim.memory import adam_state_params, galore_state_params, measured_state_bytes


def quadratic_grad(target: torch.Tensor, mix: torch.Tensor):
    """∇ of ½‖mix·(W − target)‖²: a gradient that depends on W, full rank, non-symmetric."""
    return lambda w: (mix.T @ mix) @ (w - target)


def run_fast(w0, grad_of, steps, **group):
    w = w0.clone().requires_grad_(True)
    opt_kwargs = {k: group.pop(k) for k in ("lr", "betas", "eps", "weight_decay") if k in group}
    opt = GaLoreAdamW([{"params": [w], **group}], **opt_kwargs)
    out = []
    for _ in range(steps):
        w.grad = grad_of(w.detach())
        opt.step()
        out.append(w.detach().clone())
    return out, opt


@pytest.mark.parametrize("shape", [(7, 4), (4, 7)], ids=["right-side", "left-side"])
@pytest.mark.parametrize("period", [1, 3, 100])
def test_galore_step_equals_the_written_out_rule(shape, period):
    gen = torch.Generator().manual_seed(1)
    w0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    grad_of = quadratic_grad(torch.randn(shape, generator=gen, dtype=torch.float64),
                             torch.randn(shape[0], shape[0], generator=gen, dtype=torch.float64))
    opts = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-8, weight_decay=0.1)
    fast, opt = run_fast(w0, grad_of, 8, galore=True, rank=2, period=period, scale=0.5, **opts)
    ref = galore_adamw_reference(w0, grad_of, 8, rank=2, period=period, scale=0.5, **opts)
    for t, (a, b) in enumerate(zip(fast, ref), 1):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"step {t}")
    state = next(iter(opt.state.values()))
    d, n = shape
    assert state["side"] == ("right" if d >= n else "left")
    assert state["exp_avg"].shape == ((d, 2) if d >= n else (2, n))  # moments in the projected space
    assert state["projection"].shape == ((2, n) if d >= n else (d, 2))


def test_the_update_is_scale_times_the_projected_adam_step():
    # One step from zero moments: N = R/(|R| + eps/…) ≈ sign(R); the update is lr·scale·P-back of it.
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    w0 = torch.zeros(6, 3, dtype=torch.float64)
    for scale in (0.25, 2.0):
        (w1,), _ = run_fast(w0, lambda w: g, 1, galore=True, rank=2, period=5, scale=scale, lr=0.1, eps=0.0)
        _, p = reference_projection(g, 2)
        torch.testing.assert_close(w1, -0.1 * scale * torch.sign(g @ p.T) @ p)


def test_the_projection_changes_only_at_refresh_steps():
    gen = torch.Generator().manual_seed(3)
    grads = [torch.randn(5, 9, generator=gen, dtype=torch.float64) for _ in range(7)]
    w = torch.zeros(5, 9, dtype=torch.float64, requires_grad=True)
    opt = GaLoreAdamW([{"params": [w], "galore": True, "rank": 3, "period": 3}], lr=0.01)
    seen = []
    for g in grads:
        w.grad = g
        opt.step()
        seen.append(opt.state[w]["projection"].clone())
    for t in range(1, 8):  # refreshed at steps 1, 4, 7 from that step's gradient
        expected = reference_projection(grads[3 * ((t - 1) // 3)], 3)[1]
        torch.testing.assert_close(seen[t - 1], expected)


def test_plain_groups_are_exactly_torch_adamw():
    gen = torch.Generator().manual_seed(4)
    bias, w = torch.randn(5, generator=gen), torch.randn(3, 5, generator=gen)
    grads = [(torch.randn(5, generator=gen), torch.randn(3, 5, generator=gen)) for _ in range(5)]
    ours = [bias.clone().requires_grad_(True), w.clone().requires_grad_(True)]
    torchs = [bias.clone().requires_grad_(True), w.clone().requires_grad_(True)]
    a = GaLoreAdamW(ours, lr=0.01, weight_decay=0.1)
    b = torch.optim.AdamW(torchs, lr=0.01, weight_decay=0.1)
    for gb, gw in grads:
        for ps, opt in ((ours, a), (torchs, b)):
            ps[0].grad, ps[1].grad = gb.clone(), gw.clone()
            opt.step()
    for x, y in zip(ours, torchs):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    ref = galore_adamw_reference(bias, lambda _w, it=iter(g for g, _ in grads): next(it), 5, lr=0.01,
                                 rank=None, weight_decay=0.1)
    torch.testing.assert_close(ours[0].detach().double(), ref[-1], rtol=1e-6, atol=1e-7)


def test_sign_convention_makes_the_projection_a_function_of_the_gradient():
    g = torch.randn(8, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    p = top_singular_vectors(g, 3, projection_side(g.shape))
    torch.testing.assert_close(p, reference_projection(g, 3)[1])
    torch.testing.assert_close(top_singular_vectors(-g, 3, "right"), p)  # sign of G does not matter


def test_galore_groups_project_wide_matrices_and_leave_the_rest_to_adamw():
    w, head, bias = torch.zeros(16, 12), torch.zeros(2, 12), torch.zeros(12)
    groups = galore_groups([w, head, bias], rank=4, period=10, scale=1.0)
    assert groups[0]["galore"] and groups[0]["params"] == [w]
    assert not groups[1]["galore"] and groups[1]["params"] == [head, bias]
    with pytest.raises(ValueError, match="no trained matrix has both sides ≥ 20"):
        galore_groups([w, bias], rank=20, period=10, scale=1.0)


@pytest.mark.parametrize("options, words", [
    (dict(rank=0), "rank must be an integer ≥ 1"),
    (dict(rank=-2), "rank must be an integer ≥ 1"),
    (dict(rank=5), "rank 5 is above min\\(d, n\\) = 4"),
    (dict(period=0), "period must be an integer ≥ 1"),
    (dict(period=1.5), "period must be an integer ≥ 1"),
    (dict(scale=0.0), "scale must be a finite number > 0"),
])
def test_bad_galore_options_raise_clear_errors(options, words):
    w = torch.zeros(4, 6, requires_grad=True)
    with pytest.raises(ValueError, match=words):
        GaLoreAdamW([{"params": [w], "galore": True, **options}], lr=0.1)


def test_a_bias_in_a_galore_group_is_refused():
    with pytest.raises(ValueError, match="matrices only.*shape \\(6,\\)"):
        GaLoreAdamW([{"params": [torch.zeros(6, requires_grad=True)], "galore": True, "rank": 1}])


@pytest.mark.parametrize("shape, rank", [((784, 784), 16), ((384, 384), 8), ((10, 30), 4), ((30, 10), 4)])
def test_measured_state_bytes_match_the_formulas(shape, rank):
    assert measured_state_bytes([shape], "adamw") == 4 * adam_state_params([shape])
    assert measured_state_bytes([shape], "galore", rank=rank) == 4 * galore_state_params(shape, rank)
    assert measured_state_bytes([shape], "sgd") == 0
