"""Training data: record schema and writer (`records`), H.264 video I/O (`video`), the embedded moving-shapes set
(`synthetic`), per-clip transforms (`transforms`), caption tokenizers (`tokenizers`) and the grain input pipeline
(`pipeline`)."""

from lumiere_jax import stages
from lumiere_jax.data import tokenizers
from lumiere_jax.data.transforms import CROPS, SHORT_CLIP_POLICIES


def config_errors(config):
  """(field, problem) for the `data` section and the tokenizer file."""
  data = config.data
  checks = [
      ('fps', data.fps > 0, 'must be > 0'),
      ('synthetic_clips', data.synthetic_clips >= 1, 'must be >= 1'),
      ('num_workers', data.num_workers >= 0, 'must be >= 0'),
      ('short_clips', data.short_clips in SHORT_CLIP_POLICIES, f'must be one of {SHORT_CLIP_POLICIES}'),
      ('crop', data.crop in CROPS, f'must be one of {CROPS}'),
      ('tfds_fps', data.tfds_fps >= 0, 'must be >= 0 (0: read it from data.tfds_fps_key)'),
      ('max_bad_fraction', 0 <= data.max_bad_fraction < 1, 'must be in [0, 1) (1 would loop forever on all-bad data)'),
      ('image_source', not data.image_source or stages.of(config).example_frames(config) == 1,
       f'is for stages trained on single frames (t2i), not {config.stage}'),
      ('min_records_for_bad_fraction', data.min_records_for_bad_fraction >= 1, 'must be >= 1'),
      ('image_fraction', 0 <= data.image_fraction <= 1, 'must be in [0, 1]'),
      ('image_min_size', data.image_min_size >= 1, 'must be >= 1'),
      ('image_max_pixels', data.image_max_pixels >= 1, 'must be >= 1'),
      ('tfds_image_key', bool(data.tfds_image_key), 'must name the image feature'),
  ]
  yield from ((f'data.{field}', f'{data[field]!r} {problem}') for field, ok, problem in checks if not ok)
  yield from tokenizers.config_errors(config)
