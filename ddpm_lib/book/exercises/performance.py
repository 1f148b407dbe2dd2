"""The keys of A2. performance (appendix A2): each exercise's expected value, the variant functions that reproduce its
common mistakes, its trials; the prose (titles, the mistakes' messages, the questions) is in text/performance.yaml.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

from .engine import register_chapter


def _mfu(gflop, *, passes: int = 3, percent: bool = False, giga: bool = True) -> float:
    """MFU at 14,000 images/s of ``passes`` forward passes of ``gflop`` GFLOP on a 989 TFLOP/s peak."""
    k = passes * (100 if percent else 1)
    return k * gflop * 1e9 * 14_000 / 989e12 if giga else k * gflop * 14_000 / 989


def _hours(*, per: int = 3600, product: bool = False) -> list[float]:
    """Hours for 10,000 samples at 0.13 and at 60 images/s (or the slips: seconds, minutes, the product)."""
    return [(10_000 * rate if product else 10_000 / rate) / per for rate in (0.13, 60)]


register_chapter("performance", {
    "ex-perf-mfu": {"expected": _mfu, "variant": _mfu, "inputs": ("gflop",)},
    "ex-perf-hours": {"expected": _hours, "variant": _hours},
})
