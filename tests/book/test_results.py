"""ddpm_lib.book.results: the formatters and names the chapters share."""

import math

from ddpm_lib.book.results import (ODE_QUALITY, SAMPLER_NAMES, SAMPLER_QUALITY, mean_sd, n_seeds,
                                   sampler_quality_summary, standard_error)


def test_every_measured_sampler_has_a_display_name():
    measured = {r["sampler"] for path in (SAMPLER_QUALITY, ODE_QUALITY) for r in sampler_quality_summary(path)}
    assert measured <= set(SAMPLER_NAMES)


def test_mean_sd_shows_the_spread_only_over_several_seeds():
    row = {"confident": 0.8281, "confident_sd": 0.0123, "seeds": [0, 1, 2]}
    assert mean_sd(row, "confident", 100) == "82.8 ± 1.2"
    assert mean_sd({**row, "seeds": [0]}, "confident", 100) == "82.8"
    assert mean_sd({**row, "seeds": 3}, "confident", digits=3) == "0.828 ± 0.012"   # a card's count of seeds


def test_standard_error_is_the_sd_over_the_root_of_the_seeds():
    row = {"frechet": 10.0, "frechet_sd": 3.0, "seeds": [0, 1, 2, 3]}
    assert n_seeds(row) == 4 and math.isclose(standard_error(row, "frechet"), 1.5)
