"""Sources beyond the embedded set: real-world frame rates, sizes and codecs, precomputed caption embeddings, TFDS."""

import fractions
import io

import av
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags

from lumiere_jax import config as config_lib
from lumiere_jax.data import pipeline, records, tokenizers, transforms, video

flags.FLAGS.mark_as_parsed()  # grain workers read absl flags; outside app.run they must be marked parsed
SIZE, FRAMES, BATCH = 16, 8, 2


def _config(source, **data):
  config = config_lib.load('stage=base,size=tiny')
  config.unlock()
  config.model.image_size, config.model.num_frames = SIZE, FRAMES
  config.train.batch_size = BATCH
  config.data.update(dict(source=source, **data))
  config.lock()
  return config


def _levels(num_frames):
  """A distinct grey level per source frame, so sampled frames can be traced back to their source index."""
  return 20 + (np.arange(num_frames) * 23) % 200


def _encode(num_frames, fps, height, width, codec):
  buffer = io.BytesIO()
  with av.open(buffer, 'w', format='mp4') as container:
    stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    stream.options = {'qscale': '1'} if codec == 'mpeg4' else {'crf': '1'}
    for level in _levels(num_frames):
      container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((height, width, 3), level, np.uint8),
                                                             format='rgb24')))
    container.mux(stream.encode())
  return buffer.getvalue()


@pytest.mark.parametrize('fps, height, width, codec', [
    (25, 32, 48, 'libx264'), (30, 48, 32, 'mpeg4'), (29.97, 24, 24, 'libx264'), (60, 16, 64, 'mpeg4'),
])
def test_frame_rates_sizes_and_codecs(tmp_path, fps, height, width, codec):
  num_frames = int(np.ceil(FRAMES * fps / 16)) + 2
  data = _encode(num_frames, fps, height, width, codec)
  encoded = [records.encode_record(key=f'c{i}', caption='a clip', video=data, fps=fps, num_frames=num_frames,
                                   height=height, width=width) for i in range(BATCH)]
  records.write_shards(encoded, tmp_path, prefix='clips', num_shards=1)
  batch = next(pipeline.make_train_iterator(_config(str(tmp_path / '*.array_record')), train=False))
  assert batch['video'].shape == (BATCH, FRAMES, SIZE, SIZE, 3)
  expected = _levels(num_frames)[transforms.nearest_frames(np.arange(num_frames) / fps,
                                                           np.arange(FRAMES) / 16)]
  got = batch['video'][0].mean(axis=(1, 2, 3))
  np.testing.assert_allclose(got, expected, atol=4)  # each frame is the source frame nearest in time


def _embedding_source(directory, embeddings):
  encoded = [records.encode_record(key=f'c{i}', caption='a red circle moving left', fps=16, num_frames=FRAMES,
                                   video=video.encode_mp4(np.zeros((FRAMES, SIZE, SIZE, 3), np.uint8), 16),
                                   height=SIZE, width=SIZE, text_emb=emb) for i, emb in enumerate(embeddings)]
  records.write_shards(encoded, directory, prefix='clips', num_shards=1)
  return str(directory / '*.array_record')


def test_precomputed_text_embeddings_replace_tokens(tmp_path):
  config = _config('', text_embeddings=True)
  width, length = config.text.width, config.text.max_length
  rng = np.random.default_rng(0)
  embeddings = [rng.standard_normal((n, width)).astype(np.float16) for n in (3, 5)]
  iterator = pipeline.make_train_iterator(_config(_embedding_source(tmp_path, embeddings), text_embeddings=True),
                                          train=False)
  batch = next(iterator)
  assert set(batch) == {'video', 'text_emb', 'token_mask'}
  assert batch['text_emb'].shape == (BATCH, length, width) and batch['text_emb'].dtype == np.float32
  for row, emb in enumerate(embeddings):
    np.testing.assert_array_equal(batch['token_mask'][row], np.arange(length) < len(emb))
    np.testing.assert_array_equal(batch['text_emb'][row, :len(emb)], emb.astype(np.float32))
    assert not batch['text_emb'][row, len(emb):].any()


@pytest.mark.parametrize('embedding, reason', [(None, 'missing field'), (np.zeros((3, 7)), 'bad field'),
                                               (np.zeros((99, 64)), 'bad field')])
def test_unusable_text_embeddings_are_bad_records(tmp_path, embedding, reason):
  good = np.zeros((2, 64), np.float16)
  source = _embedding_source(tmp_path, [good, embedding, good, good, good])
  iterator = pipeline.make_train_iterator(_config(source, text_embeddings=True, max_bad_fraction=0.5), train=False)
  next(iterator)
  assert iterator.stats['bad_reasons'] == {reason: 1}


class TinyVideoCaptions(tfds.core.GeneratorBasedBuilder):
  """Four clips, stored both as uint8 frames and as MP4 bytes, with captions and a frame rate."""

  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'frames': tfds.features.Tensor(shape=(None, SIZE, 24, 3), dtype=np.uint8),
        'mp4': tfds.features.Tensor(shape=(), dtype=np.object_),
        'text': tfds.features.Text(),
        'fps': tfds.features.Scalar(dtype=np.float32),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i in range(4):
      frames = np.repeat(_levels(2 * FRAMES)[:, None, None, None], 3, axis=-1)
      frames = np.broadcast_to(frames, (2 * FRAMES, SIZE, 24, 3)).astype(np.uint8)
      yield i, dict(frames=frames, mp4=video.encode_mp4(frames, 32), text=f'clip number {i}', fps=32.0)


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp('tfds')
  TinyVideoCaptions(data_dir=str(directory), file_format='array_record').download_and_prepare()
  return str(directory)


@pytest.mark.parametrize('video_key', ['frames', 'mp4'])
def test_tfds_source(tfds_dir, video_key):
  config = _config('tfds:tiny_video_captions', tfds_data_dir=tfds_dir, tfds_video_key=video_key,
                   tfds_caption_key='text')
  batches = list(pipeline.make_train_iterator(config, train=False))
  assert len(batches) == 2
  captions = [text for b in batches for text in tokenizers.build_tokenizer(config.text).decode(b['tokens'])]
  assert sorted(captions) == [f'clip number {i}' for i in range(4)]
  expected = _levels(2 * FRAMES)[::2]  # 32 fps -> 16 fps: every other frame
  np.testing.assert_allclose(batches[0]['video'][0].mean(axis=(1, 2, 3)), expected, atol=3)


def test_tfds_source_errors_name_the_field(tfds_dir):
  with pytest.raises(ValueError, match='data.source'):
    pipeline.make_train_iterator(_config('tfds:no_such_dataset', tfds_data_dir=tfds_dir))
  iterator = pipeline.make_train_iterator(
      _config('tfds:tiny_video_captions', tfds_data_dir=tfds_dir, tfds_video_key='frames', tfds_caption_key='text',
              tfds_fps_key='rate', max_bad_fraction=0.5), train=False)
  with pytest.raises(pipeline.BadDataError, match='data.tfds_fps'):
    next(iterator)
