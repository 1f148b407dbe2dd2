"""The slider widgets work in the static HTML book: no kernel, no network, driven in headless Chromium.

The book embeds each page's widget state (every frame as a PNG) and loads a vendored copy of
html-manager's ``embed.js`` (``book/static/widgets_js``); the slider, the Play button and the toggles
move the pictures through ``jslink``s that run in the browser. These tests serve ``_build/html`` on
127.0.0.1 and check, pixel for pixel, that the picture shown is the frame the controls select, and that
the page asks for nothing but local files.

Run with ``make browser-test`` (or ``pytest -m browser``). They need Debian's ``chromium`` and
``chromium-driver`` (``make browser-deps`` installs them as root); without them they fail and say so.
They use ``_build/html`` (``make book``) when it is newer than the notebooks and everything else the
pages are built from; otherwise they build chapters 1, 5 and 6 alone, executed, into ``_build/partial``
(``scripts/build_book.py --only ...``; ``make test`` runs every notebook under nbval and checks the
whole book without executing it, so this saves running the other chapters twice). Environment:

* ``DDPM_BOOK_HTML=dir``: test that built book instead (no build);
* ``DDPM_SCREENSHOTS=dir``: save screenshots of the widgets there (``<page>_<step>.png``).
"""

from __future__ import annotations

import base64
import functools
import html as html_lib
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = ("headless Chromium is needed for the browser tests: run "
                "'sudo apt-get install chromium chromium-driver' (or 'make browser-deps' as root)")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1600"]
FORWARD_PAGE = "notebooks/01_forward_process.html"
REVERSE_PAGE = "notebooks/05_sampling.html"
STEPS_PAGE = "notebooks/06_ddim.html"
WIDGET_JS = "_static/widgets_js/embed.js"
PAGE_BUDGET = 1_500_000            # bytes of HTML for a page with a viewer (its frames are inside it)
STATE_TYPE = "application/vnd.jupyter.widget-state+json"
WAIT = 30                          # seconds for the widgets to render (2 busy CPU cores)


# ----------------------------------------------------------------------------------------------- the book

def _build_inputs() -> list[Path]:
    """What the built pages depend on: when any is newer than the build, the book is rebuilt."""
    files = list((ROOT / "notebooks").glob("*.ipynb")) + list((ROOT / "book").glob("*.md"))
    files += [ROOT / "_config.yml", ROOT / "_toc.yml", ROOT / "ddpm_lib" / "widgets.py"]
    return [f for f in files if f.is_file()]


def _stale_static(html: Path) -> list[str]:
    """Files of book/static/ whose copy in the build differs (Sphinx copies them only when it rebuilds pages)."""
    source = ROOT / "book" / "static"
    return [str(f.relative_to(source)) for f in sorted(source.rglob("*")) if f.is_file() and
            not ((html / "_static" / f.relative_to(source)).is_file() and
                 (html / "_static" / f.relative_to(source)).read_bytes() == f.read_bytes())]


def _build_is_fresh(html: Path) -> bool:
    """Sphinx rewrites .buildinfo at the end of every build (pages it did not need to redo keep their date)."""
    stamp = html / ".buildinfo"
    if not (stamp.is_file() and (html / FORWARD_PAGE).is_file()):
        return False
    return all(f.stat().st_mtime < stamp.stat().st_mtime for f in _build_inputs())


@pytest.fixture(scope="session")
def book_html() -> Path:
    """The built HTML book: $DDPM_BOOK_HTML, or _build/html (built now with `make book` if stale)."""
    if os.environ.get("DDPM_BOOK_HTML"):
        html = Path(os.environ["DDPM_BOOK_HTML"]).resolve()
        if not (html / "index.html").is_file():
            pytest.fail(f"DDPM_BOOK_HTML={html} is not a built book (no index.html)")
        return html
    html = ROOT / "_build" / "html"
    if not _build_is_fresh(html):
        html = ROOT / "_build" / "partial" / "_build" / "html"
        if not _build_is_fresh(html):
            _build(html)
    stale = _stale_static(html)
    if stale:
        pytest.fail(f"{html}/_static is older than book/static ({', '.join(stale)}): "
                    "remove _build and build again (an up-to-date build does not copy static files again)")
    return html


def _build(html: Path) -> None:
    """Chapters 1, 5 and 6 alone, executed (scripts/build_book.py)."""
    cmd = [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts" / "build_book.py"), "--only",
           *(page.removesuffix(".html") for page in (FORWARD_PAGE, REVERSE_PAGE, STEPS_PAGE))]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"building the book failed ({' '.join(cmd)}, exit {proc.returncode}):\n"
                    f"{(proc.stdout + proc.stderr)[-4000:]}")
    print(f"built chapters 1, 5 and 6 in {time.time() - start:.0f} s")
    if not (html / FORWARD_PAGE).is_file():
        pytest.fail(f"the build made no {html / FORWARD_PAGE}")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):                                 # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="session")
def server(book_html):
    """http://127.0.0.1:<free port>/ serving the built book from a thread."""
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def driver():
    """Headless Debian Chromium under chromedriver, logging every network request (CDP performance log)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: {INSTALL_HINT}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -r requirements.txt (or make setup)")
    profile = tempfile.mkdtemp(prefix="ddpm-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    try:
        browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    except Exception as err:                                               # e.g. driver and browser versions differ
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"could not start {CHROMIUM} with {CHROMEDRIVER}: {err}\n{INSTALL_HINT}")
    try:
        browser.get("about:blank")
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


# ------------------------------------------------------------------------------------ the saved widget state

def _widget_state(page: Path) -> dict:
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


def _viewer_frames(state: dict, viewer_id: str) -> tuple[list[list[np.ndarray]], list[list[str]]]:
    """Per option (schedule or variance) of the viewer VBox ``viewer_id``: its frames and its label texts."""
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


# -------------------------------------------------------------------------------------------- the browser

RENDERED_JS = """
const root = arguments[0];
const imgs = [...root.querySelectorAll('img.ddpm-frame')].filter(i => i.offsetParent !== null);
return imgs.length === 1 && imgs[0].complete && imgs[0].naturalWidth > 0;
"""

# The one visible frame of a viewer, drawn on a canvas: its red channel (= its grey level) in base64.
PIXELS_JS = """
const root = arguments[0];
const imgs = [...root.querySelectorAll('img.ddpm-frame')].filter(i => i.offsetParent !== null);
if (imgs.length !== 1 || !imgs[0].complete || imgs[0].naturalWidth === 0) return {count: imgs.length, ready: false};
const img = imgs[0], canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const ctx = canvas.getContext('2d');
ctx.drawImage(img, 0, 0);
const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
let red = '';
for (let i = 0; i < data.length; i += 4) red += String.fromCharCode(data[i]);
return {count: 1, width: canvas.width, height: canvas.height, red: btoa(red), src: img.src};
"""

# The rendered view of every saved widget shown on the page: {model_id, index} per output, in page order.
VIEWS_JS = """
return [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')].map(
    (s, index) => ({model_id: JSON.parse(s.textContent).model_id, index: index}));
"""
VIEW_ROOT_JS = """
const script = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')[arguments[0]];
const area = script.previousElementSibling;
return area && area.classList.contains('widget-subarea') ? area.firstElementChild : null;
"""


def _drain_log(browser, kind: str = "performance") -> list[dict]:
    return browser.get_log(kind)


def _requests(log: list[dict], origin: str) -> tuple[list[str], dict[str, int], list[tuple[str, str]]]:
    """URLs requested for documents from ``origin`` (not the browser's own pages), their HTTP statuses,
    and (url, error) of the requests that failed."""
    urls, by_id, statuses, failed = [], {}, {}, []
    for entry in log:
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            if not params.get("documentURL", "").startswith(origin):
                continue                                                   # e.g. chrome:// start pages
            url = params["request"]["url"]
            urls.append(url)
            by_id[params["requestId"]] = url
        elif message["method"] == "Network.responseReceived" and params["requestId"] in by_id:
            statuses[params["response"]["url"]] = params["response"]["status"]
        elif message["method"] == "Network.loadingFailed" and params["requestId"] in by_id:
            failed.append((by_id.get(params["requestId"], "?"), params.get("errorText", "")))
    return urls, statuses, failed


class Page:
    """One book page loaded in the browser, with the viewer of class ``css_class`` found and rendered."""

    def __init__(self, browser, server: str, html: Path, path: str, css_class: str):
        from selenium.webdriver.support.ui import WebDriverWait

        self.browser, self.server, self.path = browser, server, path
        _drain_log(browser)
        _drain_log(browser, "browser")
        browser.get(f"{server}/{path}")
        state = _widget_state(html / path)
        views = [v for v in browser.execute_script(VIEWS_JS)
                 if css_class in state.get(v["model_id"], {}).get("state", {}).get("_dom_classes", [])]
        assert views, f"{path} shows no widget of class {css_class}"
        self.model_id = views[0]["model_id"]
        self.frames, self.labels = _viewer_frames(state, self.model_id)
        wait = WebDriverWait(browser, WAIT, poll_frequency=0.2)
        try:
            self.root = wait.until(lambda b: b.execute_script(VIEW_ROOT_JS, views[0]["index"]))
            wait.until(lambda b: b.execute_script(RENDERED_JS, self.root))
        except Exception:
            console = [e["message"] for e in _drain_log(browser, "browser")]
            pytest.fail(f"the {css_class} widget did not render in {WAIT} s on {path}; browser console:\n"
                        + "\n".join(console[-20:]))

    @property
    def slider(self):
        from selenium.webdriver.common.by import By
        return self.root.find_element(By.CSS_SELECTOR, "[role=slider]")

    def slider_value(self) -> int:
        return int(float(self.slider.get_attribute("aria-valuenow")))

    def shown(self) -> list[tuple[int, int]] | None:
        """The (option, frame) pairs whose saved picture is the one on screen, pixel for pixel (several
        when frames repeat, e.g. t = 0 under every schedule); None while no single picture is loaded."""
        got = self.browser.execute_script(PIXELS_JS, self.root)
        if not got.get("red"):                                             # no single loaded picture (yet)
            return None
        pixels = np.frombuffer(base64.b64decode(got["red"]), dtype=np.uint8).reshape(got["height"], got["width"])
        return [(option, index) for option, frames in enumerate(self.frames) for index, frame in enumerate(frames)
                if frame.shape == pixels.shape and np.array_equal(frame, pixels)]

    def src(self) -> str | None:
        return self.browser.execute_script(PIXELS_JS, self.root).get("src")

    def wait_shown(self, option: int, index: int, timeout: float = 10.0) -> None:
        """Wait until frame ``index`` of ``option`` is on screen and its label above it."""
        label = self.labels[option][index]
        deadline = time.time() + timeout
        while True:
            seen = self.shown()
            if seen and (option, index) in seen and label in self.root.text:
                return
            if time.time() > deadline:
                break
            time.sleep(0.1)
        assert seen and (option, index) in seen, \
            f"expected frame {index} of option {option} on screen, saw {seen} ([] = a picture that is no frame)"
        assert label in self.root.text, f"the label {label!r} is not shown; the viewer reads:\n{self.root.text}"

    def press(self, key, times: int = 1) -> None:
        slider = self.slider
        for _ in range(times):
            slider.send_keys(key)

    def click_option(self, option: int) -> None:
        from selenium.webdriver.common.by import By
        buttons = self.root.find_elements(By.CSS_SELECTOR, ".widget-toggle-buttons button")
        assert len(buttons) == len(self.frames), f"{len(buttons)} toggle buttons for {len(self.frames)} options"
        buttons[option].click()

    def screenshot(self, name: str) -> bytes:
        png = self.root.screenshot_as_png
        if os.environ.get("DDPM_SCREENSHOTS"):
            folder = Path(os.environ["DDPM_SCREENSHOTS"])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{Path(self.path).stem}_{name}.png").write_bytes(png)
        return png

    def check_requests(self) -> list[str]:
        """Every request of the page went to this server (or was data:/blob:), none failed; returns the URLs."""
        urls, statuses, failed = _requests(_drain_log(self.browser), self.server + "/")
        host = urlparse(self.server).netloc
        foreign = [u for u in urls if not (u.startswith(("data:", "blob:")) or
                                           (urlparse(u).scheme == "http" and urlparse(u).netloc == host))]
        assert not foreign, f"{self.path} made requests beyond {self.server}: {foreign}"
        # the browser's own probe for /favicon.ico (the book sets no html.favicon) is not the page's request
        bad = {u: s for u, s in statuses.items() if s >= 400 and urlparse(u).path != "/favicon.ico"}
        assert not bad, f"{self.path}: requests that failed: {bad}"
        assert not failed, f"{self.path}: requests that failed: {failed}"
        assert any(urlparse(u).path.endswith(WIDGET_JS) for u in urls), f"{WIDGET_JS} was not loaded: {urls}"
        return urls


    def check_console(self) -> None:
        """No errors from the widget scripts (embed.js, widget_fixes.js) in the browser's console."""
        errors = [e["message"] for e in _drain_log(self.browser, "browser")
                  if e["level"] == "SEVERE" and ("widgets_js/" in e["message"] or "widget_fixes" in e["message"])]
        assert not errors, f"{self.path}: the widget scripts reported errors:\n" + "\n".join(errors)


def external_mathjax(page_source: str) -> set[str]:
    """The MathJax script of a page when it comes from a CDN (Sphinx's default ``mathjax_path``)."""
    return {src for src in re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page_source, re.I)
            if urlparse(src).scheme in ("http", "https")}


def _most_different(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    """The frame index at which two options' pictures differ most (so the switch is plain to see)."""
    gaps = [np.abs(x.astype(int) - y.astype(int)).mean() if x.shape == y.shape else 255.0 for x, y in zip(a, b)]
    assert max(gaps) > 0, "the two options of the toggle show the same frames"
    return int(np.argmax(gaps))


def _exercise_viewer(page: Page, shots: str) -> None:
    """Slider by keyboard, toggle, Play: each moves the picture to the frame the controls select."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    n = len(page.frames[0])
    assert n >= 3 and all(len(f) == n for f in page.frames)
    assert all(not np.array_equal(page.frames[0][i], page.frames[0][i + 1]) for i in range(n - 1)), \
        "consecutive saved frames are identical"
    page.wait_shown(0, 0)
    assert page.slider_value() == 0
    before_png, before_src = page.screenshot(f"{shots}_start"), page.src()

    page.press(Keys.ARROW_RIGHT)                                           # one step
    page.wait_shown(0, 1)
    page.press(Keys.ARROW_RIGHT, 2)
    page.wait_shown(0, 3)
    assert page.slider_value() == 3
    assert page.src() != before_src
    assert page.screenshot(f"{shots}_step3") != before_png, "the widget looks the same after moving the slider"
    page.press(Keys.ARROW_LEFT)
    page.wait_shown(0, 2)
    page.press(Keys.END)                                                   # the last frame
    page.wait_shown(0, n - 1)
    assert page.slider_value() == n - 1

    if len(page.frames) > 1:                                               # the toggle switches the picture
        k = _most_different(page.frames[0], page.frames[1])
        page.press(Keys.HOME)
        page.wait_shown(0, 0)
        page.press(Keys.ARROW_RIGHT, k)
        page.wait_shown(0, k)
        first = page.screenshot(f"{shots}_option0")
        page.click_option(1)
        page.wait_shown(1, k)
        assert page.screenshot(f"{shots}_option1") != first
        step = 1 if k < n - 1 else -1                                      # the slider drives the new option
        page.press(Keys.ARROW_RIGHT if step > 0 else Keys.ARROW_LEFT)
        page.wait_shown(1, k + step)
        option = 1
    else:
        option = 0

    page.press(Keys.HOME)
    page.wait_shown(option, 0)
    page.root.find_element(By.CSS_SELECTOR, ".widget-play button").click()  # Play runs in the browser
    page.wait_shown(option, n - 1, timeout=10 + n * 0.5)
    assert page.slider_value() == n - 1
    page.check_requests()
    page.check_console()


# --------------------------------------------------------------------------------------------------- tests

def test_forward_viewer_in_the_static_book(book_html, server, driver):
    assert (book_html / FORWARD_PAGE).is_file(), f"the book has no {FORWARD_PAGE}"
    page = Page(driver, server, book_html, FORWARD_PAGE, "ddpm-forward-viewer")
    assert len(page.frames) == 2, "chapter 1 compares two schedules"
    assert page.labels[0][0].endswith("t = 0 (data)")
    _exercise_viewer(page, "forward")
    from selenium.webdriver.support.ui import WebDriverWait                 # the equations rendered, offline
    WebDriverWait(driver, 30).until(lambda d: d.find_elements("css selector", "mjx-container"))


def test_reverse_viewer_in_the_static_book(book_html, server, driver):
    assert (book_html / REVERSE_PAGE).is_file(), f"the book has no {REVERSE_PAGE}"
    page = Page(driver, server, book_html, REVERSE_PAGE, "ddpm-reverse-viewer")
    assert len(page.frames) == 2, "chapter 5 compares two variances"
    assert page.root.find_elements("css selector", ".widget-toggle-buttons button")[0].text == "beta"
    assert page.root.find_elements("css selector", ".widget-toggle-buttons button")[1].text == "posterior"
    _exercise_viewer(page, "reverse")


def test_steps_viewer_in_the_static_book(book_html, server, driver):
    assert (book_html / STEPS_PAGE).is_file(), f"the book has no {STEPS_PAGE}"
    page = Page(driver, server, book_html, STEPS_PAGE, "ddpm-steps-viewer")
    assert len(page.frames) == 2, "chapter 6 compares DDIM with DDPM"
    assert page.labels[0][0].startswith("DDIM, eta = 0: ") and page.labels[1][0].startswith("DDPM: ")
    _exercise_viewer(page, "steps")


def test_widget_pages_are_light_and_load_no_cdn(book_html):
    pages = [p for p in (FORWARD_PAGE, REVERSE_PAGE, STEPS_PAGE) if (book_html / p).is_file()]
    for path in pages:
        text = (book_html / path).read_text(encoding="utf-8")
        size = len(text.encode())
        print(f"{path}: {size / 1e3:.0f} kB")
        assert size < PAGE_BUDGET, f"{path} is {size / 1e6:.2f} MB, over the {PAGE_BUDGET / 1e6:.1f} MB budget"
        scripts = re.findall(r'<script[^>]*src="([^"]*)"', text)
        assert any(WIDGET_JS in s for s in scripts), f"{path} does not load {WIDGET_JS}"
        remote = [s for s in scripts if urlparse(s).scheme]
        assert not remote, f"{path} loads scripts from the network: {remote}"
    assert (book_html / WIDGET_JS).is_file()
    for js in (book_html / "_static" / "widgets_js").glob("*.js"):
        assert js.stat().st_size < 2_500_000, f"{js.name} is {js.stat().st_size / 1e6:.1f} MB"
    # the 1.9 MB bundle goes only to pages with widgets
    for page in ("book/intro.html", "book/notation.html", "genindex.html"):
        if (book_html / page).is_file():
            assert "widgets_js" not in (book_html / page).read_text(encoding="utf-8"), page


def test_math_is_local(book_html):
    """MathJax comes from the book too (scripts/vendor_mathjax.sh), so equations render with no network."""
    text = (book_html / FORWARD_PAGE).read_text(encoding="utf-8")
    assert not external_mathjax(text), f"MathJax comes from {sorted(external_mathjax(text))}"
    assert (book_html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()