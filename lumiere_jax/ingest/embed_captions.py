"""Precomputed caption embeddings: the configured text encoder run once over the captions of ArrayRecord shards.

`embed_captions` rewrites every input shard under its own name in another directory, record for record in the same
order, adding `text_emb` (float16 rows of the caption's valid tokens) and `text_emb_dim` (`records.py`). Training
with `data.text_embeddings=True` then reads them and never runs the encoder; such a run's few prompts to sample get
their embeddings from `prompt_embeddings` at start-up.
Records that do not decode pass through unchanged (the input pipeline counts them as bad, as it would have).
"""

import glob
import os
import pathlib

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
from flax import nnx

from lumiere_jax import models, progress
from lumiere_jax.data import records, tokenizers
from lumiere_jax.models import params as params_lib
from lumiere_jax.parallel import sharding as sharding_lib


def embed_captions(config, in_glob: str, out_dir: str | os.PathLike, *, batch_size: int = 64,
                   params: dict | None = None, process_index: int = 0, process_count: int = 1,
                   devices=None) -> list[str]:
  """Writes `out_dir/<shard name>` for each shard matching `in_glob`, with caption embeddings; returns the paths.

  Process i of `process_count` takes shards i, i + P, ...; each batch of captions is split over `devices` (default:
  this process's local devices, so processes never wait on each other). `params` are flat model parameters holding
  `text_encoder.*` (a run's inference parameters, for the built-in encoder); by default the pretrained encoder's own
  (`text.checkpoint`). Compute runs in `config.model.dtype`.
  """
  all_paths = sorted(pathlib.Path(p) for p in glob.glob(in_glob))
  if not all_paths:
    raise ValueError(f'{in_glob}: no shard matches')
  paths = all_paths[process_index::process_count]
  out_dir = pathlib.Path(out_dir)
  if any(path.parent.resolve() == out_dir.resolve() for path in paths):
    raise ValueError(f'{out_dir}: must differ from the input directory (shards keep their names)')
  out_dir.mkdir(parents=True, exist_ok=True)
  devices = jax.local_devices() if devices is None else list(devices)
  batch_size = -(-batch_size // len(devices)) * len(devices)  # whole rows per device
  encode = _jit_encoder(config, params, devices)
  tokenizer = tokenizers.build_tokenizer(config.text)
  written = []
  for path in progress.track(paths, f'embedding the captions of {len(paths)} shards'):
    reader = records.array_record_module.ArrayRecordReader(str(path))
    try:
      with records.atomic_shard(out_dir / path.name) as writer:
        for record in _embedded(reader, tokenizer, encode, batch_size):
          writer.write(record)
      written.append(str(out_dir / path.name))
    finally:
      reader.close()
  return written


def _jit_encoder(config, params, devices):
  """`(tokens, mask) -> embeddings` of the configured encoder, weights replicated, the batch split over `devices`."""
  spec, encoder_params = _encoder(config, params)
  mesh = jax.sharding.Mesh(np.asarray(devices), ('batch',))
  replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P('batch'))
  encoder_params = jax.device_put(encoder_params, replicated)
  apply = jax.jit(lambda p, tokens, mask: spec.merge(p)(tokens, mask), in_shardings=(replicated, split, split),
                  out_shardings=split)
  return lambda tokens, mask: np.asarray(apply(encoder_params, tokens, mask))


def _encoder(config, params) -> tuple[params_lib.ModelSpec, dict]:
  """(spec, flat weights) of the configured encoder alone; weights from `params` (`text_encoder.*`) or, if None,
  the pretrained encoder's own."""
  dtype = jnp.dtype(config.model.dtype)
  spec = params_lib.ModelSpec.from_builder(
      lambda: models.build_text_encoder(config.text, dtype=dtype, remat='none', rngs=nnx.Rngs(0)))
  params = models.pretrained_text_params(config.text) if params is None else params
  encoder_params = {k.removeprefix(models.TEXT_PREFIX): v for k, v in params.items()
                    if k.startswith(models.TEXT_PREFIX)}
  if not encoder_params:
    raise ValueError(f'text.encoder={config.text.encoder!r} has no pretrained weights: pass the `params` of a run')
  missing = spec.shapes.keys() - encoder_params.keys()
  if missing:
    raise ValueError(f'params lack {len(missing)} text encoder parameters, e.g. {sorted(missing)[:3]}')
  return spec, encoder_params


def prompt_embeddings(config, prompts, mesh: jax.sharding.Mesh) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """prompt -> (embeddings float32 (L, D), mask bool (L,)) by the pretrained encoder of `config.text`.

  For a run on pre-embedded captions, which holds no encoder (`models.holds_text_encoder`) yet samples prompts: the
  weights are read from `text.checkpoint` and sharded over `mesh` by their logical axes as the model's frozen
  parameters are, for this call only (freed on return).
  """
  unique = sorted(set(prompts))
  if not unique:
    return {}
  spec, weights = _encoder(config, None)
  weights = sharding_lib.place_params(weights, spec, mesh, config.mesh.axis_rules)
  tokens, mask = tokenizers.build_tokenizer(config.text).encode(unique)
  replicated = sharding_lib.replicated(mesh)
  tokens_on_mesh, mask_on_mesh = (jax.make_array_from_callback(x.shape, replicated, lambda index, x=x: x[index])
                                  for x in (tokens, mask))  # the same on every process
  emb = jax.jit(lambda p, t, m: spec.merge(p)(t, m), out_shardings=replicated)(weights, tokens_on_mesh, mask_on_mesh)
  emb = np.asarray(emb.addressable_data(0))  # replicated: every process holds all of it
  return {prompt: (emb[i], mask[i]) for i, prompt in enumerate(unique)}


def _embedded(reader, tokenizer, encode, batch_size: int):
  """The shard's records in order, each with its caption's embeddings (fixed-size batches: one compilation)."""
  num_records = reader.num_records()
  for start in range(0, num_records, batch_size):
    raw = reader.read(start, min(start + batch_size, num_records))
    decoded = [_decode_or_none(data) for data in raw]
    captions = [record['caption'] if record else '' for record in decoded]
    tokens, mask = tokenizer.encode(captions + [''] * (batch_size - len(captions)))
    embeddings = encode(tokens, mask)
    for data, record, emb, valid in zip(raw, decoded, embeddings, mask):
      if record is None:
        yield data
      else:
        fields = {name: record[name] for name in records.SCHEMA}
        yield records.encode_record(**fields, text_emb=emb[: valid.sum()])


def _decode_or_none(data: bytes) -> dict | None:
  try:
    return records.decode_record(data)
  except records.BadRecordError:
    return None
