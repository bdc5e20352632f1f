"""The training loop every method shares: data order, checkpoints, metrics, the run lock. It
imports no method; the table from a method's name to its trainer is grace.train."""
