"""The training loop every method shares: data order, checkpoints, metrics, the run lock, the method registry."""
