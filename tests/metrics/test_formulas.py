"""FID, KID, precision/recall, IS and PPL formulas against closed forms and independent NumPy/SciPy
computations."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from sg2ada.metrics import formulas


def _rand_cov(rng, d):
    a = rng.randn(d, d)
    return a @ a.T / d + 0.1 * np.eye(d)


def test_feature_stats_mean_cov_match_numpy_and_truncate():
    rng = np.random.RandomState(0)
    x = rng.randn(103, 5).astype(np.float32) * 3 + 1
    s = formulas.FeatureStats(capture_all=True, capture_mean_cov=True, max_items=100)
    for i in range(0, 103, 10):
        s.append(x[i : i + 10])
    assert s.num_items == 100 and s.is_full()
    mean, cov = s.get_mean_cov()
    np.testing.assert_allclose(mean, x[:100].astype(np.float64).mean(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cov, np.cov(x[:100].astype(np.float64), rowvar=False, bias=True), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(s.get_all(), x[:100])
    s2 = formulas.FeatureStats.from_arrays(s.to_arrays())
    np.testing.assert_array_equal(s2.get_all(), x[:100])
    np.testing.assert_allclose(s2.get_mean_cov()[1], cov)


def test_fid_identical_sets_is_zero():
    rng = np.random.RandomState(1)
    x = rng.randn(500, 8)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert abs(formulas.fid_from_stats(mu, sigma, mu, sigma)) < 1e-8


def test_fid_diagonal_gaussians_closed_form():
    # Commuting covariances: d^2 = |mu1-mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert formulas.fid_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    assert expected == pytest.approx(10 + (1 + 1 + 2.5**2))


def test_fid_general_gaussians_against_independent_scipy_form():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.RandomState(2)
    d = 6
    mu1, mu2 = rng.randn(d), rng.randn(d)
    s1, s2 = _rand_cov(rng, d), _rand_cov(rng, d)
    # The symmetric form Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2): same value, different computation.
    r1 = scipy_linalg.sqrtm(s1).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy_linalg.sqrtm(r1 @ s2 @ r1).real)
    assert formulas.fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert formulas.fid_from_stats(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(expected, rel=1e-8)


def test_fid_eigh_method_equals_nvidia_sqrtm_of_product():
    pytest.importorskip("scipy.linalg")
    rng = np.random.RandomState(3)
    for d, n in ((5, 100), (40, 30)):  # full-rank and rank-deficient (fewer samples than dimensions)
        x, y = rng.randn(n, d), rng.randn(n, d) * 1.3 + 0.2
        mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
        a = formulas.fid_from_stats(mu1, s1, mu2, s2, method="sqrtm")
        b = formulas.fid_from_stats(mu1, s1, mu2, s2)
        assert b == pytest.approx(a, rel=1e-6)


def test_fid_sqrtm_without_scipy_falls_back(monkeypatch):
    rng = np.random.RandomState(3)
    mu1, mu2, s1, s2 = rng.randn(5), rng.randn(5), _rand_cov(rng, 5), _rand_cov(rng, 5)
    want = formulas.fid_from_stats(mu1, s1, mu2, s2)
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("no scipy here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    assert formulas.fid_from_stats(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(want, rel=1e-10)


def test_fid_of_sampled_gaussians_approaches_known_distance():
    rng = np.random.RandomState(4)
    n, d = 200000, 3
    mu2 = np.array([0.5, -0.5, 1.0])
    x = rng.randn(n, d)
    y = rng.randn(n, d) * np.array([2.0, 1.0, 0.5]) + mu2
    sx = formulas.FeatureStats(capture_mean_cov=True)
    sy = formulas.FeatureStats(capture_mean_cov=True)
    sx.append(x)
    sy.append(y)
    fid = formulas.fid_from_stats(*sx.get_mean_cov(), *sy.get_mean_cov())
    expected = np.sum(mu2**2) + (1 - 2) ** 2 + 0 + (1 - 0.5) ** 2
    assert fid == pytest.approx(expected, abs=0.03)


def _mmd2_unbiased_loops(x, y):
    """Textbook unbiased MMD^2 with k(a,b) = (a.b/d + 1)^3, written with explicit loops."""
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (np.dot(a, b) / d + 1) ** 3

    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return kxx + kyy - 2 * kxy


def test_kid_equals_unbiased_mmd_with_cubic_kernel():
    rng = np.random.RandomState(5)
    real = rng.randn(30, 4)
    gen = rng.randn(30, 4) * 1.5 + 0.3
    # One subset of the full size is a permutation of each set, and MMD^2 is permutation invariant.
    kid = formulas.kid_from_features(real, gen, num_subsets=1, max_subset_size=1000, seed=0)
    assert kid == pytest.approx(_mmd2_unbiased_loops(gen, real), rel=1e-10)
    assert kid > 0


def test_kid_subsets_average_and_identical_distributions_near_zero():
    rng = np.random.RandomState(6)
    real = rng.randn(400, 8)
    gen_same = rng.randn(400, 8)
    gen_shift = rng.randn(400, 8) + 1.0
    k_same = formulas.kid_from_features(real, gen_same, num_subsets=20, max_subset_size=100, seed=1)
    k_shift = formulas.kid_from_features(real, gen_shift, num_subsets=20, max_subset_size=100, seed=1)
    assert abs(k_same) < 0.05 < k_shift
    # The average over subsets, reproduced by drawing the same subsets.
    r = np.random.RandomState(1)
    vals = []
    for _ in range(20):
        gi = r.choice(400, 100, replace=False)
        ri = r.choice(400, 100, replace=False)
        vals.append(_mmd2_unbiased_fast(gen_shift[gi], real[ri]))
    assert k_shift == pytest.approx(np.mean(vals), rel=1e-9)


def _mmd2_unbiased_fast(x, y):
    d = x.shape[1]
    m = len(x)
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()


def _pr_bruteforce(real, gen, k):
    def radii(a):
        d = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]

    def coverage(manifold, probes):
        r = radii(manifold)
        d = np.sqrt(((probes[:, None] - manifold[None]) ** 2).sum(-1))
        return float((d <= r[None]).any(1).mean())

    return coverage(real, gen), coverage(gen, real)


def test_precision_recall_constructed_sets():
    # Real: 20 points on a unit-spaced line. Generated: 10 of them exactly, 10 far away in a tight clump.
    real = np.stack([np.arange(20.0), np.zeros(20)], 1)
    gen = np.concatenate([real[:10], np.stack([np.full(10, 1000.0), np.arange(10) * 0.01], 1)])
    p, r = formulas.precision_recall(real, gen, nhood_size=3)
    assert p == pytest.approx(0.5)
    # Recall: the generated copies cover real points 0..9 (radius 3 along the line covers up to 12).
    assert r == pytest.approx(13 / 20)


def test_precision_recall_matches_bruteforce_and_is_batch_independent():
    rng = np.random.RandomState(7)
    real = rng.randn(150, 6).astype(np.float32)
    gen = (rng.randn(120, 6) * 1.3 + 0.4).astype(np.float32)
    # Integer-valued features keep the float16 rounding NVIDIA applies from changing the answer.
    real, gen = np.round(real * 8), np.round(gen * 8)
    expected = _pr_bruteforce(real, gen, 3)
    got_big = formulas.precision_recall(real, gen, 3, row_batch_size=10000, col_batch_size=10000)
    got_small = formulas.precision_recall(real, gen, 3, row_batch_size=17, col_batch_size=11)
    assert got_big == pytest.approx(expected)
    assert got_small == pytest.approx(expected)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1


def test_inception_score_constructed_probabilities():
    k = 10
    confident = np.full([200, k], 1e-12)
    confident[np.arange(200), np.arange(200) % k] = 1.0
    mean, std = formulas.inception_score(confident, num_splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0, abs=1e-6)
    same = np.tile(np.linspace(1, 2, k) / np.linspace(1, 2, k).sum(), [100, 1])
    assert formulas.inception_score(same, 10)[0] == pytest.approx(1.0)


def test_inception_score_matches_logit_definition():
    rng = np.random.RandomState(8)
    logits = rng.randn(60, 7) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mean, std = formulas.inception_score(p, num_splits=3)
    scores = []
    for part in np.split(p, 3):
        py = part.mean(0)
        scores.append(np.exp(np.mean([np.sum(q * np.log(q / py)) for q in part])))
    assert mean == pytest.approx(np.mean(scores)) and std == pytest.approx(np.std(scores))


def test_ppl_drops_values_outside_1st_to_99th_percentile():
    dist = np.concatenate([np.full(990, 2.0), np.full(5, 1e6), np.full(5, -1e6)])
    assert formulas.ppl_from_distances(dist) == pytest.approx(2.0)
    x = np.arange(1000.0)
    lo, hi = np.percentile(x, 1, method="lower"), np.percentile(x, 99, method="higher")
    assert formulas.ppl_from_distances(x) == pytest.approx(x[(x >= lo) & (x <= hi)].mean())
