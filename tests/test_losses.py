"""Loss and bound terms: Gaussian KL, the discretized decoder, L_simple and bits/dim."""

import math

import pytest
import torch

from ddpm_lib import NoiseSchedule, bits_per_dim, ddpm_loss, discretized_gaussian_log_likelihood, normal_kl, vlb_terms
from ddpm_lib.losses import geometric_timesteps, prior_bpd


def oracle(schedule, x0):
    """An eps-model that knows x0: it returns exactly the noise that turned x0 into x_t."""
    def model(x_t, t):
        return schedule.predict_eps_from_x0(x_t, t, x0[: x_t.shape[0]])
    return model


def test_normal_kl_matches_torch_distributions_and_monte_carlo():
    m1, lv1, m2, lv2 = torch.tensor(0.3), torch.tensor(-1.2), torch.tensor(-0.5), torch.tensor(0.4)
    ours = normal_kl(m1, lv1, m2, lv2)
    p = torch.distributions.Normal(m1, (0.5 * lv1).exp())
    q = torch.distributions.Normal(m2, (0.5 * lv2).exp())
    assert ours.item() == pytest.approx(torch.distributions.kl_divergence(p, q).item(), rel=1e-6)
    torch.manual_seed(0)
    x = p.sample((400000,))
    mc = (p.log_prob(x) - q.log_prob(x)).mean().item()
    assert ours.item() == pytest.approx(mc, abs=0.01)
    assert normal_kl(m1, lv1, m1, lv1).item() == 0


def test_discretized_gaussian_is_a_distribution_over_256_levels():
    levels = torch.linspace(-1, 1, 256)
    for mean, log_scale in [(0.0, -3.0), (0.9, -5.0), (-1.0, -1.0), (0.2, 0.5)]:
        logp = discretized_gaussian_log_likelihood(levels, means=torch.full_like(levels, mean),
                                                   log_scales=torch.full_like(levels, log_scale))
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=2e-3)   # tanh approximation of Phi
        if log_scale < -2:                                                 # narrow: the mode is the mean's bin
            assert levels[logp.argmax()].item() == pytest.approx(mean, abs=1 / 127.5 + 1e-6)


def test_ddpm_loss_is_zero_for_the_oracle_and_one_for_a_zero_model():
    s = NoiseSchedule.linear()
    torch.manual_seed(0)
    x0 = torch.rand(64, 1, 8, 8) * 2 - 1
    assert ddpm_loss(oracle(s, x0), s, x0).item() < 1e-6
    zero = ddpm_loss(lambda x, t: torch.zeros_like(x), s, x0).item()
    assert zero == pytest.approx(1.0, abs=0.05)                             # E[eps^2] = 1
    per = ddpm_loss(lambda x, t: torch.zeros_like(x), s, x0, reduction="none")
    assert per.shape == (64,)


def test_vlb_kl_terms_vanish_for_the_oracle_with_posterior_variance():
    s = NoiseSchedule.linear()
    x0 = (torch.randint(0, 256, (4, 1, 8, 8)).float() / 127.5 - 1)
    t = torch.tensor([1, 10, 500, 999])
    out = vlb_terms(oracle(s, x0), s, x0, t, variance="posterior")
    assert out["term"].abs().max().item() < 1e-4
    # with sigma^2 = beta the KL is positive: the variances differ
    out_beta = vlb_terms(oracle(s, x0), s, x0, t, variance="beta")
    assert (out_beta["term"] > 0).all()


def test_vlb_kl_term_equals_closed_form_gaussian_kl():
    """For a model off the true posterior the term is KL(q || p) of the two Gaussians, per dim, in bits."""
    s = NoiseSchedule.linear()
    torch.manual_seed(2)
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1
    t = torch.tensor([5, 50, 700])
    noise = torch.randn_like(x0)
    model = lambda x, tt: torch.zeros_like(x)                               # predicts eps = 0
    term = vlb_terms(model, s, x0, t, noise=noise, variance="beta")["term"]
    x_t = s.q_sample(x0, t, noise)
    q_mean, q_var, _ = s.q_posterior(x0, x_t, t)
    p_mean = s.q_posterior(s.predict_x0_from_eps(x_t, t, torch.zeros_like(x0)), x_t, t)[0]
    p_var = s.betas[t].float().reshape(-1, 1, 1, 1)
    kl = 0.5 * (torch.log(p_var / q_var) + (q_var + (q_mean - p_mean) ** 2) / p_var - 1)
    assert torch.allclose(term, kl.flatten(1).mean(1) / math.log(2), rtol=1e-4)


def test_bits_per_dim_full_sum_and_stratified_estimate():
    s = NoiseSchedule.linear(40)
    x0 = (torch.randint(0, 256, (2, 1, 4, 4)).float() / 127.5 - 1)
    model = lambda x, t: torch.zeros_like(x)
    gen = torch.Generator().manual_seed(0)
    full = bits_per_dim(model, s, x0, generator=gen)
    assert full["terms"].shape == (2, 40) and torch.equal(full["weights"], torch.ones(40))
    # the bound is the sum of its terms plus the prior term
    assert torch.allclose(full["bpd"], full["terms"].sum(1) + full["prior"])
    gen = torch.Generator().manual_seed(0)
    every = bits_per_dim(model, s, x0, timesteps=torch.arange(40), generator=gen)
    assert torch.allclose(every["bpd"], full["bpd"])
    strided = bits_per_dim(model, s, x0, timesteps=torch.tensor([0, 1, 11, 21, 31]))
    assert strided["weights"].tolist() == [1, 10, 10, 10, 9]                # covers t = 0..39 once
    with pytest.raises(ValueError, match="start at 0"):
        bits_per_dim(model, s, x0, timesteps=torch.tensor([1, 5]))
    assert torch.equal(bits_per_dim(model, s, x0, timesteps=40)["timesteps"], torch.arange(40))   # n >= T: exact


def test_geometric_timesteps():
    ts = geometric_timesteps(50, 1000)
    assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 999 and bool((ts[1:] > ts[:-1]).all())
    assert ts[:10].tolist() == list(range(10))                            # dense where the terms change fastest
    assert torch.equal(geometric_timesteps(1000, 1000), torch.arange(1000))
    assert torch.equal(geometric_timesteps(7, 7), torch.arange(7))


def test_stratified_bits_per_dim_is_unbiased():
    """Averaged over many draws, the stratified estimate matches the exact bound; a deterministic rule need not."""
    s = NoiseSchedule.linear(60, beta_start=1e-3, beta_end=0.2)
    torch.manual_seed(0)
    x0 = (torch.randint(0, 256, (1, 1, 2, 2)).float() / 127.5 - 1)
    # a model off the truth by a fixed amount, so every term is large and depends strongly on t
    model = lambda x, t: torch.full_like(x, 0.3)
    gen = torch.Generator().manual_seed(1)
    exact = torch.stack([bits_per_dim(model, s, x0.expand(64, 1, 2, 2), generator=gen)["bpd"].mean()
                         for _ in range(20)]).mean()
    estimates = []
    for _ in range(300):
        out = bits_per_dim(model, s, x0.expand(8, 1, 2, 2), timesteps=6, generator=gen)
        assert out["weights"].sum().item() == 60 and len(out["timesteps"]) == 6
        estimates.append(out["bpd"].mean())
    estimates = torch.stack(estimates)
    stderr = estimates.std() / len(estimates) ** 0.5
    assert abs(estimates.mean() - exact) < 4 * stderr + 0.01 * exact, (estimates.mean(), exact, stderr)


def test_prior_term_is_tiny_for_the_linear_schedule():
    s = NoiseSchedule.linear()
    x0 = torch.ones(1, 1, 2, 2)
    # KL(N(sqrt(abar) x, 1 - abar) || N(0, 1)) in closed form, in bits
    abar = s.alphas_cumprod[-1].item()
    kl = 0.5 * (-math.log(1 - abar) + (1 - abar) + abar - 1) / math.log(2)
    assert prior_bpd(s, x0).item() == pytest.approx(kl, rel=1e-3)
    assert kl < 1e-4
