"""The training stages as data (DESIGN section 5): one frozen description per stage, read by the config file, config
validation, the model builder, the input pipeline, the train step, the sampler and the AOT batch.

Adding a stage is one `Stage` entry in `STAGES` plus what is really new (its model inputs, its pipeline outputs).
This module imports nothing of the package, so every layer may read it.
"""

import dataclasses
import pathlib


@dataclasses.dataclass(frozen=True)
class Conditioning:
  """A conditioning video concatenated to the noisy input: its `model.cond_channels` and whether its
  noise-augmentation level is a model input (`model.cond_noise_level`)."""
  name: str
  channels: int
  noise_level: bool


NO_CONDITIONING = Conditioning('no conditioning video', channels=0, noise_level=False)
SUPERRES = Conditioning('the upsampled low-res clip', channels=3, noise_level=True)
# The masked video and its mask (data/masks.py: 1 = given pixel), concatenated: 3 + 1 channels.
MASKED = Conditioning('the masked video and its mask', channels=4, noise_level=False)

# `model.init_from` value that starts an inflated stage's frozen weights at random on purpose (tests, ablations).
RANDOM_INIT = 'none'
# `train.trainable` presets that leave the spatial (pretrained) weights frozen.
_FROZEN_SPATIAL = ('temporal', 'conditional')


@dataclasses.dataclass(frozen=True)
class Stage:
  """What a stage trains and how the rest of the framework treats it."""
  name: str
  summary: str
  inflated: bool  # the STUNet (temporal layers inserted) rather than the 2-D T2I U-Net
  super_resolution: tuple[bool, ...]  # the allowed values of the config argument `sr` (the first is the default)
  conditioning: Conditioning  # what the model reads besides the caption (super-resolution models: SUPERRES)
  trainable: str  # default `train.trainable` (models/params.py: TRAINABLE_PRESETS)
  init_from: str  # the kind of run `model.init_from` names; '' = the stage starts from scratch
  widens_input: bool  # init_from's input convolution gains zero rows for the extra conditioning channels
  windowed: bool  # trains on `sr.window`-frame windows and samples them reconciled by MultiDiffusion
  text_to_video: bool  # generates whole clips from a caption alone (FVD, the UCF101 protocol)
  edits_video: bool  # SDEdit applies (a video model sampling whole clips)

  def conditioning_of(self, config) -> Conditioning:
    """The conditioning video of `config`'s model: a super-resolution model (`sr.factor` > 0) reads its low-res
    input, the others what the stage says."""
    return SUPERRES if config.sr.factor else self.conditioning

  def example_frames(self, config) -> int:
    """Frames per training example: single frames (t2i), windows (ssr) or whole clips."""
    if not self.inflated:
      return 1
    return config.sr.window if self.windowed else config.model.num_frames

  def sample_frames(self, config) -> int:
    """Frames the model generates per clip when sampling from text (an SR model: those of its low-res input)."""
    return config.model.num_frames if self.inflated else 1

  @property
  def reads_mask(self) -> bool:
    """Whether batches carry `cond_mask` (B, T, H, W, 1), 1 = given pixel (data/pipeline.py makes it)."""
    return self.conditioning == MASKED


STAGES = {stage.name: stage for stage in (
    Stage('t2i', 'the spatial text-to-image U-Net on single frames (sr=1: the image super-resolution model)',
          inflated=False, super_resolution=(False, True), conditioning=NO_CONDITIONING, trainable='unet', init_from='',
          widens_input=False, windowed=False, text_to_video=False, edits_video=False),
    Stage('base', 'the STUNet inflated from a t2i run, spatial weights frozen, whole clips',
          inflated=True, super_resolution=(False,), conditioning=NO_CONDITIONING, trainable='temporal',
          init_from='t2i', widens_input=False, windowed=False, text_to_video=True, edits_video=True),
    Stage('ssr', 'spatial super-resolution inflated from a t2i sr=1 run, trained on windows, sampled with '
          'MultiDiffusion', inflated=True, super_resolution=(True,), conditioning=NO_CONDITIONING,
          trainable='temporal', init_from='t2i,sr=1', widens_input=False, windowed=True, text_to_video=False,
          edits_video=False),
    Stage('conditional', 'the base model fine-tuned on masked videos (image-to-video, inpainting, cinemagraphs)',
          inflated=True, super_resolution=(False,), conditioning=MASKED, trainable='conditional', init_from='base',
          widens_input=True, windowed=False, text_to_video=False, edits_video=True),
)}


def of(config) -> Stage:
  """The stage `config.stage` names; ValueError naming the known ones otherwise."""
  if config.stage not in STAGES:
    raise ValueError(f'stage={config.stage!r}: unknown (known: {tuple(STAGES)})')
  return STAGES[config.stage]


def config_errors(config):
  """(field, problem) for every field inconsistent with the stage: super-resolution settings, the conditioning
  channels, `model.init_from`, the trainable preset and the conditional stage's mask mixture."""
  stage = of(config)
  sr, m = config.sr, config.model
  if stage.super_resolution == (True,) and sr.factor < 1:
    yield 'sr.factor', f'{sr.factor}: the {stage.name} stage needs the low-res to high-res ratio, >= 1'
  if True not in stage.super_resolution and sr.factor:
    yield 'sr.factor', f'{sr.factor}: the {stage.name} stage is no super-resolution model; keep 0'
  if sr.factor < 0 or (sr.factor and m.image_size % sr.factor):
    yield 'sr.factor', f'{sr.factor} does not divide model.image_size={m.image_size} into a low-res size'
  for name in ('train_augment', 'sample_augment'):
    if not 0 <= sr[name] <= 1:
      yield f'sr.{name}', f'{sr[name]} is not a diffusion time in [0, 1]'
  if stage.windowed:
    yield from _window_errors(config)
  want = stage.conditioning_of(config)
  if (m.cond_channels, m.cond_noise_level) != (want.channels, want.noise_level):
    yield 'model.cond_channels', (
        f'stage {stage.name} (sr.factor={sr.factor}) feeds the model {want.name}: needs cond_channels='
        f'{want.channels} and cond_noise_level={want.noise_level}, got {m.cond_channels} and {m.cond_noise_level}')
  if m.init_from not in ('', RANDOM_INIT) and not stage.init_from:
    yield 'model.init_from', f'the {stage.name} stage starts from scratch; only stages built on another run take it'
  if not stage.inflated and config.train.trainable == 'temporal':
    yield 'train.trainable', f"'temporal': the {stage.name} stage has no temporal parameters; use 'all'"
  if stage.reads_mask:
    weights = dict(config.conditional.items())
    if min(weights.values()) < 0 or not sum(weights.values()) > 0:
      yield 'conditional', f'mask weights {weights} must be >= 0 and not all 0'


def init_errors(config):
  """(field, problem) for a training run's `model.init_from`, checked before anything is built: a stage built on
  another run whose spatial weights stay frozen needs it, and it must name a run, a checkpoint step or an export."""
  stage, init_from = of(config), config.model.init_from
  if not stage.init_from or init_from == RANDOM_INIT:
    return
  if not init_from:
    if config.train.trainable in _FROZEN_SPATIAL:
      yield 'model.init_from', (
          f'the {stage.name} stage trains on top of a {stage.init_from} run whose weights stay frozen '
          f"(train.trainable={config.train.trainable!r}): give that run's workdir, a checkpoints/<step> directory "
          f"or an export; '{RANDOM_INIT}' keeps random frozen weights on purpose, train.trainable='all' trains them")
    return
  path = pathlib.Path(init_from)
  is_step = path.parent.name == 'checkpoints' and path.name.isdigit()
  markers = ('checkpoints', 'manifest.json', 'config.json', 'unet/config.json')  # run, export, diffusers folders
  if not path.is_dir() or not (is_step or any((path / marker).exists() for marker in markers)):
    yield 'model.init_from', (f'{init_from!r} is neither a workdir with checkpoints/, a checkpoints/<step> '
                              'directory, an export (manifest.json) nor a diffusers DeepFloyd IF folder')


def _window_errors(config):
  sr, m = config.sr, config.model
  if not 1 <= sr.window <= m.num_frames:
    yield 'sr.window', f'{sr.window} must be in [1, model.num_frames={m.num_frames}]'
  if not 0 <= sr.overlap < sr.window:
    yield 'sr.overlap', f'{sr.overlap} must be in [0, sr.window={sr.window})'
  if any(m.temporal_downsample):
    yield 'model.temporal_downsample', (f'{m.temporal_downsample}: the SSR has no temporal resampling (it runs on '
                                        'windows of any length); all False')
