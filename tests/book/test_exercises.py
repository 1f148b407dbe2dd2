"""ddpm_lib.book.exercises: the keyed expected values, the diagnoses, and the verdicts a notebook shows."""

import json
import math
import re
from collections import defaultdict

import numpy as np
import pytest
import torch

from ddpm_lib import NoiseSchedule
from ddpm_lib.book.exercises import (EXERCISES, WIDTH, ChoiceExercise, ExerciseFailed, FunctionExercise,
                                UnknownExercise, ValueExercise, Verdict, check, check_function,
                                choose, expected_value)
from ddpm_lib.book.results import SAMPLER_QUALITY

# ---------------------------------------------------------------- independent computations (numpy)
BETAS = np.linspace(1e-4, 0.02, 1000)
ABAR = np.cumprod(1 - BETAS)


def _cosine_abar(i):
    """Nichol & Dhariwal's abar at code index i: f((i + 1) / T) / f(0) (no clipping this early)."""
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2           # noqa: E731
    return f((i + 1) / 1000) / f(0)


def _tilde(i):
    return BETAS[i] * (1 - ABAR[i - 1]) / (1 - ABAR[i])


def _ddim_budget():
    """Frechet distance at 20 steps, DDIM (eta 0) minus DDPM: difference of the seed means and its
    standard error, from the raw rows."""
    rows = json.loads(SAMPLER_QUALITY.read_text())["rows"]
    fd = defaultdict(list)
    for r in rows:
        fd[r["sampler"], int(r["steps"])].append(r["frechet"])
    a, b = np.array(fd["ddim-eta0", 20]), np.array(fd["ddpm", 20])
    return a.mean() - b.mean(), math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))


INDEPENDENT = {
    "ex-forward-abar": lambda: np.prod(1 - BETAS[:500]),
    "ex-forward-variance": lambda: _cosine_abar(299) * 0.25 + 1 - _cosine_abar(299),
    "ex-forward-snr": lambda: int(np.argmax(ABAR < 0.5)) + 1,               # SNR < 1 <=> abar < 1/2
    "ex-elbo-posterior-variance": lambda: _tilde(9),
    "ex-elbo-lambda": lambda: [BETAS[i] / (2 * (1 - BETAS[i]) * (1 - ABAR[i - 1])) for i in (1, 999)],
    "ex-elbo-kl": lambda: 0.5 * (math.log(4) + 0.25),
    "ex-unet-resblock-params": lambda: 18 * 96 ** 2 + 384 * 96 + 7 * 96,
    "ex-unet-shape": lambda: (4, (64 // 2 + 32) // 2 + 16, 32, 32),       # C_below / 2 + C_skip, twice
    "ex-unet-attention-flops": lambda: [4 * 256 ** 2 * 384, 16],
    "ex-training-epochs": lambda: 40_000 * 64 / 9000,
    "ex-training-ema": lambda: math.prod(min(0.999, (1 + k) / (10 + k)) for k in range(1000)),
    "ex-sampling-sigma": lambda: [math.sqrt(BETAS[9]), math.sqrt(_tilde(9))],
    "ex-sampling-calls": lambda: (250 * math.ceil(100 / 64), 100 * 250),
    "ex-ddim-budget": _ddim_budget,
    "ex-cond-convention": lambda: 1.3,
    "ex-perf-hours": lambda: [10_000 / 0.13 / 3600, 10_000 / 60 / 3600],
}


@pytest.mark.parametrize("label", sorted(INDEPENDENT))
def test_expected_values_match_an_independent_computation(label, capsys):
    want = INDEPENDENT[label]()
    got = expected_value(label)
    np.testing.assert_allclose(np.asarray(got if not isinstance(got, torch.Tensor) else got.numpy(),
                                          dtype=float), np.asarray(want, dtype=float), rtol=1e-6)
    assert check(label, want)                       # the independent value is accepted
    assert capsys.readouterr().out.startswith("[right] ")


def test_every_value_exercise_is_tested():
    without_inputs = {k for k, e in EXERCISES.items() if isinstance(e, ValueExercise) and not e.inputs}
    assert without_inputs == set(INDEPENDENT)


def _standin(x, t):
    return 0.5 * x - 0.01 * t.to(x.dtype).reshape(-1, 1, 1, 1)


def test_inputs_exercises_compute_from_their_inputs():
    """The exercises whose expected value depends on a model or a noise draw, with a stand-in model."""
    schedule = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(8, 1, 4, 4, generator=g), torch.randn(8, 1, 4, 4, generator=g)
    want = []
    for i in (9, 99, 899):
        a = float(ABAR[i])
        x_t = math.sqrt(a) * x0 + math.sqrt(1 - a) * noise
        want.append(float(((_standin(x_t, torch.full((8,), i)) - noise) ** 2).mean()))
    inputs = dict(model=_standin, schedule=schedule, x0=x0, noise=noise)
    np.testing.assert_allclose(expected_value("ex-training-loss-by-t", **inputs), want, rtol=1e-5)
    assert check("ex-training-loss-by-t", want[::-1], **inputs).message == \
        "the order: t = 10 first, then 100, then 900"

    x_t, eps = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
    a = float(ABAR[499])
    x0_hat = (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
    assert check("ex-sampling-x0hat", x0_hat, schedule=schedule, x_t=x_t, eps=eps)
    no_sqrt = (x_t - (1 - a) * eps) / a
    assert "missing sqrt" in check("ex-sampling-x0hat", no_sqrt, schedule=schedule, x_t=x_t,
                                   eps=eps).message

    x_T = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    ten = schedule.respace(10)
    abar = schedule.alphas_cumprod[ten.timestep_map].tolist()            # abar at the kept steps
    x = x_T
    for j in range(9, -1, -1):
        e = _standin(x, torch.full((3,), int(ten.timestep_map[j])))
        pred = ((x - math.sqrt(1 - abar[j]) * e) / math.sqrt(abar[j])).clamp(-1, 1)
        e = (x - math.sqrt(abar[j]) * pred) / math.sqrt(1 - abar[j])
        a_prev = abar[j - 1] if j else 1.0
        x = math.sqrt(a_prev) * pred + math.sqrt(1 - a_prev) * e
    inputs = dict(model=_standin, schedule=schedule, x_T=x_T)
    assert check("ex-ddim-loop", x.clamp(-1, 1), **inputs)


def test_inputs_are_required_and_checked():
    with pytest.raises(TypeError, match="takes the inputs"):
        check("ex-sampling-x0hat", 1.0)
    with pytest.raises(TypeError, match="takes the inputs"):
        check("ex-forward-abar", 1.0, model=None)


# ---------------------------------------------------------------- diagnoses of value answers
@pytest.mark.parametrize("label, answer, says", [
    ("ex-forward-abar", float(ABAR[500]), "code index 499"),
    ("ex-forward-abar", math.sqrt(ABAR[499]), "sqrt"),
    ("ex-forward-variance", _cosine_abar(299) * 0.5 + 1 - _cosine_abar(299), "sigma^2 = 0.25"),
    ("ex-forward-snr", int(np.argmax(ABAR < 0.5)), "code index"),
    ("ex-elbo-kl", 0.5 * (math.log(0.25) + 2 / 0.25 - 1), "not symmetric"),
    ("ex-elbo-posterior-variance", math.sqrt(_tilde(9)), "standard deviation"),
    ("ex-sampling-sigma", [BETAS[9], _tilde(9)], "square roots"),
    ("ex-unet-shape", (4, 16, 32, 32), "skip"),
    ("ex-cond-convention", 0.3, "w' itself"),
    ("ex-training-epochs", 2 * 40_000 * 64 / 9000, "constant factor: 2 times"),
    ("ex-training-epochs", -40_000 * 64 / 9000, "sign is flipped"),
    ("ex-elbo-kl", (0.5 * (math.log(4) + 0.25)) ** 2, "missing sqrt"),
    ("ex-unet-attention-flops", [1, 2, 3], "shape (3,), expected (2,)"),
])
def test_value_diagnoses_name_the_mistake(capsys, label, answer, says):
    verdict = check(label, answer)
    assert not verdict and says in verdict.message, verdict.message
    out = capsys.readouterr().out
    assert out.startswith("[not yet] ") and max(len(line) for line in out.splitlines()) <= WIDTH


# ---------------------------------------------------------------- function exercises
def q_sample_right(schedule, x0, t, eps):
    abar = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def q_sample_no_sqrt(schedule, x0, t, eps):
    abar = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return abar * x0 + (1 - abar) * eps


def q_sample_minus(schedule, x0, t, eps):
    abar = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return abar.sqrt() * x0 - (1 - abar).sqrt() * eps


def q_sample_t_minus_1(schedule, x0, t, eps):
    return q_sample_right(schedule, x0, t - 1, eps)


def q_sample_no_reshape(schedule, x0, t, eps):
    abar = schedule.alphas_cumprod[t]                  # (B,): does not broadcast over (B, C, H, W)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


@pytest.mark.parametrize("function, says", [
    (q_sample_no_sqrt, "missing sqrt"),
    (q_sample_minus, "sign of the noise term is flipped"),
    (q_sample_t_minus_1, "abar at t - 1"),
    (q_sample_no_reshape, "(B, 1, 1, 1)"),
    (lambda s, x0, t, eps: 3 * q_sample_right(s, x0, t, eps), "constant factor: 3 times"),
    (lambda s, x0, t, eps: q_sample_right(s, x0, t, eps)[:, 0], "shape (6, 4, 4), expected (6, 1, 4, 4)"),
    (lambda s, x0, t, eps: q_sample_right(s, x0, t, eps) + 0.1, "off by up to 0.1"),
])
def test_function_diagnoses_name_the_mistake(capsys, function, says):
    verdict = check_function("ex-forward-qsample", function)
    assert not verdict and says in verdict.message, verdict.message
    out = capsys.readouterr().out
    assert out.startswith("[not yet] q_sample by hand (ex-forward-qsample): ")
    assert max(len(line) for line in out.splitlines()) <= WIDTH


def test_a_right_function_passes_and_strict_catches_a_wrong_one(capsys):
    assert check_function("ex-forward-qsample", q_sample_right, strict=True)
    assert capsys.readouterr().out == "[right] q_sample by hand (ex-forward-qsample)\n"
    with pytest.raises(ExerciseFailed, match="missing sqrt"):
        check_function("ex-forward-qsample", q_sample_no_sqrt, strict=True)


def _not_implemented(*args):
    raise NotImplementedError


@pytest.mark.parametrize("function", [None, lambda *a: None, _not_implemented])
def test_no_function_yet_says_so_and_never_raises(capsys, function):
    verdict = check_function("ex-forward-qsample", function)
    assert not verdict and capsys.readouterr().out == \
        "[not yet] q_sample by hand (ex-forward-qsample): no answer yet (replace None)\n"
    with pytest.raises(ExerciseFailed):
        check_function("ex-forward-qsample", function, strict=True)


def test_a_crashing_function_is_reported_not_raised():
    verdict = check_function("ex-unet-embedding", lambda t, dim: 1 / 0)
    assert not verdict and verdict.message == "it raised ZeroDivisionError: division by zero"


# hand-written solutions, one per function exercise: each passes, each typical slip is named
def _emb(t, dim, order=(0, 1)):
    half = dim // 2
    args = t.double()[:, None] * 10000.0 ** (-torch.arange(half, dtype=torch.float64) / half)
    parts = (torch.cos(args), torch.sin(args))
    return torch.cat([parts[order[0]], parts[order[1]]], dim=1)


def _post(s, x0, xt, t, prev=-1):
    b = s.betas[t].reshape(-1, 1, 1, 1)
    ab, abp = s.alphas_cumprod[t].reshape(-1, 1, 1, 1), s.alphas_cumprod[t + prev].reshape(-1, 1, 1, 1)
    return abp.sqrt() * b / (1 - ab) * x0 + (1 - b).sqrt() * (1 - abp) / (1 - ab) * xt


def _loss(model, s, x0, t, noise, reduction="mean", sum_pixels=False):
    ab = s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    err = (model(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t) - noise) ** 2
    per = err.flatten(1).sum(1) if sum_pixels else err.flatten(1).mean(1)
    return per.mean() if reduction == "mean" else per


def _step(s, x_t, t, eps, z, root=True):
    b, ab = s.betas[t].reshape(-1, 1, 1, 1), s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return (x_t - b / (1 - ab).sqrt() * eps) / ((1 - b).sqrt() if root else 1 - b) + b.sqrt() * z


def _ddim(s, x_t, t, tp, eps, prev=True):
    ab = s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    abp = s.alphas_cumprod[tp if prev else t].reshape(-1, 1, 1, 1)
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    return abp.sqrt() * x0 + (1 - abp).sqrt() * eps


def _x0_v(s, x_t, t, v):
    abar = s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return abar.sqrt() * x_t - (1 - abar).sqrt() * v


def _tweedie_x0(s, x_t, t, score):
    abar = s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return (x_t + (1 - abar) * score) / abar.sqrt()


def _invert(model, s, x0, steps, start=False):
    short = s.respace(steps)
    abar = torch.cat([torch.ones(1, dtype=torch.float64), short.alphas_cumprod])
    x = x0
    for j in range(steps):
        t = torch.full((x.shape[0],), j - 1 if start and j > 0 else j)
        eps = model(x, short.timestep_map[t])
        x = abar[j + 1].sqrt() * (x - (1 - abar[j]).sqrt() * eps) / abar[j].sqrt() \
            + (1 - abar[j + 1]).sqrt() * eps
    return x


def _classifier(e, g, abar, w, sign=-1.0):
    return e + sign * w * (1 - abar).sqrt().reshape(-1, 1, 1, 1) * g


def _heun(denoise, x, sigma, sigma_next, end_at_euler=True, half=0.5, zero_check=True):
    d = (x - denoise(x, sigma)) / sigma
    x_e = x + (sigma_next - sigma) * d
    if zero_check and sigma_next == 0:
        return x_e
    at = x_e if end_at_euler else x
    d2 = (at - denoise(at, sigma_next)) / sigma_next
    return x + (sigma_next - sigma) * half * (d + d2)


FUNCTIONS = {
    "ex-ddim-invert": (_invert, [(lambda *a: _invert(*a, start=True), "timestep of the step's end")]),
    "ex-cond-classifier": (_classifier, [(lambda *a: _classifier(*a, sign=1.0), "the sign")]),
    "ex-ode-heun-step": (_heun, [(lambda *a: _heun(*a, end_at_euler=False), "Euler point"),
                                 (lambda *a: _heun(*a, half=1.0), "not added"),
                                 (lambda *a: _heun(*a, zero_check=False), "inf or nan")]),
    "ex-elbo-tweedie": (_tweedie_x0, [(lambda s, x, t, g: _tweedie_x0(s, x, t, -g), "the sign"),
                                      (lambda s, x, t, g: _tweedie_x0(s, x, t, g) * s.alphas_cumprod[t].reshape(
                                          -1, 1, 1, 1).sqrt(), "divide by sqrt(abar)")]),
    "ex-elbo-x0-from-v": (_x0_v, [(lambda s, x, t, v: _x0_v(s, x, t, -v), "the sign"),
                                  (lambda s, x, t, v: s.predict_eps_from_v(x, t, v), "eps from v")]),
    "ex-forward-qsample": (q_sample_right, [(q_sample_no_sqrt, "missing sqrt")]),
    "ex-elbo-posterior-mean": (_post, [(lambda *a: _post(*a, prev=0), "alphas_cumprod[t - 1]")]),
    "ex-unet-embedding": (_emb, [(lambda t, d: _emb(t, d, (1, 0)), "cosines come first")]),
    "ex-training-loss": (_loss, [(lambda *a: _loss(*a, sum_pixels=True), "summed over the pixels"),
                                 (lambda m, s, x0, t, n, r: _loss(m, s, x0, t, n, "none"), "shape")]),
    "ex-sampling-step": (_step, [(lambda *a: _step(*a, root=False), "missing sqrt")]),
    "ex-ddim-step": (_ddim, [(lambda *a: _ddim(*a, prev=False), "abar at t_prev")]),
    "ex-cond-guidance": (lambda c, u, w: u + w * (c - u),
                         [(lambda c, u, w: (1 + w) * c - w * u, "Ho and Salimans"),
                          (lambda c, u, w: c + w * (u - c), "roles are swapped")]),
}


@pytest.mark.parametrize("label", sorted(FUNCTIONS))
def test_function_exercises_accept_a_solution_and_name_slips(label):
    right, slips = FUNCTIONS[label]
    assert check_function(label, right, strict=True)
    for wrong, says in slips:
        verdict = check_function(label, wrong)
        assert not verdict and says in verdict.message, (label, verdict.message)


def test_every_function_exercise_is_tested():
    assert {k for k, e in EXERCISES.items() if isinstance(e, FunctionExercise)} == set(FUNCTIONS)


# ---------------------------------------------------------------- multiple choice
def test_choose_right_wrong_and_no_answer(capsys):
    ex = EXERCISES["ex-elbo-why-eps"]
    assert choose("ex-elbo-why-eps", ex.answer)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[right] why L_simple drops lambda_t (ex-elbo-why-eps)" and out[1].startswith("    ")
    letter = next(k for k, text in ex.options.items() if "log-likelihood" in text)
    wrong = choose("ex-elbo-why-eps", f"({letter.upper()})")
    assert not wrong and wrong.message.startswith(f"({letter}) ") and "bound" in wrong.message
    assert choose("ex-elbo-why-eps", None).message == "no answer yet (replace None with a letter)"
    assert choose("ex-elbo-why-eps", "z").message == "answer one of a, b, c, d"
    with pytest.raises(ExerciseFailed):
        choose("ex-elbo-why-eps", next(iter(ex.reasons)), strict=True)


CHOICES = {k: e for k, e in EXERCISES.items() if isinstance(e, ChoiceExercise)}


def visible_length(text: str) -> int:
    """Characters a reader sees: a LaTeX command counts as one, $ ` { } as none."""
    return len(re.sub(r"[$`{}]", "", re.sub(r"\\[a-zA-Z]+", "x", text)))


def test_the_right_answer_cannot_be_guessed_by_its_length():
    """At most a third of the questions have the right option as the longest, and no option is more
    than 1.3 times as long as the shortest of its question."""
    longest = []
    for label, ex in CHOICES.items():
        lengths = {k: visible_length(t) for k, t in ex.options.items()}
        assert max(lengths.values()) <= 1.3 * min(lengths.values()), (label, lengths)
        if lengths[ex.answer] >= max(lengths.values()):
            longest.append(label)
    assert len(longest) <= len(CHOICES) / 3, longest


def test_letters_are_shuffled_from_a_fixed_seed():
    answers = [ex.answer for ex in CHOICES.values()]
    assert len(set(answers)) >= 3, answers                     # not always the same letter
    for ex in CHOICES.values():                                  # the same order every time it is asked
        assert ex.options == ex.options and sorted(ex.options) == ["a", "b", "c", "d"]
        assert sorted([ex.options[ex.answer], *(ex.options[k] for k in ex.reasons)]) == \
            sorted([ex.right, *(text for text, _ in ex.wrong)])


@pytest.mark.parametrize("label", sorted(k for k, e in EXERCISES.items() if isinstance(e, ChoiceExercise)))
def test_every_wrong_choice_has_a_reason(label, capsys):
    ex = EXERCISES[label]
    assert ex.answer not in ex.reasons and len(ex.reasons) >= 2
    for letter in ex.reasons:
        assert not choose(label, letter)
    assert choose(label, ex.answer)
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= WIDTH


# ---------------------------------------------------------------- keys, and the verdict itself
def test_unknown_keys_give_a_clear_error():
    with pytest.raises(UnknownExercise, match=r"no exercise is labelled 'ex-forward-abr'; known labels: "
                                              r".*ex-forward-abar"):
        check("ex-forward-abr", 0.5)
    with pytest.raises(UnknownExercise):
        check_function("ex-nope", q_sample_right)
    with pytest.raises(TypeError, match="checked with check_function"):
        check("ex-forward-qsample", 1.0)
    with pytest.raises(TypeError, match="checked with choose"):
        check_function("ex-elbo-why-eps", q_sample_right)


def test_none_is_no_answer_yet_for_every_value_exercise(capsys):
    assert not check("ex-forward-abar", None)
    assert capsys.readouterr().out == \
        "[not yet] abar_500 of the linear schedule (ex-forward-abar): no answer yet (replace None)\n"
    with pytest.raises(ExerciseFailed):
        check("ex-forward-abar", None, strict=True)


@pytest.mark.parametrize("answer, expected, verdict", [
    (None, 1.0, "[not yet] q: no answer yet (replace None)"),
    (1.0, 1.0, "[right] q"),
    (torch.tensor([1.0, 2.0]), [1.0, 2.0 + 1e-9], "[right] q"),
    (1.5, 1.0, "[not yet] q: off by up to 0.5 (see the hint)"),
    ([1.0, 2.0], 1.0, "[not yet] q: shape (2,), expected ()"),
])
def test_explicit_check_prints_one_short_line(capsys, answer, expected, verdict):
    """The form with an explicit expected value, kept for pages outside the chapters (appendices)."""
    result = check("q", answer, expected, hint="a long hint that stays in the cell's source " * 3)
    out = capsys.readouterr().out
    assert out == verdict + "\n"
    assert isinstance(result, Verdict) and bool(result) == verdict.startswith("[right]")


def test_verdict_shows_nothing_as_a_cell_value():
    """IPython calls _ipython_display_ instead of printing a repr: no stray True/False under the line."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        result = shell.run_cell("from ddpm_lib.book.exercises import check\ncheck('ex-forward-abar', None)")
        assert result.success and isinstance(result.result, Verdict) and not result.result
        assert shell.display_formatter.format(result.result) == ({}, {})        # no text/plain 'False'
        assert shell.display_formatter.format(False)[0]["text/plain"] == "False"  # what a bool would show
    finally:
        InteractiveShell.clear_instance()
    assert repr(check("q", 1, 1)) == "Verdict('q', ok=True)"


def test_strict_raises_on_a_wrong_solution():
    with pytest.raises(ExerciseFailed):
        check("q", 2.0, 1.0, strict=True)
    assert check("q", 1.0, 1.0, strict=True)
    with pytest.raises(ExerciseFailed, match="code index 499"):
        check("ex-forward-abar", float(ABAR[500]), strict=True)


def test_mfu_exercise_uses_the_given_flops_and_names_the_missing_factor_three(capsys):
    gflop = 7.2                                                  # any value: the key computes from it
    want = 3 * gflop * 1e9 * 14_000 / 989e12
    np.testing.assert_allclose(expected_value("ex-perf-mfu", gflop=gflop), want, rtol=1e-12)
    assert check("ex-perf-mfu", want, gflop=gflop)
    capsys.readouterr()
    assert not check("ex-perf-mfu", want / 3, gflop=gflop)
    assert "three forward passes" in capsys.readouterr().out


# ---------------------------------------------------------------- the prose in YAML, joined with the code
def _variant(x, *, sign=1.0):
    return sign * x


GOOD = """
ex-toy-value:
  title: a value
  mistakes:
    - why: the sign
      variant: {sign: -1.0}
    - why: written out
      value: 3.0
ex-toy-function:
  title: a function
  signature: f(x) -> x
  atol: 1.0e-3
  mistakes:
    - why: the sign
      variant: {sign: -1.0}
ex-toy-why:
  title: a question
  right: '$\\lambda_t$ right'
  why: because
  wrong:
    - {option: 'no $\\bar\\alpha$', why: not so}
"""
CODE = {"ex-toy-value": {"expected": lambda: 2.0, "variant": lambda *, sign: sign * 2.0},
        "ex-toy-function": {"trials": lambda g: [(torch.ones(2),)], "reference": _variant, "variant": _variant}}


@pytest.fixture
def toy_chapter(tmp_path, monkeypatch):
    """register_chapter("toy", ...) reads tmp_path/toy.yaml, into a copy of the registry."""
    from ddpm_lib.book.exercises import engine
    len(EXERCISES)                                          # every chapter loaded before the registry is copied
    monkeypatch.setattr(engine, "TEXT", tmp_path)
    monkeypatch.setattr(EXERCISES, "_found", dict(EXERCISES._found))

    def register(text, code=CODE):
        (tmp_path / "toy.yaml").write_text(text)
        engine.register_chapter("toy", code)
    return register


def test_a_chapter_joins_its_yaml_with_its_functions(toy_chapter):
    toy_chapter(GOOD)
    value, function, question = (EXERCISES[k] for k in ("ex-toy-value", "ex-toy-function", "ex-toy-why"))
    assert [m for m in value.mistakes()] == [("the sign", -2.0), ("written out", 3.0)]
    assert function.signature == "f(x) -> x" and function.atol == 1e-3 and function.rtol == 1e-4
    assert float(function.mistakes[0][1](torch.tensor(2.0))) == -2.0
    assert question.right == r"$\lambda_t$ right" and question.wrong == ((r"no $\bar\alpha$", "not so"),)


@pytest.mark.parametrize("text, code, says", [
    (GOOD.replace("{sign: -1.0}", "{sigh: -1.0}", 1), CODE,
     r"ex-toy-value: the mistake 'the sign': <lambda> takes no keyword sigh"),
    (GOOD.replace("  signature: f(x) -> x\n", ""), CODE,
     r"ex-toy-function: a FunctionExercise needs the field signature"),
    (GOOD.replace("  why: because\n", ""), CODE, r"ex-toy-why: a ChoiceExercise needs the field why"),
    (GOOD.replace("  atol: 1.0e-3", "  atol: 1e-3"), CODE, r"ex-toy-function: atol is not a number"),
    (GOOD.replace("ex-toy-why:", "ex-toy-value:"), CODE, r"ex-toy-value given twice"),
    (GOOD.replace("ex-toy-why:", "ex-forward-abar:"), CODE, r"ex-forward-abar: registered twice"),
    (GOOD, {**CODE, "ex-toy-extra": {"expected": lambda: 1.0}}, r"ex-toy-extra: has functions .* but no entry"),
    (GOOD, {"ex-toy-value": CODE["ex-toy-value"]}, r"ex-toy-function: no functions in the chapter's module"),
    (GOOD, {**CODE, "ex-toy-why": {"expected": lambda: 1.0}}, r"ex-toy-why: a ChoiceExercise takes no function"),
])
def test_a_bad_yaml_entry_names_the_file_and_the_label(toy_chapter, text, code, says):
    from ddpm_lib.book.exercises.engine import ExerciseTextError
    with pytest.raises(ExerciseTextError, match=r"^ddpm_lib/book/exercises/text/toy\.yaml: .*" + says) as raised:
        toy_chapter(text, code)
    assert "\n" not in str(raised.value)
    assert "ex-toy-value" not in EXERCISES._found                 # a chapter that fails registers nothing


def test_the_prose_survives_yaml_exactly():
    """LaTeX in the questions: the backslashes arrive as written (no YAML escapes in them)."""
    texts = [t for ex in EXERCISES.values() if isinstance(ex, ChoiceExercise)
             for t in (ex.right, *(w for w, _ in ex.wrong))]
    assert any(r"\bar\alpha" in t for t in texts) and any(r"\epsilon" in t for t in texts)
    assert not any(c in t for t in texts for c in "\t\n\x07\x08")
