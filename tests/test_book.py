"""The book's conventions, checked statically (nbval and the builds execute the notebooks)."""

import ast
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
WITH_EXERCISES = [nb for nb in NOTEBOOKS if "{exercise-start}" in nb.read_text()]   # chapters and appendices


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
    assert len(CHAPTERS) == 8


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
    """The URL and release are set once, in _config.yml; scripts/sync_colab_cell.py writes every install cell
    from them (tests/test_reader_install.py runs the cell)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    first = cells(nb)[0]
    assert first["cell_type"] == "code" and "remove-cell" in first.get("metadata", {}).get("tags", [])
    text = source(first)
    assert f"git+{config['repository']['url']}@{config['repository']['release']}" in text
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
        assert "book_style()" in code, "call ddpm_lib.book.figures.book_style() before the first figure"
    assert not re.search(r"^def show\(", code, re.M), "use ddpm_lib.book.figures.show, not a local copy"


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
    assert "strict=True" in code
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


CHECKS = ("check", "check_function", "choose")


def exercise_code_cells(nb_path):
    """(kind, cell index, cell) for each code cell of an exercise: "exercise" between
    ```{exercise-end}``` and ```{solution-start}```, "solution" between that and ```{solution-end}```."""
    kind, out = None, []
    for i, cell in enumerate(cells(nb_path)):
        text = source(cell)
        if cell["cell_type"] == "markdown":
            for marker, now in (("{solution-end}", None), ("{exercise-start}", None),
                                ("{exercise-end}", "exercise"), ("{solution-start}", "solution")):
                if marker in text:
                    kind = now
        elif kind:
            out.append((kind, i, cell))
    return out


def check_calls(cell):
    """The check/check_function/choose calls of a cell, as ast.Call nodes."""
    return [node for node in ast.walk(ast.parse(source(cell)))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CHECKS]


@pytest.mark.parametrize("nb", WITH_EXERCISES, ids=lambda p: p.stem)
def test_exercises_are_keyed_and_give_nothing_away(nb):
    """Every exercise is checked by its label: the expected value lives in ddpm_lib.book.exercises, never
    in the cell (a check takes the label, the answer and, for some, the exercise's inputs by name)."""
    from ddpm_lib.book.exercises import EXERCISES, ValueExercise

    markdown = "\n".join(source(c) for c in cells(nb) if c["cell_type"] == "markdown")
    labels = re.findall(r"```\{exercise-start\}\s*\n:label: (\S+)", markdown)
    seen = {"exercise": set(), "solution": set()}
    for kind, i, cell in exercise_code_cells(nb):
        for call in check_calls(cell):
            where = f"{nb.name} cell {i}: {ast.unparse(call)[:80]}"
            assert len(call.args) == 2 and isinstance(call.args[0], ast.Constant), \
                f"{where}: pass only the label and the answer (no expected value)"
            label = call.args[0].value
            assert label in labels and label in EXERCISES, f"{where}: unknown label {label!r}"
            keywords = {k.arg for k in call.keywords}
            registered = EXERCISES[label]
            allowed = set(registered.inputs) if isinstance(registered, ValueExercise) else set()
            assert keywords - {"strict"} <= allowed and not keywords & {"expected", "rtol", "atol"}, where
            strict = any(k.arg == "strict" and getattr(k.value, "value", None) is True for k in call.keywords)
            assert strict == (kind == "solution"), f"{where}: strict=True in solutions only"
            seen[kind].add(label)
    assert seen["exercise"] == set(labels), f"exercises with no check in their cell: {set(labels) - seen['exercise']}"
    assert seen["solution"] == set(labels), f"solutions with no strict check: {set(labels) - seen['solution']}"


@pytest.mark.parametrize("nb", WITH_EXERCISES, ids=lambda p: p.stem)
def test_solutions_are_hidden_in_jupyter_and_colab(nb):
    """Folded in the HTML by :class: dropdown (test_chapter_shape); in JupyterLab/Notebook 7 by
    jupyter.source_hidden, in Colab by a #@title form shown as a form (cellView)."""
    solutions = [(i, c) for kind, i, c in exercise_code_cells(nb) if kind == "solution"]
    assert solutions
    for i, cell in solutions:
        meta = cell["metadata"]
        assert meta.get("jupyter", {}).get("source_hidden") is True, f"cell {i}: not hidden in Jupyter"
        assert meta.get("cellView") == "form", f"cell {i}: not hidden in Colab"
        assert source(cell).startswith("#@title Solution\n"), f"cell {i}: Colab needs a #@title line"
    for kind, i, cell in exercise_code_cells(nb):
        if kind == "exercise":
            assert "cellView" not in cell["metadata"] and "jupyter" not in cell["metadata"], \
                f"cell {i}: an exercise cell stays visible"


def test_every_chapter_has_a_code_writing_exercise_and_three_ask_why():
    from ddpm_lib.book.exercises import EXERCISES

    used = set()
    for nb in CHAPTERS:
        calls = [c for kind, _, cell in exercise_code_cells(nb) for c in check_calls(cell)]
        names = {c.func.id for c in calls}
        assert "check_function" in names, f"{nb.name}: no exercise that writes a function"
        used |= {c.args[0].value for c in calls}
    with_choice = [nb.name for nb in CHAPTERS
                   if any(c.func.id == "choose" for _, _, cell in exercise_code_cells(nb)
                          for c in check_calls(cell))]
    assert len(with_choice) >= 3, with_choice
    used |= {c.args[0].value for nb in WITH_EXERCISES for _, _, cell in exercise_code_cells(nb)
             for c in check_calls(cell)}
    assert used == set(EXERCISES), f"registered but used by no page: {set(EXERCISES) - used}"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.stem)
def test_multiple_choice_options_are_the_registrys_in_its_shuffled_order(nb):
    """The markdown lists ddpm_lib.book.exercises' options under their letters, so a question and its key
    cannot drift apart (scripts that change the options rewrite both)."""
    from ddpm_lib.book.exercises import EXERCISES, ChoiceExercise

    for cell in cells(nb):
        text = source(cell)
        for label in re.findall(r"```\{exercise-start\}\s*\n:label: (\S+)", text):
            ex = EXERCISES.get(label)
            if isinstance(ex, ChoiceExercise):
                shown = dict(re.findall(r"^- \((\w)\) (.+?)[;.]$", text, re.M))
                assert shown == ex.options, f"{nb.name} {label}: the options differ from the registry's"


def solution_markdown(nb_path):
    """(cell index, cell, text) of each markdown cell inside a solution, the directives' lines removed."""
    region, out = None, []
    for i, cell in enumerate(cells(nb_path)):
        text = source(cell)
        if cell["cell_type"] == "markdown":
            inside = re.sub(r"```\{solution-start\}[^\n]*\n:class: dropdown\n```", "", text) \
                if "{solution-start}" in text else text.split("```{solution-end}")[0]
            if (region == "solution" or "{solution-start}" in text) and inside.strip():
                out.append((i, cell, inside))
            for marker, now in (("{solution-end}", None), ("{exercise-start}", None),
                                ("{exercise-end}", "exercise"), ("{solution-start}", "solution")):
                if marker in text:
                    region = now
    return out


def answer_texts(label):
    """How a solution could state the keyed answer of ``label`` outright: its numbers as printed."""
    import numpy as np

    from ddpm_lib.book.exercises import ChoiceExercise, ValueExercise, exercise, expected_value

    ex = exercise(label)
    if isinstance(ex, ChoiceExercise):
        return {f"({ex.answer})"}
    if not isinstance(ex, ValueExercise) or ex.inputs:
        return set()
    value = expected_value(label)
    values = np.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=float).ravel()
    out = {str(tuple(int(v) for v in values))} if all(float(v).is_integer() for v in values) else set()
    for v in values:
        if float(v).is_integer() and abs(v) >= 1000:                 # smaller ones are sizes, steps, t = 500
            n = int(v)
            out |= {str(n), f"{n:,}", f"{n:,}".replace(",", "{,}")}
        elif not float(v).is_integer():
            out |= {f"{v:.3f}", f"{v:.3g}"}
    return {text for text in out if len(text) >= 4}             # "0.6" is in many sentences


@pytest.mark.parametrize("nb", WITH_EXERCISES, ids=lambda p: p.stem)
def test_solution_text_is_hidden_and_states_no_answer(nb):
    """A solution's markdown sits in cells of its own, folded in Jupyter (jupyter.source_hidden), and,
    for Colab, which cannot fold markdown, it explains the method without stating the keyed answer."""
    markdown = "\n".join(source(c) for c in cells(nb) if c["cell_type"] == "markdown")
    labels = re.findall(r"```\{exercise-start\}\s*\n:label: (\S+)", markdown)
    found = solution_markdown(nb)
    for i, cell, _ in found:
        assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, f"cell {i}: not hidden in Jupyter"
        assert "{exercise-start}" not in source(cell) and "{solution-start}" not in source(cell), \
            f"cell {i}: the solution's text shares a cell with a directive (split it)"
    if nb in CHAPTERS:
        text = "\n".join(t for _, _, t in found)
        for label in labels:
            for answer in answer_texts(label):
                assert answer not in text, f"{nb.name}: a solution states the answer of {label} ({answer})"


def test_the_exercise_index_is_generated_from_the_registry():
    """book/exercises.md lists every exercise; scripts/exercise_index.py rewrites it (never by hand)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "exercise_index.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    from ddpm_lib.book.exercises import EXERCISES
    page = (ROOT / "book" / "exercises.md").read_text()
    assert all(f"`{label}`" in page for label in EXERCISES)
