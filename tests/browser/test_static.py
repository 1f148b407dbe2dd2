"""Checks of the built pages' files (no browser needed, but the executed book is): weight and local scripts."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

from .bookpage import expected_pages

pytestmark = pytest.mark.browser
WIDGET_JS = "_static/widgets_js/embed.js"
WIDGET_STATE_BUDGET = 1_500_000       # bytes of saved widget state (every frame as a PNG) in one page
PAGE_BUDGET = 4_000_000               # bytes of HTML in one page (figures are separate files)


def widget_pages() -> list[str]:
    return [page for page, spec in expected_pages().items() if spec.get("widgets")]


def test_pages_are_light_and_load_no_cdn(book_html):
    for path in expected_pages():
        text = (book_html / path).read_text(encoding="utf-8")
        size = len(text.encode())
        assert size < PAGE_BUDGET, f"{path} is {size / 1e6:.2f} MB, over the {PAGE_BUDGET / 1e6:.1f} MB budget"
        state = re.findall(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', text, re.S)
        state_size = sum(len(s.encode()) for s in state)
        assert state_size < WIDGET_STATE_BUDGET, f"{path}: {state_size / 1e6:.2f} MB of widget state"
        scripts = re.findall(r'<script[^>]*src="([^"]*)"', text)
        remote = [s for s in scripts if urlparse(s).scheme]
        assert not remote, f"{path} loads scripts from the network: {remote}"
        if path in widget_pages():
            assert any(WIDGET_JS in s for s in scripts), f"{path} does not load {WIDGET_JS}"
        else:                                                              # the 1.9 MB bundle only where needed
            assert "widgets_js" not in text, path
    assert (book_html / WIDGET_JS).is_file()
    for js in (book_html / "_static" / "widgets_js").glob("*.js"):
        assert js.stat().st_size < 2_500_000, f"{js.name} is {js.stat().st_size / 1e6:.1f} MB"


def test_figures_are_png_files_of_a_sensible_size(book_html):
    """Figures are written beside the pages, not inlined; none is huge."""
    images = list((book_html / "_images").glob("*.png"))
    assert images, "the book has no figure files"
    for png in images:
        assert png.stat().st_size < 1_500_000, f"{png.name} is {png.stat().st_size / 1e6:.1f} MB"


def test_math_is_local(book_html):
    """MathJax comes from the book too (scripts/vendor_mathjax.sh), so equations render with no network."""
    text = (book_html / "notebooks" / "01_forward_process.html").read_text(encoding="utf-8")
    mathjax = [s for s in re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', text, re.I)
               if urlparse(s).scheme in ("http", "https")]
    assert not mathjax, f"MathJax comes from {mathjax}"
    assert (book_html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()
