"""Automatic checks for the book's exercises, keyed by the exercise's label (the engine; each chapter's keys are a
module of this package, e.g. forward.py for chapter 1, registered when one of its labels is first looked up, and
their prose is a YAML file, e.g. text/forward.yaml, joined with the module's functions by register_chapter).

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

import functools
import importlib
import inspect
import random
import textwrap
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Mapping

import numpy as np
import torch
import yaml

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


# Each chapter's keys are a module of this package, imported (and so registered) when one of its labels
# is first looked up: ex-<prefix>-<name> is in the module CHAPTERS[prefix].
CHAPTERS = {"forward": "forward", "elbo": "elbo", "unet": "unet", "training": "training", "sampling": "sampling",
            "ddim": "ddim", "cond": "conditional", "ode": "ode", "perf": "performance"}


class Registry(Mapping):
    """Every exercise by its label, its chapter's module imported on first use: looking a label up loads
    that label's chapter; iterating (or ``len``) loads them all."""

    def __init__(self):
        self._found: dict[str, ValueExercise | FunctionExercise | ChoiceExercise] = {}

    def _load(self, label: str | None = None) -> None:
        if label is None:
            modules = CHAPTERS.values()
        else:
            prefix = label.split("-")[1] if isinstance(label, str) and label.count("-") >= 2 else None
            modules = [CHAPTERS[prefix]] if prefix in CHAPTERS else []
        for module in modules:
            importlib.import_module(f"{__package__}.{module}")

    def __getitem__(self, label: str):
        if label not in self._found:
            self._load(label)
        return self._found[label]

    def __contains__(self, label) -> bool:
        if label not in self._found:
            self._load(label)
        return label in self._found

    def __iter__(self):
        self._load()
        return iter(self._found)

    def __len__(self) -> int:
        self._load()
        return len(self._found)


EXERCISES = Registry()


def _register(label: str, exercise) -> None:
    if label in EXERCISES._found:
        raise ValueError(f"exercise {label!r} registered twice")
    EXERCISES._found[label] = exercise


# ---------------------------------------------------------------------------- a chapter: its prose and its code
TEXT = resources.files(__package__).joinpath("text")       # text/<chapter>.yaml: each chapter's prose


class ExerciseTextError(ValueError):
    """A chapter's YAML (text/<chapter>.yaml) and its module's functions do not fit together."""


class _Loader(yaml.SafeLoader):
    """yaml.safe_load's loader, except that a key given twice in a mapping (a label written twice) is an error."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        twice = sorted({str(k) for k in keys if keys.count(k) > 1})
        if twice:
            raise ExerciseTextError(f"{', '.join(twice)} given twice (line {node.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


# the fields each kind takes from the YAML, and the functions from its chapter's module: (required, optional)
_FIELDS = {ValueExercise: (("title",), ("mistakes", "rtol", "atol")),
           FunctionExercise: (("title", "signature"), ("mistakes", "rtol", "atol")),
           ChoiceExercise: (("title", "right", "why", "wrong"), ())}
_FUNCTIONS = {ValueExercise: (("expected",), ("variant", "inputs")),
              FunctionExercise: (("trials", "reference"), ("variant",)), ChoiceExercise: ((), ())}


def register_chapter(chapter: str, functions: Mapping[str, Mapping[str, Any]]) -> None:
    """Register the exercises of ``text/<chapter>.yaml``, each joined with its computations.

    The YAML holds each label's prose: its title, a function exercise's signature, tolerances other than the
    default, the mistakes in the order they are tried (``why``, the message, with ``variant``, the keyword
    arguments of the exercise's variant function that reproduce the slip, or ``value``, a wrong value written
    out), and a multiple-choice question whole (``right``, ``why``, ``wrong``: a list of ``option``, ``why``).
    ``functions[label]`` holds the code: a value exercise's ``expected`` (and ``inputs``, the names of its
    inputs), a function exercise's ``trials`` and ``reference``, and the ``variant`` of either; a question
    has none. A mistake is ``variant(*args, **kw)`` on a trial's arguments, or ``variant(**inputs, **kw)``,
    computed when a wrong answer is diagnosed. Anything that does not fit raises :class:`ExerciseTextError`,
    one line naming the file and the label.
    """
    where = f"ddpm_lib/book/exercises/text/{chapter}.yaml"
    try:
        text = yaml.load(TEXT.joinpath(f"{chapter}.yaml").read_text("utf-8"), Loader=_Loader)
    except (ExerciseTextError, yaml.YAMLError, OSError) as error:
        raise ExerciseTextError(f"{where}: {' '.join(str(error).split())}") from None
    if not isinstance(text, dict):
        raise ExerciseTextError(f"{where}: not a mapping from labels to exercises")
    for label in functions:
        if label not in text:
            raise ExerciseTextError(f"{where}: {label}: has functions in the chapter's module but no entry here")
    built = {}
    for label, entry in text.items():                  # all or none: a chapter that fails registers nothing
        try:
            built[label] = _build(entry, dict(functions.get(label, {})))
            if label in EXERCISES._found:
                raise ValueError("registered twice")
        except ValueError as error:
            raise ExerciseTextError(f"{where}: {label}: {error}") from None
    for label, exercise in built.items():
        _register(label, exercise)


def _build(entry: Any, code: dict):
    """One exercise from its YAML ``entry`` and its ``code``; ValueError says what does not fit."""
    if not isinstance(entry, dict):
        raise ValueError("not a mapping of fields")
    kind = (ChoiceExercise if "right" in entry else FunctionExercise if "signature" in entry or "trials" in code
            else ValueExercise)
    if kind is not ChoiceExercise and not code:
        raise ValueError("no functions in the chapter's module")
    for given, (required, optional), what in ((entry, _FIELDS[kind], "field"), (code, _FUNCTIONS[kind], "function")):
        if set(required) - set(given):
            raise ValueError(f"a {kind.__name__} needs the {what} {', '.join(sorted(set(required) - set(given)))}")
        if set(given) - set(required) - set(optional):
            unknown = ", ".join(sorted(map(str, set(given) - set(required) - set(optional))))
            raise ValueError(f"a {kind.__name__} takes no {what} {unknown}")
    for field in ("title", "signature", "right", "why"):
        if field in entry and not isinstance(entry[field], str):
            raise ValueError(f"{field} is not text")
    if kind is ChoiceExercise:
        wrong = entry["wrong"]
        if not isinstance(wrong, list) or not all(isinstance(w, dict) and set(w) == {"option", "why"} for w in wrong):
            raise ValueError("wrong is not a list of {option, why}")
        return ChoiceExercise(entry["title"], right=entry["right"], why=entry["why"],
                              wrong=tuple((w["option"], w["why"]) for w in wrong))
    tolerances = {k: entry[k] for k in ("rtol", "atol") if k in entry}
    for name, value in tolerances.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} is not a number: {value!r} (YAML reads 1e-5 as text; write 1.0e-5)")
    variant, mistakes = code.get("variant"), _mistakes(entry.get("mistakes", []), code.get("variant"), kind)
    if kind is FunctionExercise:
        return FunctionExercise(entry["title"], entry["signature"], trials=code["trials"], reference=code["reference"],
                                mistakes=tuple((why, functools.partial(variant, **kw)) for why, _, kw in mistakes),
                                **tolerances)

    def value_mistakes(**inputs) -> list[tuple[str, Any]]:
        return [(why, value if kw is None else variant(**inputs, **kw)) for why, value, kw in mistakes]

    return ValueExercise(entry["title"], expected=code["expected"], mistakes=value_mistakes,
                         inputs=tuple(code.get("inputs", ())), **tolerances)


def _mistakes(slips: Any, variant: Callable | None, kind: type) -> list[tuple[str, Any, dict | None]]:
    """``(why, value, variant keywords)`` of each mistake (value a written-out wrong value, or keywords)."""
    ways = {"variant", "value"} if kind is ValueExercise else {"variant"}
    if not isinstance(slips, list):
        raise ValueError("mistakes is not a list")
    out = []
    for slip in slips:
        if not (isinstance(slip, dict) and isinstance(slip.get("why"), str) and len(slip) == 2
                and len(set(slip) & ways) == 1):
            raise ValueError(f"a mistake is not {{why: text, {' or '.join(sorted(ways))}: ...}}: {slip!r}")
        if "value" in slip:
            out.append((slip["why"], slip["value"], None))
            continue
        kw = slip["variant"]
        if variant is None or not isinstance(kw, dict):
            raise ValueError(f"the mistake {slip['why']!r} needs a variant function and a mapping of its keywords")
        params = inspect.signature(variant).parameters.values()
        names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        unknown = sorted(set(map(str, kw)) - names)
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
            raise ValueError(f"the mistake {slip['why']!r}: {variant.__name__} takes no keyword {', '.join(unknown)}")
        out.append((slip["why"], None, kw))
    return out


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

    What :func:`check` prints, and what ``python -m ddpm_lib grade`` records.
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
