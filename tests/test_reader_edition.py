"""The reader's edition (reader/notebooks/, scripts/reader_edition.py): what Colab, Jupyter and VS Code show.

Every markdown cell is rendered with a plain CommonMark renderer, as those front ends render it, and no
MyST syntax may be left in the result; no solution's prose may be visible outside a folded <details> block,
and every solution code cell is folded by its metadata; every exercise reads as one."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from ddpm_lib.book.exercises import EXERCISES

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.ipynb"))
EDITION = ROOT / "reader" / "notebooks"
COMMONMARK = MarkdownIt("commonmark", {"html": True})


def script():
    spec = importlib.util.spec_from_file_location("reader_edition", ROOT / "scripts" / "reader_edition.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_cells(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]


def myst_left(markdown: str) -> list[str]:
    """The MyST syntax a CommonMark renderer leaves visible in ``markdown``: directive fences, roles,
    directive options and (label)= targets."""
    html = COMMONMARK.render(markdown)
    found = re.findall(r'class="language-\{[\w-]+\}', html)                  # ```{name} fences
    found += re.findall(r"\{[\w:-]+\}<code>", html)                            # {role}`...`
    found += re.findall(r"(?m)^(?:<p>)?:(?:label|class|nonumber|hidden):", html)  # directive options
    found += re.findall(r"(?m)^(?:<p>)?\([\w-]+\)=", html)                     # (label)= targets
    found += re.findall(r"(?m)^(?:<p>)?:{3,}\{", html)                          # :::{name} fences
    return found


def visible(markdown: str) -> str:
    """The text shown before anything is unfolded: the markdown without its <details> blocks."""
    return re.sub(r"<details>.*?</details>", "", markdown, flags=re.S)


def solution_phrases(source: Path) -> list[str]:
    """Phrases of every solution's prose in a source chapter: the plain-word runs of 30+ characters."""
    text, phrases = "\n".join(markdown_cells(source)), []
    for body in re.findall(r"```\{solution-start\}.*?```(.*?)```\{solution-end\}", text, re.S):
        body = re.sub(r"```\{[\w-]+\}.*?\n```", "", body, flags=re.S)
        phrases += [run.strip() for run in re.findall(r"[A-Za-z ,.;'-]{30,}", body) if len(run.strip()) >= 30]
    return phrases


def test_edition_is_in_step_with_the_chapters():
    wanted = script().editions()
    stale = [p.name for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    assert not stale, f"reader/notebooks is stale for {stale}: run python scripts/reader_edition.py"
    assert sorted(p.name for p in EDITION.glob("*.ipynb")) == [p.name for p in SOURCES]


def test_the_scan_finds_myst():
    for text in ["```{exercise-start}\n:label: ex-a\n```", "as {cite}`ho2020ddpm` show", "(sec-a)=\n# A",
                 "```{admonition} Goals\n:class: tip\nx\n```", ":::{note}\nx\n:::"]:
        assert myst_left(text), text
    assert not myst_left("**Exercise** `ex-a`\n\n> **Goals**\n>\n> x\n\n$x_t$ and `code` and [a](b)")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_no_myst_left_where_readers_open_the_chapter(path):
    assert myst_left("\n\n".join(markdown_cells(path))), "the source is MyST: the scan must see it"
    left = {f"cell {i}": found for i, cell in enumerate(markdown_cells(EDITION / path.name))
            if (found := myst_left(cell))}
    assert not left, f"raw MyST in reader/notebooks/{path.name}: {left}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_no_solution_visible_where_readers_open_the_chapter(path):
    phrases = solution_phrases(path)
    edition = EDITION / path.name
    shown = "\n".join(visible(cell) for cell in markdown_cells(edition))
    folded = "\n".join(markdown_cells(edition))
    leaked = [p for p in phrases if p in shown]
    assert not leaked, f"solution text visible in reader/notebooks/{path.name}: {leaked[:3]}"
    assert all(p in folded for p in phrases), "a solution's prose went missing instead of being folded"
    for cell in json.loads(edition.read_text())["cells"]:
        if cell["cell_type"] == "code" and "".join(cell["source"]).startswith("#@title Solution"):
            assert cell["metadata"].get("cellView") == "form", "Colab shows this solution's code"
            assert cell["metadata"].get("jupyter", {}).get("source_hidden"), "Jupyter shows this solution's code"


def test_the_leak_scan_can_fail():
    cell = "```{solution-start} ex-a\n```\nThe answer is that the variance adds up to one.\n```{solution-end}\n```"
    (phrase,) = solution_phrases_from(cell)
    assert phrase in visible(cell.replace("```{solution-start} ex-a\n```\n", ""))
    assert phrase not in visible(f"<details>\n{phrase}\n</details>")


def solution_phrases_from(markdown: str) -> list[str]:
    body = re.findall(r"```\{solution-start\}.*?```(.*?)```\{solution-end\}", markdown, re.S)
    return [run.strip() for b in body for run in re.findall(r"[A-Za-z ,.;'-]{30,}", b)]


def test_every_exercise_reads_as_one():
    text = "\n".join("\n".join(markdown_cells(p)) for p in sorted(EDITION.glob("*.ipynb")))
    missing = [label for label in EXERCISES if f"**Exercise** `{label}`" not in text]
    assert not missing, f"exercises without their heading in the reader's edition: {missing}"


def test_citations_and_links_are_plain_links():
    text = "\n".join("\n".join(markdown_cells(p)) for p in sorted(EDITION.glob("*.ipynb")))
    assert "[Ho et al. 2020](https://arxiv.org/abs/2006.11239)" in text
    book = script().book_url(script().yaml.safe_load((ROOT / "_config.yml").read_text()))
    pages = set(re.findall(re.escape(book) + r"/([\w/]+)\.html", text))
    assert pages, "no link to the HTML book"
    for page in pages:
        assert (ROOT / f"{page}.ipynb").exists() or (ROOT / f"{page}.md").exists(), page


def test_the_download_button_offers_the_reader_edition(tmp_path):
    spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
    build_book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_book)
    sources = tmp_path / "_sources" / "notebooks"
    sources.mkdir(parents=True)
    (sources / "01_forward_process.ipynb").write_text("MyST source")
    assert build_book.offer_reader_edition(tmp_path) == 1
    assert (sources / "01_forward_process.ipynb").read_text() == (EDITION / "01_forward_process.ipynb").read_text()


def test_the_launch_buttons_open_the_reader_edition():
    """sphinx-book-theme's Colab/Binder URL is repository.url/blob/branch/path_to_book/PAGE.ipynb."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    toc = (ROOT / "_toc.yml").read_text()
    assert config["repository"]["path_to_book"] == "reader"
    pages = re.findall(r"file:\s*(notebooks/\S+)", toc)
    assert pages and all((ROOT / "reader" / f"{page}.ipynb").is_file() for page in pages)
