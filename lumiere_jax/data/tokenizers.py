"""Tokenizers turn captions into fixed-length id arrays plus a validity mask.

Every tokenizer gives (ids int32 (N, max_length), mask bool (N, max_length)): the caption's tokens truncated to
`max_length - 1`, an EOS, then padding (id 0, mask False). An empty caption gives an all-False mask, the "null"
caption of classifier-free guidance. The byte tokenizer is the embedded default (no vocabulary file): UTF-8 bytes
shifted past the special ids. T5 checkpoints come with a SentencePiece model (`spiece.model`); ByT5 ones use bytes.
"""

import pathlib

import numpy as np
import sentencepiece

PAD_ID = 0
EOS_ID = 1
BYTE_OFFSET = 2  # the built-in encoder's bytes: pad 0, eos 1, then the bytes
BYT5_BYTE_OFFSET = 3  # ByT5's: pad 0, eos 1, unk 2, then the bytes
T5_SENTENCEPIECE_FILE = 'spiece.model'  # where Hugging Face T5 checkpoints keep their tokenizer


def _pack(captions: list[str], token_lists: list[list[int]], max_length: int, eos_id: int):
  """Per caption: its tokens truncated to max_length - 1, then EOS, padded with PAD_ID; empty captions stay empty."""
  ids = np.full((len(captions), max_length), PAD_ID, np.int32)
  mask = np.zeros((len(captions), max_length), bool)
  for row, (caption, tokens) in enumerate(zip(captions, token_lists, strict=True)):
    if caption:
      tokens = [*tokens[: max_length - 1], eos_id]
      ids[row, : len(tokens)] = tokens
      mask[row, : len(tokens)] = True
  return ids, mask


class ByteTokenizer:
  """Captions -> (ids, mask) of UTF-8 bytes + `offset` (2: the built-in encoder's, 3: ByT5's)."""

  def __init__(self, max_length: int, offset: int = BYTE_OFFSET):
    if max_length < 2:
      raise ValueError(f'text.max_length must be >= 2, got {max_length}')
    self.max_length = max_length
    self.offset = offset
    self.vocab_size = 256 + offset

  def encode(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    token_lists = [[b + self.offset for b in caption.encode('utf-8')] for caption in captions]
    return _pack(captions, token_lists, self.max_length, EOS_ID)

  def decode(self, ids: np.ndarray) -> list[str]:
    """Inverse of `encode` up to truncation (for logs and tests)."""
    out = []
    for row in np.asarray(ids):
      end = np.flatnonzero(row == EOS_ID)
      row = row[: end[0]] if end.size else row[row != PAD_ID]
      out.append(bytes((row - self.offset).astype(np.uint8).tolist()).decode('utf-8', errors='replace'))
    return out


class SentencePieceTokenizer:
  """Captions -> (ids, mask) of a SentencePiece model's pieces (T5's vocabularies: pad 0, eos 1, unk 2)."""

  def __init__(self, model_file: str | pathlib.Path, max_length: int):
    if max_length < 2:
      raise ValueError(f'text.max_length must be >= 2, got {max_length}')
    if not pathlib.Path(model_file).is_file():
      raise ValueError(f'text.tokenizer: SentencePiece model {model_file} not found')
    self.processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    self.eos_id = self.processor.eos_id()
    if self.eos_id < 0:
      raise ValueError(f'text.tokenizer: {model_file} has no EOS piece (T5 vocabularies have one, id 1)')
    self.max_length = max_length
    self.vocab_size = self.processor.get_piece_size()

  def encode(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _pack(captions, self.processor.encode(list(captions)), self.max_length, self.eos_id)

  def decode(self, ids: np.ndarray) -> list[str]:
    """Inverse of `encode` up to truncation and SentencePiece's normalisation (for logs and tests)."""
    out = []
    for row in np.asarray(ids):
      end = np.flatnonzero(row == self.eos_id)
      row = row[: end[0]] if end.size else row[row != PAD_ID]
      out.append(self.processor.decode(row.tolist()))
    return out


def build_tokenizer(text_config) -> ByteTokenizer | SentencePieceTokenizer:
  """The tokenizer of `config.text`: `text.tokenizer` ('' = the encoder's own, 'bytes' or a SentencePiece file).

  The built-in encoder reads bytes; T5 by default the checkpoint's `spiece.model`, 'bytes' for ByT5 checkpoints.
  """
  encoder, choice, max_length = text_config.encoder, text_config.tokenizer, text_config.max_length
  if encoder == 'builtin':
    if choice not in ('', 'bytes'):
      raise ValueError(f'text.tokenizer={choice!r}: the built-in encoder reads bytes ("" or "bytes")')
    return ByteTokenizer(max_length)
  if encoder == 't5':
    if choice == 'bytes':
      return ByteTokenizer(max_length, offset=BYT5_BYTE_OFFSET)
    return SentencePieceTokenizer(choice or pathlib.Path(text_config.checkpoint) / T5_SENTENCEPIECE_FILE, max_length)
  raise ValueError(f'text.encoder={encoder!r}: unknown encoder (known: builtin, t5)')


def config_errors(config):
  """(field, problem) when the SentencePiece model a T5 encoder needs is missing."""
  text = config.text
  if text.encoder != 't5' or not text.checkpoint or text.tokenizer == 'bytes':
    return
  model_file = pathlib.Path(text.tokenizer or pathlib.Path(text.checkpoint) / T5_SENTENCEPIECE_FILE)
  if not model_file.is_file():
    yield 'text.tokenizer', (f'SentencePiece model {model_file} not found (set text.tokenizer to a .model file, or '
                             '"bytes" for a ByT5 checkpoint)')
