"""T5 text encoder: Hugging Face equivalence, weight loading, tokenizers, frozen training, caption embedding."""

import io
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import sentencepiece
import torch
import transformers
from flax import nnx
from transformers.models.t5 import modeling_t5

from lumiere_jax import config as config_lib
from lumiere_jax import validation
from lumiere_jax.data import records, tokenizers
from lumiere_jax.ingest import embed_captions
from lumiere_jax.models import params as params_lib, t5, t5_weights
from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import state as state_lib, step as step_lib
from micro import micro_config

SENTENCES = ['a red circle moving left', 'a blue square moving right', 'a green triangle moving up',
             'a yellow circle moving down', 'the camera pans slowly over a quiet lake at dawn']
TINY = dict(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=32,
            relative_attention_max_distance=20, dropout_rate=0.0)


def _hf_checkpoint(directory, feed_forward, **save_kwargs):
  """A random Hugging Face T5EncoderModel saved to `directory`; returns the model."""
  torch.manual_seed(0)
  model = transformers.T5EncoderModel(transformers.T5Config(feed_forward_proj=feed_forward, **TINY)).eval()
  model.save_pretrained(directory, **save_kwargs)
  return model


def _train_sentencepiece(path):
  """A tiny SentencePiece model with T5's special ids (pad 0, eos 1, unk 2, no bos)."""
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(SENTENCES * 4), model_writer=model, vocab_size=40, pad_id=0, eos_id=1, unk_id=2,
      bos_id=-1, minloglevel=2)
  path.write_bytes(model.getvalue())
  return path


def _encoder(directory, dtype=jnp.float32):
  """Our encoder with the checkpoint's weights, as a callable."""
  text_config = micro_config(**{'text.encoder': 't5', 'text.checkpoint': str(directory)}).text
  spec = params_lib.ModelSpec.from_builder(
      lambda: t5.T5Encoder(text_config, dtype=dtype, remat='none', rngs=nnx.Rngs(0)))
  loaded = t5_weights.load_encoder_params(directory)
  assert loaded.keys() == spec.shapes.keys()
  return spec.merge(loaded)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
  """A gated-GELU tiny T5 with a SentencePiece model at the Hugging Face default name."""
  directory = tmp_path_factory.mktemp('t5')
  _hf_checkpoint(directory, 'gated-gelu')
  _train_sentencepiece(directory / tokenizers.T5_SENTENCEPIECE_FILE)
  return directory


@pytest.mark.parametrize('feed_forward,sharded', [('relu', False), ('gated-gelu', False), ('gated-gelu', True)])
def test_matches_hugging_face(tmp_path, feed_forward, sharded):
  hf_model = _hf_checkpoint(tmp_path, feed_forward, **(dict(max_shard_size='20KB') if sharded else {}))
  assert (tmp_path / t5_weights.INDEX_FILE).is_file() == sharded
  rng = np.random.default_rng(0)
  tokens = rng.integers(2, TINY['vocab_size'], (4, 48)).astype(np.int32)  # 48 > max_distance: far buckets too
  lengths = np.array([48, 30, 5, 0])  # the last caption is empty
  mask = np.arange(48)[None] < lengths[:, None]
  with torch.no_grad():
    want = hf_model(input_ids=torch.tensor(tokens, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
  got = np.asarray(_encoder(tmp_path)(tokens, mask))
  assert np.abs(got - want)[mask].max() < 1e-4
  assert not np.any(got[~mask])


def test_relative_position_buckets_match_hugging_face():
  length = 300
  offsets = torch.arange(length)[None, :] - torch.arange(length)[:, None]
  for num_buckets, max_distance in ((32, 128), (32, 20), (8, 16)):
    want = modeling_t5.T5Attention._relative_position_bucket(
        offsets, bidirectional=True, num_buckets=num_buckets, max_distance=max_distance).numpy()
    np.testing.assert_array_equal(t5.relative_position_buckets(length, num_buckets, max_distance), want)


def test_parameters_shard_by_logical_names(checkpoint):
  text_config = _t5_config(checkpoint).text
  spec = params_lib.ModelSpec.from_builder(
      lambda: t5.T5Encoder(text_config, dtype=jnp.float32, remat='none', rngs=nnx.Rngs(0)))
  names = spec.logical_names
  assert names['embed.embedding'] == ('vocab', 'embed')
  assert names['blocks.1.attn.query.kernel'] == ('embed', 'heads')
  assert names['blocks.1.attn.out.kernel'] == ('heads', 'embed')
  assert names['blocks.1.mlp.up_linear.kernel'] == ('embed', 'mlp')
  assert names['blocks.1.mlp.down.kernel'] == ('mlp', 'embed')
  mesh = mesh_lib.make_mesh(dict(data=1, fsdp=4, tensor=2), jax.devices()[:8])
  rules = sharding_lib.rules_from_config(micro_config().mesh.axis_rules)
  shardings = sharding_lib.tree_shardings(spec.shapes, names, mesh, rules)
  assert shardings['blocks.1.mlp.down.kernel'].spec == jax.sharding.PartitionSpec('tensor', 'fsdp')


def test_bfloat16_compute_stays_close(checkpoint):
  tokens = np.arange(2, 26, dtype=np.int32).reshape(2, 12)
  mask = np.arange(12)[None] < np.array([[12], [7]])
  full = np.asarray(_encoder(checkpoint)(tokens, mask))
  half = _encoder(checkpoint, jnp.bfloat16)(tokens, mask)
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(half), full, atol=0.1)
  assert not np.any(np.asarray(half)[~mask])


def _rewrite(directory, change):
  path = directory / t5_weights.SINGLE_FILE
  tensors = safetensors.numpy.load_file(path)
  change(tensors)
  safetensors.numpy.save_file(tensors, path)


BLOCK0 = 'encoder.block.0.layer.0.'


@pytest.mark.parametrize('change,named', [
    (lambda t: t.pop(f'{BLOCK0}SelfAttention.k.weight'), f'missing: {BLOCK0}SelfAttention.k.weight'),
    (lambda t: t.update({f'{BLOCK0}SelfAttention.extra.weight': np.zeros(3, np.float32)}),
     f'unexpected: {BLOCK0}SelfAttention.extra.weight'),
    (lambda t: t.update({'encoder.final_layer_norm.weight': np.ones(31, np.float32)}),
     'encoder.final_layer_norm.weight (31,) (expected (32,))'),
])
def test_loader_names_the_bad_key(tmp_path, change, named):
  _hf_checkpoint(tmp_path, 'relu')
  _rewrite(tmp_path, change)
  with pytest.raises(ValueError) as error:
    t5_weights.load_encoder_params(tmp_path)
  assert named in str(error.value)


def test_loader_ignores_the_decoder_of_a_full_checkpoint(tmp_path):
  _hf_checkpoint(tmp_path, 'relu')
  encoder_only = t5_weights.load_encoder_params(tmp_path)
  _rewrite(tmp_path, lambda t: t.update({'decoder.block.0.layer.0.SelfAttention.q.weight': np.zeros((32, 32)),
                                         'lm_head.weight': np.zeros((100, 32))}))
  assert t5_weights.load_encoder_params(tmp_path).keys() == encoder_only.keys()


def test_sentencepiece_tokenizer_round_trip(tmp_path):
  model_file = _train_sentencepiece(tmp_path / 'spm.model')
  processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
  tokenizer = tokenizers.build_tokenizer(micro_config(**{
      'text.encoder': 't5', 'text.tokenizer': str(model_file), 'text.max_length': 32}).text)
  captions = [SENTENCES[0], '', SENTENCES[4]]
  ids, mask = tokenizer.encode(captions)
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == mask.shape == (3, 32)
  short, long = processor.encode(SENTENCES[0]), processor.encode(SENTENCES[4])
  assert len(short) < 31 < len(long) and processor.eos_id() == tokenizers.EOS_ID
  np.testing.assert_array_equal(ids[0], short + [1] + [0] * (31 - len(short)))
  np.testing.assert_array_equal(mask[0], ids[0] != 0)
  assert not mask[1].any() and not ids[1].any()
  assert mask[2].all() and ids[2, -1] == 1  # truncated, EOS kept
  np.testing.assert_array_equal(ids[2, :31], long[:31])
  assert tokenizer.decode(ids[:2]) == [SENTENCES[0], '']


def test_byt5_bytes_match_hugging_face():
  tokenizer = tokenizers.build_tokenizer(micro_config(**{'text.encoder': 't5', 'text.tokenizer': 'bytes'}).text)
  captions = ['héllo', '', 'x' * 40]
  ids, mask = tokenizer.encode(captions)
  want = transformers.ByT5Tokenizer()(captions, padding='max_length', truncation=True, max_length=16)
  np.testing.assert_array_equal(ids[[0, 2]], np.array(want['input_ids'])[[0, 2]])
  np.testing.assert_array_equal(mask[[0, 2]], np.array(want['attention_mask'], bool)[[0, 2]])
  assert not mask[1].any()  # the null caption: no EOS either
  assert tokenizer.decode(ids) == captions[:2] + ['x' * 15]


def _t5_config(checkpoint, **overrides):
  return micro_config(**{'text.encoder': 't5', 'text.checkpoint': str(checkpoint), 'text.width': 32, **overrides})


def test_validate_names_the_t5_fields(checkpoint, tmp_path):
  validation.validate(_t5_config(checkpoint), num_devices=1, num_processes=1)
  with pytest.raises(config_lib.ConfigError) as error:
    validation.validate(_t5_config(checkpoint, **{'text.width': 64, 'text.tokenizer': str(tmp_path / 'no.model')}),
                        num_devices=1, num_processes=1)
  assert 'config.text.width: 64' in str(error.value) and 'config.text.tokenizer:' in str(error.value)
  with pytest.raises(config_lib.ConfigError, match='config.text.checkpoint:'):
    validation.validate(_t5_config(tmp_path), num_devices=1, num_processes=1)


def test_training_keeps_t5_frozen_and_precomputed_embeddings_give_its_loss(checkpoint):
  # Smaller than micro: two levels, 4 frames of 8x8 (this test compiles three steps).
  config = _t5_config(checkpoint, **{
      'train.trainable': 'all', 'train.batch_size': 2, 'model.image_size': 8, 'model.num_frames': 4,
      'model.channel_mults': (1, 2), 'model.temporal_downsample': (True,), 'model.attention_resolutions': (4,)})
  setup = state_lib.TrainSetup.create(config, mesh_lib.make_mesh(config.mesh, jax.devices()[:1]))
  assert setup.trainable and not any(k.startswith('text_encoder.') for k in setup.trainable)
  state = setup.init()
  loaded = t5_weights.load_encoder_params(checkpoint)
  before = jax.device_get(state['frozen'])
  assert all(np.array_equal(before[f'text_encoder.{k}'], v) for k, v in loaded.items())

  tokens, mask = tokenizers.build_tokenizer(config.text).encode(SENTENCES[:2])
  video = np.random.default_rng(0).integers(0, 256, (2, 4, 8, 8, 3), np.uint8)
  batch = dict(video=video, tokens=tokens, token_mask=mask)
  # Zero-initialised output projections make a fresh U-Net ignore the caption: perturb the trainable weights.
  params = jax.tree.map(lambda p: p + 0.05 * np.random.default_rng(p.size).standard_normal(p.shape), state['params'])
  model = setup.spec.merge({**params, **state['frozen']})
  precomputed = dict(video=video, token_mask=mask, text_emb=np.asarray(model.encode_text(tokens, mask)))
  loss = jax.jit(lambda b: step_lib.loss_and_metrics(setup, params, state['frozen'], b, jax.random.PRNGKey(5))[0])
  assert float(loss(precomputed)) == pytest.approx(float(loss(batch)), rel=1e-6)
  precomputed['text_emb'] = precomputed['text_emb'][::-1]  # the other caption's embeddings: another loss
  assert float(loss(precomputed)) != pytest.approx(float(loss(batch)), rel=1e-4)

  state, metrics = step_lib.jit_train_step(setup)(state, sharding_lib.global_batch(batch, setup.mesh))
  assert np.isfinite(float(metrics['loss']))
  after = jax.device_get(state['frozen'])
  assert all(np.array_equal(after[k], before[k]) for k in before if k.startswith('text_encoder.'))


def test_embed_captions_adds_the_encoders_embeddings(checkpoint, tmp_path):
  config = _t5_config(checkpoint)
  fields = dict(video=b'not decoded here', fps=16.0, num_frames=8, height=16, width=16)
  clips = [records.encode_record(key=f'clip{i}', caption=caption, **fields) for i, caption in enumerate(SENTENCES)]
  clips.insert(2, b'not a record')  # passes through unchanged
  records.write_shards(clips, tmp_path / 'in', prefix='train', num_shards=2)
  written = embed_captions.embed_captions(config, str(tmp_path / 'in' / '*.array_record'), tmp_path / 'out',
                                          batch_size=2)
  assert [p.rsplit('/', 1)[1] for p in written] == ['train-00000-of-00002.array_record',
                                                     'train-00001-of-00002.array_record']
  out = []
  for path in written:
    reader = records.array_record_module.ArrayRecordReader(path)
    out += reader.read_all()
    reader.close()
  in_order = clips[0::2] + clips[1::2]
  assert out[in_order.index(b'not a record')] == b'not a record'
  tokens, mask = tokenizers.build_tokenizer(config.text).encode(SENTENCES)
  want = np.asarray(_encoder(checkpoint)(tokens, mask))
  for data, original in zip(out, in_order):
    if data == b'not a record':
      continue
    record, source = records.decode_record(data), records.decode_record(original)
    assert {k: record[k] for k in records.SCHEMA} == source
    i = SENTENCES.index(record['caption'])
    emb = records.text_embedding(record, config.text.width, config.text.max_length)
    assert emb.shape == (mask[i].sum(), 32)
    np.testing.assert_allclose(emb, want[i, : mask[i].sum()], atol=2e-3, rtol=2e-3)


def test_embed_captions_command_line(checkpoint, tmp_path):
  fields = dict(video=b'not decoded here', fps=16.0, num_frames=8, height=16, width=16)
  clips = [records.encode_record(key=f'clip{i}', caption=caption, **fields) for i, caption in enumerate(SENTENCES)]
  records.write_shards(clips, tmp_path / 'in', prefix='train', num_shards=1)
  config_file = pathlib.Path(__file__).parent.parent / 'configs' / 'lumiere.py'
  result = subprocess.run(
      [sys.executable, '-m', 'lumiere_jax.cli.data', 'embed-captions', f'--config={config_file}:stage=base,size=tiny',
       '--config.text.encoder=t5', f'--config.text.checkpoint={checkpoint}', '--config.text.width=32',
       f'--shards={tmp_path / "in" / "*.array_record"}', f'--out={tmp_path / "out"}'],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'wrote 1 shards with t5 caption embeddings to {tmp_path / "out"}' in result.stdout
  reader = records.array_record_module.ArrayRecordReader(str(tmp_path / 'out' / 'train-00000-of-00001.array_record'))
  embedded = [records.decode_record(data) for data in reader.read_all()]
  reader.close()
  assert [record['caption'] for record in embedded] == SENTENCES and all('text_emb' in r for r in embedded)


def test_embed_captions_splits_shards_over_processes_and_batches_over_devices(checkpoint, tmp_path):
  config = _t5_config(checkpoint)
  fields = dict(video=b'not decoded here', fps=16.0, num_frames=8, height=16, width=16)
  clips = [records.encode_record(key=f'clip{i}', caption=caption, **fields) for i, caption in enumerate(SENTENCES)]
  records.write_shards(clips, tmp_path / 'in', prefix='train', num_shards=3)
  shards = str(tmp_path / 'in' / '*.array_record')
  whole = embed_captions.embed_captions(config, shards, tmp_path / 'one', batch_size=2, devices=jax.devices()[:1])
  parts = [embed_captions.embed_captions(config, shards, tmp_path / 'two', batch_size=3, process_index=i,
                                         process_count=2, devices=jax.devices()[:4]) for i in range(2)]
  names = lambda paths: [p.rsplit('/', 1)[1] for p in paths]  # noqa: E731
  assert names(parts[0]) == names(whole)[0::2] and names(parts[1]) == names(whole)[1::2]
  for name in names(whole):
    got, want = ([records.decode_record(r) for r in _read(tmp_path / d / name)] for d in ('two', 'one'))
    assert [r['caption'] for r in got] == [r['caption'] for r in want]
    for a, b in zip(got, want):  # batches of 4 over 4 devices vs 2 on one: the same float16 rows
      np.testing.assert_allclose(records.text_embedding(a, 32, 16), records.text_embedding(b, 32, 16), atol=2e-3)


def _read(path):
  reader = records.array_record_module.ArrayRecordReader(str(path))
  try:
    return reader.read_all()
  finally:
    reader.close()
