"""In Colab the chapters turn on the custom widget manager that ipywidgets 8 needs (sliders and tqdm
bars); elsewhere they leave the front end alone. Colab is simulated by a stand-in google.colab.output."""

import sys
import types

import pytest

from ddpm_lib.book import frontend


@pytest.fixture
def colab(monkeypatch):
    """A stand-in for Colab's google.colab.output that counts enable_custom_widget_manager() calls."""
    calls = []
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append(1)
    colab = types.ModuleType("google.colab")
    colab.output = output
    google = types.ModuleType("google")
    google.colab = colab
    for name, module in {"google": google, "google.colab": colab, "google.colab.output": output}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(frontend, "_enabled", False)
    return calls


def test_outside_colab_nothing_is_called(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(frontend, "_enabled", False)
    assert frontend.enable_colab_widgets() is False


def test_in_colab_the_widget_manager_is_enabled_once(colab):
    assert frontend.enable_colab_widgets() is True and frontend.enable_colab_widgets() is True
    assert colab == [1]


def test_every_chapter_enables_it_through_book_style(colab):
    from ddpm_lib.book.figures import book_style

    book_style()
    assert colab == [1]


def test_the_slider_viewers_enable_it(colab):
    pytest.importorskip("ipywidgets")
    from ddpm_lib.book.widgets import _widgets

    assert _widgets().__version__.startswith("8.")
    assert colab == [1]
