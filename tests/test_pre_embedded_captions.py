"""Training on pre-embedded captions (`data.text_embeddings=True`) with T5: no text encoder in the model or the train
state, no T5 weights read at init; the prompts it samples are embedded apart, as the encoder itself embeds them;
its exports sample with T5 taken from `text.checkpoint`."""

import jax
import numpy as np
import pytest

from lumiere_jax import config as config_lib
from lumiere_jax import export as export_lib, inference, models
from lumiere_jax import sample as sample_lib
from lumiere_jax.data import records, tokenizers, video
from lumiere_jax.models import t5_weights
from lumiere_jax.parallel import sharding as sharding_lib
from lumiere_jax.train import main as train_main, metrics as metrics_lib, step as step_lib
from micro import micro_config, one_device_setup, perturbed
from test_t5 import SENTENCES, _encoder, checkpoint  # noqa: F401 (checkpoint: the tiny T5 fixture)

PROMPTS = SENTENCES[:2]


def _config(checkpoint, text_embeddings=True):
  return micro_config(**{
      'text.encoder': 't5', 'text.checkpoint': str(checkpoint), 'text.width': 32, 'data.text_embeddings':
      text_embeddings, 'train.batch_size': 2, 'model.image_size': 8, 'model.num_frames': 4,
      'model.channel_mults': (1, 2), 'model.temporal_downsample': (True,), 'model.attention_resolutions': (4,),
      'sample.prompts': tuple(PROMPTS), 'sample.guidance': 3.0})


@pytest.fixture(scope='module')
def pre_embedded(checkpoint):
  """(config, setup, inference params with every weight perturbed: a fresh model would ignore the caption)."""
  config = _config(checkpoint)
  setup = one_device_setup(config)
  state = setup.init()
  return config, setup, perturbed({**state['frozen'], **state['params']}, 0.05, seed=2)


@pytest.fixture(scope='module')
def reference_videos(checkpoint, pre_embedded):
  """The pre-embedded model's weights in the same model holding the encoder, sampled from the prompts' tokens."""
  full = _config(checkpoint, text_embeddings=False)
  text = {models.TEXT_PREFIX + k: v for k, v in t5_weights.load_encoder_params(checkpoint).items()}
  return sample_lib.generate(models.model_spec(full), {**pre_embedded[2], **text}, full, PROMPTS, seed=3)


def test_the_train_state_holds_no_text_encoder_and_steps_on_embeddings(checkpoint, monkeypatch):
  def no_t5(directory):
    raise AssertionError(f'read T5 weights from {directory}')
  monkeypatch.setattr(t5_weights, 'load_encoder_params', no_t5)
  setup = one_device_setup(_config(checkpoint))
  assert not any(k.startswith(models.TEXT_PREFIX) for k in setup.spec.shapes)
  state = setup.init()
  before = jax.device_get(state['params'])
  rng = np.random.default_rng(0)
  mask = np.arange(16)[None] < np.array([[5], [9]])
  batch = dict(video=rng.integers(0, 256, (2, 4, 8, 8, 3), np.uint8), token_mask=mask,
               text_emb=np.where(mask[..., None], rng.standard_normal((2, 16, 32)), 0).astype(np.float32))
  step = step_lib.jit_train_step(setup)
  for _ in range(2):  # the first step's warm-up learning rate is 0
    state, metrics = step(state, sharding_lib.global_batch(batch, setup.mesh))
  assert np.isfinite(float(metrics['loss'])) and 'param_norm/text' not in metrics
  assert any(not np.array_equal(before[k], v) for k, v in jax.device_get(state['params']).items())


def test_samples_get_the_encoders_embeddings(checkpoint, pre_embedded, reference_videos):
  config, setup, params = pre_embedded
  writer = metrics_lib.MetricWriter(checkpoint, total_steps=1, enabled=False)
  embeddings = train_main._prompt_embeddings(config, setup.mesh, None, writer)  # pylint: disable=protected-access
  tokens, mask = tokenizers.build_tokenizer(config.text).encode(PROMPTS)
  want = np.asarray(_encoder(checkpoint)(tokens, mask))
  for i, prompt in enumerate(PROMPTS):
    np.testing.assert_allclose(embeddings[prompt][0], want[i], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(embeddings[prompt][1], mask[i])
  with pytest.raises(ValueError, match='holds no text encoder'):
    sample_lib.generate(setup.spec, params, config, PROMPTS)
  videos = sample_lib.generate(setup.spec, params, config, PROMPTS, seed=3, embeddings=embeddings)
  # Guidance pairs both with the same empty caption (zeros), which needs no encoder.
  assert videos.shape == reference_videos.shape and np.abs(videos.astype(int) - reference_videos).max() <= 1
  assert np.abs(videos[0].astype(int) - videos[1]).max() > 8  # the captions matter


def test_an_export_samples_with_t5_from_its_config(checkpoint, pre_embedded, reference_videos, tmp_path):
  config, _, params = pre_embedded
  export_lib.write(tmp_path / 'export', config, params, step=7, weights='ema', source='test', fmt='safetensors')
  loaded = inference.load(tmp_path / 'export', devices=jax.devices()[:1])
  assert not loaded.config.data.text_embeddings and loaded.step == 7
  text = t5_weights.load_encoder_params(checkpoint)
  assert loaded.params.keys() == params.keys() | {models.TEXT_PREFIX + k for k in text}
  assert all(np.array_equal(loaded.params[models.TEXT_PREFIX + k], v) for k, v in text.items())
  videos = sample_lib.generate(loaded.spec, loaded.params, loaded.config, PROMPTS, seed=3)
  assert np.abs(videos.astype(int) - reference_videos).max() <= 1
  for moved in (str(tmp_path / 'moved'), ''):
    with pytest.raises(ValueError, match=r'pre-embedded captions.*config\.text\.checkpoint: '):
      inference.load(tmp_path / 'export', overrides={'text.checkpoint': moved}, devices=jax.devices()[:1])


def test_a_run_trains_on_embedded_records_and_samples_its_prompts(checkpoint, tmp_path):
  rng = np.random.default_rng(1)
  clips = [records.encode_record(
      key=f'c{i}', caption=prompt, fps=16, num_frames=4, height=8, width=8,
      video=video.encode_mp4(rng.integers(0, 256, (4, 8, 8, 3), np.uint8), 16),
      text_emb=rng.standard_normal((3, 32)).astype(np.float16)) for i, prompt in enumerate(PROMPTS * 2)]
  records.write_shards(clips, tmp_path / 'data', prefix='train', num_shards=1)
  config = config_lib.with_overrides(_config(checkpoint), {
      'data.source': str(tmp_path / 'data' / '*.array_record'), 'train.steps': 2, 'sample.steps': 1})
  result = train_main.train(config, tmp_path / 'run', devices=jax.devices()[:1])
  assert not any(k.startswith(models.TEXT_PREFIX) for k in (*result.state['frozen'], *result.state['params']))
  assert len(list((tmp_path / 'run' / 'samples' / 'step_0000002').glob('*.mp4'))) == len(PROMPTS)
