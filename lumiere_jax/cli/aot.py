"""lumiere-aot: size a training job for TPU topologies before renting them.

  lumiere-aot --config configs/lumiere.py:stage=<stage>,size=<size> --topology NAME [--topology NAME ...]

Example:

  lumiere-aot --config configs/lumiere.py:stage=base,size=paper --topology v5p-128 --topology v6e-256

Compiles the real train step for each TPU topology on this machine (libtpu's compile-only devices; the `tpu` extra)
and prints per-chip memory against the chip's HBM, FLOPs per step and the replicated parameters. Any `--config.*`
override applies (mesh shape, remat policy, batch size, dtype), so a layout can be sized before a pod is rented.
"""

import os

from absl import flags
import jax
from ml_collections import config_flags

from lumiere_jax.cli import errors
from lumiere_jax.train import aot

_CONFIG = config_flags.DEFINE_config_file('config', None, 'configs/lumiere.py:stage=<stage>,size=<size>',
                                          lock_config=True)
_TOPOLOGY = flags.DEFINE_multi_string('topology', None, 'TPU topology: v5p-128, v5e-256, v6e-64 or v5p:4x4x4, ...')
GROUPS = [('Job', (_CONFIG,)), ('Targets', (_TOPOLOGY,))]


def main(argv):
  del argv
  # Compile-only devices: never open this machine's own accelerators, and let several compiles share libtpu (its
  # lockfile guards chips, which compile-only devices do not touch).
  jax.config.update('jax_platforms', 'cpu')
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', 'true')
  for name in _TOPOLOGY.value:
    topology = aot.parse_topology(name)
    report = aot.compile_report(_CONFIG.value, aot.topology_devices(topology))
    print(aot.describe(name, topology, report), flush=True)


def run():
  flags.mark_flags_as_required(['config', 'topology'])
  errors.run(main, 'lumiere-aot', GROUPS)


if __name__ == '__main__':
  run()
