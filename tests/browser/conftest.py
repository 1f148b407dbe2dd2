"""Fixtures of the browser tests: the built book, a local server for it, and headless Chromium.

The tests need the whole book built *executed* (figures, widget frames). They use, in this order:

* ``DDPM_BOOK_HTML=dir``: that built book (no build);
* ``_build/html`` when it is newer than everything the pages are built from (``make book`` just ran);
* otherwise they build the book now into ``_build/browser/html`` (``scripts/build_book.py --out``), which
  takes several minutes on a small CPU.

They need Debian's ``chromium`` and ``chromium-driver`` (``make browser-deps`` installs them as root);
without them they fail and say so. ``DDPM_SCREENSHOTS=dir`` saves full-page screenshots of every page at
the desktop and phone widths, and of the widgets as the tests drive them.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .bookpage import CHROME_FLAGS, CHROMEDRIVER, CHROMIUM, DESKTOP, INSTALL_HINT, ROOT, build_inputs

# ------------------------------------------------------------------------------------------------ the book

def build_is_fresh(html: Path) -> bool:
    """Sphinx rewrites .buildinfo at the end of every build; the staged build writes a whole new folder."""
    stamp = html / ".buildinfo"
    if not (stamp.is_file() and (html / "index.html").is_file()):
        return False
    return all(f.stat().st_mtime < stamp.stat().st_mtime for f in build_inputs())


@pytest.fixture(scope="session")
def book_html() -> Path:
    if os.environ.get("DDPM_BOOK_HTML"):
        html = Path(os.environ["DDPM_BOOK_HTML"]).resolve()
        if not (html / "index.html").is_file():
            pytest.fail(f"DDPM_BOOK_HTML={html} is not a built book (no index.html)")
        return html
    html = ROOT / "_build" / "html"
    if build_is_fresh(html):
        return html
    out = ROOT / "_build" / "browser"
    if build_is_fresh(out / "html"):
        return out / "html"
    cmd = [sys.executable, str(ROOT / "scripts" / "build_book.py"), "--out", str(out)]
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"building the book failed ({' '.join(cmd)}, exit {proc.returncode}):\n"
                    f"{(proc.stdout + proc.stderr)[-4000:]}")
    print(f"built the book in {time.time() - start:.0f} s")
    return out / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):                                 # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="session")
def server(book_html) -> str:
    """http://127.0.0.1:<free port> serving the built book from a thread."""
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
    """Headless Debian Chromium at the desktop width, logging the console and every network request."""
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
    for flag in CHROME_FLAGS + [f"--window-size={DESKTOP[0]},{DESKTOP[1]}", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    try:
        browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    except Exception as err:                                               # e.g. driver and browser versions differ
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"could not start {CHROMIUM} with {CHROMEDRIVER}: {err}\n{INSTALL_HINT}")
    try:
        browser.set_window_size(*DESKTOP)
        browser.get("about:blank")
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def screenshots() -> Path | None:
    """The folder for screenshots ($DDPM_SCREENSHOTS), or None."""
    folder = os.environ.get("DDPM_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path
