"""The keys of 3. the network (chapter 3): each exercise's expected value, its common mistakes, its trials.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

from functools import lru_cache

import torch

from .engine import ChoiceExercise, FunctionExercise, ValueExercise, _register


def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _resblock_params(C: int = 96, D: int = 384) -> int:
    from ...unet import ResBlock
    return _n_params(ResBlock(C, D, dropout=0.0, groups=32))


_register("ex-unet-resblock-params", ValueExercise(
    "parameters of a ResBlock with C = 96, D = 384",
    expected=lambda: _resblock_params(),
    mistakes=lambda: [
        ("forgot the GroupNorms: each has a scale and a shift per channel (4C in all)",
         _resblock_params() - 4 * 96),
        ("forgot the biases: each conv and the projection have C of them",
         _resblock_params() - 3 * 96),
        ("a ResBlock has two 3x3 convolutions, not one", _resblock_params() - 9 * 96 ** 2 - 96),
        ("that is the tutorial preset's 16x16 block (C = 128, D = 256): this one has C = 96, D = 384",
         _resblock_params(128, 256))],
    rtol=0, atol=0))


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


_register("ex-unet-shape", ValueExercise(
    "shape entering the output head", expected=lambda: _head_input_shape(),
    mistakes=lambda: [
        ("that is the first encoder level's width: the last decoder level adds its skip "
         "to half the width from below", (4, 16, 32, 32)),
        ("that is the output's shape: the head maps the last decoder level to 1 channel",
         (4, 1, 32, 32)),
        ("no skip added: C_decoder = C_below / 2 + C_skip at every level", (4, 8, 32, 32)),
        ("C_below was not halved: the transposed convolution halves it", (4, 80, 32, 32))],
    rtol=0, atol=0))


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


_register("ex-unet-attention-flops", ValueExercise(
    "attention products at 16x16, and the factor at 32x32",
    expected=lambda: [_attention_bmm_flops(), _attention_bmm_flops(res=32) / _attention_bmm_flops()],
    mistakes=lambda: [
        ("the factor: at 32x32 L is 4 times larger, and the products grow with L^2",
         [_attention_bmm_flops(), 4]),
        ("one product only: QK^T and (weights)V cost 2 L^2 d each",
         [_attention_bmm_flops() // 2, 16])],
    rtol=0, atol=0))


def _embedding_trials(generator):
    out = []
    for dim in (8, 32, 64):
        out.append((torch.randint(0, 1000, (5,), generator=generator), dim))
    return out


def _emb(t, dim, *, order="cos-sin", denominator=None):
    half = dim // 2
    k = torch.arange(half, dtype=torch.float64)
    freqs = 10000.0 ** (-k / (denominator(half) if denominator else half))
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


_register("ex-unet-embedding", FunctionExercise(
    "the sinusoidal time embedding", "my_embedding(t, dim) -> (B, dim)",
    trials=_embedding_trials, reference=_embedding_reference,
    mistakes=(
        ("sines first is Ho et al.'s own order, a fine convention; in this book's timestep_embedding "
         "(as in improved-diffusion) the cosines come first, then the sines",
         lambda t, dim: _emb(t, dim, order="sin-cos")),
        ("cos and sin are interleaved: put all the cosines first, then all the sines",
         lambda t, dim: _emb(t, dim, order="interleaved")),
        ("the frequencies: dividing k by d/2 - 1 is Ho et al.'s own spacing, a fine convention; "
         "this book's (improved-diffusion's) is f_k = 10000^(-k / (d/2))",
         lambda t, dim: _emb(t, dim, denominator=lambda h: h - 1)),
        ("the frequencies: f_k = 10000^(-k / (d/2)); that divides k by d",
         lambda t, dim: _emb(t, dim, denominator=lambda h: 2 * h)),
    ), rtol=1e-4, atol=1e-3))

_register("ex-unet-why-skips", ChoiceExercise(
    "why the decoder concatenates the skips",
    right=r"the bottom level sees a few pixels; the skips bring each resolution's detail back, so "
          r"$\epsilon$ fits pixel by pixel",
    why="The bottom level sees the image in a few pixels; the skips carry each resolution's detail "
        "across, so eps can be right pixel by pixel.",
    wrong=((r"they let the decoder reuse what the encoder computed at each level, so the decoder needs "
            r"fewer parameters and FLOPs",
            "the skips add parameters and FLOPs (the decoder is wider), they do not save them"),
           (r"they carry the time embedding to the decoder, which would otherwise not know how much noise "
            r"$x_t$ holds",
            "t enters through the time embedding in every ResBlock, not through the skips"),
           (r"they set the decoder's output size: without them the upsampling could not return to the "
            r"input's $32 \times 32$",
            "the output has the input's shape because of the decoder's upsampling and the head, with or "
            "without skips"))))
