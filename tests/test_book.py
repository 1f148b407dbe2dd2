"""The book's conventions, checked statically (nbval and the builds execute the notebooks)."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
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
    assert len(CHAPTERS) == 6


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(nb):
    data = json.loads(nb.read_text())
    assert set(data["metadata"]) <= {"kernelspec", "language_info", "jupytext"}, data["metadata"].keys()
    for cell in data["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, "commit with outputs cleared"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_cell_installs_from_the_configured_repository(nb):
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    first = cells(nb)[0]
    assert first["cell_type"] == "code" and "remove-cell" in first.get("metadata", {}).get("tags", [])
    text = source(first)
    assert '"google.colab" in sys.modules' in text
    assert f"git+{url}" in text, f"{nb.name}'s install cell does not use {url} from _config.yml"


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
    assert not re.search(r"def (q_sample|q_posterior|p_mean_variance|ddpm_loss|ddpm_sample|ddim_step|ddim_sample|ddim_invert|"
                               r"slerp|normal_kl)\b", code)


def test_citations_exist_in_the_bibliography():
    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,]+),", bib))
    texts = [source(c) for nb in NOTEBOOKS for c in cells(nb) if c["cell_type"] == "markdown"]
    texts += [p.read_text() for p in (ROOT / "book").glob("*.md")]
    cited = {k.strip() for t in texts for group in re.findall(r"\{cite[pt]?\}`([^`]+)`", t) for k in group.split(",")}
    assert cited and cited <= keys, f"cited but not in references.bib: {cited - keys}"
