"""`lumiere-sample (--workdir DIR | --checkpoint EXPORT_DIR) --prompt "..." --out clip.mp4`: sample a trained run's
EMA parameters, or an export's parameters (lumiere-export) without any training state.

The cascade: with `--ssr-workdir SSR` the SSR run upsamples those clips to its resolution, every frame (MultiDiffusion
over `sr.window`-frame windows); `--ssr-workdir SSR --video low.mp4` upsamples a given low-res video instead.

Editing (`--mode i2v|inpaint|cinemagraph|sdedit`, `--style-from T2I_RUN --alpha A`): flags and their guide in
cli/sample_modes.py.
"""

import pathlib

import numpy as np
from absl import app, flags

from lumiere_jax import config as config_lib
from lumiere_jax import export as export_lib
from lumiere_jax import models
from lumiere_jax import sample as sample_lib
from lumiere_jax.data import video
from lumiere_jax.cli import sample_modes
from lumiere_jax.parallel import mesh as mesh_lib
from lumiere_jax.train import checkpoint, state as state_lib

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (latest checkpoint) or a checkpoints/<step> dir.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Export directory written by lumiere-export (instead of '
                                  '--workdir).')
_PROMPTS = flags.DEFINE_multi_string('prompt', None, 'Caption; repeat the flag for several clips.')
_OUT = flags.DEFINE_string('out', 'sample.mp4', 'Output MP4; with several prompts, <stem>-<i>.mp4 beside it.')
_STEPS = flags.DEFINE_integer('steps', None, 'Sampling steps (default: the run\'s config.sample.steps).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'Classifier-free guidance scale (default: config.sample.guidance).')
_SAMPLER = flags.DEFINE_enum('sampler', None, ['ddim', 'ancestral'], 'Sampler (default: config.sample.sampler).')
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


def _load(workdir: str | None, export_dir: str | None = None):
  """(config, step, flat params, TrainSetup) of a training run or an export, with the sampling flags applied."""
  if export_dir:
    config = export_lib.load_config(export_dir)
  else:
    workdir, step = checkpoint.resolve(workdir)
    config = checkpoint.Checkpointer(workdir, async_save=False).restore_config(step)
  config.unlock()
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1  # sampling: params replicated, batch split
  for field, flag in (('steps', _STEPS), ('guidance', _GUIDANCE), ('sampler', _SAMPLER), ('eta', _ETA)):
    if flag.value is not None:
      config.sample[field] = flag.value
  for field, flag in (('window', _SSR_WINDOW), ('overlap', _SSR_OVERLAP)):
    if flag.value is not None and config.stage == 'ssr':
      config.sr[field] = flag.value
  config.lock()
  config_lib.validate(config)
  mesh = mesh_lib.make_mesh(config.mesh)
  if export_dir:
    _, params = export_lib.load_export(export_dir, mesh)
    step = export_lib.read_manifest(export_dir)['step']
  else:
    _, step, params = checkpoint.load_inference_params(checkpoint.checkpoint_dir(workdir) / str(step), mesh,
                                                       use_ema=not _RAW.value)
  return config, step, params, state_lib.TrainSetup.create(config, mesh)


def _upsample(lowres: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, str]:
  """The --ssr-workdir model's upsampling of uint8 clips (N, T, h, w, 3), and a note naming its step."""
  config, step, params, setup = _load(_SSR_WORKDIR.value)
  if models.stage_conditioning(config) != models.SUPERRES:
    raise app.UsageError(f'--ssr-workdir={_SSR_WORKDIR.value} holds a {config.stage} model, not a super-resolution '
                         'one')
  try:
    sample_lib.check_lowres(config, lowres.shape)
  except ValueError as e:
    raise app.UsageError(f'cannot upsample {_VIDEO.value or "the base clips"}: {e}') from e
  videos = sample_lib.generate(setup.spec, params, config, prompts, seed=_SEED.value, lowres=lowres, mesh=setup.mesh)
  return videos, f'ssr step {step}'


def main(argv):
  del argv
  prompts = _PROMPTS.value
  if not prompts:
    raise app.UsageError('give at least one --prompt')
  if _WORKDIR.value is not None and _CHECKPOINT.value is not None:
    raise app.UsageError('give exactly one of --workdir (a training run) and --checkpoint (an export)')
  if _CHECKPOINT.value and _RAW.value:
    raise app.UsageError('--raw applies to --workdir; an export holds the weights chosen when it was written')
  has_base = _WORKDIR.value is not None or _CHECKPOINT.value is not None
  sample_modes.check_flags(has_base)
  if _VIDEO.value is not None and sample_modes.MODE.value not in sample_modes.VIDEO_MODES and (
      has_base or _SSR_WORKDIR.value is None):
    raise app.UsageError('--video is upsampled by --ssr-workdir, without --workdir or --checkpoint')
  if not has_base and _VIDEO.value is None:
    raise app.UsageError('give --workdir or --checkpoint (and --ssr-workdir for the cascade), or --ssr-workdir '
                         'with --video')
  if has_base:
    config, step, params, setup = _load(_WORKDIR.value, _CHECKPOINT.value)
    videos = sample_lib.generate(setup.spec, sample_modes.stylized(params, config), config, prompts, seed=_SEED.value,
                                 **sample_modes.generate_kwargs(config, _VIDEO.value))
    fps, notes = config.sample.fps, [f'step {step}']
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
    video.write_mp4(path, clip, fps)
    print(f'wrote {path} ({clip.shape[0]} frames, {clip.shape[2]}x{clip.shape[1]}, {", ".join(notes)})')


def run():
  app.run(main)


if __name__ == '__main__':
  run()
