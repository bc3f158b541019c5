"""Remat per level (`model.remat_levels`, `model.remat_coarse_policy`): the same outputs and gradients, and the
compiled FLOPs fall as fewer levels recompute."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lumiere_jax.models import layers
from micro import micro_config
from test_models import inputs, perturb, spec_of, t2i_flat

# remat_levels: -1 every level (the old single policy), 1 only the finest, 0 none (every level coarse).
VARIANTS = (-1, 1, 0)


def loss_and_grads(remat_levels: int):
  """(loss, grads, compiled FLOPs) of the T2I model's mean squared output under nothing_saveable at the finest
  `remat_levels` levels."""
  overrides = {'model.remat_policy': 'nothing_saveable', 'model.remat_levels': remat_levels}
  spec = spec_of('t2i', **overrides)
  x, logsnr, text, mask = inputs(micro_config('t2i', **overrides), frames=1)

  def loss(params):
    return jnp.mean(spec.merge(params)(x, logsnr, text, mask) ** 2)

  step = jax.jit(jax.value_and_grad(loss))
  compiled = step.lower(spec.shapes).compile()
  value, grads = compiled(perturb(t2i_flat()))
  return value, grads, compiled.cost_analysis()['flops']


def test_remat_per_level_keeps_numbers_and_cuts_recomputation():
  results = [loss_and_grads(levels) for levels in VARIANTS]
  ref_value, ref_grads, _ = results[-1]
  for value, grads, _ in results[:-1]:
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    for key in ref_grads:
      np.testing.assert_allclose(grads[key], ref_grads[key], rtol=1e-5, atol=1e-6, err_msg=key)
  every, finest, none = (flops for _, _, flops in results)
  assert every > finest > none, (every, finest, none)


def test_remat_at_levels():
  run = layers.Execution(remat_policy='nothing_saveable', remat_levels=1, remat_coarse_policy='dots_saveable')
  assert [run.remat_at(level) for level in range(3)] == ['nothing_saveable', 'dots_saveable', 'dots_saveable']
  assert layers.Execution(remat_policy='nothing_saveable').remat_at(5) == 'nothing_saveable'


def test_execution_reads_config_with_defaults():
  model = micro_config('t2i', **{'model.remat_levels': 2}).model
  run = layers.Execution.from_model_config(model)
  assert (run.remat_levels, run.remat_policy, run.attention) == (2, model.remat_policy, 'auto')


@pytest.mark.parametrize('fields, named', [
    (dict(remat_coarse_policy='save_it_all'), 'model.remat_coarse_policy'),
    (dict(remat_levels=-2), 'model.remat_levels'),
    (dict(attention='flash'), 'model.attention')])
def test_bad_execution_fields_are_named(fields, named):
  with pytest.raises(ValueError, match=named.replace('.', r'\.')):
    layers.Execution(**fields)
