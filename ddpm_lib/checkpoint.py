"""Checkpoints: written atomically, read with checks, turned back into a model and its schedule.

A training checkpoint (``kind="train"``) holds everything needed to continue a run exactly: model,
EMA, optimizer, learning-rate scheduler, step, run config, RNG states and the data set's fingerprint.
A weights file (``kind="weights"``, e.g. the one that ships with the book) holds the EMA weights, the
model and schedule configs and the run's summary, and nothing for resuming.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .files import FileNotUsable, check_regular_file, remove_stale_temporaries, temporary_name, write_failure
from .package_files import ASSETS
from .schedule import NoiseSchedule
from .unet import MAX_CLASSES, UNet

FORMAT = "ddpm_lib-checkpoint"
VERSION = 1
# The models that ship with the package, by the name ``--checkpoint`` (and load_checkpoint) accepts.
SHIPPED_MODELS = {"mnist": ASSETS / "mnist_small.pt", "mnist-conditional": ASSETS / "mnist_conditional.pt",
                  "fashion-conditional": ASSETS / "fashion_conditional.pt"}
SHIPPED = SHIPPED_MODELS["mnist"]                                          # the default model
# `sample` with a shipped model on a CPU and no --sampler: chosen by measurement (appendix A1 states the rule
# and asserts it): of the samplers measured with three seeds (sampler_quality.json, ode_quality.json) that draw
# 256 images in <= 60 s of sampling here and pass the shipped model's bars (class entropy >= 0.97, Frechet
# below noised digits'), the best mean confident share: DDIM with eta 1 on 50 steps, 82.8 +- 0.8% against
# 84.0 +- 0.7% for 1,000 DDPM steps (a tie within two standard errors), 20 times fewer network calls.
SHIPPED_CPU_SAMPLER, SHIPPED_CPU_STEPS, SHIPPED_CPU_ETA = "ddim", 50, 1.0
DDIM_DEFAULT_STEPS = 50                                  # `--sampler ddim` without --steps, any model
ODE_SAMPLERS = ("heun", "dpm++")                         # ddpm_lib.ode: network calls, not steps, are --steps
ODE_DEFAULT_STEPS = 20                                   # their calls without --steps


def shipped_cpu_default() -> str:
    """The shipped models' CPU default in words, e.g. 'ddim, eta 1, 50 steps'."""
    eta = f", eta {SHIPPED_CPU_ETA:g}" if SHIPPED_CPU_SAMPLER == "ddim" else ""
    unit = "network calls" if SHIPPED_CPU_SAMPLER in ODE_SAMPLERS else "steps"
    return f"{SHIPPED_CPU_SAMPLER}{eta}, {SHIPPED_CPU_STEPS} {unit}"


def resolve_checkpoint(name_or_path: str | Path | None) -> Path:
    """The file a ``--checkpoint`` argument means: a shipped model's name, or a path (None: the default model)."""
    if name_or_path is None:
        return SHIPPED
    if isinstance(name_or_path, str) and name_or_path in SHIPPED_MODELS and not Path(name_or_path).exists():
        return SHIPPED_MODELS[name_or_path]
    return Path(name_or_path)


class CheckpointError(ValueError):
    """A file is missing, is not a ddpm_lib checkpoint, or does not fit what it is used for."""


def atomic_save(obj: Any, path: str | Path, previous: str | Path | None = None) -> Path:
    """torch.save ``obj`` to ``path`` so that a crash at any moment leaves the old file or the new one.

    Writes a temporary file in the same folder, flushes and fsyncs it, renames it over ``path`` (an
    atomic operation on POSIX and Windows) and fsyncs the folder so the rename itself is durable. With
    ``previous`` (a run's prev.pt), the file ``path`` held until now is kept under that name, also atomically.
    A failed write (a full disk, ``ulimit -f``) raises :class:`~ddpm_lib.files.WriteFailed` naming ``path``;
    the old file is untouched. Temporary files that killed writers left behind are removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            keep_as(path, Path(previous))
        os.replace(tmp, path)
    except Exception as err:
        intact = "the previous checkpoint is intact" if path.exists() else "no checkpoint was written"
        failed = write_failure(err, path, intact)
        if failed is None:
            raise
        raise failed from None
    finally:
        tmp.unlink(missing_ok=True)
    for written in (path, Path(previous)) if previous is not None else (path,):
        remove_stale_temporaries(written)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def keep_as(path: Path, previous: Path) -> None:
    """Give the file at ``path`` the name ``previous`` too (replacing what that held), leaving ``path`` in place.

    A hard link renamed over ``previous``: atomic, no copy. Where hard links are not supported the file is
    renamed instead, and until the caller writes ``path`` again only ``previous`` exists (a resume falls back
    to it).
    """
    link = temporary_name(previous)
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:
        os.replace(path, previous)
        return
    os.replace(link, previous)


def verify_zip(path: Path) -> None:
    """Raise CheckpointError unless every entry of the zip file ``path`` matches its stored CRC-32.

    torch.save writes a zip archive with a checksum of every entry (the pickle and each tensor's bytes),
    and torch.load does not check them: flipped bytes inside a tensor would load silently.
    Entries saved without a checksum (a CRC of 0) are not checked.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            for entry in archive.infolist():
                if entry.CRC == 0 and entry.file_size:                    # written without a checksum
                    continue
                with archive.open(entry) as f:                             # checks the CRC at the end
                    while f.read(1 << 24):
                        pass
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
        raise damaged(path, f"is corrupt ({reason(err)})") from None


def damaged(path: Path, problem: str) -> CheckpointError:
    """A CheckpointError for a damaged file, saying where an intact copy may be (its ``problem`` without that)."""
    previous = path.with_name("prev.pt")
    where = (f"{previous} holds the checkpoint before it" if path.name == "last.pt" and previous.is_file()
             else "use an intact copy")
    err = CheckpointError(f"{path} {problem}; {where}")
    err.problem = f"{path} {problem}"
    return err


def reason(err: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), whole."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_checkpoint(path: str | Path | None = None, map_location: str | torch.device = "cpu") -> dict:
    """Read a ddpm_lib checkpoint or weights file: a path, or the name of a shipped model (``SHIPPED_MODELS``).

    ``path=None`` reads the default shipped MNIST model. Raises :class:`CheckpointError` naming the file
    when it is missing, truncated, corrupt (see :func:`verify_zip`), unreadable, not ours, or lacks what
    its kind must hold (see :func:`check_structure`).
    """
    path = resolve_checkpoint(path)
    if not path.exists() and not path.is_symlink():
        names = ", ".join(SHIPPED_MODELS)
        raise CheckpointError(f"checkpoint {path} does not exist (shipped models by name: {names})")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a file (did you mean {path / 'last.pt'}?)")
    try:
        check_regular_file(path, "checkpoint")                             # a FIFO, /dev/zero: before opening
    except FileNotUsable as err:
        raise CheckpointError(str(err)) from None
    if not zipfile.is_zipfile(path):                                        # torch.save writes a zip archive
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04" or not head:
            raise damaged(path, "is empty" if not head else "is truncated or has bytes appended (its zip directory "
                                                           "is not at its end)")
        raise CheckpointError(f"{path} is not a ddpm_lib checkpoint (not a file written by torch.save)")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":                                    # torch.save's zip starts at byte 0
            raise damaged(path, "has bytes prepended (a zip archive that does not start at its first byte)")
    verify_zip(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        if "Weights only load failed" in str(err):                         # a pickled object was refused
            raise CheckpointError(f"{path} is not a ddpm_lib checkpoint: it holds Python objects, which are not "
                                  f"loaded for safety{_refused_object(str(err))}") from None
        raise CheckpointError(f"{path} is not a ddpm_lib checkpoint (torch.load failed: {reason(err)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a ddpm_lib checkpoint (no '{FORMAT}' marker)")
    version = ckpt.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path} was written by a newer ddpm_lib (format version {version!r})")
    ckpt["path"] = str(path)
    check_structure(ckpt)
    return ckpt


def _refused_object(message: str) -> str:
    """' (what torch.load refused)', from its weights_only message (whose first lines are advice)."""
    found = re.search(r"^.*(GLOBAL|[Uu]nsupported).*$", message, re.M)
    return f" ({found.group(0).strip()})" if found and not found.group(0).startswith("Weights only") else ""


# What each kind of file must hold, and which of those entries are mappings.
REQUIRED = {"weights": ("model_config", "schedule", "ema"),
            "train": ("model_config", "schedule", "ema", "model", "optimizer", "scheduler", "config", "step", "rng")}
MAPPINGS = ("model_config", "schedule", "ema", "model", "optimizer", "scheduler", "config")


def check_structure(ckpt: dict) -> None:
    """Raise CheckpointError unless ``ckpt`` holds the entries of its kind, of the right types.

    Catches edited or hand-made files before anything is built from them.
    """
    name = ckpt.get("path", "the checkpoint")
    kind = ckpt.get("kind")
    if kind not in REQUIRED:
        raise CheckpointError(f"{name} is of an unknown kind {kind!r} (expected 'train' or 'weights')")
    missing = [key for key in REQUIRED[kind] if key not in ckpt]
    if missing:
        raise CheckpointError(f"{name} is incomplete: it has no {', '.join(repr(k) for k in missing)}")
    wrong = [key for key in MAPPINGS if key in ckpt and not isinstance(ckpt[key], dict)]
    if wrong:
        raise CheckpointError(f"{name} is damaged: its {', '.join(repr(k) for k in wrong)} should be a mapping")
    step = ckpt.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{name} is damaged: its step {step!r} is not a whole number >= 0")
    if kind == "train" and not isinstance(ckpt["ema"].get("module"), dict):
        raise CheckpointError(f"{name} is damaged: its EMA holds no weights")
    counters = {"ema.num_updates": ckpt["ema"].get("num_updates")} if kind == "train" else {}
    if kind == "train" and not isinstance(ckpt["ema"].get("warmup"), bool):
        raise CheckpointError(f"{name} is damaged: its ema.warmup {ckpt['ema'].get('warmup')!r} is not true or false")
    counters["ema_updates"] = ckpt.get("ema_updates", 0)
    counters["skipped_steps"] = ckpt.get("skipped_steps", 0)
    for key, value in counters.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"{name} is damaged: its {key} {value!r} is not a whole number >= 0")
    decay = ckpt["ema"].get("decay") if kind == "train" else 0.0
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
        raise CheckpointError(f"{name} is damaged: its ema.decay {decay!r} is not a number in [0, 1)")
    problem = weights_problem(ckpt)
    if problem is not None:
        raise damaged(Path(name), problem) if "path" in ckpt else CheckpointError(f"{name} {problem}")


def weights_problem(ckpt: dict) -> str | None:
    """What is wrong with a checkpoint's weights (None when nothing): the first tensor, in the order raw weights,
    EMA, that is not a floating-point tensor or holds a NaN or an infinity. Such weights sample black images."""
    kind = ckpt.get("kind")
    groups = {"model": ckpt.get("model"), "EMA": ckpt["ema"].get("module") if kind == "train" else ckpt.get("ema")}
    for group, state in groups.items():
        if not isinstance(state, dict):
            continue
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                return f"is damaged: its {group} entry {key!r} is not a tensor"
            if not value.is_floating_point():
                dtype = str(value.dtype).replace("torch.", "")
                return f"is damaged: its {group} weight {key!r} is {dtype}, not floating point"
            if not bool(torch.isfinite(value).all()):
                return f"is damaged: its {group} weight {key!r} holds NaN or infinite values"
    return None


def ema_weights(ckpt: dict) -> dict:
    """The EMA weights' state dict of a loaded checkpoint: a training checkpoint keeps them under
    ``ema["module"]`` beside the EMA's counters, a weights file (and a shipped model) as ``ema`` itself."""
    ema = ckpt["ema"]
    return ema["module"] if isinstance(ema, dict) and "module" in ema else ema


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
    state = ema_weights(ckpt) if weights == "ema" else ckpt[weights]
    model_config = checked_model_config(ckpt["model_config"], state, name)
    channels = model_config.get("in_channels", 1)
    if in_channels is not None and channels != in_channels:
        raise CheckpointError(f"{name} is a model of {channels} channel(s), not {in_channels}")
    run_preset = ckpt.get("config", {}).get("preset")
    if preset is not None and run_preset is not None and run_preset != preset:
        raise CheckpointError(f"{name} holds a {run_preset!r} model, not {preset!r}")
    saved = schedule_from_config(ckpt["schedule"], name)
    model = UNet(**model_config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{name}: weights do not fit the model config ({reason(err)})") from None
    if weights == "ema":
        updates = ckpt.get("ema_updates", ckpt[weights].get("num_updates") if isinstance(ckpt[weights], dict) else None)
        if updates is not None and updates < 200:
            warnings.warn(f"{name}: the EMA weights average only {updates} updates; early in training they are "
                          "close to the random initial weights and sample noise. Use weights='model' "
                          "(--weights model) or train longer.", stacklevel=2)
    if schedule is not None and not saved.same_as(schedule):
        raise CheckpointError(f"{name} was trained with {saved!r}, not {schedule!r}; sample with the schedule "
                              "returned by model_from_checkpoint")
    return model.to(device).eval(), saved.to(device)


# Bounds on a model_config read from a file: far above any model here, low enough that nothing absurd is built.
MODEL_CONFIG_LIMITS = {"in_channels": 64, "base_channels": 4096, "num_res_blocks": 16, "num_heads": 1024,
                       "num_groups": 4096, "image_size": 4096, "num_classes": MAX_CLASSES}


def checked_model_config(config: Any, state: Any, name: str) -> dict:
    """A checkpoint's ``model_config`` after checking it builds a UNet whose tensors have the shapes in ``state``.

    Sizes are bounded first (MODEL_CONFIG_LIMITS, at most 8 levels), then the network is built on the meta
    device, which allocates nothing, and its tensor shapes compared with the stored weights: an edited or
    damaged config is refused before any memory is spent on it.
    """
    problem = _model_config_problem(config)
    if problem is None:
        try:
            with torch.device("meta"):
                expected = {k: tuple(v.shape) for k, v in UNet(**config).state_dict().items()}
        except (TypeError, ValueError, RuntimeError) as err:
            problem = reason(err)
    if problem is not None:
        raise CheckpointError(f"{name} has an unusable model_config ({problem})")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{name} is damaged: its weights are not a mapping of tensors")
    stored = {k: tuple(v.shape) for k, v in state.items()}
    if stored != expected:
        diff = sorted(set(stored.items()) ^ set(expected.items()))[0][0]
        raise CheckpointError(f"{name}: weights do not fit its model_config (first difference: {diff} is "
                              f"{stored.get(diff, 'missing')} in the file, {expected.get(diff, 'absent')} in the "
                              "model)")
    return dict(config)


def _model_config_problem(config: Any) -> str | None:
    """What is wrong with a model_config's types and sizes (None when nothing is)."""
    if not isinstance(config, dict):
        return "not a mapping"
    allowed = set(inspect.signature(UNet.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        return f"unknown entries {unknown}"
    for key, limit in MODEL_CONFIG_LIMITS.items():
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit):
            return f"{key}={value!r} is not a whole number from 1 to {limit}"
    for key, limit in (("channel_mult", 64), ("attention_resolutions", 4096)):
        value = config.get(key, ())
        if (not isinstance(value, (list, tuple)) or len(value) > 8
                or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= limit for v in value)):
            return f"{key}={value!r} is not a list of at most 8 whole numbers from 1 to {limit}"
    return None


def schedule_from_config(config: Any, name: str) -> NoiseSchedule:
    """The NoiseSchedule a checkpoint's ``schedule`` entry describes, or CheckpointError naming the file."""
    try:
        return NoiseSchedule.from_config(config)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{name} has an unusable noise schedule ({reason(err)})") from None


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
