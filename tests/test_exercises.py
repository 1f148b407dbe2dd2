"""ddpm_lib.exercises.check: one short verdict line, nothing else shown in a notebook, strict raises."""

import pytest
import torch

from ddpm_lib.exercises import ExerciseFailed, Verdict, check


@pytest.mark.parametrize("answer, expected, verdict", [
    (None, 1.0, "[not yet] q: no answer yet (replace None)"),
    (1.0, 1.0, "[right] q"),
    (torch.tensor([1.0, 2.0]), [1.0, 2.0 + 1e-9], "[right] q"),
    (1.5, 1.0, "[not yet] q: off by up to 0.5 (see the hint)"),
    ([1.0, 2.0], 1.0, "[not yet] q: shape (2,), expected ()"),
])
def test_check_prints_one_short_line(capsys, answer, expected, verdict):
    result = check("q", answer, expected, hint="a long hint that stays in the cell's source " * 3)
    out = capsys.readouterr().out
    assert out == verdict + "\n"
    assert isinstance(result, Verdict) and bool(result) == verdict.startswith("[right]")


def test_verdict_shows_nothing_as_a_cell_value():
    """IPython calls _ipython_display_ instead of printing a repr: no stray True/False under the line."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        result = shell.run_cell("from ddpm_lib.exercises import check\ncheck('q', None, 1.0)")
        assert result.success and isinstance(result.result, Verdict) and not result.result
        assert shell.display_formatter.format(result.result) == ({}, {})        # no text/plain 'False'
        assert shell.display_formatter.format(False)[0]["text/plain"] == "False"  # what a bool would show
    finally:
        InteractiveShell.clear_instance()
    assert repr(check("q", 1, 1)) == "Verdict('q', ok=True)"


def test_strict_raises_on_a_wrong_solution():
    with pytest.raises(ExerciseFailed):
        check("q", 2.0, 1.0, strict=True)
    assert check("q", 1.0, 1.0, strict=True)
