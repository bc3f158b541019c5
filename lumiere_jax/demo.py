"""`make demo`: the whole cascade's base path on the embedded dataset at size tiny, on CPU, in minutes.

1. builds the procedural moving-shapes dataset (ArrayRecord, through the real writer) on first use;
2. trains the t2i U-Net on single frames;
3. inflates it into the STUNet, freezes the spatial weights and trains the temporal ones;
4. samples one clip per (colour, direction) prompt and checks, without a model, whether each clip's dominant colour
   and motion direction match its caption (`synthetic.describe_clip`), printing the agreement.

Rerunning resumes (or skips) finished stages from their workdirs.
"""

import itertools
import pathlib

import jax
import numpy as np
from absl import app, flags, logging

from lumiere_jax import config as config_lib
from lumiere_jax import models
from lumiere_jax import sample as sample_lib
from lumiere_jax.data import synthetic
from lumiere_jax.train import main as train_main, state as state_lib

_WORKDIR = flags.DEFINE_string('workdir', 'workdirs/demo', 'Where the two runs and the samples go.')
_T2I_STEPS = flags.DEFINE_integer('t2i_steps', None, 'Override train.steps of the t2i stage.')
_BASE_STEPS = flags.DEFINE_integer('base_steps', None, 'Override train.steps of the base stage.')

# The demo's base-stage recipe, not the paper's (BENCHMARKS.md, "Demo"): the caption's direction decides where the
# shape sits in each frame, which is settled at high noise, so training noise levels are shifted there (log-SNR - 3;
# the sampler's schedule follows), and the temporal layers, which learn that slowly, get 2.5x the tiny learning rate
# and a third more steps.
BASE_RECIPE = {'diffusion.logsnr_shift': -3.0, 'train.learning_rate': 5e-3, 'train.steps': 3200}


def stage_config(stage: str, steps: int | None, overrides: dict | None = None):
  """The tiny config of `stage` with `overrides` (dotted paths), `steps` if given, one decoding worker."""
  overrides = {**(overrides or {}), 'data.num_workers': 1}  # decode in a worker process while the step runs
  if steps is not None:
    overrides['train.steps'] = steps
  return config_lib.with_overrides(config_lib.load(f'stage={stage},size=tiny'), overrides)


def caption_prompts() -> list[tuple[str, dict]]:
  """One prompt per (colour, direction), shapes cycling: every colour and direction is asked for equally."""
  shapes = itertools.cycle(synthetic.SHAPES)
  out = []
  for colour, direction in itertools.product(synthetic.COLOURS, synthetic.DIRECTIONS):
    shape = next(shapes)
    out.append((synthetic.caption(colour, shape, direction), dict(colour=colour, direction=direction)))
  return out


def caption_agreement(videos: np.ndarray, wanted: list[dict]) -> dict[str, float]:
  """Fraction of clips whose judged colour, direction, and both, match what their caption asked for."""
  judged = [synthetic.describe_clip(clip) for clip in videos]
  colour = np.mean([j['colour'] == w['colour'] for j, w in zip(judged, wanted)])
  direction = np.mean([j['direction'] == w['direction'] for j, w in zip(judged, wanted)])
  both = np.mean([j['colour'] == w['colour'] and j['direction'] == w['direction'] for j, w in zip(judged, wanted)])
  return dict(colour=float(colour), direction=float(direction), both=float(both))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  workdir = pathlib.Path(_WORKDIR.value)
  t2i = stage_config('t2i', _T2I_STEPS.value)
  print(f'== 1/3 t2i: spatial U-Net on single frames ({t2i.train.steps} steps) -> {workdir / "t2i"}', flush=True)
  train_main.train(t2i, workdir / 't2i')

  base = stage_config('base', _BASE_STEPS.value, {**BASE_RECIPE, 'model.init_from': str(workdir / 't2i')})
  print(f'== 2/3 base: STUNet, spatial weights frozen ({base.train.steps} steps) -> {workdir / "base"}', flush=True)
  result = train_main.train(base, workdir / 'base')

  prompts, wanted = zip(*caption_prompts())
  print(f'== 3/3 sampling {len(prompts)} prompts ({base.sample.steps} {base.sample.sampler} steps, '
        f'guidance {base.sample.guidance})', flush=True)
  videos = sample_lib.generate(models.model_spec(base), state_lib.inference_params(result.state), base, prompts,
                               seed=1)
  if jax.process_index() == 0:
    paths = sample_lib.write_samples(videos, prompts, workdir / 'samples', base.sample.fps)
    agreement = caption_agreement(videos, list(wanted))
    print(f'samples: {paths[0].parent} ({len(paths)} MP4s and grid.gif)')
    print(f'caption following (automatic colour/motion check, {len(prompts)} clips): '
          f'colour {agreement["colour"]:.0%}, direction {agreement["direction"]:.0%}, both {agreement["both"]:.0%}')


if __name__ == '__main__':
  app.run(main)
