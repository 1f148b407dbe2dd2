"""Automatic checks for the book's exercises, keyed by the exercise's label.

    from ddpm_lib.book.exercises import check, check_function, choose
    check("ex-forward-abar", my_answer)                 # a number, tensor or tuple
    check("ex-sampling-x0hat", my_x0, x_t=x500, eps=eps500, schedule=schedule)   # with inputs
    check_function("ex-forward-qsample", my_q_sample)    # a function, run on seeded random inputs
    choose("ex-elbo-why-eps", "b")                       # a multiple-choice question

The expected answers are not in the notebooks: this module computes each from the library itself,
lazily, when its exercise is checked (keyword arguments pass the exercise's *inputs*, a model or a
noise draw, never the expected value). Each call prints a verdict and returns a :class:`Verdict`,
which is true when the answer is right and shows nothing as a cell's last value. A wrong answer is
diagnosed where the mistake is a common one: the answer is compared with what each known mistake
(a dropped square root, a flipped sign, index t instead of t - 1, ...) would give, then with a
constant multiple of the expected value. ``None``, a function that returns ``None`` or raises
``NotImplementedError``, prints "no answer yet". The book's solution cells pass ``strict=True``,
which raises :class:`ExerciseFailed` on a wrong answer so that nbval and the build catch it.

``check(name, answer, expected)`` with an explicit expected value still works, for pages outside
the chapters (the appendices).
"""

from __future__ import annotations

import math
import random
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch

WIDTH = 90                      # printed lines fit the book's article column


class ExerciseFailed(AssertionError):
    """A solution cell's answer did not match (raised only with strict=True)."""


class UnknownExercise(KeyError):
    """No exercise has this label (a typo in a notebook, or a key missing from this module)."""

    def __str__(self) -> str:                     # KeyError would print the repr of its argument
        return str(self.args[0])


class Verdict:
    """The outcome of a check: truthy when the answer is right.

    As the last expression of a notebook cell it displays nothing (its verdict has been printed);
    ``repr()`` still says what it is elsewhere. ``message`` is the diagnosis ("" when right).
    """

    __slots__ = ("name", "ok", "message")

    def __init__(self, name: str, ok: bool, message: str = ""):
        self.name, self.ok, self.message = name, bool(ok), message

    def __bool__(self) -> bool:
        return self.ok

    def __eq__(self, other: object) -> bool:
        return bool(self) == other if isinstance(other, (bool, Verdict)) else NotImplemented

    def __hash__(self) -> int:
        return hash(self.ok)

    def __repr__(self) -> str:
        return f"Verdict({self.name!r}, ok={self.ok})"

    def _ipython_display_(self) -> None:                                  # IPython: nothing to add
        pass


NO_ANSWER = "no answer yet (replace None)"
_KEYED = object()                # check() without an expected value: look the label up


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    elif isinstance(value, (list, tuple)):
        value = [_as_array(v) if isinstance(v, torch.Tensor) else v for v in value]
    return np.asarray(value, dtype=np.float64)


def _close(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> bool:
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=atol))


def _diagnose(got: np.ndarray, want: np.ndarray, mistakes: list[tuple[str, np.ndarray]],
              rtol: float, atol: float) -> str:
    """Why ``got`` is not ``want``: a named mistake, the shape, a sign, a scale factor, or the error."""
    for message, value in mistakes:
        if _close(got, value, rtol, atol):
            return message
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    if not np.all(np.isfinite(got)):
        return "the answer has inf or nan in it"
    if _close(got, -want, rtol, atol) and np.any(np.abs(want) > atol):
        return "the sign is flipped"
    if np.all(want > 0) and _close(got, want ** 2, rtol, atol):
        return "looks like a missing sqrt: this is the square of the answer"
    if np.all(want > 0) and np.all(got > 0) and _close(got, np.sqrt(want), rtol, atol):
        return "looks like an extra sqrt: this is the square root of the answer"
    mask = np.abs(want) > 1e-8
    if want.size > 0 and mask.any():
        ratios = got[mask] / want[mask]
        factor = float(np.median(ratios))
        if factor != 0 and _close(got, factor * want, rtol, atol):
            return f"off by a constant factor: {factor:.4g} times the answer"
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    return f"off by up to {err:.3g}"


def _say(ok: bool, shown: str, message: str) -> None:
    line = f"[right] {shown}" if ok else f"[not yet] {shown}: {message}"
    print(textwrap.fill(line, WIDTH, subsequent_indent="    ", break_on_hyphens=False))


def _shown(name: str) -> str:
    """How a verdict names its exercise: the title and the label, or free text as it is."""
    ex = EXERCISES.get(name)
    return f"{ex.title} ({name})" if ex is not None else name


def _finish(name: str, ok: bool, message: str, strict: bool) -> Verdict:
    _say(ok, _shown(name), message)
    if strict and not ok:
        raise ExerciseFailed(f"the solution to {name!r} is wrong: {message}")
    return Verdict(name, ok, message)


# ---------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class ValueExercise:
    """An exercise whose answer is a value: ``expected(**inputs)``, and what known mistakes give."""

    title: str
    expected: Callable[..., Any]
    mistakes: Callable[..., list[tuple[str, Any]]] = lambda **_: []
    rtol: float = 1e-4
    atol: float = 1e-6
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class FunctionExercise:
    """An exercise whose answer is a function, called on ``trials(generator)``'s inputs.

    ``reference(*args)`` is the library's result and each mistake ``(message, wrong(*args))`` what a
    common slip gives; ``args`` is one tuple of positional arguments per trial.
    """

    title: str
    signature: str
    trials: Callable[[torch.Generator], list[tuple]]
    reference: Callable[..., Any]
    mistakes: tuple[tuple[str, Callable[..., Any]], ...] = ()
    rtol: float = 1e-4
    atol: float = 1e-5


CHOICE_SEED = 27                 # the letters of every multiple-choice question are shuffled from it


@dataclass(frozen=True)
class ChoiceExercise:
    """A multiple-choice question: the right option, why it is right, and each wrong option with why
    it is wrong. The options are lettered (a)-(d) in an order shuffled from ``CHOICE_SEED`` and the
    title, the same on every machine; the chapter's markdown lists them in that order (a test checks).
    """

    title: str
    right: str
    why: str
    wrong: tuple[tuple[str, str], ...]

    def _order(self) -> list[int]:
        order = list(range(1 + len(self.wrong)))          # 0 is the right option
        random.Random(f"{CHOICE_SEED}:{self.title}").shuffle(order)
        return order

    @property
    def options(self) -> dict[str, str]:
        """``{letter: option text}`` in the order the chapter shows them."""
        texts = [self.right] + [text for text, _ in self.wrong]
        return {chr(ord("a") + i): texts[k] for i, k in enumerate(self._order())}

    @property
    def answer(self) -> str:
        return "abcdefgh"[self._order().index(0)]

    @property
    def reasons(self) -> dict[str, str]:
        """``{letter: why it is wrong}`` for every wrong letter."""
        return {chr(ord("a") + i): self.wrong[k - 1][1] for i, k in enumerate(self._order()) if k}


EXERCISES: dict[str, ValueExercise | FunctionExercise | ChoiceExercise] = {}


def _register(label: str, exercise) -> None:
    if label in EXERCISES:
        raise ValueError(f"exercise {label!r} registered twice")
    EXERCISES[label] = exercise


def exercise(label: str, kind: type | None = None) -> ValueExercise | FunctionExercise | ChoiceExercise:
    """The registered exercise ``label``; :class:`UnknownExercise` names the known ones otherwise."""
    if label not in EXERCISES:
        raise UnknownExercise(f"no exercise is labelled {label!r}; known labels: "
                              + ", ".join(sorted(EXERCISES)))
    found = EXERCISES[label]
    if kind is not None and not isinstance(found, kind):
        use = {ValueExercise: "check", FunctionExercise: "check_function",
               ChoiceExercise: "choose"}[type(found)]
        raise TypeError(f"{label!r} is checked with {use}(), not this function")
    return found


def expected_value(label: str, **inputs) -> Any:
    """The expected answer of a value exercise (for tests and for authors, not for exercise cells)."""
    return exercise(label, ValueExercise).expected(**inputs)


# ---------------------------------------------------------------------------- the three checks
def check(name: str, answer: Any, expected: Any = _KEYED, *, rtol: float = 1e-4, atol: float = 1e-6,
          hint: str = "", strict: bool = False, **inputs) -> Verdict:
    """Check a value answer against the library's; print one verdict (wrapped at 90 characters).

    ``check("ex-...", answer, **inputs)`` looks the exercise up by its label: the expected value,
    the tolerances and the diagnoses live here. ``inputs`` are what the exercise is about (a model,
    a noise draw) when its expected value depends on them. With an explicit ``expected`` (pages
    outside the chapters), ``name`` is free text and ``rtol``/``atol`` apply.
    """
    if expected is _KEYED:
        ok, message = judge_value(name, answer, **inputs)
        return _finish(name, ok, message, strict)
    if inputs:
        raise TypeError(f"unexpected keyword arguments {sorted(inputs)}")
    if answer is None or answer is Ellipsis:
        return _finish(name, False, NO_ANSWER, strict)
    got, want = _as_array(answer), _as_array(expected)
    if got.shape != want.shape:
        return _finish(name, False, f"shape {got.shape}, expected {want.shape}", strict)
    ok = bool(np.allclose(got, want, rtol=rtol, atol=atol))
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    message = "" if ok else f"off by up to {err:.3g}" + (" (see the hint)" if hint else "")
    return _finish(name, ok, message, strict)


def _try_array(value: Any) -> np.ndarray | None:
    try:
        return _as_array(value)
    except (TypeError, ValueError):
        return None


def judge_value(name: str, answer: Any, **inputs) -> tuple[bool, str]:
    """``(right, diagnosis)`` of a value answer to the keyed exercise ``name``; prints nothing.

    What :func:`check` prints, and what ``python -m ddpm_lib.book grade`` records.
    """
    ex = exercise(name, ValueExercise)
    missing = set(ex.inputs) - set(inputs)
    if missing or set(inputs) - set(ex.inputs):
        raise TypeError(f"check({name!r}, ...) takes the inputs {list(ex.inputs)}, "
                        f"got {sorted(inputs)}")
    if answer is None or answer is Ellipsis:
        return False, NO_ANSWER
    want = _as_array(ex.expected(**inputs))
    got = _try_array(answer)
    if got is None:
        return False, f"cannot read {type(answer).__name__} as numbers"
    if _close(got, want, ex.rtol, ex.atol):
        return True, ""
    mistakes = [(m, _as_array(v)) for m, v in ex.mistakes(**inputs)]
    return False, _diagnose(got, want, mistakes, ex.rtol, ex.atol)


def check_function(name: str, function: Callable | None, *, strict: bool = False,
                   seed: int = 0) -> Verdict:
    """Call ``function`` on seeded random inputs and compare it with the library.

    Prints "no answer yet" when ``function`` is None, returns None or raises NotImplementedError;
    says what is wrong otherwise (an exception, the shape, a named mistake, a sign or a scale factor).
    Never raises unless ``strict=True``.
    """
    if function is None:
        exercise(name, FunctionExercise)
        return _finish(name, False, NO_ANSWER, strict)
    ok, message = judge_function(name, function_results(name, function, seed=seed))
    return _finish(name, ok, message, strict)


def function_trials(name: str, seed: int = 0) -> list[tuple]:
    """The seeded inputs that a function exercise's answer is called on (one tuple per trial)."""
    return exercise(name, FunctionExercise).trials(torch.Generator().manual_seed(seed))


def function_results(name: str, function: Callable, *, seed: int = 0) -> list[tuple[tuple, Any]]:
    """``(args, result)`` for each trial, stopping at the first that is not numbers: a result of
    ``None`` (or NotImplementedError) is None; an exception is its one-line explanation, a str."""
    out = []
    for args in function_trials(name, seed):
        try:
            result = function(*args)
        except NotImplementedError:
            result = None
        except Exception as error:          # a student's bug: report it, never raise it
            result = _explain(error)
        out.append((args, result))
        if result is None or isinstance(result, str):
            break
    return out


def judge_function(name: str, results: list[tuple[tuple, Any]]) -> tuple[bool, str]:
    """``(right, diagnosis)`` of a function exercise from what the function returned on each trial.

    ``results`` is :func:`function_results`' list (or the grader's: the same trials, called in a
    student's kernel); each result is compared with the library's on the same arguments.
    """
    ex = exercise(name, FunctionExercise)
    if not results:
        return False, NO_ANSWER
    for args, result in results:
        if result is None:
            return False, NO_ANSWER
        if isinstance(result, str):
            return False, result
        got = _try_array(result)
        if got is None:
            return False, f"it returned a {type(result).__name__}, not numbers ({ex.signature})"
        with torch.no_grad():
            want = _as_array(ex.reference(*args))
        if _close(got, want, ex.rtol, ex.atol):
            continue
        with torch.no_grad():
            mistakes = [(m, _as_array(wrong(*args))) for m, wrong in ex.mistakes]
        return False, _diagnose(got, want, mistakes, ex.rtol, ex.atol)
    return True, ""


def _explain(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    message = f"it raised {type(error).__name__}" + (f": {text[:120]}" if text else "")
    if isinstance(error, RuntimeError) and "must match the size" in text:
        message += " (a (B,) coefficient must be reshaped to (B, 1, 1, 1) to broadcast)"
    return message


def choose(name: str, answer: str | None, *, strict: bool = False) -> Verdict:
    """A multiple-choice answer: a letter. Prints right (and why) or not yet (and why not)."""
    ok, message = judge_choice(name, answer)
    if ok:
        _say(True, _shown(name), "")
        print(textwrap.fill(exercise(name).why, WIDTH, initial_indent="    ", subsequent_indent="    "))
        return Verdict(name, True)
    return _finish(name, False, message, strict)


def judge_choice(name: str, answer: str | None) -> tuple[bool, str]:
    """``(right, reason)`` of a multiple-choice answer; prints nothing."""
    ex = exercise(name, ChoiceExercise)
    if answer is None or answer is Ellipsis:
        return False, "no answer yet (replace None with a letter)"
    letter = str(answer).strip().lower().strip("()")
    letters = sorted({ex.answer, *ex.reasons})
    if letter not in letters:
        return False, f"answer one of {', '.join(letters)}"
    if letter == ex.answer:
        return True, ""
    return False, f"({letter}) {ex.reasons[letter]}"


# ---------------------------------------------------------------------------- shared pieces
@lru_cache(maxsize=None)
def _linear():
    from ...schedule import NoiseSchedule
    return NoiseSchedule.linear()


@lru_cache(maxsize=None)
def _cosine():
    from ...schedule import NoiseSchedule
    return NoiseSchedule.cosine()


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, 1, 1, 1)


def _short_schedule(generator: torch.Generator):
    """A random-length linear schedule: short, so that t and t - 1 give clearly different numbers."""
    from ...schedule import NoiseSchedule
    T = int(torch.randint(20, 40, (), generator=generator))
    return NoiseSchedule.linear(T=T, beta_start=1e-3, beta_end=0.2)


def _images(generator: torch.Generator, shape=(6, 1, 4, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _steps(schedule, generator: torch.Generator, batch: int = 6) -> torch.Tensor:
    """Code indices 1 .. T-2, so that t - 1 and t + 1 are valid indices too."""
    return torch.randint(1, schedule.T - 1, (batch,), generator=generator)


# ============================================================================ 1. forward process
def _abar_mistakes():
    abar = _linear().alphas_cumprod
    return [("that is abar at the paper's t = 501: the paper's t = 500 is code index 499",
             abar[500]),
            ("that is abar at the paper's t = 499: multiply the first 500 factors", abar[498]),
            ("that is sqrt(abar_500), the coefficient of x_0: abar itself has no sqrt",
             abar[499].sqrt()),
            ("that is 1 - abar_500, the variance of the noise", 1 - abar[499]),
            ("that is the product of the betas: abar multiplies 1 - beta",
             torch.prod(_linear().betas[:500]))]


_register("ex-forward-abar", ValueExercise(
    "abar_500 of the linear schedule",
    expected=lambda: _linear().alphas_cumprod[499],
    mistakes=lambda: _abar_mistakes(), rtol=1e-4, atol=1e-9))


def _variance_mistakes():
    a, lin = _cosine().alphas_cumprod, _linear().alphas_cumprod
    return [("used sigma = 0.5 where the variance needs sigma^2 = 0.25", a[299] * 0.5 + 1 - a[299]),
            ("the noise term adds its variance 1 - abar, not its standard deviation",
             a[299] * 0.25 + (1 - a[299]).sqrt()),
            ("x_0 is scaled by sqrt(abar): its variance is multiplied by abar, not sqrt(abar)",
             a[299].sqrt() * 0.25 + 1 - a[299]),
            ("that is the paper's t = 301: t = 300 is code index 299", a[300] * 0.25 + 1 - a[300]),
            ("that is the linear schedule's variance: the exercise asks for the cosine one",
             lin[299] * 0.25 + 1 - lin[299]),
            ("that is the variance for sigma = 1: x_0's variance here is 0.25", torch.tensor(1.0))]


_register("ex-forward-variance", ValueExercise(
    "Var[x_300] under the cosine schedule",
    expected=lambda: _cosine().alphas_cumprod[299] * 0.5 ** 2 + (1 - _cosine().alphas_cumprod[299]),
    mistakes=lambda: _variance_mistakes()))


def _first_snr_below_one() -> int:
    s = _linear()
    return int((s.snr(torch.arange(s.T)) < 1).nonzero()[0]) + 1


_register("ex-forward-snr", ValueExercise(
    "first t with SNR < 1 (linear)",
    expected=lambda: _first_snr_below_one(),
    mistakes=lambda: [("that is the code index (or the last step with SNR >= 1): the paper's "
                       "step is one more", _first_snr_below_one() - 1)],
    rtol=0, atol=0))


def _qsample_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        x0 = _images(generator)
        out.append((s, x0, _steps(s, generator), _images(generator)))
    return out


def _q(s, x0, t, eps, *, at=0, sqrt=True, sign=1.0, swap=False):
    abar = _col(s.alphas_cumprod[t + at])
    a, b = (abar.sqrt(), (1 - abar).sqrt()) if sqrt else (abar, 1 - abar)
    if swap:
        a, b = b, a
    return a * x0 + sign * b * eps


_register("ex-forward-qsample", FunctionExercise(
    "q_sample by hand", "my_q_sample(schedule, x0, t, eps) -> x_t shaped like x0",
    trials=_qsample_trials,
    reference=lambda s, x0, t, eps: s.q_sample(x0, t, eps),
    mistakes=(
        ("looks like a missing sqrt: abar x0 + (1 - abar) eps; the coefficients are the square "
         "roots", lambda s, x0, t, eps: _q(s, x0, t, eps, sqrt=False)),
        ("the sign of the noise term is flipped", lambda s, x0, t, eps: _q(s, x0, t, eps, sign=-1)),
        ("wrong index: that uses abar at t - 1; code index t is abar[t]",
         lambda s, x0, t, eps: _q(s, x0, t, eps, at=-1)),
        ("wrong index: that uses abar at t + 1; code index t is abar[t]",
         lambda s, x0, t, eps: _q(s, x0, t, eps, at=1)),
        ("the two coefficients are swapped: x_0 gets sqrt(abar), the noise sqrt(1 - abar)",
         lambda s, x0, t, eps: _q(s, x0, t, eps, swap=True)),
        ("that is one step of the chain (beta_t, q_step), not the jump from x_0 (abar_t)",
         lambda s, x0, t, eps: s.q_step(x0, t, eps)),
    )))

_register("ex-forward-why-cosine", ChoiceExercise(
    "what the cosine schedule wins back",
    right=r"the late steps, which the linear schedule spends with $x_t$ already pure noise, so that they "
          r"teach the network little",
    why="The linear schedule spends its last ~175 steps at abar < 1e-3, where x_t is noise for "
        "every digit; the cosine schedule reaches that point only near t = T.",
    wrong=((r"the early steps, which the linear schedule spends with $x_t$ almost equal to $x_0$, so that "
            r"they teach the network little",
            "both schedules start with x_t close to x_0 (beta_1 is tiny in each); the waste is at the end, "
            "where abar < 1e-3"),
           (r"the end point: the linear schedule's $\bar\alpha_T$ stays well above 0, so its $x_T$ still "
            r"holds a trace of the digit",
            "abar_T is about 4e-5 for the linear schedule: x_T is pure noise under both"),
           (r"a cheaper forward process: its $\bar\alpha_t$ has a closed form, so `q_sample` needs no "
            r"cumulative product",
            "q_sample reads abar_t from a table computed once, under either schedule: the cost is the same"))))


# ============================================================================ 2. the bound
def _posterior_variance_mistakes():
    s = _linear()
    b, ab = s.betas, s.alphas_cumprod
    return [("that is the paper's t = 9: t = 10 is code index 9", s.posterior_variance[8]),
            ("that is the paper's t = 11: t = 10 is code index 9", s.posterior_variance[10]),
            ("that is beta_10: beta-tilde multiplies it by (1 - abar_9) / (1 - abar_10)", b[9]),
            ("the ratio is upside down: (1 - abar_{t-1}) / (1 - abar_t), abar_{t-1} on top",
             (1 - ab[9]) / (1 - ab[8]) * b[9]),
            ("that is the posterior's standard deviation: beta-tilde is the variance",
             s.posterior_variance[9].sqrt())]


_register("ex-elbo-posterior-variance", ValueExercise(
    "beta-tilde at t = 10", expected=lambda: _linear().posterior_variance[9],
    mistakes=lambda: _posterior_variance_mistakes(), atol=1e-12))


def _lambda(idx, var: str = "posterior"):
    s = _linear()
    b, ab = s.betas[idx], s.alphas_cumprod[idx]
    sigma2 = s.posterior_variance[idx] if var == "posterior" else b
    return b ** 2 / (2 * sigma2 * (1 - b) * (1 - ab))


_register("ex-elbo-lambda", ValueExercise(
    "lambda_t at t = 2 and t = T (sigma^2 = beta-tilde)",
    expected=lambda: _lambda(torch.tensor([1, 999])),
    mistakes=lambda: [
        ("that is lambda_t for sigma^2 = beta_t: the exercise sets sigma^2 = beta-tilde",
         _lambda(torch.tensor([1, 999]), "beta")),
        ("wrong indices: the paper's t = 2 and t = T are code indices 1 and 999",
         _lambda(torch.tensor([2, 999]))),
        ("wrong index: the paper's t = T is code index 999 (T - 1)",
         _lambda(torch.tensor([1, 998])))]))


def _kl(m1, v1, m2, v2):
    from ...losses import normal_kl
    f = lambda v: torch.tensor(float(v), dtype=torch.float64)           # noqa: E731
    return normal_kl(f(m1), f(math.log(v1)), f(m2), f(math.log(v2)))


_register("ex-elbo-kl", ValueExercise(
    "KL(N(1, 0.25) || N(0, 1))", expected=lambda: _kl(1.0, 0.25, 0.0, 1.0),
    mistakes=lambda: [
        ("that is KL(N(0, 1) || N(1, 0.25)): the KL is not symmetric", _kl(0.0, 1.0, 1.0, 0.25)),
        ("used 0.5 as the variance: 0.5 is the standard deviation, the variance is 0.25",
         _kl(1.0, 0.5, 0.0, 1.0)),
        ("that is in bits: the exercise asks for nats (do not divide by ln 2)",
         _kl(1.0, 0.25, 0.0, 1.0) / math.log(2))]))


def _posterior_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        out.append((s, _images(generator), _images(generator), _steps(s, generator)))
    return out


def _post_mean(s, x0, xt, t, *, prev=-1, sqrt=True, swap=False):
    b = _col(s.betas[t])
    ab, ab_prev = _col(s.alphas_cumprod[t]), _col(s.alphas_cumprod[t + prev])
    root = torch.sqrt if sqrt else (lambda v: v)
    c1 = root(ab_prev) * b / (1 - ab)
    c2 = root(1 - b) * (1 - ab_prev) / (1 - ab)
    if swap:
        c1, c2 = c2, c1
    return c1 * x0 + c2 * xt


_register("ex-elbo-posterior-mean", FunctionExercise(
    "the posterior mean", "my_posterior_mean(schedule, x0, x_t, t) -> mean shaped like x0",
    trials=_posterior_trials,
    reference=lambda s, x0, xt, t: s.q_posterior(x0, xt, t)[0],
    mistakes=(
        ("looks like a missing sqrt: the coefficients have sqrt(abar_{t-1}) and sqrt(alpha_t)",
         lambda s, x0, xt, t: _post_mean(s, x0, xt, t, sqrt=False)),
        ("wrong index: abar_{t-1} is alphas_cumprod[t - 1], that used alphas_cumprod[t]",
         lambda s, x0, xt, t: _post_mean(s, x0, xt, t, prev=0)),
        ("the coefficients are swapped: x_0 gets sqrt(abar_{t-1}) beta_t / (1 - abar_t)",
         lambda s, x0, xt, t: _post_mean(s, x0, xt, t, swap=True)),
    )))

def _v_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        out.append((s, _images(generator), _steps(s, generator), _images(generator)))
    return out


def _x0_from_v(s, x_t, t, v, *, sign=-1.0, **slip):
    """x_0 = sqrt(abar) x_t - sqrt(1 - abar) v: q_sample's combination with the sign flipped (see _q)."""
    return _q(s, x_t, t, v, sign=sign, **slip)


_register("ex-elbo-x0-from-v", FunctionExercise(
    "x_0 from a v-prediction", "my_x0_from_v(schedule, x_t, t, v) -> x0 shaped like x_t",
    trials=_v_trials, reference=lambda s, x_t, t, v: s.predict_x0_from_v(x_t, t, v),
    mistakes=(
        ("the sign: the eps terms cancel in sqrt(abar) x_t - sqrt(1 - abar) v",
         lambda *a: _x0_from_v(*a, sign=1.0)),
        ("the coefficients are swapped: x_t gets sqrt(abar), v gets sqrt(1 - abar)",
         lambda *a: _x0_from_v(*a, swap=True)),
        ("looks like a missing sqrt: the coefficients are sqrt(abar) and sqrt(1 - abar)",
         lambda *a: _x0_from_v(*a, sqrt=False)),
        ("that is eps from v, sqrt(1 - abar) x_t + sqrt(abar) v: the exercise asks for x_0",
         lambda s, x_t, t, v: s.predict_eps_from_v(x_t, t, v)),
        ("wrong index: that uses abar at t - 1; code index t is abar[t]",
         lambda *a: _x0_from_v(*a, at=-1)),
    )))

def _tweedie(s, x_t, t, score, *, var_root=False, sign=1.0, divide=True, at=0):
    abar = _col(s.alphas_cumprod[t + at])
    var = (1 - abar).sqrt() if var_root else 1 - abar
    x0 = x_t + sign * var * score
    return x0 / abar.sqrt() if divide else x0


def _tweedie_reference(s, x_t, t, score):
    eps = -(1 - _col(s.alphas_cumprod[t])).sqrt() * score      # the score view: eps = -sqrt(1 - abar) score
    return s.predict_x0_from_eps(x_t, t, eps)


_register("ex-elbo-tweedie", FunctionExercise(
    "Tweedie's formula: x_0 from the score", "my_tweedie_x0(schedule, x_t, t, score) -> x0 shaped like x_t",
    trials=_v_trials, reference=_tweedie_reference,
    mistakes=(
        ("the score is scaled by the noise's variance 1 - abar, not by its standard deviation",
         lambda *a: _tweedie(*a, var_root=True)),
        ("the sign: the score points towards the data, so x_t + (1 - abar) score",
         lambda *a: _tweedie(*a, sign=-1.0)),
        ("that is sqrt(abar) x_0, the mean of x_t given x_0: divide by sqrt(abar)",
         lambda *a: _tweedie(*a, divide=False)),
        ("wrong index: that uses abar at t - 1; code index t is abar[t]",
         lambda *a: _tweedie(*a, at=-1)),
    )))

_register("ex-elbo-why-eps", ChoiceExercise(
    "why L_simple drops lambda_t",
    right=r"$\lambda_t$ is largest at small $t$; setting it to 1 moves the effort to larger $t$, where the "
          r"digit must be guessed",
    why="lambda_t is tens of times larger at small t; without it the loss spends its effort where "
        "the digit itself must be guessed, and Ho et al. found the samples better.",
    wrong=((r"$\lambda_t$ depends on the reverse variance $\sigma_t^2$, which is learned, so it is not known "
            r"until training ends",
            "with sigma_t^2 fixed to beta_t or beta-tilde, lambda_t has a closed form in the schedule: this "
            "chapter computes it in a line"),
           (r"with every $\lambda_t = 1$ the sum is the exact negative log-likelihood, which is tighter than "
            r"the weighted bound",
            "the weighted sum is the bound; dropping the weights makes it no longer a bound on the "
            "likelihood"),
           (r"with $\sigma_t^2 = \tilde\beta_t$ the $\lambda_t$ are nearly equal over $t$, so setting them "
            r"to 1 changes little",
            "lambda_t varies by orders of magnitude over t (the figure of the weights)"))))


# ============================================================================ 3. the network
def _n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _resblock_params(C: int = 96, D: int = 384) -> int:
    from ...unet import ResBlock
    return _n_params(ResBlock(C, D, dropout=0.0, groups=32))


_register("ex-unet-resblock-params", ValueExercise(
    "parameters of a ResBlock with C = 96, D = 384",
    expected=lambda: _resblock_params(),
    mistakes=lambda: [
        ("forgot the GroupNorms: each has a scale and a shift per channel (4C in all)",
         _resblock_params() - 4 * 96),
        ("forgot the biases: each conv and the projection have C of them",
         _resblock_params() - 3 * 96),
        ("a ResBlock has two 3x3 convolutions, not one", _resblock_params() - 9 * 96 ** 2 - 96),
        ("that is the tutorial preset's 16x16 block (C = 128, D = 256): this one has C = 96, D = 384",
         _resblock_params(128, 256))],
    rtol=0, atol=0))


@lru_cache(maxsize=None)
def _head_input_shape() -> tuple[int, ...]:
    from ...unet import UNet
    net = UNet(base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, attention_resolutions=(),
               num_groups=8)
    seen = {}
    handle = net.out.register_forward_pre_hook(lambda m, args: seen.update(shape=args[0].shape))
    with torch.no_grad():
        net(torch.zeros(4, 1, 32, 32), torch.zeros(4, dtype=torch.long))
    handle.remove()
    return tuple(seen["shape"])


_register("ex-unet-shape", ValueExercise(
    "shape entering the output head", expected=lambda: _head_input_shape(),
    mistakes=lambda: [
        ("that is the first encoder level's width: the last decoder level adds its skip "
         "to half the width from below", (4, 16, 32, 32)),
        ("that is the output's shape: the head maps the last decoder level to 1 channel",
         (4, 1, 32, 32)),
        ("no skip added: C_decoder = C_below / 2 + C_skip at every level", (4, 8, 32, 32)),
        ("C_below was not halved: the transposed convolution halves it", (4, 80, 32, 32))],
    rtol=0, atol=0))


@lru_cache(maxsize=None)
def _attention_bmm_flops(channels: int = 384, res: int = 16, heads: int = 8) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from ...unet import SelfAttention
    layer = SelfAttention(channels, heads, groups=32)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        layer(torch.zeros(1, channels, res, res))
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return ops["aten.bmm"]


_register("ex-unet-attention-flops", ValueExercise(
    "attention products at 16x16, and the factor at 32x32",
    expected=lambda: [_attention_bmm_flops(), _attention_bmm_flops(res=32) / _attention_bmm_flops()],
    mistakes=lambda: [
        ("the factor: at 32x32 L is 4 times larger, and the products grow with L^2",
         [_attention_bmm_flops(), 4]),
        ("one product only: QK^T and (weights)V cost 2 L^2 d each",
         [_attention_bmm_flops() // 2, 16])],
    rtol=0, atol=0))


def _embedding_trials(generator):
    out = []
    for dim in (8, 32, 64):
        out.append((torch.randint(0, 1000, (5,), generator=generator), dim))
    return out


def _emb(t, dim, *, order="cos-sin", denominator=None):
    half = dim // 2
    k = torch.arange(half, dtype=torch.float64)
    freqs = 10000.0 ** (-k / (denominator(half) if denominator else half))
    args = t.double()[:, None] * freqs[None, :]
    cos, sin = torch.cos(args), torch.sin(args)
    if order == "sin-cos":
        return torch.cat([sin, cos], dim=1)
    if order == "interleaved":
        return torch.stack([cos, sin], dim=2).reshape(t.shape[0], dim)
    return torch.cat([cos, sin], dim=1)


def _embedding_reference(t, dim):
    from ...unet import timestep_embedding
    return timestep_embedding(t, dim)


_register("ex-unet-embedding", FunctionExercise(
    "the sinusoidal time embedding", "my_embedding(t, dim) -> (B, dim)",
    trials=_embedding_trials, reference=_embedding_reference,
    mistakes=(
        ("sines first is Ho et al.'s own order, a fine convention; in this book's timestep_embedding "
         "(as in improved-diffusion) the cosines come first, then the sines",
         lambda t, dim: _emb(t, dim, order="sin-cos")),
        ("cos and sin are interleaved: put all the cosines first, then all the sines",
         lambda t, dim: _emb(t, dim, order="interleaved")),
        ("the frequencies: dividing k by d/2 - 1 is Ho et al.'s own spacing, a fine convention; "
         "this book's (improved-diffusion's) is f_k = 10000^(-k / (d/2))",
         lambda t, dim: _emb(t, dim, denominator=lambda h: h - 1)),
        ("the frequencies: f_k = 10000^(-k / (d/2)); that divides k by d",
         lambda t, dim: _emb(t, dim, denominator=lambda h: 2 * h)),
    ), rtol=1e-4, atol=1e-3))

_register("ex-unet-why-skips", ChoiceExercise(
    "why the decoder concatenates the skips",
    right=r"the bottom level sees a few pixels; the skips bring each resolution's detail back, so "
          r"$\epsilon$ fits pixel by pixel",
    why="The bottom level sees the image in a few pixels; the skips carry each resolution's detail "
        "across, so eps can be right pixel by pixel.",
    wrong=((r"they let the decoder reuse what the encoder computed at each level, so the decoder needs "
            r"fewer parameters and FLOPs",
            "the skips add parameters and FLOPs (the decoder is wider), they do not save them"),
           (r"they carry the time embedding to the decoder, which would otherwise not know how much noise "
            r"$x_t$ holds",
            "t enters through the time embedding in every ResBlock, not through the skips"),
           (r"they set the decoder's output size: without them the upsampling could not return to the "
            r"input's $32 \times 32$",
            "the output has the input's shape because of the decoder's upsampling and the head, with or "
            "without skips"))))


# ============================================================================ 4. training
@lru_cache(maxsize=None)
def _n_training_digits() -> int:
    from ...data import load_dataset
    return len(load_dataset("mnist-sample"))


_register("ex-training-epochs", ValueExercise(
    "passes over the data", expected=lambda: 40_000 * 64 / _n_training_digits(),
    mistakes=lambda: [
        ("upside down: divide the images seen by the number of digits", _n_training_digits() / (40_000 * 64)),
        ("forgot the batch size: each step sees 64 digits", 40_000 / _n_training_digits()),
        ("the training set has 9,000 digits (the other 1,000 are held out)", 40_000 * 64 / 10_000)],
    rtol=1e-3))


def _ema_weight(decay: float, n: int = 1000) -> float:
    from ...ema import EMA
    probe = EMA(torch.nn.Linear(1, 1, bias=False), decay=decay)
    weight = 1.0
    for _ in range(n):
        weight *= probe.current_decay()
        probe.num_updates += 1
    return weight


_register("ex-training-ema", ValueExercise(
    "weight of the initial weights after 1000 updates", expected=lambda: _ema_weight(0.999),
    mistakes=lambda: [
        ("that is a fixed decay of 0.9999, without the warm-up", 0.9999 ** 1000),
        ("that is a fixed decay of 0.999, without the warm-up", 0.999 ** 1000),
        ("one factor short: multiply the 1000 decays d_0 .. d_999", _ema_weight(0.999, 999))],
    rtol=1e-6, atol=1e-300))


def _losses_at(model, schedule, x0, noise, idx):
    from ...losses import ddpm_loss
    with torch.no_grad():
        return [ddpm_loss(model, schedule, x0, t=torch.full((x0.shape[0],), i, device=x0.device),
                          noise=noise).item() for i in idx]


_register("ex-training-loss-by-t", ValueExercise(
    "mean loss at t = 10, 100, 900",
    expected=lambda model, schedule, x0, noise: _losses_at(model, schedule, x0, noise, (9, 99, 899)),
    mistakes=lambda model, schedule, x0, noise: [
        ("wrong indices: the paper's t = 10, 100, 900 are code indices 9, 99, 899",
         _losses_at(model, schedule, x0, noise, (10, 100, 900))),
        ("the order: t = 10 first, then 100, then 900",
         _losses_at(model, schedule, x0, noise, (899, 99, 9)))],
    inputs=("model", "schedule", "x0", "noise")))


def _standin_model(x, t):
    """A fixed noise predictor for the checks: no weights, depends on x and t."""
    return 0.3 * x + 0.002 * _col(t.to(x.dtype)) - 0.1


def _loss_trials(generator):
    out = []
    for reduction in ("mean", "none", "mean"):
        s = _short_schedule(generator)
        x0 = _images(generator)
        t = torch.randint(0, s.T, (6,), generator=generator)
        out.append((_standin_model, s, x0, t, _images(generator), reduction))
    return out


def _loss_reference(model, s, x0, t, noise, reduction):
    from ...losses import ddpm_loss
    return ddpm_loss(model, s, x0, t=t, noise=noise, reduction=reduction)


def _loss_variant(model, s, x0, t, noise, reduction, *, target="noise", sqrt=True, reduce="mean",
                  model_input="x_t"):
    abar = _col(s.alphas_cumprod[t])
    a, b = (abar.sqrt(), (1 - abar).sqrt()) if sqrt else (abar, 1 - abar)
    x_t = a * x0 + b * noise
    eps = model(x_t if model_input == "x_t" else x0, t)
    err = (eps - (noise if target == "noise" else x0)) ** 2
    per = err.flatten(1).sum(1) if reduce == "sum" else err.flatten(1).mean(1)
    if reduce == "no-flat" and reduction == "none":
        return err
    return per.mean() if reduction == "mean" else per


_register("ex-training-loss", FunctionExercise(
    "L_simple", "my_loss(model, schedule, x0, t, noise, reduction) -> () or (B,)",
    trials=_loss_trials, reference=_loss_reference,
    mistakes=(
        ("with reduction='none' return one loss per image, shape (B,): average over C, H, W",
         lambda *a: _loss_variant(*a, reduce="no-flat")),
        ("summed over the pixels: L_simple averages the squared error over C, H, W",
         lambda *a: _loss_variant(*a, reduce="sum")),
        ("compared the prediction with x_0: the network predicts the noise",
         lambda *a: _loss_variant(*a, target="x0")),
        ("looks like a missing sqrt in x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps",
         lambda *a: _loss_variant(*a, sqrt=False)),
        ("the model was given x_0: it must see the noisy x_t",
         lambda *a: _loss_variant(*a, model_input="x0")),
    ), rtol=1e-4, atol=1e-6))


_register("ex-training-why-ema", ChoiceExercise(
    "why sample with the EMA of the weights",
    right=r"one minibatch's gradient is noisy, so the raw weights jitter around a good solution; their "
          r"average is closer to it",
    why="Each step follows one minibatch's noisy gradient, so the raw weights jitter around a good "
        "solution; their average over the last ~1/(1 - d) steps sits closer to it.",
    wrong=((r"the gradient is computed at the EMA weights, so the EMA is the set of weights that the loss "
            r"has actually trained",
            "the gradient is computed at the raw weights; the EMA never enters the loss"),
           (r"the EMA damps each optimiser step, which allows a larger learning rate and so makes training "
            r"converge in fewer steps",
            "the optimiser never sees the EMA: the raw weights come out the same with or without it, so it "
            "cannot speed training up"),
           (r"the raw weights keep changing while the model samples; the EMA is a frozen copy saved when "
            r"training stopped",
            "once training stops the raw weights do not change either; the question is which of the two "
            "sets denoises better"))))


# ============================================================================ 5. sampling
def _sigmas(idx: int = 9, order=("beta", "posterior"), root: bool = True):
    s = _linear()
    v = torch.stack([s.model_variance(k)[0][idx] for k in order])
    return v.sqrt() if root else v


_register("ex-sampling-sigma", ValueExercise(
    "sigma_10 for beta and posterior", expected=lambda: _sigmas(),
    mistakes=lambda: [
        ("those are the variances sigma^2: take their square roots", _sigmas(root=False)),
        ("the order: [sigma for beta, sigma for beta-tilde]", _sigmas(order=("posterior", "beta"))),
        ("that is the paper's t = 11: t = 10 is code index 9", _sigmas(idx=10)),
        ("that is the paper's t = 9: t = 10 is code index 9", _sigmas(idx=8))]))


def _x0hat(schedule, x_t, eps, *, idx=499, sqrt=True, sign=-1.0):
    abar = schedule.alphas_cumprod[idx].item()
    a, b = (math.sqrt(abar), math.sqrt(1 - abar)) if sqrt else (abar, 1 - abar)
    return (x_t + sign * b * eps) / a


_register("ex-sampling-x0hat", ValueExercise(
    "x0_hat at t = 500",
    expected=lambda schedule, x_t, eps: schedule.predict_x0_from_eps(
        x_t, torch.full((x_t.shape[0],), 499, device=x_t.device), eps),
    mistakes=lambda schedule, x_t, eps: [
        ("looks like a missing sqrt: x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)",
         _x0hat(schedule, x_t, eps, sqrt=False)),
        ("the sign: subtract the noise, x_t - sqrt(1 - abar) eps", _x0hat(schedule, x_t, eps, sign=1)),
        ("that is the paper's t = 501: t = 500 is code index 499", _x0hat(schedule, x_t, eps, idx=500))],
    atol=1e-5, inputs=("schedule", "x_t", "eps")))


def _count_calls(N: int, K: int, C: int) -> tuple[int, int]:
    from ...sampling import ddpm_sample
    seen = []

    def counting(x, t):
        seen.append(x.shape[0])
        return torch.zeros_like(x)

    ddpm_sample(counting, _linear(), (N, 1, 2, 2), seed=0, steps=K, chunk_size=C)
    return len(seen), sum(seen)


@lru_cache(maxsize=None)
def _calls_100_250_64() -> tuple[int, int]:
    return _count_calls(100, 250, 64)


_register("ex-sampling-calls", ValueExercise(
    "network calls and images for N=100, K=250, C=64",
    expected=lambda: _calls_100_250_64(),
    mistakes=lambda: [
        ("one call per step is too few: a step runs the images in chunks of 64", (250, 25_000)),
        ("chunks are whole calls: 100 images need ceil(100 / 64) = 2 of them", (390, 25_000)),
        ("the last chunk holds only the 36 images left, not 64", (500, 32_000))],
    rtol=0, atol=0))


def _step_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        out.append((s, _images(generator), _steps(s, generator), _images(generator),
                    _images(generator)))
    return out


def _reverse_reference(s, x_t, t, eps, z):
    out = s.p_mean_variance(lambda x, tt: eps, x_t, t, variance="beta", clip_denoised=False)
    return out["mean"] + out["variance"].sqrt() * z


def _reverse_variant(s, x_t, t, eps, z, *, at=0, alpha_root=True, abar_root=True, noise="sqrt",
                     prefactor="alpha"):
    b, ab = _col(s.betas[t + at]), _col(s.alphas_cumprod[t + at])
    alpha = 1 - b
    pre = ab if prefactor == "abar" else alpha
    pre = pre.sqrt() if alpha_root else pre
    denom = (1 - ab).sqrt() if abar_root else 1 - ab
    mean = (x_t - b / denom * eps) / pre
    sigma = {"sqrt": b.sqrt(), "none": 0 * b, "beta": b, "minus": -b.sqrt(),
             "posterior": _col(s.posterior_variance[t]).sqrt()}[noise]
    return mean + sigma * z


_register("ex-sampling-step", FunctionExercise(
    "one ancestral step", "my_reverse_step(schedule, x_t, t, eps, z) -> x_{t-1}",
    trials=_step_trials, reference=_reverse_reference,
    mistakes=(
        ("looks like a missing sqrt: divide by sqrt(alpha_t), not alpha_t",
         lambda *a: _reverse_variant(*a, alpha_root=False)),
        ("looks like a missing sqrt: eps is scaled by beta_t / sqrt(1 - abar_t)",
         lambda *a: _reverse_variant(*a, abar_root=False)),
        ("the prefactor is 1 / sqrt(alpha_t), one step's alpha, not 1 / sqrt(abar_t)",
         lambda *a: _reverse_variant(*a, prefactor="abar")),
        ("forgot the noise: add sigma_t z", lambda *a: _reverse_variant(*a, noise="none")),
        ("the noise is scaled by beta_t: sigma_t is its square root",
         lambda *a: _reverse_variant(*a, noise="beta")),
        ("the sign of sigma_t z is flipped", lambda *a: _reverse_variant(*a, noise="minus")),
        ("that uses sigma^2 = beta-tilde: the exercise asks for sigma^2 = beta_t",
         lambda *a: _reverse_variant(*a, noise="posterior")),
        ("wrong index: that uses beta and abar at t - 1; code index t is betas[t]",
         lambda *a: _reverse_variant(*a, at=-1)),
    )))

_register("ex-sampling-why-noise", ChoiceExercise(
    "why each step adds fresh noise",
    right=r"$p_\theta(x_{t-1} \mid x_t)$ is a Gaussian, not a point: its mean averages many digits, and a "
          r"chain of means is blurry",
    why="p(x_{t-1} | x_t) is a Gaussian with variance sigma_t^2: its mean alone is an average of "
        "many digits, and a chain of means drifts to blurry, too-smooth images.",
    wrong=((r"the noise makes the samples depend on the seed, so that one model and one seed always give "
            r"the same set of images",
            "without the noise the step is deterministic, reproducible with no seed at all"),
           (r"the noise dithers the pixel values, which hides the 8-bit rounding of the digits the network "
            r"was trained on",
            "the noise is there in every step, not only the last one (which adds none): it is not dither"),
           (r"the noise cancels the error of the network's $\epsilon$ prediction, which would otherwise "
            r"build up over the steps",
            "sigma_t z does not cancel the network's error; it samples the step's spread"))))


# ============================================================================ 6. DDIM
def _ddim_loop(model, schedule, x_T, *, timestep="map", clamp=True, last=-1):
    from ...sampling import ddim_step
    ten = schedule.respace(10)
    x = x_T
    with torch.no_grad():
        for j in range(ten.T - 1, -1, -1):
            t = torch.full((x.shape[0],), j, device=x.device)
            t_model = ten.timestep_map[t] if timestep == "map" else t
            t_prev = t - 1 if j > 0 else torch.full_like(t, last)
            if j == 0 and last == 0:
                break
            x = ddim_step(ten, x, t, t_prev, model(x, t_model))
    return x.clamp(-1, 1) if clamp else x


def _ddim_sample_10(model, schedule, x_T):
    from ...sampling import ddim_sample
    return ddim_sample(model, schedule, x_T.shape, steps=10, x_T=x_T)


_register("ex-ddim-loop", ValueExercise(
    "a 10-step DDIM loop",
    expected=lambda model, schedule, x_T: _ddim_sample_10(model, schedule, x_T),
    mistakes=lambda model, schedule, x_T: [
        ("the model takes the original timestep ten.timestep_map[t], not the index t",
         _ddim_loop(model, schedule, x_T, timestep="index")),
        ("clamp the result to [-1, 1] as ddim_sample does", _ddim_loop(model, schedule, x_T,
                                                                       clamp=False)),
        ("the loop stops early: index 0 still steps, to t_prev = -1",
         _ddim_loop(model, schedule, x_T, last=0))],
    atol=1e-4, inputs=("model", "schedule", "x_T")))


def _budget(steps: int = 20, key: str = "frechet", ddof: int = 1, per_seed: bool = True,
            sign: float = 1.0) -> tuple[float, float]:
    """DDIM (eta 0) minus DDPM at ``steps`` steps on ``key``: the difference of the means over seeds
    and its standard error sqrt(s_a^2 / n_a + s_b^2 / n_b), from the rows of sampler_quality.json."""
    import json
    from ..results import SAMPLER_QUALITY
    rows = json.loads(SAMPLER_QUALITY.read_text())["rows"]
    values = {name: np.array([r[key] for r in rows if r["sampler"] == name and r["steps"] == steps])
              for name in ("ddim-eta0", "ddpm")}
    a, b = values["ddim-eta0"], values["ddpm"]
    n_a, n_b = (len(a), len(b)) if per_seed else (1, 1)
    se = math.sqrt(a.var(ddof=ddof) / n_a + b.var(ddof=ddof) / n_b)
    return sign * float(a.mean() - b.mean()), se


_register("ex-perf-mfu", ValueExercise(
    "MFU at 14,000 images/s",
    expected=lambda gflop: 3 * gflop * 1e9 * 14_000 / 989e12,
    mistakes=lambda gflop: [
        ("a training step costs three forward passes (one forward, a backward of about two)",
         gflop * 1e9 * 14_000 / 989e12),
        ("the peak is 989 TFLOP/s = 989e12 FLOP/s, and GFLOP means 1e9 FLOP", 3 * gflop * 14_000 / 989),
        ("MFU is a fraction of the peak (0.5 for half), not a percentage", 300 * gflop * 1e9 * 14_000 / 989e12)],
    rtol=1e-3, inputs=("gflop",)))

_register("ex-perf-hours", ValueExercise(
    "hours for 10,000 samples", expected=lambda: [10_000 / 0.13 / 3600, 10_000 / 60 / 3600],
    mistakes=lambda: [
        ("hours, not seconds: divide by 3,600", [10_000 / 0.13, 10_000 / 60]),
        ("hours, not minutes: divide by 3,600, not 60", [10_000 / 0.13 / 60, 10_000 / 60 / 60]),
        ("time = images / (images per second), not the product", [10_000 * 0.13 / 3600, 10_000 * 60 / 3600])],
    rtol=1e-3))


_register("ex-ddim-budget", ValueExercise(
    "DDIM against DDPM at 20 steps", expected=lambda: _budget(),
    mistakes=lambda: [
        ("the sign: DDIM's mean minus DDPM's (negative when DDIM's distance is lower)",
         _budget(sign=-1.0)),
        ("the standard deviation over 3 seeds divides by n - 1 = 2 (the sample standard "
         "deviation), not by n", _budget(ddof=0)),
        ("that is the spread of one seed's difference: the standard error of a mean of n seeds "
         "divides each variance by n", _budget(per_seed=False)),
        ("that is the confident share; the question asks for the Frechet distance",
         _budget(key="confident"))],
    rtol=1e-3))


def _ddim_trials(generator):
    out = []
    for _ in range(3):
        s = _short_schedule(generator)
        t = torch.randint(5, s.T, (6,), generator=generator)
        gap = torch.randint(1, 5, (6,), generator=generator)
        out.append((s, _images(generator), t, t - gap, _images(generator)))
    return out


def _ddim_variant(s, x_t, t, t_prev, eps, *, x0_root=True, prev_root=True, use="prev", sign=1.0):
    ab, ab_prev = _col(s.alphas_cumprod[t]), _col(s.alphas_cumprod[t_prev])
    if use == "t":
        ab_prev = ab
    root = torch.sqrt if x0_root else (lambda v: v)
    x0 = (x_t - root(1 - ab) * eps) / root(ab)
    root = torch.sqrt if prev_root else (lambda v: v)
    return root(ab_prev) * x0 + sign * root(1 - ab_prev) * eps


def _ddim_reference(s, x_t, t, t_prev, eps):
    from ...sampling import ddim_step
    return ddim_step(s, x_t, t, t_prev, eps, eta=0.0, clip_denoised=False)


_register("ex-ddim-step", FunctionExercise(
    "one DDIM step (eta = 0)", "my_ddim_step(schedule, x_t, t, t_prev, eps) -> x_prev",
    trials=_ddim_trials, reference=_ddim_reference,
    mistakes=(
        ("looks like a missing sqrt in x0_pred = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)",
         lambda *a: _ddim_variant(*a, x0_root=False)),
        ("looks like a missing sqrt: x_prev = sqrt(abar_prev) x0_pred + sqrt(1 - abar_prev) eps",
         lambda *a: _ddim_variant(*a, prev_root=False)),
        ("that gives x_t back: the new point uses abar at t_prev, not at t",
         lambda *a: _ddim_variant(*a, use="t")),
        ("the sign of the direction term: + sqrt(1 - abar_prev) eps",
         lambda *a: _ddim_variant(*a, sign=-1.0)),
    )))

def _invert_standin(x, t):
    """A stand-in eps network that depends on the timestep it is told, so a wrong one shows."""
    return 0.4 * x + 0.003 * t.to(x.dtype).reshape(-1, 1, 1, 1)


def _invert_trials(generator):
    out = []
    for steps in (5, 3, 8):
        s = _short_schedule(generator)
        out.append((_invert_standin, s, _images(generator).clamp(-1, 1), steps))
    return out


def _invert_reference(eps_model, schedule, x0, steps):
    from ...sampling import ddim_invert
    return ddim_invert(eps_model, schedule, x0, steps, device="cpu")


def _invert_variant(eps_model, schedule, x0, steps, *, timestep="end", first="one"):
    s = schedule.respace(steps)
    abar = s.alphas_cumprod
    x = x0
    for j in range(s.T):
        t = torch.full((x.shape[0],), j if timestep != "start" else max(j - 1, 0))
        eps = eps_model(x, t if timestep == "index" else s.timestep_map[t])
        a_from = abar[j - 1] if (j > 0 or first == "wrap") else torch.ones_like(abar[0])
        x0_pred = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
        x = abar[j].sqrt() * x0_pred + (1 - abar[j]).sqrt() * eps
    return x


_register("ex-ddim-invert", FunctionExercise(
    "DDIM inversion", "my_ddim_invert(eps_model, schedule, x0, steps) -> x_T shaped like x0",
    trials=_invert_trials, reference=_invert_reference,
    mistakes=(
        ("the network is told the timestep of the step's end, timestep_map[j] (the one sampling "
         "uses for the same step), not of its start",
         lambda *a: _invert_variant(*a, timestep="start")),
        ("the model takes the original timestep schedule.respace(steps).timestep_map[j], not the "
         "index j", lambda *a: _invert_variant(*a, timestep="index")),
        ("the first step starts from the clean image, abar = 1: alphas_cumprod[j - 1] at j = 0 "
         "is the last entry, abar at T", lambda *a: _invert_variant(*a, first="wrap")),
    )))

_register("ex-ddim-why-no-retraining", ChoiceExercise(
    "why DDIM needs no new training",
    right=r"the DDPM loss involves only the marginals $q(x_t \mid x_0)$, and DDIM's process keeps every one "
          r"of them",
    why="L_simple involves only the marginals q(x_t | x_0), and DDIM's family keeps every one of "
        "them: the same eps-predictor is optimal for it.",
    wrong=((r"DDIM's network predicts $x_0$ instead of the noise, and an $x_0$-predictor can be read off "
            r"any $\epsilon$-predictor",
            "the network still predicts the noise; DDIM turns it into x0_pred by a formula, as DDPM does"),
           (r"DDIM is deterministic at $\eta = 0$, and a sampler without noise has no variance that would "
            r"need to be learned",
            "eta = 1 adds noise and uses the same network: determinism is not the reason"),
           (r"DDIM takes the same steps as DDPM's ancestral sampler, only with the noise term "
            r"$\sigma_t z$ set to zero",
            "DDIM's steps are not DDPM's: they skip timesteps, and its update is not DDPM's mean"))))


# ============================================================================ 7. guidance
def _fake_conditional(x, t, y):
    given = (y < 10).view(-1, 1, 1, 1)
    return torch.where(given, 2 * x, x - 1)


_fake_conditional.num_classes = 10


def _guidance_trials(generator):
    out = []
    for w in (2.5, 0.0, 1.0, 0.7):
        x = _images(generator, (5, 1, 4, 4))
        out.append((2 * x, x - 1, w))
    return out


def _guidance_reference(eps_cond, eps_uncond, w):
    from ...sampling import guided
    x = eps_cond / 2                             # the stand-in network: cond 2x, uncond x - 1
    y = torch.tensor([1, 3, 3, 7, 9])
    return guided(_fake_conditional, y, w)(x, torch.zeros(5, dtype=torch.long))


_register("ex-cond-guidance", FunctionExercise(
    "the guided eps", "guide(eps_cond, eps_uncond, w) -> eps shaped like eps_cond",
    trials=_guidance_trials, reference=_guidance_reference,
    mistakes=(
        ("that is Ho and Salimans' convention, (1 + w) eps_cond - w eps_uncond: ddpm_lib's w = 1 "
         "is the conditional model", lambda c, u, w: (1 + w) * c - w * u),
        ("the roles are swapped: start from eps_uncond and move towards eps_cond",
         lambda c, u, w: c + w * (u - c)),
        ("forgot the unconditional prediction: eps_uncond + w (eps_cond - eps_uncond)",
         lambda c, u, w: w * c),
    )))


def _classifier_trials(generator):
    out = []
    for w in (2.5, 0.5, 4.0):
        abar = 0.05 + 0.9 * torch.rand(6, generator=generator, dtype=torch.float64)
        out.append((_images(generator), _images(generator), abar, w))
    return out


def _classifier_reference(eps_uncond, grad_log_py, abar_t, w, *, sign=1.0, scale="sd"):
    """Bayes' rule on scores, tilted: score = score_uncond + w grad log p(y | x_t), and
    eps = -sqrt(1 - abar) score (chapter 2), so score_uncond = -eps_uncond / sqrt(1 - abar)."""
    sd = _col((1 - abar_t).sqrt())
    score = -eps_uncond / sd + sign * w * grad_log_py
    if scale == "sd":
        return -sd * score
    factor = {"none": 1.0, "variance": sd ** 2}[scale]
    return eps_uncond - sign * w * factor * grad_log_py


_register("ex-cond-classifier", FunctionExercise(
    "guidance with a classifier's gradient",
    "classifier_guided(eps_uncond, grad_log_py, abar_t, w) -> eps shaped like eps_uncond",
    trials=_classifier_trials, reference=_classifier_reference,
    mistakes=(
        ("the sign: eps is minus sqrt(1 - abar) times the score, so the classifier's gradient is "
         "subtracted", lambda *a: _classifier_reference(*a, sign=-1.0)),
        ("a score becomes a noise prediction times sqrt(1 - abar_t): the gradient needs that factor",
         lambda *a: _classifier_reference(*a, scale="none")),
        ("that factor is sqrt(1 - abar_t), the noise's standard deviation, not its variance",
         lambda *a: _classifier_reference(*a, scale="variance")),
    )))


def _guidance_for_paper(w_paper: float) -> float:
    """The w of ``guided`` that gives the paper's (1 + w') eps_c - w' eps_u, solved from guided."""
    from ...sampling import guided
    x = torch.linspace(0.1, 1, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    y, t = torch.tensor([3]), torch.zeros(1, dtype=torch.long)
    g0, g1 = (guided(_fake_conditional, y, w)(x, t) for w in (0.0, 1.0))
    paper = (1 + w_paper) * (2 * x) - w_paper * (x - 1)
    return float(((paper - g0) / (g1 - g0)).mean())         # guided is linear in w


_register("ex-cond-convention", ValueExercise(
    "ddpm_lib's w for w' = 0.3", expected=lambda: _guidance_for_paper(0.3),
    mistakes=lambda: [
        ("that is w' itself: ddpm_lib's w = 1 is the conditional model, the paper's w' = 0", 0.3),
        ("the sign: w = 1 + w', not 1 - w'", 0.7)]))


_register("ex-cond-why-dropout", ChoiceExercise(
    "why drop labels in training",
    right=r"guidance needs $\epsilon_\theta(x_t, t)$ without a label beside the labelled one; dropout "
          r"trains one network for both",
    why="Guidance needs eps without a label beside eps with one; label dropout trains the same "
        "network to give both, so no second model is needed.",
    wrong=((r"it regularises the label embedding, so that the network does not overfit the ten classes of "
            r"the training set",
            "that is not its purpose: with label_dropout = 0 the network never learns the 'no label' "
            "row, and guidance has no eps_uncond to subtract"),
           (r"some training labels are wrong, and dropping one in ten at random limits how much a wrong "
            r"label can teach",
            "dropping is random: right and wrong labels are dropped alike"),
           (r"an image without a label skips the class embedding, which makes one training step in ten "
            r"cheaper to compute",
            "every image costs the same forward pass; a label only adds one vector to the time "
            "embedding"))))


# ============================================================================ 8. ODE samplers
def _toy_denoiser(x, sigma):
    """A fixed x_0 prediction D(x~; sigma) for the checks: no weights, nonlinear in x and in sigma."""
    return torch.tanh(x) / (1 + 0.3 * sigma ** 2) + 0.05 * sigma


def _heun_trials(generator):
    out = []
    for last in (False, False, False, True):                     # the last trial steps to sigma = 0
        sigma = float(0.5 + 4.5 * torch.rand((), generator=generator, dtype=torch.float64))
        ratio = float(0.3 + 0.6 * torch.rand((), generator=generator, dtype=torch.float64))
        out.append((_toy_denoiser, _images(generator), sigma, 0.0 if last else sigma * ratio))
    return out


def _heun_reference(denoise, x, sigma, sigma_next):
    from ...ode import heun_step
    return heun_step(denoise, x, sigma, sigma_next)


def _heun_variant(denoise, x, sigma, sigma_next, *, end_at="euler", combine="average"):
    h = sigma_next - sigma
    d = (x - denoise(x, sigma)) / sigma
    x_e = x + h * d
    if sigma_next == 0:
        return x_e
    at = x_e if end_at == "euler" else x
    d_next = (at - denoise(at, sigma_next)) / sigma_next
    slope = {"average": 0.5 * (d + d_next), "sum": d + d_next, "end": d_next}[combine]
    return x + h * slope


_register("ex-ode-heun-step", FunctionExercise(
    "one Heun step", "my_heun_step(denoise, x, sigma, sigma_next) -> x at sigma_next",
    trials=_heun_trials, reference=_heun_reference,
    mistakes=(
        ("that is Euler's step (DDIM) alone: add the corrector with the slope at the end",
         lambda den, x, s, sn: _heun_reference(den, x, s, sn) if sn == 0 else
         x + (sn - s) * (x - den(x, s)) / s),
        ("the slope at the end is taken at the Euler point x_e = x + h d, not at x",
         lambda *a: _heun_variant(*a, end_at="start")),
        ("the two slopes are averaged, (d + d') / 2, not added",
         lambda *a: _heun_variant(*a, combine="sum")),
        ("the step uses the average of the two slopes, not the slope at the end alone",
         lambda *a: _heun_variant(*a, combine="end")),
    )))

_register("ex-ode-why-2m", ChoiceExercise(
    "second order at one call a step",
    right=r"it keeps the previous step's $x_0$ prediction and extrapolates $D$ across the step from the "
          r"two of them",
    why="A multistep method: the previous step's x_0 prediction is free, and the line through it and "
        "the current one estimates how D changes over the step, which is what the second order needs.",
    wrong=((r"it calls the network twice per step, as Heun does, but at half the resolution, so that each "
            r"call costs half",
            "every call is the whole network on the whole image; the solver makes one call a step"),
           (r"its steps are uniform in log-SNR, and on that grid Euler's method is already accurate to "
            r"second order",
            "the spacing does not change the order: DDIM stays first order on any grid; the second order "
            "comes from the extrapolated x_0"),
           (r"it solves the linear part of the ODE exactly, and with that part gone the network's $x_0$ "
            r"term is constant",
            "the exact linear part is why its first-order version is DDIM; x_0 still changes along the "
            "path, and the 2M step models that change with the previous prediction"))))
