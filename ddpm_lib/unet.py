"""The noise-prediction network eps_theta(x_t, t): a UNet with time conditioning and self-attention.

The layout generalises the one of the tutorial this project grew from (N. DiSalvo, "Diffusion Model
from Scratch in PyTorch", 2024), which itself follows Ho et al. (2020):

* a 3x3 stem convolution to ``base_channels``;
* encoder levels at resolutions 32, 16, 8, ...: ``num_res_blocks`` residual blocks of constant width
  (one self-attention layer after the first block where the resolution is in
  ``attention_resolutions``), then a stride-2 convolution to the next level's width;
* a bottom level with the same blocks, then a stride-2 transposed convolution that halves the width;
* decoder levels whose width is (width from below) / 2 + (skip width), because the encoder's output
  at that resolution is concatenated on; each has the same blocks and a transposed convolution;
* at full resolution the last skip is concatenated and a 3x3 conv, SiLU and 1x1 conv give eps.

With ``base_channels=64, channel_mult=(1, 2, 4, 8)`` the level widths are the tutorial's
64, 128, 256, 512, 512, 384. What differs from the tutorial, and why, is listed in ``PRESETS`` and in
chapter 3 of the book: a learned time-embedding MLP with a projection in every block (the tutorial
slices one fixed sinusoid), time added after the first convolution, SiLU, GroupNorm and a residual
connection around attention, and zero-initialised last layers so every block starts as the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .schedule import MAX_TIMESTEPS


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017): (B,) -> (B, dim).

    Half of the features are cos(t * f_k) and half sin(t * f_k) with frequencies
    f_k = max_period^(-k / (dim/2)), k = 0 .. dim/2 - 1.
    """
    if dim % 2:
        raise ValueError(f"the time-embedding width must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]                            # (B, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)           # (B, dim)


def zero_init(module: nn.Module) -> nn.Module:
    """Set a layer's weights and bias to zero, so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv; add the projected time embedding; GroupNorm, SiLU, dropout, conv; + x.

    The time embedding goes through SiLU before this block's projection (as in Ho et al. and
    improved-diffusion), so the projection is not a linear continuation of the shared time MLP.
    """

    def __init__(self, channels: int, time_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:                  # x (B, C, H, W), temb (B, D)
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]             # (B, C, 1, 1) broadcast
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return x + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, with GroupNorm in front and a residual path.

    Uses ``F.scaled_dot_product_attention``, which picks a fused (flash or memory-efficient) kernel
    on CUDA.
    """

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention width {channels} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:                                # (B, C, H, W)
        _, _, height, width = x.shape
        qkv = self.qkv(self.norm(x))                                       # (B, 3C, H, W)
        q, k, v = rearrange(qkv, "b (three heads d) h w -> three b heads (h w) d", three=3, heads=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)                      # (B, heads, HW, d)
        out = rearrange(out, "b heads (h w) d -> b (heads d) h w", h=height, w=width)
        return x + self.proj(out)


class Level(nn.Module):
    """The blocks at one resolution: ResBlock, [attention], ResBlock, ... (attention after the first)."""

    def __init__(self, channels: int, num_res_blocks: int, attention: bool, time_dim: int,
                 dropout: float, groups: int, heads: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(num_res_blocks):
            self.blocks.append(ResBlock(channels, time_dim, dropout, groups))
            if attention and i == 0:
                self.blocks.append(SelfAttention(channels, heads, groups))

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, temb) if isinstance(block, ResBlock) else block(x)
        return x


# Named configurations. "tutorial" is the seed tutorial's network (about 36M parameters). "tiny" is
# shaped for a laptop CPU (0.36M parameters): convolutions at 32x32 cost the most there, so it keeps
# few channels at full resolution, one residual block per level and attention only at 8x8; one forward
# pass of 256 images takes about a quarter of a second on a 2-core CPU (see `python -m ddpm_lib bench`).
# "small" (1.2M parameters) widens the lower levels to 32, 64, 128 channels, where convolutions are
# cheap: about 0.4 s per forward pass of 256 images and 0.23 s per training step of 64 on the same CPU.
# It is the network of the MNIST checkpoint that ships with the book (ddpm_lib/configs/mnist_small.yml).
PRESETS: dict[str, dict] = {
    "tiny": dict(base_channels=32, channel_mult=(1, 1, 2), num_res_blocks=1, attention_resolutions=(8,),
                 num_heads=4, dropout=0.0, num_groups=8),
    "small": dict(base_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1, attention_resolutions=(8,),
                  num_heads=4, dropout=0.0, num_groups=8),
    # The shipped MNIST model (issue 31): parameters spent at 8x8 and 4x4, where they cost few FLOPs, so a
    # laptop CPU still samples quickly (5.96M parameters, 1.11 GFLOP per image forward, against small's 1.21M
    # and 0.46). At equal GPU time it beat small and a two-blocks-per-level variant (A1, the model card).
    "base": dict(base_channels=32, channel_mult=(1, 2, 4, 8), num_res_blocks=1, attention_resolutions=(8, 4),
                 num_heads=4, dropout=0.1, num_groups=8),
    "tutorial": dict(base_channels=64, channel_mult=(1, 2, 4, 8), num_res_blocks=2, attention_resolutions=(16,),
                     num_heads=8, dropout=0.1, num_groups=32),
}


# The most classes a conditional model may have (its label embedding: (K + 1) x time_dim floats).
MAX_CLASSES = 1_000_000


def training_bytes_per_parameter() -> int:
    """Float32 copies of each weight while training: the weight, its gradient, AdamW's two moments, the EMA."""
    return 5 * 4


def parameter_count(config: dict) -> int:
    """Parameters of a UNet built from ``config``, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in UNet(**config).parameters())


def conv_output_bytes(config: dict) -> tuple[int, int]:
    """Float32 bytes of one image's convolution outputs in a UNet built from ``config``: (all of them, the largest).

    A lower bound on memory per image: training keeps every convolution's output for the backward pass (the
    first number), and any forward pass holds at least the largest (the second). Computed on the meta device,
    so nothing is allocated, whatever the sizes.
    """
    with torch.device("meta"):
        model = UNet(**config)
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, out: sizes.append(out.numel() * 4))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    size = model.image_size
    model(torch.zeros(1, model.in_channels, size, size, device="meta"), torch.zeros(1, dtype=torch.long, device="meta"))
    for hook in hooks:
        hook.remove()
    return sum(sizes), max(sizes)


def forward_gflop(model: nn.Module, device: torch.device | str, channels: int) -> float:
    """GFLOP of one forward pass per image, counted by torch's FlopCounterMode (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, channels, 32, 32, device=device)
    t = torch.zeros(2, dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x, t)
    return counter.get_total_flops() / 2 / 1e9


class UNet(nn.Module):
    """eps_theta(x_t, t) for images of shape (B, C, H, W) with H = W = ``image_size``.

    The defaults are the ``"tiny"`` preset.

    Args:
        in_channels: image channels (1 for MNIST, 3 for CIFAR-10); the output has as many.
        base_channels: width of the first level.
        channel_mult: width of each encoder level as a multiple of ``base_channels``; the last entry is
            the bottom level. ``len(channel_mult) - 1`` halvings of the resolution.
        num_res_blocks: residual blocks per level (encoder, bottom and decoder).
        attention_resolutions: resolutions (e.g. 16 for 16x16) whose levels get self-attention.
        num_heads: attention heads.
        dropout: dropout probability inside residual blocks.
        num_groups: GroupNorm groups (must divide every level's width).
        image_size: input height and width; must be divisible by 2^(len(channel_mult) - 1).
        num_classes: ``K`` for a class-conditional model (``None``: unconditional). A learned embedding of
            K + 1 rows, the last one the "no label" token ``K``, is added to the time embedding; it starts
            at zero, so a new conditional model (or one initialised from an unconditional model's weights)
            starts by ignoring the label.
    """

    def __init__(self, in_channels: int = 1, *, base_channels: int = 32, channel_mult: tuple[int, ...] = (1, 1, 2),
                 num_res_blocks: int = 1, attention_resolutions: tuple[int, ...] = (8,), num_heads: int = 4,
                 dropout: float = 0.0, num_groups: int = 8, image_size: int = 32, num_classes: int | None = None):
        super().__init__()
        channel_mult = tuple(int(m) for m in channel_mult)
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        if in_channels < 1 or base_channels < 1 or num_res_blocks < 1 or len(channel_mult) < 2:
            raise ValueError("need in_channels >= 1, base_channels >= 1, num_res_blocks >= 1 and at least "
                             "two entries in channel_mult")
        if image_size % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"image_size {image_size} is not divisible by 2^{len(channel_mult) - 1}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
        self.config = dict(in_channels=in_channels, base_channels=base_channels, channel_mult=channel_mult,
                           num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
                           num_heads=num_heads, dropout=dropout, num_groups=num_groups, image_size=image_size)
        if num_classes is not None:                                        # unconditional configs stay as they were
            self.config["num_classes"] = num_classes
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size

        widths = [base_channels * m for m in channel_mult]                 # encoder widths, bottom last
        resolutions = [image_size // 2 ** i for i in range(len(widths))]

        # Time embedding: sinusoid -> Linear -> SiLU -> Linear (Ho et al.), shared by every block.
        self.time_embed_dim = base_channels
        time_dim = 4 * base_channels
        self.level_widths: list[int] = []                                  # in the tutorial's order

        def level(width: int, res: int) -> Level:
            if width % num_groups:
                raise ValueError(f"num_groups={num_groups} does not divide a level width of {width}")
            self.level_widths.append(width)
            return Level(width, num_res_blocks, res in attention_resolutions, time_dim, dropout, num_groups, num_heads)

        self.time_mlp = nn.Sequential(nn.Linear(base_channels, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        # Class conditioning: one learned vector per label, plus the "no label" token (index num_classes).
        self.label_embed = (zero_init(nn.Embedding(num_classes + 1, time_dim)) if num_classes is not None else None)

        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down_levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i in range(len(widths) - 1):
            self.down_levels.append(level(widths[i], resolutions[i]))
            self.downsamples.append(nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1))

        self.up_levels = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        width = widths[-1]
        for i in reversed(range(1, len(widths))):                          # bottom, then decoder levels
            self.up_levels.append(level(width, resolutions[i]))
            self.upsamples.append(nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1))
            width = width // 2 + widths[i - 1]                             # concat the skip at res i-1
        self.out = nn.Sequential(nn.Conv2d(width, width // 2, 3, padding=1), nn.SiLU(),
                                 nn.Conv2d(width // 2, in_channels, 1))

    @classmethod
    def from_preset(cls, name: str, in_channels: int = 1, **overrides) -> "UNet":
        """A UNet from a named configuration in ``PRESETS`` (``"tiny"``, ``"small"`` or ``"tutorial"``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown UNet preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(in_channels, **{**PRESETS[name], **overrides})

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) noisy images; t: (B,) integer timesteps; y: (B,) labels or None. Returns eps (B, C, H, W).

        For a conditional model, ``y`` holds class indices 0..K-1, or K (``num_classes``) for "no label";
        ``y=None`` means no label for every image. An unconditional model accepts only ``y=None``.
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of shape (B, {self.in_channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(x.shape)}")
        if t.dim() != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"expected t of shape ({x.shape[0]},), got {tuple(t.shape)}")
        self._check_inputs(x, t)
        temb = self.time_mlp(timestep_embedding(t, self.time_embed_dim).to(x.dtype))   # (B, 4 * base)
        if self.label_embed is not None:
            if y is None:
                y = torch.full_like(t, self.num_classes, dtype=torch.long)        # the "no label" token
            elif y.shape != t.shape or y.is_floating_point():
                raise ValueError(f"expected integer labels y of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
            elif y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
                raise ValueError(f"labels must lie in 0..{self.num_classes} ({self.num_classes} = no label), "
                                 f"got values from {int(y.min())} to {int(y.max())}")
            temb = temb + self.label_embed(y).to(temb.dtype)                  # (B, 4 * base)
        elif y is not None:
            raise ValueError("this model is unconditional (num_classes=None); it takes no labels")
        h = self.stem(x)                                                   # (B, c0, H, W)
        skips = []
        for level, down in zip(self.down_levels, self.downsamples):
            h = level(h, temb)
            skips.append(h)                                                # (B, c_i, H_i, W_i)
            h = down(h)                                                    # (B, c_{i+1}, H_i / 2, W_i / 2)
        for level, up in zip(self.up_levels, self.upsamples):
            h = level(h, temb)
            h = torch.cat([up(h), skips.pop()], dim=1)                     # (B, w/2 + c_skip, 2H, 2W)
        return self.out(h)                                                 # (B, C, H, W)

    def _check_inputs(self, x: Tensor, t: Tensor) -> None:
        """Integer timesteps in 0..MAX_TIMESTEPS-1 (checked on the host only), images in the weights' dtype."""
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"t must hold integer timesteps, got dtype {t.dtype} (use t.long())")
        if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= MAX_TIMESTEPS):
            raise ValueError(f"t must lie in 0..{MAX_TIMESTEPS - 1}, got values from {int(t.min())} to {int(t.max())}")
        weight = self.stem.weight
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"the images are {x.dtype} but the model's weights are {weight.dtype}; convert one to the "
                             f"other (x.to({weight.dtype}) or model.to({x.dtype}))")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def stages(self) -> list[tuple[str, nn.Module]]:
        """(stage label, module) for every block, in the order forward() runs them.

        Labels name the part of the U and its resolution ("encoder 32x32", "down 32->16", "bottom 8x8",
        "up 8->16", "decoder 16x16", "output head"); a level's residual and attention blocks are listed one
        by one under the level's label. The modules' parameters are all of the model's, each counted once,
        so per-stage parameter counts, FLOP counts (chapter 3, appendix A2) and timings (hooks on each
        module) add up to the whole network.
        """
        rows: list[tuple[str, nn.Module]] = [("time MLP", self.time_mlp)]
        if self.label_embed is not None:
            rows.append(("label embedding", self.label_embed))
        rows.append(("stem", self.stem))
        res = self.image_size
        for level, down in zip(self.down_levels, self.downsamples):
            rows += [(f"encoder {res}x{res}", block) for block in level.blocks]
            rows.append((f"down {res}->{res // 2}", down))
            res //= 2
        for i, (level, up) in enumerate(zip(self.up_levels, self.upsamples)):
            kind = "bottom" if i == 0 else "decoder"
            rows += [(f"{kind} {res}x{res}", block) for block in level.blocks]
            rows.append((f"up {res}->{2 * res}", up))
            res *= 2
        rows.append(("output head", self.out))
        return rows
