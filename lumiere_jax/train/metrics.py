"""Training metrics: a progress line on stdout and TensorBoard event files (tensorboardX, no TensorFlow).

Only process 0 writes; other processes get a writer that does nothing.
"""

import pathlib
import time

import jax
import tensorboardX


class MetricWriter:
  """Writes scalar dicts per step; `enabled=False` (non-zero processes) makes every call a no-op."""

  def __init__(self, workdir: str | pathlib.Path, total_steps: int, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.total_steps = total_steps
    self._start = time.monotonic()
    self._writer = tensorboardX.SummaryWriter(str(pathlib.Path(workdir) / 'tensorboard')) if self.enabled else None

  def write(self, step: int, scalars: dict[str, float], *, first_step: int = 0) -> None:
    if not self.enabled:
      return
    for name, value in scalars.items():
      self._writer.add_scalar(name, float(value), step)
    self._writer.flush()
    elapsed = time.monotonic() - self._start
    done = max(step - first_step, 1)
    eta = elapsed / done * (self.total_steps - step)
    values = ' '.join(f'{k}={_fmt(v)}' for k, v in scalars.items())
    print(f'[{step:>7}/{self.total_steps} {step / self.total_steps:4.0%} eta {eta:5.0f}s] {values}', flush=True)

  def text(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def _fmt(value: float) -> str:
  value = float(value)
  return f'{value:.3e}' if value and (abs(value) < 1e-3 or abs(value) >= 1e5) else f'{value:.4f}'


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function from XLA's cost analysis (0 when the backend reports none)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))
