"""A slider viewer (ddpm_lib.book.widgets) on a loaded book page: its saved frames and what it shows."""

from __future__ import annotations

import base64
import html as html_lib
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from .bookpage import BookPage

STATE_TYPE = "application/vnd.jupyter.widget-state+json"
RENDER_WAIT = 30                       # seconds for the widgets to render (two busy CPU cores)

# The one visible frame of a viewer, drawn on a canvas: its red channel (= its grey level) in base64.
PIXELS_JS = """
const root = arguments[0];
const imgs = [...root.querySelectorAll('img.ddpm-frame')].filter(i => i.offsetParent !== null);
if (imgs.length !== 1 || !imgs[0].complete || imgs[0].naturalWidth === 0) return {count: imgs.length};
const img = imgs[0], canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const ctx = canvas.getContext('2d');
ctx.drawImage(img, 0, 0);
const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
let red = '';
for (let i = 0; i < data.length; i += 4) red += String.fromCharCode(data[i]);
return {count: 1, width: canvas.width, height: canvas.height, red: btoa(red), src: img.src};
"""
# The rendered view of every saved widget on the page: {model_id, index} per output, in page order.
VIEWS_JS = """
return [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')].map(
    (s, index) => ({model_id: JSON.parse(s.textContent).model_id, index: index}));
"""
VIEW_ROOT_JS = """
const script = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')[arguments[0]];
const area = script.previousElementSibling;
return area && area.classList.contains('widget-subarea') ? area.firstElementChild : null;
"""


def widget_state(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    found = re.search(rf'<script type="{re.escape(STATE_TYPE)}">(.*?)</script>', text, re.S)
    assert found, f"{page.name} holds no saved widget state: the viewer was not embedded"
    return json.loads(found.group(1))["state"]


def _ref(value: str) -> str:
    assert value.startswith("IPY_MODEL_"), value
    return value[len("IPY_MODEL_"):]


def _png_pixels(model: dict) -> np.ndarray:
    """The picture an ImageModel holds, as grey levels (H, W) uint8."""
    [buffer] = [b for b in model.get("buffers", []) if b["path"] == ["value"]]
    assert buffer["encoding"] == "base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(buffer["data"]))).convert("L"))


def viewer_frames(state: dict, viewer_id: str) -> tuple[list[list[np.ndarray]], list[list[str]]]:
    """Per option (schedule or variance) of the viewer VBox ``viewer_id``: its frames and label texts."""
    frames, labels = None, None
    for child in state[viewer_id]["state"]["children"]:
        model = state[_ref(child)]
        if model["model_name"] != "StackModel":
            continue
        inner = [state[_ref(c)] for c in model["state"]["children"]]
        leaves = [[state[_ref(c)] for c in m["state"]["children"]] for m in inner]
        kinds = {leaf["model_name"] for options in leaves for leaf in options}
        if kinds == {"ImageModel"}:
            frames = [[_png_pixels(leaf) for leaf in options] for options in leaves]
        elif kinds == {"HTMLModel"}:
            labels = [[html_lib.unescape(re.sub("<[^>]+>", "", leaf["state"]["value"])) for leaf in options]
                      for options in leaves]
    assert frames and labels, "the viewer has no Stack of frame Stacks and label Stacks"
    return frames, labels


def most_different(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    """The frame index at which two options' pictures differ most (so the switch is plain to see)."""
    gaps = [np.abs(x.astype(int) - y.astype(int)).mean() if x.shape == y.shape else 255.0 for x, y in zip(a, b)]
    assert max(gaps) > 0, "the two options of the toggle show the same frames"
    return int(np.argmax(gaps))


class Viewer:
    """The viewer of class ``css_class`` on a loaded page, once it has rendered."""

    def __init__(self, page: BookPage, html: Path, css_class: str, screenshots: Path | None = None):
        self.page, self.driver, self.screenshots = page, page.driver, screenshots
        state = widget_state(html / page.path)
        views = [v for v in self.driver.execute_script(VIEWS_JS)
                 if css_class in state.get(v["model_id"], {}).get("state", {}).get("_dom_classes", [])]
        assert views, f"{page.path} shows no widget of class {css_class}"
        self.frames, self.labels = viewer_frames(state, views[0]["model_id"])
        wait = WebDriverWait(self.driver, RENDER_WAIT, poll_frequency=0.2)
        try:
            self.root = wait.until(lambda d: d.execute_script(VIEW_ROOT_JS, views[0]["index"]))
            wait.until(lambda d: d.execute_script(PIXELS_JS, self.root).get("red"))
        except TimeoutException:
            console = [e["message"] for e in self.driver.get_log("browser")]
            raise AssertionError(f"the {css_class} widget did not render in {RENDER_WAIT} s on {page.path}; "
                                 "browser console:\n" + "\n".join(console[-20:])) from None

    @property
    def slider(self):
        return self.root.find_element(By.CSS_SELECTOR, "[role=slider]")

    def slider_value(self) -> int:
        return int(float(self.slider.get_attribute("aria-valuenow")))

    def readout(self) -> str:
        """The text the slider shows beside itself."""
        return self.root.find_element(By.CSS_SELECTOR, ".widget-readout").text.strip()

    def shown(self) -> list[tuple[int, int]] | None:
        """The (option, frame) pairs whose saved picture is the one on screen, pixel for pixel (several when
        frames repeat, e.g. t = 0 under every schedule); None while no single picture is loaded."""
        got = self.driver.execute_script(PIXELS_JS, self.root)
        if not got.get("red"):
            return None
        pixels = np.frombuffer(base64.b64decode(got["red"]), dtype=np.uint8).reshape(got["height"], got["width"])
        return [(option, index) for option, frames in enumerate(self.frames) for index, frame in enumerate(frames)
                if frame.shape == pixels.shape and np.array_equal(frame, pixels)]

    def src(self) -> str | None:
        return self.driver.execute_script(PIXELS_JS, self.root).get("src")

    def wait_shown(self, option: int, index: int, timeout: float = 10.0) -> None:
        """Wait until frame ``index`` of ``option`` is on screen with its label above it."""
        label = self.labels[option][index]
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
                lambda d: (option, index) in (self.shown() or []) and label in self.root.text)
        except TimeoutException:
            raise AssertionError(f"expected frame {index} of option {option} on screen with the label "
                                 f"{label!r}; saw frames {self.shown()} ([] = a picture that is no frame) "
                                 f"and the text:\n{self.root.text}") from None

    def press(self, key, times: int = 1) -> None:
        slider = self.slider
        for _ in range(times):
            slider.send_keys(key)

    def click_option(self, option: int) -> None:
        buttons = self.root.find_elements(By.CSS_SELECTOR, ".widget-toggle-buttons button")
        assert len(buttons) == len(self.frames), f"{len(buttons)} toggle buttons for {len(self.frames)} options"
        buttons[option].click()

    def screenshot(self, name: str) -> bytes:
        png = self.root.screenshot_as_png
        if self.screenshots is not None:
            (self.screenshots / f"{Path(self.page.path).stem}_{name}.png").write_bytes(png)
        return png
