"""Text-to-video sampling: a jitted sampler over flat parameters, and MP4/GIF output (CLI: cli/sample.py).

The sampler runs in three compiled parts (start, one denoising step called once per step, finish), so that
`generate` prints progress lines over the steps without a host callback inside the compiled walk (which would keep
it out of the persistent compile cache); compilations are kept per argument shapes.

Classifier-free guidance pairs each caption with the empty caption (zero embeddings, empty mask: what text dropout
trains), so it needs no encoder. A model without a text encoder (trained on pre-embedded captions,
`models.holds_text_encoder`) samples from given caption embeddings (`generate(embeddings=...)`). The sampler, steps,
guidance and thresholding come from the run's `config.sample`, overridable by flags.

Super-resolution models (`stages.SUPERRES` conditioning) also take the low-res clips they upsample: bilinearly
upsampled, noised once per clip to `sr.sample_augment` (noise-conditioning augmentation, the level told to the
model) and shared by both guidance branches. The SSR runs on windows of `sr.window` frames overlapping by
`sr.overlap`, reconciled at every step by MultiDiffusion (`diffusion/multidiffusion.py`); the sampler's noise is
drawn once for the whole clip.

The conditional stage reads a given clip and mask (`conditional.py`; nothing given: text-to-video) and keeps the given
pixels in its output; any video stage edits a clip by SDEdit (`edit`, `strength`).

With a mesh, a batch of prompts is split over its data-parallel devices: `generate` pads the prompts to a multiple of
their count (repeating the last) and trims the padding afterwards. Every random draw depends only on its element's
index (threefry, `jax_threefry_partitionable`), so the padded, sharded batch gives the same clips as the plain one.
Before sampling, `generate` compares the compiled sampler's memory with the device's limit where the backend reports
one, and names the batch size to lower instead of running out of memory.
"""

import functools
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from lumiere_jax import conditional, editing, progress, stages
from lumiere_jax.data import synthetic, tokenizers, transforms, video
from lumiere_jax.diffusion import guidance, losses, multidiffusion, parameterization, samplers, schedules, superres
from lumiere_jax.models.params import ModelSpec
from lumiere_jax.parallel import mesh as mesh_lib


def clip_shape(config, num_frames: int | None = None) -> tuple[int, int, int, int]:
  """(frames, height, width, channels) the model generates: single frames for t2i, clips otherwise.

  `num_frames` (an SR model's: its low-res input's) replaces the config's frame count.
  """
  m = config.model
  frames = num_frames or stages.of(config).sample_frames(config)
  return frames, m.image_size, m.image_size, m.out_channels


def lowres_size(config) -> int:
  """Side of the low-res frames an SR model upsamples."""
  return config.model.image_size // config.sr.factor


def check_lowres(config, shape: tuple[int, ...]) -> None:
  """Raises ValueError naming the problem when `config`'s SR model cannot upsample clips of `shape`."""
  size = lowres_size(config)
  if len(shape) != 5 or tuple(shape[2:]) != (size, size, 3):
    raise ValueError(f'low-res input of shape {tuple(shape)}: this model (model.image_size={config.model.image_size}, '
                     f'sr.factor={config.sr.factor}) upsamples (N, frames, {size}, {size}, 3) clips')
  if stages.of(config).windowed and shape[1] < config.sr.window:
    raise ValueError(f'sr.window={config.sr.window} is longer than the {shape[1]}-frame clip to upsample')


def _superres_context(config, lowres, rng, schedule) -> dict:
  """The SR conditioning inputs for low-res clips (N, T, h, w, 3) in [-1, 1], noised to `sr.sample_augment` (the
  model told that level as `schedule.model_input` gives it)."""
  height, width = config.model.image_size, config.model.image_size
  condition = superres.upsample(jnp.asarray(lowres, jnp.float32), height, width)
  times = jnp.full(lowres.shape[:1], config.sr.sample_augment, jnp.float32)
  noised = losses.add_noise(condition, jax.random.normal(rng, condition.shape), schedule.logsnr(times))
  return dict(conditioning=noised, conditioning_level=schedule.model_input(times))


class Compiled(NamedTuple):
  """The sampler's three parts compiled for one set of argument shapes and layouts (`Sampler.compile`); no step for
  an edit at strength 0, which takes none."""
  start: jax.stages.Compiled
  step: jax.stages.Compiled | None
  finish: jax.stages.Compiled


class Sampler:
  """`sampler(params, captions, token_mask, rng[, lowres][, given=, edit=]) -> videos float32 (N, T, H, W, C) in
  [-1, 1]`, in three jitted parts so that progress can be reported between denoising steps.

  `captions` are token ids int32 (N, L), which the model encodes, or the captions' embeddings float (N, L, D).
  `start` encodes the captions, builds the conditioning and draws the starting noise; `step` takes denoising step i
  (one compilation serves every i); `finish` keeps the given pixels. SR models take `lowres` float (N, T, H /
  sr.factor, W / sr.factor, 3) in [-1, 1] (check it with `check_lowres`). The conditional stage takes `given` = (clip
  float (N, T, H, W, 3) in [-1, 1], mask (N, T, H, W, 1), 1 = given): its conditioning input, and the output keeps
  the given pixels (`conditional.keep_given`). `edit` (N, T, H, W, 3) in [-1, 1] is a clip to edit by SDEdit at
  `strength` (`editing.sdedit`) instead of sampling from noise. With `mesh` (where the parameters lie), the batch
  (inputs, noise, output) and the SSR's MultiDiffusion windows are split over its data-parallel devices when they
  divide evenly (`generate` pads the batch so that they do).
  """

  def __init__(self, spec: ModelSpec, config, strength: float = 1.0, mesh: jax.sharding.Mesh | None = None):
    self.spec, self.config, self.strength, self.mesh = spec, config, strength, mesh
    self.schedule = schedules.from_config(config.diffusion)
    self.parameterization = parameterization.Parameterization.from_config(config.diffusion)
    stage = stages.of(config)
    self.superresolution = stage.conditioning_of(config) == stages.SUPERRES
    self.windowed = stage.windowed
    self._compiled = {}
    self._start = jax.jit(self._start_fn, static_argnames='t_start')
    self._step = jax.jit(self._step_fn, static_argnames='t_start')
    self._finish = jax.jit(self._finish_fn)

  def walk(self, edit) -> tuple[float, int]:
    """(t_start, number of denoising steps): from noise, or from the edit's strength (no step at strength 0)."""
    t_start = 1.0 if edit is None else editing.check_strength(self.strength)
    return t_start, self.config.sample.steps if t_start > 0 else 0

  def _start_fn(self, params, captions, token_mask, rng, lowres=None, given=None, edit=None, *, t_start):
    """-> (z at t_start, the model's conditioning inputs, the steps' PRNG key)."""
    model = self.spec.merge(params)
    split = _batch_constraint(self.mesh, captions.shape[0])
    captions, token_mask, lowres, edit = (split(x) for x in (captions, token_mask, lowres, edit))
    rng_noise, rng_steps, rng_condition = jax.random.split(rng, 3)
    embedded = jnp.issubdtype(captions.dtype, jnp.floating)
    context = dict(text_emb=captions if embedded else model.encode_text(captions, token_mask), text_mask=token_mask)
    if self.superresolution:
      context.update(_superres_context(self.config, lowres, rng_condition, self.schedule))
    if given is not None:
      context['conditioning'] = split(conditional.model_input(*(split(x) for x in given)))
    shape = (captions.shape[0], *clip_shape(self.config, lowres.shape[1] if self.superresolution else None))
    noise = split(jax.random.normal(rng_noise, shape, jnp.float32))
    z = noise if edit is None else editing.noised(edit, noise, schedule=self.schedule, strength=t_start)
    return z, context, rng_steps

  def _step_fn(self, params, z, context, rng_steps, i, *, t_start):
    """Denoising step i (traced) of the walk from t_start, with classifier-free guidance."""
    s = self.config.sample
    model = self.spec.merge(params)
    denoise_with_context = lambda z, level, context: model(z, level, **context)  # noqa: E731
    if self.windowed:
      denoise_with_context = multidiffusion.windowed(
          denoise_with_context, num_frames=z.shape[1], window=self.config.sr.window, overlap=self.config.sr.overlap,
          frame_inputs={name: name == 'conditioning' for name in context},
          window_sharding=_window_sharding(self.mesh, self.config, z.shape))
    empty = dict(context, text_emb=jnp.zeros_like(context['text_emb']),
                 text_mask=jnp.zeros_like(context['text_mask']))
    denoise = guidance.classifier_free_guidance(denoise_with_context, context, empty, s.guidance,
                                                learned_variance=self.parameterization.learned_variance)
    step = samplers.stepper(
        denoise, schedule=self.schedule, steps=s.steps, sampler=s.sampler, eta=s.eta, rng=rng_steps,
        dynamic_threshold=s.dynamic_threshold, t_start=t_start, parameterization=self.parameterization,
        dynamic_threshold_max=s.dynamic_threshold_max, spacing=s.timestep_spacing)
    return _batch_constraint(self.mesh, z.shape[0])(step(i, z))

  def _finish_fn(self, z, given=None):
    """The walk's end as videos: the given pixels kept (the conditional stage)."""
    videos = z if given is None else conditional.keep_given(z, *given)
    return _batch_constraint(self.mesh, z.shape[0])(videos)

  def compile(self, params, *args, announce: bool = False, **kwargs) -> Compiled:
    """The three parts compiled for these arguments (as `__call__` takes them), cached per shapes and layouts; with
    `announce`, a line says so before compiling anew (minutes at paper size)."""
    leaves, structure = jax.tree.flatten((params, args, kwargs))
    key = structure, tuple((np.shape(x), getattr(x, 'dtype', type(x)), getattr(x, 'sharding', None)) for x in leaves)
    if key not in self._compiled:
      if announce and progress.is_process_zero():
        print(f'compiling the sampler for a batch of {args[0].shape[0]}...', flush=True)
      t_start, steps = self.walk(kwargs.get('edit'))
      start = self._start.lower(params, *args, t_start=t_start, **kwargs).compile()
      z, context, rng_steps = start.out_info
      step_index = jax.ShapeDtypeStruct((), jnp.int32)
      step = self._step.lower(params, z, context, rng_steps, step_index, t_start=t_start).compile() if steps else None
      finish = self._finish.lower(z, kwargs.get('given')).compile()
      self._compiled[key] = Compiled(start, step, finish)
    return self._compiled[key]

  def __call__(self, params, *args, progress_what: str | None = None, **kwargs) -> jax.Array:
    """The videos; with `progress_what`, progress lines about it after the denoising steps (`progress.Progress`)."""
    compiled = self.compile(params, *args, **kwargs)
    z, context, rng_steps = compiled.start(params, *args, **kwargs)
    steps = self.walk(kwargs.get('edit'))[1]
    counter = progress.Progress(steps, progress_what, enabled=None if progress_what else False)
    for i in range(steps):
      z = compiled.step(params, z, context, rng_steps, np.int32(i))
      if progress_what:
        z.block_until_ready()  # the rate of steps done, not of steps dispatched
      counter.advance()
    return compiled.finish(z, kwargs.get('given'))


def make_sampler(spec: ModelSpec, config, strength: float = 1.0, mesh: jax.sharding.Mesh | None = None) -> Sampler:
  """A `Sampler` of `config.sample`'s walk for the model of `spec` (see `Sampler`)."""
  return Sampler(spec, config, strength, mesh)


def _batch_sharding(mesh, batch_size: int) -> jax.sharding.NamedSharding | None:
  """The leading dimension split over the mesh's batch axes; None without a mesh or when they do not divide it."""
  if mesh is None or batch_size % mesh_lib.data_parallel_size(mesh):
    return None
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(mesh_lib.BATCH_AXES))


def _batch_constraint(mesh, batch_size: int):
  """`x -> x` constrained to `_batch_sharding`, or replicated over the mesh where that is None (None stays None; no
  mesh: unchanged), so that each part of the sampler hands the next arrays on the mesh's devices."""
  if mesh is None:
    return lambda x: x
  sharding = _batch_sharding(mesh, batch_size) or jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return lambda x: x if x is None else jax.lax.with_sharding_constraint(x, sharding)


def _window_sharding(mesh, config, shape):
  """The stacked windows (windows x guidance branches x clips) split over the mesh's batch axes, if they divide."""
  branches = 1 if config.sample.guidance == 1 else 2  # guidance.classifier_free_guidance doubles the batch
  windows = len(multidiffusion.window_starts(shape[1], config.sr.window, config.sr.overlap)) * branches * shape[0]
  return _batch_sharding(mesh, windows)


def training_lowres(config, count: int, seed: int = 0) -> np.ndarray:
  """uint8 low-res clips for an SR model's samples during training, where no base model is at hand: synthetic
  moving shapes (`data/synthetic.py`) at the low-res size, one per prompt."""
  rng = np.random.default_rng(seed)
  frames = clip_shape(config)[0]
  return np.stack([synthetic.make_clip(rng, lowres_size(config), frames)[0][:frames] for _ in range(count)])


def generate(spec: ModelSpec, params, config, prompts: Sequence[str], seed: int = 0, sampler=None,
             lowres: np.ndarray | None = None, given: tuple[np.ndarray, np.ndarray] | None = None,
             edit: np.ndarray | None = None, strength: float = 1.0, mesh: jax.sharding.Mesh | None = None,
             show_progress: bool = True, embeddings: dict | None = None) -> np.ndarray:
  """uint8 videos (N, T, H, W, C) for the prompts; pass `sampler` (from make_sampler) to reuse its compilation.

  An SR model upsamples `lowres`, uint8 (N, T, h, w, 3) (default: `training_lowres`). The conditional stage reads
  `given` = (clip uint8 (T, H, W, 3), mask (T, H, W, 1), 1 = given), the same for every prompt (default: nothing
  given, plain text-to-video; `conditional.read_inputs` makes it). `edit`, uint8 (T, H, W, 3), is edited by SDEdit
  at `strength` instead. `mesh` (where `params` lie; the sampler's, if given) splits the batch over its data-parallel
  devices, padded to a multiple of their count. ValueError before sampling when the compiled sampler needs more
  memory than a device has (`check_memory`). `show_progress` prints progress lines over the denoising steps (off
  where the caller reports progress over many calls). `embeddings` (prompt -> (embeddings (L, D), mask (L,)),
  `ingest.embed_captions.prompt_embeddings`) replace tokenizing and encoding the prompts: a model without a text
  encoder needs them.
  """
  if not prompts:
    raise ValueError('no prompts to sample')
  count = len(prompts)
  padded = list(prompts) + [prompts[-1]] * (-count % (1 if mesh is None else mesh_lib.data_parallel_size(mesh)))
  captions, mask = _captions(config, padded, embeddings)
  sampler = sampler or make_sampler(spec, config, strength, mesh)
  per_prompt = lambda x: np.broadcast_to(np.asarray(x), (len(padded), *np.shape(x)))  # noqa: E731
  kwargs = {} if edit is None else dict(edit=per_prompt(transforms.normalize(np.asarray(edit))))
  conditioning = stages.of(config).conditioning_of(config)
  if conditioning == stages.MASKED:
    frames, height, width, _ = clip_shape(config)
    clip, keep = given or (np.zeros((frames, height, width, 3), np.uint8), np.zeros((frames, height, width, 1)))
    kwargs['given'] = (per_prompt(transforms.normalize(np.asarray(clip))), per_prompt(np.asarray(keep, np.float32)))
  elif given is not None:
    raise ValueError(f'stage {config.stage} reads no given clip and mask; a stage conditioned on {stages.MASKED.name} '
                     'does')
  args = ()
  if conditioning == stages.SUPERRES:
    lowres = training_lowres(config, count, seed) if lowres is None else np.asarray(lowres)
    check_lowres(config, lowres.shape)
    if len(lowres) != count:
      raise ValueError(f'{len(lowres)} low-res clips for {count} prompts')
    args = (transforms.normalize(np.concatenate([lowres, np.repeat(lowres[-1:], len(padded) - count, axis=0)])),)
  batch = _batch_sharding(mesh, len(padded))  # None without a mesh: the default device
  replicated = None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  place = functools.partial(_place, sharding=batch)
  args = (place(captions), place(mask), _place(jax.random.PRNGKey(seed), replicated), *map(place, args))
  kwargs = jax.tree.map(place, kwargs)
  device = (jax.local_devices() if mesh is None else mesh.local_devices)[0]
  check_memory(sampler.compile(params, *args, announce=show_progress, **kwargs), device, count, len(padded))
  what = f'sampling {count} clip{"s" * (count > 1)}: denoising steps' if show_progress else None
  videos = sampler(params, *args, progress_what=what, **kwargs)
  videos = jnp.clip(jnp.round((videos + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
  return (np.asarray(videos) if videos.is_fully_addressable else
          multihost_utils.process_allgather(videos, tiled=True))[:count]


def _captions(config, prompts: Sequence[str], embeddings: dict | None) -> tuple[np.ndarray, np.ndarray]:
  """(token ids or embeddings, mask) of the prompts: from `embeddings` when given (ValueError naming a prompt it
  lacks), else `config.text`'s tokenizer."""
  if embeddings is None:
    return tokenizers.build_tokenizer(config.text).encode(prompts)
  missing = [prompt for prompt in prompts if prompt not in embeddings]
  if missing:
    raise ValueError(f'no caption embeddings for the prompt {missing[0]!r}')
  return tuple(np.stack([embeddings[prompt][part] for prompt in prompts]) for part in (0, 1))


def _place(x, sharding: jax.sharding.NamedSharding | None) -> jax.Array:
  """A host array, the same on every process, as a global array laid out by `sharding` (None: the default device)."""
  x = np.asarray(x)
  return jnp.asarray(x) if sharding is None else jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])


def device_memory_limit(device) -> int | None:
  """Bytes one device may allocate as the backend reports it (`memory_stats()['bytes_limit']` on GPU / TPU); None
  where it reports none (CPU)."""
  stats = device.memory_stats()
  return stats.get('bytes_limit') if stats else None


def memory_needed(compiled: Compiled) -> dict[str, int] | None:
  """Bytes per device of the sampler's largest part (temporaries, arguments, outputs; XLA's analysis), or None where
  the backend reports none."""
  figures = []
  for part in filter(None, compiled):
    analysis = part.memory_analysis()
    if analysis is None:
      return None
    figures.append({'temporaries': analysis.temp_size_in_bytes, 'arguments': analysis.argument_size_in_bytes,
                    'outputs': analysis.output_size_in_bytes})
  return max(figures, key=lambda f: sum(f.values()))


def check_memory(compiled: Compiled, device, count: int, padded: int) -> None:
  """ValueError naming the batch and the figures when a part of the compiled sampler needs more memory per device
  (`memory_needed`) than `device`'s limit: a clear error instead of running out of memory."""
  figures = memory_needed(compiled)
  limit = device_memory_limit(device)
  if figures is None or not limit:
    return
  needed = sum(figures.values())
  if needed > limit:
    gib = lambda n: f'{n / 2**30:.2f} GiB'  # noqa: E731
    detail = ', '.join(f'{name} {gib(n)}' for name, n in figures.items())
    raise ValueError(f'sampling a batch of {count} clips (padded to {padded} over the data-parallel devices) needs '
                     f'{gib(needed)} per device ({detail}), over the {gib(limit)} a {device.device_kind} device has: '
                     'sample fewer clips at once (a smaller --config.chunk_size for lumiere-eval or '
                     'train.batch_size for the in-training FVD, fewer --prompt or config.sample.prompts)')


def write_samples(videos: np.ndarray, prompts: Sequence[str], out_dir: pathlib.Path, fps: float) -> list[pathlib.Path]:
  """One MP4 per prompt plus a GIF grid of all of them; returns the MP4 paths."""
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = []
  for i, (clip, prompt) in enumerate(zip(videos, prompts)):
    paths.append(out_dir / f'{i:02d}-{slug(prompt)}.mp4')
    video.write_mp4(paths[-1], clip, fps)
  video.write_gif(out_dir / 'grid.gif', video.tile(videos, columns=min(4, len(videos))), fps)
  return paths


def slug(text: str) -> str:
  """A caption as a file or tag name: lower case, alphanumerics kept, the rest `_`, at most 48 characters."""
  return ''.join(c if c.isalnum() else '_' for c in text.lower())[:48].strip('_')
