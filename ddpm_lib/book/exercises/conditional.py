"""The keys of 7. guidance (chapter 7): each exercise's expected value, its common mistakes, its trials.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations


import torch

from .engine import ChoiceExercise, FunctionExercise, ValueExercise, _register
from .inputs import _col, _images


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
