"""python -m ddpm_lib grade: small submissions (four exercises, no chapter) graded in fresh kernels.

One grading run covers every fixture, in one process, as a teacher would run it; each notebook must
finish within its time limit, and the hanging one must not stop the others.
"""

import csv
import re
import subprocess
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from ddpm_lib.book.grading import (CORRECT, ERROR, NO_ANSWER, TAMPERED, TIMEOUT, WRONG,  # noqa: E402
                              check_calls, key_access, split_cells, student_name)

SETUP = """import torch
from ddpm_lib import NoiseSchedule
from ddpm_lib.book.exercises import check, check_function, choose
schedule = NoiseSchedule.linear()
g = torch.Generator().manual_seed(1)
x500, eps500 = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)"""

RIGHT = {
    "ex-forward-abar": "answer = schedule.alphas_cumprod[499].item()",
    "ex-forward-qsample": ("def my_q_sample(schedule, x0, t, eps):\n"
                           "    abar = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)\n"
                           "    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps"),
    "ex-forward-why-cosine": "answer = {letter!r}",
    "ex-sampling-x0hat": ("abar = schedule.alphas_cumprod[499]\n"
                          "answer = (x500 - (1 - abar).sqrt() * eps500) / abar.sqrt()"),
}
SLIPS = {
    "ex-forward-abar": "answer = schedule.alphas_cumprod[500].item()",
    "ex-forward-qsample": ("def my_q_sample(schedule, x0, t, eps):\n"
                           "    abar = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)\n"
                           "    return abar * x0 + (1 - abar) * eps"),
    "ex-forward-why-cosine": "answer = {wrong!r}",
    "ex-sampling-x0hat": ("abar = schedule.alphas_cumprod[499]\n"
                          "answer = (x500 + (1 - abar).sqrt() * eps500) / abar.sqrt()"),
}
BLANK = {"ex-forward-abar": "answer = None   # your code here",
         "ex-forward-qsample": "def my_q_sample(schedule, x0, t, eps):\n    return None   # your code here",
         "ex-forward-why-cosine": "answer = None",
         "ex-sampling-x0hat": "answer = None   # your code here"}
CHECK_LINE = {
    "ex-forward-abar": 'check("ex-forward-abar", answer)',
    "ex-forward-qsample": 'check_function("ex-forward-qsample", my_q_sample)',
    "ex-forward-why-cosine": 'choose("ex-forward-why-cosine", answer)',
    "ex-sampling-x0hat": 'check("ex-sampling-x0hat", answer, schedule=schedule, x_t=x500, eps=eps500)',
}
LABELS = list(CHECK_LINE)
TIME_LIMIT = 20                      # seconds of cells per notebook (the kernel's start is not counted)


def _letters():
    from ddpm_lib.book.exercises import exercise
    ex = exercise("ex-forward-why-cosine")
    return ex.answer, sorted(ex.reasons)[0]


def submission(answers: dict, *, prelude: str = "", solutions: bool = True):
    """A notebook shaped like a chapter's exercises: markdown markers, an answer cell with its check,
    and (as the book's own notebooks have them) a hidden solution that the grader must not run."""
    right, wrong = _letters()
    cells = [nbformat.v4.new_code_cell(SETUP + ("\n" + prelude if prelude else ""))]
    for label in LABELS:
        cells.append(nbformat.v4.new_markdown_cell(f"```{{exercise-start}}\n:label: {label}\n```\n"
                                                   f"The task.\n```{{exercise-end}}\n```"))
        body = answers[label].format(letter=right, wrong=wrong)
        cells.append(nbformat.v4.new_code_cell(body + "\n" + CHECK_LINE[label]))
        if solutions:
            cells.append(nbformat.v4.new_markdown_cell(f"```{{solution-start}} {label}\n:class: dropdown\n```"))
            solved = RIGHT[label].format(letter=right) + "\n" + CHECK_LINE[label].replace(")", ", strict=True)", 1)
            cells.append(nbformat.v4.new_code_cell("#@title Solution\n" + solved))
            cells.append(nbformat.v4.new_markdown_cell("```{solution-end}\n```"))
    return nbformat.v4.new_notebook(cells=cells)


FIXTURES = {
    "correct": submission(RIGHT),
    "slips": submission(SLIPS),
    "blank": submission(BLANK),
    "raising": submission({**RIGHT, "ex-forward-abar": "answer = 1 / 0",
                           "ex-forward-qsample": ("def my_q_sample(schedule, x0, t, eps):\n"
                                                  "    return schedule.alphas_cumprod[t] * x0")}),
    "hanging": submission({**RIGHT, "ex-forward-qsample": ("def my_q_sample(schedule, x0, t, eps):\n"
                                                           "    while True:\n        pass")}),
    # changes the checker without naming it in a way a text scan sees: the run-time audit catches it
    "tampering": submission(SLIPS, prelude="m = __import__('ddpm_lib.book').book.__dict__['exer' + 'cises']\n"
                                           "setattr(m, 'check', lambda *a, **k: print('[right]'))"),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    for name, nb in FIXTURES.items():
        nbformat.write(nb, str(folder / f"{name}.ipynb"))
    (folder / "garbage.ipynb").write_text("{not json")
    paths = [str(folder / f"{name}.ipynb") for name in ("hanging", *[n for n in FIXTURES if n != "hanging"])]
    paths.append(str(folder / "garbage.ipynb"))
    out = folder / "grades.csv"
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "ddpm_lib", "grade", *paths, "--out", str(out),
                          "--timeout", str(TIME_LIMIT)], capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    rows = list(csv.DictReader(out.open())) if out.is_file() else []
    by = {(r["student"], r["exercise"]): (r["verdict"], r["detail"]) for r in rows}
    return run, by, rows, elapsed


def test_the_grader_runs_and_writes_one_row_per_student_and_exercise(graded):
    run, by, rows, elapsed = graded
    assert run.returncode == 0, run.stderr
    assert len(rows) == len(FIXTURES) * len(LABELS) + 1         # + the unreadable notebook's one row
    for name in FIXTURES:
        assert sum(r["student"] == name for r in rows) == len(LABELS)
    for name in FIXTURES:                                         # the summary: a line per exercise
        assert f"{name}: " in run.stdout
    seconds = [int(s) for s in re.findall(r"correct \((\d+) s\)", run.stdout)]
    assert len(seconds) == len(FIXTURES) + 1
    assert max(seconds) <= TIME_LIMIT + 90, seconds               # the cells' limit, plus a kernel's start
    print(f"graded {len(FIXTURES) + 1} notebooks in {elapsed:.0f} s")


def test_a_correct_submission(graded):
    _, by, _, _ = graded
    assert [by["correct", label][0] for label in LABELS] == [CORRECT] * len(LABELS)


def test_each_slip_is_named(graded):
    _, by, _, _ = graded
    assert by["slips", "ex-forward-abar"] == (WRONG, "that is abar at the paper's t = 501: the paper's "
                                                     "t = 500 is code index 499")
    assert by["slips", "ex-forward-qsample"][0] == WRONG
    assert "missing sqrt" in by["slips", "ex-forward-qsample"][1]
    _, wrong = _letters()
    assert by["slips", "ex-forward-why-cosine"][0] == WRONG
    assert by["slips", "ex-forward-why-cosine"][1].startswith(f"({wrong})")
    assert by["slips", "ex-sampling-x0hat"] == (WRONG, "the sign: subtract the noise, x_t - sqrt(1 - abar) eps")


def test_a_blank_submission_is_not_graded_by_its_own_solution_cells(graded):
    _, by, _, _ = graded
    assert [by["blank", label][0] for label in LABELS] == [NO_ANSWER] * len(LABELS)


def test_a_raising_cell_and_a_raising_function_are_errors_and_the_rest_grades(graded):
    _, by, _, _ = graded
    assert by["raising", "ex-forward-abar"] == (ERROR, "ZeroDivisionError: division by zero")
    verdict, detail = by["raising", "ex-forward-qsample"]
    assert verdict == ERROR and detail.startswith("it raised RuntimeError")
    assert by["raising", "ex-forward-why-cosine"][0] == CORRECT
    assert by["raising", "ex-sampling-x0hat"][0] == CORRECT


def test_a_hanging_submission_times_out_and_the_others_still_grade(graded):
    _, by, _, elapsed = graded
    assert by["hanging", "ex-forward-abar"][0] == CORRECT          # graded before the loop
    assert [by["hanging", label][0] for label in LABELS[1:]] == [TIMEOUT] * 3
    assert by["correct", "ex-forward-abar"][0] == CORRECT          # graded after it


def test_a_submission_that_changes_the_checker_is_marked_tampered(graded):
    _, by, _, _ = graded
    for label in LABELS:
        verdict, detail = by["tampering", label]
        assert verdict == TAMPERED and "check" in detail


def test_an_unreadable_notebook_gets_one_error_row(graded):
    _, by, _, _ = graded
    verdict, detail = by["garbage", "-"]
    assert verdict == ERROR and "not a Jupyter notebook" in detail


# ---------------------------------------------------------------- the parts, without a kernel
def test_solution_cells_are_dropped_and_checks_found():
    labels, cells = split_cells(FIXTURES["blank"])
    assert labels == LABELS
    assert not any("#@title Solution" in text for _, text, _ in cells)
    found = [c for _, _, calls in cells for c in calls]
    assert [c.label for c in found] == LABELS
    assert found[3].inputs == (("schedule", "schedule"), ("x_t", "x500"), ("eps", "eps500"))
    assert check_calls("check(") == []                            # not Python: no checks, no crash


@pytest.mark.parametrize("code", [
    "from ddpm_lib.book.exercises import expected_value",
    "import ddpm_lib.book.exercises as ex",
    "from ddpm_lib.book import exercises",
    "from ddpm_lib.book.exercises import check, EXERCISES",
    "ddpm_lib.book.exercises.check = print",
    "x = EXERCISES['ex-forward-abar']",
])
def test_reading_the_key_is_tampering(code):
    assert key_access([SETUP, code])


def test_the_chapters_imports_are_not_tampering():
    assert key_access([SETUP, "from ddpm_lib.book.exercises import check, check_function, choose"]) == ""


def test_students_are_named_by_file_or_by_folder(tmp_path):
    assert student_name(tmp_path / "alice.ipynb") == "alice"
    assert student_name(tmp_path / "bob" / "01_forward_process.ipynb") == "bob"


def test_bad_input_is_one_line(tmp_path):
    for args, says in ((["grade", str(tmp_path / "missing.ipynb")], "does not exist"),
                       (["grade", str(tmp_path)], "is a folder"),
                       (["grade", __file__], "not a notebook")):
        run = subprocess.run([sys.executable, "-m", "ddpm_lib.book", *args], capture_output=True, text=True)
        assert run.returncode == 2 and says in run.stderr and len(run.stderr.strip().splitlines()) == 1
