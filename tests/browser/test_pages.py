"""Every page of the built book, as a reader sees it in headless Chromium at 1400 px.

Each page is loaded once; the tests below read what it showed: its figures (at least the count kept in
pages.yml), real tables, no traceback or error output, nothing wider than the article column, a console
with no error and no warning, and no request beyond the local server.
"""

from __future__ import annotations

import pytest

from .bookpage import DESKTOP, PHONE, BookPage, PageReport, expected_pages, off_host, toc_pages

pytestmark = pytest.mark.browser
PAGES = expected_pages()


def test_every_page_of_the_toc_is_listed():
    missing = [p for p in toc_pages() if p not in PAGES]
    assert not missing, f"add these pages to tests/browser/pages.yml with their figure counts: {missing}"
    extra = [p for p in PAGES if p not in toc_pages()]
    assert not extra, f"pages.yml lists pages that _toc.yml does not: {extra}"


@pytest.fixture(scope="session")
def visited(driver, server, book_html, screenshots) -> dict[str, PageReport]:
    """Each page loaded once (reports filled on first use)."""
    cache: dict[str, PageReport] = {}

    def visit(path: str) -> PageReport:
        if path not in cache:
            assert (book_html / path).is_file(), f"the built book has no {path}"
            page = BookPage(driver, server, path).load()
            cache[path] = page.report()
            if screenshots is not None:
                stem = path.replace("/", "_").removesuffix(".html")
                for name, (width, _) in (("desktop", DESKTOP), ("phone", PHONE)):
                    page.screenshot(screenshots / f"{stem}_{name}.png", width)
        return cache[path]

    return visit


@pytest.mark.parametrize("path", list(PAGES))
def test_figures_are_shown(visited, path):
    report = visited(path)
    want = PAGES[path].get("figures", 0)
    broken = [f["src"] for f in report.figures if not f["loaded"]]
    assert not broken, f"{path}: figures that did not load: {broken}"
    assert len(report.figures) >= want, (
        f"{path} shows {len(report.figures)} figures, expected at least {want} (tests/browser/pages.yml); "
        "a chapter built with MPLBACKEND=Agg shows none")


@pytest.mark.parametrize("path", list(PAGES))
def test_tables_are_tables(visited, path):
    report = visited(path)
    assert not report.pipe_tables, f"{path}: markdown tables shown as text: {report.pipe_tables}"
    want = PAGES[path].get("tables", 0)
    assert report.tables >= want, f"{path} shows {report.tables} tables, expected at least {want}"


@pytest.mark.parametrize("path", list(PAGES))
def test_no_error_output(visited, path):
    errors = visited(path).errors
    assert not errors, f"{path} shows error, traceback or stderr output:\n" + "\n---\n".join(errors)


@pytest.mark.parametrize("path", list(PAGES))
def test_nothing_runs_off_the_article_column(visited, path):
    wide = visited(path).overflow
    assert not wide, (f"{path}: {len(wide)} elements wider than the article column or scrolling "
                      "sideways at 1400 px:\n" + "\n".join(str(w) for w in wide[:10]))
    width = visited(path).page_width
    assert width <= DESKTOP[0], f"{path}: the page is {width} px wide in a {DESKTOP[0]} px window"


@pytest.mark.parametrize("path", list(PAGES))
def test_console_is_clean(visited, path):
    console = visited(path).console
    assert not console, f"{path}: the browser console reports:\n" + "\n".join(console)


@pytest.mark.parametrize("path", list(PAGES))
def test_only_local_requests(visited, path, server):
    report = visited(path)
    foreign = off_host(report.requests, server)
    assert not foreign, f"{path} made requests beyond {server}: {foreign}"
    assert not report.failed_requests, f"{path}: requests that failed: {report.failed_requests}"
