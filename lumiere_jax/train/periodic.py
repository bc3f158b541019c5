"""A small FVD during training (`config.eval`): the UCF101 zero-shot protocol on a few videos, kept in memory.

The prompts follow configs/eval_ucf101.py at N = `eval.fvd_num_videos` (chunks of `train.batch_size`, seeds from
`config.seed`), so successive evaluations of one run see the same prompts and noise; frames are the protocol's first
16, or all the model makes if fewer. The real statistics (UCF101's train split) are computed once and cached. Each
chunk is split over the training mesh's data-parallel devices (`sampler` from `sample.make_sampler` with that mesh),
the I3D features over each process's own.
"""

import jax
import numpy as np

from lumiere_jax import config as config_lib, progress
from lumiere_jax import sample as sample_lib
from lumiere_jax.eval import i3d, zero_shot


class TrainingFVD:
  """`fvd(params) -> float`: FVD of the videos the inference parameters generate, against UCF101.

  A model without a text encoder (pre-embedded captions) samples from `embeddings` of every one of `prompts()`.
  """

  def __init__(self, config, spec, sampler, mesh: jax.sharding.Mesh):
    protocol_config = config_lib.load(f'n={config.eval.fvd_num_videos},real=train',
                                      config_lib.EVAL_CONFIG_FILE)
    protocol_config.chunk_size, protocol_config.seed = config.train.batch_size, config.seed
    self.plan, clips = zero_shot.make_plan(protocol_config, config.eval.fvd_ucf101_dir)
    self.frames = min(protocol_config.frames, config.model.num_frames)
    self.features = i3d.I3DFeatures(jax.sharding.Mesh(np.array(jax.local_devices()), ('batch',)))
    self.reference, _ = zero_shot.reference_statistics(clips, frames=self.frames, fps=protocol_config.real_fps,
                                                       features=self.features, directory=zero_shot.cache_dir())
    self._generate = lambda params, prompts, seed, embeddings: sample_lib.generate(
        spec, params, config, prompts, seed=seed, sampler=sampler, mesh=mesh, show_progress=False,
        embeddings=embeddings)

  def prompts(self) -> list[str]:
    """Every prompt an evaluation samples."""
    return [prompt for chunk in range(self.plan.num_chunks) for prompt in self.plan.chunk_prompts(chunk)]

  def __call__(self, params, embeddings: dict | None = None) -> float:
    features = []
    for chunk in progress.track(range(self.plan.num_chunks), f'FVD: generating {len(self.plan.labels)} videos and '
                                'their I3D features, chunk by chunk'):
      count = len(self.plan.chunk_labels(chunk))
      videos = self._generate(params, self.plan.chunk_prompts(chunk), self.plan.chunk_seed(chunk), embeddings)[:count]
      features.append(self.features(videos[:, :self.frames]))
    return i3d.fvd_to_reference(self.reference, np.concatenate(features))
