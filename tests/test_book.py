"""The book's conventions, checked statically (nbval and the builds execute the notebooks)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CODE_WIDTH = 90                        # characters of code that fit the article column at 1400 px
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHAPTERS = [nb for nb in NOTEBOOKS if re.match(r"\d\d_", nb.name)]


def cells(nb_path):
    return json.loads(nb_path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"])


def test_toc_lists_every_notebook_and_page_exists():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    for f in files:
        assert (ROOT / f"{f}.ipynb").is_file() or (ROOT / f"{f}.md").is_file(), f"_toc.yml lists missing {f}"
    listed = {f for f in files if f.startswith("notebooks/")}
    assert listed == {f"notebooks/{nb.stem}" for nb in NOTEBOOKS}
    assert len(CHAPTERS) == 7


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(nb):
    data = json.loads(nb.read_text())
    assert set(data["metadata"]) <= {"kernelspec", "language_info", "jupytext"}, data["metadata"].keys()
    for cell in data["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, "commit with outputs cleared"


def _sync_script():
    spec = importlib.util.spec_from_file_location("sync_colab_cell", ROOT / "scripts" / "sync_colab_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_cell_installs_from_the_configured_repository(nb):
    """The URL is set once, in _config.yml; scripts/sync_colab_cell.py writes every install cell from it."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    first = cells(nb)[0]
    assert first["cell_type"] == "code" and "remove-cell" in first.get("metadata", {}).get("tags", [])
    text = source(first)
    assert '"google.colab" in sys.modules' in text
    assert f"git+{config['repository']['url']}" in text
    assert text == _sync_script().colab_cell_source(config), \
        f"{nb.name}'s install cell differs from _config.yml: run python scripts/sync_colab_cell.py"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_fits_the_article_column(nb):
    """Code a reader sees stays within CODE_WIDTH characters (the build's pages are checked in a browser)."""
    long = [(i, line) for i, cell in enumerate(cells(nb)) if cell["cell_type"] == "code"
            and "remove-cell" not in cell.get("metadata", {}).get("tags", [])
            for line in source(cell).splitlines() if len(line) > CODE_WIDTH]
    assert not long, f"{len(long)} code lines longer than {CODE_WIDTH} characters, e.g. cell {long[0][0]}: " \
                     f"{long[0][1]!r}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_use_the_book_style_and_shared_helpers(nb):
    code = "\n".join(source(c) for c in cells(nb) if c["cell_type"] == "code")
    if "matplotlib" in code:
        assert "book_style()" in code, "call ddpm_lib.images.book_style() before the first figure"
    assert not re.search(r"^def show\(", code, re.M), "use ddpm_lib.images.show, not a local copy"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_shape(nb):
    cs = cells(nb)
    markdown = "\n".join(source(c) for c in cs if c["cell_type"] == "markdown")
    code = "\n".join(source(c) for c in cs if c["cell_type"] == "code")
    assert re.search(r"^# \d\. ", markdown, re.M), "a numbered title"
    assert "Learning goals" in markdown
    labels = re.findall(r"```\{exercise-start\}\s*\n:label: (\S+)", markdown)
    assert len(labels) >= 2, "at least two exercises"
    for label in labels:
        assert re.search(r"```\{solution-start\} " + re.escape(label) + r"\s*\n:class: dropdown", markdown), \
            f"exercise {label} has no folded solution"
    assert code.count("check(") >= 2 * len(labels) and "strict=True" in code
    assert "import ddpm_lib" in code or "from ddpm_lib" in code
    assert "assert " in code, "a chapter checks its maths"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_define_no_models_schedules_or_losses(nb):
    code = "\n".join(source(c) for c in cells(nb) if c["cell_type"] == "code")
    assert not re.search(r"class \w+\((nn\.|torch\.nn\.)?Module\)", code), "define modules in ddpm_lib, not here"
    assert not re.search(r"def (q_sample|q_posterior|p_mean_variance|ddpm_loss|ddpm_sample|ddim_step|ddim_sample|"
                             r"ddim_invert|slerp|normal_kl)\b", code)


def test_citations_exist_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    texts = [source(c) for nb in NOTEBOOKS for c in cells(nb) if c["cell_type"] == "markdown"]
    texts += [p.read_text() for p in (ROOT / "book").glob("*.md")]
    cited = {k.strip() for t in texts for group in re.findall(r"\{cite[pt]?\}`([^`]+)`", t) for k in group.split(",")}
    assert cited and cited <= keys, f"cited but not in references.bib: {cited - keys}"
