"""The training record schema (one ArrayRecord record = one clip) and the sharded writer.

Each record is a msgpack map:

| field        | type  | meaning                                                          |
|--------------|-------|------------------------------------------------------------------|
| `key`        | str   | unique clip id (used for dedup, sharding checks and debugging)   |
| `caption`    | str   | UTF-8 text prompt; must be non-empty                             |
| `video`      | bytes | a complete MP4 file, H.264 (yuv420p), decoded with PyAV          |
| `fps`        | float | frame rate of the encoded clip (temporal sampling starts from it)|
| `num_frames` | int   | frames in the encoded clip                                       |
| `height`     | int   | frame height in pixels                                           |
| `width`      | int   | frame width in pixels                                            |

Optional fields, validated when present:

| field          | type  | meaning                                                                  |
|----------------|-------|--------------------------------------------------------------------------|
| `text_emb`     | bytes | precomputed caption embeddings: float16, little-endian, row-major (n, D), |
|                |       | one row per valid token (n <= text.max_length; the mask is the n rows)   |
| `text_emb_dim` | int   | D, the text encoder's width                                              |

An image is a record whose `video` is a one-frame clip (`num_frames` 1; `lumiere-data prepare --images` writes it as
a one-frame H.264 MP4), so videos and images share one decode path.

Shards are `{prefix}-{i:05d}-of-{n:05d}.array_record`, written with `group_size:1` (cheap random access for the
grain shuffle); record `j` of the input goes to shard `j % n`.
"""

from collections.abc import Iterable, Iterator
import contextlib
import os
import pathlib

from array_record.python import array_record_module
import msgpack
import numpy as np

# Field name -> accepted Python types after msgpack decoding (bool is rejected separately: it is an int subclass).
SCHEMA = {
    'key': (str,),
    'caption': (str,),
    'video': (bytes,),
    'fps': (float, int),
    'num_frames': (int,),
    'height': (int,),
    'width': (int,),
}
OPTIONAL = {
    'text_emb': (bytes,),
    'text_emb_dim': (int,),
}
TEXT_EMB_DTYPE = np.dtype('<f2')


class BadRecordError(ValueError):
  """A record or its video cannot be used; `reason` is a short category for counting, `detail` the specifics."""

  def __init__(self, reason: str, detail: str = ''):
    super().__init__(f'{reason}: {detail}' if detail else reason)
    self.reason = reason
    self.detail = detail


def encode_record(*, key: str, caption: str, video: bytes, fps: float, num_frames: int, height: int,
                  width: int, text_emb: np.ndarray | None = None) -> bytes:
  """Serialises one clip to the msgpack record above; `text_emb` (n, D) holds the valid tokens' embeddings."""
  record = dict(key=key, caption=caption, video=video, fps=float(fps), num_frames=int(num_frames),
                height=int(height), width=int(width))
  if text_emb is not None:
    text_emb = np.asarray(text_emb)
    if text_emb.ndim != 2:
      raise ValueError(f'text_emb must be (tokens, width), got shape {text_emb.shape}')
    record.update(text_emb=text_emb.astype(TEXT_EMB_DTYPE).tobytes(), text_emb_dim=text_emb.shape[1])
  return msgpack.packb(record, use_bin_type=True)


def text_embedding(record: dict, width: int, max_length: int) -> np.ndarray:
  """The record's precomputed caption embeddings as float32 (n, width); `BadRecordError` if absent or malformed."""
  if 'text_emb' not in record:
    raise BadRecordError('missing field', 'text_emb (data.text_embeddings is on)')
  if record['text_emb_dim'] != width:
    raise BadRecordError('bad field', f'text_emb_dim={record["text_emb_dim"]}, the text width is {width}')
  data = record['text_emb']
  if len(data) % (width * TEXT_EMB_DTYPE.itemsize):
    raise BadRecordError('bad field', f'text_emb has {len(data)} bytes, not a whole number of {width}-wide rows')
  emb = np.frombuffer(data, TEXT_EMB_DTYPE).reshape(-1, width)
  if len(emb) > max_length:
    raise BadRecordError('bad field', f'text_emb has {len(emb)} tokens, more than text.max_length={max_length}')
  return emb.astype(np.float32)


def decode_record(data: bytes) -> dict:
  """Parses and validates one record; raises `BadRecordError` naming what is wrong."""
  if not data:
    raise BadRecordError('empty record')
  try:
    record = msgpack.unpackb(data, raw=False)
  except UnicodeDecodeError as e:
    raise BadRecordError('bad field', f'text is not UTF-8: {e}') from e
  except Exception as e:  # msgpack raises several unrelated types (ExtraData, ValueError, UnicodeDecodeError, ...).
    raise BadRecordError('not msgpack', f'{type(e).__name__}: {e}') from e
  if not isinstance(record, dict):
    raise BadRecordError('not msgpack', f'expected a map, got {type(record).__name__}')
  for field, types in SCHEMA.items():
    if field not in record:
      raise BadRecordError('missing field', field)
  if ('text_emb' in record) != ('text_emb_dim' in record):
    raise BadRecordError('missing field', 'text_emb and text_emb_dim come together')
  for field, types in {**SCHEMA, **OPTIONAL}.items():
    if field not in record:
      continue
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, types):
      raise BadRecordError('bad field', f'{field} is {type(value).__name__}')
  if not record['caption'].strip():
    raise BadRecordError('empty caption', record['key'])
  if min(record['fps'], record['num_frames'], record['height'], record['width']) <= 0:
    raise BadRecordError('bad field', 'fps, num_frames, height and width must be > 0')
  return record


def shard_name(prefix: str, index: int, num_shards: int) -> str:
  """`{prefix}-00003-of-00008.array_record`: the shard naming of every writer."""
  return f'{prefix}-{index:05d}-of-{num_shards:05d}.array_record'


@contextlib.contextmanager
def atomic_shard(path: str | os.PathLike) -> Iterator[array_record_module.ArrayRecordWriter]:
  """An ArrayRecord writer (`group_size:1`) on a hidden temporary file beside `path`, renamed to `path` when the block
  completes and removed when it raises: a reader never sees a partial shard."""
  path = pathlib.Path(path)
  temp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
  writer = array_record_module.ArrayRecordWriter(str(temp), 'group_size:1')
  try:
    yield writer
  except BaseException:
    writer.close()
    temp.unlink(missing_ok=True)
    raise
  writer.close()
  os.replace(temp, path)


def write_shards(records: Iterable[bytes], directory: str | os.PathLike, *, prefix: str,
                 num_shards: int) -> list[str]:
  """Writes records round-robin into `num_shards` ArrayRecord files; each appears (renamed) only when complete."""
  if num_shards < 1:
    raise ValueError(f'num_shards must be >= 1, got {num_shards}')
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  paths = [directory / shard_name(prefix, i, num_shards) for i in range(num_shards)]
  with contextlib.ExitStack() as stack:
    writers = [stack.enter_context(atomic_shard(path)) for path in paths]
    for i, record in enumerate(records):
      writers[i % num_shards].write(record)
  return [str(path) for path in paths]
