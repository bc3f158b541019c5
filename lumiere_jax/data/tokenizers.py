"""Tokenizers turn captions into fixed-length id arrays plus a validity mask.

The byte tokenizer is the embedded default (no vocabulary file): UTF-8 bytes shifted past the special ids, an EOS
after the text, padding to `max_length`. An empty caption gives an all-False mask, the "null" caption of
classifier-free guidance.
"""

import numpy as np

PAD_ID = 0
EOS_ID = 1
BYTE_OFFSET = 2
BYTE_VOCAB_SIZE = 256 + BYTE_OFFSET


class ByteTokenizer:
  """Captions -> (ids int32 (N, max_length), mask bool (N, max_length)); long captions are truncated."""

  vocab_size = BYTE_VOCAB_SIZE

  def __init__(self, max_length: int):
    if max_length < 2:
      raise ValueError(f'text.max_length must be >= 2, got {max_length}')
    self.max_length = max_length

  def encode(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(captions), self.max_length), PAD_ID, np.int32)
    for row, caption in enumerate(captions):
      if not caption:
        continue
      tokens = np.frombuffer(caption.encode('utf-8'), np.uint8)[: self.max_length - 1].astype(np.int32)
      ids[row, : len(tokens)] = tokens + BYTE_OFFSET
      ids[row, len(tokens)] = EOS_ID
    return ids, ids != PAD_ID

  def decode(self, ids: np.ndarray) -> list[str]:
    """Inverse of `encode` up to truncation (for logs and tests)."""
    out = []
    for row in np.asarray(ids):
      end = np.flatnonzero(row == EOS_ID)
      row = row[: end[0]] if end.size else row[row != PAD_ID]
      out.append(bytes((row - BYTE_OFFSET).astype(np.uint8).tolist()).decode('utf-8', errors='replace'))
    return out


def build_tokenizer(text_config) -> ByteTokenizer:
  """The tokenizer named by `config.text.encoder`."""
  if text_config.encoder == 'builtin':
    return ByteTokenizer(text_config.max_length)
  raise ValueError(f'text.encoder={text_config.encoder!r}: unknown encoder (known: builtin)')
