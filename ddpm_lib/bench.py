"""``python -m ddpm_lib bench``: the seed tutorial's training and sampling loops against ddpm_lib's.

Both sides use the same UNet and the same image shape, in one process, so the table measures the
loops, not the architectures. The tutorial's loops are re-implemented as it runs them (DiSalvo 2024):

* training: float32, NCHW, batch 64 by default; t drawn on the host and the alpha_bar lookup done on
  the host, then copied to the device; plain Adam; ``nn.MSELoss``; ``loss.item()`` every step; the EMA
  updated parameter by parameter in a Python loop (as timm's ModelEmaV3 without foreach does);
* sampling: one image at a time; noise drawn on the host and copied each step; the model output
  copied back to the host every step; the update computed there.

ddpm_lib's side is the library itself: ``Trainer.train_step`` (data resident on the device, one
generator on the device, channels_last, fused AdamW and bf16 autocast on CUDA, a foreach EMA,
optional torch.compile) and ``ddpm_sample`` (batched, on the device, no host copies per step).

Clocks are read only after ``torch.cuda.synchronize()``; every measurement is preceded by warm-up.
Full 1,000-step sampling is estimated from fewer steps (each step costs the same), and says so.
"""

from __future__ import annotations

import functools
import tempfile
import time
from typing import Callable

import torch
from torch import nn

from .sampling import ddpm_sample
from .schedule import NoiseSchedule
from .config import RunConfig
from .device import resolve_device
from .training import Trainer
from .unet import UNet, forward_gflop

# Dense bf16 peak of the GPUs we know, in TFLOP/s (no sparsity), for the MFU column.
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "T4": 65.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: torch.device, *, warmup: int, iters: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls, over ``iters`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


# ----------------------------------------------------------------------------- the tutorial's loops
class TutorialLoop:
    """The seed tutorial's training step and sampler, re-implemented faithfully on a given UNet."""

    def __init__(self, model: nn.Module, data: torch.Tensor, device: torch.device, batch_size: int,
                 T: int = 1000, lr: float = 2e-5, ema_decay: float = 0.9999):
        self.model = model.to(device)
        self.device = device
        self.data = data                                                   # on the host, like a DataLoader's batches
        self.batch_size = batch_size
        self.T = T
        self.beta = torch.linspace(1e-4, 0.02, T)                          # host tensors, as in DDPM_Scheduler
        self.alpha = torch.cumprod(1 - self.beta, dim=0)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.criterion = nn.MSELoss(reduction="mean")
        self.ema = [p.detach().clone() for p in model.parameters()]
        self.ema_decay = ema_decay
        self.total_loss = 0.0

    def train_step(self) -> None:
        idx = torch.randint(0, self.data.shape[0], (self.batch_size,))
        x = self.data[idx].to(self.device)                                 # batch copied host -> device
        t = torch.randint(0, self.T, (self.batch_size,))                   # t on the host
        e = torch.randn_like(x, requires_grad=False)
        a = self.alpha[t].view(self.batch_size, 1, 1, 1).to(self.device)   # lookup on the host, then copied
        x = torch.sqrt(a) * x + torch.sqrt(1 - a) * e
        output = self.model(x, t.to(self.device))
        self.optimizer.zero_grad()
        loss = self.criterion(output, e)
        self.total_loss += loss.item()                                     # a host sync every step
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.update_ema()

    def update_ema(self) -> None:
        """The tutorial's EMA: one parameter at a time."""
        for ema_p, p in zip(self.ema, self.model.parameters()):
            ema_p.mul_(self.ema_decay).add_(p.detach(), alpha=1 - self.ema_decay)

    @torch.no_grad()
    def sample_one(self, steps: int) -> torch.Tensor:
        """The tutorial's inference loop for one image, stopped after ``steps`` reverse steps."""
        self.model.eval()
        z = torch.randn(1, 1 if self.data.shape[1] == 1 else self.data.shape[1], 32, 32)
        for t in list(reversed(range(1, self.T)))[:steps]:
            tt = [t]
            temp = self.beta[tt] / (torch.sqrt(1 - self.alpha[tt]) * torch.sqrt(1 - self.beta[tt]))
            eps = self.model(z.to(self.device), torch.tensor(tt, device=self.device)).cpu()
            z = (1 / torch.sqrt(1 - self.beta[tt])) * z - temp * eps
            e = torch.randn(1, *z.shape[1:])
            z = z + e * torch.sqrt(self.beta[tt])
        self.model.train()
        return z


# ----------------------------------------------------------------------------- the benchmark
def run_bench(device: str = "auto", preset: str | None = None, batch_size: int | None = None, quick: bool = False,
              compile: bool | None = None, print_table: bool = True) -> dict:
    """Measure both loops; returns the result dict (the CLI prints it as its last line, as JSON)."""
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    preset = preset or ("tutorial" if cuda else "tiny")
    batch = batch_size or (256 if cuda else 64)
    compile = cuda if compile is None else compile
    tutorial_batch = 64
    channels = 1
    torch.manual_seed(0)
    data = torch.rand(4096, channels, 32, 32) * 2 - 1                      # the shape of padded MNIST

    probe = UNet.from_preset(preset, in_channels=channels).to(dev)
    params = probe.num_parameters()
    gflop = forward_gflop(probe, dev, channels)
    del probe

    train_iters = (10 if quick else 30) if not cuda else (20 if quick else 100)
    sample_steps_tut = 5 if quick else 20                                  # of 1000, then scaled
    sample_steps_lib = 5 if quick else 20
    results: dict = {"device": torch.cuda.get_device_name(dev) if cuda else "cpu", "preset": preset,
                     "params": params, "gflop_per_img": round(gflop, 3), "batch_size": batch,
                     "tutorial_batch_size": tutorial_batch, "compile": bool(compile),
                     "torch": str(torch.__version__), "threads": torch.get_num_threads()}

    # tutorial training loop
    tut = TutorialLoop(UNet.from_preset(preset, in_channels=channels), data, dev, tutorial_batch)
    tut.model.train()
    s = timed(tut.train_step, dev, warmup=2, iters=train_iters)
    results["tutorial_loop_train_img_per_s"] = round(tutorial_batch / s, 2)

    # tutorial sampler: one image at a time, scaled from a few steps to 1000
    s = timed(functools.partial(tut.sample_one, sample_steps_tut), dev, warmup=1, iters=1 if quick else 2)
    results["tutorial_loop_sample_img_per_s"] = round(1.0 / (s * 1000 / sample_steps_tut), 5)
    del tut

    # ddpm_lib training: the Trainer's own step
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(preset=preset, batch_size=batch, device=str(dev), compile=compile, out=tmp,
                           progress=False, steps=10**9, warmup_steps=0)
        trainer = Trainer(config, data=data)
        s = timed(trainer.train_step, dev, warmup=3 if not compile else 10, iters=train_iters)
        results["train_img_per_s"] = round(batch / s, 2)
        model = trainer.ema.module
        if compile:
            model = torch.compile(model)
        del trainer

    # ddpm_lib sampling: a batch on the device, scaled from a few steps to 1000
    n = 64 if not cuda else (256 if quick else 1024)
    schedule = NoiseSchedule.linear()
    spaced = schedule.respace(sample_steps_lib)                            # same cost per step as the full chain
    shape = (n, channels, 32, 32)
    s = timed(lambda: ddpm_sample(model, spaced, shape, seed=0, device=dev), dev, warmup=1, iters=1 if quick else 2)
    results["sample_img_per_s"] = round(n / (s * 1000 / sample_steps_lib), 4)
    results["sample_batch"] = n
    results["sampling_note"] = (f"1000-step rates estimated from {sample_steps_lib} (ddpm_lib) and "
                                f"{sample_steps_tut} (tutorial) steps; every step costs the same")

    results["train_speedup"] = round(results["train_img_per_s"] / results["tutorial_loop_train_img_per_s"], 2)
    results["sample_speedup"] = round(results["sample_img_per_s"] / results["tutorial_loop_sample_img_per_s"], 2)
    if cuda:
        name = results["device"]
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        tflops = 3 * gflop * results["train_img_per_s"] / 1e3          # forward + backward ~ 3x forward
        results["tflops"] = round(tflops, 1)
        results["mfu"] = round(tflops / peak, 4) if peak else None
    if print_table:
        print_results(results)
    return results


def print_results(r: dict) -> None:
    print(f"device {r['device']}, preset {r['preset']} ({r['params'] / 1e6:.2f}M parameters, "
          f"{r['gflop_per_img']:.3f} GFLOP per image forward), torch {r['torch']}")
    print(f"{'':28}{'tutorial loop':>16}{'ddpm_lib':>14}{'speed-up':>10}")
    print(f"{'train (img/s)':28}{r['tutorial_loop_train_img_per_s']:>16.1f}{r['train_img_per_s']:>14.1f}"
          f"{r['train_speedup']:>9.2f}x")
    print(f"{'sample, 1000 steps (img/s)':28}{r['tutorial_loop_sample_img_per_s']:>16.4f}{r['sample_img_per_s']:>14.4f}"
          f"{r['sample_speedup']:>9.1f}x")
    print(f"training batch: tutorial {r['tutorial_batch_size']}, ddpm_lib {r['batch_size']}; "
          f"sampling batch: tutorial 1, ddpm_lib {r['sample_batch']}. {r['sampling_note']}.")
    if "tflops" in r:
        print(f"training throughput {r['tflops']} TFLOP/s, MFU {r['mfu']}")
