"""The keys of 3. the network (chapter 3): each exercise's expected value, the variant functions that reproduce its
common mistakes, its trials; the prose (titles, the mistakes' messages, the questions) is in text/unet.yaml.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

from functools import lru_cache

import torch

from .engine import register_chapter


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _resblock_params(*, C: int = 96, D: int = 384, missing: str | None = None) -> int:
    """The parameters of a ResBlock, or that count less the GroupNorms, the biases or one convolution."""
    from ...unet import ResBlock
    return _n_params(ResBlock(C, D, dropout=0.0, groups=32)) - {None: 0, "groupnorms": 4 * C, "biases": 3 * C,
                                                                  "conv": 9 * C ** 2 + C}[missing]


@lru_cache(maxsize=None)
def _head_input_shape() -> tuple[int, ...]:
    from ...unet import UNet
    net = UNet(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, attention_resolutions=(),
               num_groups=8)
    seen = {}
    handle = net.out.register_forward_pre_hook(lambda m, args: seen.update(shape=args[0].shape))
    with torch.no_grad():
        net(torch.zeros(4, 1, 32, 32), torch.zeros(4, dtype=torch.long))
    handle.remove()
    return tuple(seen["shape"])


@lru_cache(maxsize=None)
def _attention_bmm_flops(channels: int = 384, res: int = 16, heads: int = 8) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from ...unet import SelfAttention
    layer = SelfAttention(channels, heads, groups=32)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        layer(torch.zeros(1, channels, res, res))
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return ops["aten.bmm"]


def _attention_answer(*, products: int = 2, factor: float | None = None) -> list:
    """[the products' FLOPs at 16x16 (of ``products`` bmm's), the factor at 32x32]."""
    flops = _attention_bmm_flops()
    return [flops * products // 2, _attention_bmm_flops(res=32) / flops if factor is None else factor]


def _embedding_trials(generator):
    out = []
    for dim in (8, 32, 64):
        out.append((torch.randint(0, 1000, (5,), generator=generator), dim))
    return out


def _emb(t, dim, *, order="cos-sin", denominator="half"):
    """The embedding with the halves in ``order``, k divided by d/2 ("half"), d/2 - 1 ("half-1") or d ("dim")."""
    half = dim // 2
    k = torch.arange(half, dtype=torch.float64)
    freqs = 10000.0 ** (-k / {"half": half, "half-1": half - 1, "dim": 2 * half}[denominator])
    args = t.double()[:, None] * freqs[None, :]
    cos, sin = torch.cos(args), torch.sin(args)
    if order == "sin-cos":
        return torch.cat([sin, cos], dim=1)
    if order == "interleaved":
        return torch.stack([cos, sin], dim=2).reshape(t.shape[0], dim)
    return torch.cat([cos, sin], dim=1)


def _embedding_reference(t, dim):
    from ...unet import timestep_embedding
    return timestep_embedding(t, dim)


register_chapter("unet", {
    "ex-unet-resblock-params": {"expected": _resblock_params, "variant": _resblock_params},
    "ex-unet-shape": {"expected": _head_input_shape},
    "ex-unet-attention-flops": {"expected": _attention_answer, "variant": _attention_answer},
    "ex-unet-embedding": {"trials": _embedding_trials, "reference": _embedding_reference, "variant": _emb},
})
