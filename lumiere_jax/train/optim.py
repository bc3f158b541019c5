"""AdamW with linear warmup, cosine decay and global-norm clipping (`config.train`)."""

import jax
import optax

from lumiere_jax import train


def learning_rate_schedule(train_config) -> optax.Schedule:
  """Linear warmup to the peak, then cosine decay to 0 at `train.steps` (at least one decay step)."""
  warmup_steps = train.intervals(train_config)[0]
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train_config.learning_rate, warmup_steps=warmup_steps,
      decay_steps=max(train_config.steps, warmup_steps + 1), end_value=0.0)


def make_optimizer(train_config) -> optax.GradientTransformation:
  """Weight decay applies to kernels (ndim >= 2) only, not to biases, norms or embeddings' 1-D leaves."""
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)  # noqa: E731
  return optax.chain(
      optax.clip_by_global_norm(train_config.grad_clip),
      optax.adamw(learning_rate_schedule(train_config), weight_decay=train_config.weight_decay, mask=decay_mask),
  )
