r"""lumiere-eval: UCF101 zero-shot FVD (and IS) of a run's EMA parameters or of an export.

  lumiere-eval --config configs/eval_ucf101.py[:n=N,real=train|all,size=tiny] --workdir RUN_OR_EXPORT \
      --ucf101 DIR --out report.json [--c3d FILE --c3d_mean FILE]

Example (the smoke path, minutes on a CPU: a fake UCF101 folder and a 16-frame tiny base run):

  lumiere-data fake-ucf101 --out workdirs/ucf101-fake
  lumiere-eval --config configs/eval_ucf101.py:size=tiny --workdir workdirs/base16 \
      --ucf101 workdirs/ucf101-fake --out workdirs/eval/report.json

Every process generates its share of the videos, each chunk split over its own devices (`sample.generate` pads a
chunk they do not divide); rerunning the same command resumes from the chunks already written (`--videos_dir`).
See lumiere_jax/eval/zero_shot.py for the protocol.
"""

import json
import pathlib
import time

from absl import app, flags, logging
import jax
import numpy as np
from ml_collections import config_flags

from lumiere_jax import inference, stages
from lumiere_jax import sample as sample_lib
from lumiere_jax.cli import errors, usage
from lumiere_jax.eval import c3d, checks as eval_checks, i3d, zero_shot
from lumiere_jax.parallel import distributed

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/eval_ucf101.py[:n=<videos>,real=<train|all>]',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (latest checkpoint), a checkpoints/<step> dir, or '
                               'an export directory (lumiere-export; has manifest.json).')
_UCF101 = flags.DEFINE_string('ucf101', None, 'UCF101 root: UCF-101/<Class>/v_*.avi and ucfTrainTestlist/.')
_C3D = flags.DEFINE_string('c3d', None, "TGANv2's conv3d_deepnetA_ucf.npz; adds the Inception Score.")
_C3D_MEAN = flags.DEFINE_string('c3d_mean', None, "TGANv2's mean2.npz, with --c3d.")
_OUT = flags.DEFINE_string('out', None, 'JSON report to write.')
_VIDEOS = flags.DEFINE_string('videos_dir', None, 'Generated chunks (resume state); default <out stem>_videos/ '
                              'beside the report.')
GROUPS = [('Protocol', (_CONFIG,)), ('Model and data', (_WORKDIR, _UCF101)), ('Output', (_OUT, _VIDEOS)),
          ('Inception Score (optional)', (_C3D, _C3D_MEAN)), usage.DISTRIBUTED]


def _load(path: str, eval_config, devices) -> inference.InferenceModel:
  """The run or export at `path` with the evaluation's sampling overrides; UsageError unless it generates clips of
  >= config.frames frames from text."""
  config = inference.load_config(path)
  if not stages.of(config).text_to_video or config.model.num_frames < eval_config.frames:
    raise app.UsageError(f'{path}: a {config.stage} model of {config.model.num_frames} frames; the UCF101 protocol '
                         f'evaluates text-to-video models of >= config.frames={eval_config.frames} frames')
  overrides = {'sample.steps': eval_config.sample_steps, 'sample.guidance': eval_config.guidance}
  return inference.load(path, overrides=overrides, devices=devices)


def main(argv):
  del argv
  distributed.initialize_from_flags()
  logging.set_verbosity(logging.WARNING)
  eval_config = _CONFIG.value
  eval_checks.validate(eval_config)
  if (_C3D.value is None) != (_C3D_MEAN.value is None):
    raise app.UsageError('the Inception Score needs both --c3d and --c3d_mean')
  if _C3D.value and (eval_config.frames != c3d.FRAMES or eval_config.is_splits > eval_config.num_videos):
    raise app.UsageError(f'the C3D Inception Score takes {c3d.FRAMES} frames (config.frames={eval_config.frames}) '
                         f'and at most config.num_videos splits (config.is_splits={eval_config.is_splits})')
  devices = jax.local_devices()
  start = time.monotonic()
  model = _load(_WORKDIR.value, eval_config, devices)
  config, step = model.config, model.step
  sampler = sample_lib.make_sampler(model.spec, config, mesh=model.mesh)
  features_mesh = jax.sharding.Mesh(np.array(devices), ('batch',))
  models = zero_shot.Models(
      generate=lambda prompts, seed: sample_lib.generate(model.spec, model.params, config, prompts, seed=seed,
                                                         sampler=sampler, mesh=model.mesh, show_progress=False),
      features=i3d.I3DFeatures(features_mesh),
      probabilities=c3d.C3DProbabilities(_C3D.value, _C3D_MEAN.value, features_mesh) if _C3D.value else None)
  load_seconds = round(time.monotonic() - start, 3)
  s = config.sample
  record = dict(source=str(pathlib.Path(_WORKDIR.value).resolve()), step=step, fps=s.fps, sampler=s.sampler,
                steps=s.steps, guidance=s.guidance, eta=s.eta, dynamic_threshold=s.dynamic_threshold,
                image_size=config.model.image_size)
  out = pathlib.Path(_OUT.value)
  videos_dir = pathlib.Path(_VIDEOS.value or out.with_name(f'{out.stem}_videos'))
  report = zero_shot.evaluate(eval_config, models, ucf101_root=_UCF101.value, videos_dir=videos_dir,
                              model_record=record)
  if report is None:  # not process 0
    return
  report['seconds'] = {'load_models': load_seconds, **report['seconds']}
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=2) + '\n')
  score = report['inception_score']
  print(f'FVD {report["fvd"]:.2f}' + (f', IS {score["mean"]:.2f} +- {score["std"]:.2f}' if score else '') +
        f' ({report["generated"]["count"]} generated, {report["real"]["count"]} real, step {step}): wrote {out}')


def run():
  flags.mark_flags_as_required(['config', 'workdir', 'ucf101', 'out'])
  errors.run(main, 'lumiere-eval', GROUPS)


if __name__ == '__main__':
  run()
