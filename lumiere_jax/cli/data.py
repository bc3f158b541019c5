"""`lumiere-data <command> [flags]`: dataset tools, one subcommand each (`COMMANDS`).

  lumiere-data prepare --videos DIR --captions captions.csv --out OUT    (or --manifest rows.jsonl --out OUT)

`prepare` turns a video collection into training shards for `--config.data.source='OUT/*.array_record'`; see
`lumiere_jax/data/prepare.py`.
"""

from absl import app, flags

from lumiere_jax.data import prepare

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


COMMANDS = {'prepare': _prepare}


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f'usage: lumiere-data {{{"|".join(COMMANDS)}}} [flags] (got {argv[1:]})')
  COMMANDS[argv[1]]()


def run():
  app.run(main)


if __name__ == '__main__':
  run()
