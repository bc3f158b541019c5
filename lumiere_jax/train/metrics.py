"""Training metrics: a progress line on stdout and TensorBoard event files (tensorboardX, no TensorFlow).

Only process 0 writes; other processes get a writer that does nothing. The event file is created at the first
scalar, so a run stopped during set-up leaves none. The ETA comes from the training loop's own step rate: set-up,
restore, compile, checkpoint saves and samples (`paused`) do not count.
"""

import contextlib
import pathlib
import time

import jax
import tensorboardX


class MetricWriter:
  """Writes scalar dicts per step; `enabled=False` (non-zero processes) makes every call a no-op."""

  def __init__(self, workdir: str | pathlib.Path, total_steps: int, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.total_steps = total_steps
    self._directory = pathlib.Path(workdir) / 'tensorboard'
    self._writer = None
    self._config_lines = []
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
    """Prints the resolved config (`section.field = value` lines) and keeps it for TensorBoard's text tab, written
    with the first scalars (a run stopped during set-up writes nothing)."""
    self._config_lines = [f'{key} = {value!r}' for key, value in sorted(_flat(config.to_dict()).items())]
    self.text('config:\n  ' + '\n  '.join(self._config_lines))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    if self._writer is None:
      self._writer = tensorboardX.SummaryWriter(str(self._directory))
      if self._config_lines:
        self._writer.add_text('config', '    ' + '\n    '.join(self._config_lines), step)
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), step)
    self._writer.flush()
    values = ' '.join(f'{k}={_fmt(v)}' for k, v in scalars.items())
    eta = self.eta_s(step)
    eta = f'{eta:5.0f}s' if eta != float('inf') else '    ?'
    print(f'[{step:>7}/{self.total_steps} {step / self.total_steps:4.0%} eta {eta}] {values}', flush=True)

  def text(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def _flat(tree: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in tree.items():
    flat.update(_flat(value, f'{prefix}{key}.') if isinstance(value, dict) else {f'{prefix}{key}': value})
  return flat


def _fmt(value: float) -> str:
  value = float(value)
  return f'{value:.3e}' if value and (abs(value) < 1e-3 or abs(value) >= 1e5) else f'{value:.4f}'


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function from XLA's cost analysis (0 when the backend reports none)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))
