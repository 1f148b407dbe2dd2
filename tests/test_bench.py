"""The benchmark compares like with like, and reports what the issue asks for (no timing asserts)."""

import json
import subprocess
import sys

import torch

from ddpm_lib import NoiseSchedule, UNet
from ddpm_lib.bench import TutorialLoop
from ddpm_lib.unet import forward_gflop

REQUIRED = {"device", "preset", "params", "gflop_per_img", "batch_size", "train_img_per_s",
            "tutorial_loop_train_img_per_s", "sample_img_per_s", "tutorial_loop_sample_img_per_s"}


def test_tutorial_sampling_step_is_the_ddpm_step():
    """One step of the tutorial's loop equals Ho et al.'s eq. 11 mean plus sqrt(beta_t) noise."""
    torch.manual_seed(0)
    model = UNet().eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    loop = TutorialLoop(model, torch.zeros(4, 1, 32, 32), torch.device("cpu"), batch_size=4)
    torch.manual_seed(5)
    z_T = torch.randn(1, 1, 32, 32)
    noise = torch.randn(1, 1, 32, 32)
    torch.manual_seed(5)
    z = loop.sample_one(steps=1)                                           # draws z_T, then the step's noise
    s = NoiseSchedule.linear()
    t = torch.tensor([999])
    out = s.p_mean_variance(model, z_T, t, variance="beta", clip_denoised=False)
    assert torch.allclose(z, out["mean"] + s.betas[999].sqrt().float() * noise, atol=1e-5)


def test_flop_count_matches_a_hand_count_for_one_conv():
    conv = torch.nn.Conv2d(1, 8, 3, padding=1)
    model = lambda x, t: conv(x)
    model_wrapper = type("M", (), {"__call__": staticmethod(model)})()
    gflop = forward_gflop(model_wrapper, torch.device("cpu"), 1)
    assert abs(gflop - 2 * 32 * 32 * 8 * 9 / 1e9) < 1e-9                  # 2 FLOP per multiply-add


def test_bench_quick_prints_a_json_line_with_the_required_figures():
    result = subprocess.run([sys.executable, "-m", "ddpm_lib", "bench", "--device", "cpu", "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert REQUIRED <= set(last)
    assert last["device"] == "cpu" and last["preset"] == "tiny" and last["params"] == UNet().num_parameters()
    assert all(last[k] > 0 for k in REQUIRED - {"device", "preset"})
    assert "tutorial loop" in result.stdout and "speed-up" in result.stdout
