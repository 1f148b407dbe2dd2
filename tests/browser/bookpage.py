"""A page of the built book, loaded in headless Chromium: what a reader sees on it.

``BookPage`` loads a page with selenium's own waits (the document loaded, MathJax done typesetting,
every image decoded) and reports what the browser tests check: figures, tables, error outputs, what runs
off the right edge of the article column, console errors and the requests the page made.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = ("headless Chromium is needed for the browser tests: run "
                "'sudo apt-get install chromium chromium-driver' (or 'make browser-deps' as root)")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars"]
DESKTOP = (1400, 1000)                 # the width a reader's laptop shows the book at
PHONE = (400, 850)


def expected_pages() -> dict[str, dict]:
    """tests/browser/pages.yml: page path -> what the page must show."""
    return {page: spec or {} for page, spec in yaml.safe_load((HERE / "pages.yml").read_text()).items()}


def toc_pages() -> list[str]:
    """Every page of _toc.yml as the path of its HTML file."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    docs = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    return [f"{doc}.html" for doc in docs]


def build_inputs() -> list[Path]:
    """What the built pages depend on: when any is newer than the build, the book is rebuilt."""
    files = [ROOT / "_config.yml", ROOT / "_toc.yml"]
    for folder, pattern in (("notebooks", "*.ipynb"), ("book", "*"), ("ddpm_lib", "*.py")):
        files += (ROOT / folder).rglob(pattern)
    return [f for f in files if f.is_file()]


WAIT = 60                              # seconds for a page to settle (two busy CPU cores, MathJax)
# Console warnings the book cannot fix, from the vendored html-manager (book/static/widgets_js): its
# schema validator (ajv) notes a union type in the widget-state schema. Errors are never allowed.
KNOWN_WARNINGS = ("strict mode: use allowUnionTypes",)

# MathJax 3 resolves startup.promise once the page is typeset; a page without maths has no MathJax.
MATH_DONE_JS = """
const done = arguments[arguments.length - 1];
const mj = window.MathJax;
if (!document.querySelector('div.math, span.math') || !mj || !mj.startup || !mj.startup.promise) {
  done(true); return;
}
mj.startup.promise.then(() => done(true)).catch(() => done(false));
"""
# Text cut to n characters without splitting a surrogate pair (MathJax writes astral-plane letters).
CLIP_JS = "const clip = (text, n) => Array.from(text || '').slice(0, n).join('');\n"
IMAGES_DECODED_JS = "return [...document.images].every(i => i.complete);"

# Figures: images in cell outputs (matplotlib's PNGs), loaded and not the slider viewers' frames.
FIGURES_JS = """
return [...document.querySelectorAll('div.cell_output img')]
  .filter(i => !i.classList.contains('ddpm-frame') && !i.closest('.widget-subarea'))
  .map(i => ({src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0,
              width: i.getBoundingClientRect().width, natural: i.naturalWidth}));
"""
TABLES_JS = "return document.querySelectorAll('article table').length;"
# Markdown tables that were not parsed: lines like "| a | b |" left as text in an output or a paragraph
PIPE_TABLES_JS = CLIP_JS + """
return [...document.querySelectorAll('article div.cell_output, article p')]
  .filter(e => !e.querySelector('table') && /^\\s*\\|.*\\|.*\\|\\s*$/m.test(e.innerText))
  .map(e => clip(e.innerText, 120));
"""
ERRORS_JS = CLIP_JS + """
return [...document.querySelectorAll('div.output.traceback, div.output.error, div.output.stderr')]
  .map(e => clip(e.innerText, 300));
"""
# Elements wider than the article column, or scrolling sideways inside it: code, outputs, equations.
OVERFLOW_JS = CLIP_JS + """
const article = document.querySelector('article.bd-article') || document.querySelector('main');
const right = article.getBoundingClientRect().right + 1;
const found = [];
const selectors = ['div.cell_input pre', 'div.cell_output pre', 'div.highlight pre', 'div.math',
                   'mjx-container[display="true"]', 'div.cell_output img', 'table'];
for (const el of document.querySelectorAll(selectors.join(','))) {
  if (el.offsetParent === null) continue;                     // folded away (dropdowns, hidden inputs)
  const box = el.getBoundingClientRect();
  const scrolls = el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible';
  if (box.right > right || scrolls) {
    found.push({what: el.tagName.toLowerCase() + '.' + [...el.classList].join('.'),
                right: Math.round(box.right), column: Math.round(right),
                scroll: el.scrollWidth - el.clientWidth,
                text: clip(el.innerText || el.getAttribute('src') || '', 100)});
  }
}
return found;
"""
FULL_SIZE_JS = """
return {width: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
        height: Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)};
"""


@dataclass
class PageReport:
    """What one page showed, collected once and checked by several tests."""

    path: str
    figures: list[dict] = field(default_factory=list)
    tables: int = 0
    pipe_tables: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    overflow: list[dict] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    page_width: int = 0


class BookPage:
    """One page of the book served at ``server``, driven through ``driver``."""

    def __init__(self, driver: WebDriver, server: str, path: str):
        self.driver, self.server, self.path = driver, server, path

    @property
    def url(self) -> str:
        return f"{self.server}/{self.path}"

    def load(self) -> "BookPage":
        """Open the page and wait until it is loaded, typeset and its images decoded."""
        self.driver.get_log("performance")                                # drop what earlier pages logged
        self.driver.get_log("browser")
        self.driver.get(self.url)
        wait = WebDriverWait(self.driver, WAIT, poll_frequency=0.2)
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        self.driver.set_script_timeout(WAIT)
        self.driver.execute_async_script(MATH_DONE_JS)
        wait.until(lambda d: d.execute_script(IMAGES_DECODED_JS))
        return self

    def report(self) -> PageReport:
        """Everything the page tests check, read from the loaded page and the browser's logs."""
        d = self.driver
        rep = PageReport(self.path)
        rep.figures = d.execute_script(FIGURES_JS)
        rep.tables = d.execute_script(TABLES_JS)
        rep.pipe_tables = d.execute_script(PIPE_TABLES_JS)
        rep.errors = d.execute_script(ERRORS_JS)
        rep.overflow = d.execute_script(OVERFLOW_JS)
        rep.page_width = d.execute_script(FULL_SIZE_JS)["width"]
        rep.console = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" or
                       (e["level"] == "WARNING" and not any(k in e["message"] for k in KNOWN_WARNINGS))]
        rep.requests, rep.failed_requests = requests(d.get_log("performance"), self.server)
        return rep

    def screenshot(self, path: Path, width: int) -> None:
        """A PNG of the whole page (not just the window) at ``width`` CSS pixels."""
        d = self.driver
        before = d.get_window_size()
        d.set_window_size(width, before["height"])
        try:
            WebDriverWait(d, WAIT).until(lambda dr: dr.execute_script(IMAGES_DECODED_JS))
            size = d.execute_script(FULL_SIZE_JS)
            d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": min(size["height"], 16000), "deviceScaleFactor": 1,
                "mobile": False})
            shot = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png",
                                                                "captureBeyondViewport": True})
            path.write_bytes(base64.b64decode(shot["data"]))
        finally:
            d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            d.set_window_size(before["width"], before["height"])


def requests(log: list[dict], server: str) -> tuple[list[str], list[str]]:
    """The URLs the page asked for, and 'url (status or error)' for those that failed."""
    urls, by_id, failed = [], {}, []
    for entry in log:
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            if not params.get("documentURL", "").startswith(server):
                continue                                                   # the browser's own pages
            by_id[params["requestId"]] = params["request"]["url"]
            urls.append(params["request"]["url"])
        elif message["method"] == "Network.responseReceived" and params["requestId"] in by_id:
            if params["response"]["status"] >= 400:
                failed.append(f"{params['response']['url']} ({params['response']['status']})")
        elif message["method"] == "Network.loadingFailed" and params["requestId"] in by_id:
            failed.append(f"{by_id[params['requestId']]} ({params.get('errorText', '')})")
    return urls, failed


def off_host(urls: list[str], server: str) -> list[str]:
    """The requests that went anywhere but the local server (data: and blob: URLs are local)."""
    host = urlparse(server).netloc
    return [u for u in urls if not (u.startswith(("data:", "blob:")) or
                                    (urlparse(u).scheme == "http" and urlparse(u).netloc == host))]
