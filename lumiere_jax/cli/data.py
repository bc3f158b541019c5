"""`lumiere-data <command> [flags]`: dataset tools, one subcommand each (`COMMANDS`).

  lumiere-data prepare --videos DIR --captions captions.csv --out OUT    (or --manifest rows.jsonl --out OUT)
  lumiere-data embed-captions --config configs/lumiere.py:stage=base,size=paper --config.text.encoder=t5 \
      --config.text.checkpoint=T5_DIR --config.text.width=D --shards 'OUT/*.array_record' --out OUT_EMB

`prepare` turns a video collection into training shards for `--config.data.source='OUT/*.array_record'`; see
`lumiere_jax/data/prepare.py`. `embed-captions` runs the configured text encoder once over the shards' captions and
writes them again with the embeddings, for `--config.data.text_embeddings=True`; see `data/embed_captions.py`. With
`--distributed`, each process embeds every P-th shard, its batches split over its local devices.
"""

from absl import app, flags
import jax
from ml_collections import config_flags

from lumiere_jax import config as config_lib
from lumiere_jax.data import embed_captions, prepare
from lumiere_jax.parallel import distributed

_DEFAULTS = prepare.Options()
_VIDEOS = flags.DEFINE_string('videos', '', 'prepare: folder of videos, searched recursively (with --captions).')
_CAPTIONS = flags.DEFINE_string('captions', '', 'prepare: CSV (path,caption[,start,end]) or JSON Lines file; paths '
                                'relative to --videos.')
_MANIFEST = flags.DEFINE_string('manifest', '', 'prepare: CSV or JSON Lines rows path,caption[,start,end]; paths '
                                'relative to the manifest\'s folder.')
_OUT = flags.DEFINE_string('out', None, 'prepare: output folder (shards, manifest.json); rerun to resume.')
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


def _prepare() -> None:
  if not _OUT.value:
    raise app.UsageError('prepare needs --out')
  options = prepare.Options(
      videos=_VIDEOS.value, captions=_CAPTIONS.value, manifest=_MANIFEST.value, clip_seconds=_CLIP_SECONDS.value,
      fps=_FPS.value, size=_SIZE.value, min_seconds=_MIN_SECONDS.value, min_frames=_MIN_FRAMES.value,
      min_size=_MIN_SIZE.value, max_pixels=_MAX_PIXELS.value, keep_tail=_KEEP_TAIL.value,
      num_shards=_NUM_SHARDS.value)
  try:
    manifest = prepare.prepare(options, _OUT.value, workers=_WORKERS.value)
  except prepare.PrepareError as e:
    raise SystemExit(f'lumiere-data prepare: {e}') from e
  print(prepare.summary(manifest, _OUT.value), flush=True)
  if not manifest['counts']['clips_written']:
    raise SystemExit(f'lumiere-data prepare: no clips written: {prepare.skip_reasons(manifest)}')


def _embed_captions() -> None:
  if not (_CONFIG.value and _SHARDS.value and _OUT.value):
    raise app.UsageError('embed-captions needs --config, --shards and --out')
  distributed.initialize_from_flags()  # several processes (--distributed): each embeds its share of the shards
  config_lib.validate(_CONFIG.value, num_devices=jax.device_count(), num_processes=jax.process_count())
  try:
    written = embed_captions.embed_captions(_CONFIG.value, _SHARDS.value, _OUT.value, batch_size=_BATCH.value,
                                            process_index=jax.process_index(), process_count=jax.process_count())
  except ValueError as e:
    raise SystemExit(f'lumiere-data embed-captions: {e}') from e
  print(f'wrote {len(written)} shards with {_CONFIG.value.text.encoder} caption embeddings to {_OUT.value}',
        flush=True)


COMMANDS = {'prepare': _prepare, 'embed-captions': _embed_captions}


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f'usage: lumiere-data {{{"|".join(COMMANDS)}}} [flags] (got {argv[1:]})')
  COMMANDS[argv[1]]()


def run():
  app.run(main)


if __name__ == '__main__':
  run()
