r"""lumiere-data: dataset tools, one subcommand each; `lumiere-data <command> --help` shows that command's flags.

  lumiere-data prepare --videos DIR --captions captions.csv --out OUT    (or --manifest rows.jsonl --out OUT)
  lumiere-data embed-captions --config configs/lumiere.py:stage=base,size=paper --config.text.encoder=t5 \
      --config.text.checkpoint=T5_DIR --config.text.width=D --shards 'OUT/*.array_record' --out OUT_EMB
  lumiere-data fake-ucf101 --out DIR

Commands:
  prepare         a video collection -> training shards for `--config.data.source='OUT/*.array_record'`
                  (lumiere_jax/ingest/prepare.py); rerun to resume.
  embed-captions  runs the configured text encoder once over the shards' captions and writes them again with the
                  embeddings, for `--config.data.text_embeddings=True` (ingest/embed_captions.py). With
                  --distributed, each process embeds every P-th shard, its batches split over its local devices.
  fake-ucf101     a fake UCF101 folder of moving shapes for the evaluation smoke path (eval/fake_ucf101.py).

Example:

  lumiere-data prepare --videos my_videos --captions my_videos/captions.csv --out data/shards --clip_seconds 2
"""

import sys

from absl import app, flags
import jax
from ml_collections import config_flags

from lumiere_jax import validation
from lumiere_jax.cli import errors, usage
from lumiere_jax.eval import fake_ucf101
from lumiere_jax.ingest import embed_captions, images as images_lib, options as options_lib, prepare
from lumiere_jax.parallel import distributed

_DEFAULTS = options_lib.Options()
_VIDEOS = flags.DEFINE_string('videos', '', 'prepare: folder of videos, searched recursively (with --captions).')
_CAPTIONS = flags.DEFINE_string('captions', '', 'prepare: CSV (path,caption[,start,end]) or JSON Lines file; paths '
                                'relative to --videos.')
_MANIFEST = flags.DEFINE_string('manifest', '', 'prepare: CSV or JSON Lines rows path,caption[,start,end]; paths '
                                'relative to the manifest\'s folder.')
_IMAGES = flags.DEFINE_string('images', '', 'prepare: folder of images (with --captions): one-frame records for the '
                               't2i stage; --size, --min_size, --max_pixels, --num_shards apply.')
_OUT = flags.DEFINE_string('out', None, 'Output folder. prepare: shards and manifest.json (rerun to resume); '
                           'embed-captions: the rewritten shards; fake-ucf101: the UCF101 root.')
_CLIP_SECONDS = flags.DEFINE_float('clip_seconds', _DEFAULTS.clip_seconds, 'prepare: videos are cut into clips this '
                                   'long.')
_FPS = flags.DEFINE_float('fps', _DEFAULTS.fps, 'prepare: storage frame rate (nearest source frame to each time).')
_SIZE = flags.DEFINE_integer('size', _DEFAULTS.size, 'prepare: shortest side of the stored frames in pixels '
                             '(aspect kept, sides even); 0 keeps the source size.')
_MIN_SECONDS = flags.DEFINE_float('min_seconds', _DEFAULTS.min_seconds, 'prepare: shortest clip kept (a --keep_tail '
                                  'tail).')
_MIN_FRAMES = flags.DEFINE_integer('min_frames', _DEFAULTS.min_frames, 'prepare: fewest frames in a clip kept.')
_MIN_SIZE = flags.DEFINE_integer('min_size', _DEFAULTS.min_size, 'prepare: skip videos whose shortest side is '
                                 'smaller (pixels).')
_MAX_PIXELS = flags.DEFINE_integer('max_pixels', _DEFAULTS.max_pixels, 'prepare: skip videos with more pixels per '
                                   'frame (checked from the header, before decoding).')
_KEEP_TAIL = flags.DEFINE_bool('keep_tail', _DEFAULTS.keep_tail, 'prepare: keep the last, shorter clip of a video.')
_NUM_SHARDS = flags.DEFINE_integer('num_shards', _DEFAULTS.num_shards, 'prepare: output shards; 0: about '
                                   f'{prepare.CLIPS_PER_SHARD} clips each (fixed by the first run).')
_WORKERS = flags.DEFINE_integer('workers', None, 'prepare: worker processes (default: one per CPU).')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'embed-captions: the training config whose text encoder '
                                          'to run (configs/lumiere.py:...).', lock_config=True)
_SHARDS = flags.DEFINE_string('shards', None, 'embed-captions: glob of the input shards.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'embed-captions: captions per encoder call.')
_CLASSES = flags.DEFINE_integer('classes', 4, f'fake-ucf101: classes, at most {len(fake_ucf101.CLASSES)}.')
_CLIPS = flags.DEFINE_integer('clips_per_class', 3, 'fake-ucf101: clips per class (one test, the rest train).')
_FRAMES = flags.DEFINE_integer('frames', 16, 'fake-ucf101: frames per clip, at least (the protocol reads 16).')
# Each command's flags by purpose, for `lumiere-data <command> --help`.
GROUPS = {
    'prepare': [('prepare: inputs and output', (_VIDEOS, _IMAGES, _CAPTIONS, _MANIFEST, _OUT, _WORKERS)),
                ('prepare: clips', (_CLIP_SECONDS, _FPS, _SIZE, _MIN_SECONDS, _MIN_FRAMES, _KEEP_TAIL)),
                ('prepare: which videos', (_MIN_SIZE, _MAX_PIXELS)), ('prepare: shards', (_NUM_SHARDS,))],
    'embed-captions': [('embed-captions', (_CONFIG, _SHARDS, _OUT, _BATCH)), usage.DISTRIBUTED],
    'fake-ucf101': [('fake-ucf101', (_OUT, _CLASSES, _CLIPS, _FRAMES))],
}


def _prepare() -> None:
  if not _OUT.value:
    raise app.UsageError('prepare needs --out')
  if _IMAGES.value:
    _prepare_images()
    return
  options = options_lib.Options(
      videos=_VIDEOS.value, captions=_CAPTIONS.value, manifest=_MANIFEST.value, clip_seconds=_CLIP_SECONDS.value,
      fps=_FPS.value, size=_SIZE.value, min_seconds=_MIN_SECONDS.value, min_frames=_MIN_FRAMES.value,
      min_size=_MIN_SIZE.value, max_pixels=_MAX_PIXELS.value, keep_tail=_KEEP_TAIL.value,
      num_shards=_NUM_SHARDS.value)
  manifest = prepare.prepare(options, _OUT.value, workers=_WORKERS.value)
  print(prepare.summary(manifest, _OUT.value), flush=True)
  if not manifest['counts']['clips_written']:
    raise prepare.PrepareError(prepare.no_clips(manifest))


def _prepare_images() -> None:
  """`prepare --images`: image-caption pairs -> one-frame records (`ingest/images.py`)."""
  if _VIDEOS.value or _MANIFEST.value:
    raise app.UsageError('prepare takes --images or --videos / --manifest, not both')
  options = images_lib.ImageOptions(
      images=_IMAGES.value, captions=_CAPTIONS.value, size=_SIZE.value,
      min_size=_MIN_SIZE.value or images_lib.ImageOptions.min_size,
      max_pixels=_MAX_PIXELS.value if _MAX_PIXELS.present else images_lib.ImageOptions.max_pixels,
      num_shards=_NUM_SHARDS.value)
  manifest = images_lib.prepare_images(options, _OUT.value, workers=_WORKERS.value)
  print(images_lib.summary(manifest, _OUT.value), flush=True)
  if not manifest['counts']['clips_written']:
    raise prepare.PrepareError(f'no images written: {prepare.skip_reasons(manifest)}')


def _embed_captions() -> None:
  if not (_CONFIG.value and _SHARDS.value and _OUT.value):
    raise app.UsageError('embed-captions needs --config, --shards and --out')
  distributed.initialize_from_flags()  # several processes (--distributed): each embeds its share of the shards
  validation.validate(_CONFIG.value, num_devices=jax.device_count(), num_processes=jax.process_count(),
                      training=False)  # only the text encoder runs: no model.init_from needed
  written = embed_captions.embed_captions(_CONFIG.value, _SHARDS.value, _OUT.value, batch_size=_BATCH.value,
                                          process_index=jax.process_index(), process_count=jax.process_count())
  print(f'wrote {len(written)} shards with {_CONFIG.value.text.encoder} caption embeddings to {_OUT.value}',
        flush=True)


def _fake_ucf101() -> None:
  if not _OUT.value:
    raise app.UsageError('fake-ucf101 needs --out')
  root = fake_ucf101.write_fake_ucf101(_OUT.value, num_classes=_CLASSES.value, clips_per_class=_CLIPS.value,
                                       num_frames=_FRAMES.value)
  print(f'wrote a fake UCF101 root ({_CLASSES.value} classes x {_CLIPS.value} clips) to {root}', flush=True)


COMMANDS = {'prepare': _prepare, 'embed-captions': _embed_captions, 'fake-ucf101': _fake_ucf101}


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f'usage: lumiere-data {{{"|".join(COMMANDS)}}} [flags] (got {argv[1:]})')
  COMMANDS[argv[1]]()


def run():
  """With a command, `--help` lists its flags; without, every command's."""
  command = next((arg for arg in sys.argv[1:] if arg in COMMANDS), None)
  groups = GROUPS[command] if command else [group for groups in GROUPS.values() for group in groups]
  errors.run(main, 'lumiere-data', groups)


if __name__ == '__main__':
  run()
