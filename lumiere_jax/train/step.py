"""One optimisation step: the diffusion loss of `config.diffusion` (v-prediction, or IF's epsilon with a learned
variance) with text dropout (and the stage's conditioning video), AdamW update of
the trainable paths, EMA; metrics beside the loss: gradient norm, learning rate, and parameter and update norms per
group (temporal / spatial / text), all computed in the jitted step.

A step whose loss or gradient is not finite changes no parameter, optimizer or EMA value (its update is discarded
inside the jitted step) but still advances `step`, so the next step draws new noise and data; the `nonfinite` metric
(1 on such a step) lets the loop count and stop (train/main.py, `train.nonfinite`).
"""

import re

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lumiere_jax import conditional, models, stages
from lumiere_jax.data import transforms
from lumiere_jax.diffusion import losses, parameterization, schedules, superres
from lumiere_jax.models import params as params_lib
from lumiere_jax.parallel import sharding as sharding_lib
from lumiere_jax.train import optim
from lumiere_jax.train.state import TrainSetup

_TEMPORAL = re.compile(params_lib.TRAINABLE_PRESETS['temporal'])


def drop_text(text_emb, text_mask, keep):
  """Replaces the captions where `keep` is False by the empty caption (zero embeddings, nothing attended)."""
  mask = text_mask & keep[:, None]
  return jnp.where(mask[..., None], text_emb, 0), mask


def conditioning_inputs(config, video: jax.Array, rng: jax.Array, schedule, cond_mask: jax.Array | None = None) -> dict:
  """The stage's conditioning-video inputs of the model for clean clips `video` (B, T, H, W, 3) in [-1, 1].

  {} for text-only stages. SR models read the clip's own low-res view (area down-sampling by `sr.factor`, bilinear
  back up: pairs made in the step, so batches stay uint8 at the high resolution), noised to a random level in
  [0, sr.train_augment] that the model is told (noise-conditioning augmentation; the level as `schedule.model_input`
  gives it). The conditional stage reads the
  clip masked by the batch's `cond_mask` (B, T, H, W, 1), 1 = given, and the mask (`conditional.model_input`).
  """
  conditioning = stages.of(config).conditioning_of(config)
  if conditioning == stages.NO_CONDITIONING:
    return {}
  if conditioning == stages.MASKED:
    if cond_mask is None:
      raise ValueError('the conditional stage needs the batch\'s cond_mask (data/pipeline.py: ClipTransform)')
    return dict(conditioning=conditional.model_input(video, cond_mask))
  condition, level = superres.augment(superres.lowres_condition(video, config.sr.factor), rng, schedule,
                                      config.sr.train_augment)
  return dict(conditioning=condition, conditioning_level=level)


def loss_and_metrics(setup: TrainSetup, params, frozen, batch, rng):
  """Scalar loss (and aux) of the trainable `params` on one batch; `frozen` parameters get no gradient."""
  config = setup.config
  rng_text, rng_noise, rng_dropout, rng_condition = jax.random.split(rng, 4)
  model = setup.spec.merge({**params, **frozen})
  rngs = nnx.Rngs(dropout=rng_dropout) if config.model.dropout > 0 else None
  # Precomputed caption embeddings (data.text_embeddings) stand in for the encoder's output.
  text_emb = batch['text_emb'] if 'text_emb' in batch else model.encode_text(batch['tokens'], batch['token_mask'])
  keep = jax.random.bernoulli(rng_text, 1.0 - config.diffusion.text_dropout, (text_emb.shape[0],))
  text_emb, text_mask = drop_text(text_emb, batch['token_mask'], keep)
  schedule = schedules.from_config(config.diffusion)
  video = transforms.normalize(batch['video'])
  condition = conditioning_inputs(config, video, rng_condition, schedule, batch.get('cond_mask'))
  denoise = lambda z, level: model(z, level, text_emb, text_mask, rngs=rngs, **condition)  # noqa: E731
  return losses.diffusion_loss(denoise, video, rng_noise, schedule,
                               parameterization.Parameterization.from_config(config.diffusion))


def train_step(setup: TrainSetup, state: dict, batch: dict) -> tuple[dict, dict]:
  rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), state['step'])
  grad_fn = jax.value_and_grad(loss_and_metrics, argnums=1, has_aux=True)
  (loss, _), grads = grad_fn(setup, state['params'], state['frozen'], batch, rng)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, opt_state = setup.tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  decay = setup.config.train.ema_decay
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state['ema'], params)
  keep_if_finite = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
  new_state = dict(state, step=state['step'] + 1, params=keep_if_finite(params, state['params']),
                   ema=keep_if_finite(ema, state['ema']), opt_state=keep_if_finite(opt_state, state['opt_state']))
  applied = jax.tree.map(jnp.subtract, new_state['params'], state['params'])
  metrics = dict(loss=loss, grad_norm=grad_norm, nonfinite=(~finite).astype(jnp.int32),
                 learning_rate=optim.learning_rate_schedule(setup.config.train)(state['step']),
                 **group_norms('param_norm', {**new_state['params'], **state['frozen']}),
                 **group_norms('update_norm', applied))
  return new_state, metrics


def group_norms(name: str, flat: dict) -> dict:
  """Global L2 norms of flat parameters per group, `<name>/<group>`: `temporal` (the STUNet's new layers), `text`
  (the text encoder) and `spatial` (the rest of the U-Net); groups without parameters are left out."""
  groups = {}
  for path, value in flat.items():
    group = ('temporal' if _TEMPORAL.fullmatch(path) else 'text' if path.startswith(models.TEXT_PREFIX)
             else 'spatial')
    groups.setdefault(group, []).append(value)
  return {f'{name}/{group}': optax.tree.norm(values) for group, values in sorted(groups.items())}


def jit_train_step(setup: TrainSetup):
  """`train_step` under jax.jit with explicit in/out shardings; the incoming state is donated."""
  state_shardings = setup.state_shardings()
  replicated = sharding_lib.replicated(setup.mesh)

  def step(state, batch):
    with jax.sharding.use_abstract_mesh(setup.mesh.abstract_mesh):  # the model splits frames over `context`
      return train_step(setup, state, batch)

  return jax.jit(step, in_shardings=(state_shardings, sharding_lib.batch_sharding(setup.mesh)),
                 out_shardings=(state_shardings, replicated), donate_argnums=0)
