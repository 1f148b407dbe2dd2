"""ddpm_lib: the reference implementation behind the DDPM book.

Each name below is documented where it is defined; the book's chapters call them in reading order.
"""
import signal as _signal
import sys as _sys


def _interrupted_while_starting(signum, frame):                           # pragma: no cover - a subprocess test
    _sys.stderr.write("error: interrupted (SIGINT) while starting; nothing was written\n")
    _sys.stderr.flush()
    __import__("os")._exit(130)


_starting = _sys.argv[:1] == ["-m"]          # `python -m ddpm_lib` imports this first: Ctrl-C then is one line
if _starting:
    _signal.signal(_signal.SIGINT, _interrupted_while_starting)

from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint  # noqa: E402
from .config import RunConfig  # noqa: E402
from .data import load_dataset  # noqa: E402
from .ema import EMA  # noqa: E402
from .losses import bits_per_dim, ddpm_loss, discretized_gaussian_log_likelihood, normal_kl, vlb_terms  # noqa: E402
from .ode import dpm_solver_sample, heun_sample  # noqa: E402
from .sampling import Trajectory, ddim_invert, ddim_sample, ddim_sigma, ddim_step, ddpm_sample, guided, slerp  # noqa: E402
from .schedule import NoiseSchedule  # noqa: E402
from .stopping import TrainingInterrupted  # noqa: E402
from .training import Trainer, TrainingDiverged  # noqa: E402
from .unet import PRESETS, UNet  # noqa: E402

if _starting:
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)           # cli.main handles Ctrl-C from here

# The one place the version is written (pyproject.toml reads it; `ddpm --version` prints it).
__version__ = "0.1.0"
__all__ = [
    "CheckpointError",
    "EMA",
    "NoiseSchedule",
    "PRESETS",
    "RunConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "Trajectory",
    "UNet",
    "bits_per_dim",
    "ddim_invert",
    "ddim_sample",
    "ddim_sigma",
    "ddim_step",
    "ddpm_loss",
    "ddpm_sample",
    "discretized_gaussian_log_likelihood",
    "dpm_solver_sample",
    "guided",
    "heun_sample",
    "load_checkpoint",
    "load_dataset",
    "model_from_checkpoint",
    "normal_kl",
    "slerp",
    "vlb_terms",
]
