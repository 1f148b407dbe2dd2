"""The ancestral sampler: determinism, chunking, trajectories, and correctness with an oracle model."""

import math

import pytest
import torch

from ddpm_lib import NoiseSchedule, UNet, ddpm_sample


def oracle_for(x0_single):
    """An eps-model that 'knows' the data is the single image x0: the exact posterior target."""
    def model(x_t, t_model):
        schedule = model.schedule
        t = t_model                                                        # identity timestep map here
        return schedule.predict_eps_from_x0(x_t, t, x0_single.expand_as(x_t))
    return model


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = UNet().eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return model


def test_same_seed_same_images_other_seed_other_images(small_model):
    s = NoiseSchedule.linear(50)
    a = ddpm_sample(small_model, s, (3, 1, 32, 32), seed=7)
    b = ddpm_sample(small_model, s, (3, 1, 32, 32), seed=7)
    c = ddpm_sample(small_model, s, (3, 1, 32, 32), seed=8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == (3, 1, 32, 32) and a.min() >= -1 and a.max() <= 1


def test_images_do_not_depend_on_the_chunk_size(small_model):
    s = NoiseSchedule.linear(30)
    a = ddpm_sample(small_model, s, (6, 1, 32, 32), seed=3, chunk_size=6)
    b = ddpm_sample(small_model, s, (6, 1, 32, 32), seed=3, chunk_size=4)
    assert torch.allclose(a, b, atol=1e-5)


def test_trajectory_has_the_requested_steps(small_model):
    s = NoiseSchedule.linear(40)
    images, traj = ddpm_sample(small_model, s, (2, 1, 32, 32), seed=0, trajectory_steps=[39, 20, 0])
    assert traj.steps == [39, 20, 0]
    assert traj.x_t.shape == (3, 2, 1, 32, 32) and traj.pred_x0.shape == (3, 2, 1, 32, 32)
    assert traj.x_t.device.type == "cpu"
    # x_T is the starting noise: the same seed without a trajectory starts from it too
    start = torch.randn((2, 1, 32, 32), generator=torch.Generator().manual_seed(0))
    assert torch.equal(traj.x_t[0], start)
    with pytest.raises(ValueError, match="trajectory_steps"):
        ddpm_sample(small_model, s, (1, 1, 32, 32), seed=0, trajectory_steps=[40])


def test_oracle_sampler_returns_the_data_point_exactly():
    """With eps predicted from the true x0, the last step's mean is x0 itself (coef1 = 1, coef2 = 0)."""
    s = NoiseSchedule.linear(100)
    x0 = torch.rand(1, 1, 4, 4) * 2 - 1
    model = oracle_for(x0)
    model.schedule = s
    out = ddpm_sample(model, s, (5, 1, 4, 4), seed=1, variance="posterior")
    assert torch.allclose(out, x0.expand(5, 1, 4, 4), atol=1e-5)


def test_oracle_reverse_chain_has_the_forward_marginals():
    """Ancestral steps with the posterior variance, fed the true x0, draw x_t from q(x_t | x0)."""
    T, n = 200, 4000
    s = NoiseSchedule.linear(T, beta_start=1e-3, beta_end=0.05)
    x0 = torch.tensor([0.6]).reshape(1, 1, 1, 1)
    model = oracle_for(x0)
    model.schedule = s
    _, traj = ddpm_sample(model, s, (n, 1, 1, 1), seed=0, variance="posterior", trajectory_steps=[150, 50, 5],
                          device="cpu", chunk_size=n)
    for i, t in enumerate(traj.steps):
        abar = s.alphas_cumprod[t].item()
        x = traj.x_t[i].double().flatten()
        assert x.mean().item() == pytest.approx(math.sqrt(abar) * 0.6, abs=5 * math.sqrt((1 - abar) / n) + 1e-3)
        assert x.var().item() == pytest.approx(1 - abar, rel=0.08)


def test_respaced_sampling_and_errors(small_model):
    s = NoiseSchedule.linear(100)
    out, traj = ddpm_sample(small_model, s, (1, 1, 32, 32), seed=0, steps=10, trajectory_steps=range(10))
    assert len(traj.steps) == 10 and out.shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(small_model, s, (0, 1, 32, 32), seed=0)
    with pytest.raises(ValueError, match="variance"):
        ddpm_sample(small_model, s, (1, 1, 32, 32), seed=0, variance="learned")
    with pytest.raises(ValueError, match="steps"):
        ddpm_sample(small_model, s, (1, 1, 32, 32), seed=0, steps=101)


class ToyConditional(torch.nn.Module):
    """eps(x, t, y) = 0.1 x + 0.01 y (a known function of the label, so guidance can be checked by hand)."""

    num_classes = 10

    def forward(self, x, t, y=None):
        y = torch.full((x.shape[0],), self.num_classes) if y is None else y
        return 0.1 * x + 0.01 * y.float().view(-1, 1, 1, 1)


def test_guidance_combines_conditional_and_unconditional_predictions():
    from ddpm_lib import guided

    model, x, t = ToyConditional(), torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 4])
    y = torch.tensor([0, 3, 7, 9])
    for w in (0.0, 1.0, 2.5, -1.0):
        cond, uncond = model(x, t, y), model(x, t, torch.full((4,), 10))
        by_hand = uncond + w * (cond - uncond)
        assert torch.allclose(guided(model, y, w)(x, t), by_hand, atol=1e-6)
    assert guided(model, None, 3.0) is model


def test_guided_sampling_checks_its_labels():
    model = ToyConditional()
    s = NoiseSchedule.linear(T=20)
    a = ddpm_sample(model, s, (3, 1, 8, 8), seed=0, labels=4, guidance=2.0)
    b = ddpm_sample(model, s, (3, 1, 8, 8), seed=0, labels=torch.tensor([4, 4, 4]), guidance=2.0)
    assert torch.equal(a, b)                                                # one int stands for every image
    c = ddpm_sample(model, s, (3, 1, 8, 8), seed=0, labels=torch.tensor([4, 4, 4]), guidance=2.0, chunk_size=1)
    assert torch.allclose(a, c, atol=1e-6)                                  # labels follow the chunks
    for labels, message in [(10, "0..9"), (-1, "0..9"), (torch.tensor([1, 2]), "shape"), (1.5, "integers")]:
        with pytest.raises(ValueError, match=message):
            ddpm_sample(model, s, (3, 1, 8, 8), seed=0, labels=labels)
    with pytest.raises(ValueError, match="unconditional"):
        ddpm_sample(lambda x, t: x, s, (3, 1, 8, 8), seed=0, labels=1)


def test_sampler_refuses_fractional_shapes_zero_chunks_and_nan_noise(small_model):
    """Issue 19: (2.7, ...) became 2, chunk_size=0 meant the default, and a NaN x_T gave NaN images."""
    s = NoiseSchedule.linear(10)
    with pytest.raises(ValueError, match="four whole numbers"):
        ddpm_sample(small_model, s, (2.7, 1, 32, 32), seed=0)
    with pytest.raises(ValueError, match="chunk_size must be a whole number >= 1"):
        ddpm_sample(small_model, s, (2, 1, 32, 32), seed=0, chunk_size=0)
    x_T = torch.randn(2, 1, 32, 32)
    x_T[1, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="x_T contains NaN"):
        ddpm_sample(small_model, s, (2, 1, 32, 32), x_T=x_T)


def test_class_labels_take_the_classes_in_turn_or_one_label():
    from ddpm_lib.sampling import class_labels

    assert class_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]             # `sample`: class i % K
    assert class_labels(6, 10, per_class=2).tolist() == [0, 0, 1, 1, 2, 2]   # grids: one row per class
    assert class_labels(3, 10, label=7).tolist() == [7, 7, 7]
    assert class_labels(3, 10).dtype == torch.long
