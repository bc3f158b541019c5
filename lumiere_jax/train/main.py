"""The linear training main behind `lumiere-train` (CLI: cli/train.py).

Sections: config -> mesh -> input -> model and shardings -> state (fresh, from a t2i checkpoint, or resumed) ->
compiled step (and its FLOP counts) -> loop (metrics with steps/s, TFLOP/s and MFU over the time spent in steps,
checkpoints, samples, SIGTERM, non-finite steps, the `train.profile_steps` trace) -> final checkpoint and samples.
Rerunning the same command on the same workdir resumes exactly where the last committed checkpoint left off; a step
that fails to restore (corrupted files) is set aside with a warning and the one before it is used. SIGTERM is handled
from the first line to the last save's commit: before the first step it stops with nothing saved, later it saves the
step reached (the data position just after that step's batch) and returns; either way the CLI exits 0.
"""

import contextlib
import dataclasses
import functools
import pathlib
import signal
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from lumiere_jax import inference, models, stages, train as train_lib, validation
from lumiere_jax import sample as sample_lib
from lumiere_jax.data import pipeline
from lumiere_jax.ingest import embed_captions
from lumiere_jax.parallel import chips, distributed, mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import checkpoint, flops as flops_lib, metrics as metrics_lib, periodic, profile
from lumiere_jax.train import state as state_lib


@dataclasses.dataclass
class RunResult:
  state: dict
  data_iterator: object
  preempted: bool
  workdir: pathlib.Path


class NonfiniteError(RuntimeError):
  """Training stopped on non-finite steps (`train.nonfinite`, `train.max_nonfinite_in_a_row`)."""


class _NonfiniteGuard:
  """Counts the steps whose update was skipped for a NaN/Inf loss or gradient, and stops the job past the policy.

  Flags are read one step late (`pending=1`) so the host never waits on the step it just dispatched; `check()` reads
  them all, as before a checkpoint, so nothing is saved once the job must stop.
  """

  def __init__(self, train_config, writer):
    stop = train_config.nonfinite == 'stop'
    self.limit = 1 if stop else train_config.max_nonfinite_in_a_row
    self.policy = "train.nonfinite='stop'" if stop else f'train.max_nonfinite_in_a_row={self.limit}'
    self.writer = writer
    self.total = self.in_a_row = 0
    self._unread = []

  def add(self, step: int, metrics: dict) -> None:
    self._unread.append((step, metrics))

  def check(self, pending: int = 0) -> None:
    while len(self._unread) > pending:
      step, metrics = self._unread.pop(0)
      if not int(metrics['nonfinite']):
        self.in_a_row = 0
        continue
      self.total += 1
      self.in_a_row += 1
      values = f'loss={float(metrics["loss"])}, grad_norm={float(metrics["grad_norm"])}'
      self.writer.text(f'step {step}: non-finite loss or gradient ({values}); update skipped '
                       f'({self.in_a_row} in a row, {self.total} in all)')
      if self.in_a_row >= self.limit:
        raise NonfiniteError(f'step {step}: {self.in_a_row} non-finite step(s) in a row ({values}); stopping as '
                             f'{self.policy} says. The last checkpoint holds the state before them.')


class _StoppedBeforeTraining(Exception):
  """SIGTERM came before the first step (the argument: the phase it ended); there is nothing to save."""


class _Preemption:
  """Turns SIGTERM into a stop (save, then exit 0) at a step boundary every process agrees on.

  One process: a handler sets a flag, read after each set-up phase and at every step boundary. Several:
  JAX's preemption service (its own SIGTERM handler, installed by `jax.distributed.initialize`) spreads the notice and
  names the same step on every process; stopping at different steps would leave the others waiting in a collective,
  so set-up phases run on and the first step boundary stops them all.
  """

  def __init__(self):
    self.requested = False
    self._multiprocess = jax.process_count() > 1
    self._previous = None if self._multiprocess else signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    """Whether to stop before `step`; called at every step, in order, on every process."""
    if self._multiprocess and not self.requested:
      self.requested = multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def restore(self):
    """Back to the previous SIGTERM handler (after the last save committed)."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def train(config, workdir: str | pathlib.Path, *, until_step: int | None = None, devices=None) -> RunResult:
  """Trains to `config.train.steps` (or stops early at `until_step`), resuming from `workdir` if it has checkpoints.

  `devices` (default: all) are the devices the mesh is built from. After SIGTERM the result has `preempted` set (and
  no state when it came before the first step).
  """
  workdir = pathlib.Path(workdir)
  preemption = _Preemption()
  try:
    return _train(config, workdir, until_step, devices, preemption)
  except _StoppedBeforeTraining as stopped:
    if jax.process_index() == 0:
      print(f'SIGTERM during {stopped}: stopped before the first step, nothing saved; exiting', flush=True)
    return RunResult(None, None, True, workdir)
  finally:
    preemption.restore()


def _train(config, workdir: pathlib.Path, until_step: int | None, devices, preemption: _Preemption) -> RunResult:
  # --- Config: every check before anything is built or compiled.
  devices = jax.devices() if devices is None else list(devices)
  validation.validate(config, num_devices=len(devices))
  writer = metrics_lib.MetricWriter(workdir, config.train.steps)
  checkpointer = checkpoint.Checkpointer(workdir, keep=config.train.keep_checkpoints)  # an unwritable workdir: here

  def check_setup(phase: str) -> None:
    """After each set-up phase: stop, writing nothing, if SIGTERM came (one process; see `_Preemption`)."""
    if preemption.requested:
      checkpointer.close()
      raise _StoppedBeforeTraining(phase)

  check_setup('validation')
  writer.set_config(config)

  # --- Mesh.
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  writer.text(f'mesh {dict(mesh.shape)} on {len(devices)} {devices[0].platform} devices, '
              f'{jax.process_count()} processes')

  # --- Input.
  data_iterator = pipeline.make_train_iterator(config, process_index=jax.process_index(),
                                               process_count=jax.process_count())
  check_setup('the input set-up')

  # --- Model and shardings.
  setup = state_lib.TrainSetup.create(config, mesh)
  report = sharding_lib.replication_report(setup.spec.shapes, setup.param_shardings)
  sharding_lib.check_replication(report, mesh, config.mesh.max_replicated_fraction)
  num_params = sum(int(np.prod(s.shape)) for s in setup.spec.shapes.values())
  num_trainable = sum(int(np.prod(setup.spec.shapes[k].shape)) for k in setup.trainable)
  replicated = f'; {report["replicated_fraction"]:.0%} of parameter bytes replicated' if mesh.size > 1 else ''
  writer.text(f'{config.stage} model: {num_params:,} parameters, {num_trainable:,} trainable '
              f'({config.train.trainable}){replicated}')

  check_setup('the model set-up')

  # --- State: resume, or start fresh (base / ssr: spatial weights from a t2i checkpoint; conditional: all from base).
  reposition = (functools.partial(pipeline.position_for_process_count, config, process_count=jax.process_count())
                if config.data.resume_on_other_process_count else None)
  writer.text(f'looking for a checkpoint to resume from in {checkpoint.checkpoint_dir(workdir)}...')
  restored = checkpointer.restore_latest(setup.abstract_state(), data_iterator, reposition)
  if restored is not None:
    start, state = restored
    writer.text(f'resumed from step {start} in {checkpoint.checkpoint_dir(workdir)}')
  else:
    pretrained = None
    if config.model.init_from not in ('', stages.RANDOM_INIT):
      _, from_step, pretrained = inference.load_params(config.model.init_from, mesh)
      writer.text(f'initial weights from {config.model.init_from} (step {from_step}): {len(pretrained)} tensors')
    state = setup.init(pretrained)
    start = 0
  check_setup('the restore' if restored is not None else 'the initialisation')

  # --- Step: compiled ahead of the loop, for its FLOP counts; the batch it was lowered with is the first step's. A
  # run resumed at its last step has no step to run: it fetches no batch (the data position stays the saved one).
  end = config.train.steps if until_step is None else min(until_step, config.train.steps)
  first_batch = None
  if start < end:
    first_batch = sharding_lib.global_batch(next(data_iterator), mesh)
    writer.text('compiling the train step (the persistent compile cache makes reruns fast)...')
    compiled, flops = flops_lib.compile_train_step(setup, state, first_batch)
    check_setup('the compile')
    distributed.barrier('lumiere_jax:train_step_compiled')  # processes compile at different speeds
    spec_peak = chips.spec_peak_flops(devices[0])
    writer.text(f'train step (XLA cost analysis): {flops.compiled_per_device / 1e9:.2f} GFLOPs per device as '
                f'compiled, {flops.model / 1e9:.2f} GFLOPs model FLOPs (no recomputation) on {flops.devices} devices; '
                + (f'mfu over the {devices[0].device_kind} spec peak of {spec_peak / 1e12:.0f} TFLOP/s' if spec_peak
                   else f'no spec peak known for {devices[0].device_kind}: mfu not logged'))
  sampler = sample_lib.make_sampler(setup.spec, config, mesh=setup.mesh)
  fvd = periodic.TrainingFVD(config, setup.spec, sampler, setup.mesh) if config.eval.fvd_every_steps else None
  embeddings = _prompt_embeddings(config, setup.mesh, fvd, writer)

  # --- Loop. The next batch is fetched only once the step boundary has been passed (SIGTERM checked), so a save
  # always stores the data position right after the batch of the step it holds.
  nonfinite = _NonfiniteGuard(config.train, writer)
  trace = profile.StepTrace(config.train, metrics_lib.tensorboard_dir(workdir))
  step, batch, pending = start, first_batch, []
  last_log, data_wait, paused_s = time.monotonic(), 0.0, 0.0

  @contextlib.contextmanager
  def pause():
    """A block that is no training step (a save, samples, FVD, the profiler starting or stopping): left out of
    steps/s (`paused_s` since the last log line) and of the ETA. The steps dispatched before it finish first."""
    nonlocal paused_s
    jax.block_until_ready(state)
    pause_start = time.monotonic()
    with writer.paused():
      yield
    paused_s += time.monotonic() - pause_start

  _, log_every, checkpoint_every = train_lib.intervals(config.train)
  writer.start_clock(start)
  try:
    while step < end and not preemption.reached(step):
      checkpointer.check_saves()  # a failed asynchronous save stops the job here, one step after it failed
      if batch is None:
        fetch_start = time.monotonic()
        batch = sharding_lib.global_batch(next(data_iterator), mesh)
        data_wait += time.monotonic() - fetch_start
      if trace.starts_before(step):
        with pause():
          trace.start()
      state, step_metrics = compiled(state, batch)
      batch = None
      pending.append(step_metrics)
      step += 1
      if trace.ends_after(step):
        with pause():
          trace.stop()
      nonfinite.add(step, step_metrics)
      nonfinite.check(pending=1)
      if step % log_every == 0 or step == end:
        nonfinite.check()
        now = time.monotonic()
        scalars = {k: float(np.mean([jax.device_get(m[k]) for m in pending])) for k in pending[0]}
        training_s = max(now - last_log - paused_s, 1e-9)
        steps_per_s = len(pending) / training_s
        scalars.update(steps_per_s=steps_per_s, data_wait=data_wait / training_s,
                       **flops.rates(steps_per_s, spec_peak),
                       records_bad=data_iterator.stats['records_bad'], nonfinite_steps=nonfinite.total)
        writer.write(step, scalars)
        pending, last_log, data_wait, paused_s = [], now, 0.0, 0.0
      save_now = step % checkpoint_every == 0
      sample_now = config.sample.every_steps and step % config.sample.every_steps == 0
      fvd_now = fvd is not None and step % config.eval.fvd_every_steps == 0
      if save_now or sample_now or fvd_now:
        with pause():
          if save_now:
            nonfinite.check()
            checkpointer.save(step, state, data_iterator, config)
          if sample_now:
            _write_samples(setup, state, config, workdir, step, sampler, writer, embeddings)
          if fvd_now:
            writer.write(step, {'fvd': fvd(state_lib.inference_params(state), embeddings)})
    nonfinite.check()
  except NonfiniteError:
    checkpointer.close()  # finishes the saves already under way; nothing newer is written
    writer.close()
    raise
  finally:
    trace.stop()
  if step == start and preemption.requested:  # several processes: the first boundary stopped them all
    check_setup('the set-up')

  # --- Final checkpoint (SIGTERM still handled: the save completes), then samples.
  checkpointer.wait()
  if checkpointer.latest_step() != step:
    checkpointer.save(step, state, data_iterator, config, force=True)
  checkpointer.close()
  preemption.restore()
  sampled_in_loop = config.sample.every_steps and step % config.sample.every_steps == 0
  if preemption.requested:
    writer.text(f'SIGTERM: saved step {step}, exiting')
  elif step == config.train.steps and not sampled_in_loop:
    _write_samples(setup, state, config, workdir, step, sampler, writer, embeddings)
  writer.close()
  return RunResult(state, data_iterator, preemption.requested, workdir)


def _prompt_embeddings(config, mesh, fvd, writer) -> dict | None:
  """A run whose model holds no text encoder (pre-embedded captions, `models.holds_text_encoder`): the embeddings of
  every prompt it will sample (`config.sample.prompts`, the FVD's), by the encoder built for this once. Else None."""
  if models.holds_text_encoder(config):
    return None
  prompts = list(config.sample.prompts) + (fvd.prompts() if fvd else [])
  writer.text(f'embedding {len(set(prompts))} prompts to sample with the {config.text.encoder} of '
              f'config.text.checkpoint (the model reads pre-embedded captions and holds no text encoder)...')
  return embed_captions.prompt_embeddings(config, prompts, mesh)


def _write_samples(setup, state, config, workdir, step, sampler, writer, embeddings):
  prompts = list(config.sample.prompts)
  writer.text(f'sampling {len(prompts)} prompts x {config.sample.steps} {config.sample.sampler} steps '
              f'(config.sample.prompts / steps)...')
  videos = sample_lib.generate(setup.spec, state_lib.inference_params(state), config, prompts, sampler=sampler,
                               mesh=setup.mesh, embeddings=embeddings)
  if jax.process_index() == 0:
    paths = sample_lib.write_samples(videos, prompts, workdir / 'samples' / f'step_{step:07d}', config.sample.fps)
    writer.write_samples(step, videos, prompts, config.sample.fps)
    writer.text(f'samples at step {step}: {paths[0].parent}')
