"""The UNet: shapes, sizes, the tutorial's layout, gradients everywhere, and that it can learn."""

import pytest
import torch

from ddpm_lib import NoiseSchedule, UNet, ddpm_loss
from ddpm_lib.unet import PRESETS, SelfAttention, timestep_embedding


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_presets_keep_the_image_shape(preset, channels):
    model = UNet.from_preset(preset, in_channels=channels).eval()
    x = torch.randn(2, channels, 32, 32)
    with torch.no_grad():
        assert model(x, torch.tensor([0, 999])).shape == (2, channels, 32, 32)


def test_parameter_counts_of_presets():
    tiny = UNet.from_preset("tiny").num_parameters()
    small = UNet.from_preset("small").num_parameters()
    tutorial = UNet.from_preset("tutorial").num_parameters()
    assert tiny == 359_905                                                 # regression guards
    assert small == 1_213_057
    assert tutorial == 36_216_129
    assert 34e6 < tutorial < 38e6                                          # the tutorial's "about 35M"
    assert tiny < small < 2e6                                              # CPU presets: a few million at most


def test_tutorial_preset_has_the_tutorials_layout():
    model = UNet.from_preset("tutorial")
    assert model.level_widths == [64, 128, 256, 512, 512, 384]
    attn_widths = sorted(m.qkv.in_channels for m in model.modules() if isinstance(m, SelfAttention))
    assert attn_widths == [128, 384]                                       # both 16x16 levels, as in the tutorial
    heads = {m.heads for m in model.modules() if isinstance(m, SelfAttention)}
    groups = {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)}
    dropouts = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
    assert heads == {8} and groups == {32} and dropouts == {0.1}


def test_time_embedding_values():
    emb = timestep_embedding(torch.tensor([0, 5]), 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))  # cos(0) = 1, sin(0) = 0
    assert emb[1, 0].item() == pytest.approx(torch.cos(torch.tensor(5.0)).item())
    with pytest.raises(ValueError):
        timestep_embedding(torch.tensor([1]), 7)


def test_output_depends_on_t():
    torch.manual_seed(0)
    model = UNet()
    for p in model.parameters():                                           # leave the zero-init start
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(model(x, torch.tensor([1])), model(x, torch.tensor([900])))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UNet(dropout=0.1)
    schedule = NoiseSchedule.linear()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x0 = torch.rand(4, 1, 32, 32) * 2 - 1
    for _ in range(2):                                                     # leave the zero-initialised start
        opt.zero_grad()
        ddpm_loss(model, schedule, x0).backward()
        opt.step()
    opt.zero_grad()
    ddpm_loss(model, schedule, x0).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert missing == []


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    model = UNet().eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(3, 1, 32, 32), torch.tensor([3, 300, 900])
    with torch.no_grad():
        a = model(x, t)
        b = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), t)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("model", [UNet.from_preset("tiny"), UNet.from_preset("tutorial"),
                                   UNet.from_preset("small", num_classes=10)],
                         ids=["tiny", "tutorial", "conditional"])
def test_stages_list_every_block_once_in_the_order_forward_runs_them(model):
    stages = model.stages()
    modules = [m for _, m in stages]
    assert len({id(m) for m in modules}) == len(modules)
    # every parameter belongs to exactly one stage: per-stage counts add up to the network
    owned = [id(p) for m in modules for p in m.parameters()]
    assert len(owned) == len(set(owned)) == len(list(model.parameters()))
    ran = []
    handles = [m.register_forward_hook(lambda m, i, o: ran.append(m)) for m in modules]
    y = torch.tensor([3, 10]) if model.num_classes else None
    with torch.no_grad():
        model(torch.randn(2, 1, 32, 32), torch.tensor([5, 500]), y)
    for h in handles:
        h.remove()
    assert [id(m) for m in ran] == [id(m) for m in modules]
    labels = [label for label, _ in stages]
    n_levels = len(model.down_levels)
    assert labels[-1] == "output head" and labels.count("stem") == 1
    assert sum(label.startswith("down") for label in labels) == n_levels
    assert sum(label.startswith("up") for label in labels) == n_levels
    res = model.image_size // 2 ** n_levels
    assert f"bottom {res}x{res}" in labels and ("label embedding" in labels) == bool(model.num_classes)


def test_wrong_input_shapes_are_named():
    model = UNet()
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        model(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="t of shape"):
        model(torch.randn(2, 1, 32, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="preset"):
        UNet.from_preset("huge")
    with pytest.raises(ValueError, match="num_groups"):
        UNet(base_channels=30)


def test_tiny_overfits_a_small_batch():
    """Eight fixed images: the loss on a fixed set of (t, noise) draws must fall far below its start (~1)."""
    torch.manual_seed(0)
    schedule = NoiseSchedule.linear()
    model = UNet.from_preset("tiny")
    x0 = (torch.rand(8, 1, 32, 32) > 0.7).float() * 2 - 1                 # fixed binary "images"
    gen = torch.Generator().manual_seed(1)
    x_eval = x0.repeat(16, 1, 1, 1)
    t_eval = torch.randint(0, schedule.T, (128,), generator=gen)
    noise_eval = torch.randn(x_eval.shape, generator=gen)

    def eval_loss() -> float:
        with torch.no_grad():
            return ddpm_loss(model, schedule, x_eval, t=t_eval, noise=noise_eval).item()

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(300):
        loss = ddpm_loss(model, schedule, x0, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert before > 0.9
    assert after < 0.3 * before, (before, after)


def test_conditional_unet_starts_as_the_unconditional_one_and_checks_labels():
    torch.manual_seed(0)
    plain = UNet.from_preset("tiny")
    cond = UNet.from_preset("tiny", num_classes=10)
    missing, unexpected = cond.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["label_embed.weight"] and not unexpected
    assert cond.label_embed.weight.shape == (11, 4 * 32)                  # K + 1 rows: the last is "no label"
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.01 * torch.randn_like(p))                             # make the output non-trivial
        cond.load_state_dict(plain.state_dict(), strict=False)
        x, t = torch.randn(4, 1, 32, 32), torch.tensor([0, 10, 500, 999])
        ref = plain(x, t)
        assert torch.equal(cond(x, t, torch.tensor([0, 3, 9, 10])), ref)   # zero label embedding
        assert torch.equal(cond(x, t), ref)                               # y=None is the "no label" token
        cond.label_embed.weight.normal_()
        assert not torch.allclose(cond(x, t, torch.tensor([0, 3, 9, 1])), cond(x, t))
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, t, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="0..10"):
        cond(x, t, torch.tensor([0, 1, 2, 11]))
    with pytest.raises(ValueError, match="shape"):
        cond(x, t, torch.zeros(3, dtype=torch.long))


def test_timesteps_and_dtypes_the_model_cannot_use_are_named():
    """Issue 19: t = 10**6, -5 or 2.5 ran silently; float64 images gave 'mat1 and mat2 must have the same dtype'."""
    model, x = UNet(), torch.randn(1, 1, 32, 32)
    for t, message in [(torch.tensor([10**6]), "0..99999"), (torch.tensor([-5]), "0..99999"),
                       (torch.tensor([2.5]), "integer timesteps")]:
        with pytest.raises(ValueError, match=message):
            model(x, t)
    with pytest.raises(ValueError, match="images are torch.float64 but the model's weights are torch.float32"):
        model(x.double(), torch.tensor([3]))
    assert model.double()(x.double(), torch.tensor([3])).dtype == torch.float64    # matching dtypes are fine
