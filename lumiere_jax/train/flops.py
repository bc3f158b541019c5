"""FLOPs of the train step, counted two ways, and the utilisation figures made from them.

- compiled FLOPs: XLA's cost analysis of the compiled step, per device, recomputation included (what the chip runs);
- model FLOPs: the cost analysis of the step *lowered* (traced, not compiled) without rematerialisation, all devices
  together (what the model needs). The lowering is the one being compiled when nothing is rematerialised; otherwise
  the step is lowered once more with `model.remat_policy` and `model.remat_coarse_policy` 'none' (never compiled).

MFU = model FLOPs per device per second over the chip's spec peak (`parallel/chips.py`; none for CPUs). HFU needs a
matmul peak measured on the machine, which a training job does not spend time on: `benchmarks/train_step_mfu.py`
reports it; the training log reports the compiled FLOP/s it is made from (`tflops_per_s`).
"""

import dataclasses

from lumiere_jax.train import state as state_lib, step as step_lib

NO_REMAT = 'none'


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function from XLA's cost analysis (0 when the backend reports none)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


@dataclasses.dataclass(frozen=True)
class StepFlops:
  compiled_per_device: float  # recomputation included
  model: float  # all devices together, no recomputation
  devices: int

  @property
  def model_per_device(self) -> float:
    return self.model / self.devices

  def rates(self, steps_per_s: float, spec_peak: float | None) -> dict[str, float]:
    """Log scalars at `steps_per_s`: compiled and model TFLOP/s per device, and `mfu` when the chip has a spec peak."""
    scalars = dict(tflops_per_s=self.compiled_per_device * steps_per_s / 1e12,
                   model_tflops_per_s=self.model_per_device * steps_per_s / 1e12)
    if spec_peak:
      scalars['mfu'] = self.model_per_device * steps_per_s / spec_peak
    return scalars


def rematerialises(config) -> bool:
  return NO_REMAT != config.model.remat_policy or NO_REMAT != config.model.remat_coarse_policy


def without_remat(config):
  """A copy of `config` that recomputes nothing in the backward pass."""
  config = config.copy_and_resolve_references()
  config.model.remat_policy = config.model.remat_coarse_policy = NO_REMAT
  return config


def model_flops(setup: state_lib.TrainSetup, state, batch, lowered=None) -> float:
  """FLOPs of one step without recomputation, all devices together. `lowered`: the step as lowered for `setup`
  (reused when `setup` rematerialises nothing). `state` and `batch` may be abstract (shapes with shardings)."""
  if lowered is None or rematerialises(setup.config):
    plain = state_lib.TrainSetup.create(without_remat(setup.config), setup.mesh)
    lowered = step_lib.jit_train_step(plain).lower(state, batch)
  return compiled_flops(lowered)


def compile_train_step(setup: state_lib.TrainSetup, state, batch):
  """(compiled step, its `StepFlops`): the jitted step lowered and compiled once for `state` and `batch`."""
  lowered = step_lib.jit_train_step(setup).lower(state, batch)
  compiled = lowered.compile()
  return compiled, StepFlops(compiled_flops(compiled), model_flops(setup, state, batch, lowered),
                             setup.mesh.size)
