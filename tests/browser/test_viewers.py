"""The slider viewers work in the static HTML book: no kernel, no network, driven in headless Chromium.

The book embeds each page's widget state (every frame as a PNG) and loads a vendored copy of
html-manager's ``embed.js`` (``book/static/widgets_js``); the slider, the Play button and the toggles
move the pictures through ``jslink``s that run in the browser. These tests check, pixel for pixel, that
the picture shown is the frame the controls select, that the labels follow, and that the page asks for
nothing but local files.
"""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from .bookpage import BookPage, off_host
from .viewer import Viewer, most_different

pytestmark = pytest.mark.browser
FORWARD_PAGE = "notebooks/01_forward_process.html"
REVERSE_PAGE = "notebooks/05_sampling.html"
STEPS_PAGE = "notebooks/06_ddim.html"
WIDGET_JS = "_static/widgets_js/embed.js"


def exercise_viewer(viewer: Viewer, shots: str) -> None:
    """Slider by keyboard, toggle, Play: each moves the picture to the frame the controls select."""
    n = len(viewer.frames[0])
    assert n >= 3 and all(len(f) == n for f in viewer.frames)
    assert all(not np.array_equal(viewer.frames[0][i], viewer.frames[0][i + 1]) for i in range(n - 1)), \
        "consecutive saved frames are identical"
    viewer.wait_shown(0, 0)
    assert viewer.slider_value() == 0
    before_png, before_src = viewer.screenshot(f"{shots}_start"), viewer.src()

    viewer.press(Keys.ARROW_RIGHT)                                         # one step
    viewer.wait_shown(0, 1)
    viewer.press(Keys.ARROW_RIGHT, 2)
    viewer.wait_shown(0, 3)
    assert viewer.slider_value() == 3
    assert viewer.src() != before_src
    assert viewer.screenshot(f"{shots}_step3") != before_png, "the widget looks the same after moving"
    viewer.press(Keys.ARROW_LEFT)
    viewer.wait_shown(0, 2)
    viewer.press(Keys.END)                                                 # the last frame
    viewer.wait_shown(0, n - 1)
    assert viewer.slider_value() == n - 1

    option = 0
    if len(viewer.frames) > 1:                                             # the toggle switches the picture
        k = most_different(viewer.frames[0], viewer.frames[1])
        viewer.press(Keys.HOME)
        viewer.wait_shown(0, 0)
        viewer.press(Keys.ARROW_RIGHT, k)
        viewer.wait_shown(0, k)
        first = viewer.screenshot(f"{shots}_option0")
        viewer.click_option(1)
        viewer.wait_shown(1, k)
        assert viewer.screenshot(f"{shots}_option1") != first
        step = 1 if k < n - 1 else -1                                      # the slider drives the new option
        viewer.press(Keys.ARROW_RIGHT if step > 0 else Keys.ARROW_LEFT)
        viewer.wait_shown(1, k + step)
        option = 1

    viewer.press(Keys.HOME)
    viewer.wait_shown(option, 0)
    viewer.root.find_element(By.CSS_SELECTOR, ".widget-play button").click()   # Play runs in the browser
    viewer.wait_shown(option, n - 1, timeout=10 + n * 0.5)
    assert viewer.slider_value() == n - 1


def check_local(page: BookPage) -> None:
    report = page.report()
    assert not off_host(report.requests, page.server), f"{page.path} made requests beyond the server"
    assert not report.failed_requests, f"{page.path}: requests that failed: {report.failed_requests}"
    assert any(urlparse(u).path.endswith(WIDGET_JS) for u in report.requests), f"{WIDGET_JS} was not loaded"
    assert not report.console, f"{page.path}: the browser console reports:\n" + "\n".join(report.console)


def test_forward_viewer_in_the_static_book(book_html, server, driver, screenshots):
    page = BookPage(driver, server, FORWARD_PAGE).load()
    viewer = Viewer(page, book_html, "ddpm-forward-viewer", screenshots)
    assert len(viewer.frames) == 2, "chapter 1 compares two schedules"
    assert viewer.labels[0][0].endswith("t = 0 (data)")
    # the slider's readout is the step t of the frame shown, not the frame's index
    steps = [label.split("t = ")[1].split(",")[0].split(" ")[0] for label in viewer.labels[0]]
    viewer.wait_shown(0, 0)
    assert viewer.readout() == steps[0] == "0"
    viewer.press(Keys.END)
    viewer.wait_shown(0, len(steps) - 1)
    assert viewer.readout() == steps[-1] == "1000"
    viewer.press(Keys.HOME)
    exercise_viewer(viewer, "forward")
    assert driver.find_elements(By.CSS_SELECTOR, "mjx-container"), "the equations did not render"
    check_local(page)


def test_reverse_viewer_in_the_static_book(book_html, server, driver, screenshots):
    page = BookPage(driver, server, REVERSE_PAGE).load()
    viewer = Viewer(page, book_html, "ddpm-reverse-viewer", screenshots)
    assert len(viewer.frames) == 2, "chapter 5 compares two variances"
    buttons = viewer.root.find_elements(By.CSS_SELECTOR, ".widget-toggle-buttons button")
    assert [b.text for b in buttons] == ["beta", "posterior"]
    exercise_viewer(viewer, "reverse")
    check_local(page)


def test_steps_viewer_in_the_static_book(book_html, server, driver, screenshots):
    page = BookPage(driver, server, STEPS_PAGE).load()
    viewer = Viewer(page, book_html, "ddpm-steps-viewer", screenshots)
    assert len(viewer.frames) == 2, "chapter 6 compares DDIM with DDPM"
    assert viewer.labels[0][0].startswith("DDIM, eta = 0: ") and viewer.labels[1][0].startswith("DDPM: ")
    exercise_viewer(viewer, "steps")
    check_local(page)
