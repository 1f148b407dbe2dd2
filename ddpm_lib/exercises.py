"""Automatic checks for the book's exercises: a student's answer against the library's.

    from ddpm_lib.exercises import check
    check("abar at t=500", my_answer, expected)       # prints a verdict, never raises by default

``check`` prints a one-line verdict (right, or how far off) and returns a :class:`Verdict`, which is
true when the answer is right and shows nothing as a cell's last value (so the verdict line is the
cell's only output). The hint is in the exercise cell's own source, so it is not printed again. The
book's solution cells call it with ``strict=True`` so that a wrong solution fails the build and nbval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class ExerciseFailed(AssertionError):
    """A solution cell's answer did not match (raised only with strict=True)."""


class Verdict:
    """The outcome of :func:`check`: truthy when the answer is right.

    As the last expression of a notebook cell it displays nothing (its verdict has been printed);
    ``repr()`` still says what it is elsewhere.
    """

    __slots__ = ("name", "ok")

    def __init__(self, name: str, ok: bool):
        self.name, self.ok = name, bool(ok)

    def __bool__(self) -> bool:
        return self.ok

    def __eq__(self, other: object) -> bool:
        return bool(self) == other if isinstance(other, (bool, Verdict)) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.ok)

    def __repr__(self) -> str:
        return f"Verdict({self.name!r}, ok={self.ok})"

    def _ipython_display_(self) -> None:                                  # IPython: nothing to add
        pass


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def check(name: str, answer: Any, expected: Any, *, rtol: float = 1e-4, atol: float = 1e-6,
          hint: str = "", strict: bool = False) -> Verdict:
    """Compare ``answer`` with ``expected`` (numbers, arrays or tensors; shapes must match).

    Prints one line: ``[right] name`` or ``[not yet] name: ...`` (no answer yet, the wrong shape, or
    the largest error). ``answer=None`` (the placeholder in an exercise cell) counts as not yet
    attempted. ``hint`` is for the reader of the cell, where it stands in the source; a wrong answer
    points to it rather than printing it.
    """
    if answer is None or answer is Ellipsis:
        message, ok = "no answer yet (replace None)", False
    else:
        got, want = _as_array(answer), _as_array(expected)
        if got.shape != want.shape:
            message, ok = f"shape {got.shape}, expected {want.shape}", False
        else:
            ok = bool(np.allclose(got, want, rtol=rtol, atol=atol))
            err = float(np.max(np.abs(got - want))) if got.size else 0.0
            message = "" if ok else f"off by up to {err:.3g}" + (" (see the hint)" if hint else "")
    print(f"[right] {name}" if ok else f"[not yet] {name}: {message}")
    if strict and not ok:
        raise ExerciseFailed(f"the solution to {name!r} does not match the library")
    return Verdict(name, ok)
