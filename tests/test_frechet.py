"""Fréchet distance against SciPy's sqrtm formula in float64."""

import numpy as np
import pytest
from scipy import linalg

from lumiere_jax.eval import frechet


def _scipy_reference(mean_a, cov_a, mean_b, cov_b):
  root = linalg.sqrtm(cov_a @ cov_b)
  return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root.real))


@pytest.mark.parametrize('dim', [1, 4, 32, 400])
def test_matches_scipy_sqrtm(dim):
  rng = np.random.default_rng(dim)
  a = rng.standard_normal((max(3 * dim, 10), dim)) @ rng.standard_normal((dim, dim))
  b = rng.standard_normal((max(3 * dim, 10), dim)) * 1.5 + 0.3
  stats = (*frechet.statistics(a), *frechet.statistics(b))
  assert frechet.frechet_distance(*stats) == pytest.approx(_scipy_reference(*stats), rel=1e-6, abs=1e-8)


def test_a_set_is_at_distance_zero_from_itself_and_statistics_are_unbiased():
  features = np.random.default_rng(0).standard_normal((500, 16))
  mean, cov = frechet.statistics(features)
  assert frechet.frechet_distance(mean, cov, mean, cov) == pytest.approx(0.0, abs=1e-9)
  np.testing.assert_allclose(cov, np.cov(features.T, ddof=1))


def test_known_distance_between_isotropic_gaussians():
  # N(0, I) vs N(m, 4I) in D dims: |m|^2 + D + 4D - 2 * 2D = |m|^2 + D.
  dim, shift = 8, np.full(8, 0.5)
  assert frechet.frechet_distance(np.zeros(dim), np.eye(dim), shift, 4 * np.eye(dim)) == pytest.approx(2.0 + dim)


def test_bad_shapes_are_refused():
  with pytest.raises(ValueError, match='mismatched'):
    frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match='N >= 2'):
    frechet.statistics(np.zeros((1, 3)))
