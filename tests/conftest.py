"""Fixtures shared by the test modules: the bundled digits, small CPU run configs and a tiny command-line run."""

import pytest

from ddpm_lib import RunConfig

TINY_TRAIN = ["--preset", "tiny", "--batch-size", "8", "--device", "cpu", "--no-progress", "--warmup-steps", "1"]
# A short CPU run: checkpoints at steps 3 and 6, log rows flushed every 2 steps, warmup done after 2.
RUN_DEFAULTS = dict(steps=6, batch_size=4, checkpoint_every=3, log_every=2, warmup_steps=2, progress=False,
                    device="cpu")


@pytest.fixture(scope="session")
def mnist_sample():
    """The training split of the bundled digits (N, 1, 32, 32) in [-1, 1], loaded once. Do not change it."""
    from ddpm_lib import load_dataset

    return load_dataset("mnist-sample")


@pytest.fixture
def digits(mnist_sample):
    """The first 64 bundled digits, a copy of the test's own."""
    return mnist_sample[:64].clone()


@pytest.fixture
def run_config(tmp_path):
    """Makes RunConfigs of RUN_DEFAULTS writing to tmp_path / name: ``run_config(name="run", **settings)``."""
    def make(name="run", **settings):
        return RunConfig(**{**RUN_DEFAULTS, "out": str(tmp_path / name), **settings})

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A 4-step run made by the command line in this process, checkpointed every 2 steps: last.pt at step 4,
    prev.pt at step 2, grids samples/step_000002.png and step_000004.png. Tests copy it before changing it."""
    from ddpm_lib.cli import main

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    assert main([str(a) for a in ["train", *TINY_TRAIN, "--steps", 4, "--checkpoint-every", 2, "--sample-every", 2,
                                  "--sample-steps", 2, "--out", out]]) == 0
    return out


@pytest.fixture(scope="session")
def cli_processes():
    """tests/cli_processes.py: runs `python -m ddpm_lib` command lines as real processes, forked from one that
    imported ddpm_lib once (``run(groups, parallel=...)``)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("cli_processes", Path(__file__).with_name("cli_processes.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
