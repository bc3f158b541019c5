"""The text encoders a config can name (`text.encoder`): the registry, the builder, pretrained weights and the rules
of the `text` config section."""

import pathlib

import numpy as np
from flax import nnx

from lumiere_jax.models import t5, t5_weights
from lumiere_jax.models.text import TextEncoder

TEXT_ENCODERS = {'builtin': TextEncoder, 't5': t5.T5Encoder}
# Encoders loaded from `text.checkpoint`: frozen whatever `train.trainable` says.
PRETRAINED_TEXT_ENCODERS = ('t5',)
TEXT_PREFIX = 'text_encoder.'


def build_text_encoder(text_config, *, dtype, remat: str, rngs: nnx.Rngs) -> nnx.Module:
  """The encoder named by `text.encoder`: `(tokens (B, L), mask (B, L)) -> float32 (B, L, text.width)`."""
  if text_config.encoder not in TEXT_ENCODERS:
    raise ValueError(f'text.encoder={text_config.encoder!r}: unknown encoder (known: {tuple(TEXT_ENCODERS)})')
  return TEXT_ENCODERS[text_config.encoder](text_config, dtype=dtype, remat=remat, rngs=rngs)


def pretrained_text_params(text_config) -> dict[str, np.ndarray]:
  """A pretrained encoder's weights from `text.checkpoint`, keyed by model path (`text_encoder.…`); {} if none.
  ValueError naming the field when the checkpoint is not set (`text.architecture` gives shapes, not weights)."""
  if text_config.encoder not in PRETRAINED_TEXT_ENCODERS:
    return {}
  if not text_config.checkpoint:
    raise ValueError(f'text.checkpoint: text.encoder={text_config.encoder!r} reads its weights from a Hugging Face '
                     'checkpoint directory, and none is set')
  return {TEXT_PREFIX + k: v for k, v in t5_weights.load_encoder_params(text_config.checkpoint).items()}


def config_errors(config, *, training: bool = True):
  """(field, problem) for the `text` section (the tokenizer file itself: data/tokenizers.py). `training=False` (what
  reads only shapes: ahead-of-time compiles, sampling from weights held elsewhere) lets a T5 be named by
  `text.architecture` instead of a checkpoint."""
  text = config.text
  if text.max_length < 2:
    yield 'text.max_length', f'{text.max_length} leaves no room for a token and the EOS; must be >= 2'
  if text.encoder == 'builtin':
    if text.width % text.num_heads:
      yield 'text.num_heads', f'{text.num_heads} does not divide text.width={text.width}'
    for field in ('checkpoint', 'architecture'):
      if text[field]:
        yield f'text.{field}', f'{text[field]!r}: only text.encoder="t5" reads it'
    if text.tokenizer not in ('', 'bytes'):
      yield 'text.tokenizer', f'{text.tokenizer!r}: the built-in encoder reads bytes ("" or "bytes")'
  elif text.encoder == 't5':
    yield from _t5_errors(text, training)
  else:
    yield 'text.encoder', f'{text.encoder!r} is not one of {tuple(TEXT_ENCODERS)}'


def _t5_errors(text, training: bool):
  if text.architecture and text.architecture not in t5.ARCHITECTURES:
    yield 'text.architecture', f'{text.architecture!r} is not one of {tuple(t5.ARCHITECTURES)}'
    return
  if not text.checkpoint and (training or not text.architecture):
    needs = ('training reads its weights' if text.architecture else
             'or, where only shapes matter, text.architecture naming a published one')
    yield 'text.checkpoint', f'text.encoder="t5" needs a Hugging Face T5 checkpoint directory ({needs})'
    return
  try:
    t5_config = t5.T5Config.of(text)
  except ValueError as e:
    yield 'text.checkpoint', str(e)
    return
  directory = pathlib.Path(text.checkpoint)
  if text.checkpoint and not any((directory / name).is_file()
                                 for name in (t5_weights.SINGLE_FILE, t5_weights.INDEX_FILE)):
    yield 'text.checkpoint', f'{directory} has neither {t5_weights.SINGLE_FILE} nor {t5_weights.INDEX_FILE}'
  if text.width != t5_config.d_model:
    source = 'checkpoint' if text.checkpoint else f'architecture {text.architecture!r}'
    yield 'text.width', f"{text.width} must equal the T5 {source}'s d_model={t5_config.d_model}"
