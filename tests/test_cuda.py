"""What runs only where a CUDA GPU is: the book's GPU commands, end to end, at a few steps each.

Skipped without a GPU (`make test` never needs one); `make test-gpu` runs these and the chapters in the
CUDA profile. Each test reproduces a way the GPU path has failed or could fail: a schedule on the GPU that
could not be saved (the first checkpoint of a CUDA run crashed), respaced sampling there, bf16 and fp16
autocast, torch.compile, and resuming a GPU run exactly.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddpm_lib import (NoiseSchedule, RunConfig, Trainer, UNet, ddim_sample, ddpm_sample, load_checkpoint,
                      model_from_checkpoint)
from ddpm_lib.device import native_bf16

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)")]

CUDA = torch.device("cuda")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ddpm_lib", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def digits(mnist_sample):
    return mnist_sample[:512]


@pytest.fixture
def config(run_config):
    """This module's runs: 6 steps of 16 images on the GPU, checkpoints every 3."""
    return functools.partial(run_config, batch_size=16, device="cuda", warmup_steps=1, log_every=RunConfig.log_every)


def test_schedule_moves_and_saves_from_the_gpu(config):
    sched = NoiseSchedule.linear().respace(50).to(CUDA)
    assert sched.betas.is_cuda and sched.timestep_map.is_cuda
    again = NoiseSchedule.from_config(sched.to_config())                   # the crash of the first checkpoint
    assert again.same_as(sched.to("cpu"))
    x = torch.zeros(2, 1, 8, 8, device=CUDA)
    assert sched.q_sample(x, torch.tensor([0, 49], device=CUDA)).is_cuda


def test_the_books_full_size_command_writes_checkpoints_and_resumes(tmp_path):
    """Chapter 4's command (tutorial preset, batch 256, compiled), a few steps instead of 20,000."""
    out = tmp_path / "full"
    first = cli("train", "--preset", "tutorial", "--dataset", "mnist-sample", "--batch-size", 256, "--steps", 4,
                "--lr", "2e-4", "--ema-decay", "0.9995", "--checkpoint-every", 2, "--out", out, "--compile",
                "--no-progress")
    assert first.returncode == 0, first.stderr
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 4 and ckpt["config"]["compile"] is True
    again = cli("train", "--resume", "--out", out, "--steps", 6, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(out / "last.pt")["step"] == 6
    sample = cli("sample", "--checkpoint", out / "last.pt", "--n", 8, "--steps", 10, "--out", tmp_path / "s",
                 "--no-progress")
    assert sample.returncode == 0, sample.stderr
    with np.load(tmp_path / "s" / "samples.npz") as f:
        assert f["images"].shape == (8, 32, 32)


@pytest.mark.parametrize("steps", [10, 1000])
def test_shipped_model_samples_on_the_gpu_like_on_the_cpu(steps):
    """Respaced and full sampling on CUDA; the images match the CPU's up to TF32/kernel differences."""
    model, schedule = model_from_checkpoint(load_checkpoint(), device=CUDA)
    n = 4 if steps == 1000 else 16
    gpu = ddpm_sample(model, schedule, (n, 1, 32, 32), seed=0, steps=steps).cpu()
    assert gpu.shape == (n, 1, 32, 32) and torch.isfinite(gpu).all()
    if steps == 10:
        # The same x_T (drawn on the CPU) through DDIM with eta = 0, which draws no further noise: a device's
        # generator gives other numbers than the CPU's for the same seed, so DDPM's per-step noise would differ
        # (on an H200 the images then differed by 0.35 on average). TF32 convolutions round to 10 bits of
        # mantissa (~1e-3 relative), and the ten steps shrink, not amplify, what the model adds, so the images
        # agree to a few 1e-2 at worst; a wrong device path gives differences of order 1.
        x_T = torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        cpu_model, cpu_schedule = model_from_checkpoint(load_checkpoint())
        on_cpu = ddim_sample(cpu_model, cpu_schedule, (n, 1, 32, 32), steps=steps, x_T=x_T)
        on_gpu = ddim_sample(model, schedule, (n, 1, 32, 32), steps=steps, x_T=x_T).cpu()
        assert (on_cpu - on_gpu).abs().mean() < 0.05


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_training_on_the_gpu(tmp_path, digits, precision, config):
    if precision == "bf16" and not native_bf16(CUDA):
        pytest.skip("this GPU has no bf16 units")
    trainer = Trainer(config(precision=precision, steps=20), data=digits)
    assert (trainer.scaler is not None) == (precision == "fp16")
    rows = trainer.train()
    assert all(np.isfinite(r["loss"]) for r in rows) and trainer.skipped_steps <= 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 20


def test_auto_precision_picks_what_the_gpu_has(config, digits):
    trainer = Trainer(config(), data=digits)
    assert trainer.amp_dtype == (torch.bfloat16 if native_bf16(CUDA) else torch.float16)


def test_compiled_training_resumes_exactly(tmp_path, digits, config):
    straight = Trainer(config("a", compile=True, precision="fp32"), data=digits)
    losses = [r["loss"] for r in straight.train()]
    first = Trainer(config("b", steps=3, compile=True, precision="fp32"), data=digits)
    first.train()
    second = Trainer.resume(tmp_path / "b" / "last.pt", {"steps": 6}, data=digits)
    # cuDNN may pick other kernels in a new process, so GPU resumes agree to float32 rounding, not bit for bit.
    assert np.allclose(losses[3:], [r["loss"] for r in second.train()], rtol=1e-3, atol=1e-5)


def test_conditional_guided_sampling_on_the_gpu():
    model = UNet.from_preset("tiny", num_classes=10).to(CUDA).eval()
    images = ddpm_sample(model, NoiseSchedule.linear(), (6, 1, 32, 32), seed=0, steps=5, labels=3, guidance=2.0)
    assert images.is_cuda and images.shape == (6, 1, 32, 32)
