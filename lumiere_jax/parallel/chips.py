"""Spec peak dense bf16 matmul FLOP/s per chip, for MFU: model FLOPs per second over what the chip is sold as.

Figures are the vendors' published dense (no sparsity) bf16 peaks per chip (per device JAX shows: one GPU, one TPU
chip; a v5p chip in megacore mode is one device). Unknown chips (CPUs included) have no spec peak; MFU is then not
reported and only the ratio to a matmul measured in the same process is.
"""

import jax

# (substring of `device.device_kind`, lower-cased) -> FLOP/s. Order matters: the first match wins.
SPEC_PEAK_BF16 = (
    ('h200', 989e12),  # NVIDIA H200 SXM
    ('h100', 989e12),  # NVIDIA H100 SXM (the PCIe card: 756e12)
    ('a100', 312e12),
    ('v6 lite', 918e12),  # TPU v6e (Trillium)
    ('v6e', 918e12),
    ('v5 lite', 197e12),  # TPU v5e
    ('v5e', 197e12),
    ('v5p', 459e12),
    ('v5', 459e12),  # TPU v5p reports itself as "TPU v5"
    ('v4', 275e12),
)


def spec_peak_flops(device: jax.Device | None = None) -> float | None:
  """The published dense bf16 peak FLOP/s of `device`'s chip (default: the first device), or None if unknown."""
  kind = (device or jax.devices()[0]).device_kind.lower()
  if 'pcie' in kind and 'h100' in kind:
    return 756e12
  return next((peak for name, peak in SPEC_PEAK_BF16 if name in kind), None)
