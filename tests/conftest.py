"""Fixtures shared by the reliability tests of issue 29."""

import pytest

TINY_TRAIN = ["--preset", "tiny", "--batch-size", "8", "--device", "cpu", "--no-progress", "--warmup-steps", "1"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 4-step run made by the command line in this process, checkpointed every 2 steps: last.pt at step 4,
    prev.pt at step 2, grids samples/step_000002.png and step_000004.png. Tests copy it before changing it."""
    from ddpm_lib.cli import main

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    assert main([str(a) for a in ["train", *TINY_TRAIN, "--steps", 4, "--checkpoint-every", 2, "--sample-every", 2,
                                  "--sample-steps", 2, "--out", out]]) == 0
    return out
