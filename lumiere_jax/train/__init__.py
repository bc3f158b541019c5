"""Training: state, step, checkpoints, metrics, the in-training FVD and the `lumiere-train` main."""

NONFINITE_POLICIES = ('skip', 'stop')


def config_errors(config):
  """(field, problem) for every out-of-range `train` field."""
  t = config.train
  checks = [
      ('batch_size', t.batch_size >= 1, 'must be >= 1'),
      ('steps', t.steps >= 1, 'must be >= 1'),
      ('learning_rate', t.learning_rate > 0, 'must be > 0'),
      ('warmup_steps', t.warmup_steps is None or 0 <= t.warmup_steps <= t.steps,
       f'must be None (scaled to train.steps) or in [0, train.steps={t.steps}]'),
      ('weight_decay', t.weight_decay >= 0, 'must be >= 0'),
      ('grad_clip', t.grad_clip > 0, 'must be > 0'),
      ('ema_decay', 0 <= t.ema_decay < 1, 'must be in [0, 1)'),
      ('log_every', t.log_every is None or t.log_every >= 1, 'must be None (scaled to train.steps) or >= 1'),
      ('checkpoint_every', t.checkpoint_every is None or t.checkpoint_every >= 1,
       'must be None (scaled to train.steps) or >= 1'),
      ('keep_checkpoints', t.keep_checkpoints >= 1, 'must be >= 1'),
      ('nonfinite', t.nonfinite in NONFINITE_POLICIES, f'must be one of {NONFINITE_POLICIES}'),
      ('max_nonfinite_in_a_row', t.max_nonfinite_in_a_row >= 1, 'must be >= 1'),
  ]
  yield from ((f'train.{field}', f'{t[field]!r} {problem}') for field, ok, problem in checks if not ok)
  try:
    profile_range(t)
  except ValueError as e:
    yield 'train.profile_steps', str(e)


def profile_range(train_config) -> tuple[int, int] | None:
  """Steps [a, b) of `train.profile_steps='a,b'` to trace with jax.profiler (the steps taking the state from step a
  to step b), None when '' (off); ValueError saying what is wrong with the text."""
  text = train_config.profile_steps
  if not text.strip():
    return None
  try:
    first, end = (int(part) for part in text.split(','))
  except ValueError:
    raise ValueError(f"{text!r} is not 'a,b' (two step numbers, e.g. '10,15')") from None
  if not 0 <= first < end:
    raise ValueError(f'{text!r}: the steps a,b need 0 <= a < b')
  if end > train_config.steps:
    raise ValueError(f'{text!r}: b={end} is past train.steps={train_config.steps}')
  return first, end


def intervals(train_config) -> tuple[int, int, int]:
  """(warmup_steps, log_every, checkpoint_every): the configured values, or for those left None values scaled to
  `train.steps` (min(1000, steps / 10), min(25, steps / 10), min(200, steps / 5)), so a short run needs only
  `--config.train.steps=N`."""
  t, steps = train_config, train_config.steps
  scaled = (min(1000, steps // 10), min(25, max(1, steps // 10)), min(200, max(1, steps // 5)))
  return tuple(scaled[i] if value is None else value
               for i, value in enumerate((t.warmup_steps, t.log_every, t.checkpoint_every)))
