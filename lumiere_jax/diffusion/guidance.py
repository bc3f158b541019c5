"""Classifier-free guidance (Ho & Salimans 2022) and Imagen's dynamic thresholding (Saharia et al. 2022)."""

import jax
import jax.numpy as jnp


def classifier_free_guidance(denoise_with_text, cond, uncond, scale):
  """Wraps a text-conditioned model into a guided `denoise_fn(z, logsnr) -> v`.

  The guided output is uncond + scale * (cond - uncond). Guiding v is the same as guiding x0 or eps: at fixed z both
  are affine in v. Both branches run as one call on the doubled batch.

  Args:
    denoise_with_text: (z (B, ...), logsnr (B,), text pytree with leading axis B) -> v.
    cond: text pytree of the prompts (leading axis B).
    uncond: text pytree of the null caption, same structure and shapes as `cond`.
    scale: guidance weight, a Python float; 1 runs the conditional model alone on the un-doubled batch.
  """
  if scale == 1:
    return lambda z, logsnr: denoise_with_text(z, logsnr, cond)
  text = jax.tree.map(lambda c, u: jnp.concatenate([c, u]), cond, uncond)

  def denoise_fn(z, logsnr):
    v_cond, v_uncond = jnp.split(
        denoise_with_text(jnp.concatenate([z, z]), jnp.concatenate([logsnr, logsnr]), text), 2)
    return v_uncond + scale * (v_cond - v_uncond)

  return denoise_fn


def dynamic_threshold(x0, percentile):
  """Per example: s = max(quantile(|x0|, percentile), 1) over all non-batch dims; returns clip(x0, -s, s) / s.

  Keeps strongly guided x0 estimates inside [-1, 1] without the saturation of a plain clip.
  """
  s = jnp.quantile(jnp.abs(x0), percentile, axis=tuple(range(1, x0.ndim)), keepdims=True)
  s = jnp.maximum(s, 1.0)
  return jnp.clip(x0, -s, s) / s
