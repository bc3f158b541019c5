"""FLOP counts of the train step (model vs compiled) and the utilisation figures the training log reports."""

import time

import jax
import pytest

from lumiere_jax.parallel import chips, mesh as mesh_lib
from lumiere_jax.train import aot, checkpoint, flops as flops_lib, main as train_main, metrics as metrics_lib
from lumiere_jax.train import state as state_lib, step as step_lib
from micro import micro_config


def test_compiled_flops_are_per_device_and_model_flops_leave_out_recomputation():
  config = micro_config(**{'mesh.data': 8, 'train.batch_size': 8})
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices())
  state, batch = state_lib.TrainSetup.create(config, mesh).abstract_state(), aot.abstract_batch(config, mesh)
  _, flops = flops_lib.compile_train_step(state_lib.TrainSetup.create(config, mesh), state, batch)
  assert flops.devices == 8
  # The lowered step covers the whole batch, the compiled program one device's share (XLA adds a little in fusion).
  assert flops.compiled_per_device * 8 == pytest.approx(flops.model, rel=0.1)
  remat = micro_config(**{'mesh.data': 8, 'train.batch_size': 8, 'model.remat_policy': 'nothing_saveable'})
  remat_setup = state_lib.TrainSetup.create(remat, mesh)
  assert flops_lib.rematerialises(remat) and not flops_lib.rematerialises(config)
  recomputing = flops_lib.compiled_flops(step_lib.jit_train_step(remat_setup).lower(state, batch))
  assert recomputing > 1.1 * flops.model  # nothing_saveable recomputes the forward pass in the backward one
  assert flops_lib.model_flops(remat_setup, state, batch) == flops.model  # ... which model FLOPs leave out


def test_rates_are_per_device_and_mfu_needs_a_spec_peak():
  flops = flops_lib.StepFlops(compiled_per_device=3e12, model=16e12, devices=8)
  assert flops.rates(0.5, spec_peak=4e12) == pytest.approx(dict(tflops_per_s=1.5, model_tflops_per_s=1.0, mfu=0.25))
  assert flops.rates(0.5, spec_peak=None) == pytest.approx(dict(tflops_per_s=1.5, model_tflops_per_s=1.0))


@pytest.fixture(scope='module')
def logged_run(tmp_path_factory):
  """3 steps of a micro run whose checkpoint save (at step 2) takes 2 s more, on a chip faked to peak at 1 GFLOP/s:
  (the scalars written, the workdir, the result)."""
  logged, workdir, save = [], tmp_path_factory.mktemp('logged_run'), checkpoint.Checkpointer.save

  def slow_save(self, *args, **kwargs):
    time.sleep(2.0)
    return save(self, *args, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(metrics_lib.MetricWriter, 'write', lambda self, step, scalars: logged.append((step, scalars)))
    patch.setattr(chips, 'spec_peak_flops', lambda device: 1e9)
    patch.setattr(checkpoint.Checkpointer, 'save', slow_save)
    config = micro_config(data_dir=workdir / 'data', **{'train.log_every': 2, 'train.checkpoint_every': 2})
    result = train_main.train(config, workdir / 'run', devices=jax.devices()[:1], until_step=3)  # no final samples
  return logged, workdir, result


def test_the_log_reports_mfu_over_the_steps_alone(logged_run):
  """The slow save is no training time: steps/s, TFLOP/s and MFU come from the steps; MFU is model FLOPs per device
  per second over the chip's spec peak."""
  logged, _, _ = logged_run
  (_, first), (step, after_save) = [entry for entry in logged if 'steps_per_s' in entry[1]]
  assert step == 3 and after_save['steps_per_s'] > 1 / 2.0  # the save at step 2 fell in this interval, uncounted
  for scalars in (first, after_save):
    assert scalars['mfu'] == pytest.approx(scalars['model_tflops_per_s'] * 1e12 / 1e9)
    assert scalars['tflops_per_s'] > 0 and scalars['model_tflops_per_s'] > 0


def test_a_rerun_with_no_step_left_fetches_and_compiles_nothing(logged_run, monkeypatch):
  _, workdir, first = logged_run
  monkeypatch.setattr(flops_lib, 'compile_train_step', lambda *args: pytest.fail('compiled with no step to run'))
  config = micro_config(data_dir=workdir / 'data', **{'train.log_every': 2, 'train.checkpoint_every': 2})
  rerun = train_main.train(config, workdir / 'run', devices=jax.devices()[:1], until_step=3)
  assert int(rerun.state['step']) == 3 and rerun.data_iterator.get_state() == first.data_iterator.get_state()
