"""The forward process: closed forms against independent computations and Monte Carlo."""

import math

import numpy as np
import pytest
import torch

from ddpm_lib import NoiseSchedule


def test_linear_alphas_cumprod_matches_an_independent_product():
    s = NoiseSchedule.linear()
    betas = np.linspace(1e-4, 0.02, 1000)
    expected = np.cumprod(1 - betas)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), expected, rtol=1e-12)
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)   # the well-known ~4.04e-5
    assert s.alphas_cumprod_prev[0] == 1 and torch.equal(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])


def test_cosine_schedule_follows_nichol_dhariwal_formula():
    T, s_ = 1000, 0.008
    s = NoiseSchedule.cosine(T, s=s_)
    f = [math.cos(((t / T + s_) / (1 + s_)) * math.pi / 2) ** 2 for t in range(T + 1)]
    abar = [f[t + 1] / f[0] for t in range(T)]                             # code index t = paper t + 1
    unclipped = s.betas < 0.999
    np.testing.assert_allclose(s.alphas_cumprod.numpy()[:900], np.array(abar)[:900], rtol=1e-10)
    assert s.betas.max().item() == pytest.approx(0.999)                     # the clip at the end
    assert bool(unclipped[:990].all())
    assert (s.betas[1:] >= s.betas[:-1]).all()


def test_q_sample_statistics_by_monte_carlo():
    s = NoiseSchedule.linear()
    torch.manual_seed(0)
    x0 = torch.tensor([[-0.8, 0.3, 0.9]]).reshape(1, 3, 1, 1).expand(20000, 3, 1, 1)
    for t_index in (0, 250, 999):
        t = torch.full((x0.shape[0],), t_index)
        x_t = s.q_sample(x0, t).double()
        abar = s.alphas_cumprod[t_index].item()
        n = x0.shape[0]
        mean, var = x_t.mean(0).flatten(), x_t.var(0).flatten()
        want_mean = math.sqrt(abar) * x0[0].flatten().double()
        # 5 standard errors of the mean and of the variance (normal: Var(s^2) = 2 sigma^4 / (n - 1)).
        assert torch.allclose(mean, want_mean, atol=5 * math.sqrt((1 - abar) / n))
        assert torch.allclose(var, torch.full_like(var, 1 - abar), atol=5 * (1 - abar) * math.sqrt(2 / (n - 1)) + 1e-12)


def test_chain_of_single_steps_agrees_with_closed_form():
    s = NoiseSchedule.linear()
    torch.manual_seed(1)
    n, t_index = 20000, 300
    x0 = torch.full((n, 1, 1, 1), 0.7)
    x = x0.clone()
    for i in range(t_index + 1):
        x = s.q_step(x, torch.full((n,), i))
    closed = s.q_sample(x0, torch.full((n,), t_index))
    abar = s.alphas_cumprod[t_index].item()
    assert x.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=5 * math.sqrt((1 - abar) / n))
    assert x.var().item() == pytest.approx(1 - abar, abs=5 * (1 - abar) * math.sqrt(2 / n))
    assert abs(x.mean().item() - closed.mean().item()) < 7 * math.sqrt((1 - abar) / n)


def test_posterior_matches_numerical_bayes():
    """q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0): integrate on a grid."""
    s = NoiseSchedule.linear()
    x0, x_t = 0.4, -0.2
    grid = np.linspace(-6, 6, 200001)
    for t_index in (1, 10, 500, 999):
        beta = s.betas[t_index].item()
        abar_prev = s.alphas_cumprod[t_index - 1].item()
        log_lik = -0.5 * (x_t - math.sqrt(1 - beta) * grid) ** 2 / beta
        log_prior = -0.5 * (grid - math.sqrt(abar_prev) * x0) ** 2 / (1 - abar_prev)
        w = np.exp(log_lik + log_prior - (log_lik + log_prior).max())
        w /= w.sum()
        bayes_mean = (w * grid).sum()
        bayes_var = (w * (grid - bayes_mean) ** 2).sum()
        mean, var, log_var = s.q_posterior(torch.tensor([[[[x0]]]], dtype=torch.float64),
                                           torch.tensor([[[[x_t]]]], dtype=torch.float64), torch.tensor([t_index]))
        assert mean.item() == pytest.approx(bayes_mean, abs=1e-6)
        assert var.item() == pytest.approx(bayes_var, rel=1e-4)
        assert log_var.item() == pytest.approx(math.log(bayes_var), abs=1e-4)


def test_posterior_at_first_step_returns_x0():
    s = NoiseSchedule.linear()
    x0, x1 = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    mean, var, _ = s.q_posterior(x0, x1, torch.tensor([0, 0]))
    assert torch.allclose(mean, x0, atol=1e-6) and var.abs().max() == 0


def test_predict_x0_from_eps_inverts_q_sample():
    s = NoiseSchedule.cosine(1000)
    x0, eps = torch.rand(8, 3, 4, 4) * 2 - 1, torch.randn(8, 3, 4, 4)
    t = torch.tensor([0, 1, 10, 100, 500, 800, 950, 990])
    x_t = s.q_sample(x0, t, eps)
    assert torch.allclose(s.predict_x0_from_eps(x_t, t, eps), x0, atol=2e-3)
    assert torch.allclose(s.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-3)


def test_v_parametrisation_is_the_angle_derivative_and_inverts():
    s = NoiseSchedule.cosine(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 200, 500, 900, 999])
    x_t = s.q_sample(x0, t, eps)
    v = s.velocity(x0, t, eps)
    # float64 arithmetic of a few terms of order 1: rounding ~1e-15
    assert torch.allclose(s.predict_x0_from_v(x_t, t, v), x0, rtol=0, atol=1e-12)
    assert torch.allclose(s.predict_eps_from_v(x_t, t, v), eps, rtol=0, atol=1e-12)
    # v = d x_t / d phi for x_t = cos(phi) x0 + sin(phi) eps, cos(phi) = sqrt(abar_t)
    phi = torch.arccos(s.sqrt_alphas_cumprod[t]).view(-1, 1, 1, 1).requires_grad_(True)
    x_phi = phi.cos() * x0 + phi.sin() * eps
    assert torch.allclose(x_phi, x_t, rtol=0, atol=1e-12)
    dx = torch.autograd.grad(x_phi, phi, grad_outputs=torch.ones_like(x_phi))[0]
    # autograd sums over each image: compare the per-image sums of v
    assert torch.allclose(dx.flatten(), v.flatten(1).sum(1), rtol=0, atol=1e-12)
    # v is unit-variance noise when x0 and eps are both standard normal (a rotation of them)
    big = torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    noise = torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    tt = torch.full((200_000,), 300)
    assert abs(s.velocity(big, tt, noise).var().item() - 1) < 0.02   # ~6 standard errors


def test_snr_is_abar_over_one_minus_abar_and_decreasing():
    s = NoiseSchedule.linear()
    t = torch.arange(1000)
    snr = s.snr(t)
    assert torch.allclose(snr, s.alphas_cumprod / (1 - s.alphas_cumprod))
    assert bool((snr[1:] < snr[:-1]).all())


def test_respace_keeps_marginals_and_maps_timesteps():
    s = NoiseSchedule.linear()
    r = s.respace(50)
    assert r.T == 50 and r.timestep_map[0] == 0 and r.timestep_map[-1] == 999
    assert torch.allclose(r.alphas_cumprod, s.alphas_cumprod[r.timestep_map], rtol=1e-12)
    assert s.respace(1000) is s
    with pytest.raises(ValueError, match="steps"):
        s.respace(0)


@pytest.mark.parametrize("make", [lambda: NoiseSchedule.linear(200), lambda: NoiseSchedule.cosine(300),
                                  lambda: NoiseSchedule.linear().respace(25)])
def test_config_round_trip(make):
    s = make()
    again = NoiseSchedule.from_config(s.to_config())
    assert again.same_as(s)


def test_bad_t_gives_clear_errors():
    s = NoiseSchedule.linear(100)
    x = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="0..99"):
        s.q_sample(x, torch.tensor([0, 100]))
    with pytest.raises(ValueError, match="shape"):
        s.q_sample(x, torch.tensor([0]))
    with pytest.raises(ValueError, match="integer"):
        s.q_sample(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="unknown noise schedule"):
        NoiseSchedule.from_name("quadratic")


def test_model_variances():
    s = NoiseSchedule.linear()
    var_beta, _ = s.model_variance("beta")
    var_post, _ = s.model_variance("posterior")
    assert torch.equal(var_beta[1:], s.betas[1:]) and var_beta[0] == s.posterior_variance[1]
    assert bool((var_post[1:] <= var_beta[1:]).all())                      # beta~_t <= beta_t
    with pytest.raises(ValueError, match="variance"):
        s.model_variance("learned")


def test_to_returns_a_new_schedule_and_leaves_the_original_in_place():
    sched = NoiseSchedule.linear(T=50).respace(10)
    same = sched.to("cpu")
    assert same is sched                                   # already there: like Tensor.to, no copy
    moved = sched.to(torch.device("meta"))                 # any other device: a new schedule
    assert moved is not sched and moved.betas.device.type == "meta"
    assert sched.betas.device.type == "cpu" and sched.timestep_map.device.type == "cpu"
    assert all(v.device.type == "meta" for v in vars(moved).values() if isinstance(v, torch.Tensor))
    moved.params["steps"] = -1                             # the copy owns its own parameters
    assert sched.params["steps"] == 10
    assert NoiseSchedule.from_config(sched.to_config()).same_as(sched)


@pytest.mark.parametrize("make, message", [
    (lambda: NoiseSchedule(torch.tensor([0.5, 1.0])), r"\(0, 1\): a beta of 1"),
    (lambda: NoiseSchedule.cosine(10, max_beta=1.0), "max_beta < 1"),
    (lambda: NoiseSchedule(torch.full((200,), 0.99)), "infinite or NaN"),     # alphas_cumprod underflows to 0
    (lambda: NoiseSchedule.linear(10**8), "T must be an integer from 1 to 100000"),
], ids=["beta-of-one", "cosine-max-beta-one", "underflow", "huge-T"])
def test_schedules_with_infinite_coefficients_are_refused(make, message):
    """Issue 19: betas of 1 (or a product that underflows) made infinite coefficients and NaN images."""
    with pytest.raises(ValueError, match=message):
        make()
