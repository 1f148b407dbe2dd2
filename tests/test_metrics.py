"""ddpm_lib.metrics: the near-copy check of the model cards (nearest_distance), the feature Frechet distance,
the classifier's outputs and the class-conditional figures, each against an independent computation."""

from __future__ import annotations

import math

import pytest
import torch

from ddpm_lib.metrics import frechet_distance, nearest_distance


def test_nearest_distance_matches_a_brute_force_search():
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(50, 1, 8, 8, generator=g) * 2 - 1                # (50, 1, 8, 8)
    images = torch.rand(7, 1, 8, 8, generator=g) * 2 - 1
    images[3] = reference[17]                                               # an exact copy
    got = nearest_distance(images, reference, chunk=3)                      # chunks of 3, 3 and 1
    want = torch.stack([min(float((img - ref).pow(2).sum().sqrt()) for ref in reference) * torch.ones(())
                        for img in images])
    assert got.shape == (7,) and got[3] == 0
    assert torch.allclose(got, want.float(), rtol=1e-6, atol=1e-6)
    assert torch.equal(got, nearest_distance(images, reference, chunk=256))


def test_nearest_distance_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one image shape"):
        nearest_distance(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 4, 4))


# ---------------------------------------------------------------- frechet_distance
EPS64 = torch.finfo(torch.float64).eps


def frechet_tolerance(*feats):
    """How far float64 rounding can move frechet_distance, whatever the covariances.

    The trace of the matrix square root is a sum of D square roots of eigenvalues from eigvalsh, each off by up to
    about D * eps * ||S||^2 (its backward error); where an eigenvalue is 0 (a rank-deficient covariance, a feature
    that is always 0) the square root turns that into sqrt(D * eps) * ||S||, and the square root of S_a adds as
    much again: 2 * D * sqrt(D * eps) * ||S||. With no eigenvalue near 0 the error is of order D * eps * ||S||, far
    below; a wrong formula (a missing factor 2, a mean not squared) is off by O(||S||)."""
    d = feats[0].shape[1]
    largest = max(float(torch.linalg.eigvalsh(torch.cov(f.double().T)).max()) for f in feats)
    return 2 * d * math.sqrt(d * EPS64) * max(largest, 1.0)


def gaussian_with(mean, cov, n=500, seed=0):
    """n points (n, D) whose sample mean and (n - 1)-normalised sample covariance are exactly ``mean`` and ``cov``
    (up to float64 rounding): standard normal draws, centred, whitened, then coloured by a Cholesky factor."""
    z = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T              # sample covariance I
    return z @ torch.linalg.cholesky(cov).T + mean


def random_features(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + torch.randn(d, generator=g, dtype=torch.float64)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    for feats in (random_features(300, 16, 1), random_features(300, 16, 2).float()):
        assert abs(frechet_distance(feats, feats)) <= frechet_tolerance(feats)
    # the classifier's real features: 11 of the 64 are always 0 (a rank-deficient covariance)
    from ddpm_lib.metrics import reference_features

    ref = reference_features()
    assert 0 <= frechet_distance(ref, ref) <= frechet_tolerance(ref)     # was -2.5e-6 before the clamp


def test_frechet_distance_is_symmetric_and_not_negative():
    for seed in range(3):
        a, b = random_features(200, 8, seed), random_features(150, 8, seed + 10)
        ab, ba = frechet_distance(a, b), frechet_distance(b, a)
        assert abs(ab - ba) <= frechet_tolerance(a, b) and ab > frechet_tolerance(a, b), (ab, ba)


def test_frechet_distance_equals_the_closed_form_for_two_gaussians():
    # diagonal (commuting) covariances: tr(S1 + S2 - 2 (S1 S2)^1/2) = sum_i (sd1_i - sd2_i)^2
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0, -0.5],
                                                                                       dtype=torch.float64)
    var1, var2 = torch.tensor([1.0, 4.0, 0.25, 2.0], dtype=torch.float64), torch.tensor([9.0, 1.0, 1.0, 2.0],
                                                                                         dtype=torch.float64)
    a, b = gaussian_with(mu1, torch.diag(var1), seed=1), gaussian_with(mu2, torch.diag(var2), n=300, seed=2)
    want = float((mu1 - mu2).pow(2).sum() + (var1.sqrt() - var2.sqrt()).pow(2).sum())     # 6 + 4 + 1 + 0.25 = 11.25
    assert want == 11.25
    assert abs(frechet_distance(a, b) - want) <= frechet_tolerance(a, b)
    # 2x2 covariances that do not commute: the eigenvalues l1, l2 of S1 S2 are positive, so
    # tr((S1 S2)^1/2) = sqrt(l1) + sqrt(l2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2))
    s1 = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    m1, m2 = torch.tensor([0.3, -1.0], dtype=torch.float64), torch.tensor([-0.2, 0.5], dtype=torch.float64)
    cross = math.sqrt(float(torch.trace(s1 @ s2)) + 2 * math.sqrt(float(torch.det(s1) * torch.det(s2))))
    want = float((m1 - m2).pow(2).sum() + torch.trace(s1) + torch.trace(s2)) - 2 * cross
    a, b = gaussian_with(m1, s1, seed=3), gaussian_with(m2, s2, n=200, seed=4)
    assert abs(frechet_distance(a, b) - want) <= frechet_tolerance(a, b)
    assert abs(frechet_distance(a, b) - want) < 1e-9 * want          # full rank: rounding of order eps, not sqrt(eps)


def test_frechet_distance_grows_as_the_square_of_a_mean_shift():
    a = random_features(200, 8, 5)
    direction = torch.randn(8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    got = [frechet_distance(a, a + s * direction) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]
    want = [s * s * float(direction.pow(2).sum()) for s in (0.0, 0.5, 1.0, 2.0, 4.0)]   # covariances unchanged
    assert all(abs(g - w) <= frechet_tolerance(a) for g, w in zip(got, want)), (got, want)
    assert got == sorted(got) and len(set(got)) == len(got)


def test_frechet_distance_refuses_what_it_cannot_fit():
    for a, b in [(torch.zeros(5, 3), torch.zeros(5, 4)), (torch.zeros(1, 3), torch.zeros(5, 3)),
                 (torch.zeros(5), torch.zeros(5))]:
        with pytest.raises(ValueError, match="need two feature sets"):
            frechet_distance(a, b)


# ---------------------------------------------------------------- classifier_outputs
@pytest.fixture(scope="module")
def calibration():
    """The 256 held-out calibration digits (N, 1, 32, 32) and their labels (the metrics' reference split)."""
    from ddpm_lib.metrics import reference_split

    _, calib, _, labels = reference_split(with_labels=True)
    return calib, labels


def test_classifier_outputs_are_probabilities_and_features_of_the_right_shape(calibration):
    from ddpm_lib.metrics import FEATURE_DIM, classifier_outputs

    images, labels = calibration
    probs, feats = classifier_outputs(images)
    assert probs.shape == (256, 10) and feats.shape == (256, FEATURE_DIM)
    assert probs.dtype == feats.dtype == torch.float64
    # a float32 softmax cast to float64: 10 terms, each within an ulp or two of float32 (6e-8): 2e-6, margin 5
    assert (probs >= 0).all() and torch.allclose(probs.sum(1), torch.ones(256, dtype=torch.float64), atol=1e-5)
    assert (feats >= 0).all()                                                # the features come out of a ReLU
    # They mean what they say: the shipped classifier reads 98.0% of these digits right (251/256); the binomial
    # standard error is 0.9%, so 95% is over 3 of them below.
    assert (probs.argmax(1) == labels).double().mean() >= 0.95


def test_classifier_outputs_match_a_direct_computation_in_any_order(calibration):
    from ddpm_lib.metrics import CHUNK, classifier_outputs, load_classifier

    images = torch.cat([calibration[0], calibration[0][:60].flip(-1)])      # 316 > CHUNK: two chunks
    assert images.shape[0] > CHUNK
    probs, feats = classifier_outputs(images)
    net = load_classifier("mnist")
    with torch.no_grad():
        direct_feats = net.features(images).double()                         # one batch, no chunks
        direct_probs = torch.softmax(net(images).double(), dim=1)            # the softmax in float64
    # A float32 network: a batch of another size may take other kernels, whose sums of ~1e3 terms differ by
    # rounding (1.2e-7 * sqrt(1e3) ~ 4e-6 relative per layer, five layers: 2e-5); probabilities lie in [0, 1].
    assert torch.allclose(feats, direct_feats, rtol=1e-4, atol=1e-4)
    assert torch.allclose(probs, direct_probs, rtol=0, atol=1e-4)
    perm = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    probs_p, feats_p = classifier_outputs(images[perm])
    assert torch.allclose(probs_p, probs[perm], rtol=0, atol=1e-4)          # the chunks keep the images' order
    assert torch.allclose(feats_p, feats[perm], rtol=1e-4, atol=1e-4)
    assert torch.equal(classifier_outputs(images, net)[0], probs)           # the default is the MNIST classifier


def test_classifier_outputs_refuses_images_of_another_shape():
    from ddpm_lib.metrics import classifier_outputs

    for images in (torch.zeros(4, 28, 28), torch.zeros(4, 1, 28, 28), torch.zeros(0, 1, 32, 32)):
        with pytest.raises(ValueError):
            classifier_outputs(images)


# ---------------------------------------------------------------- conditional_quality
def test_conditional_quality_of_digits_labelled_perfectly_and_with_labels_shuffled(calibration):
    from ddpm_lib.metrics import classifier_outputs, conditional_quality

    images, labels = calibration
    predicted = classifier_outputs(images)[0].argmax(1)
    right = predicted == labels                                              # the digits it reads right
    images, labels = images[right], labels[right]
    perfect = conditional_quality(images, labels)
    assert perfect["n"] == int(right.sum()) and perfect["accuracy"] == 1.0
    assert perfect["per_class_accuracy"] == [1.0] * 10                      # every class is among them
    wrong = conditional_quality(images, (labels + 1) % 10)                   # every label moved to another class
    assert wrong["accuracy"] == 0.0 and wrong["per_class_accuracy"] == [0.0] * 10
    shuffled = labels[torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(0))]
    got = conditional_quality(images, shuffled)
    assert got["accuracy"] == float((labels == shuffled).double().mean())   # hits where the shuffle kept the class
    assert got["accuracy"] < 0.3                                             # ~1/10 by chance; 0.3 is > 5 SE above
    for k in range(10):
        asked = shuffled == k
        assert got["per_class_accuracy"][k] == float((labels[asked] == k).double().mean())
    for key in ("confident", "class_entropy", "frechet", "class_counts"):   # what the images are, whatever asked
        assert got[key] == perfect[key] == wrong[key]


def test_conditional_quality_spread_is_one_for_real_data_and_zero_for_one_image_per_class():
    from ddpm_lib.metrics import conditional_quality, reference_features, reference_split

    ref, _, ref_labels, _ = reference_split(with_labels=True)
    real = conditional_quality(ref, ref_labels)                              # the reference set itself
    assert real["spread"] == 1.0                                             # each class's variance over its own
    assert abs(real["frechet"]) <= frechet_tolerance(reference_features())
    one_each = torch.stack([ref[ref_labels == k][0] for k in range(10)]).repeat_interleave(5, dim=0)   # (50, ...)
    copies = conditional_quality(one_each, torch.arange(10).repeat_interleave(5))
    assert copies["spread"] == 0.0                                           # no variety at all
    # between the two: the calibration digits, as varied as real data but other digits, against the definition
    # (the total variance of a class's features over the reference images' of that class, averaged over classes)
    from ddpm_lib.metrics import classifier_outputs

    _, calib, _, calib_labels = reference_split(with_labels=True)
    feats, ref_feats = classifier_outputs(calib)[1], reference_features()
    ratios = [feats[calib_labels == k].var(0).sum() / ref_feats[ref_labels == k].var(0).sum() for k in range(10)]
    got = conditional_quality(calib, calib_labels)["spread"]
    # float64 throughout: sums of 64 variances and a mean of 10 ratios round at ~1e-15 of a value near 1
    assert abs(got - float(sum(ratios)) / 10) <= 1e-12
    assert got != 1.0 and 0.5 < got < 2                                      # 1.077 measured: other real digits
    few = conditional_quality(ref[:3], ref_labels[:3])                       # classes asked for at most once or
    asked = torch.bincount(ref_labels[:3], minlength=10)                    # twice: NaN where never asked
    assert [math.isnan(a) for a in few["per_class_accuracy"]] == [int(c) == 0 for c in asked]


def test_conditional_quality_needs_one_label_per_image():
    from ddpm_lib.metrics import conditional_quality

    with pytest.raises(ValueError, match="one requested label per image"):
        conditional_quality(torch.zeros(4, 1, 32, 32), torch.zeros(3, dtype=torch.long))
