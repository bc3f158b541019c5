"""`train.profile_steps='a,b'`: a jax.profiler trace of the training steps a..b-1, for TensorBoard's profile tab.

The trace goes into the run's TensorBoard directory (`plugins/profile/<time>/<host>.xplane.pb`), so `tensorboard
--logdir <workdir>/tensorboard` shows it beside the scalars. Only process 0 traces (processes on one host would
write the same file name). A run resumed past step a starts tracing at its first step; a run that stops before b
(SIGTERM, `until_step`, an error) ends the trace where it stopped. The loop (train/main.py) starts the trace before
step a runs and stops it once step b-1 has finished, outside the time it counts as training.
"""

import pathlib

import jax

from lumiere_jax import train as train_lib


class StepTrace:
  """When to start and stop the trace of `train.profile_steps`, and doing so into `directory`."""

  def __init__(self, train_config, directory: str | pathlib.Path, enabled: bool | None = None):
    self.steps = train_lib.profile_range(train_config)
    self.directory = pathlib.Path(directory)
    self.enabled = (jax.process_index() == 0 if enabled is None else enabled) and self.steps is not None
    self.active = False

  def starts_before(self, step: int) -> bool:
    """Whether to start tracing before the step that takes the state from `step` to `step + 1`."""
    return self.enabled and not self.active and self.steps[0] <= step < self.steps[1]

  def ends_after(self, step: int) -> bool:
    """Whether to stop tracing now that the state reached `step`."""
    return self.active and step >= self.steps[1]

  def start(self) -> None:
    jax.profiler.start_trace(str(self.directory))
    self.active = True

  def stop(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
