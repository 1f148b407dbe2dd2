"""scripts/student_edition.py: the chapters without their solutions, and nothing of the answer key."""

import importlib.util
import json
import re
import zipfile
from pathlib import Path

import pytest

from test_book import CHAPTERS, answer_texts, cells, solution_markdown, source
from test_reader_edition import myst_left

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("student_edition", ROOT / "scripts" / "student_edition.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    written = _script().write_notebooks(out)
    return out, {p.name: json.loads(p.read_text()) for p in written}


def solution_lines(nb_path):
    """Distinctive lines of a chapter's solutions: in a solution cell, and nowhere else in the chapter."""
    from test_book import exercise_code_cells

    chapter = cells(nb_path)
    inside = {i for kind, i, _ in exercise_code_cells(nb_path) if kind == "solution"}
    inside |= {i for i, _, _ in solution_markdown(nb_path)}
    solved = [source(chapter[i]) for i in inside]
    elsewhere = "\n".join(source(c) for i, c in enumerate(chapter) if i not in inside)
    lines = {line.strip() for text in solved for line in text.splitlines()}
    return {line for line in lines if len(line) >= 25 and line not in elsewhere}


def test_every_notebook_is_there_and_zipped(edition):
    out, notebooks = edition
    assert set(notebooks) == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    with zipfile.ZipFile(out / _script().ZIP_NAME) as z:
        assert sorted(Path(n).name for n in z.namelist()) == sorted(notebooks)


@pytest.mark.parametrize("nb_path", CHAPTERS, ids=lambda p: p.stem)
def test_no_solution_and_no_answer_in_the_student_edition(edition, nb_path):
    _, notebooks = edition
    student = notebooks[nb_path.name]
    text = "\n".join(source(c) for c in student["cells"])
    assert "#@title Solution" not in text and "strict=True" not in text
    assert "{solution-start}" not in text and "{solution-end}" not in text
    assert not any(c["metadata"].get("jupyter", {}).get("source_hidden") for c in student["cells"])
    lines = solution_lines(nb_path)
    assert lines, "the chapter's solutions have distinctive lines to look for"
    assert not [line for line in lines if line in text]
    markdown = "\n".join(source(c) for c in cells(nb_path) if c["cell_type"] == "markdown")
    labels = re.findall(r"```\{exercise-start\}\s*\n:label: (\S+)", markdown)
    student_markdown = "\n".join(source(c) for c in student["cells"] if c["cell_type"] == "markdown")
    assert re.findall(r"\*\*Exercise\*\* `(\S+)`", student_markdown) == labels
    assert not [found for c in student["cells"] if c["cell_type"] == "markdown" and (found := myst_left(source(c)))]
    for label in labels:                                  # every exercise keeps its task and its check
        assert f'"{label}"' in text
        for answer in answer_texts(label) - {"(a)", "(b)", "(c)", "(d)"}:     # the options stay
            assert answer not in student_markdown, f"{label}: {answer} in the student edition's text"


def test_the_student_edition_keeps_everything_else(edition):
    _, notebooks = edition
    for nb_path in CHAPTERS:
        original = [c for c in cells(nb_path) if not source(c).startswith("#@title Solution")]
        kept = notebooks[nb_path.name]["cells"]
        code = lambda cs: [source(c) for c in cs if c["cell_type"] == "code"]     # noqa: E731
        assert code(kept) == code(original)


def test_the_answer_key_lists_every_exercise_with_its_answer_and_stays_apart(tmp_path, edition):
    import subprocess
    import sys

    from ddpm_lib.book.exercises import EXERCISES, ChoiceExercise

    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "answer_key.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    key = (tmp_path / "answer-key.md").read_text()
    for label, ex in EXERCISES.items():
        assert f"### `{label}`" in key
        if isinstance(ex, ChoiceExercise):
            assert f"**Answer:** ({ex.answer}) {ex.options[ex.answer]}" in key
    out, _ = edition
    assert not list(out.rglob("answer-key*")), "the answer key is not part of the student edition"
