"""The book's performance tables (chapter 3, appendix A2): parameters, FLOPs and time per stage of a
UNet (the stages of :meth:`UNet.stages`), and the ladder from the seed tutorial's loops to ddpm_lib's, one
change at a time. The measurements themselves (the tutorial's loops, timing, the whole network's FLOPs)
are the library's, :mod:`ddpm_lib.bench` and :func:`ddpm_lib.unet.forward_gflop`.
"""

from __future__ import annotations

import tempfile
import time

import torch
from torch import nn

from ..bench import TutorialLoop, timed
from ..config import RunConfig
from ..device import resolve_device
from ..sampling import ddpm_sample
from ..schedule import NoiseSchedule
from ..training import Trainer
from ..unet import UNet


# ----------------------------------------------------------------------------- per stage (chapter 3, A2)
def module_parameters(module: nn.Module) -> int:
    """The number of parameters of any module (a block, a convolution; a whole UNet has num_parameters)."""
    return sum(p.numel() for p in module.parameters())


def flops_by_module(model: nn.Module) -> tuple[dict[str, int], int]:
    """FLOPs of a forward pass of one image (1, 1, 32, 32), per module by its name in
    ``model.named_modules()`` (2 per multiply-add), and in all, from PyTorch's ``FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, depth=None)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 1, 32, 32), torch.zeros(1, dtype=torch.long))
    counts = {name.removeprefix("UNet").removeprefix("."): sum(ops.values())
              for name, ops in counter.get_flop_counts().items()}
    return counts, counter.get_total_flops()


def per_stage(model: UNet, counts: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Parameters and FLOPs (``counts``, from :func:`flops_by_module`) grouped by stage, in forward order."""
    names = {m: n for n, m in model.named_modules()}
    table: dict[str, tuple[int, int]] = {}
    for stage, module in model.stages():
        p, f = table.get(stage, (0, 0))
        table[stage] = (p + module_parameters(module), f + counts.get(names[module], 0))
    return table


def time_blocks(model: UNet, batch: int, repeats: int = 2) -> dict[nn.Module, float]:
    """Seconds spent in each block of ``model.stages()`` in a forward pass of ``batch`` images, timed with
    a pair of hooks (before and after) on every block: the best of ``repeats`` passes after a warm-up."""
    blocks = [m for _, m in model.stages()]
    spent, started = {m: [] for m in blocks}, {}
    start = lambda m, a: started.__setitem__(m, time.perf_counter())
    stop = lambda m, a, o: spent[m].append(time.perf_counter() - started[m])
    pre = [m.register_forward_pre_hook(start) for m in blocks]
    post = [m.register_forward_hook(stop) for m in blocks]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 32, 32, generator=gen)            # (batch, 1, 32, 32)
    t = torch.randint(0, 1000, (batch,), generator=gen)         # (batch,)
    try:
        with torch.no_grad():
            model(x, t)                                          # warm-up: the same shapes
            for s in spent.values():
                s.clear()
            for _ in range(repeats):
                model(x, t)
    finally:
        for h in pre + post:
            h.remove()
    return {m: min(s) for m, s in spent.items()}                 # the least disturbed of the passes


# ----------------------------------------------------------------------------- the ladder (appendix A2)
def ladder(device: str = "auto", preset: str | None = None, quick: bool = True) -> list[dict]:
    """Training and sampling throughput as the tutorial's loops become ddpm_lib's, one change at a time.

    Each row adds one change to the row above and reports images per second. Training rows use batch 64
    and the same UNet; sampling rows are full 1,000-step rates estimated from a few steps.
    """
    dev = resolve_device(device)
    preset = preset or ("tutorial" if dev.type == "cuda" else "tiny")
    iters = 6 if quick else 20
    torch.manual_seed(0)
    data = torch.rand(2048, 1, 32, 32) * 2 - 1
    rows: list[dict] = []

    def train_row(name: str, loop: TutorialLoop, note: str) -> None:
        s = timed(loop.train_step, dev, warmup=2, iters=iters)
        rows.append({"part": "train", "change": name, "img_per_s": round(loop.batch_size / s, 1), "note": note})

    loop = TutorialLoop(UNet.from_preset(preset), data, dev, 64)
    train_row("tutorial loop", loop, "fp32, host t lookup, per-parameter EMA, loss.item() each step")

    class ForeachEMA(TutorialLoop):
        def update_ema(self):                                              # the tutorial's step, one fused EMA
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.model.parameters()], 1 - self.ema_decay)

    train_row("+ foreach EMA", ForeachEMA(UNet.from_preset(preset), data, dev, 64), "one fused update for all weights")
    cl = ForeachEMA(UNet.from_preset(preset).to(memory_format=torch.channels_last),
                    data.contiguous(memory_format=torch.channels_last), dev, 64)
    train_row("+ channels_last", cl, "NHWC memory: faster convolutions on CPU and GPU")

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(RunConfig(preset=preset, batch_size=64, device=str(dev), out=tmp, progress=False,
                                    steps=10**9, warmup_steps=0), data=data)
        s = timed(trainer.train_step, dev, warmup=2, iters=iters)
        rows.append({"part": "train", "change": "= ddpm_lib Trainer", "img_per_s": round(64 / s, 1),
                     "note": "data and RNG on the device, AdamW, clipping, NaN guard" +
                             (", bf16, fused AdamW" if dev.type == "cuda" else "")})
        model = trainer.ema.module

    steps = 5 if quick else 20
    loop = TutorialLoop(UNet.from_preset(preset), data, dev, 64)
    s = timed(lambda: loop.sample_one(steps), dev, warmup=1, iters=1)
    rows.append({"part": "sample", "change": "tutorial loop", "img_per_s": round(1 / (s * 1000 / steps), 4),
                 "note": "one image at a time, noise and update on the host"})
    schedule = NoiseSchedule.linear().respace(steps)
    plain = UNet.from_preset(preset).to(dev).eval()
    plain.load_state_dict(model.state_dict())
    for name, net, note in (("+ batch of 64 on the device", plain, "ddpm_sample, NCHW"),
                            ("+ channels_last", model.to(memory_format=torch.channels_last), "= ddpm_lib ddpm_sample")):
        s = timed(lambda: ddpm_sample(net, schedule, (64, 1, 32, 32), seed=0, device=dev), dev, warmup=1, iters=1)
        rows.append({"part": "sample", "change": name, "img_per_s": round(64 / (s * 1000 / steps), 4), "note": note})
    return rows
