"""Images for people: grids of samples as PNG files and bytes."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from .data import to_uint8


def make_grid(images: Tensor, nrow: int | None = None, pad: int = 2, upscale: int = 1) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into one uint8 array (rows, cols) or (rows, cols, 3).

    ``nrow`` images per row (default: a near-square grid), ``pad`` pixels of grey between them, and
    each pixel repeated ``upscale`` times in both directions (crisp enlargements of 32x32 digits).
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got {tuple(images.shape)}")
    pixels = to_uint8(images).numpy()                                      # (N, C, H, W)
    n, c, h, w = pixels.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), 128, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top:top + h, left:left + w] = pixels[i]
    grid = grid[0] if c == 1 else grid.transpose(1, 2, 0)
    if upscale > 1:
        grid = grid.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return grid


def png_bytes(images: Tensor, **grid_args) -> bytes:
    """A grid of images encoded as PNG (see :func:`make_grid` for the arguments)."""
    buffer = io.BytesIO()
    Image.fromarray(make_grid(images, **grid_args)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def save_grid(images: Tensor, path: str | Path, **grid_args) -> Path:
    """Write a PNG grid of images (N, C, H, W) in [-1, 1] to ``path``."""
    path = Path(path)
    path.write_bytes(png_bytes(images, **grid_args))
    return path


# ------------------------------------------------------------------------------------ figures in the book
