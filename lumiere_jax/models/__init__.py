"""Lumiere models: the text encoder plus the T2I U-Net (`stage='t2i'`) or the STUNet inflated from it (the stages
whose description says `inflated`, `lumiere_jax/stages.py`; the SSR's has no temporal resampling, so it runs on
windows of any length).

Besides the noisy clip, a stage's U-Net may read a conditioning video concatenated to it
(`stages.Stage.conditioning_of`): the SR models the upsampled low-res clip, with its noise-augmentation level; the
conditional stage (the base STUNet fine-tuned for i2v, inpainting and cinemagraphs) the masked video and its mask.

Parameter paths (dotted, as in `models.params`): the text encoder lives under `text_encoder.`, the U-Net under
`unet.`; every temporal parameter has a path element starting with `temporal` and no spatial one does, and the
STUNet's spatial paths are exactly the T2I model's, so T2I weights load by path. A pretrained text encoder (T5) takes
its weights from `text.checkpoint` and never trains; a run on pre-embedded captions (`data.text_embeddings`) with one
holds none at all (`holds_text_encoder`): the batches carry its outputs, and what samples encodes prompts apart.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lumiere_jax import stages
from lumiere_jax.diffusion.parameterization import Parameterization
from lumiere_jax.models import checks, layers, params as params_lib, text_encoders, widen
from lumiere_jax.models.deepfloyd_if import IFUNet, IFUNetConfig, Inflation
from lumiere_jax.models.stunet import temporal_downsample_factor
from lumiere_jax.models.text_encoders import (PRETRAINED_TEXT_ENCODERS, TEXT_ENCODERS, TEXT_PREFIX, build_text_encoder,
                                              pretrained_text_params)
from lumiere_jax.models.unet import UNet

__all__ = ['LumiereModel', 'PRETRAINED_TEXT_ENCODERS', 'TEXT_ENCODERS', 'TEXT_PREFIX', 'adapt_pretrained',
           'build_model', 'build_text_encoder', 'build_unet', 'config_errors', 'holds_text_encoder', 'if_unet_config',
           'model_spec',
           'pretrained_text_params', 'split_trainable', 'temporal_downsample_factor']


def config_errors(config, *, training: bool = True):
  """(field, problem) for the `model` and `text` config sections (`training`: see `text_encoders.config_errors`)."""
  yield from checks.config_errors(config)
  yield from text_encoders.config_errors(config, training=training)


def adapt_pretrained(config, pretrained: dict, shapes: dict) -> dict:
  """`model.init_from`'s flat parameters (another stage's) as `config`'s model (`shapes`) takes them: a stage that
  reads more conditioning channels widens the input convolution (`widen.py`); the others load by path as they are."""
  if stages.of(config).widens_input:
    return widen.widen_input_conv(pretrained, shapes)
  return pretrained


def holds_text_encoder(config) -> bool:
  """Whether `config`'s model holds its text encoder: not a pretrained (frozen) one whose outputs the training
  records carry (`data.text_embeddings`); the built-in encoder stays, its weights being the run's own."""
  return not (config.data.text_embeddings and config.text.encoder in PRETRAINED_TEXT_ENCODERS)


def split_trainable(config, paths) -> tuple[list[str], list[str]]:
  """Parameter paths split into (trainable, frozen) by `train.trainable`; a pretrained text encoder (T5) is always
  frozen. ValueError when nothing trains."""
  trainable, frozen = params_lib.select(paths, config.train.trainable)
  if config.text.encoder in PRETRAINED_TEXT_ENCODERS:  # loaded at init, never trained
    frozen = sorted(frozen + [k for k in trainable if k.startswith(TEXT_PREFIX)])
    trainable = [k for k in trainable if not k.startswith(TEXT_PREFIX)]
  if not trainable:
    raise ValueError(f'config.train.trainable={config.train.trainable!r} selects no parameter')
  return trainable, frozen


def if_unet_config(config) -> IFUNetConfig:
  """The DeepFloyd IF U-Net of `model.deepfloyd`, reading the channels this stage feeds it (noisy clip plus its
  conditioning video) and writing those its parameterization needs (epsilon and the learned-range variance)."""
  m = config.model
  out_channels = Parameterization.from_config(config.diffusion).output_channels(m.out_channels)
  return IFUNetConfig.from_diffusers({**m.deepfloyd.to_dict(), 'in_channels': m.in_channels + m.cond_channels,
                                      'out_channels': out_channels})


def build_unet(config, *, rngs: nnx.Rngs) -> nnx.Module:
  """The `model.backbone` U-Net, inflated into the STUNet for the stages that say so (the same rules either way)."""
  m, inflate = config.model, stages.of(config).inflated
  if m.backbone == 'deepfloyd_if':
    inflation = (Inflation(tuple(m.temporal_downsample), m.temporal_attention_depth, m.num_heads, m.norm_groups)
                 if inflate else None)
    execution = dataclasses.asdict(layers.Execution.from_model_config(m))
    return IFUNet(if_unet_config(config), dtype=m.dtype, inflation=inflation, rngs=rngs, **execution)
  return UNet(m, config.text.width, inflate=inflate, rngs=rngs)


class LumiereModel(nnx.Module):
  """Text encoder (none where `holds_text_encoder` says so) + denoiser. The U-Net takes caption embeddings, never
  token ids."""

  def __init__(self, config, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(config.model.dtype)
    self.text_encoder = (build_text_encoder(config.text, dtype=dtype, remat=config.model.remat_policy, rngs=rngs)
                         if holds_text_encoder(config) else None)
    self.unet = build_unet(config, rngs=rngs)
    self.backbone = config.model.backbone

  def encode_text(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """tokens int32 (B, L), mask bool (B, L) -> embeddings float32 (B, L, D), zero at masked positions."""
    if self.text_encoder is None:
      raise ValueError('this model holds no text encoder (data.text_embeddings=True with a pretrained text.encoder): '
                       'give it caption embeddings')
    return self.text_encoder(tokens, mask)

  def __call__(self, x: jax.Array, noise_level: jax.Array, text_emb: jax.Array, text_mask: jax.Array, *,
               conditioning: jax.Array | None = None, conditioning_level: jax.Array | None = None,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """The prediction float32 (B, T, H, W, C_out) for noisy x (B, T, H, W, C) at `noise_level` (B,) given the caption.

    What is predicted and the noise level's form follow `config.diffusion` (`diffusion/parameterization.py`,
    `schedules.model_input`): v at a log-SNR for our backbone, epsilon and the variance values at an integer timestep
    for IF. `conditioning` (B, T, H, W, model.cond_channels) and its noise level `conditioning_level` (B,) are the
    stage's conditioning video (`stages.Stage.conditioning_of`). `rngs` (with a 'dropout' stream) turns on
    `config.model.dropout`; without it the model is deterministic.
    """
    if self.backbone == 'deepfloyd_if':
      return self.unet(x, noise_level, text_emb, text_mask, conditioning=conditioning,
                       class_labels=conditioning_level, rngs=rngs)
    return self.unet(x, noise_level, text_emb, text_mask, conditioning=conditioning,
                     conditioning_level=conditioning_level, rngs=rngs)


def build_model(config, *, rngs: nnx.Rngs) -> LumiereModel:
  """The model of `config.stage` from the full config (`configs/lumiere.py`)."""
  return LumiereModel(config, rngs=rngs)


def model_spec(config) -> params_lib.ModelSpec:
  """The model of `config` as a spec (graph, parameter shapes, logical axis names), built abstractly: no memory."""
  return params_lib.ModelSpec.from_builder(lambda: build_model(config, rngs=nnx.Rngs(config.seed)))
