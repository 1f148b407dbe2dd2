"""Checkpoints: written atomically, read with checks, turned back into a model and its schedule.

A training checkpoint (``kind="train"``) holds everything needed to continue a run exactly: model,
EMA, optimizer, learning-rate scheduler, step, run config, RNG states and the data set's fingerprint.
A weights file (``kind="weights"``, e.g. the one that ships with the book) holds the EMA weights, the
model and schedule configs and the run's summary, and nothing for resuming.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .schedule import NoiseSchedule
from .unet import UNet

FORMAT = "ddpm_lib-checkpoint"
VERSION = 1
ASSETS = Path(__file__).resolve().parent / "assets"
# The models that ship with the package, by the name ``--checkpoint`` (and load_checkpoint) accepts.
SHIPPED_MODELS = {"mnist": ASSETS / "mnist_small.pt"}
SHIPPED = SHIPPED_MODELS["mnist"]                                          # the default model


def resolve_checkpoint(name_or_path: str | Path | None) -> Path:
    """The file a ``--checkpoint`` argument means: a shipped model's name, or a path (None: the default model)."""
    if name_or_path is None:
        return SHIPPED
    if isinstance(name_or_path, str) and name_or_path in SHIPPED_MODELS and not Path(name_or_path).exists():
        return SHIPPED_MODELS[name_or_path]
    return Path(name_or_path)


class CheckpointError(ValueError):
    """A file is missing, is not a ddpm_lib checkpoint, or does not fit what it is used for."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save ``obj`` to ``path`` so that a crash at any moment leaves the old file or the new one.

    Writes a temporary file in the same folder, flushes and fsyncs it, renames it over ``path`` (an
    atomic operation on POSIX and Windows) and fsyncs the folder so the rename itself is durable.
    Temporary files that a killed writer left behind are removed after a successful write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    for stale in path.parent.glob(f".{path.name}.*.tmp"):                  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def load_checkpoint(path: str | Path | None = None, map_location: str | torch.device = "cpu") -> dict:
    """Read a ddpm_lib checkpoint or weights file: a path, or the name of a shipped model (``SHIPPED_MODELS``).

    ``path=None`` reads the default shipped MNIST model. Raises :class:`CheckpointError` naming the file
    when it is missing, unreadable or not ours.
    """
    path = resolve_checkpoint(path)
    if not path.exists():
        names = ", ".join(SHIPPED_MODELS)
        raise CheckpointError(f"checkpoint {path} does not exist (shipped models by name: {names})")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file (did you mean {path / 'last.pt'}?)")
    if not zipfile.is_zipfile(path):                                        # torch.save writes a zip archive
        raise CheckpointError(f"{path} is not a ddpm_lib checkpoint (not a file written by torch.save)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is not a ddpm_lib checkpoint (torch.load failed: {reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ddpm_lib checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer ddpm_lib (format version {ckpt['version']})")
    ckpt["path"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict, *, weights: str = "ema", device: str | torch.device = "cpu",
                          in_channels: int | None = None, preset: str | None = None,
                          schedule: NoiseSchedule | None = None) -> tuple[UNet, NoiseSchedule]:
    """The model (in eval mode) and the noise schedule it was trained with.

    ``weights`` picks the EMA weights (what DDPM samples with) or the raw ``"model"`` weights.
    ``in_channels`` / ``preset`` / ``schedule``, when given, must match the checkpoint's (a clear error
    otherwise): sampling with another schedule than the training one gives wrong images silently.
    Warns when the EMA has averaged so few updates that its samples would still look like noise.
    """
    name = ckpt.get("path", "the checkpoint")
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', got {weights!r}")
    if weights not in ckpt:
        raise CheckpointError(f"{name} holds no {weights!r} weights")
    model_config = dict(ckpt["model_config"])
    if in_channels is not None and model_config["in_channels"] != in_channels:
        raise CheckpointError(f"{name} is a model of {model_config['in_channels']} channel(s), not {in_channels}")
    run_preset = ckpt.get("config", {}).get("preset")
    if preset is not None and run_preset is not None and run_preset != preset:
        raise CheckpointError(f"{name} holds a {run_preset!r} model, not {preset!r}")
    model = UNet(**model_config)
    state = ckpt[weights]["module"] if weights == "ema" and "module" in ckpt[weights] else ckpt[weights]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{name}: weights do not fit the model config ({str(err).splitlines()[0]})") from None
    if weights == "ema":
        updates = ckpt.get("ema_updates", ckpt[weights].get("num_updates") if isinstance(ckpt[weights], dict) else None)
        if updates is not None and updates < 200:
            warnings.warn(f"{name}: the EMA weights average only {updates} updates; early in training they are "
                          "close to the random initial weights and sample noise. Use weights='model' "
                          "(--weights model) or train longer.", stacklevel=2)
    saved = NoiseSchedule.from_config(ckpt["schedule"])
    if schedule is not None and not saved.same_as(schedule):
        raise CheckpointError(f"{name} was trained with {saved!r}, not {schedule!r}; sample with the schedule "
                              "returned by model_from_checkpoint")
    return model.to(device).eval(), saved.to(device)


def export_weights(ckpt: dict, path: str | Path, *, include_raw: bool = True, **extra: Any) -> Path:
    """Write the slim, weights-only form of a training checkpoint (configs, summary and weights).

    Keeps the EMA weights in float32 (what sampling uses) and, with ``include_raw``, the raw weights in
    float16, half the size, for comparing the two (``weights="model"``; they load back into a float32
    model). No optimizer state, so it cannot be resumed from.
    """
    slim = {"format": FORMAT, "version": VERSION, "kind": "weights", "model_config": ckpt["model_config"],
            "schedule": ckpt["schedule"], "config": ckpt["config"], "step": ckpt["step"],
            "ema": ckpt["ema"]["module"], "ema_updates": ckpt["ema"]["num_updates"],
            "data_hash": ckpt.get("data_hash"), **extra}
    if include_raw:
        slim["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
        slim["raw_weights_dtype"] = "float16"
    return atomic_save(slim, path)
