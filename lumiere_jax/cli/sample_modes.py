"""Editing with lumiere-sample: the conditional stage's modes, SDEdit, stylization (flags imported by cli/sample.py).

  --mode i2v --image in.png                          the image is frame 0 (conditional-stage run)
  --mode inpaint --video in.mp4 --mask mask.png|.mp4 white mask pixels are generated (conditional-stage run)
  --mode cinemagraph --image in.png --mask region.png the white region is animated (conditional-stage run)
  --mode sdedit --video in.mp4 --strength S          SDEdit from diffusion time S in [0, 1] (base or conditional)
  --style-from T2I_RUN --alpha A                     spatial weights (1 - A) * own + A * style; temporal untouched

Files must have the model's frame size; videos at least its frame count (the first frames are used). Given pixels
are kept in the sampled clip (`lumiere_jax/conditional.py`); to keep them exactly in the file too, write a lossless
--out (.png frames or .mkv FFV1): .mp4 (H.264) changes pixel values by a few levels, more at sharp edges.
"""

from absl import app, flags

from lumiere_jax import conditional, editing, inference, stages

MODE = flags.DEFINE_enum('mode', 't2v', ['t2v', *conditional.MODES, 'sdedit'],
                         'What to sample: t2v (text only), or a mode of the module docstring.')
_IMAGE = flags.DEFINE_string('image', None, 'i2v: the first frame; cinemagraph: the still to animate.')
_MASK = flags.DEFINE_string('mask', None, 'inpaint / cinemagraph: PNG (all frames) or MP4 (per frame) mask, white '
                            'where pixels are generated, black where they are kept.')
_STRENGTH = flags.DEFINE_float('strength', None, 'sdedit: how far the --video is noised, in [0, 1].')
_STYLE_FROM = flags.DEFINE_string('style-from', None, 'T2I run (workdir or checkpoints/<step>) fine-tuned on a style '
                                  'whose spatial weights are mixed in by --alpha.')
_ALPHA = flags.DEFINE_float('alpha', None, 'With --style-from: weight of the style\'s spatial parameters, in [0, 1].')
GROUPS = [('Editing (see the modes below)', (MODE, _IMAGE, _MASK, _STRENGTH)),
          ('Stylization', (_STYLE_FROM, _ALPHA))]
VIDEO_MODES = ('inpaint', 'sdedit')  # modes that read --video (cli/sample.py's flag)


def check_flags(has_model: bool) -> None:
  """UsageError for flag combinations and values that cannot work, before any model is loaded; `has_model`: whether
  --workdir or --checkpoint names the model to sample."""
  if (MODE.value != 't2v' or _STYLE_FROM.value) and not has_model:
    raise app.UsageError('--mode and --style-from apply to the --workdir or --checkpoint model; give one')
  if _STRENGTH.value is not None and not (MODE.value == 'sdedit' and 0 <= _STRENGTH.value <= 1):
    raise app.UsageError(f'--strength={_STRENGTH.value}: sdedit only, in [0, 1]')
  if MODE.value == 'sdedit' and _STRENGTH.value is None:
    raise app.UsageError('--mode sdedit needs --strength in [0, 1]')
  if (_STYLE_FROM.value is None) != (_ALPHA.value is None):
    raise app.UsageError('--style-from and --alpha go together')
  if _ALPHA.value is not None and not 0 <= _ALPHA.value <= 1:
    raise app.UsageError(f'--alpha={_ALPHA.value} must be in [0, 1] (0: the original model, 1: the style\'s '
                         'spatial weights)')


def generate_kwargs(config, video_path: str | None) -> dict:
  """`sample.generate` keyword arguments of --mode for `config`'s model (UsageError for a bad file or model)."""
  frames, size = config.model.num_frames, config.model.image_size
  stage = stages.of(config)
  try:
    if MODE.value in conditional.MODES:
      if not stage.reads_mask:
        raise app.UsageError(f'--mode {MODE.value} needs a conditional-stage run, not a {config.stage} one')
      return dict(given=conditional.read_inputs(MODE.value, frames, size, image=_IMAGE.value, video=video_path,
                                                mask=_MASK.value))
    if _IMAGE.value or _MASK.value:
      raise app.UsageError(f'--mode {MODE.value} takes no --image or --mask')
    if MODE.value == 'sdedit':
      if not stage.edits_video or not video_path:
        editors = ' or '.join(name for name, other in stages.STAGES.items() if other.edits_video)
        raise app.UsageError(f'--mode sdedit edits a --video with a {editors} run')
      return dict(edit=conditional.read_clip(video_path, frames, size), strength=_STRENGTH.value)
  except ValueError as e:
    raise app.UsageError(f'--mode {MODE.value}: {e}') from e
  return {}


def stylized(model: inference.InferenceModel) -> dict:
  """`model`'s parameters with --style-from's spatial weights mixed in by --alpha (unchanged without the flags)."""
  if _STYLE_FROM.value is None:
    return model.params
  _, _, style = inference.load_params(_STYLE_FROM.value, model.mesh)
  try:
    return editing.interpolate_spatial(model.params, style, _ALPHA.value)
  except ValueError as e:
    raise app.UsageError(f'--style-from={_STYLE_FROM.value}: {e}') from e
