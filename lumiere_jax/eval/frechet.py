"""Fréchet distance between Gaussians fitted to feature sets (the distance behind FVD), in float64.

    d = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))

tr((S_a S_b)^(1/2)) is computed as tr((R S_b R)^(1/2)) with R = S_a^(1/2) from a symmetric eigendecomposition: the
matrices are similar, and R S_b R is symmetric positive semi-definite, so its square root is the square root of
its eigenvalues (clipped at 0 against round-off). This avoids the complex, sometimes unstable general `sqrtm`.
"""

import numpy as np


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) in float64 of features (N, D), N >= 2; the unbiased covariance, as the references use."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f'need features of shape (N >= 2, D), got {features.shape}')
  return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
  """The Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b)."""
  mean_a, cov_a, mean_b, cov_b = (np.asarray(x, np.float64) for x in (mean_a, cov_a, mean_b, cov_b))
  if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mean_a.shape * 2:
    raise ValueError(f'mismatched statistics: means {mean_a.shape} {mean_b.shape}, covariances {cov_a.shape} '
                     f'{cov_b.shape}')
  root_a = _psd_sqrt(cov_a)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
  return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
