"""Image datasets for the t2i stage: the image decoder's conversions and refusals, `lumiere-data prepare --images`,
WebDataset tar shards and TFDS image datasets read as sources, and images mixed with video clips by weight."""

import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from lumiere_jax import config as config_lib
from lumiere_jax.data import images, pipeline, records, sources, tokenizers, video, webdataset
from lumiere_jax.ingest import images as ingest_images

flags.FLAGS.mark_as_parsed()  # grain reads absl flags; outside app.run they must be marked parsed
ROOT = pathlib.Path(__file__).resolve().parent.parent
SIZE, BATCH = 16, 2
RED, GREEN = (255, 0, 0), (0, 255, 0)


def _encoded(image: Image.Image, fmt: str = 'PNG', **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **options)
  return buffer.getvalue()


def _solid(colour, height=24, width=40, mode='RGB') -> Image.Image:
  return Image.fromarray(np.broadcast_to(np.asarray(colour, np.uint8), (height, width, 3)).copy()).convert(mode)


def _declaring(width: int, height: int) -> bytes:
  """A small valid PNG whose header claims `width` x `height` (IHDR patched, its CRC recomputed)."""
  data = bytearray(_encoded(_solid(RED, 16, 16)))
  data[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
  data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, 'big')
  return bytes(data)


def _smooth(height=24, width=40) -> np.ndarray:
  """A gradient with a red left half: orientation and colour both show, and lossy codecs keep it."""
  pixels = np.zeros((height, width, 3), np.uint8)
  pixels[:, :width // 2] = RED
  pixels[:, width // 2:, 2] = np.linspace(60, 250, height, dtype=np.uint8)[:, None]
  return pixels


def _with_alpha() -> tuple[bytes, np.ndarray]:
  pixels = np.zeros((16, 16, 4), np.uint8)
  pixels[...] = (200, 0, 0, 128)
  alpha = 128 / 255  # independent reference: alpha over white
  expected = np.broadcast_to(np.round(np.array([200, 0, 0]) * alpha + 255 * (1 - alpha)), (16, 16, 3))
  return _encoded(Image.fromarray(pixels, 'RGBA')), expected


def _palette() -> tuple[bytes, np.ndarray]:
  image = Image.new('P', (16, 16))
  image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
  indices = np.zeros((16, 16), np.uint8)
  indices[:, 8:] = 1  # the right half uses the transparent entry
  image.putdata(indices.ravel().tolist())
  expected = np.zeros((16, 16, 3), np.uint8)
  expected[:, :8], expected[:, 8:] = RED, 255
  return _encoded(image, transparency=1), expected


def _cmyk() -> tuple[bytes, np.ndarray]:
  cmyk = np.zeros((16, 16, 4), np.uint8)
  cmyk[:, :8] = (0, 255, 255, 0)  # red
  cmyk[:, 8:] = (0, 0, 255, 128)  # a dark yellow
  c, m, y, k = (cmyk[..., i].astype(np.float64) for i in range(4))
  expected = np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)], -1) / 255
  return _encoded(Image.fromarray(cmyk, 'CMYK'), 'JPEG', quality=100), expected


def _grey16() -> tuple[bytes, np.ndarray]:
  values = np.linspace(0, 65535, 16 * 16).astype(np.uint16).reshape(16, 16)
  expected = np.repeat(np.round(values / 65535 * 255)[..., None], 3, -1)
  return _encoded(Image.fromarray(values)), expected


def _exif_rotated() -> tuple[bytes, np.ndarray]:
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: shown rotated 90 degrees clockwise
  stored = _smooth()
  return _encoded(Image.fromarray(stored), exif=exif), np.rot90(stored, -1)


CONVERSIONS = {
    'grey': lambda: (_encoded(Image.fromarray(_smooth()[..., 2])), np.repeat(_smooth()[..., 2:], 3, -1)),
    'rgba': _with_alpha,
    'palette': _palette,
    'cmyk': _cmyk,
    'grey16': _grey16,
    'exif_rotated': _exif_rotated,
}


@pytest.mark.parametrize('case', CONVERSIONS)
def test_decoder_converts_to_upright_rgb(case):
  data, expected = CONVERSIONS[case]()
  got = images.decode_image(data)
  assert got.dtype == np.uint8 and got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=6 if case == 'cmyk' else 1)


def _truncated_jpeg() -> bytes:
  data = _encoded(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), 'JPEG')
  return data[:len(data) // 2]


BAD_IMAGES = {
    'empty': (b'', 'empty image'),
    'corrupt': (np.random.default_rng(1).bytes(3000), 'undecodable image'),
    'truncated': (_truncated_jpeg(), 'undecodable image'),
    'one_pixel': (_encoded(_solid(RED, 1, 1)), 'image too small'),
    'huge_declared': (_declaring(9000, 9000), 'image too large: 9000x9000 declared'),
    'bomb_declared': (_declaring(100000, 100000), 'image too large'),  # Pillow's own limit stops it first
}


@pytest.mark.parametrize('case', BAD_IMAGES)
def test_decoder_refuses_bad_images(case):
  data, reason = BAD_IMAGES[case]
  with pytest.raises(records.BadRecordError) as error:
    images.decode_image(data)
  assert str(error.value).startswith(reason)


def _config(source, stage='t2i', **data):
  config = config_lib.load(f'stage={stage},size=tiny')
  config.unlock()
  config.model.image_size = SIZE
  config.train.batch_size = BATCH
  config.data.source = source
  for name, value in data.items():
    config.data[name] = value
  config.lock()
  return config


def _captions_and_means(config, batches) -> dict[str, np.ndarray]:
  tokenizer = tokenizers.build_tokenizer(config.text)
  found = {}
  for batch in batches:
    assert batch['video'].shape == (BATCH, 1, SIZE, SIZE, 3) and batch['video'].dtype == np.uint8
    for caption, clip in zip(tokenizer.decode(batch['tokens']), batch['video']):
      found[caption] = clip.reshape(-1, 3).mean(0)
  return found


GOOD = {  # name -> (encoded bytes, mean colour of the whole image after conversion)
    'red.png': (_encoded(_solid(RED)), RED),
    'sub/green.jpg': (_encoded(_solid(GREEN, 40, 24), 'JPEG', quality=95), GREEN),
    'cmyk.jpg': (_cmyk()[0], None),
    'grey.png': (_encoded(_solid((90, 90, 90), mode='L')), (90, 90, 90)),
    'rgba.png': (_with_alpha()[0], None),
    'palette.png': (_palette()[0], None),
    'rotated.png': (_exif_rotated()[0], None),
}
SKIPPED = {  # name -> the reason prepare lists (None: not in the captions file)
    'corrupt.jpg': 'undecodable image',
    'truncated.jpg': 'undecodable image',
    'tiny.png': 'image too small: 1x1',
    'huge.png': 'image too large: 9000x9000 declared',
    'empty.png': 'zero-byte file',
    'missing.png': 'missing file',
    'uncaptioned.png': 'no caption row in captions.csv',
}


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('images')
  files = {name: data for name, (data, _) in GOOD.items()}
  files.update({'corrupt.jpg': BAD_IMAGES['corrupt'][0], 'truncated.jpg': BAD_IMAGES['truncated'][0],
                'tiny.png': BAD_IMAGES['one_pixel'][0], 'huge.png': BAD_IMAGES['huge_declared'][0],
                'empty.png': b'', 'uncaptioned.png': _encoded(_solid(RED))})
  for name, data in files.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(data)
  rows = [f'{name},a photo of {pathlib.Path(name).stem}' for name in [*GOOD, *SKIPPED] if name != 'uncaptioned.png']
  (root / 'captions.csv').write_text('\n'.join(['path,caption', *rows]) + '\n')
  return root


def test_prepare_images_then_t2i_batches(image_folder, tmp_path):
  options = ingest_images.ImageOptions(images=str(image_folder), captions=str(image_folder / 'captions.csv'),
                                       size=SIZE, num_shards=2)
  manifest = ingest_images.prepare_images(options, tmp_path, workers=1, log=lambda line: None)
  assert manifest['counts'] == dict(inputs=len(GOOD) + len(SKIPPED), clips_written=len(GOOD), skipped=len(SKIPPED))
  reasons = {entry['path']: entry['reason'] for entry in manifest['skipped']}
  assert sorted(reasons) == sorted(SKIPPED)
  for name, reason in SKIPPED.items():
    assert reasons[name].startswith(reason), (name, reasons[name])

  written = {}
  for path in sorted(tmp_path.glob('*.array_record')):
    reader = records.array_record_module.ArrayRecordReader(str(path))
    written.update((record['key'], record) for record in map(records.decode_record, reader.read_all()))
    reader.close()
  assert sorted(written) == sorted(GOOD)
  for key, record in written.items():
    frames, _ = video.decode_video(record['video'])
    assert record['num_frames'] == 1 and frames.shape == (1, record['height'], record['width'], 3)
    assert min(record['height'], record['width']) == SIZE
  assert written['red.png']['width'] > written['red.png']['height']  # 40x24: landscape
  assert written['rotated.png']['height'] > written['rotated.png']['width']  # stored 40x24, shown upright

  config = _config(str(tmp_path / '*.array_record'))
  iterator = pipeline.make_train_iterator(config, train=False)
  means = _captions_and_means(config, iterator)
  assert len(means) == len(GOOD) // BATCH * BATCH and iterator.stats['records_bad'] == 0
  for name, (_, colour) in GOOD.items():
    caption = f'a photo of {pathlib.Path(name).stem}'
    if colour is not None and caption in means:
      np.testing.assert_allclose(means[caption], colour, atol=6)


def test_prepare_images_command_line(image_folder, tmp_path):
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  result = subprocess.run(
      [sys.executable, '-m', 'lumiere_jax.cli.data', 'prepare', f'--images={image_folder}',
       f'--captions={image_folder / "captions.csv"}', f'--out={tmp_path / "out"}', '--size=16', '--workers=1'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'wrote {len(GOOD)} images from {len(GOOD) + len(SKIPPED)} inputs in 1 shards; skipped {len(SKIPPED)}' in (
      result.stdout)
  manifest = json.loads((tmp_path / 'out' / 'manifest.json').read_text())
  assert manifest['options']['min_size'] == images.MIN_SIDE and manifest['options']['max_pixels'] == images.MAX_PIXELS


def _write_tar(path, samples: dict[str, dict[str, bytes]]):
  """A WebDataset shard as img2dataset writes it: `key.jpg`, `key.txt`, `key.json` members, grouped by key."""
  with tarfile.open(path, 'w') as archive:
    for key, members in samples.items():
      for extension, data in members.items():
        info = tarfile.TarInfo(f'{key}.{extension}')
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def _tar_sample(colour, caption: str, fmt='JPEG') -> dict[str, bytes]:
  extension = 'jpg' if fmt == 'JPEG' else fmt.lower()
  return {extension: _encoded(_solid(colour), fmt, **({'quality': 95} if fmt == 'JPEG' else {})),
          'txt': caption.encode(), 'json': json.dumps({'caption': caption}).encode()}


def test_webdataset_tar_source(tmp_path):
  _write_tar(tmp_path / '00000.tar', {'000000000': _tar_sample(RED, 'a red square'),
                                      '000000001': _tar_sample(GREEN, 'a green square', 'PNG'),
                                      '000000002': {'jpg': BAD_IMAGES['corrupt'][0], 'txt': b'broken'}})
  _write_tar(tmp_path / '00001.tar', {'000010000': _tar_sample((0, 0, 255), 'a blue square'),
                                      '000010001': {'jpg': _encoded(_solid(RED), 'JPEG')},  # no caption
                                      '000010002': _tar_sample((90, 90, 90), 'a grey square', 'PNG')})
  source = sources.make_source(_config(str(tmp_path / '*.tar')))[0]
  assert len(source) == 6 and source[3]['__key__'] == '000010000'
  config = _config(str(tmp_path / '*.tar'), max_bad_fraction=0.5)
  iterator = pipeline.make_train_iterator(config, train=False)
  means = _captions_and_means(config, iterator)
  expected = {'a red square': RED, 'a green square': GREEN, 'a blue square': (0, 0, 255), 'a grey square': (90,) * 3}
  assert sorted(means) == sorted(expected)
  for caption, colour in expected.items():
    np.testing.assert_allclose(means[caption], colour, atol=6)
  assert iterator.stats['bad_reasons'] == {'undecodable image': 1, 'missing field': 1}
  with pytest.raises(pipeline.BadDataError, match=r"tar .*00001\.tar sample '000010001'.*no caption"):
    list(pipeline.make_train_iterator(_config(str(tmp_path / '*.tar'), max_bad_fraction=0.1), train=False))


def test_damaged_tar_keeps_the_samples_before_the_damage(tmp_path):
  _write_tar(tmp_path / 'whole.tar', {f'{i:09d}': _tar_sample(RED, f'photo {i}', 'PNG') for i in range(4)})
  with tarfile.open(tmp_path / 'whole.tar') as archive:
    cut_at = archive.getmembers()[6].offset_data + 20  # inside the third sample's image
  (tmp_path / 'cut.tar').write_bytes((tmp_path / 'whole.tar').read_bytes()[:cut_at])
  cut = webdataset.TarSamples([str(tmp_path / 'cut.tar')])
  assert len(webdataset.TarSamples([str(tmp_path / 'whole.tar')])) == 4 and len(cut) == 3
  parse = webdataset.ImageSample()
  assert [parse(cut[i])['caption'] for i in range(2)] == ['photo 0', 'photo 1']
  with pytest.raises(records.BadRecordError, match='no caption'):  # the sample the cut went through
    parse(cut[2])


class TinyImageCaptions(tfds.core.GeneratorBasedBuilder):
  """Three solid-colour images (PNG-encoded at build time: no TensorFlow needed) with captions."""

  VERSION = tfds.core.Version('1.0.0')
  COLOURS = (RED, GREEN, (0, 0, 255))

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        'image': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
        'caption': tfds.features.Text(),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    for i, colour in enumerate(self.COLOURS):
      yield i, dict(image=io.BytesIO(_encoded(_solid(colour, 20, 30 + 2 * i))), caption=f'colour {i}')


def test_tfds_image_source(tmp_path):
  TinyImageCaptions(data_dir=str(tmp_path), file_format='array_record').download_and_prepare()
  config = _config('tfds:tiny_image_captions', tfds_data_dir=str(tmp_path), tfds_video_key='image')
  iterator = pipeline.make_train_iterator(config, train=False)
  means = _captions_and_means(config, iterator)
  assert len(means) == 2 and iterator.stats['records_bad'] == 0  # 3 images: one batch of 2
  for caption, mean in means.items():
    np.testing.assert_allclose(mean, TinyImageCaptions.COLOURS[int(caption.split()[-1])], atol=1)


def test_mixture_holds_exact_proportions():
  mixture = sources.Mixture([list(range(5)), list(range(100, 103))], sources.mixture_counts(0.3), ['v', 'i'])
  drawn = [mixture[i] for i in range(len(mixture))]
  from_images = sum(k for k, _ in drawn)
  assert from_images == round(0.3 * len(mixture)) and len(mixture) % 10 == 0
  assert {inner for k, inner in drawn if k == 0} == set(range(5))  # every element of each source is read
  assert {inner for k, inner in drawn if k == 1} == set(range(100, 103))
  per_process = [sum(k for k, _ in drawn[p::4]) / len(drawn[p::4]) for p in range(4)]  # process slices i::P
  np.testing.assert_allclose(per_process, 0.3, atol=0.05)
  with pytest.raises(ValueError, match='i has no elements'):
    sources.Mixture([[1], []], [1, 1], ['v', 'i'])


def test_images_and_videos_mixed_by_weight(tmp_path):
  clip = np.zeros((8, SIZE, SIZE, 3), np.uint8)
  clip[..., 2] = 255  # blue videos
  encoded = video.encode_mp4(clip, 16)
  records.write_shards([records.encode_record(key=f'v{i}', caption='a blue video', video=encoded, fps=16,
                                              num_frames=8, height=SIZE, width=SIZE) for i in range(6)],
                       tmp_path / 'videos', prefix='clips', num_shards=2)
  _write_tar(tmp_path / '00000.tar', {f'{i:09d}': _tar_sample(RED, 'a red photo') for i in range(4)})
  config = _config(str(tmp_path / 'videos' / '*.array_record'), image_source=str(tmp_path / '*.tar'),
                   image_fraction=0.25)
  config.unlock()
  config.train.batch_size = 8
  config.lock()
  iterator = pipeline.make_train_iterator(config)
  reds = [np.mean([clip[..., 0].mean() > 128 for clip in next(iterator)['video']]) for _ in range(20)]
  assert abs(np.mean(reds) - 0.25) < 0.08, np.mean(reds)  # 160 examples; exact over a 1024-element period
