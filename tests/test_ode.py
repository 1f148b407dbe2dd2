"""ODE samplers (ddpm_lib.ode): spacing, cost, and the order of accuracy on a Gaussian data set solved exactly."""

from __future__ import annotations

import pytest
import torch

from ddpm_lib import NoiseSchedule, UNet, ddim_sample, ddim_step
from ddpm_lib.ode import dpm_solver_sample, edm_sigmas, heun_sample, karras_timesteps

SCHED = NoiseSchedule.linear()
MU, S = 0.1, 0.5                       # the data: every pixel N(MU, S^2), independent


def exact_eps(x, t):
    """The exact eps for Gaussian data: (x_t - sqrt(abar) E[x_0 | x_t]) / sqrt(1 - abar)."""
    abar = SCHED.alphas_cumprod[t].to(x.dtype).view(-1, 1, 1, 1)
    a, b = abar.sqrt(), (1 - abar).sqrt()
    mean_x0 = MU + a * S * S / (a * a * S * S + b * b) * (x - a * MU)
    return (x - a * mean_x0) / b


def exact_solution(x_T):
    """The probability-flow ODE's x_0 from x_T: x~ = x_T / sqrt(abar_T) shrinks to MU by S / sqrt(S^2 + sigma_T^2)."""
    sigma_T = float(edm_sigmas(SCHED)[-1])
    x_tilde = x_T / float(SCHED.alphas_cumprod[-1]) ** 0.5
    return MU + S / (S * S + sigma_T ** 2) ** 0.5 * (x_tilde - MU)


@pytest.mark.parametrize("n", [1, 2, 10, 50, 1000])
def test_karras_timesteps_are_distinct_and_span_the_schedule(n):
    ts = karras_timesteps(SCHED, n)
    assert ts.shape == (n,) and ts[0] == SCHED.T - 1
    assert bool((ts[1:] < ts[:-1]).all()) and (n == 1 or ts[-1] == 0)


def test_ddim_with_eta_0_is_euler_on_the_probability_flow_ode():
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    t, t_prev = torch.full((3,), 700), torch.full((3,), 400)
    sigma = edm_sigmas(SCHED)
    abar, abar_prev = float(SCHED.alphas_cumprod[700]), float(SCHED.alphas_cumprod[400])
    euler = (x / abar ** 0.5 + (float(sigma[400]) - float(sigma[700])) * eps) * abar_prev ** 0.5
    got = ddim_step(SCHED, x, t, t_prev, eps, clip_denoised=False)
    assert torch.allclose(got, euler.float(), atol=1e-5)


@pytest.mark.parametrize("sampler", [heun_sample, dpm_solver_sample])
@pytest.mark.parametrize("steps", [1, 2, 9, 10])
def test_steps_counts_network_calls(sampler, steps):
    calls = []

    def counting(x, t):
        calls.append(1)
        return exact_eps(x, t)

    sampler(counting, SCHED, (2, 1, 4, 4), steps=steps, seed=0, clip_denoised=False, device="cpu")
    assert len(calls) == steps


def test_second_order_solvers_converge_as_second_order_methods():
    x_T = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))    # (64, 1, 8, 8)
    exact = exact_solution(x_T).clamp(-1, 1)
    samplers = {"ddim": ddim_sample, "heun": heun_sample, "dpm++": dpm_solver_sample}
    err = {name: {calls: float((f(exact_eps, SCHED, x_T.shape, steps=calls, x_T=x_T, clip_denoised=False,
                                  device="cpu") - exact).abs().max()) for calls in (20, 40)}
           for name, f in samplers.items()}
    # Doubling the calls halves a first-order method's error and quarters a second-order one's (measured:
    # DDIM 2.0x, Heun 4.3x, DPM-Solver++(2M) 4.4x); float32 rounding (~1e-5 here) is far below these errors.
    assert 1.6 < err["ddim"][20] / err["ddim"][40] < 2.6
    for name in ("heun", "dpm++"):
        assert err[name][20] / err[name][40] > 3
        assert err[name][40] < err["ddim"][40]


@pytest.mark.parametrize("sampler", [heun_sample, dpm_solver_sample])
def test_same_x_T_same_images_whatever_the_chunks_and_trajectory(sampler):
    model = UNet.from_preset("tiny").eval()
    a = sampler(model, SCHED, (5, 1, 32, 32), steps=4, seed=3, chunk_size=2)
    x_T = torch.randn((5, 1, 32, 32), generator=torch.Generator().manual_seed(3))
    b, traj = sampler(model, SCHED, (5, 1, 32, 32), steps=4, x_T=x_T, chunk_size=64, trajectory_steps=[0, 1])
    assert torch.allclose(a, b, atol=1e-5) and a.shape == (5, 1, 32, 32) and a.abs().max() <= 1
    assert traj.steps == [1, 0] and traj.x_t.shape == traj.pred_x0.shape == (2, 5, 1, 32, 32)


def test_guided_sampling_and_bad_steps():
    model = UNet.from_preset("tiny", num_classes=10).eval()
    images = heun_sample(model, SCHED, (4, 1, 32, 32), steps=3, seed=0, labels=7, guidance=2.0)
    assert images.shape == (4, 1, 32, 32) and torch.isfinite(images).all()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            dpm_solver_sample(model, SCHED, (1, 1, 32, 32), steps=bad, seed=0)
    with pytest.raises(ValueError, match="at most 1000"):
        dpm_solver_sample(model, SCHED, (1, 1, 32, 32), steps=1001, seed=0)


def test_heun_step_is_exact_on_a_linear_ode_and_euler_at_sigma_zero():
    """D = 0 makes dx~/dsigma = x~ / sigma, solved by x~ sigma_next / sigma, which Heun's two equal slopes
    reproduce exactly; with D = x~ / 2 the slope is x~ / (2 sigma) and Euler alone is not exact."""
    from ddpm_lib.ode import heun_step

    x = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = []

    def zero(x_, sigma):
        calls.append(sigma)
        return torch.zeros_like(x_)

    assert torch.allclose(heun_step(zero, x, 2.0, 0.5), x * 0.25) and calls == [2.0, 0.5]
    assert torch.equal(heun_step(zero, x, 2.0, 0.0), torch.zeros_like(x)) and len(calls) == 3   # Euler only
    half = lambda x_, sigma: x_ / 2                                          # noqa: E731
    exact = x * (1.8 / 2.0) ** 0.5                                           # x~ ~ sqrt(sigma)
    euler = heun_step(half, x, 2.0, 1.8, correct=False)
    # one step of 10%: Euler's error is 1.3e-3 |x|, Heun's 7e-5 |x| (second order: 18x smaller)
    assert (heun_step(half, x, 2.0, 1.8) - exact).abs().max() < (euler - exact).abs().max() / 5


def test_sampler_quality_summary_adds_accuracy_and_spread_for_conditional_rows(tmp_path):
    import json

    from ddpm_lib.book.results import sampler_quality_summary

    def row(sampler, seed, **extra):
        return {"sampler": sampler, "steps": 10, "seed": seed, "n": 60, "confident": 0.9,
                "class_entropy": 0.99, "frechet": 40.0 + seed, "wall_s": 5.0, **extra}
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"rows": [row("dpm++", s, accuracy=0.9 + 0.02 * s, spread=0.5)
                                         for s in range(3)] + [row("heun", 0)]}))
    cond, plain = sampler_quality_summary(path)
    assert cond["accuracy"] == pytest.approx(0.92) and cond["accuracy_sd"] == pytest.approx(0.02)
    assert cond["spread"] == pytest.approx(0.5) and cond["spread_sd"] == pytest.approx(0.0)
    assert "accuracy" not in plain and "spread" not in plain        # unconditional rows: as before


def test_the_conditional_measurement_is_complete_and_in_range():
    """ddpm_lib/book/assets/conditional_sampler_quality.json, which chapter 8 reads: every sampler x calls x
    seed once, one n and one guidance weight (the card's, chapter 7's), every figure in its range."""
    import json
    import math

    from ddpm_lib.checkpoint import load_checkpoint
    from ddpm_lib.book.results import CONDITIONAL_SAMPLER_QUALITY

    data = json.loads(CONDITIONAL_SAMPLER_QUALITY.read_text())
    rows = data["rows"]
    keys = sorted((r["sampler"], r["steps"], r["seed"]) for r in rows)
    samplers = ("ddpm", "ddim-eta0", "ddim-eta1", "heun", "dpm++")
    assert keys == sorted((s, k, seed) for s in samplers for k in (5, 10, 20, 50) for seed in (0, 1, 2))
    n = rows[0]["n"]
    assert n % 10 == 0 and n >= 20 and all(r["n"] == n for r in rows)
    w = load_checkpoint("mnist-conditional")["card"]["default_guidance"]
    assert data["guidance"] == w and all(r["guidance"] == w for r in rows)
    assert data["commands"] and all("--model mnist_conditional" in c for c in data["commands"])
    assert all(f"--n {n}" in c for c in data["commands"])
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["confident"] <= 1, r
        assert 0 <= r["class_entropy"] <= 1 + 1e-9 and math.isfinite(r["spread"]) and r["spread"] >= 0
        assert math.isfinite(r["frechet"]) and r["frechet"] > 0 and r["wall_s"] > 0
        assert sum(r["class_counts"]) == n and len(r["per_class_accuracy"]) == 10
        # balanced labels (n/10 of each digit): the accuracy is the mean of the per-class ones
        assert r["accuracy"] == pytest.approx(sum(r["per_class_accuracy"]) / 10, abs=1e-12)
    real = data["real_calibration"]
    assert real["n"] == n and real["subsets"] >= 2
    assert 0.9 < real["accuracy"] <= 1 and 0 < real["frechet"] and 0.5 < real["spread"] < 2


def test_sampler_quality_help_names_the_conditional_model():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    script = str(root / "scripts" / "sampler_quality.py")
    done = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--model {mnist_small,mnist_conditional}" in text and "--guidance" in text
    assert "conditional_sampler_quality.json" in text
    refused = subprocess.run([sys.executable, script, "--guidance", "2", "--table"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert refused.returncode == 2 and "--guidance is for --model mnist_conditional" in refused.stderr
