"""The slider viewers (ddpm_lib.book.widgets), without a browser: frames, PNGs, jslinks, labels, live seed, errors.

tests/test_browser.py checks the same viewers in the built HTML book, in headless Chromium.
"""

import io

import numpy as np
import pytest
import torch
from PIL import Image

ipywidgets = pytest.importorskip("ipywidgets")

from ddpm_lib import NoiseSchedule, Trajectory, UNet, ddpm_sample  # noqa: E402
from ddpm_lib.images import make_grid  # noqa: E402
from ddpm_lib.book.widgets import (GRAY_LEVELS, forward_frames, forward_process_viewer, frame_indices,  # noqa: E402
                              frame_png, reverse_process_viewer, reverse_trajectory, steps_viewer)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------ helpers

def digits(n: int = 4, size: int = 8) -> torch.Tensor:
    """n distinct images (n, 1, size, size) in [-1, 1]: bright squares at different places."""
    x = -torch.ones(n, 1, size, size)
    for i in range(n):
        x[i, :, i % size: i % size + 3, 1:4] = 1.0
    return x


def decode(png) -> np.ndarray:
    png = bytes(png)                                                       # Image.value is a memoryview
    assert png.startswith(PNG_SIGNATURE), "not a PNG"
    image = Image.open(io.BytesIO(png))
    image.load()                                                           # raises on a corrupt file
    return np.asarray(image.convert("L"))


def frames_of(stack) -> list[np.ndarray]:
    return [decode(img.value) for img in stack.children]


def links() -> list:
    """Every live ipywidgets Link (what jslink makes)."""
    from ipywidgets.widgets.widget import _instances
    from ipywidgets.widgets.widget_link import Link
    return [w for w in list(_instances.values()) if isinstance(w, Link)]


def linked(source, source_attr: str, target, target_attr: str) -> bool:
    return any(link.source == (source, source_attr) and link.target == (target, target_attr) for link in links())


def our_observers(widget) -> list:
    """Callbacks from ddpm_lib that ``widget.observe`` registered (they run only with a kernel)."""
    return [h for by_type in widget._trait_notifiers.values() for handlers in by_type.values() for h in handlers
            if getattr(h, "__module__", "").startswith("ddpm_lib")]


def text(html_widget) -> str:
    return html_widget.value.replace("<b>", "").replace("</b>", "")


def find(widget, kind):
    """Every widget of class ``kind`` under ``widget`` (depth first)."""
    found = [widget] if isinstance(widget, kind) else []
    for child in getattr(widget, "children", ()):
        found += find(child, kind)
    return found


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained (but not zero) 8x8 UNet; sampled on one thread, which is 10-50x faster for so small a
    network on a shared 2-core machine than two threads contending."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                 num_groups=4, image_size=8).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    yield model
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------ frame helpers

def test_frame_indices_span_T_densest_near_zero():
    idx = frame_indices(1000, 16)
    assert idx[0] == 999 and idx[-1] == 0 and len(idx) == 16
    assert idx == sorted(idx, reverse=True) and len(set(idx)) == len(idx)
    gaps = [a - b for a, b in zip(idx, idx[1:])]
    assert gaps[-1] < gaps[0]                                              # denser near t = 0
    assert frame_indices(10, 16) == list(range(9, -1, -1))                 # fewer than asked when T < frames
    with pytest.raises(ValueError):
        frame_indices(1000, 1)


def test_forward_frames_follow_q_sample():
    x0, s = digits(), NoiseSchedule.linear(T=100)
    steps, images = forward_frames(x0, s, frames=6, seed=3)
    assert steps[0] == 0 and steps[-1] == 100 and len(steps) == 6 == images.shape[0]
    assert images.shape[1:] == x0.shape
    assert torch.equal(images[0], x0)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    for step, image in zip(steps[1:], images[1:]):                        # paper step s is code index s - 1
        assert torch.allclose(image, s.q_sample(x0, torch.full((4,), step - 1), noise))
    assert forward_frames(x0, s, frames=2)[0] == [0, 100]                  # just x_0 and x_T


def test_frame_png_is_a_4_bit_grey_png_close_to_the_picture():
    grid = make_grid(torch.rand(4, 1, 8, 8) * 2 - 1, nrow=2)
    png = frame_png(grid)
    assert png[24] == 4 and png[25] == 3                                   # IHDR: bit depth 4, palette
    pixels = decode(png)
    assert pixels.shape == grid.shape
    step = 255 / (GRAY_LEVELS - 1)
    assert np.abs(pixels.astype(int) - grid.astype(int)).max() <= step / 2 + 1
    assert set(np.unique(pixels)) <= {round(i * step) for i in range(GRAY_LEVELS)}
    rgb = make_grid(torch.rand(2, 3, 8, 8) * 2 - 1)                        # colour frames stay exact
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(frame_png(rgb)))), rgb)


# ----------------------------------------------------------------------------------------- forward viewer

def test_forward_viewer_structure_frames_and_labels():
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1   # all grey levels
    schedules = {"linear": NoiseSchedule.linear(T=200), "cosine": NoiseSchedule.cosine(T=200)}
    box = forward_process_viewer(x0, schedules, frames=8, seed=0, width=200)
    assert "ddpm-forward-viewer" in box._dom_classes
    assert len(box.stacks) == 2 and len(box.labels) == 2
    assert box.steps[0] == 0 and box.steps[-1] == 200 and len(box.steps) == 8
    assert isinstance(box.slider, ipywidgets.SelectionSlider) and box.slider.readout
    assert box.slider.options == tuple((str(s), i) for i, s in enumerate(box.steps))   # shows t, not the frame
    assert box.slider.index == 0 and box.slider.label == "0" and (box.play.min, box.play.max) == (0, 7)
    box.slider.index = 7
    assert box.slider.label == "200"
    assert list(box.toggle.options) == ["linear", "cosine"]
    assert box.toggle in box.children                                      # shown with two schedules
    for name, stack, labels in zip(schedules, box.stacks, box.labels):
        assert len(stack.children) == 8 and len(labels.children) == 8
        pictures = frames_of(stack)
        assert all(p.shape == (2 * 10 + 2, 2 * 10 + 2) for p in pictures)  # 2x2 grid of 8x8 with 2 px gaps
        assert all(not np.array_equal(a, b) for a, b in zip(pictures, pictures[1:])), "repeated frames"
        distance = [np.abs(p.astype(int) - pictures[0].astype(int)).mean() for p in pictures]
        assert distance[-1] > 40 and distance[1] < 5                      # from x_0 to noise, gradually
        assert all(img.format == "png" and "ddpm-frame" in img._dom_classes for img in stack.children)
        assert text(labels.children[0]) == f"{name}: t = 0 (data)"
        abar = schedules[name].alphas_cumprod
        for step, label in zip(box.steps[1:], labels.children[1:]):
            assert text(label) == f"{name}: t = {step}, ᾱ_t = {abar[step - 1].item():.3f}"
    assert not all(np.array_equal(a, b) for a, b in zip(frames_of(box.stacks[0]), frames_of(box.stacks[1])))
    # the first frame is x_0 itself (up to the 16 grey levels)
    assert np.abs(frames_of(box.stacks[0])[0].astype(int) - make_grid(x0, nrow=2).astype(int)).max() <= 9


def test_forward_viewer_is_linked_in_the_browser():
    box = forward_process_viewer(digits(), {"a": NoiseSchedule.linear(T=50), "b": NoiseSchedule.cosine(T=50)},
                                 frames=5)
    assert linked(box.play, "value", box.slider, "index")
    for stack, labels in zip(box.stacks, box.labels):
        assert linked(box.slider, "index", stack, "selected_index")
        assert linked(box.slider, "index", labels, "selected_index")
    outer = [s for s in find(box, ipywidgets.Stack) if s.children and s.children[0] in box.stacks]
    outer_labels = [s for s in find(box, ipywidgets.Stack) if s.children and s.children[0] in box.labels]
    assert len(outer) == 1 and len(outer_labels) == 1
    assert linked(box.toggle, "index", outer[0], "selected_index")
    assert linked(box.toggle, "index", outer_labels[0], "selected_index")
    # nothing that needs a kernel: no Python observers of ours on any of the viewer's widgets
    assert not [w for w in find(box, ipywidgets.Widget) if our_observers(w)]


def test_forward_viewer_pages_stay_light():
    box = forward_process_viewer(digits(16, 32), {"a": NoiseSchedule.linear(T=1000), "b": NoiseSchedule.cosine()},
                                 frames=24)
    images = [img for stack in box.stacks for img in stack.children]
    assert len({id(img.layout) for img in images}) == 1                   # one shared Layout model
    assert len({id(lab.style) for labels in box.labels for lab in labels.children}) == 1
    assert sum(len(img.value) for img in images) < 450_000                 # 48 frames of 16 digits


def test_forward_viewer_one_schedule_and_determinism():
    s = NoiseSchedule.linear(T=30)
    a = forward_process_viewer(digits(), s, frames=4, seed=1)
    b = forward_process_viewer(digits(), {"linear": s}, frames=4, seed=1)
    c = forward_process_viewer(digits(), s, frames=4, seed=2)
    assert len(a.stacks) == 1 and a.toggle not in a.children              # no toggle for one schedule
    assert [i.value for i in a.stacks[0].children] == [i.value for i in b.stacks[0].children]
    assert [i.value for i in a.stacks[0].children][1:] != [i.value for i in c.stacks[0].children][1:]


@pytest.mark.parametrize("bad", [
    dict(schedules={}),
    dict(x0=torch.zeros(1, 8, 8)),                                         # not (N, C, H, W)
    dict(x0=torch.zeros(2, 2, 8, 8)),                                      # 2 channels
    dict(frames=1),
    dict(schedules={"a": NoiseSchedule.linear(T=1000), "b": NoiseSchedule.linear(T=5)}),  # 24 vs 6 frames
])
def test_forward_viewer_rejects_bad_input(bad):
    args = dict(x0=digits(), schedules=NoiseSchedule.linear(T=1000), frames=24)
    args.update(bad)
    with pytest.raises(ValueError):
        forward_process_viewer(args.pop("x0"), args.pop("schedules"), **args)


# ----------------------------------------------------------------------------------------- reverse viewer

def trajectory(seed: int, steps=(9, 5, 2, 0), n: int = 4) -> Trajectory:
    g = torch.Generator().manual_seed(seed)
    s = len(steps)
    return Trajectory(steps=list(steps), x_t=torch.randn(s, n, 1, 8, 8, generator=g).clamp(-1, 1),
                      pred_x0=torch.rand(s, n, 1, 8, 8, generator=g) * 2 - 1)


def test_reverse_viewer_from_trajectories():
    trajs = {"beta": trajectory(0), "posterior": trajectory(1)}
    box = reverse_process_viewer(trajectories=trajs, steps=10)
    assert "ddpm-reverse-viewer" in box._dom_classes
    assert len(box.stacks) == 2 and [len(s.children) for s in box.stacks] == [4, 4]
    assert box.steps == [9, 5, 2, 0] and (box.slider.max, box.play.max) == (3, 3)
    assert list(box.toggle.options) == ["beta", "posterior"] and box.toggle in box.children
    assert box.seed is None and not find(box, ipywidgets.BoundedIntText)  # no model: nothing to resample
    for (name, traj), stack, labels in zip(trajs.items(), box.stacks, box.labels):
        pictures = frames_of(stack)
        for picture, x_t, x0_hat in zip(pictures, traj.x_t, traj.pred_x0):
            left, right = make_grid(x_t, nrow=2), make_grid(x0_hat, nrow=2)
            assert picture.shape == (left.shape[0], left.shape[1] + 8 + right.shape[1])
            assert np.abs(picture[:, :left.shape[1]].astype(int) - left.astype(int)).max() <= 9
            assert np.abs(picture[:, -right.shape[1]:].astype(int) - right.astype(int)).max() <= 9
            assert (picture[:, left.shape[1]:left.shape[1] + 8] == 255).all()   # the white gap
        assert [text(label) for label in labels.children] == [
            f"{name}: step t = {s + 1} of 10 — left: x_t, right: predicted x_0" for s in traj.steps]
    assert linked(box.play, "value", box.slider, "value")
    for stack, labels in zip(box.stacks, box.labels):
        assert linked(box.slider, "value", stack, "selected_index")
        assert linked(box.slider, "value", labels, "selected_index")
    outer = [s for s in find(box, ipywidgets.Stack) if s.children and s.children[0] in box.stacks]
    assert len(outer) == 1 and linked(box.toggle, "index", outer[0], "selected_index")


@pytest.mark.parametrize("bad", [
    dict(),                                                                # neither a model nor trajectories
    dict(trajectories={}),
    dict(trajectories={"beta": trajectory(0), "posterior": trajectory(1, steps=(9, 0))}),  # 4 vs 2 frames
    dict(trajectories={"beta": "not a trajectory"}),
    dict(trajectories={"beta": Trajectory(steps=[1, 0], x_t=torch.zeros(3, 1, 1, 8, 8),
                                          pred_x0=torch.zeros(3, 1, 1, 8, 8))}),   # 2 steps, 3 frames
])
def test_reverse_viewer_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        reverse_process_viewer(**bad)


def test_reverse_viewer_from_a_model_and_a_live_seed(tiny_model):
    schedule = NoiseSchedule.linear(T=1000)
    box = reverse_process_viewer(tiny_model, schedule, n=4, frames=4, seed=0, steps=10)
    assert list(box.trajectories) == ["beta", "posterior"]
    assert box.steps == frame_indices(10, 4) and len(box.stacks) == 2
    direct = reverse_trajectory(tiny_model, schedule, n=4, frames=4, seed=0, steps=10, variance="posterior")
    assert torch.equal(box.trajectories["posterior"].x_t, direct.x_t)
    assert box.trajectories["beta"].x_t.shape == (4, 4, 1, 8, 8)
    assert text(box.labels[0].children[0]).startswith("beta: step t = 10 of 10")

    seeds = find(box, ipywidgets.BoundedIntText)
    assert seeds == [box.seed] and box.seed.value == 0
    assert [w for w in find(box, ipywidgets.Widget) if our_observers(w)] == [box.seed]   # the only kernel-side control
    assert any(box.seed in getattr(child, "children", ()) for child in box.children)
    before = [[bytes(img.value) for img in images] for images in box.images]
    box.seed.value = 1                                                     # the observer resamples
    after = [[bytes(img.value) for img in images] for images in box.images]
    assert all(a != b for a, b in zip(before[0][1:], after[0][1:]))       # every frame but x_T... changed
    assert before != after
    expected = reverse_trajectory(tiny_model, schedule, n=4, frames=4, seed=1, steps=10, variance="beta")
    assert torch.equal(box.trajectories["beta"].x_t, expected.x_t)
    assert torch.equal(box.trajectories["beta"].pred_x0, expected.pred_x0)
    assert [bytes(img.value) for img in box.images[0]] == [bytes(img.value) for img in reverse_process_viewer(
        trajectories={"beta": expected}, steps=10).stacks[0].children]
    assert [bytes(img.value) for img in box.stacks[1].children] == after[1]      # the shown widgets were updated
    box.seed.value = 0                                                     # and back
    assert [[bytes(img.value) for img in images] for images in box.images] == before


def test_reverse_viewer_resamples_the_frames_it_shows(tiny_model):
    """Precomputed trajectories with other frames than ``frames``: a new seed keeps the frames shown."""
    schedule = NoiseSchedule.linear(T=1000)
    _, traj = ddpm_sample(tiny_model, schedule, (2, 1, 8, 8), seed=0, steps=10, trajectory_steps=[9, 4, 0])
    box = reverse_process_viewer(tiny_model, schedule, trajectories={"beta": traj}, frames=16, steps=10)
    assert box.steps == [9, 4, 0] and len(box.images[0]) == 3
    box.seed.value = 5
    assert box.trajectories["beta"].steps == [9, 4, 0]
    assert box.trajectories["beta"].x_t.shape == traj.x_t.shape
    assert not torch.equal(box.trajectories["beta"].x_t, traj.x_t)


def test_no_live_seed_for_labels_that_are_not_variances(tiny_model):
    box = reverse_process_viewer(tiny_model, NoiseSchedule.linear(T=10), trajectories={"mine": trajectory(0)})
    assert box.seed is None
    box = reverse_process_viewer(tiny_model, NoiseSchedule.linear(T=10), trajectories={"beta": trajectory(0)},
                                 live=False)
    assert box.seed is None


# ------------------------------------------------------------------------------------------------ steps viewer

def test_steps_viewer_shows_each_number_of_steps_and_is_linked_in_the_browser():
    pictures = {k: digits(4) * (1 - 2 * (i % 2)) for i, k in enumerate((50, 5, 10))}   # two distinct pictures
    samples = {"DDIM, eta = 0": pictures, "DDPM": {k: -v for k, v in pictures.items()}}
    box = steps_viewer(samples, width=200)
    assert "ddpm-steps-viewer" in box._dom_classes
    assert box.steps == [5, 10, 50]                                        # slider order: fewest steps first
    assert (box.slider.min, box.slider.max, box.play.max) == (0, 2, 2)
    assert list(box.toggle.options) == list(samples) and box.toggle in box.children
    for (name, by_steps), stack, labels in zip(samples.items(), box.stacks, box.labels):
        assert [text(label) for label in labels.children] == [f"{name}: {k} steps" for k in (5, 10, 50)]
        for k, frame in zip(box.steps, frames_of(stack)):
            assert np.abs(frame.astype(int) - make_grid(by_steps[k], nrow=2).astype(int)).max() <= 9
        assert linked(box.slider, "value", stack, "selected_index")
        assert linked(box.slider, "value", labels, "selected_index")
    assert linked(box.play, "value", box.slider, "value")
    outer = [s for s in find(box, ipywidgets.Stack) if s.children and s.children[0] in box.stacks]
    assert len(outer) == 1 and linked(box.toggle, "index", outer[0], "selected_index")
    assert not [w for w in find(box, ipywidgets.Widget) if our_observers(w)]
    one = steps_viewer(pictures)                                           # one sampler: no toggle
    assert len(one.stacks) == 1 and one.toggle not in one.children


@pytest.mark.parametrize("bad", [
    {},
    {"a": {}},
    {"a": {5: digits()}, "b": {10: digits()}},                             # other numbers of steps
    {"a": {5: torch.zeros(1, 8, 8)}},                                      # not (N, C, H, W)
])
def test_steps_viewer_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        steps_viewer(bad)
