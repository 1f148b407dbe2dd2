"""The teacher's answer key, built apart from the book and the student edition.

    python scripts/answer_key.py                 # -> _build/answer-key/answer-key.md
    python scripts/answer_key.py --out DIR

For every exercise of every page, in the book's order: its chapter, label, kind (compute / write code /
why), what the check computes the answer from, the answer (the value, the signature the function is
checked against, or the right letter and why), and each common slip the check names, or, for a
multiple-choice question, why each wrong option is wrong. Everything comes from the registry in
ddpm_lib/book/exercises/, so the key cannot drift from what the checks accept.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddpm_lib.book.exercises import (ChoiceExercise, FunctionExercise, ValueExercise,  # noqa: E402
                                exercise, expected_value)

KINDS = {ValueExercise: "compute", FunctionExercise: "write code", ChoiceExercise: "why"}


def labels_by_page() -> list[tuple[str, str]]:
    """(page, label) for every exercise, in the order of the notebooks and of their cells."""
    out = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                         if c["cell_type"] == "markdown")
        out += [(path.stem, label) for label in re.findall(r"```\{exercise-start\}\s*\n:label: (\S+)", text)]
    return out


def _value(value) -> str:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    array = np.asarray(value, dtype=float) if not isinstance(value, (tuple, list)) or \
        not all(isinstance(v, int) for v in value) else None
    if array is None:
        return str(tuple(value))
    if array.ndim == 0:
        return f"{float(array):.6g}"
    return "[" + ", ".join(f"{float(v):.6g}" for v in array.ravel()) + "]"


def entry(page: str, label: str) -> str:
    ex = exercise(label)
    lines = [f"### `{label}`: {ex.title}", "", f"*{page}, {KINDS[type(ex)]}*", ""]
    if isinstance(ex, ValueExercise):
        if ex.inputs:
            lines.append(f"**Answer:** computed by the check from the chapter's {', '.join(ex.inputs)} "
                         f"(the library's own computation on them).")
            slips = []
        else:
            lines.append(f"**Answer:** `{_value(expected_value(label))}` (rtol {ex.rtol:g}, atol {ex.atol:g})")
            slips = [message for message, _ in ex.mistakes()]
        if slips:
            lines += ["", "Slips the check names:"] + [f"- {m}" for m in slips]
    elif isinstance(ex, FunctionExercise):
        lines.append(f"**Answer:** `{ex.signature}`, compared with the library on seeded random trials.")
        lines += ["", "Slips the check names:"] + [f"- {m}" for m, _ in ex.mistakes]
    else:
        lines.append(f"**Answer:** ({ex.answer}) {ex.options[ex.answer]}")
        lines += ["", f"Why: {ex.why}", "", "Why not the others:"]
        lines += [f"- ({letter}) {ex.options[letter]}: {reason}" for letter, reason in sorted(ex.reasons.items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "answer-key")
    args = parser.parse_args()
    pages = labels_by_page()
    text = ["# DDPM, by running it: the answer key", "",
            "For teachers. Not part of the book or of the student edition (`make student`).", ""]
    current = None
    for page, label in pages:
        if page != current:
            text += [f"## {page}", ""]
            current = page
        text.append(entry(page, label))
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / "answer-key.md"
    target.write_text("\n".join(text))
    print(f"{len(pages)} exercises -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
