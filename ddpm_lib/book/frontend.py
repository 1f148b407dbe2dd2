"""What a notebook front end needs before the chapters' widgets and progress bars can show.

JupyterLab 4, Notebook 7 and VS Code render ipywidgets 8 as they are. Colab renders its own built-in
widgets only, unless the notebook turns on its custom widget manager, which loads ipywidgets 8's
JavaScript: without it the sliders (``ddpm_lib.book.widgets``) and the ``tqdm.auto`` progress bars, which are
widgets too, show as an error or as text. ``book_style()``, which every chapter calls first, and the
slider viewers call :func:`enable_colab_widgets`.
"""

from __future__ import annotations

import sys

_enabled = False


def in_colab() -> bool:
    """True inside a Google Colab kernel (its ``google.colab`` package is imported at start-up)."""
    return "google.colab" in sys.modules


def enable_colab_widgets() -> bool:
    """In Colab, turn on the custom widget manager that ipywidgets 8 needs (once per kernel); elsewhere
    nothing. True when it is on."""
    global _enabled
    if not in_colab():
        return False
    if not _enabled:
        from google.colab import output

        output.enable_custom_widget_manager()
        _enabled = True
    return True
