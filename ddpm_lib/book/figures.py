"""The book's figures: one style for every chapter (:func:`book_style`) and image grids drawn with
matplotlib (:func:`show`). The grids themselves are :mod:`ddpm_lib.images`'s."""

from __future__ import annotations

from torch import Tensor

from ..images import make_grid
from .frontend import enable_colab_widgets

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
