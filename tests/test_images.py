"""ddpm_lib.images: grids, and the book's figures (book_style, show)."""

import os

import matplotlib
import pytest
import torch

from ddpm_lib.book.figures import BOOK_RC, FIGURE_WIDTH, book_style, show
from ddpm_lib.images import make_grid

matplotlib.use("Agg")


def test_make_grid_tiles_with_padding():
    grid = make_grid(torch.zeros(6, 1, 4, 4), nrow=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1)


def test_show_draws_one_grid_sized_to_its_pixels():
    import matplotlib.pyplot as plt

    book_style()
    assert all(matplotlib.rcParams[k] == v or list(matplotlib.rcParams[k]) == list(v)
               for k, v in BOOK_RC.items() if k != "image.interpolation")
    ax = show(torch.rand(8, 1, 32, 32) * 2 - 1, title="eight", nrow=8)
    width, height = ax.figure.get_size_inches()
    assert width == pytest.approx(min(FIGURE_WIDTH, (8 * 34 + 2) * 2 / 100))
    assert ax.get_title() == "eight" and len(ax.images) == 1 and not ax.axison
    wide = show(torch.rand(64, 1, 32, 32) * 2 - 1, nrow=64)
    assert wide.figure.get_size_inches()[0] == pytest.approx(FIGURE_WIDTH)   # never wider than the column
    fig, axes = plt.subplots(1, 2)
    assert show(torch.rand(4, 3, 8, 8) * 2 - 1, ax=axes[1]) is axes[1]       # colour, on given axes
    plt.close("all")


KERNEL_CELLS = [
    "import matplotlib.pyplot as plt",
    "from ddpm_lib.book.figures import book_style",
    "book_style()",
    "plt.plot([0, 1]); plt.title('a line'); plt.show()",
]


def _figure_outputs(cells: list[str]) -> int:
    """Run cells in a fresh Jupyter kernel started with MPLBACKEND=Agg; count PNG outputs."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {"MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)                                                 # the kernel inherits it
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


@pytest.mark.slow
def test_book_style_shows_figures_even_under_an_inherited_agg_backend():
    """The pitfall of issue 11: with MPLBACKEND=Agg a kernel draws plt.show() nowhere, silently."""
    assert _figure_outputs([c for c in KERNEL_CELLS if "book_style" not in c]) == 0
    assert _figure_outputs(KERNEL_CELLS) == 1
