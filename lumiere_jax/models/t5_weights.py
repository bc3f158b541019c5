"""Hugging Face T5 safetensors -> the flat parameters of `models.t5.T5Encoder`.

Reads `model.safetensors` or a sharded `model.safetensors.index.json` with the `safetensors` NumPy API, one tensor
at a time. Encoder tensors map to our paths (relative to the encoder: `blocks.0.attn.query.kernel`); PyTorch Linear
weights are (out, in) and are transposed to our (in, out) kernels. The decoder and LM head of a full T5 checkpoint
are ignored. Every missing, unknown encoder or mis-shaped tensor is reported at once, by name.
"""

import json
import pathlib

import numpy as np
from safetensors import safe_open

from lumiere_jax.models.t5 import FEED_FORWARD, T5Config

SINGLE_FILE = 'model.safetensors'
INDEX_FILE = 'model.safetensors.index.json'
# The token embedding, under either name (T5EncoderModel ties them; a checkpoint may hold one or both).
EMBEDDING_NAMES = ('shared.weight', 'encoder.embed_tokens.weight')
ENCODER_PREFIXES = ('encoder.', 'shared.')


def parameter_map(config: T5Config) -> dict[str, tuple[str, tuple[int, ...], bool]]:
  """Hugging Face name -> (our path, Hugging Face shape, transpose) for every encoder tensor but the embedding."""
  c = config
  inner = c.num_heads * c.d_kv
  names = {
      'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight':
          ('relative_bias.embedding', (c.relative_attention_num_buckets, c.num_heads), False),
      'encoder.final_layer_norm.weight': ('norm.scale', (c.d_model,), False),
  }
  gated, _ = FEED_FORWARD[c.feed_forward_proj]
  feed_forward = {'wi_0': 'up', 'wi_1': 'up_linear'} if gated else {'wi': 'up'}
  for i in range(c.num_layers):
    hf, ours = f'encoder.block.{i}.layer.', f'blocks.{i}.'
    names[f'{hf}0.layer_norm.weight'] = (f'{ours}attn_norm.scale', (c.d_model,), False)
    for hf_proj, proj in zip('qkv', ('query', 'key', 'value')):
      names[f'{hf}0.SelfAttention.{hf_proj}.weight'] = (f'{ours}attn.{proj}.kernel', (inner, c.d_model), True)
    names[f'{hf}0.SelfAttention.o.weight'] = (f'{ours}attn.out.kernel', (c.d_model, inner), True)
    names[f'{hf}1.layer_norm.weight'] = (f'{ours}mlp_norm.scale', (c.d_model,), False)
    for hf_proj, proj in feed_forward.items():
      names[f'{hf}1.DenseReluDense.{hf_proj}.weight'] = (f'{ours}mlp.{proj}.kernel', (c.d_ff, c.d_model), True)
    names[f'{hf}1.DenseReluDense.wo.weight'] = (f'{ours}mlp.down.kernel', (c.d_model, c.d_ff), True)
  return names


def _tensor_files(directory: pathlib.Path) -> dict[str, pathlib.Path]:
  """Tensor name -> the safetensors file holding it."""
  if (directory / SINGLE_FILE).is_file():
    with safe_open(directory / SINGLE_FILE, framework='np') as f:
      return dict.fromkeys(f.keys(), directory / SINGLE_FILE)
  if (directory / INDEX_FILE).is_file():
    weight_map = json.loads((directory / INDEX_FILE).read_text())['weight_map']
    return {name: directory / file for name, file in weight_map.items()}
  raise ValueError(f'{directory}: neither {SINGLE_FILE} nor {INDEX_FILE} found')


def load_encoder_params(directory, config: T5Config | None = None) -> dict[str, np.ndarray]:
  """Our encoder's parameters, float32 NumPy, from a Hugging Face T5 checkpoint directory.

  `config` defaults to the directory's config.json. Raises ValueError naming every missing, unexpected and
  mis-shaped tensor.
  """
  directory = pathlib.Path(directory)
  config = config or T5Config.from_checkpoint(directory)
  files = _tensor_files(directory)
  names = parameter_map(config)
  embedding = next((name for name in EMBEDDING_NAMES if name in files), EMBEDDING_NAMES[0])
  names[embedding] = ('embed.embedding', (config.vocab_size, config.d_model), False)
  missing = sorted(names.keys() - files.keys())
  unexpected = sorted(name for name in files if name.startswith(ENCODER_PREFIXES)
                      and name not in names and name not in EMBEDDING_NAMES)
  by_file = {}
  for name in sorted(names.keys() & files.keys()):
    by_file.setdefault(files[name], []).append(name)
  params, wrong_shape = {}, []
  for file, file_names in by_file.items():
    with safe_open(file, framework='np') as f:
      for name in file_names:
        path, shape, transpose = names[name]
        got = tuple(f.get_slice(name).get_shape())
        if got != shape:
          wrong_shape.append(f'{name} {got} (expected {shape})')
          continue
        value = f.get_tensor(name).astype(np.float32)
        params[path] = value.T if transpose else value
  problems = [f'{kind}: {", ".join(items)}' for kind, items in
              (('missing', missing), ('unexpected', unexpected), ('wrong shape', wrong_shape)) if items]
  if problems:
    raise ValueError(f'{directory}: not the T5 encoder its config.json describes; ' + '; '.join(problems))
  return params
