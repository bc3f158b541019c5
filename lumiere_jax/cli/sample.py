"""lumiere-sample: sample a trained run's EMA parameters, or an export's (lumiere-export), from text; edit videos.

  lumiere-sample (--workdir RUN | --checkpoint EXPORT_DIR) --prompt "..." [--prompt "..."] --out clip.mp4

Example:

  lumiere-sample --workdir workdirs/base --prompt "a red circle moving right" --steps 50 --out samples/red.mp4

Outputs by --out's suffix: .mp4 (H.264, lossy), .gif, and the lossless .mkv (FFV1) and .png (a PNG per frame:
x.png -> x-0000.png, ...; frames/%04d.png; or a folder), which keep every pixel exactly as sampled.

The cascade: with `--ssr-workdir SSR` the SSR run upsamples those clips to its resolution, every frame (MultiDiffusion
over `sr.window`-frame windows); `--ssr-workdir SSR --video low.mp4` upsamples a given low-res video instead.

Editing (`--mode i2v|inpaint|cinemagraph|sdedit`, `--style-from T2I_RUN --alpha A`): the guide below (and in
cli/sample_modes.py).
"""

import pathlib

import numpy as np
from absl import app, flags, logging

from lumiere_jax import inference, stages
from lumiere_jax import sample as sample_lib
from lumiere_jax.cli import errors, sample_modes
from lumiere_jax.data import video
from lumiere_jax.diffusion.samplers import SAMPLERS

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (latest checkpoint) or a checkpoints/<step> dir.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Export directory written by lumiere-export (instead of '
                                  '--workdir).')
_PROMPTS = flags.DEFINE_multi_string('prompt', None, 'Caption; repeat the flag for several clips.')
_OUT = flags.DEFINE_string('out', 'sample.mp4', 'Output video: .mp4, .gif, or lossless .mkv / .png (a PNG per '
                           'frame; also frames/%04d.png or a folder); with several prompts, <stem>-<i><suffix> '
                           'beside it.')
_STEPS = flags.DEFINE_integer('steps', None, 'Sampling steps (default: the run\'s config.sample.steps).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'Classifier-free guidance scale (default: config.sample.guidance).')
_SAMPLER = flags.DEFINE_enum('sampler', None, list(SAMPLERS), 'Sampler (default: config.sample.sampler).')
_ETA = flags.DEFINE_float('eta', None, 'DDIM eta (default: config.sample.eta).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_RAW = flags.DEFINE_bool('raw', False, 'Use the raw trainable parameters instead of their EMA.')
_SSR_WORKDIR = flags.DEFINE_string('ssr-workdir', None, 'SSR run (workdir or checkpoints/<step> dir) that upsamples '
                                   'the --workdir/--checkpoint clips (the cascade) or --video.')
_VIDEO = flags.DEFINE_string('video', None, 'Low-res video for --ssr-workdir to upsample, all its frames; with '
                             '--mode inpaint or sdedit, the clip to edit.')
_SSR_WINDOW = flags.DEFINE_integer('ssr-window', None, 'Frames per SSR window (default: its config.sr.window).')
_SSR_OVERLAP = flags.DEFINE_integer('ssr-overlap', None, 'Frames shared by consecutive SSR windows (default: its '
                                    'config.sr.overlap).')
GROUPS = [('Model', (_WORKDIR, _CHECKPOINT, _RAW)), ('Prompts and output', (_PROMPTS, _OUT, _SEED)),
          ('Sampling (default: the run\'s config.sample)', (_STEPS, _GUIDANCE, _SAMPLER, _ETA)),
          ('Super-resolution cascade', (_SSR_WORKDIR, _VIDEO, _SSR_WINDOW, _SSR_OVERLAP)), *sample_modes.GROUPS]


def _load(path: str, *, use_ema: bool = True) -> inference.InferenceModel:
  """A run or an export with the sampling flags applied (`inference.load`)."""
  print(f'loading {path}...', flush=True)
  flags_by_field = {'sample.steps': _STEPS, 'sample.guidance': _GUIDANCE, 'sample.sampler': _SAMPLER,
                    'sample.eta': _ETA, 'sr.window': _SSR_WINDOW, 'sr.overlap': _SSR_OVERLAP}
  return inference.load(path, overrides={field: flag.value for field, flag in flags_by_field.items()},
                        use_ema=use_ema)


def _upsample(lowres: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, str]:
  """The --ssr-workdir model's upsampling of uint8 clips (N, T, h, w, 3), and a note naming its step."""
  ssr = _load(_SSR_WORKDIR.value)
  if stages.of(ssr.config).conditioning_of(ssr.config) != stages.SUPERRES:
    raise app.UsageError(f'--ssr-workdir={_SSR_WORKDIR.value} holds a {ssr.config.stage} model, not a '
                         'super-resolution one')
  try:
    sample_lib.check_lowres(ssr.config, lowres.shape)
  except ValueError as e:
    raise app.UsageError(f'cannot upsample {_VIDEO.value or "the base clips"}: {e}') from e
  videos = sample_lib.generate(ssr.spec, ssr.params, ssr.config, prompts, seed=_SEED.value, lowres=lowres,
                               mesh=ssr.mesh)
  return videos, f'ssr step {ssr.step}'


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax's restore lines are INFO
  prompts = _PROMPTS.value
  if not prompts:
    raise app.UsageError('give at least one --prompt')
  if _WORKDIR.value is not None and _CHECKPOINT.value is not None:
    raise app.UsageError('give exactly one of --workdir (a training run) and --checkpoint (an export)')
  if _CHECKPOINT.value and _RAW.value:
    raise app.UsageError('--raw applies to --workdir; an export holds the weights chosen when it was written')
  try:
    video.output_kind(_OUT.value)
  except ValueError as e:
    raise app.UsageError(f'--out {e}') from e
  has_base = _WORKDIR.value is not None or _CHECKPOINT.value is not None
  sample_modes.check_flags(has_base)
  if _VIDEO.value is not None and sample_modes.MODE.value not in sample_modes.VIDEO_MODES and (
      has_base or _SSR_WORKDIR.value is None):
    raise app.UsageError('--video is upsampled by --ssr-workdir, without --workdir or --checkpoint')
  if not has_base and _VIDEO.value is None:
    raise app.UsageError('give --workdir or --checkpoint (and --ssr-workdir for the cascade), or --ssr-workdir '
                         'with --video')
  if has_base:
    model = _load(_WORKDIR.value or _CHECKPOINT.value, use_ema=not _RAW.value)
    videos = sample_lib.generate(model.spec, sample_modes.stylized(model), model.config, prompts, seed=_SEED.value,
                                 mesh=model.mesh, **sample_modes.generate_kwargs(model.config, _VIDEO.value))
    fps, notes = model.config.sample.fps, [f'step {model.step}']
  else:
    frames, fps = video.decode_video(pathlib.Path(_VIDEO.value).read_bytes())
    videos, notes = np.repeat(frames[None], len(prompts), axis=0), []
  if _SSR_WORKDIR.value is not None:
    videos, note = _upsample(videos, prompts)
    notes.append(note)
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  paths = [out] if len(videos) == 1 else [out.with_name(f'{out.stem}-{i}{out.suffix}') for i in range(len(videos))]
  for path, clip in zip(paths, videos):
    written = video.write_video(path, clip, fps)
    where = path if len(written) == 1 else f'{written[0]} .. {written[-1].name}'
    print(f'wrote {where} ({clip.shape[0]} frames, {clip.shape[2]}x{clip.shape[1]}, {", ".join(notes)})')


def run():
  errors.run(main, 'lumiere-sample', GROUPS, doc=f'{__doc__}\n{sample_modes.__doc__}')


if __name__ == '__main__':
  run()
