"""Slider viewers for the forward and reverse processes and for the number of sampling steps, live in
Jupyter and in the static HTML book.

Every frame is computed in Python once, encoded as a small PNG and put in an ``ipywidgets.Image``;
the frames sit in a ``Stack`` whose ``selected_index`` is *jslinked* to a slider and a Play button,
and the choice of schedule or variance is a ``ToggleButtons`` jslinked to an outer ``Stack``. Links made
with ``jslink`` run in the browser, so the HTML book (whose widget state is saved when it is built)
needs neither a kernel nor a network to move the pictures: the book loads a vendored copy of
``@jupyter-widgets/html-manager`` (``book/static/widgets_js``, see ``scripts/vendor_widget_js.sh``).
Controls that must compute new frames (a new seed) use ``observe`` and work only with a running kernel;
they say so.

The frames are saved in every page that shows a viewer, so they are kept light: grayscale frames are
stored with 16 grey levels (4-bit palette PNGs, about half the bytes of 8-bit ones and indistinguishable
on a noised digit), and the viewer's frames share one ``Layout`` (and its labels one style), so the page
holds one layout model per viewer instead of one per frame.

Needs ``ipywidgets`` 8 (the ``reader`` extra); in Colab, its custom widget manager, which ``_widgets()``
turns on (``frontend.py``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .frontend import enable_colab_widgets
from ..images import make_grid
from ..sampling import Trajectory, ddpm_sample
from ..schedule import VARIANCES, NoiseSchedule

PIXELATED = "image-rendering: pixelated; image-rendering: crisp-edges;"
GRAY_LEVELS = 16                                                           # grey levels of a saved frame


def _widgets():
    try:
        import ipywidgets
    except ImportError as err:                                             # pragma: no cover - import guard
        raise ImportError("the slider viewers need ipywidgets 8: pip install 'ddpm_lib[reader]'") from err
    enable_colab_widgets()
    return ipywidgets


def frame_indices(T: int, frames: int) -> list[int]:
    """At most ``frames`` timestep indices from T-1 down to 0, denser near 0 where the picture changes most.

    Always holds T-1 and 0; fewer than ``frames`` indices when T < frames (each index appears once).
    """
    if frames < 2:
        raise ValueError(f"need at least 2 frames, got {frames}")
    if T < 1:
        raise ValueError(f"need T >= 1, got {T}")
    u = torch.linspace(0, 1, frames, dtype=torch.float64)
    steps = torch.round((T - 1) * u ** 1.5).long().tolist()               # quadratic-ish spacing
    return sorted(set(steps), reverse=True)


def forward_frames(x0: Tensor, schedule: NoiseSchedule, frames: int = 24, seed: int = 0) -> tuple[list[int], Tensor]:
    """x_t ~ q(x_t | x_0) at ``frames`` timesteps, one noise draw shared by all (so the picture moves smoothly).

    Returns the paper-numbered steps [0, ..., T] (0 is the clean image, T the last step) and images
    (F, N, C, H, W); F = ``frames`` unless T is smaller than that.
    """
    if frames < 2:
        raise ValueError(f"need at least 2 frames (x_0 and x_T), got {frames}")
    if x0.dim() != 4:
        raise ValueError(f"x0 must be images (N, C, H, W), got shape {tuple(x0.shape)}")
    steps = [schedule.T - 1] if frames == 2 else sorted(frame_indices(schedule.T, frames - 1))  # code indices
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    images = [x0]
    for t in steps:
        images.append(schedule.q_sample(x0, torch.full((x0.shape[0],), t), noise))
    return [0] + [t + 1 for t in steps], torch.stack(images)


def frame_png(grid: np.ndarray) -> bytes:
    """A uint8 picture (H, W) or (H, W, 3) as PNG bytes; grayscale with ``GRAY_LEVELS`` levels in 4 bits."""
    buffer = io.BytesIO()
    if grid.ndim == 2:
        levels = np.round(grid.astype(np.float32) * ((GRAY_LEVELS - 1) / 255.0)).astype(np.uint8)
        image = Image.frombytes("P", (grid.shape[1], grid.shape[0]), np.ascontiguousarray(levels).tobytes())
        image.putpalette([round(i * 255 / (GRAY_LEVELS - 1)) for i in range(GRAY_LEVELS) for _ in range(3)])
        image.save(buffer, format="PNG", bits=4, optimize=True)
    else:
        Image.fromarray(grid).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _frame_stack(pngs: Sequence[bytes], layout):
    w = _widgets()
    images = []
    for png in pngs:
        image = w.Image(value=png, format="png", layout=layout)
        image.add_class("ddpm-frame")
        images.append(image)
    return w.Stack(children=images, selected_index=0)


def _label_stack(labels: Sequence[str], layout, style):
    w = _widgets()
    return w.Stack(children=[w.HTML(value=f"<b>{text}</b>", layout=layout, style=style) for text in labels],
                   selected_index=0)


def _player(n: int, description: str, interval: int, readouts: Sequence[str] | None = None):
    """A Play button and a slider over frames 0..n-1, linked in the browser; returns them and the
    name of the slider's attribute that holds the frame index.

    With ``readouts`` (one text per frame, e.g. the step t) the slider is a ``SelectionSlider`` that shows
    the text of the frame it is on; without, an ``IntSlider`` with no readout.
    """
    w = _widgets()
    layout = w.Layout(width="360px")
    if readouts is not None:
        if len(readouts) != n:
            raise ValueError(f"{len(readouts)} readouts for {n} frames")
        slider = w.SelectionSlider(options=[(str(text), i) for i, text in enumerate(readouts)], index=0,
                                   description=description, readout=True, continuous_update=True, layout=layout)
        attr = "index"
    else:
        slider = w.IntSlider(value=0, min=0, max=n - 1, step=1, description=description, readout=False,
                             continuous_update=True, layout=layout)
        attr = "value"
    play = w.Play(value=0, min=0, max=n - 1, step=1, interval=interval, description="Play")
    w.jslink((play, "value"), (slider, attr))
    return play, slider, attr


def _style():
    w = _widgets()
    return w.HTML(value=f"<style>.ddpm-frame img, img.ddpm-frame {{ {PIXELATED} }}</style>")


@dataclass
class _Parts:
    """The widgets every viewer is built from (see :func:`_assemble`)."""

    play: Any                    # Play button, linked to the slider
    slider: Any                  # IntSlider or SelectionSlider over the frames
    toggle: Any                  # ToggleButtons over the options (schedules, samplers, variances)
    stacks: list                 # per option, a Stack of one Image per frame
    labels: list                 # per option, a Stack of one caption per frame
    images: Any                  # the Stack of ``stacks`` the toggle switches
    captions: Any                # the Stack of ``labels`` the toggle switches

    def expose(self, box, **extra) -> None:
        """Hang the parts a test or a custom layout needs on the returned box (the viewers' documented API)."""
        box.slider, box.play, box.toggle, box.stacks, box.labels = (self.slider, self.play, self.toggle,
                                                                     self.stacks, self.labels)
        for name, value in extra.items():
            setattr(box, name, value)


def _assemble(w, frame_pngs: Mapping[str, Sequence[bytes]], labels: Mapping[str, Sequence[str]], *,
              slider_name: str, toggle_name: str, width: int, interval: int,
              readouts: Sequence[str] | None = None) -> _Parts:
    """Stacks of frames and labels per option, one slider + Play over the frames, a toggle over the options."""
    lengths = {len(p) for p in frame_pngs.values()}
    if len(lengths) != 1:
        raise ValueError(f"every option must have the same number of frames, got {sorted(lengths)}")
    image_layout = w.Layout(width=f"{width}px", height="auto")            # shared by every frame
    from ipywidgets.widgets.widget_string import HTMLStyle                 # not exported at the top level
    label_layout, label_style = w.Layout(), HTMLStyle()                    # shared by every label
    stacks = [_frame_stack(p, image_layout) for p in frame_pngs.values()]
    label_stacks = [_label_stack(labels[name], label_layout, label_style) for name in frame_pngs]
    play, slider, attr = _player(lengths.pop(), slider_name, interval, readouts)
    for stack, label_stack in zip(stacks, label_stacks):
        w.jslink((slider, attr), (stack, "selected_index"))
        w.jslink((slider, attr), (label_stack, "selected_index"))
    outer_images = w.Stack(children=stacks, selected_index=0)
    outer_labels = w.Stack(children=label_stacks, selected_index=0)
    names = list(frame_pngs)
    toggle = w.ToggleButtons(options=names, value=names[0], description=toggle_name)
    w.jslink((toggle, "index"), (outer_images, "selected_index"))
    w.jslink((toggle, "index"), (outer_labels, "selected_index"))
    return _Parts(play, slider, toggle, stacks, label_stacks, outer_images, outer_labels)


def forward_process_viewer(x0: Tensor, schedules: NoiseSchedule | Mapping[str, NoiseSchedule], *,
                           frames: int = 24, seed: int = 0, width: int = 320, interval: int = 150):
    """A slider (and Play button) that noises ``x0`` (N, C, H, W) in [-1, 1] from t = 0 to t = T.

    ``schedules`` is one schedule or a dict of named ones (a toggle switches between them; they must give
    the same number of frames, e.g. the same T). Returns an ``ipywidgets.VBox`` with attributes ``slider``
    (a ``SelectionSlider`` whose readout is the step t and whose ``index`` is the frame shown), ``play``,
    ``toggle``, ``stacks`` (one per schedule), ``labels`` (one label Stack per schedule) and ``steps``
    (the paper steps shown), for tests and for your own layouts.
    """
    w = _widgets()
    if isinstance(schedules, NoiseSchedule):
        schedules = {schedules.kind: schedules}
    schedules = dict(schedules)
    if not schedules:
        raise ValueError("give at least one schedule")
    if not isinstance(x0, Tensor) or x0.dim() != 4 or x0.shape[1] not in (1, 3) or x0.shape[0] < 1:
        raise ValueError(f"x0 must be images (N, 1 or 3, H, W), got {getattr(x0, 'shape', type(x0))}")
    x0 = x0.detach().float().cpu()
    nrow = int(round(x0.shape[0] ** 0.5))
    frame_pngs, labels, all_steps = {}, {}, []
    for name, schedule in schedules.items():
        schedule = schedule.to("cpu")
        abar = schedule.alphas_cumprod
        steps, images = forward_frames(x0, schedule, frames, seed)
        frame_pngs[name] = [frame_png(make_grid(img, nrow=nrow)) for img in images]
        labels[name] = [f"{name}: t = {s}, ᾱ_t = {abar[s - 1].item():.3f}" if s > 0 else f"{name}: t = 0 (data)"
                        for s in steps]
        all_steps.append(steps)
    parts = _assemble(w, frame_pngs, labels, slider_name="t", toggle_name="schedule", width=width,
                      interval=interval, readouts=[str(s) for s in all_steps[0]])  # the slider shows t
    rows = [_style(), w.HBox([parts.play, parts.slider]), parts.captions, parts.images]
    if len(schedules) > 1:
        rows.insert(1, parts.toggle)
    box = w.VBox(rows)
    box.add_class("ddpm-forward-viewer")
    parts.expose(box, steps=all_steps[0])
    return box


def steps_viewer(samples: Mapping[str, Mapping[int, Tensor]] | Mapping[int, Tensor], *, width: int = 420,
                 interval: int = 600, unit: str = "steps", nrow: int | None = None,
                 frame_label: Callable[[str, Any], str] | None = None):
    """A slider over the number of sampling steps: the same images drawn with each number of steps.

    ``samples`` maps a sampler's label (e.g. ``"DDIM, eta = 0"``) to a dict from a number of steps to the
    images (N, C, H, W) in [-1, 1] drawn with it; every label must have the same numbers of steps. A bare
    dict from steps to images is one unlabelled sampler. The slider and Play button move through the
    numbers of steps (smallest first) and a toggle switches samplers, all in the browser (``jslink``).
    Nothing is sampled here: draw the images with :func:`ddim_sample` / :func:`ddpm_sample` first.
    The keys need not be numbers of steps: ``unit`` names what the slider moves through (a guidance
    weight, say), ``frame_label(name, key)`` writes each frame's caption (default ``"{name}: {key} {unit}"``)
    and ``nrow`` sets the images per grid row (default: a square grid).

    Returns an ``ipywidgets.VBox`` with attributes ``slider``, ``play``, ``toggle``, ``stacks``,
    ``labels`` and ``steps`` (the numbers of steps, in slider order).
    """
    w = _widgets()
    samples = dict(samples)
    if samples and all(isinstance(v, Tensor) for v in samples.values()):
        samples = {"samples": samples}
    if not samples or not all(isinstance(v, Mapping) and v for v in samples.values()):
        raise ValueError("give a dict from a sampler's label to a dict {steps: images}")
    step_sets = {tuple(sorted(v)) for v in samples.values()}
    if len(step_sets) != 1:
        raise ValueError(f"every sampler must have the same numbers of steps, got {sorted(step_sets)}")
    steps = list(step_sets.pop())
    frame_pngs, labels = {}, {}
    for name, by_steps in samples.items():
        for k, images in by_steps.items():
            if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
                raise ValueError(f"{name!r}, {k} {unit}: images must be (N, 1 or 3, H, W), "
                                 f"got {getattr(images, 'shape', type(images))}")
        per_row = nrow or int(round(next(iter(by_steps.values())).shape[0] ** 0.5))
        frame_pngs[name] = [frame_png(make_grid(by_steps[k].detach().float().cpu(), nrow=per_row)) for k in steps]
        labels[name] = [frame_label(name, k) if frame_label else f"{name}: {k} {unit}" for k in steps]
    parts = _assemble(w, frame_pngs, labels, slider_name=unit, toggle_name="sampler", width=width,
                      interval=interval)
    rows = [_style(), w.HBox([parts.play, parts.slider]), parts.captions, parts.images]
    if len(samples) > 1:
        rows.insert(1, parts.toggle)
    box = w.VBox(rows)
    box.add_class("ddpm-steps-viewer")
    parts.expose(box, steps=steps)
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
        pngs.append(frame_png(np.concatenate([left, gap, right], axis=1)))
    return pngs


def _check_trajectory(name: str, traj: Trajectory) -> None:
    if not isinstance(traj, Trajectory):
        raise ValueError(f"trajectory {name!r} is a {type(traj).__name__}, not a Trajectory")
    if traj.x_t.dim() != 5 or traj.x_t.shape != traj.pred_x0.shape or traj.x_t.shape[0] != len(traj.steps):
        raise ValueError(f"trajectory {name!r}: x_t {tuple(traj.x_t.shape)} and pred_x0 {tuple(traj.pred_x0.shape)} "
                         f"must both be (S, N, C, H, W) with S = len(steps) = {len(traj.steps)}")
    if len(traj.steps) < 1:
        raise ValueError(f"trajectory {name!r} has no frames")


def reverse_process_viewer(model: Callable | None = None, schedule: NoiseSchedule | None = None, *,
                           trajectories: Mapping[str, Trajectory] | None = None, n: int = 16, frames: int = 16,
                           seed: int = 0, steps: int | None = None, variances: Sequence[str] = VARIANCES,
                           device=None, width: int = 560, interval: int = 200, live: bool = True):
    """x_t beside the model's predicted x_0, from pure noise (t = T) to the sample (t = 0).

    Give ``model`` and ``schedule`` (trajectories are sampled for each variance in ``variances``) or
    precomputed ``trajectories`` (a dict from a label to a :class:`Trajectory`). A toggle switches
    between them, a slider and a Play button move through the steps; all of that runs in the browser.
    With ``live=True``, a model and a schedule (and labels that are variances, ``"beta"``/``"posterior"``),
    a "seed" control resamples every trajectory at the steps shown (needs a kernel).

    Returns an ``ipywidgets.VBox`` with attributes ``slider``, ``play``, ``toggle``, ``stacks``,
    ``labels``, ``images`` (per variance, the Image widgets), ``steps``, ``trajectories`` and ``seed``
    (the seed control, or None).
    """
    w = _widgets()
    if trajectories is None:
        if model is None or schedule is None:
            raise ValueError("give a model and a schedule, or precomputed trajectories")
        if not variances:
            raise ValueError("give at least one variance")
        trajectories = {v: reverse_trajectory(model, schedule, n=n, frames=frames, seed=seed, steps=steps,
                                              variance=v, device=device) for v in variances}
    trajectories = dict(trajectories)
    if not trajectories:
        raise ValueError("give at least one trajectory")
    for name, traj in trajectories.items():
        _check_trajectory(name, traj)
    first = next(iter(trajectories.values()))
    total = (steps or (schedule.T if schedule is not None else max(first.steps) + 1))
    frame_pngs = {name: _reverse_pngs(traj) for name, traj in trajectories.items()}
    labels = {name: [f"{name}: step t = {s + 1} of {total} — left: x_t, right: predicted x_0" for s in traj.steps]
              for name, traj in trajectories.items()}
    parts = _assemble(w, frame_pngs, labels, slider_name="step", toggle_name="σ²_t =", width=width,
                      interval=interval)
    image_lists = [list(stack.children) for stack in parts.stacks]
    rows = [_style(), parts.toggle, w.HBox([parts.play, parts.slider]), parts.captions, parts.images]
    seed_box = None
    if live and model is not None and schedule is not None and set(trajectories) <= set(VARIANCES):
        seed_box = w.BoundedIntText(value=seed, min=0, max=2**31 - 1, description="seed",
                                    layout=w.Layout(width="180px"))
        status = w.HTML(value="<i>a new seed resamples (needs a running kernel)</i>")

        def resample(change):
            new_seed = int(change["new"])
            status.value = "<i>sampling…</i>"
            try:
                for name, images in zip(list(trajectories), image_lists):
                    old = trajectories[name]
                    shape = tuple(old.x_t.shape[1:])                       # (N, C, H, W) as shown
                    _, traj = ddpm_sample(model, schedule, shape, seed=new_seed, steps=steps, variance=name,
                                          trajectory_steps=old.steps, device=device)
                    trajectories[name] = traj
                    for img, png in zip(images, _reverse_pngs(traj)):
                        img.value = png
            except Exception as err:
                status.value = f"<i>resampling failed: {type(err).__name__}</i>"
                raise
            status.value = f"<i>seed {new_seed}</i>"

        seed_box.observe(resample, names="value")
        rows.insert(1, w.HBox([seed_box, status]))
    box = w.VBox(rows)
    box.add_class("ddpm-reverse-viewer")
    parts.expose(box, images=image_lists, steps=first.steps, trajectories=trajectories, seed=seed_box)
    return box
