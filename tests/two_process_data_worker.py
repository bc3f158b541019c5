"""One of the processes of `test_data_two_processes.py`: reads its slice, builds global batches, checkpoints, resumes.

Usage: python two_process_data_worker.py PORT PROCESS_ID DATA_DIR WORKDIR OUT_JSON (2 CPU devices per process, from
the environment). Writes what this process saw as JSON for the parent test to compare across processes.
"""

import json
import pathlib
import sys

import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils

from lumiere_jax.data import pipeline
from lumiere_jax.parallel import mesh as mesh_lib, sharding as sharding_lib
from lumiere_jax.train import checkpoint
from micro import micro_config

BATCHES = 3  # read in all; the checkpoint is taken after the first BATCHES - 1
PROCESSES = 2


def main(port, process_id, data_dir, workdir, out):
  flags.FLAGS.mark_as_parsed()
  jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=PROCESSES, process_id=process_id)
  config = micro_config('base', data_dir, **{'train.batch_size': 4})
  keys = pipeline.read_keys(config, process_index=process_id, process_count=PROCESSES)
  iterator = pipeline.make_train_iterator(config, process_index=process_id, process_count=PROCESSES)
  mesh = mesh_lib.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices())
  checkpointer = checkpoint.Checkpointer(workdir, async_save=False)
  local_sums, global_halves = [], []
  for step in range(1, BATCHES + 1):
    local = next(iterator)
    batch = sharding_lib.global_batch(local, mesh)
    gathered = np.asarray(multihost_utils.process_allgather(batch['video'], tiled=True), np.float64)
    local_sums.append(float(np.float64(local['video']).sum()))
    global_halves.append([float(half.sum()) for half in np.split(gathered, PROCESSES)])
    if step == BATCHES - 1:
      checkpointer.save(step, batch, iterator, config)
      saved = gathered
  # A fresh iterator repositioned by the checkpoint yields the batch read after the save.
  resumed = pipeline.make_train_iterator(config, process_index=process_id, process_count=PROCESSES)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), batch)
  state = checkpointer.restore(BATCHES - 1, abstract, resumed)
  again = next(resumed)
  checkpointer.close()
  report = dict(keys=keys, devices=jax.device_count(), local_shape=list(local['video'].shape),
                global_shape=list(batch['video'].shape), local_sums=local_sums, global_halves=global_halves,
                resumed_equal=all(np.array_equal(local[k], again[k]) for k in local),
                state_equal=bool(np.array_equal(multihost_utils.process_allgather(state['video'], tiled=True), saved)))
  pathlib.Path(out).write_text(json.dumps(report))


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:6])
