"""The training loop every method shares: data order, checkpoints, metrics, trackers, the run
lock. It imports no method; the table from a method's name to its trainer is grace.train.

May import: config, data, models, errors.
(config and data, in the same layer: the loop runs a TrainConfig over the training data.)
"""
