"""Images for people: grids of samples as PNG files and bytes."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from .data import to_uint8
from .frontend import enable_colab_widgets


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

#: One look for every figure of the book: 100 dpi (so a figure ``w`` inches wide is ``100 w`` CSS pixels
#: on the page), at most :data:`FIGURE_WIDTH` inches wide (the article column), titles and labels in a
#: size that reads at that scale. Notebooks call :func:`book_style` once; needs matplotlib.
FIGURE_WIDTH = 9.0
BOOK_RC = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.figsize": (FIGURE_WIDTH, 3.2),
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "image.interpolation": "nearest",
}


def book_style(retina: bool = True) -> None:
    """Set the book's figure style; in a Jupyter kernel, also make sure figures are shown inline, and in
    Colab that ipywidgets 8 (the sliders, the progress bars) can show.

    A kernel started with ``MPLBACKEND=Agg`` in its environment (common on servers and in CI) would
    otherwise draw every ``plt.show()`` nowhere. ``retina`` renders figures at twice the pixels for
    high-density screens, shown at the same size.
    """
    import matplotlib

    enable_colab_widgets()                                # sliders and progress bars in Colab (frontend.py)
    shell = _kernel_shell()
    if shell is not None:
        if matplotlib.get_backend().lower() in ("agg", "pdf", "svg", "ps", "cairo", "template"):
            shell.run_line_magic("matplotlib", "inline")                 # a non-interactive backend shows nothing
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("retina" if retina else "png")
    matplotlib.rcParams.update(BOOK_RC)


def _kernel_shell():
    """The IPython shell when running in a Jupyter kernel, else None."""
    try:
        from IPython import get_ipython
    except ImportError:                                                    # pragma: no cover - no IPython
        return None
    shell = get_ipython()
    return shell if type(shell).__name__ == "ZMQInteractiveShell" else None


def show(images: Tensor, title: str | None = None, nrow: int | None = None, ax=None, scale: float = 2.0):
    """Draw images (N, C, H, W) in [-1, 1] as one grid (:func:`make_grid`), with an optional title.

    On ``ax`` when given; otherwise on a new figure sized so that one image pixel is ``scale`` screen
    pixels (at most :data:`FIGURE_WIDTH` wide). Returns the axes.
    """
    import matplotlib.pyplot as plt

    grid = make_grid(images.detach().cpu(), nrow=nrow)
    if ax is None:
        dpi = plt.rcParams["figure.dpi"]
        width = min(FIGURE_WIDTH, grid.shape[1] * scale / dpi)
        height = width * grid.shape[0] / grid.shape[1] + (0.35 if title else 0.0)
        ax = plt.figure(figsize=(width, height)).gca()
    ax.imshow(grid, cmap=None if grid.ndim == 3 else "gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax
