"""ddpm_lib.book.perf: the per-stage tables of chapter 3 and appendix A2 add up to the whole network."""

import math

import torch

from ddpm_lib import UNet
from ddpm_lib.book.perf import flops_by_module, module_parameters, per_stage, time_blocks
from ddpm_lib.unet import forward_gflop


def test_stages_add_up_to_the_network():
    model = UNet.from_preset("tiny").eval()
    counts, total = flops_by_module(model)
    table = per_stage(model, counts)
    assert sum(p for p, _ in table.values()) == model.num_parameters() == module_parameters(model)
    assert sum(f for _, f in table.values()) == total              # concatenations cost no FLOPs
    assert math.isclose(total / 1e9, forward_gflop(model, torch.device("cpu"), 1), rel_tol=1e-9)


def test_every_block_is_timed_and_the_hooks_are_removed():
    model = UNet.from_preset("tiny").eval()
    spent = time_blocks(model, batch=2, repeats=1)
    assert set(spent) == {m for _, m in model.stages()} and all(s > 0 for s in spent.values())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
