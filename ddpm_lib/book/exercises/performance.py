"""The keys of A2. performance (appendix A2): each exercise's expected value, its common mistakes, its trials.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations



from .engine import ValueExercise, _register


_register("ex-perf-mfu", ValueExercise(
    "MFU at 14,000 images/s",
    expected=lambda gflop: 3 * gflop * 1e9 * 14_000 / 989e12,
    mistakes=lambda gflop: [
        ("a training step costs three forward passes (one forward, a backward of about two)",
         gflop * 1e9 * 14_000 / 989e12),
        ("the peak is 989 TFLOP/s = 989e12 FLOP/s, and GFLOP means 1e9 FLOP", 3 * gflop * 14_000 / 989),
        ("MFU is a fraction of the peak (0.5 for half), not a percentage", 300 * gflop * 1e9 * 14_000 / 989e12)],
    rtol=1e-3, inputs=("gflop",)))

_register("ex-perf-hours", ValueExercise(
    "hours for 10,000 samples", expected=lambda: [10_000 / 0.13 / 3600, 10_000 / 60 / 3600],
    mistakes=lambda: [
        ("hours, not seconds: divide by 3,600", [10_000 / 0.13, 10_000 / 60]),
        ("hours, not minutes: divide by 3,600, not 60", [10_000 / 0.13 / 60, 10_000 / 60 / 60]),
        ("time = images / (images per second), not the product", [10_000 * 0.13 / 3600, 10_000 * 60 / 3600])],
    rtol=1e-3))
