"""Classifier-free guidance (Ho & Salimans 2022) and Imagen's dynamic thresholding (Saharia et al. 2022)."""

import jax
import jax.numpy as jnp


def classifier_free_guidance(denoise_with_text, cond, uncond, scale, learned_variance=False):
  """Wraps a text-conditioned model into a guided `denoise_fn(z, level) -> output`.

  The guided output is uncond + scale * (cond - uncond). Guiding v is the same as guiding x0 or eps: at fixed z both
  are affine in v. Both branches run as one call on the doubled batch. With `learned_variance` (outputs of 2C
  channels: the prediction, then learned-range variance values; `parameterization.Parameterization`) only the
  prediction half is guided and the variance values are the conditional branch's, as DeepFloyd IF's pipelines do.

  Args:
    denoise_with_text: (z (B, ...), level (B,), text pytree with leading axis B) -> output.
    cond: text pytree of the prompts (leading axis B).
    uncond: text pytree of the null caption, same structure and shapes as `cond`.
    scale: guidance weight, a Python float; 1 runs the conditional model alone on the un-doubled batch.
    learned_variance: whether the output's last axis ends with variance values to keep unguided.
  """
  if scale == 1:
    return lambda z, level: denoise_with_text(z, level, cond)
  text = jax.tree.map(lambda c, u: jnp.concatenate([c, u]), cond, uncond)

  def denoise_fn(z, level):
    out_cond, out_uncond = jnp.split(
        denoise_with_text(jnp.concatenate([z, z]), jnp.concatenate([level, level]), text), 2)
    if not learned_variance:
      return out_uncond + scale * (out_cond - out_uncond)
    (pred_cond, values), (pred_uncond, _) = (jnp.split(out, 2, axis=-1) for out in (out_cond, out_uncond))
    return jnp.concatenate([pred_uncond + scale * (pred_cond - pred_uncond), values], axis=-1)

  return denoise_fn


def dynamic_threshold(x0, percentile, max_value=None):
  """Per example: s = max(quantile(|x0|, percentile), 1) over all non-batch dims; returns clip(x0, -s, s) / s.

  Keeps strongly guided x0 estimates inside [-1, 1] without the saturation of a plain clip. `max_value` caps s
  (diffusers' `sample_max_value`: 1.5 for IF stage I); None leaves it uncapped, as Imagen.
  """
  s = jnp.quantile(jnp.abs(x0), percentile, axis=tuple(range(1, x0.ndim)), keepdims=True)
  s = jnp.maximum(s, 1.0)
  if max_value is not None:
    s = jnp.minimum(s, max_value)
  return jnp.clip(x0, -s, s) / s
