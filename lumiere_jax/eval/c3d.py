"""C3D class probabilities for the Inception Score on UCF101, the TGANv2 way (Saito et al., `C3DVersion1UCF101`).

The weights are the Caffe C3D fine-tuned on UCF101 (`c3d_ucf101_finetune_whole_iter_20000`) converted by TGANv2 to a
Chainer npz, `conv3d_deepnetA_ucf.npz`, plus the Caffe mean clip `mean2.npz`; both are supplied by the user. What
TGANv2 does to a video in [-1, 1] before fc8, reproduced here from uint8 RGB frames:

1. v / 127.5 - 1, RGB -> BGR (Caffe order), times 128;
2. every frame resized to 112x112 by Chainer's `F.resize_images` (bilinear, align_corners=True; no crop);
3. plus 128 minus the mean clip cropped at [8:120, 8:120] of its 128x171 frames;
4. conv1a-conv5b (3x3x3, padding 1, ReLU) with max pools (1,2,2) then 2x2x2, Chainer's default cover_all=True, which
   makes pool5 map 7x7 to 4x4 (the last window hangs over the edge); flatten in Chainer's (C, T, H, W) order;
   fc6, fc7 (ReLU; dropout off at evaluation), fc8 logits, softmax over the 101 classes.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.eval.batched import jit_over_batch
from lumiere_jax.eval.resize import align_corners_bilinear_resize

CLASSES = 101
FRAMES = 16
SIZE = 112
CONVS = (('conv1a', 3, 64), ('conv2a', 64, 128), ('conv3a', 128, 256), ('conv3b', 256, 256), ('conv4a', 256, 512),
         ('conv4b', 512, 512), ('conv5a', 512, 512), ('conv5b', 512, 512))
LINEARS = (('fc6', 512 * 4 * 4, 4096), ('fc7', 4096, 4096), ('fc8', 4096, CLASSES))
# Max pool after the named conv: (T, H, W) window = stride.
POOLS = {'conv1a': (1, 2, 2), 'conv2a': (2, 2, 2), 'conv3b': (2, 2, 2), 'conv4b': (2, 2, 2), 'conv5b': (2, 2, 2)}
MEAN_SHAPE = (3, FRAMES, 128, 171)  # BGR, (C, T, H, W)
MEAN_CROP = 8


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Chainer npz keys of the weights and their shapes: conv W (out, in, kt, kh, kw), linear W (out, in)."""
  shapes = {}
  for name, inputs, outputs in CONVS:
    shapes[f'{name}/W'], shapes[f'{name}/b'] = (outputs, inputs, 3, 3, 3), (outputs,)
  for name, inputs, outputs in LINEARS:
    shapes[f'{name}/W'], shapes[f'{name}/b'] = (outputs, inputs), (outputs,)
  return shapes


def _open(path: str | pathlib.Path, what: str):
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f'{path}: no such file; the C3D Inception Score needs the {what} (TGANv2 release files '
                            'conv3d_deepnetA_ucf.npz and mean2.npz)')
  return np.load(path, allow_pickle=False)


def load_c3d(npz_path: str | pathlib.Path, mean_path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Weights and the cropped mean clip (as `mean`, (T, H, W, C) BGR), float32, for `c3d_logits`.

  Keys beyond the expected ones are ignored, as Chainer's `load_npz` ignores them; missing keys and wrong shapes
  raise ValueError naming them.
  """
  with _open(npz_path, 'weights') as weights:
    expected = expected_shapes()
    missing = [key for key in expected if key not in weights.files]
    if missing:
      raise ValueError(f'{npz_path}: missing C3D weights {missing}')
    wrong = [f'{key} {weights[key].shape} (want {shape})' for key, shape in expected.items()
             if weights[key].shape != shape]
    if wrong:
      raise ValueError(f'{npz_path}: C3D weights of the wrong shape: {", ".join(wrong)}')
    params = {key: weights[key].astype(np.float32) for key in expected}
  with _open(mean_path, 'mean clip') as means:
    if 'mean' not in means.files:
      raise ValueError(f'{mean_path}: no key "mean" (has {means.files})')
    mean = means['mean']
  if mean.size != np.prod(MEAN_SHAPE):
    raise ValueError(f'{mean_path}: mean has shape {mean.shape}, want {MEAN_SHAPE} (C, T, H, W) or the same values '
                     'reshaped')
  crop = mean.reshape(MEAN_SHAPE)[:, :, MEAN_CROP:MEAN_CROP + SIZE, MEAN_CROP:MEAN_CROP + SIZE]
  params['mean'] = crop.transpose(1, 2, 3, 0).astype(np.float32)
  return params


def max_pool(x: jnp.ndarray, window: tuple[int, ...]) -> jnp.ndarray:
  """Max pool of (N, T, H, W, C) with stride = window and Chainer's cover_all=True: a partial last window counts."""
  spatial = x.shape[1:-1]
  padding = [(0, 0)] + [(0, -size % w) for size, w in zip(spatial, window)] + [(0, 0)]
  dims = (1, *window, 1)
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, dims, padding)


def c3d_logits(params: dict[str, jnp.ndarray], videos: jnp.ndarray) -> jnp.ndarray:
  """fc8 logits (N, 101) of RGB videos (N, 16, H, W, 3) in [0, 255]; see the module docstring for the steps."""
  bgr = (videos.astype(jnp.float32) / 127.5 - 1)[..., ::-1] * 128
  x = align_corners_bilinear_resize(bgr, SIZE, SIZE) + (128 - params['mean'])
  for name, _, _ in CONVS:
    x = jax.lax.conv_general_dilated(x, params[f'{name}/W'], (1, 1, 1), [(1, 1)] * 3,
                                     dimension_numbers=('NDHWC', 'OIDHW', 'NDHWC'))
    x = jax.nn.relu(x + params[f'{name}/b'])
    if name in POOLS:
      x = max_pool(x, POOLS[name])
  x = x.transpose(0, 4, 1, 2, 3).reshape(len(x), -1)  # Chainer flattens (C, T, H, W)
  for name, _, _ in LINEARS:
    x = x @ params[f'{name}/W'].T + params[f'{name}/b']
    if name != 'fc8':
      x = jax.nn.relu(x)
  return x


class C3DProbabilities:
  """Callable: RGB videos (N, 16, H, W, 3) uint8 (or float) in [0, 255] -> float32 softmax over 101 classes."""

  def __init__(self, npz_path: str | pathlib.Path, mean_path: str | pathlib.Path,
               mesh: jax.sharding.Mesh | None = None):
    self._run = jit_over_batch(lambda params, videos: jax.nn.softmax(c3d_logits(params, videos)),
                               load_c3d(npz_path, mean_path), mesh)

  def __call__(self, videos) -> np.ndarray:
    shape = np.shape(videos)
    if len(shape) != 5 or shape[1] != FRAMES or shape[-1] != 3:
      raise ValueError(f'need RGB videos (N, {FRAMES}, H, W, 3), got shape {shape}')
    return self._run(videos)
