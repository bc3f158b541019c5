"""Training metrics: a progress line on stdout, TensorBoard event files (tensorboardX, no TensorFlow) and optionally
Weights & Biases (`config.logging.wandb_project`, the `wandb` extra).

Only process 0 writes; other processes get a writer that does nothing. The event file (and the W&B run) is created at
the first scalars, so a run stopped during set-up leaves none; it then also receives the resolved config as text and
as hparams (TensorBoard's HPARAMS tab). Sample videos go to TensorBoard as animated GIF images (one per prompt, the
caption in the tag and in a text summary): tensorboardX's `add_video` needs moviepy, which nothing else here uses. The
ETA comes from the training loop's own step rate: set-up, restore, compile, checkpoint saves and samples (`paused`)
do not count.
"""

import contextlib
import importlib.util
import io
import pathlib
import sys
import time
import uuid

import jax
import numpy as np
import tensorboardX
from tensorboardX import summary as summary_lib
from tensorboardX.proto.summary_pb2 import Summary

from lumiere_jax import progress, sample as sample_lib
from lumiere_jax.data import video

WANDB_EXTRA = 'pip install "lumiere_jax[wandb]"'
WANDB_RUN_ID = 'wandb_run_id'  # in the workdir: a resumed run keeps logging to the same W&B run


def config_errors(config):
  """(field, problem) for the `logging` section: W&B needs a project and the `wandb` package."""
  logging = config.logging
  if logging.wandb_entity and not logging.wandb_project:
    yield 'logging.wandb_entity', f'{logging.wandb_entity!r} is set but logging.wandb_project is empty'
  if logging.wandb_project and not _wandb_installed():
    yield 'logging.wandb_project', f'{logging.wandb_project!r} needs the wandb package: {WANDB_EXTRA}'


def _wandb_installed() -> bool:
  """Whether `import wandb` would find a module, without importing it (None in sys.modules: blocked)."""
  if 'wandb' in sys.modules:
    return sys.modules['wandb'] is not None
  return importlib.util.find_spec('wandb') is not None



def tensorboard_dir(workdir) -> pathlib.Path:
  """Where a run's TensorBoard event files (and profiler traces) go."""
  return pathlib.Path(workdir) / 'tensorboard'

class MetricWriter:
  """Writes scalar dicts per step; `enabled=False` (non-zero processes) makes every call a no-op."""

  def __init__(self, workdir: str | pathlib.Path, total_steps: int, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.total_steps = total_steps
    self._workdir = pathlib.Path(workdir)
    self._writer = self._wandb = self._config = None
    self._clock_step, self._clock_start, self._paused_s = 0, None, 0.0

  def start_clock(self, step: int) -> None:
    """The training loop starts at `step`: the ETA counts time from here on, less what `paused` blocks take."""
    self._clock_step, self._clock_start, self._paused_s = step, time.monotonic(), 0.0

  @contextlib.contextmanager
  def paused(self):
    """A block that is no training step (a checkpoint save, samples, FVD): left out of the step rate."""
    start = time.monotonic()
    try:
      yield
    finally:
      self._paused_s += time.monotonic() - start

  def eta_s(self, step: int) -> float:
    """Seconds to `total_steps` at the step rate since `start_clock` (inf before a step has passed)."""
    done = step - self._clock_step
    if self._clock_start is None or done <= 0:
      return float('inf')
    return (time.monotonic() - self._clock_start - self._paused_s) / done * (self.total_steps - step)

  def set_config(self, config) -> None:
    """Prints the resolved config (`section.field = value` lines) and keeps it for TensorBoard (text and hparams)
    and W&B, written with the first scalars (a run stopped during set-up writes nothing)."""
    self._config = config
    self.text('config:\n  ' + '\n  '.join(_config_lines(config)))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._open(step, scalars)
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), step)
    self._writer.flush()
    if self._wandb is not None:
      self._wandb.log({name: float(value) for name, value in scalars.items()}, step=step)
    values = ' '.join(f'{k}={_fmt(v)}' for k, v in scalars.items())
    print(f'{progress.prefix(step, self.total_steps, self.eta_s(step), width=7)} {values}', flush=True)

  def write_samples(self, step: int, videos: np.ndarray, prompts, fps: float) -> None:
    """uint8 videos (N, T, H, W, 3) sampled for `prompts`: an animated GIF each in TensorBoard (and W&B)."""
    if not self.enabled:
      return
    self._open(step, {})
    for i, (clip, prompt) in enumerate(zip(videos, prompts)):
      tag = f'samples/{i:02d}_{sample_lib.slug(prompt)}'
      self._writer.file_writer.add_summary(_gif_summary(tag, clip, fps), step)
    self._writer.add_text('samples/captions', '\n'.join(f'{i:02d}: {p}  ' for i, p in enumerate(prompts)), step)
    self._writer.flush()
    if self._wandb is not None:
      self._wandb.log({'samples': [self._wandb.Video(np.transpose(clip, (0, 3, 1, 2)), fps=fps, caption=prompt,
                                                     format='gif') for clip, prompt in zip(videos, prompts)]},
                      step=step)

  def text(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
    if self._wandb is not None:
      self._wandb.finish()
    self._writer = self._wandb = None

  def _open(self, step: int, scalars: dict) -> None:
    """At the first summary: the event file with the config as text and hparams, and the W&B run if configured."""
    if self._writer is not None:
      return
    self._writer = tensorboardX.SummaryWriter(str(tensorboard_dir(self._workdir)))
    if self._config is None:
      return
    self._writer.add_text('config', '    ' + '\n    '.join(_config_lines(self._config)), step)
    flat = _flat(self._config.to_dict())
    hparams = {key: value if isinstance(value, (bool, int, float, str)) else repr(value)
               for key, value in flat.items()}
    experiment, session_start, _ = summary_lib.hparams(hparams, dict.fromkeys(scalars, 0.0))
    self._writer.file_writer.add_summary(experiment)
    self._writer.file_writer.add_summary(session_start)
    if self._config.logging.wandb_project:
      self._wandb = _start_wandb(self._config, self._workdir, flat)


def _start_wandb(config, workdir: pathlib.Path, flat_config: dict):
  """The `wandb` module with a run started (resumed when the workdir names one); ImportError naming the extra."""
  try:
    import wandb  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f'config.logging.wandb_project is set but wandb is not installed: {WANDB_EXTRA}') from e
  id_file = workdir / WANDB_RUN_ID
  run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
  id_file.write_text(run_id + '\n')
  wandb.init(project=config.logging.wandb_project, entity=config.logging.wandb_entity or None, id=run_id,
             resume='allow', name=workdir.name, dir=str(workdir), config=flat_config)
  return wandb


def _gif_summary(tag: str, frames: np.ndarray, fps: float) -> Summary:
  """An image summary holding an animated GIF (TensorBoard's image tab plays it)."""
  buffer = io.BytesIO()
  video.write_gif(buffer, frames, fps)
  _, height, width, channels = frames.shape
  image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=buffer.getvalue())
  return Summary(value=[Summary.Value(tag=tag, image=image)])


def _config_lines(config) -> list[str]:
  return [f'{key} = {value!r}' for key, value in sorted(_flat(config.to_dict()).items())]


def _flat(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    flat.update(_flat(value, f'{prefix}{key}.') if isinstance(value, dict) else {f'{prefix}{key}': value})
  return flat


def _fmt(value: float) -> str:
  value = float(value)
  return f'{value:.3e}' if value and (abs(value) < 1e-3 or abs(value) >= 1e5) else f'{value:.4f}'

