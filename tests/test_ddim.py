"""DDIM (Song et al. 2021): sigma_t and eta, the update against the paper's formula, determinism,
DDPM as the eta = 1 case, classifier-free guidance, and inversion then generation.

Tolerances: float32 carries ~6e-8 relative error per operation; a sampler step is about ten of them
on values of order 1, so N steps accumulate at most ~N * 1e-6. Each atol below is that bound for the
steps run, times ten or more; the inversion tests bound discretisation error instead (see there).
"""

import math

import pytest
import torch

from ddpm_lib import NoiseSchedule, ddim_invert, ddim_sample, ddim_sigma, ddim_step, ddpm_sample, slerp
from ddpm_lib.sampling import guided

MU, SD = 0.2, 0.25                                     # the toy data distribution N(MU, SD^2 I)


def gaussian_oracle(schedule):
    """The exact eps-model of data x_0 ~ N(MU, SD^2 I): E[eps | x_t] in closed form."""
    def eps(x, t_model):
        abar = schedule.alphas_cumprod[t_model].to(x.dtype).view(-1, 1, 1, 1)
        return (1 - abar).sqrt() * (x - abar.sqrt() * MU) / (abar * SD ** 2 + 1 - abar)
    return eps


def toy_model(x, t_model):
    """A smooth, nonlinear stand-in for a network (no training needed)."""
    return torch.tanh(0.7 * x + 0.3 * torch.cos(x.flip(-1)) + t_model.float().view(-1, 1, 1, 1) / 1000)


class ToyConditional:
    """A class-conditional toy eps-model: label K = num_classes is the 'no label' token."""

    num_classes = 3

    def __call__(self, x, t_model, y):
        return toy_model(x, t_model) + 0.2 * (y.float().view(-1, 1, 1, 1) - 1)


def test_eta_one_gives_the_posterior_variance_and_eta_zero_none():
    for schedule in (NoiseSchedule.linear(1000), NoiseSchedule.linear(1000).respace(20),
                     NoiseSchedule.cosine(1000).respace(7)):
        t = torch.arange(1, schedule.T)
        sigma = ddim_sigma(schedule, t, t - 1, 1.0)
        assert torch.allclose(sigma ** 2, schedule.posterior_variance[t], rtol=1e-10, atol=0)
        assert torch.equal(ddim_sigma(schedule, t, t - 1, 0.0), torch.zeros_like(sigma))
        last = ddim_sigma(schedule, torch.tensor([0]), torch.tensor([-1]), 1.0)
        assert last.item() == 0.0                                          # abar_prev = 1: no noise


def test_ddim_step_is_the_update_written_out():
    """Eq. 12 of Song et al. in float64 by hand, with and without clipping, with noise, to t_prev = -1."""
    schedule = NoiseSchedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x_t = 1.5 * torch.randn(4, 1, 3, 3, generator=g)
    eps = torch.randn(4, 1, 3, 3, generator=g)
    noise = torch.randn(4, 1, 3, 3, generator=g)
    t, t_prev = torch.tensor([999, 500, 40, 3]), torch.tensor([979, 100, 39, -1])
    abar = schedule.alphas_cumprod
    a_t = abar[t].view(-1, 1, 1, 1)
    a_prev = torch.where(t_prev >= 0, abar[t_prev.clamp(min=0)], torch.ones(4, dtype=torch.float64))
    a_prev = a_prev.view(-1, 1, 1, 1)
    eta = 0.5
    sigma = eta * torch.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    for clip in (False, True):
        x0 = (x_t.double() - (1 - a_t).sqrt() * eps.double()) / a_t.sqrt()
        e = eps.double()
        if clip:
            x0 = x0.clamp(-1, 1)
            e = (x_t.double() - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        by_hand = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).sqrt() * e + sigma * noise.double()
        out = ddim_step(schedule, x_t, t, t_prev, eps, eta=eta, noise=noise, clip_denoised=clip)
        assert out.dtype == torch.float32
        assert torch.allclose(out.double(), by_hand, atol=1e-5, rtol=0)   # float32: ~1e-6 here
    # eta = 0 ignores the noise, and the step to abar_prev = 1 lands on x0_pred
    a = ddim_step(schedule, x_t, t, t_prev, eps, eta=0.0, noise=noise, clip_denoised=False)
    b = ddim_step(schedule, x_t, t, t_prev, eps, eta=0.0, clip_denoised=False)
    assert torch.equal(a, b)
    x0_pred = schedule.predict_x0_from_eps(x_t, t, eps)
    assert torch.allclose(a[3], x0_pred[3], atol=1e-6)


def test_eta_zero_is_deterministic_and_eta_one_is_ddpm_with_the_posterior_variance():
    s = NoiseSchedule.linear(1000)
    shape = (5, 1, 4, 4)
    a = ddim_sample(toy_model, s, shape, steps=20, seed=7)
    assert torch.equal(a, ddim_sample(toy_model, s, shape, steps=20, seed=7))
    assert not torch.allclose(a, ddim_sample(toy_model, s, shape, steps=20, seed=8))
    # eta = 0: once x_T is fixed the generator is never used
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ddim_sample(toy_model, s, shape, steps=20, x_T=x_T, seed=1),
                       ddim_sample(toy_model, s, shape, steps=20, x_T=x_T, seed=2))
    # eta = 1 on the respaced schedule is DDPM's sampler with sigma_t^2 = posterior variance
    d = ddim_sample(toy_model, s, shape, steps=20, eta=1.0, seed=3)
    p = ddpm_sample(toy_model, s, shape, steps=20, variance="posterior", seed=3)
    assert torch.allclose(d, p, atol=2e-4, rtol=0)                      # 20 steps: ~2e-5 at most
    assert not torch.allclose(d, ddim_sample(toy_model, s, shape, steps=20, eta=0.0, seed=3), atol=1e-2)


def test_one_model_call_per_step_and_chunks_do_not_change_the_images():
    s = NoiseSchedule.linear(100)
    calls = []

    def counting(x, t):
        calls.append(x.shape[0])
        return toy_model(x, t)

    a = ddim_sample(counting, s, (6, 1, 4, 4), steps=10, eta=0.5, seed=0, chunk_size=4)
    assert calls == [4, 2] * 10
    b = ddim_sample(toy_model, s, (6, 1, 4, 4), steps=10, eta=0.5, seed=0, chunk_size=6)
    assert torch.allclose(a, b, atol=1e-5)
    _, traj = ddim_sample(toy_model, s, (6, 1, 4, 4), steps=10, seed=0, trajectory_steps=[9, 0])
    assert traj.steps == [9, 0] and traj.x_t.shape == (2, 6, 1, 4, 4)
    assert torch.equal(traj.x_t[0], torch.randn((6, 1, 4, 4), generator=torch.Generator().manual_seed(0)))


def test_labels_and_guidance_are_split_with_the_chunks():
    s = NoiseSchedule.linear(100)
    model, y = ToyConditional(), torch.tensor([0, 2, 1, 2, 0])
    a = ddim_sample(model, s, (5, 1, 4, 4), steps=8, seed=0, labels=y, guidance=2.0, chunk_size=2)
    whole = guided(model, y, 2.0)                                        # the whole batch at once
    b = ddim_sample(whole, s, (5, 1, 4, 4), steps=8, seed=0, chunk_size=5)
    assert torch.allclose(a, b, atol=1e-5)
    c = ddim_sample(model, s, (5, 1, 4, 4), steps=8, seed=0, labels=y, guidance=0.0)
    assert not torch.allclose(a, c, atol=1e-3)
    with pytest.raises(ValueError, match="unconditional"):
        ddim_sample(toy_model, s, (5, 1, 4, 4), steps=8, seed=0, labels=1)


def test_inversion_then_generation_gives_the_images_back():
    """With the exact eps of Gaussian data, the round trip x_0 -> x_T -> x_0 has only the Euler error.

    Each of inversion and generation is a first-order discretisation of the same ODE, so the error
    is C / steps; C = 6 for these 256 values (measured: 0.0058 at 1000 steps, 0.057 at 100). The
    bound 0.03 at 1000 steps leaves a margin of 5; float32 rounding (~2e-3 at most over 2,000 steps)
    is far below it. For Gaussian data the ODE's x_T is known exactly: a linear map of x_0.
    """
    s = NoiseSchedule.linear(1000)
    eps = gaussian_oracle(s)
    x0 = (MU + SD * torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    errors, steps = {}, 1000
    for n in (100, steps):
        x_T = ddim_invert(eps, s, x0, n)
        assert x_T.shape == x0.shape
        back = ddim_sample(eps, s, x0.shape, steps=n, x_T=x_T, clip_denoised=False)
        errors[n] = (back - x0).abs().max().item()
    assert errors[steps] < 0.03
    assert 4 < errors[100] / errors[steps] < 25                          # first order: about 10
    # x_T is where the probability-flow ODE takes x_0: sqrt(abar_T) MU + sqrt(abar_T SD^2 + 1 - abar_T) z,
    # z = (x_0 - MU) / SD (measured: within 0.0063 at 1000 steps, 0.084 at 100)
    abar_T = s.alphas_cumprod[-1].item()
    exact = math.sqrt(abar_T) * MU + math.sqrt(abar_T * SD ** 2 + 1 - abar_T) * (x0 - MU) / SD
    assert (ddim_invert(eps, s, x0, steps) - exact).abs().max() < 0.03


def test_slerp_keeps_the_norm_and_the_ends():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(1, 32, 32, generator=g), torch.randn(1, 32, 32, generator=g)
    path = slerp(z0, z1, torch.linspace(0, 1, 5))                         # (5, 1, 32, 32)
    assert path.shape == (5, 1, 32, 32)
    assert torch.allclose(path[0], z0, atol=1e-6) and torch.allclose(path[-1], z1, atol=1e-6)
    norms = path.flatten(1).norm(dim=1)
    # nearly orthogonal draws of equal norm (to ~3%): the arc keeps the norm, the chord loses ~29% of it
    assert torch.allclose(norms, norms[0].expand(5), rtol=0.05)
    assert ((z0 + z1) / 2).norm() < 0.75 * norms[2]
    # between unit vectors the angle grows evenly with w: cos(angle to u0) = cos(w theta)
    u0, u1 = z0 / z0.norm(), z1 / z1.norm()
    arc = slerp(u0, u1, torch.linspace(0, 1, 5))
    cos = torch.nn.functional.cosine_similarity(arc.flatten(1).double(), u0.flatten().double()[None], dim=1)
    theta = torch.arccos(cos[-1])
    assert torch.allclose(cos, torch.cos(torch.linspace(0, 1, 5, dtype=torch.float64) * theta), atol=1e-5)
    assert torch.allclose(slerp(z0, z0, [0.3]), z0[None])                 # parallel: no division by 0


def test_errors_are_one_line_value_errors():
    s = NoiseSchedule.linear(100)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(toy_model, s, (1, 1, 4, 4), steps=10, eta=-0.1, seed=0)
    with pytest.raises(ValueError, match="steps"):
        ddim_sample(toy_model, s, (1, 1, 4, 4), steps=101, seed=0)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(s, x, torch.tensor([5, 5]), torch.tensor([4, 6]), x)
    with pytest.raises(ValueError, match="eta"):
        ddim_step(s, x, torch.tensor([5, 5]), torch.tensor([4, 4]), x, eta=float("nan"))
    with pytest.raises(ValueError, match="x0"):
        ddim_invert(toy_model, s, torch.zeros(4, 4), 10)


def test_sampler_quality_summary_gives_mean_and_spread_over_seeds(tmp_path):
    from ddpm_lib.book.results import sampler_quality_summary

    def row(sampler, steps, seed, confident):
        return {"sampler": sampler, "steps": steps, "seed": seed, "n": 256, "confident": confident,
                "class_entropy": 0.99, "frechet": 30.0 + seed, "wall_s": 10.0 * steps}
    rows = [row("ddpm", 50, 0, 0.8), row("ddim-eta0", 50, 0, 0.9), row("ddpm", 10, 0, 0.5),
            row("ddpm", 50, 1, 0.7), row("ddpm", 50, 2, 0.9)]
    path = tmp_path / "q.json"
    path.write_text(__import__("json").dumps({"rows": rows}))
    summary = sampler_quality_summary(path)
    assert [(r["sampler"], r["steps"]) for r in summary] == [("ddpm", 10), ("ddpm", 50), ("ddim-eta0", 50)]
    ddpm50 = summary[1]
    assert ddpm50["seeds"] == [0, 1, 2]
    assert ddpm50["confident"] == pytest.approx(0.8) and ddpm50["confident_sd"] == pytest.approx(0.1)
    assert (ddpm50["confident_min"], ddpm50["confident_max"]) == (0.7, 0.9)
    assert ddpm50["frechet"] == pytest.approx(31.0) and summary[0]["frechet_sd"] == 0.0


def test_seed_difference_is_the_difference_of_means_with_its_standard_error():
    from ddpm_lib.book.results import seed_difference

    a = {"seeds": [0, 1, 2], "frechet": 20.0, "frechet_sd": 3.0}
    b = {"seeds": [0, 1, 2, 3], "frechet": 25.0, "frechet_sd": 4.0}
    d, se = seed_difference(a, b, "frechet")
    assert d == pytest.approx(-5.0) and se == pytest.approx((9 / 3 + 16 / 4) ** 0.5)
    # Monte Carlo: over many draws of 3 and 4 seeds, the sd of the difference of means is se
    g = torch.Generator().manual_seed(0)
    draws = 20.0 + 3.0 * torch.randn(20_000, 3, generator=g, dtype=torch.float64)
    other = 25.0 + 4.0 * torch.randn(20_000, 4, generator=g, dtype=torch.float64)
    assert (draws.mean(1) - other.mean(1)).std().item() == pytest.approx(se, rel=0.03)
    with pytest.raises(ValueError, match="two or more seeds"):
        seed_difference({**a, "seeds": [0]}, b, "frechet")


def test_the_shipped_measurements_cover_what_the_chapter_plots():
    from ddpm_lib.book.results import SAMPLER_QUALITY, sampler_quality_summary

    summary = sampler_quality_summary(SAMPLER_QUALITY)
    samplers = {r["sampler"] for r in summary}
    assert samplers == {"ddpm", "ddim-eta0", "ddim-eta1"}
    have = {(r["sampler"], r["steps"]) for r in summary}
    assert {(s, k) for s in samplers for k in (10, 20, 50, 100)} <= have
    # the chapter and A1 compare rows by their mean and spread over seeds: three seeds each,
    # DDPM's 500 and 1,000 steps included (A1 sets them beside the card's one-seed rows)
    assert ("ddpm", 500) in have and ("ddpm", 1000) in have
    assert all(sorted(r["seeds"]) == [0, 1, 2] for r in summary)
    assert all(r[key] == r[key] for r in summary for key in ("confident", "frechet", "wall_s"))
