"""Training: state, step, checkpoints, metrics and the `lumiere-train` main."""
