"""The conditional stage's start from a base checkpoint (`model.init_from`, DESIGN section 1).

The conditional model is the base STUNet with 3 + 4 input channels: the noisy clip, then the masked video and its
mask (`models.MASKED`). Every base weight copies by path; the input convolution's kernel gains zero rows for the new
channels, so at initialisation the model computes exactly what the base model did, whatever the conditioning input.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp

INPUT_KERNEL = 'unet.conv_in.kernel'  # (kh, kw, input channels, features); conditioning channels come last


def widen_input_conv(base: Mapping[str, jax.Array], shapes: Mapping[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
  """Base-stage parameters -> the conditional model's (`shapes`: its `ModelSpec.shapes`), new input rows zero.

  Raises ValueError naming the parameters that are missing, unexpected or shaped unlike the conditional model's
  (a checkpoint that is not a base run of the same model config).
  """
  kernel, want = base.get(INPUT_KERNEL), shapes[INPUT_KERNEL].shape
  extra = want[-2] - kernel.shape[-2] if kernel is not None else 0
  mis_shaped = sorted(k for k in shapes.keys() & base.keys() if k != INPUT_KERNEL and base[k].shape != shapes[k].shape)
  if kernel is not None and (extra <= 0 or kernel.shape[:-2] + kernel.shape[-1:] != want[:-2] + want[-1:]):
    mis_shaped.append(f'{INPUT_KERNEL} {kernel.shape} (the conditional model needs {want})')
  problems = dict(missing=sorted(shapes.keys() - base.keys()), unexpected=sorted(base.keys() - shapes.keys()),
                  mis_shaped=mis_shaped)
  if any(problems.values()):
    listed = '; '.join(f'{name} {keys[:3]}{" ..." * (len(keys) > 3)}' for name, keys in problems.items() if keys)
    raise ValueError(f'config.model.init_from: not a base-stage checkpoint of this model config: {listed}')
  rows = [(0, 0)] * (kernel.ndim - 2) + [(0, extra), (0, 0)]
  return {**base, INPUT_KERNEL: jnp.pad(kernel, rows)}
