"""SSR with temporal MultiDiffusion: memory and time of windowed vs full-clip forwards, and seams (paper Fig. 14).

    python benchmarks/ssr_multidiffusion.py [--size tiny] [--frames 16] [--window 4] [--overlap 2] [--steps 8]
        [--train_steps 300]

Forward: one SSR call on a T-frame clip at the model's resolution (batch 1), compiled three ways: the full clip at
once, all MultiDiffusion windows as one batch (what `sample.make_sampler` runs), and a single window (what each device
holds when the windows are spread one per device, or what a sequential loop holds). Peak memory is XLA's buffer
assignment of the compiled call (arguments + outputs + temporaries, `memory_analysis()`); time is the median of
--repeats calls.

Seams: the SSR upsamples --clips synthetic moving-shape clips (`data/synthetic.py`, with their captions) twice: with
MultiDiffusion (windows of W overlapping by O, averaged at every step) and without (non-overlapping windows, each
denoised on its own: overlap 0, nothing to average). Reported: the mean absolute frame-to-frame difference (0-255
levels) across the borders of the non-overlapping windows vs between frames inside them. The model is first trained
from scratch for --train_steps on the synthetic set (all parameters; 0 keeps the initial parameters, each perturbed so
the zero-initialised temporal layers are live): a short CPU run, so the figures show how much disagreement window
borders add, not image quality.
"""

import pathlib
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from lumiere_jax import config as config_lib
from lumiere_jax import validation
from lumiere_jax import models
from lumiere_jax import sample as sample_lib
from lumiere_jax.data import synthetic
from lumiere_jax.diffusion import multidiffusion
from lumiere_jax.models import params as params_lib
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import main as train_main, state as state_lib

_SIZE = flags.DEFINE_string('size', 'tiny', 'SSR config size (configs/lumiere.py SR_SIZES).')
_FRAMES = flags.DEFINE_integer('frames', 16, 'Clip length T.')
_WINDOW = flags.DEFINE_integer('window', 4, 'MultiDiffusion window W.')
_OVERLAP = flags.DEFINE_integer('overlap', 2, 'MultiDiffusion overlap O.')
_STEPS = flags.DEFINE_integer('steps', 8, 'Sampling steps of the seam measurement.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed forward calls per variant.')
_CLIPS = flags.DEFINE_integer('clips', 4, 'Synthetic low-res clips the seam figures average over.')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 300, 'Training steps before the seam measurement (0: none).')


def _config(window: int, overlap: int, frames: int, steps: int):
  config = config_lib.load(f'stage=ssr,size={_SIZE.value}')
  config.model.num_frames = frames
  config.sr.update(dict(window=window, overlap=overlap))
  config.sample.update(dict(steps=steps, sampler='ancestral'))
  config.mesh.data = 1
  validation.validate(config, num_devices=1, num_processes=1, training=False)  # random weights on purpose
  return config


def _params(config) -> dict:
  """The model's initial parameters, each perturbed so the zero-initialised (temporal) layers are live."""
  params = params_lib.flat_params(models.build_model(config, rngs=nnx.Rngs(0)))
  keys = jax.random.split(jax.random.PRNGKey(0), len(params))
  return {k: v + 0.05 * jax.random.normal(key, v.shape) for (k, v), key in zip(sorted(params.items()), keys)}


def _trained_params(config, steps: int) -> dict:
  """EMA parameters after `steps` from-scratch training steps on a small synthetic set (in a temporary workdir)."""
  config = config.copy_and_resolve_references()
  config.train.update(dict(steps=steps, trainable='all', warmup_steps=min(50, steps), checkpoint_every=steps,
                           log_every=max(1, steps // 5)))
  config.data.synthetic_clips = 64
  with tempfile.TemporaryDirectory() as workdir:
    config.data.synthetic_dir = str(pathlib.Path(workdir) / 'data')
    result = train_main.train(config, pathlib.Path(workdir) / 'run', devices=jax.devices()[:1])
  return state_lib.inference_params(result.state)


def _forward_stats(spec, params, config, frames: int, windows: bool):
  """(peak MiB, median seconds) of one forward on a `frames`-frame clip, whole or as MultiDiffusion windows."""
  size = config.model.image_size
  text = jnp.zeros((1, config.text.max_length, config.text.width))
  context = dict(text_emb=text, text_mask=jnp.ones(text.shape[:2], bool),
                 conditioning=jnp.zeros((1, frames, size, size, 3)), conditioning_level=jnp.zeros(1))
  z = jax.random.normal(jax.random.PRNGKey(1), (1, frames, size, size, 3))

  def call(params, z, context):
    denoise = lambda z, logsnr, context: spec.merge(params)(z, logsnr, **context)  # noqa: E731
    if windows:
      denoise = multidiffusion.windowed(denoise, num_frames=frames, window=config.sr.window,
                                        overlap=config.sr.overlap,
                                        frame_inputs={name: name == 'conditioning' for name in context})
    return denoise(z, jnp.zeros(z.shape[:1]), context)

  compiled = jax.jit(call).lower(params, z, context).compile()
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes) / 2**20
  jax.block_until_ready(compiled(params, z, context))
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, z, context))
    times.append(time.perf_counter() - start)
  return peak, statistics.median(times)


def _seams(spec, params, frames: int, window: int, overlap: int, lowres: np.ndarray, captions: list[str]):
  """Mean |frame t+1 - frame t| (0-255) across the borders of W-frame blocks and inside them, over SSR samples of
  the low-res clips."""
  config = _config(window, overlap, frames, _STEPS.value)
  clips = sample_lib.generate(spec, params, config, captions, seed=0, lowres=lowres)
  steps = np.abs(np.diff(clips.astype(np.float64), axis=1)).mean(axis=(0, 2, 3, 4))  # steps[t]: frame t -> t + 1
  border = np.arange(window - 1, frames - 1, window)
  inside = np.setdiff1d(np.arange(frames - 1), border)
  return steps[border].mean(), steps[inside].mean()


def main(argv):
  del argv
  frames, window, overlap = _FRAMES.value, _WINDOW.value, _OVERLAP.value
  config = _config(window, overlap, frames, _STEPS.value)
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  spec = state_lib.TrainSetup.create(config, mesh).spec
  params = _trained_params(config, _TRAIN_STEPS.value) if _TRAIN_STEPS.value else _params(config)
  starts = multidiffusion.window_starts(frames, window, overlap)
  size = config.model.image_size
  print(f'SSR {_SIZE.value}: {size // config.sr.factor} -> {size} px, {frames} frames, window {window}, overlap '
        f'{overlap} ({len(starts)} windows), {jax.devices()[0].platform}')
  print('| forward | frames through the model | peak memory (MiB) | time (s) |')
  print('|---|---|---|---|')
  for name, clip, windows in (('full clip', frames, False), (f'{len(starts)} windows, one batch', frames, True),
                              ('one window (per device when spread)', window, False)):
    peak, seconds = _forward_stats(spec, params, config, clip, windows)
    print(f'| {name} | {len(starts) * window if windows else clip} | {peak:.1f} | {seconds:.3f} |')

  rng = np.random.default_rng(0)
  made = [synthetic.make_clip(rng, size // config.sr.factor, frames) for _ in range(_CLIPS.value)]
  lowres, captions = np.stack([clip[:frames] for clip, _, _ in made]), [caption for _, caption, _ in made]
  print(f'\nSeams ({_STEPS.value} ancestral steps, guidance {config.sample.guidance}, {_TRAIN_STEPS.value} training '
        f'steps): mean |frame t+1 - frame t| (0-255) across {window}-frame block borders vs inside blocks')
  print('| sampling | at borders | inside | ratio |')
  print('|---|---|---|---|')
  for name, layout_overlap in ((f'MultiDiffusion (overlap {overlap}, averaged)', overlap),
                               ('independent windows (overlap 0)', 0)):
    at_border, inside = _seams(spec, params, frames, window, layout_overlap, lowres, captions)
    print(f'| {name} | {at_border:.2f} | {inside:.2f} | {at_border / inside:.2f} |')


if __name__ == '__main__':
  app.run(main)
