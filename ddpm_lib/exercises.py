"""Automatic checks for the book's exercises: a student's answer against the library's.

    from ddpm_lib.exercises import check
    check("abar at t=500", my_answer, expected)       # prints a verdict, never raises by default

``check`` prints a one-line verdict (right, or how far off and a hint) and returns True or False. The
book's solution cells call it with ``strict=True`` so that a wrong solution fails the build and nbval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class ExerciseFailed(AssertionError):
    """A solution cell's answer did not match (raised only with strict=True)."""


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def check(name: str, answer: Any, expected: Any, *, rtol: float = 1e-4, atol: float = 1e-6,
          hint: str = "", strict: bool = False) -> bool:
    """Compare ``answer`` with ``expected`` (numbers, arrays or tensors; shapes must match).

    Prints ``[right] name`` or ``[not yet] name: ...`` with the largest error and the ``hint``.
    ``answer=None`` (the placeholder in an exercise cell) counts as not yet attempted.
    """
    if answer is None or answer is Ellipsis:
        print(f"[not yet] {name}: replace the placeholder with your answer and run the cell again")
        ok = False
    else:
        got, want = _as_array(answer), _as_array(expected)
        if got.shape != want.shape:
            print(f"[not yet] {name}: your answer has shape {got.shape}, expected {want.shape}. {hint}".rstrip())
            ok = False
        else:
            ok = bool(np.allclose(got, want, rtol=rtol, atol=atol))
            if ok:
                print(f"[right] {name}")
            else:
                err = float(np.max(np.abs(got - want))) if got.size else 0.0
                print(f"[not yet] {name}: off by up to {err:.3g}. {hint}".rstrip())
    if strict and not ok:
        raise ExerciseFailed(f"the solution to {name!r} does not match the library")
    return ok
