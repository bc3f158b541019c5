"""Lumiere models: the text encoder plus the T2I U-Net (`stage='t2i'`) or the STUNet inflated from it (`'base'`,
`'ssr'`; the SSR's has no temporal resampling, so it runs on windows of any length).

Besides the noisy clip, a stage's U-Net may read a conditioning video concatenated to it (`stage_conditioning`): the
SR models (ssr, and t2i with `sr.factor`) the upsampled low-res clip, with its noise-augmentation level; the
conditional stage (the base STUNet fine-tuned for i2v, inpainting and cinemagraphs) the masked video and its mask.

Parameter paths (dotted, as in `models.params`): the text encoder lives under `text_encoder.`, the U-Net under
`unet.`; every temporal parameter has a path element starting with `temporal` and no spatial one does, and the
STUNet's spatial paths are exactly the T2I model's, so T2I weights load into the STUNet by path. A pretrained text
encoder (T5) takes its weights from `text.checkpoint` and never trains.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lumiere_jax.models import t5_weights, widen
from lumiere_jax.models.stunet import temporal_downsample_factor
from lumiere_jax.models.t5 import T5Encoder
from lumiere_jax.models.text import TextEncoder
from lumiere_jax.models.unet import UNet

__all__ = ['Conditioning', 'LumiereModel', 'MASKED', 'SUPERRES', 'adapt_pretrained', 'build_model',
           'build_text_encoder', 'pretrained_text_params', 'stage_conditioning', 'temporal_downsample_factor']

STAGES = ('t2i', 'base', 'ssr', 'conditional')
TEXT_ENCODERS = {'builtin': TextEncoder, 't5': T5Encoder}
# Encoders loaded from `text.checkpoint`: frozen whatever `train.trainable` says.
PRETRAINED_TEXT_ENCODERS = ('t5',)
TEXT_PREFIX = 'text_encoder.'


@dataclasses.dataclass(frozen=True)
class Conditioning:
  """What a stage's conditioning video is: the `model.cond_channels` and `model.cond_noise_level` it needs."""
  name: str
  channels: int
  noise_level: bool


SUPERRES = Conditioning('superres', channels=3, noise_level=True)  # the bilinearly upsampled low-res clip
# The conditional stage's video * mask and mask (data/masks.py: 1 = given pixel), concatenated: 3 + 1 channels.
MASKED = Conditioning('the masked video and its mask', channels=4, noise_level=False)


def stage_conditioning(config) -> Conditioning | None:
  """The conditioning video `config`'s model reads besides the noisy clip and the caption; None for text only."""
  if config.stage == 'ssr' or (config.stage == 't2i' and config.sr.factor):
    return SUPERRES
  if config.stage == 'conditional':
    return MASKED
  return None


def adapt_pretrained(config, pretrained: dict, shapes: dict) -> dict:
  """`model.init_from`'s flat parameters (another stage's) as `config`'s model (`shapes`) takes them: the conditional
  stage widens the base model's input convolution (`widen.py`); the other stages load by path as they are."""
  if config.stage == 'conditional':
    return widen.widen_input_conv(pretrained, shapes)
  return pretrained


def build_text_encoder(text_config, *, dtype, remat: str, rngs: nnx.Rngs) -> nnx.Module:
  """The encoder named by `text.encoder`: `(tokens (B, L), mask (B, L)) -> float32 (B, L, text.width)`."""
  if text_config.encoder not in TEXT_ENCODERS:
    raise ValueError(f'text.encoder={text_config.encoder!r}: unknown encoder (known: {tuple(TEXT_ENCODERS)})')
  return TEXT_ENCODERS[text_config.encoder](text_config, dtype=dtype, remat=remat, rngs=rngs)


def pretrained_text_params(text_config) -> dict[str, np.ndarray]:
  """A pretrained encoder's weights from `text.checkpoint`, keyed by model path (`text_encoder.…`); {} if none."""
  if text_config.encoder not in PRETRAINED_TEXT_ENCODERS:
    return {}
  return {TEXT_PREFIX + k: v for k, v in t5_weights.load_encoder_params(text_config.checkpoint).items()}


class LumiereModel(nnx.Module):
  """Text encoder + denoiser. The U-Net takes caption embeddings, never token ids."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    if config.stage not in STAGES:
      raise ValueError(f'stage={config.stage!r}: no model for it (known: {STAGES})')
    dtype = jnp.dtype(config.model.dtype)
    self.text_encoder = build_text_encoder(config.text, dtype=dtype, remat=config.model.remat_policy, rngs=rngs)
    self.unet = UNet(config.model, config.text.width, inflate=config.stage != 't2i', rngs=rngs)

  def encode_text(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """tokens int32 (B, L), mask bool (B, L) -> embeddings float32 (B, L, D), zero at masked positions."""
    return self.text_encoder(tokens, mask)

  def __call__(self, x: jax.Array, logsnr: jax.Array, text_emb: jax.Array, text_mask: jax.Array, *,
               conditioning: jax.Array | None = None, conditioning_logsnr: jax.Array | None = None,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """v-prediction float32 (B, T, H, W, C) for noisy x (B, T, H, W, C) at logsnr (B,) given the caption.

    `conditioning` (B, T, H, W, model.cond_channels) and its noise level `conditioning_logsnr` (B,) are the stage's
    conditioning video (`stage_conditioning`). `rngs` (with a 'dropout' stream) turns on `config.model.dropout`;
    without it the model is deterministic.
    """
    return self.unet(x, logsnr, text_emb, text_mask, conditioning=conditioning,
                     conditioning_logsnr=conditioning_logsnr, rngs=rngs)


def build_model(config, *, rngs: nnx.Rngs) -> LumiereModel:
  """The model of `config.stage` from the full config (`configs/lumiere.py`)."""
  return LumiereModel(config, rngs=rngs)
