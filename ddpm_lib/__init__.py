"""ddpm_lib: the reference implementation behind the DDPM book.

Each name below is documented where it is defined; the book's chapters call them in reading order.
"""
from .checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from .config import RunConfig
from .data import load_dataset
from .ema import EMA
from .losses import bits_per_dim, ddpm_loss, discretized_gaussian_log_likelihood, normal_kl, vlb_terms
from .ode import dpm_solver_sample, heun_sample
from .sampling import Trajectory, ddim_invert, ddim_sample, ddim_sigma, ddim_step, ddpm_sample, guided, slerp
from .schedule import NoiseSchedule
from .stopping import TrainingInterrupted
from .training import Trainer, TrainingDiverged
from .unet import PRESETS, UNet

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
