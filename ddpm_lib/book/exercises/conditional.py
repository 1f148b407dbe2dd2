"""The keys of 7. guidance (chapter 7): each exercise's expected value, the variant functions that reproduce its
common mistakes, its trials; the prose (titles, the mistakes' messages, the questions) is in text/conditional.yaml.

Registered in :data:`.engine.EXERCISES` when one of its labels is first looked up."""

from __future__ import annotations

import torch

from .engine import register_chapter
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


def _guidance_variant(c, u, w, *, form: str):
    """The slips of eps_uncond + w (eps_cond - eps_uncond): the paper's convention, the roles swapped, no eps_uncond."""
    return {"paper": lambda: (1 + w) * c - w * u, "swapped": lambda: c + w * (u - c),
            "no-uncond": lambda: w * c}[form]()


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


def _guidance_for_paper(w_paper: float = 0.3) -> float:
    """The w of ``guided`` that gives the paper's (1 + w') eps_c - w' eps_u, solved from guided."""
    from ...sampling import guided
    x = torch.linspace(0.1, 1, 16, dtype=torch.float64).reshape(1, 1, 4, 4)
    y, t = torch.tensor([3]), torch.zeros(1, dtype=torch.long)
    g0, g1 = (guided(_fake_conditional, y, w)(x, t) for w in (0.0, 1.0))
    paper = (1 + w_paper) * (2 * x) - w_paper * (x - 1)
    return float(((paper - g0) / (g1 - g0)).mean())         # guided is linear in w


register_chapter("conditional", {
    "ex-cond-guidance": {"trials": _guidance_trials, "reference": _guidance_reference, "variant": _guidance_variant},
    "ex-cond-classifier": {"trials": _classifier_trials, "reference": _classifier_reference,
                           "variant": _classifier_reference},
    "ex-cond-convention": {"expected": _guidance_for_paper},
})
