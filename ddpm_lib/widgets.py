"""Slider viewers for the forward and reverse processes, live in Jupyter and in the static HTML book.

Every frame is computed in Python once, encoded as a small PNG and put in an ``ipywidgets.Image``;
the frames sit in a ``Stack`` whose ``selected_index`` is *jslinked* to a slider and a Play button,
and the choice of schedule or variance is a ``ToggleButtons`` jslinked to an outer ``Stack``. Links made
with ``jslink`` run in the browser, so the HTML book (whose widget state is saved when it is built)
needs neither a kernel nor a network to move the pictures. Controls that must compute new frames
(a new seed) use ``observe`` and work only with a running kernel; they say so.

Needs ``ipywidgets`` (the ``book`` extra).
"""

from __future__ import annotations

import io
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .images import make_grid, png_bytes
from .sampling import Trajectory, ddpm_sample
from .schedule import NoiseSchedule

PIXELATED = "image-rendering: pixelated; image-rendering: crisp-edges;"


def _widgets():
    try:
        import ipywidgets
    except ImportError as err:                                             # pragma: no cover - import guard
        raise ImportError("the slider viewers need ipywidgets: pip install 'ddpm_lib[book]'") from err
    return ipywidgets


def frame_indices(T: int, frames: int) -> list[int]:
    """``frames`` timestep indices from T-1 down to 0, denser near 0 where the picture changes most."""
    if frames < 2:
        raise ValueError(f"need at least 2 frames, got {frames}")
    u = torch.linspace(0, 1, frames, dtype=torch.float64)
    steps = torch.round((T - 1) * u ** 1.5).long().tolist()               # quadratic-ish spacing
    out = sorted(set(steps), reverse=True)
    return out


def forward_frames(x0: Tensor, schedule: NoiseSchedule, frames: int = 24, seed: int = 0) -> tuple[list[int], Tensor]:
    """x_t ~ q(x_t | x_0) at ``frames`` timesteps, one noise draw shared by all (so the picture moves smoothly).

    Returns the paper-numbered steps [0, ..., T] (0 is the clean image) and images (F, N, C, H, W).
    """
    steps = sorted(frame_indices(schedule.T, frames - 1))                  # code indices, ascending
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    images = [x0]
    for t in steps:
        images.append(schedule.q_sample(x0, torch.full((x0.shape[0],), t), noise))
    return [0] + [t + 1 for t in steps], torch.stack(images)


def _image(png: bytes, width: int):
    w = _widgets()
    img = w.Image(value=png, format="png", layout=w.Layout(width=f"{width}px", height="auto"))
    img.add_class("ddpm-frame")
    return img


def _frame_stack(pngs: Sequence[bytes], width: int):
    w = _widgets()
    return w.Stack(children=[_image(p, width) for p in pngs], selected_index=0)


def _label_stack(labels: Sequence[str]):
    w = _widgets()
    return w.Stack(children=[w.HTML(value=f"<b>{text}</b>") for text in labels], selected_index=0)


def _player(n: int, description: str, interval: int):
    """A Play button and a slider over 0..n-1, linked in the browser."""
    w = _widgets()
    slider = w.IntSlider(value=0, min=0, max=n - 1, step=1, description=description, readout=False,
                         continuous_update=True, layout=w.Layout(width="360px"))
    play = w.Play(value=0, min=0, max=n - 1, step=1, interval=interval, description="Play")
    w.jslink((play, "value"), (slider, "value"))
    return play, slider


def _style():
    w = _widgets()
    return w.HTML(value=f"<style>.ddpm-frame img, img.ddpm-frame {{ {PIXELATED} }}</style>")


def forward_process_viewer(x0: Tensor, schedules: NoiseSchedule | Mapping[str, NoiseSchedule], *,
                           frames: int = 24, seed: int = 0, width: int = 320, interval: int = 150):
    """A slider (and Play button) that noises ``x0`` (N, C, H, W) in [-1, 1] from t = 0 to t = T.

    ``schedules`` is one schedule or a dict of named ones (a toggle switches between them). Returns an
    ``ipywidgets.VBox`` with attributes ``slider``, ``play``, ``toggle``, ``stacks`` (one per schedule),
    ``labels`` and ``steps`` (the paper steps shown), for tests and for your own layouts.
    """
    w = _widgets()
    if isinstance(schedules, NoiseSchedule):
        schedules = {schedules.kind: schedules}
    if not schedules:
        raise ValueError("give at least one schedule")
    x0 = x0.detach().float().cpu()
    stacks, label_stacks, all_steps = [], [], []
    for name, schedule in schedules.items():
        steps, images = forward_frames(x0, schedule.to("cpu") if schedule.device.type != "cpu" else schedule,
                                       frames, seed)
        pngs = [png_bytes(img, nrow=int(round(len(img) ** 0.5))) for img in images]
        stacks.append(_frame_stack(pngs, width))
        label_stacks.append(_label_stack(
            [f"{name}: t = {s}, ᾱ_t = {schedule.alphas_cumprod[s - 1].item():.3f}" if s > 0 else f"{name}: t = 0 (data)"
             for s in steps]))
        all_steps.append(steps)
    n = len(all_steps[0])
    play, slider = _player(n, "t", interval)
    for stack, labels in zip(stacks, label_stacks):
        w.jslink((slider, "value"), (stack, "selected_index"))
        w.jslink((slider, "value"), (labels, "selected_index"))
    outer_images = w.Stack(children=stacks, selected_index=0)
    outer_labels = w.Stack(children=label_stacks, selected_index=0)
    toggle = w.ToggleButtons(options=list(schedules), value=list(schedules)[0], description="schedule")
    w.jslink((toggle, "index"), (outer_images, "selected_index"))
    w.jslink((toggle, "index"), (outer_labels, "selected_index"))
    rows = [_style(), w.HBox([play, slider]), outer_labels, outer_images]
    if len(schedules) > 1:
        rows.insert(1, toggle)
    box = w.VBox(rows)
    box.add_class("ddpm-forward-viewer")
    box.slider, box.play, box.toggle, box.stacks, box.labels, box.steps = slider, play, toggle, stacks, label_stacks, all_steps[0]
    return box


def reverse_trajectory(model: Callable, schedule: NoiseSchedule, *, n: int = 16, frames: int = 16, seed: int = 0,
                       steps: int | None = None, variance: str = "beta", device=None,
                       chunk_size: int | None = None) -> Trajectory:
    """Sample ``n`` images and keep x_t and the predicted x_0 at ``frames`` steps (see ddpm_sample)."""
    channels = getattr(model, "in_channels", 1)
    size = getattr(model, "image_size", 32)
    T = steps or schedule.T
    keep = frame_indices(T, frames)
    _, traj = ddpm_sample(model, schedule, (n, channels, size, size), seed=seed, steps=steps, variance=variance,
                          trajectory_steps=keep, device=device, chunk_size=chunk_size)
    return traj


def _reverse_pngs(traj: Trajectory) -> list[bytes]:
    """One PNG per kept step: the grid of x_t on the left, a white gap, the predicted x_0 on the right."""
    nrow = int(round(traj.x_t.shape[1] ** 0.5))
    pngs = []
    for x_t, x0_hat in zip(traj.x_t, traj.pred_x0):
        left, right = make_grid(x_t, nrow=nrow), make_grid(x0_hat, nrow=nrow)
        gap = np.full((left.shape[0], 8) + left.shape[2:], 255, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(buffer, format="PNG", optimize=True)
        pngs.append(buffer.getvalue())
    return pngs


def reverse_process_viewer(model: Callable | None = None, schedule: NoiseSchedule | None = None, *,
                           trajectories: Mapping[str, Trajectory] | None = None, n: int = 16, frames: int = 16,
                           seed: int = 0, steps: int | None = None, variances: Sequence[str] = ("beta", "posterior"),
                           device=None, width: int = 560, interval: int = 200, live: bool = True):
    """x_t beside the model's predicted x_0, from pure noise (t = T) to the sample (t = 0).

    Give ``model`` and ``schedule`` (trajectories are sampled for each variance in ``variances``) or
    precomputed ``trajectories`` (a dict from a label to a :class:`Trajectory`). A toggle switches
    between them, a slider and a Play button move through the steps; all of that runs in the browser.
    With ``live=True`` and a model, a "new seed" control resamples every trajectory (needs a kernel).

    Returns an ``ipywidgets.VBox`` with attributes ``slider``, ``play``, ``toggle``, ``stacks``,
    ``images`` (per variance, the Image widgets), ``steps`` and ``trajectories``.
    """
    w = _widgets()
    if trajectories is None:
        if model is None or schedule is None:
            raise ValueError("give a model and a schedule, or precomputed trajectories")
        trajectories = {v: reverse_trajectory(model, schedule, n=n, frames=frames, seed=seed, steps=steps,
                                              variance=v, device=device) for v in variances}
    trajectories = dict(trajectories)
    lengths = {len(t.steps) for t in trajectories.values()}
    if len(lengths) != 1:
        raise ValueError("every trajectory must have the same number of frames")
    first = next(iter(trajectories.values()))
    total = (steps or (schedule.T if schedule is not None else max(first.steps) + 1))
    stacks, image_lists, label_stacks = [], [], []
    for name, traj in trajectories.items():
        pngs = _reverse_pngs(traj)
        stack = _frame_stack(pngs, width)
        stacks.append(stack)
        image_lists.append(list(stack.children))
        label_stacks.append(_label_stack([f"{name}: step t = {s + 1} of {total} — left: x_t, right: predicted x_0"
                                          for s in traj.steps]))
    play, slider = _player(lengths.pop(), "step", interval)
    for stack, labels in zip(stacks, label_stacks):
        w.jslink((slider, "value"), (stack, "selected_index"))
        w.jslink((slider, "value"), (labels, "selected_index"))
    outer_images = w.Stack(children=stacks, selected_index=0)
    outer_labels = w.Stack(children=label_stacks, selected_index=0)
    toggle = w.ToggleButtons(options=list(trajectories), value=list(trajectories)[0], description="σ²_t =")
    w.jslink((toggle, "index"), (outer_images, "selected_index"))
    w.jslink((toggle, "index"), (outer_labels, "selected_index"))
    rows = [_style(), toggle, w.HBox([play, slider]), outer_labels, outer_images]
    box_state = {"seed": seed}
    if live and model is not None:
        seed_box = w.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed",
                                    layout=w.Layout(width="180px"))
        status = w.HTML(value="<i>a new seed resamples (needs a running kernel)</i>")

        def resample(change):
            status.value = "<i>sampling…</i>"
            for name, images in zip(trajectories, image_lists):
                traj = reverse_trajectory(model, schedule, n=n, frames=frames, seed=int(change["new"]), steps=steps,
                                          variance=name, device=device)
                trajectories[name] = traj
                for img, png in zip(images, _reverse_pngs(traj)):
                    img.value = png
            box_state["seed"] = int(change["new"])
            status.value = f"<i>seed {change['new']}</i>"

        seed_box.observe(resample, names="value")
        rows.insert(1, w.HBox([seed_box, status]))
    box = w.VBox(rows)
    box.add_class("ddpm-reverse-viewer")
    box.slider, box.play, box.toggle, box.stacks = slider, play, toggle, stacks
    box.images, box.steps, box.trajectories = image_lists, first.steps, trajectories
    return box
