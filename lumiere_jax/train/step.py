"""One optimisation step: v-prediction loss with text dropout, AdamW update of the trainable paths, EMA."""

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lumiere_jax.data import transforms
from lumiere_jax.diffusion import losses, schedules
from lumiere_jax.parallel import sharding as sharding_lib
from lumiere_jax.train import optim
from lumiere_jax.train.state import TrainSetup


def drop_text(text_emb, text_mask, keep):
  """Replaces the captions where `keep` is False by the empty caption (zero embeddings, nothing attended)."""
  mask = text_mask & keep[:, None]
  return jnp.where(mask[..., None], text_emb, 0), mask


def loss_and_metrics(setup: TrainSetup, params, frozen, batch, rng):
  """Scalar loss (and aux) of the trainable `params` on one batch; `frozen` parameters get no gradient."""
  config = setup.config
  rng_text, rng_noise, rng_dropout = jax.random.split(rng, 3)
  model = setup.spec.merge({**params, **frozen})
  rngs = nnx.Rngs(dropout=rng_dropout) if config.model.dropout > 0 else None
  # Precomputed caption embeddings (data.text_embeddings) stand in for the encoder's output.
  text_emb = batch['text_emb'] if 'text_emb' in batch else model.encode_text(batch['tokens'], batch['token_mask'])
  keep = jax.random.bernoulli(rng_text, 1.0 - config.diffusion.text_dropout, (text_emb.shape[0],))
  text_emb, text_mask = drop_text(text_emb, batch['token_mask'], keep)
  denoise = lambda z, logsnr: model(z, logsnr, text_emb, text_mask, rngs=rngs)  # noqa: E731
  schedule = schedules.Schedule.from_config(config.diffusion)
  return losses.diffusion_loss(denoise, transforms.normalize(batch['video']), rng_noise, schedule)


def train_step(setup: TrainSetup, state: dict, batch: dict) -> tuple[dict, dict]:
  rng = jax.random.fold_in(jax.random.wrap_key_data(state['rng']), state['step'])
  grad_fn = jax.value_and_grad(loss_and_metrics, argnums=1, has_aux=True)
  (loss, _), grads = grad_fn(setup, state['params'], state['frozen'], batch, rng)
  updates, opt_state = setup.tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  decay = setup.config.train.ema_decay
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state['ema'], params)
  metrics = dict(loss=loss, grad_norm=optax.tree.norm(grads),
                 learning_rate=optim.learning_rate_schedule(setup.config.train)(state['step']))
  new_state = dict(state, step=state['step'] + 1, params=params, ema=ema, opt_state=opt_state)
  return new_state, metrics


def jit_train_step(setup: TrainSetup):
  """`train_step` under jax.jit with explicit in/out shardings; the incoming state is donated."""
  state_shardings = setup.state_shardings()
  replicated = sharding_lib.replicated(setup.mesh)
  return jax.jit(functools.partial(train_step, setup),
                 in_shardings=(state_shardings, sharding_lib.batch_sharding(setup.mesh)),
                 out_shardings=(state_shardings, replicated), donate_argnums=0)
