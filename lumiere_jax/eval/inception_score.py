"""Inception Score from class probabilities, as TGANv2's `evaluations/inception_score.py` computes it (float64).

    IS = exp(E_x KL(p(y|x) || p(y)))

The samples are cut into `splits` consecutive parts (part i = rows i*N//splits to (i+1)*N//splits), eps is added to
every probability, p(y) is each part's mean, and the result is the mean and (population) standard deviation of the
parts' scores. TGANv2's published UCF101 protocol draws 10 x 2048 samples with one split each; cutting 20480 samples
into 10 splits is the same computation.
"""

import numpy as np


def inception_score(probabilities: np.ndarray, splits: int = 10, eps: float = 1e-20) -> tuple[float, float]:
  """(mean, std) over `splits` of the scores of probabilities (N, classes), N >= splits, rows summing to 1."""
  probabilities = np.asarray(probabilities, np.float64)
  if probabilities.ndim != 2 or not 1 <= splits <= len(probabilities):
    raise ValueError(f'need probabilities (N >= splits, classes) and splits >= 1, got {probabilities.shape} and '
                     f'splits={splits}')
  if not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3):
    raise ValueError('rows of probabilities must sum to 1 (softmax outputs, not logits)')
  count = len(probabilities)
  scores = []
  for i in range(splits):
    part = probabilities[i * count // splits:(i + 1) * count // splits] + eps
    kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
    scores.append(np.exp(kl.sum(axis=1).mean()))
  return float(np.mean(scores)), float(np.std(scores))
