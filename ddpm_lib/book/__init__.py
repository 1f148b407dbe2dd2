"""What only the book needs, on top of the library: the chapters' exercises and their checks
(:mod:`.exercises`), the grader of students' notebooks (:mod:`.grading`, ``python -m ddpm_lib.book
grade``), slider viewers (:mod:`.widgets`), the chapters' profile (:mod:`.profile`), the figure style
(:mod:`.figures`), measured results and their formatters (:mod:`.results`), the performance ladder
(:mod:`.perf`), and the files the chapters read (:data:`ASSETS`: model cards, training logs, stored
samples, the sampler comparisons).

This package imports the library (``ddpm_lib``); the library never imports it (tests/test_layers.py).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_ROOT = files(__package__)
if not isinstance(_ROOT, Path):
    raise ImportError(f"ddpm_lib must be installed as files, not inside an archive ({_ROOT})")
ASSETS: Path = _ROOT / "assets"     # cards, logs, samples, progress grids, sampler_quality.json, ...
