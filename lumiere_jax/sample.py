"""Text-to-video sampling: a jitted sampler over flat parameters, and MP4/GIF output (CLI: cli/sample.py).

Classifier-free guidance pairs each caption with the empty caption (zero embeddings, empty mask: what text dropout
trains). The sampler, steps, guidance and thresholding come from the run's `config.sample`, overridable by flags.
"""

import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lumiere_jax.data import tokenizers, video
from lumiere_jax.diffusion import guidance, samplers, schedules
from lumiere_jax.models.params import ModelSpec


def clip_shape(config) -> tuple[int, int, int, int]:
  """(frames, height, width, channels) the model generates: single frames for t2i, clips otherwise."""
  m = config.model
  return (1 if config.stage == 't2i' else m.num_frames), m.image_size, m.image_size, m.out_channels


def make_sampler(spec: ModelSpec, config):
  """A jitted `(params, tokens, token_mask, rng) -> videos float32 (N, T, H, W, C) in [-1, 1]`."""
  s = config.sample
  schedule = schedules.Schedule.from_config(config.diffusion)

  def sample(params, tokens, token_mask, rng):
    model = spec.merge(params)
    text_emb = model.encode_text(tokens, token_mask)
    empty = (jnp.zeros_like(text_emb), jnp.zeros_like(token_mask))
    denoise = guidance.classifier_free_guidance(
        lambda z, logsnr, text: model(z, logsnr, *text), (text_emb, token_mask), empty, s.guidance)
    rng_noise, rng_steps = jax.random.split(rng)
    noise = jax.random.normal(rng_noise, (tokens.shape[0], *clip_shape(config)), jnp.float32)
    return samplers.sample(denoise, noise, schedule=schedule, steps=s.steps, sampler=s.sampler, eta=s.eta,
                           rng=rng_steps, dynamic_threshold=s.dynamic_threshold)

  return jax.jit(sample)


def generate(spec: ModelSpec, params, config, prompts: Sequence[str], seed: int = 0, sampler=None) -> np.ndarray:
  """uint8 videos (N, T, H, W, C) for the prompts; pass `sampler` (from make_sampler) to reuse its compilation."""
  tokens, mask = tokenizers.build_tokenizer(config.text).encode(list(prompts))
  sampler = sampler or make_sampler(spec, config)
  videos = sampler(params, jnp.asarray(tokens), jnp.asarray(mask), jax.random.PRNGKey(seed))
  return np.asarray(jnp.clip(jnp.round((videos + 1.0) * 127.5), 0, 255).astype(jnp.uint8))


def write_samples(videos: np.ndarray, prompts: Sequence[str], out_dir: pathlib.Path, fps: float) -> list[pathlib.Path]:
  """One MP4 per prompt plus a GIF grid of all of them; returns the MP4 paths."""
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for i, (clip, prompt) in enumerate(zip(videos, prompts)):
    paths.append(out_dir / f'{i:02d}-{_slug(prompt)}.mp4')
    video.write_mp4(paths[-1], clip, fps)
  video.write_gif(out_dir / 'grid.gif', video.tile(videos, columns=min(4, len(videos))), fps)
  return paths


def _slug(text: str) -> str:
  return ''.join(c if c.isalnum() else '_' for c in text.lower())[:48].strip('_')
