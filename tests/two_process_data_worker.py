"""One of the processes of `test_data_two_processes.py`: reads its slice, resumes, and builds global batches.

Usage: python two_process_data_worker.py PORT PROCESS_ID DATA_DIR OUT_JSON (2 CPU devices per process, from env).
"""

import json
import sys

import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils

from lumiere_jax.data import pipeline
from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from micro import micro_config


def main(port, process_id, data_dir, out):
  flags.FLAGS.mark_as_parsed()
  jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2, process_id=process_id)
  config = micro_config('base', data_dir, **{'train.batch_size': 4})
  keys = pipeline.read_keys(config, process_index=process_id, process_count=2)
  iterator = pipeline.make_train_iterator(config, process_index=process_id, process_count=2)
  next(iterator)
  state = iterator.get_state()
  local = next(iterator)
  resumed = pipeline.make_train_iterator(config, process_index=process_id, process_count=2)
  resumed.set_state(json.loads(json.dumps(state)))
  again = next(resumed)
  mesh = mesh_lib.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices())
  batch = sharding_lib.global_batch(local, mesh)
  everything = multihost_utils.process_allgather(batch['video'], tiled=True)
  json.dump(dict(keys=keys, local_shape=list(local['video'].shape), global_shape=list(batch['video'].shape),
                 local_sum=float(np.float64(local['video']).sum()),
                 halves=[float(np.float64(half).sum()) for half in np.split(np.asarray(everything), 2)],
                 resumed_equal=all(np.array_equal(local[k], again[k]) for k in local)), open(out, 'w'))


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
